//! The Medic host agent: runs remediation scripts that were approved centrally **and** allowed
//! locally, pinned by content hash, in a scrubbed environment with a timeout, an output cap and
//! resource limits.
//!
//! The agent dials the server over a TLS WebSocket ([`session`]), sends heartbeats, hands run
//! requests to the [`exec::Executor`] and reports their outcome, and redials with jittered
//! backoff ([`backoff`]) whenever the connection ends.
//!
//! # Layout
//!
//! - [`config`] — [`Config`](config::Config) from the TOML file, `MEDIC_AGENT_*` variables and
//!   flags; a pure [`Config::from_sources`](config::Config::from_sources) that returns every
//!   problem; the credential as a redacted [`Secret`](config::Secret).
//! - [`exec`] — the security core: [`Executor::admit`](exec::Executor::admit) decides
//!   refuse-or-run, [`Permit::run`](exec::Permit::run) runs one script and returns the
//!   protocol's `RunResult`.
//! - [`session`] — the network session: dial (TCP, rustls, WebSocket upgrade), hello/welcome,
//!   heartbeats, pings, run requests, reports kept until acknowledged, the redial loop.
//! - [`metrics`] — the agent's Prometheus counters, run-duration histogram and connection
//!   gauge, and the optional loopback `GET /metrics` responder (hand-written HTTP/1.1).
//! - [`backoff`] — reconnect delays: capped exponential backoff with full jitter, server hints.
//! - [`log`] — `tracing` with JSON lines on standard error, or a daily-rotated file.
//! - [`host`] — host facts (`sysinfo`) for the hello and periodic heartbeats.
//! - [`cli`] — the command line: subcommands and flags, parsed by hand.
//! - `main.rs` — reads the sources (file, environment, host name), runs a subcommand, maps
//!   failures to exit codes (64 for bad usage or configuration).
//!
//! # Dependencies
//!
//! The shipping binary must stay at or below 2.5 MB stripped once the TLS WebSocket client is in,
//! so every dependency is small and on a budget:
//!
//! - `medic-protocol` (serde + serde_json) — the wire types;
//! - `toml` without default features (`std`, `parse`, `serde`: no writer);
//! - `sha2` — the content hash;
//! - `tokio` (a current-thread runtime, timers, TCP, signals), `tokio-tungstenite` (the
//!   WebSocket client handshake only, no TLS feature of its own), `tokio-rustls` + `rustls`
//!   with the `ring` provider (no aws-lc, no OpenSSL), `webpki-roots` for the default trust
//!   store, and `futures` for the stream/sink traits. Together they took the stripped binary
//!   from 0.55 MB to about 2.0 MB; with the hardening it is 2,113,576 bytes (glibc) and
//!   2,241,320 bytes as shipped before the log and host facts (static musl, x86_64;
//!   `docs/benchmarks.md`);
//! - `tracing`, `tracing-subscriber` (`fmt` + `json` only: no ANSI, no env-filter, no regex)
//!   and `tracing-appender` (its blocking daily-rolling file, never the background writer
//!   thread) for the log; `sysinfo` (`system` + `disk`, no `multithread`) for host facts.
//!   With them (and `check-config`'s syntax-error recovery) 2,463,272 bytes as shipped
//!   (static musl, x86_64), +221,952;
//! - `rustix` (`event`, `fs`, `process`, `system`, `thread`) — `kill(-pgid)`, `waitid(WNOWAIT)`,
//!   `pidfd_open`, `poll`, `prlimit`, `uname`, the sealed `memfd`, `prctl(PR_SET_DUMPABLE)`,
//!   capabilities and groups, all as safe functions. `libc` would need `unsafe` at every call
//!   and `nix` brings more than we use; rustix on Linux makes raw system calls and links only
//!   what is called. The crate denies `unsafe` and allows it in exactly one function
//!   (`exec::descriptors`): marking descriptors inherited from the agent's parent
//!   close-on-exec, which no safe API can do.
//!
//! There is no argument-parsing crate: the agent has two subcommands and a dozen `--key value`
//! flags that mirror the file's keys one to one ([`config::Setting`]), which a 60-line parser
//! handles with exact error messages; clap alone would add several hundred kilobytes.
//!
//! # Invariants
//!
//! - No script runs without passing every check in [`exec`], in the documented order.
//! - No shell ever interprets text built from a request: the interpreter gets the checked text
//!   as a sealed memfd (`/proc/self/fd/N`; a private file on macOS) that nothing can change.
//! - When the agent can switch users, scripts run as `run_as`, never as the agent's user or
//!   root, with no capabilities and none of the agent's groups or inherited descriptors.
//! - No variable of the agent's environment reaches a script unless it is in
//!   [`exec::BASE_ENV`] or the configured `pass_env`.
//! - The credential is never formatted: [`config::Secret`] has no `Display` and redacts `Debug`.
// `deny`, not `forbid`: `exec::descriptors` holds the agent's one `unsafe` block.
#![deny(unsafe_code)]

pub mod backoff;
pub mod cli;
pub mod config;
pub mod exec;
pub mod host;
pub mod log;
pub mod metrics;
pub mod session;
