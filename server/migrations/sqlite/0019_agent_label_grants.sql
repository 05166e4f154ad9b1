-- Labels granted to one agent by an operator (PUT /v2/agents/{id}/labels), and the two other
-- sources its labels are worked out from, so that a grant takes effect at once on a connected
-- agent: the labels it declares (its hello) and those its API key grants. `labels` stays the
-- result (what run label selectors read): the declared labels granted by the key or here.
-- Existing rows carry only labels both declared and granted by the key, which is exactly
-- what `labels` holds.
ALTER TABLE agents ADD COLUMN declared_labels TEXT NOT NULL DEFAULT '{}';
ALTER TABLE agents ADD COLUMN key_labels TEXT NOT NULL DEFAULT '{}';
ALTER TABLE agents ADD COLUMN label_grants TEXT NOT NULL DEFAULT '{}';
UPDATE agents SET declared_labels = labels, key_labels = labels;
