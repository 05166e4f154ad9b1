-- The circuit breaker reads, at every start, the executions that count in each scope (every
-- status but `skipped`) newest first. Without these, that read walked past every `skipped`
-- execution of the last hour, so a burst of alerts against an open breaker cost more per start
-- the longer it went on (a 10,000-alert burst took 130 s to record).
CREATE INDEX playbook_executions_counted ON playbook_executions (created_at DESC)
    WHERE status <> 'skipped';
CREATE INDEX playbook_executions_counted_playbook ON playbook_executions (playbook_id, created_at DESC)
    WHERE status <> 'skipped';
CREATE INDEX playbook_executions_counted_service ON playbook_executions (service_id, created_at DESC)
    WHERE status <> 'skipped';
