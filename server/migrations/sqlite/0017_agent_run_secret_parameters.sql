-- Script parameters that use playbook secrets: each such parameter as its pieces, a secret kept
-- as its name ({"NAME": [{"text": "Bearer "}, {"secret": "TOKEN"}]}). The value is put in only
-- when the run is sent to its agent; `parameters` holds the same parameter masked.
ALTER TABLE agent_runs ADD COLUMN secret_parameters TEXT NOT NULL DEFAULT '{}';
