-- The Slack user a key owner is in Slack: four-eyes treats a button press by that Slack user as
-- the owner's own decision. One Slack user is at most one owner.
ALTER TABLE key_owners ADD COLUMN slack_user_id TEXT;
CREATE UNIQUE INDEX key_owners_slack_user_id ON key_owners (slack_user_id)
WHERE slack_user_id IS NOT NULL;
