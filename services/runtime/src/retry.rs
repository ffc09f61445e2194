//! Back-off between attempts at something the broker refused for now.
//!
//! Doubling from a first delay up to a cap, with up to a quarter of jitter
//! so replicas that failed together do not retry together. Twenty lines do
//! this; a back-off crate (`backoff`, `backon`) would add its own timer and
//! retry-loop abstractions the call sites here do not need.

use std::time::Duration;

/// Delays that double from `first` up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// Starts at `first`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff { next: first, max }
    }

    /// The next delay (with jitter), doubling the one after.
    pub fn delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter_ms = u64::try_from(base.as_millis() / 4).unwrap_or(0);
        let spread = if jitter_ms == 0 {
            0
        } else {
            crate::random_u64() % jitter_ms
        };
        base + Duration::from_millis(spread)
    }

    /// Sleeps for the next delay.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.delay()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_with_bounded_jitter() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let bases = [100u64, 200, 400, 500, 500];
        for base in bases {
            let d = backoff.delay().as_millis() as u64;
            assert!(d >= base && d <= base + base / 4, "{d} for base {base}");
        }
    }
}
