//! Medic server integration tests: one binary, one module per feature.

mod db;
mod store;
