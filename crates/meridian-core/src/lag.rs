//! Replication lag of a replica, in bytes and in seconds.
//!
//! Bytes are easy: the primary's latest WAL position minus the replica's replay position. Seconds
//! are not: PostgreSQL's `now() - pg_last_xact_replay_timestamp()` on a replica grows forever
//! while the primary is idle, because it measures the age of the last *replayed transaction*,
//! not how far behind the replica is. An idle primary writes nothing, so its replicas are not
//! lagging. [`LagTracker`] measures lag in seconds as "how long ago the primary was where this
//! replica is now": it remembers when the primary reached which WAL position, and a replica's
//! lag is `now` minus the time of the earliest remembered primary sample that the replica has
//! not replayed yet. A replica that replayed the latest sample has zero lag.
//!
//! # Invariants
//! - Samples are strictly increasing in LSN and non-decreasing in time. An unchanged LSN is not
//!   recorded again, so the first time the primary reached a position is kept and an idle
//!   primary costs no history. A sample taken earlier than the previous one (probes finishing
//!   out of order) is moved to the previous one's time. An LSN lower than the latest means a
//!   different primary or timeline: the history restarts from it (the caller should also
//!   [`LagTracker::reset`] when the primary changes).
//! - The estimate is a lower bound of the true lag, short by at most the gap between two
//!   recorded samples: the primary passed the replica's position somewhere between the last
//!   sample at or below it and the first sample above it; the latter is the one used.
//! - If even the oldest sample is above the replica's position (the replica is behind the whole
//!   history), the oldest sample's time is used: still a lower bound.
//! - Memory is bounded by `capacity` samples. When full, every other sample of the older half
//!   is dropped (the oldest is always kept), so the history keeps covering a long time with
//!   a coarser resolution for old positions rather than forgetting them: a replica stuck long
//!   ago is reported as far behind (a lower bound that loses precision with age), not as
//!   behind by only `capacity` probes. Size `capacity` so that the newer half, which keeps
//!   every sample, spans the lag thresholds that matter (e.g. 600 samples at one per second
//!   keep full resolution over the last 5 minutes).

use std::time::Duration;

use crate::lsn::Lsn;
use crate::observation::Timestamp;

/// How far a replica is behind the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lag {
    /// WAL the primary wrote that the replica has not replayed.
    pub bytes: u64,
    /// How long ago the primary was where the replica is now; zero when caught up.
    pub seconds: Duration,
}

/// Remembers when the primary reached which WAL position, so that a replica's lag in seconds
/// is "how long ago was the primary where this replica is now", and is zero when the replica
/// has replayed everything the primary wrote (an idle primary writes nothing: its replicas are
/// not lagging).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LagTracker {
    /// `(when, position)` of the primary, strictly increasing in position.
    samples: Vec<(Timestamp, Lsn)>,
    capacity: usize,
}

impl LagTracker {
    /// A tracker keeping at most `capacity` samples (at least 2).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(2);
        LagTracker {
            samples: Vec::with_capacity(capacity),
            capacity,
        }
    }

    /// Records that the primary was at `lsn` at `at`.
    pub fn record_primary(&mut self, at: Timestamp, lsn: Lsn) {
        let mut at = at;
        if let Some(&(last_at, last_lsn)) = self.samples.last() {
            if lsn == last_lsn {
                // Idle: keep the time it first got here.
                return;
            }
            if lsn < last_lsn {
                // WAL never moves backwards on one primary: this history is not its history.
                self.samples.clear();
            } else {
                at = at.max(last_at);
            }
        }
        if self.samples.len() >= self.capacity {
            self.thin();
        }
        self.samples.push((at, lsn));
    }

    /// Drops every other sample of the older half, keeping the oldest; removes at least one.
    fn thin(&mut self) {
        let len = self.samples.len();
        let older = (len / 2).max(2).min(len);
        let mut index = 0;
        self.samples.retain(|_| {
            let keep = index >= older || index % 2 == 0;
            index += 1;
            keep
        });
    }

    /// The lag of a replica that replayed up to `replica_replayed`, as of `now`; `None` before
    /// the first primary sample.
    pub fn lag(&self, replica_replayed: Lsn, now: Timestamp) -> Option<Lag> {
        let &(_, latest) = self.samples.last()?;
        if replica_replayed >= latest {
            return Some(Lag::default());
        }
        // The first sample the replica has not replayed; exists because `latest` is one.
        let first_missing = self
            .samples
            .partition_point(|&(_, lsn)| lsn <= replica_replayed);
        let (since, _) = self.samples[first_missing];
        Some(Lag {
            bytes: latest.bytes_after(replica_replayed),
            seconds: now.since(since),
        })
    }

    /// The primary's latest recorded position and when it was first seen there.
    pub fn latest(&self) -> Option<(Timestamp, Lsn)> {
        self.samples.last().copied()
    }

    /// The oldest position remembered and when the primary was first seen there: how far
    /// back the history reaches.
    pub fn oldest(&self) -> Option<(Timestamp, Lsn)> {
        self.samples.first().copied()
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no sample is held.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Forgets the history: the primary changed.
    pub fn reset(&mut self) {
        self.samples.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn at(s: u64) -> Timestamp {
        Timestamp(1_700_000_000_000 + s * 1_000)
    }

    #[test]
    fn unknown_before_the_first_primary_sample() {
        let tracker = LagTracker::new(10);
        assert_eq!(tracker.lag(Lsn(0), at(0)), None);
    }

    #[test]
    fn lag_table() {
        // Primary: 100 at t=0, 200 at t=10, 300 at t=20. (replayed, now, bytes, seconds)
        let mut tracker = LagTracker::new(10);
        tracker.record_primary(at(0), Lsn(100));
        tracker.record_primary(at(10), Lsn(200));
        tracker.record_primary(at(20), Lsn(300));
        let table = [
            ("caught up", 300, 25, 0, 0),
            ("ahead of the last sample", 350, 25, 0, 0),
            ("missing the last sample", 250, 25, 50, 5),
            ("exactly at a sample", 200, 25, 100, 5),
            ("missing two samples", 150, 25, 150, 15),
            ("behind the whole history: lower bound", 50, 25, 250, 25),
            (
                "asked before the sample: zero, never negative",
                250,
                15,
                50,
                0,
            ),
        ];
        for (what, replayed, now, bytes, seconds) in table {
            assert_eq!(
                tracker.lag(Lsn(replayed), at(now)),
                Some(Lag {
                    bytes,
                    seconds: secs(seconds)
                }),
                "{what}"
            );
        }
    }

    #[test]
    fn an_idle_primary_means_zero_lag_not_growing_lag() {
        let mut tracker = LagTracker::new(10);
        // The primary stops writing at 500; the replica replays it; an hour passes.
        for s in 0..3_600 {
            tracker.record_primary(at(s), Lsn(500));
        }
        assert_eq!(tracker.len(), 1);
        assert_eq!(tracker.lag(Lsn(500), at(3_600)), Some(Lag::default()));
        // A replica stuck before it is behind since the primary first got there.
        assert_eq!(
            tracker.lag(Lsn(400), at(3_600)),
            Some(Lag {
                bytes: 100,
                seconds: secs(3_600)
            })
        );
    }

    #[test]
    fn a_lower_lsn_restarts_the_history() {
        let mut tracker = LagTracker::new(10);
        tracker.record_primary(at(0), Lsn(1_000));
        tracker.record_primary(at(5), Lsn(10));
        assert_eq!(tracker.latest(), Some((at(5), Lsn(10))));
        assert_eq!(tracker.len(), 1);
    }

    #[test]
    fn out_of_order_times_are_clamped() {
        let mut tracker = LagTracker::new(10);
        tracker.record_primary(at(10), Lsn(100));
        tracker.record_primary(at(5), Lsn(200));
        assert_eq!(tracker.latest(), Some((at(10), Lsn(200))));
    }

    #[test]
    fn reset_forgets() {
        let mut tracker = LagTracker::new(10);
        tracker.record_primary(at(0), Lsn(100));
        tracker.reset();
        assert!(tracker.is_empty());
        assert_eq!(tracker.lag(Lsn(0), at(1)), None);
    }

    #[test]
    fn a_full_history_keeps_its_oldest_sample() {
        let mut tracker = LagTracker::new(8);
        for s in 0..1_000 {
            tracker.record_primary(at(s), Lsn(100 + s));
        }
        assert!(tracker.len() <= 8);
        assert_eq!(tracker.latest(), Some((at(999), Lsn(1_099))));
        // A replica behind the first sample ever recorded is still seen as 1000 s behind.
        assert_eq!(
            tracker.lag(Lsn(99), at(1_000)).map(|l| l.seconds),
            Some(secs(1_000))
        );
        // Recent positions keep a fine resolution.
        let recent = tracker.lag(Lsn(1_097), at(1_000)).unwrap();
        assert!(recent.seconds <= secs(3), "{recent:?}");
    }

    #[test]
    fn capacity_below_two_still_works() {
        let mut tracker = LagTracker::new(0);
        for s in 0..10 {
            tracker.record_primary(at(s), Lsn(s + 1));
        }
        assert_eq!(tracker.len(), 2);
        assert_eq!(tracker.latest(), Some((at(9), Lsn(10))));
        assert_eq!(tracker.lag(Lsn(10), at(20)), Some(Lag::default()));
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// A primary history: (seconds since previous sample, bytes written since previous).
        fn history() -> impl Strategy<Value = Vec<(u64, u64)>> {
            proptest::collection::vec((0u64..5, 0u64..3), 1..200)
        }

        /// Feeds the history; returns the samples as recorded, for a reference computation.
        fn feed(tracker: &mut LagTracker, history: &[(u64, u64)]) -> Vec<(Timestamp, Lsn)> {
            let (mut t, mut lsn) = (at(0), Lsn(1_000));
            let mut all = Vec::new();
            for &(dt, written) in history {
                t = t.plus(secs(dt));
                lsn = Lsn(lsn.0 + written);
                tracker.record_primary(t, lsn);
                all.push((t, lsn));
            }
            all
        }

        proptest! {
            #[test]
            fn zero_whenever_the_replica_replayed_the_latest(
                history in history(),
                capacity in 2usize..50,
                ahead in 0u64..100,
                later in 0u64..10_000,
            ) {
                let mut tracker = LagTracker::new(capacity);
                let all = feed(&mut tracker, &history);
                let (last_at, latest) = *all.last().unwrap();
                let lag = tracker.lag(Lsn(latest.0 + ahead), last_at.plus(secs(later)));
                prop_assert_eq!(lag, Some(Lag::default()));
            }

            #[test]
            fn seconds_never_decrease_as_time_passes(
                history in history(),
                capacity in 2usize..50,
                replayed in 0u64..1_500,
                now in 0u64..2_000,
                step in 0u64..1_000,
            ) {
                let mut tracker = LagTracker::new(capacity);
                feed(&mut tracker, &history);
                let earlier = tracker.lag(Lsn(replayed), at(now)).unwrap();
                let later = tracker.lag(Lsn(replayed), at(now + step)).unwrap();
                prop_assert!(later.seconds >= earlier.seconds);
                prop_assert_eq!(later.bytes, earlier.bytes);
            }

            #[test]
            fn bytes_never_underflow(
                history in history(),
                replayed in 0u64..u64::MAX,
            ) {
                let mut tracker = LagTracker::new(16);
                let all = feed(&mut tracker, &history);
                let latest = all.last().unwrap().1;
                let lag = tracker.lag(Lsn(replayed), at(10_000)).unwrap();
                prop_assert_eq!(lag.bytes, latest.0.saturating_sub(replayed));
            }

            #[test]
            fn exact_with_room_and_a_lower_bound_when_thinned(
                history in history(),
                capacity in 2usize..50,
                replayed in 900u64..1_500,
                after in 0u64..100,
            ) {
                // Reference: the first time the primary was past `replayed`, from every sample.
                let mut roomy = LagTracker::new(1_000);
                let all = feed(&mut roomy, &history);
                let now = all.last().unwrap().0.plus(secs(after));
                let truth = all
                    .iter()
                    .find(|(_, lsn)| lsn.0 > replayed)
                    .map(|(t, _)| now.since(*t))
                    .unwrap_or(Duration::ZERO);
                prop_assert_eq!(roomy.lag(Lsn(replayed), now).unwrap().seconds, truth);

                let mut small = LagTracker::new(capacity);
                feed(&mut small, &history);
                prop_assert!(small.len() <= capacity);
                let estimate = small.lag(Lsn(replayed), now).unwrap().seconds;
                prop_assert!(estimate <= truth, "{:?} > {:?}", estimate, truth);
            }
        }
    }
}
