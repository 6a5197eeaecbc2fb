//! A circuit breaker per node: stop sending requests to a node that keeps failing, and find out
//! with a few trial requests when it works again.
//!
//! - **Closed**: requests pass; `failures_to_open` consecutive failures open it.
//! - **Open**: requests are refused (the caller goes elsewhere or fails fast) until `open_for`
//!   has passed since it opened.
//! - **Half-open**: at most `trials` requests pass at a time as trials; once `trials` of them
//!   succeeded it closes, and any failure opens it again for another `open_for`.
//!
//! Pure and clock-free: the caller passes `now` to every call, asks [`Breaker::admit`] before a
//! request and reports its outcome with [`Breaker::record`]. A request admitted while closed
//! whose outcome arrives after the breaker opened (it was in flight) does not count twice.

use std::time::Duration;

use crate::observation::Timestamp;

/// When a breaker opens and how it tries again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failures that open a closed breaker.
    pub failures_to_open: u32,
    /// How long it stays open before trials.
    pub open_for: Duration,
    /// Trial requests allowed at a time when half-open; as many successes close it.
    pub trials: u32,
}

impl Default for BreakerPolicy {
    /// The original design's: open after 5 consecutive failures, 30 s open, 2 trials.
    fn default() -> Self {
        BreakerPolicy {
            failures_to_open: 5,
            open_for: Duration::from_secs(30),
            trials: 2,
        }
    }
}

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests pass; `failures` consecutive ones failed so far.
    Closed {
        /// Consecutive failures.
        failures: u32,
    },
    /// Requests are refused until `until`.
    Open {
        /// When trials may begin.
        until: Timestamp,
    },
    /// Trials are under way.
    HalfOpen {
        /// Trials admitted whose outcome is not known yet.
        in_flight: u32,
        /// Trials that succeeded.
        succeeded: u32,
    },
}

impl BreakerState {
    /// `closed`, `open` or `half_open`, for metrics and health documents.
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed { .. } => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen { .. } => "half_open",
        }
    }
}

/// Whether a request may go to the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Yes, as usual.
    Allowed,
    /// Yes, as one of the half-open breaker's trials.
    Trial,
    /// No; trials may begin at `retry_at` (or when a trial under way ends).
    Refused {
        /// When the breaker may admit again.
        retry_at: Timestamp,
    },
}

impl Admission {
    /// Whether the request may be sent.
    pub fn is_allowed(&self) -> bool {
        !matches!(self, Admission::Refused { .. })
    }
}

/// One node's breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaker {
    policy: BreakerPolicy,
    state: BreakerState,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(policy: BreakerPolicy) -> Breaker {
        Breaker {
            policy,
            state: BreakerState::Closed { failures: 0 },
        }
    }

    /// Where it is at `now` (an open breaker whose time is up reads as half-open).
    pub fn state(&self, now: Timestamp) -> BreakerState {
        match self.state {
            BreakerState::Open { until } if now >= until => BreakerState::HalfOpen {
                in_flight: 0,
                succeeded: 0,
            },
            state => state,
        }
    }

    /// Asks to send a request at `now`; a granted trial must be followed by its [`record`].
    ///
    /// [`record`]: Breaker::record
    pub fn admit(&mut self, now: Timestamp) -> Admission {
        self.state = self.state(now);
        match &mut self.state {
            BreakerState::Closed { .. } => Admission::Allowed,
            BreakerState::Open { until } => Admission::Refused { retry_at: *until },
            BreakerState::HalfOpen {
                in_flight,
                succeeded,
            } => {
                if *in_flight + *succeeded < self.policy.trials {
                    *in_flight += 1;
                    Admission::Trial
                } else {
                    Admission::Refused { retry_at: now }
                }
            }
        }
    }

    /// Reports how a request admitted as `admitted` ended at `now`.
    pub fn record(&mut self, now: Timestamp, admitted: Admission, success: bool) {
        self.state = self.state(now);
        let open = BreakerState::Open {
            until: now.plus(self.policy.open_for),
        };
        self.state = match (self.state, admitted) {
            // A request refused was never sent: nothing to learn.
            (state, Admission::Refused { .. }) => state,
            (BreakerState::Closed { .. }, _) if success => BreakerState::Closed { failures: 0 },
            (BreakerState::Closed { failures }, _) => {
                let failures = failures + 1;
                if failures >= self.policy.failures_to_open {
                    open
                } else {
                    BreakerState::Closed { failures }
                }
            }
            (
                BreakerState::HalfOpen {
                    in_flight,
                    succeeded,
                },
                Admission::Trial,
            ) => {
                let in_flight = in_flight.saturating_sub(1);
                if !success {
                    open
                } else if succeeded + 1 >= self.policy.trials {
                    BreakerState::Closed { failures: 0 }
                } else {
                    BreakerState::HalfOpen {
                        in_flight,
                        succeeded: succeeded + 1,
                    }
                }
            }
            // An outcome from before it opened (in flight then) or of a request admitted
            // before the trials began: the breaker already decided on fresher evidence.
            (state, _) => state,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Timestamp {
        Timestamp(ms)
    }

    #[test]
    fn five_consecutive_failures_open_it_and_a_success_resets_the_count() {
        let mut b = Breaker::new(BreakerPolicy::default());
        for _ in 0..4 {
            let a = b.admit(at(0));
            b.record(at(0), a, false);
        }
        let a = b.admit(at(0));
        b.record(at(0), a, true);
        assert_eq!(b.state(at(0)), BreakerState::Closed { failures: 0 });
        for i in 0..5 {
            assert_eq!(b.admit(at(i)), Admission::Allowed);
            b.record(at(i), Admission::Allowed, false);
        }
        assert_eq!(
            b.state(at(10)),
            BreakerState::Open {
                until: at(4 + 30_000)
            }
        );
        assert_eq!(
            b.admit(at(10)),
            Admission::Refused {
                retry_at: at(30_004)
            }
        );
    }

    #[test]
    fn after_the_open_time_two_trials_pass_and_two_successes_close_it() {
        let mut b = Breaker::new(BreakerPolicy::default());
        for _ in 0..5 {
            b.record(at(0), Admission::Allowed, false);
        }
        assert!(!b.admit(at(29_999)).is_allowed());
        let first = b.admit(at(30_000));
        let second = b.admit(at(30_000));
        assert_eq!((first, second), (Admission::Trial, Admission::Trial));
        assert!(
            !b.admit(at(30_001)).is_allowed(),
            "only two trials at a time"
        );
        b.record(at(30_010), first, true);
        assert_eq!(
            b.state(at(30_010)),
            BreakerState::HalfOpen {
                in_flight: 1,
                succeeded: 1
            }
        );
        assert!(!b.admit(at(30_011)).is_allowed(), "still two trials in all");
        b.record(at(30_020), second, true);
        assert_eq!(b.state(at(30_020)), BreakerState::Closed { failures: 0 });
        assert_eq!(b.admit(at(30_021)), Admission::Allowed);
    }

    #[test]
    fn a_failed_trial_opens_it_again_for_the_whole_open_time() {
        let mut b = Breaker::new(BreakerPolicy::default());
        for _ in 0..5 {
            b.record(at(0), Admission::Allowed, false);
        }
        let trial = b.admit(at(30_000));
        b.record(at(30_500), trial, false);
        assert_eq!(
            b.state(at(30_500)),
            BreakerState::Open { until: at(60_500) }
        );
        assert!(!b.admit(at(60_499)).is_allowed());
        assert_eq!(b.admit(at(60_500)), Admission::Trial);
    }

    #[test]
    fn outcomes_of_requests_in_flight_when_it_opened_do_not_count_again() {
        let policy = BreakerPolicy {
            failures_to_open: 2,
            ..BreakerPolicy::default()
        };
        let mut b = Breaker::new(policy);
        let slow = b.admit(at(0));
        b.record(at(1), Admission::Allowed, false);
        b.record(at(2), Admission::Allowed, false);
        let open = b.state(at(2));
        // The slow request fails late: the breaker stays open until the same time.
        b.record(at(5), slow, false);
        assert_eq!(b.state(at(5)), open);
        // Or succeeds late: that does not close it either.
        b.record(at(6), slow, true);
        assert_eq!(b.state(at(6)), open);
        // Nor does a late outcome of a closed-state request during the trials.
        let trial = b.admit(at(30_002));
        b.record(at(30_003), Admission::Allowed, true);
        assert_eq!(
            b.state(at(30_003)),
            BreakerState::HalfOpen {
                in_flight: 1,
                succeeded: 0
            }
        );
        b.record(at(30_004), trial, true);
        assert_eq!(b.as_str_at(at(30_004)), "half_open");
    }

    #[test]
    fn refused_requests_teach_it_nothing() {
        let mut b = Breaker::new(BreakerPolicy::default());
        for _ in 0..5 {
            b.record(at(0), Admission::Allowed, false);
        }
        let refused = b.admit(at(1));
        b.record(at(1), refused, true);
        assert_eq!(b.state(at(1)), BreakerState::Open { until: at(30_000) });
    }

    impl Breaker {
        fn as_str_at(&self, now: Timestamp) -> &'static str {
            self.state(now).as_str()
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// One step: time passes, then either a request is admitted or the oldest outstanding
        /// one ends (well or badly).
        #[derive(Debug, Clone)]
        enum Step {
            Admit(u64),
            End(u64, bool),
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                (0..2_000u64).prop_map(Step::Admit),
                (0..2_000u64, any::<bool>()).prop_map(|(d, ok)| Step::End(d, ok)),
            ]
        }

        proptest! {
            #[test]
            fn it_never_admits_while_open_nor_more_trials_than_allowed(
                steps in proptest::collection::vec(step(), 1..200),
            ) {
                let policy = BreakerPolicy {
                    failures_to_open: 3,
                    open_for: Duration::from_secs(1),
                    trials: 2,
                };
                let mut b = Breaker::new(policy);
                let mut now = 0;
                let mut outstanding: Vec<Admission> = Vec::new();
                for step in steps {
                    match step {
                        Step::Admit(d) => {
                            now += d;
                            let before = b.state(Timestamp(now));
                            let admitted = b.admit(Timestamp(now));
                            match before {
                                BreakerState::Closed { .. } => {
                                    prop_assert_eq!(admitted, Admission::Allowed)
                                }
                                BreakerState::Open { until } => {
                                    prop_assert!(Timestamp(now) < until);
                                    prop_assert!(!admitted.is_allowed());
                                }
                                BreakerState::HalfOpen { .. } => {
                                    prop_assert_ne!(admitted, Admission::Allowed)
                                }
                            }
                            if admitted.is_allowed() {
                                outstanding.push(admitted);
                            }
                        }
                        Step::End(d, ok) => {
                            now += d;
                            if !outstanding.is_empty() {
                                let admitted = outstanding.remove(0);
                                b.record(Timestamp(now), admitted, ok);
                            }
                        }
                    }
                    if let BreakerState::HalfOpen { in_flight, succeeded } = b.state(Timestamp(now)) {
                        prop_assert!(in_flight + succeeded <= policy.trials);
                        prop_assert!(succeeded < policy.trials);
                    }
                }
            }
        }
    }
}
