-- Runs that end without a report from the agent: `expired` (still queued when its expiry
-- passed; never sent) and `lost` (sent or running, and the agent never reported within its
-- deadline). `lost_after` is that deadline, set when the run is sent or started and shortened
-- when the agent reconnects without the run.
ALTER TABLE agent_runs DROP CONSTRAINT agent_runs_status_check;
ALTER TABLE agent_runs ADD CONSTRAINT agent_runs_status_check
    CHECK (status IN ('queued', 'sent', 'running', 'succeeded', 'failed', 'timed_out',
                      'skipped', 'expired', 'lost'));
ALTER TABLE agent_runs ADD COLUMN expires_at timestamptz;
ALTER TABLE agent_runs ADD COLUMN lost_after timestamptz;

-- The sweep and the gateways' queue poll read only runs that have not ended.
CREATE INDEX agent_runs_open ON agent_runs (status, agent_id)
    WHERE status IN ('queued', 'sent', 'running');
