//! Back-off between attempts at something that failed for now: the broker
//! refused (no leader, no responders), or another writer won a
//! compare-and-set.
//!
//! Delays double from a first delay and stay below a cap, each with a random
//! part, so replicas that failed together do not retry together; a bounded
//! back-off ends after a number of delays. The delays come from the `backon`
//! crate (its exponential back-off with jitter and its attempt limit); the
//! loops that use them stay at the call sites, which decide between attempts
//! (re-open a pull, give up when no longer relevant).
//!
//! backon's jitter adds up to as much again as the base delay, so the base
//! doubles only to half the cap: every delay stays below `max`, which is
//! what callers promise ("retried at most 1 s apart").

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Delays that double from `first`, with jitter, and stay below `max`.
#[derive(Debug)]
pub struct Backoff {
    delays: <ExponentialBuilder as BackoffBuilder>::Backoff,
}

impl Backoff {
    /// Delays without end, starting at `first`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff::build(first, max, None)
    }

    /// At most `delays` delays, starting at `first`; then
    /// [`next`](Iterator::next) is `None` and [`wait`](Backoff::wait) false.
    pub fn bounded(first: Duration, max: Duration, delays: usize) -> Self {
        Backoff::build(first, max, Some(delays))
    }

    fn build(first: Duration, max: Duration, delays: Option<usize>) -> Self {
        // The jitter adds [0, base) to a base of at most max / 2.
        let base_cap = max / 2;
        let builder = ExponentialBuilder::new()
            .with_min_delay(first.min(base_cap))
            .with_max_delay(base_cap)
            .with_jitter();
        let builder = match delays {
            Some(n) => builder.with_max_times(n),
            None => builder.without_max_times(),
        };
        Backoff {
            delays: builder.build(),
        }
    }

    /// Sleeps for the next delay; false (at once) when a bounded back-off
    /// has none left.
    pub async fn wait(&mut self) -> bool {
        match self.next() {
            Some(delay) => {
                tokio::time::sleep(delay).await;
                true
            }
            None => false,
        }
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    /// The next delay (with jitter), doubling the one after.
    fn next(&mut self) -> Option<Duration> {
        self.delays.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_jitter_and_stays_below_the_cap() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let bases = [100u64, 200, 400, 500, 500, 500];
        for (base, delay) in bases.into_iter().zip(backoff) {
            let d = delay.as_millis() as u64;
            assert!(d >= base && d < 2 * base, "{d} for base {base}");
        }
        let capped = Backoff::new(Duration::from_secs(3), Duration::from_secs(1));
        for delay in capped.take(20) {
            assert!(delay < Duration::from_secs(1), "{delay:?}");
        }
    }

    #[test]
    fn a_bounded_backoff_ends() {
        let backoff = Backoff::bounded(Duration::from_millis(1), Duration::from_millis(4), 5);
        assert_eq!(backoff.count(), 5);
    }

    #[test]
    fn replicas_do_not_retry_in_step() {
        let a: Vec<_> =
            Backoff::bounded(Duration::from_secs(1), Duration::from_secs(8), 4).collect();
        let b: Vec<_> =
            Backoff::bounded(Duration::from_secs(1), Duration::from_secs(8), 4).collect();
        assert_ne!(a, b, "two back-offs drew the same jitter: {a:?}");
    }
}
