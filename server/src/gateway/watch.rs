//! Waiting for a run to end: `GET /v2/runs/{id}?wait_seconds=N` answers as soon as the run has
//! ended instead of making its caller poll.
//!
//! A session that stores a run's ending on this replica wakes that run's waiters at once
//! ([`RunWatch::ended`]). Endings stored elsewhere (another replica's session, the sweep that
//! marks runs `expired` or `lost`) are found by reading the run again every
//! [`RECHECK_INTERVAL`], so a waiter never misses one.

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// How often a waiter reads its run again in case it ended where no wake-up reaches it.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The longest wait `GET /v2/runs/{id}` accepts.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// Runs somebody waits for, by id. Cheap to share; the map holds only runs with a waiter.
#[derive(Default)]
pub struct RunWatch {
    waiting: Mutex<HashMap<String, Arc<Notify>>>,
    /// Told of every ending stored here, waiter or not (the playbook engine).
    listener: std::sync::OnceLock<Listener>,
}

/// What [`RunWatch::listen`] keeps.
type Listener = Box<dyn Fn(&str) + Send + Sync>;

impl RunWatch {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the run with `read` (which says whether it has ended) until it has ended or
    /// `at_most` has passed, and returns the last reading. Reads again when this replica
    /// stores the run's ending, and at least every [`RECHECK_INTERVAL`].
    pub async fn wait_for<T, E, F, Fut>(
        self: &Arc<Self>,
        run_id: &str,
        at_most: Duration,
        mut read: F,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(T, bool), E>>,
    {
        let until = Instant::now() + at_most.min(MAX_WAIT);
        let watching = self.watch(run_id);
        loop {
            // Armed before the read, so an ending stored between the read and the wait counts.
            let notified = watching.notify.notified();
            let mut notified = pin!(notified);
            notified.as_mut().enable();
            let (value, ended) = read().await?;
            let now = Instant::now();
            if ended || now >= until {
                return Ok(value);
            }
            let _ = tokio::time::timeout((until - now).min(RECHECK_INTERVAL), notified).await;
        }
    }

    fn watch(self: &Arc<Self>, run_id: &str) -> Watching {
        let notify = Arc::clone(self.lock().entry(run_id.to_owned()).or_default());
        Watching {
            watch: Arc::clone(self),
            run_id: run_id.to_owned(),
            notify,
        }
    }

    /// The run's ending was stored: wakes everyone waiting for it, and tells the listener.
    pub fn ended(&self, run_id: &str) {
        if let Some(notify) = self.lock().remove(run_id) {
            notify.notify_waiters();
        }
        if let Some(listener) = self.listener.get() {
            listener(run_id);
        }
    }

    /// Has `listener` told of every run ending stored on this replica (one listener; a second
    /// is ignored). It is called on the session's task: it must not block.
    pub fn listen(&self, listener: impl Fn(&str) + Send + Sync + 'static) {
        let _ = self.listener.set(Box::new(listener));
    }

    /// How many runs have a waiter (for tests).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no run has a waiter.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One caller's interest in one run, until dropped.
struct Watching {
    watch: Arc<RunWatch>,
    run_id: String,
    notify: Arc<Notify>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        let mut waiting = self.watch.lock();
        // Only the map and this guard hold it: nobody else waits for this run.
        if waiting
            .get(&self.run_id)
            .is_some_and(|n| Arc::ptr_eq(n, &self.notify) && Arc::strong_count(n) == 2)
        {
            waiting.remove(&self.run_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_ending_wakes_the_waiter_and_the_map_forgets_the_run() {
        let watch = Arc::new(RunWatch::default());
        let done = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicUsize::new(0));
        let waiter = {
            let (watch, done, reads) = (Arc::clone(&watch), Arc::clone(&done), Arc::clone(&reads));
            tokio::spawn(async move {
                watch
                    .wait_for("r1", MAX_WAIT, || {
                        reads.fetch_add(1, Ordering::SeqCst);
                        let ended = done.load(Ordering::SeqCst);
                        async move { Ok::<_, ()>((ended, ended)) }
                    })
                    .await
            })
        };
        while reads.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(watch.len(), 1);
        done.store(true, Ordering::SeqCst);
        watch.ended("r1");
        assert_eq!(waiter.await.unwrap(), Ok(true));
        // Woken, not rechecked on the timer: the paused clock never moved.
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        assert!(watch.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_that_does_not_end_is_read_again_until_the_wait_is_over() {
        let watch = Arc::new(RunWatch::default());
        let reads = AtomicUsize::new(0);
        let last = watch
            .wait_for("r2", Duration::from_millis(2500), || {
                let n = reads.fetch_add(1, Ordering::SeqCst);
                async move { Ok::<_, ()>((n, false)) }
            })
            .await;
        // At 0 s, 1 s, 2 s (rechecks) and 2.5 s (the end of the wait).
        assert_eq!(last, Ok(3));
        assert!(watch.is_empty());
        // Asking for longer than the longest wait waits the longest wait.
        let start = Instant::now();
        let _ = watch
            .wait_for("r3", Duration::from_secs(3600), || async {
                Ok::<_, ()>(((), false))
            })
            .await;
        assert_eq!(start.elapsed(), MAX_WAIT);
    }
}
