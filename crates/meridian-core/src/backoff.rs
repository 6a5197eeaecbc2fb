//! Reconnection delays: exponential, capped, with jitter, then back to a steady interval.
//!
//! The original service's schedule: 2 s, doubling to 32 s, for 5 attempts. After those, attempts
//! continue at a steady interval (the probe interval) instead of giving up: a monitor must notice
//! a node that comes back hours later. Jitter spreads the attempts of many monitors (or many
//! nodes) so they do not arrive in lockstep. The random sample is a parameter: no RNG here.

use std::time::Duration;

/// A reconnection schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first attempt.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Attempts that back off; later ones use `then`.
    pub attempts: u32,
    /// Delay between attempts once the backed-off ones are spent.
    pub then: Duration,
    /// Fraction of each delay added or removed at random (0.2 = ±20 %).
    pub jitter: f64,
}

impl Backoff {
    /// The delay before attempt `attempt` (0 = the first reconnection), for a uniform random
    /// `sample` in `[0, 1)`.
    pub fn delay(&self, attempt: u32, sample: f64) -> Duration {
        let base = if attempt < self.attempts {
            let factor = 2u32.saturating_pow(attempt.min(31));
            self.initial.saturating_mul(factor).min(self.max)
        } else {
            self.then
        };
        let spread = self.jitter.clamp(0.0, 1.0) * (2.0 * sample.clamp(0.0, 1.0) - 1.0);
        base.mul_f64(1.0 + spread)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn original() -> Backoff {
        Backoff {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(32),
            attempts: 5,
            then: Duration::from_secs(1),
            jitter: 0.0,
        }
    }

    #[test]
    fn doubles_from_two_to_thirty_two_seconds_then_returns_to_the_interval() {
        let delays: Vec<u64> = (0..7).map(|n| original().delay(n, 0.5).as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 1, 1]);
    }

    #[test]
    fn the_cap_holds_for_long_schedules() {
        let long = Backoff {
            attempts: 100,
            ..original()
        };
        assert_eq!(long.delay(40, 0.5), Duration::from_secs(32));
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let jittered = Backoff {
            jitter: 0.2,
            ..original()
        };
        assert_eq!(jittered.delay(0, 0.0), Duration::from_millis(1600));
        assert_eq!(jittered.delay(0, 0.5), Duration::from_secs(2));
        assert!(jittered.delay(0, 0.999) < Duration::from_millis(2400));
        assert!(jittered.delay(0, 0.999) > Duration::from_millis(2390));
    }
}
