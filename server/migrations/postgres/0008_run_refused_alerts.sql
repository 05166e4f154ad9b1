-- A run an agent refused for a reason an operator must look at (not in its allowlist, hash
-- mismatch, …) opens an alert of kind `run_refused` on the agent's service.
ALTER TABLE alerts DROP CONSTRAINT alerts_kind_check;
ALTER TABLE alerts ADD CONSTRAINT alerts_kind_check
    CHECK (kind IN ('heartbeat_missing', 'job_failed', 'job_overdue', 'run_refused'));
ALTER TABLE alert_suppressions DROP CONSTRAINT alert_suppressions_kind_check;
ALTER TABLE alert_suppressions ADD CONSTRAINT alert_suppressions_kind_check
    CHECK (kind IN ('heartbeat_missing', 'job_failed', 'job_overdue', 'run_refused'));

-- The monitor finds an agent's runs from the agent's service.
CREATE INDEX agents_service ON agents (service_id);
