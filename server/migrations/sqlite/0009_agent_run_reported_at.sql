-- When the server stored the agent's report about a run (its own clock; `finished_at` is the
-- agent's), so the time from queueing a run to its stored result is one clock's difference.
ALTER TABLE agent_runs ADD COLUMN reported_at INTEGER;
