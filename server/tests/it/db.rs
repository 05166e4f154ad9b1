//! Test databases.
