//! The server's clock: the one place handlers, the gateway and the background workers read
//! "now" from.
//!
//! [`Clock::system`] is the wall clock. [`Clock::manual`] stands still until
//! [`Clock::advance`] moves it, so a test lets a minute pass in no time and sees exactly the
//! instants it chose. Everything the server decides from time (a service is late, a delivery is
//! due again, a run is lost) is computed from [`Clock::now`] and passed down; `domain` stays
//! pure and the store takes `now` as a parameter.
//!
//! Workers that sleep until a deadline also wait on [`Ticks::advanced`], which resolves when a
//! manual clock is moved (so they look again at once) and never on the system clock. Their
//! real-time caps stay real: they bound how late a change made elsewhere (another replica, a
//! heartbeat) is seen, which is not a question of the clock's time. Waits that measure real
//! durations (request timeouts, the handshake, metrics of how long something took) keep using
//! `tokio::time` and `Instant`.
//!
//! The rate limiter keeps its own monotonic microsecond clock (`ratelimit::memory`): it needs
//! sub-millisecond, never-backwards time, and its Redis twin uses Redis's clock, so a manual
//! clock here could never move both backends alike.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::domain::Timestamp;

/// Where "now" comes from. Cheap to clone; clones share one manual time.
#[derive(Clone, Debug)]
pub struct Clock(Source);

#[derive(Clone, Debug)]
enum Source {
    System,
    /// Milliseconds since the Unix epoch; receivers are woken on every change.
    Manual(Arc<watch::Sender<i64>>),
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl Clock {
    /// The wall clock.
    pub fn system() -> Self {
        Self(Source::System)
    }

    /// A clock that reads `start` until [`Self::advance`] moves it.
    pub fn manual(start: Timestamp) -> Self {
        Self(Source::Manual(Arc::new(watch::Sender::new(start.millis()))))
    }

    pub fn is_manual(&self) -> bool {
        matches!(self.0, Source::Manual(_))
    }

    /// The current time, in whole milliseconds.
    pub fn now(&self) -> Timestamp {
        match &self.0 {
            Source::System => Timestamp::now(),
            Source::Manual(t) => Timestamp::from_millis(*t.borrow()),
        }
    }

    /// Moves a manual clock forward by `by` and wakes every [`Ticks::advanced`].
    ///
    /// # Panics
    /// On the system clock, which nobody moves: a test that tries has forgotten to ask for a
    /// manual clock.
    pub fn advance(&self, by: Duration) {
        match &self.0 {
            Source::System => panic!("the system clock cannot be advanced; use Clock::manual"),
            Source::Manual(t) => {
                let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
                t.send_modify(|now| *now = now.saturating_add(ms));
            }
        }
    }

    /// A handle to wait on for the next move of a manual clock.
    pub fn ticks(&self) -> Ticks {
        Ticks(match &self.0 {
            Source::System => None,
            Source::Manual(t) => Some(t.subscribe()),
        })
    }

    /// Waits until `by` has passed on this clock, counted from this call: real time on the
    /// system clock, until advanced that far on a manual one.
    pub fn sleep(&self, by: Duration) -> impl Future<Output = ()> + Send + 'static {
        let manual = match &self.0 {
            Source::System => None,
            Source::Manual(t) => {
                let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
                Some((t.borrow().saturating_add(ms), t.subscribe()))
            }
        };
        async move {
            match manual {
                None => tokio::time::sleep(by).await,
                // `wait_for` looks at the current time first, then at every move.
                Some((until, mut rx)) => {
                    if rx.wait_for(|now| *now >= until).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }
}

/// Moves of a manual clock, for a worker's `select!` (see [`Clock::ticks`]).
#[derive(Debug)]
pub struct Ticks(Option<watch::Receiver<i64>>);

impl Ticks {
    /// Resolves at the next move of a manual clock after the last one this handle saw; never
    /// on the system clock.
    pub async fn advanced(&mut self) {
        let moved = match &mut self.0 {
            Some(rx) => rx.changed().await.is_ok(),
            None => false,
        };
        if !moved {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let start = Timestamp::from_millis(1_700_000_000_000);
        let clock = Clock::manual(start);
        let shared = clock.clone();
        assert_eq!(clock.now(), start);
        shared.advance(Duration::from_millis(1_500));
        assert_eq!(clock.now(), start.plus_millis(1_500));
        assert!(clock.is_manual());
        assert!(!Clock::system().is_manual());
    }

    #[test]
    #[should_panic(expected = "cannot be advanced")]
    fn the_system_clock_refuses_to_be_advanced() {
        Clock::system().advance(Duration::from_secs(1));
    }

    #[tokio::test]
    async fn an_advance_wakes_waiters_and_ends_sleeps_that_it_reaches() {
        let clock = Clock::manual(Timestamp::from_millis(0));
        let mut ticks = clock.ticks();
        let mut sleep = std::pin::pin!(clock.sleep(Duration::from_secs(60)));
        assert!((&mut sleep).now_or_never().is_none());
        clock.advance(Duration::from_secs(30));
        ticks.advanced().await;
        assert!((&mut sleep).now_or_never().is_none(), "woke half way");
        clock.advance(Duration::from_secs(30));
        ticks.advanced().await;
        assert!((&mut sleep).now_or_never().is_some(), "still asleep");
    }

    #[test]
    fn the_system_clock_never_ticks() {
        let mut ticks = Clock::system().ticks();
        assert!(ticks.advanced().now_or_never().is_none());
    }
}
