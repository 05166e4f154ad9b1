//! Store conformance suite (runs against SQLite always, PostgreSQL when configured).
