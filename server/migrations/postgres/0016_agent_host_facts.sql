-- Host facts an agent reports (OS and version, kernel, architecture, CPUs, memory, load, root
-- disk, uptime): the last report as a JSON object, and when it arrived. NULL until an agent
-- that sends them connects.
ALTER TABLE agents ADD COLUMN host_facts jsonb;
ALTER TABLE agents ADD COLUMN host_facts_at timestamptz;
