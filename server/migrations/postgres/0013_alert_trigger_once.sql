-- An alert trigger fires a playbook at most once per incident: one execution per playbook and
-- alert. The monitor checks before inserting; this index makes it a rule of the database.
CREATE UNIQUE INDEX playbook_executions_alert_once ON playbook_executions (playbook_id, alert_id)
    WHERE trigger = 'alert' AND alert_id IS NOT NULL;
