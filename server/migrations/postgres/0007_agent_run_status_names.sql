-- Run statuses and columns take the names the API documents: a run handed to its agent is
-- `dispatched` (was `sent`), one the agent declined is `refused` (was `skipped`), with its
-- `refusal_reason` / `refusal_detail`.
ALTER TABLE agent_runs DROP CONSTRAINT agent_runs_status_check;
DROP INDEX agent_runs_open;
UPDATE agent_runs SET status = 'dispatched' WHERE status = 'sent';
UPDATE agent_runs SET status = 'refused' WHERE status = 'skipped';
ALTER TABLE agent_runs ADD CONSTRAINT agent_runs_status_check
    CHECK (status IN ('queued', 'dispatched', 'running', 'succeeded', 'failed', 'timed_out',
                      'refused', 'expired', 'lost'));
ALTER TABLE agent_runs RENAME COLUMN sent_at TO dispatched_at;
ALTER TABLE agent_runs RENAME COLUMN skip_reason TO refusal_reason;
ALTER TABLE agent_runs RENAME COLUMN skip_detail TO refusal_detail;

-- The sweep and the gateways' queue poll read only runs that have not ended.
CREATE INDEX agent_runs_open ON agent_runs (status, agent_id)
    WHERE status IN ('queued', 'dispatched', 'running');
