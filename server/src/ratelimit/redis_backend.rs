//! Redis GCRA backend: one `EVALSHA` round trip per check over a small
//! round-robin pool of multiplexed connections.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Decision, RateClass, Settings, gcra};

/// GCRA on one key, using the Redis server clock so that every replica of
/// the server sees the same time. Mirrors `gcra::check` exactly.
///
/// `KEYS[1]` = bucket key, `ARGV[1]` = emission interval (µs), `ARGV[2]` = limit.
/// Returns `{allowed (0|1), remaining, reset_after_us, retry_after_us}`.
/// All numbers stay below 2^53, so Lua's doubles are exact.
const GCRA_SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local interval = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local tolerance = interval * limit
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = now
local stored = redis.call('GET', KEYS[1])
if stored then
  local s = tonumber(stored)
  if s and s > now then tat = s end
end
local new_tat = tat + interval
local delay = new_tat - now
if delay > tolerance then
  return {0, 0, tat - now, delay - tolerance}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil(delay / 1000))
return {1, math.floor((tolerance - delay) / interval), delay, 0}
";

/// Redis key holding the TAT of one bucket.
pub(crate) fn bucket_key(class: RateClass, limit: u32, key: &str) -> String {
    format!("medic:rl:{}:{limit}:{key}", class.as_str())
}

struct Pool {
    conns: Vec<ConnectionManager>,
    next: AtomicUsize,
}

impl Pool {
    fn pick(&self) -> Result<ConnectionManager, String> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let len = self.conns.len().max(1);
        self.conns
            .get(n % len)
            .cloned()
            .ok_or_else(|| "empty Redis connection pool".to_owned())
    }
}

pub(crate) struct RedisBackend {
    client: redis::Client,
    pool_size: usize,
    settings: Settings,
    pool: OnceLock<Pool>,
    /// Whether checks should go to Redis. False until the first successful
    /// connection, and after any failure until a probe succeeds again.
    healthy: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// Serialises connection attempts (background probe vs. startup).
    connecting: tokio::sync::Mutex<()>,
    script: redis::Script,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client holds the connection info (possibly a password): never print it.
        f.debug_struct("RedisBackend")
            .field("pool_size", &self.pool_size)
            .field("connected", &self.is_connected())
            .field("healthy", &self.is_healthy())
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// Parses the URL; does not connect.
    pub(crate) fn new(url: &str, pool_size: usize, settings: Settings) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        Ok(Self {
            client,
            pool_size: pool_size.max(1),
            settings,
            pool: OnceLock::new(),
            healthy: AtomicBool::new(false),
            last_error: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            script: redis::Script::new(GCRA_SCRIPT),
        })
    }

    fn manager_config(&self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.settings.connect_timeout))
            .set_response_timeout(Some(self.settings.call_timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(1))
    }

    /// Opens the pool if it is not open yet and loads the script. Success
    /// marks the backend healthy; the caller is responsible for logging.
    pub(crate) async fn connect(&self) -> Result<(), String> {
        let _guard = self.connecting.lock().await;
        if self.pool.get().is_some() {
            return Ok(());
        }
        let budget = self
            .settings
            .connect_timeout
            .saturating_mul(u32::try_from(self.pool_size).unwrap_or(u32::MAX))
            .saturating_add(self.settings.connect_timeout);
        let attempt = async {
            let mut conns = Vec::with_capacity(self.pool_size);
            for _ in 0..self.pool_size {
                let conn =
                    ConnectionManager::new_with_config(self.client.clone(), self.manager_config())
                        .await
                        .map_err(|e| e.to_string())?;
                conns.push(conn);
            }
            if let Some(first) = conns.first_mut() {
                self.script
                    .prepare_invoke()
                    .load_async(first)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(conns)
        };
        let conns = match tokio::time::timeout(budget, attempt).await {
            Ok(Ok(conns)) => conns,
            Ok(Err(e)) => return Err(self.record_error(e)),
            Err(_) => return Err(self.record_error(format!("connect timed out after {budget:?}"))),
        };
        // Cannot already be set: we hold `connecting` and checked above.
        let _ = self.pool.set(Pool {
            conns,
            next: AtomicUsize::new(0),
        });
        self.healthy.store(true, Ordering::SeqCst);
        Ok(())
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.pool.get().is_some()
    }

    pub(crate) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }

    /// True when checks should be sent to Redis.
    pub(crate) fn is_active(&self) -> bool {
        self.is_connected() && self.is_healthy()
    }

    /// Marks the backend unhealthy; returns true on a healthy → unhealthy
    /// transition.
    pub(crate) fn mark_down(&self, reason: &str) -> bool {
        self.record_error(reason.to_owned());
        self.healthy.swap(false, Ordering::SeqCst)
    }

    /// Marks the backend healthy; returns true on an unhealthy → healthy
    /// transition.
    pub(crate) fn mark_up(&self) -> bool {
        self.is_connected() && !self.healthy.swap(true, Ordering::SeqCst)
    }

    fn record_error(&self, reason: String) -> String {
        let mut slot = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *slot = Some(reason.clone());
        reason
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn pool(&self) -> Result<&Pool, String> {
        self.pool
            .get()
            .ok_or_else(|| "not connected to Redis".to_owned())
    }

    /// One atomic GCRA step in Redis.
    pub(crate) async fn check(
        &self,
        class: RateClass,
        key: &str,
        limit: u32,
    ) -> Result<Decision, String> {
        let mut conn = self.pool()?.pick()?;
        let mut invocation = self.script.key(bucket_key(class, limit, key));
        invocation.arg(gcra::emission_interval_us(limit)).arg(limit);
        let call = invocation.invoke_async::<(i64, i64, i64, i64)>(&mut conn);
        match tokio::time::timeout(self.settings.call_timeout, call).await {
            Ok(Ok(raw)) => Ok(gcra::decision_from_script(limit, raw)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "rate limit check timed out after {:?}",
                self.settings.call_timeout
            )),
        }
    }

    async fn ping_conn(mut conn: ConnectionManager, timeout: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        let ping = redis::cmd("PING");
        let call = ping.query_async::<String>(&mut conn);
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(_)) => Ok(started.elapsed()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("PING timed out after {timeout:?}")),
        }
    }

    /// PING over the next pooled connection; returns the round-trip time.
    pub(crate) async fn ping_one(&self) -> Result<Duration, String> {
        let conn = self.pool()?.pick()?;
        Self::ping_conn(conn, self.settings.call_timeout).await
    }

    /// PING over every pooled connection concurrently (each reconnects
    /// independently, so all of them must be usable before switching back to
    /// Redis).
    pub(crate) async fn ping_all(&self) -> Result<(), String> {
        let pool = self.pool()?;
        let mut pings = tokio::task::JoinSet::new();
        for conn in &pool.conns {
            pings.spawn(Self::ping_conn(conn.clone(), self.settings.call_timeout));
        }
        while let Some(result) = pings.join_next().await {
            result.map_err(|e| format!("PING task failed: {e}"))??;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_format() {
        assert_eq!(
            bucket_key(RateClass::Heartbeat, 120, "key:abc"),
            "medic:rl:heartbeat:120:key:abc"
        );
        assert_eq!(
            bucket_key(RateClass::Docs, 5, "ip:::1"),
            "medic:rl:docs:5:ip:::1"
        );
    }

    #[test]
    fn invalid_url_is_rejected_without_connecting() {
        assert!(RedisBackend::new("not a url", 1, Settings::default()).is_err());
        assert!(RedisBackend::new("redis://127.0.0.1:1", 1, Settings::default()).is_ok());
    }
}
