//! `medic run -- command args…`: a job wrapped in job signals.
//!
//! Sends `start` with a fresh run id, runs the command (standard input inherited, its output
//! forwarded as it comes while the last bytes are kept), then `complete` (exit 0) or `fail`
//! with the exit code and the output's tail. The command's exit code is passed through. Medic
//! being down never breaks the job: each signal is tried a bounded number of times and a
//! failure is a warning on standard error.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::client::{Client, Failure};
use crate::config::Context;

/// Attempts per signal.
const ATTEMPTS: u32 = 3;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The service the job reports to (id or heartbeat name).
    #[arg(long, short)]
    name: String,
    /// Bytes of output sent with the end signal (the server keeps the last 10 KiB).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(0..=10240))]
    tail: u32,
    /// Seconds each signal may take before it counts as failed.
    #[arg(long, default_value_t = 10)]
    signal_timeout: u64,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

fn warn(what: &str, e: &Failure) {
    eprintln!("medic: warning: could not {what}: {e}");
}

/// Sends one signal, retrying only what may pass on a second try (no answer, 5xx).
fn signal(c: &Client, path: &str, body: &Value) -> Result<(), Failure> {
    let mut attempt = 1;
    loop {
        match c.post(path, Some(body)) {
            Ok(_) => return Ok(()),
            Err(Failure::Other(_)) if attempt < ATTEMPTS => {
                std::thread::sleep(Duration::from_millis(300 * u64::from(attempt)));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The last `max` bytes written through it.
#[derive(Clone)]
struct Tail {
    buf: Arc<Mutex<VecDeque<u8>>>,
    max: usize,
}

impl Tail {
    fn push(&self, bytes: &[u8]) {
        let mut b = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        b.extend(bytes);
        let excess = b.len().saturating_sub(self.max);
        b.drain(..excess);
    }

    fn text(&self) -> String {
        let b = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        let bytes: Vec<u8> = b.iter().copied().collect();
        String::from_utf8_lossy(&bytes).replace('\0', "")
    }
}

/// Copies a child's stream to ours, keeping the tail.
fn forward(
    mut from: impl Read + Send + 'static,
    mut to: impl Write + Send + 'static,
    tail: Tail,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let _ = to.write_all(&buf[..n]);
                    let _ = to.flush();
                    tail.push(&buf[..n]);
                }
            }
        }
    })
}

pub fn run(ctx: Result<Context, Failure>, args: &RunArgs) -> ExitCode {
    let client = ctx.and_then(|ctx| {
        Client::new(
            &ctx.server,
            ctx.api_key.clone(),
            Duration::from_secs(args.signal_timeout.max(1)),
        )
    });
    let client = match client {
        Ok(c) => Some(c),
        Err(e) => {
            warn("reach Medic", &e);
            None
        }
    };
    let service = client.as_ref().and_then(|c| {
        crate::commands::service_id(c, &args.name)
            .map_err(|e| warn(&format!("find service {:?}", args.name), &e))
            .ok()
    });
    let run_id = uuid::Uuid::new_v4().to_string();
    if let (Some(c), Some(id)) = (&client, service)
        && let Err(e) = signal(
            c,
            &format!("/v2/heartbeat/{id}/start"),
            &json!({"run_id": run_id}),
        )
    {
        warn("report the start", &e);
    }

    let tail = Tail {
        buf: Arc::new(Mutex::new(VecDeque::new())),
        max: args.tail as usize,
    };
    let spawned = Command::new(&args.command[0])
        .args(&args.command[1..])
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let code = match spawned {
        Err(e) => {
            let msg = format!("medic: cannot run {:?}: {e}", args.command[0]);
            eprintln!("{msg}");
            tail.push(msg.as_bytes());
            if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            }
        }
        Ok(mut child) => {
            let out = child
                .stdout
                .take()
                .map(|s| forward(s, std::io::stdout(), tail.clone()));
            let err = child
                .stderr
                .take()
                .map(|s| forward(s, std::io::stderr(), tail.clone()));
            let status = child.wait();
            for h in [out, err].into_iter().flatten() {
                let _ = h.join();
            }
            match status {
                Ok(s) => exit_code(s),
                Err(e) => {
                    eprintln!("medic: waiting for the command failed: {e}");
                    1
                }
            }
        }
    };

    if let (Some(c), Some(id)) = (&client, service) {
        let kind = if code == 0 { "complete" } else { "fail" };
        let body = json!({"run_id": run_id, "exit_code": code, "body": tail.text()});
        if let Err(e) = signal(c, &format!("/v2/heartbeat/{id}/{kind}"), &body) {
            warn(&format!("report the end ({kind})"), &e);
        }
    }
    ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1))
}

/// The exit code, or 128 + the signal that ended the process.
fn exit_code(s: std::process::ExitStatus) -> i32 {
    if let Some(c) = s.code() {
        return c;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = s.signal() {
            return 128 + sig;
        }
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_bytes() {
        let t = Tail {
            buf: Arc::new(Mutex::new(VecDeque::new())),
            max: 5,
        };
        t.push(b"hello ");
        t.push(b"world\0");
        assert_eq!(t.text(), "orld");
    }
}
