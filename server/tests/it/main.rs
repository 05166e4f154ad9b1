//! Medic server integration tests: one binary, one module per feature.

mod agent_runs;
mod agents;
mod alerting;
mod cli;
mod db;
mod http_auth;
mod http_durability;
mod http_jobs;
mod http_legacy;
mod http_ops;
mod http_ratelimit;
mod http_scripts;
mod http_services;
mod http_teams;
mod migrations;
mod notify;
mod recovery;
mod store;
mod store_agents;
mod store_alerting;
mod store_monitor;
mod store_scripts;
mod support;
mod support_recorder;
