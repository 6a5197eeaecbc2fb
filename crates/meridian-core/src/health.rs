//! Per-node health judgement with hysteresis.
//!
//! A [`NodeHealth`] is fed one probe outcome at a time ([`NodeHealth::observe`]) and keeps the
//! judgement [`Health`] of one node. It reads no clock: probes arrive every `probe_interval`
//! and everything here is counted in probes, so a test replays a probe sequence exactly.
//!
//! # Evidence
//!
//! Each probe is classified before it moves the judgement:
//!
//! | probe outcome                                                           | evidence |
//! |-------------------------------------------------------------------------|----------|
//! | success, latency < `slow_warning` and error rate <= `error_rate_warning` | good     |
//! | success, latency >= `slow_warning` or error rate > `error_rate_warning`  | degraded |
//! | failure ([`ProbeError`], any strength)                                  | failed   |
//!
//! The error rate is failures / probes over the last `error_window` probes, this one included.
//! It must be *above* a threshold to count: with the defaults one lost probe in 20 (exactly
//! 5 %) is noise, two are not. The window is emptied when the node goes Down: the outage is
//! reported as such, and a node that comes back is judged on its behaviour since.
//!
//! # Transitions
//!
//! `p` = `probes_to_change` (default 2), `n` = `failures_to_down` (default 3).
//!
//! | from      | evidence                | to                                               |
//! |-----------|-------------------------|--------------------------------------------------|
//! | any       | `n`-th consecutive failure | Down                                          |
//! | Unknown   | good / degraded / failed | Healthy / Degraded / Unknown                    |
//! | Healthy   | good                    | Healthy                                          |
//! | Healthy   | degraded or failed      | Degraded once the last `p` probes were all not good, else Healthy |
//! | Degraded  | good                    | Healthy once the last `p` probes were all good, else Degraded |
//! | Degraded  | degraded or failed      | Degraded                                         |
//! | Down      | any success             | Degraded (recovering)                            |
//!
//! Decisions behind the table:
//! - **Failures count like slowness for Healthy -> Degraded.** One failed probe of a Healthy
//!   node leaves it Healthy, exactly as one slow probe does: a single lost packet must not
//!   change routing. With the defaults the progression under a dead node is
//!   Healthy, Healthy, Degraded, Down at the 1st, 2nd and 3rd failure. (A failure stays in
//!   the error window; two in 20 probes exceed the 5 % warning, so a node that keeps losing
//!   probes stays Degraded until they leave the window.)
//! - **Down needs `n` consecutive failures, whatever their strength.** A refused connection
//!   ([`ProbeError::is_strong`]) is not enough on its own here. The failover machine, which
//!   also asks the replicas whether they still receive WAL, uses strong evidence to confirm a
//!   dead primary faster; health is the slower, conservative judgement shown to operators and
//!   used for routing. With probes every `probe_interval`, a killed node is Down after
//!   `n` × `probe_interval`.
//! - **Down is left only through Degraded.** The first success after Down makes the node
//!   Degraded whatever it shows; it counts as the first of the `p` good probes needed for
//!   Healthy if it is good: a node that just died is not trusted as soon as it answers once,
//!   but after `p` good probes it is Healthy again (the window was emptied at Down).
//! - **Unknown is decided by the first success.** Hysteresis protects an established judgement;
//!   before the first success there is none, so the first success sets Healthy or Degraded.
//!   Failures before any success leave the node Unknown until the `n`-th makes it Down.
//!
//! # Slowness
//!
//! Separately from [`Health`], [`NodeHealth::slowness`] is a sustained latency level
//! ([`Slowness`]) with the same hysteresis: it rises to a level only when the last `p`
//! successful probes were all at or above it, and falls only when they were all below it.
//! The alert rules raise `endpoint_slow` from this level, never from one probe's latency.
//! Failures do not move it (a timeout is not a latency sample); reaching Down clears it.
//! Invariant (for a fixed policy): slowness above [`Slowness::Normal`] implies the health is
//! Degraded, because Healthy needs `p` consecutive good (fast) probes, which also bring the
//! slowness back to normal.
//!
//! The policy is passed to every call rather than stored, so a configuration reload applies
//! to the next probe; zero counts are treated as 1.

use std::collections::VecDeque;
use std::time::Duration;

use crate::observation::{NodeStatus, ProbeError};
use crate::topology::Health;

/// Thresholds of the health judgement.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthPolicy {
    /// A probe this slow or slower is degraded evidence (default 1 s).
    pub slow_warning: Duration,
    /// A probe this slow or slower is critically slow (default 5 s).
    pub slow_critical: Duration,
    /// Consecutive failed probes that make a node Down (default 3).
    pub failures_to_down: u32,
    /// Consecutive probes that must agree before Healthy and Degraded change into each other
    /// (default 2).
    pub probes_to_change: u32,
    /// Probes over which the error rate is computed (default 20).
    pub error_window: usize,
    /// Error rate from which a success is degraded evidence (default 0.05).
    pub error_rate_warning: f64,
    /// Error rate from which the `endpoint_down` alert is high rather than medium (default 0.20).
    pub error_rate_critical: f64,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            slow_warning: Duration::from_secs(1),
            slow_critical: Duration::from_secs(5),
            failures_to_down: 3,
            probes_to_change: 2,
            error_window: 20,
            error_rate_warning: 0.05,
            error_rate_critical: 0.20,
        }
    }
}

impl HealthPolicy {
    /// The latency level of one probe.
    pub fn slowness_of(&self, latency: Duration) -> Slowness {
        if latency >= self.slow_critical {
            Slowness::Critical
        } else if latency >= self.slow_warning {
            Slowness::Warning
        } else {
            Slowness::Normal
        }
    }

    fn failures_to_down(&self) -> u32 {
        self.failures_to_down.max(1)
    }

    fn probes_to_change(&self) -> u32 {
        self.probes_to_change.max(1)
    }

    fn error_window(&self) -> usize {
        self.error_window.max(1)
    }
}

/// A latency level, ordered from fast to slowest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Slowness {
    /// Below `slow_warning`.
    Normal,
    /// At or above `slow_warning`.
    Warning,
    /// At or above `slow_critical`.
    Critical,
}

/// What one probe says, before it moves the judgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Evidence {
    Good,
    Degraded,
    Failed,
}

/// The judgement state of one node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeHealth {
    health: Health,
    consecutive_failures: u32,
    /// Consecutive probes that were not good (degraded evidence or failures).
    not_good_streak: u32,
    /// Consecutive good probes.
    good_streak: u32,
    /// The last `error_window` probes, `true` for a failure.
    window: VecDeque<bool>,
    window_failures: usize,
    /// Latencies of the last `probes_to_change` successful probes since the node was last Down.
    recent_latencies: VecDeque<Duration>,
    slowness: Slowness,
    /// The latest probe's outcome: its latency or its error.
    last: Option<Result<Duration, ProbeError>>,
}

impl Default for NodeHealth {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeHealth {
    /// A node not probed yet: its health is Unknown until the first probe.
    pub fn new() -> Self {
        NodeHealth {
            health: Health::Unknown,
            consecutive_failures: 0,
            not_good_streak: 0,
            good_streak: 0,
            window: VecDeque::new(),
            window_failures: 0,
            recent_latencies: VecDeque::new(),
            slowness: Slowness::Normal,
            last: None,
        }
    }

    /// Feeds one probe outcome; returns the health after it.
    pub fn observe(
        &mut self,
        policy: &HealthPolicy,
        outcome: &Result<NodeStatus, ProbeError>,
    ) -> Health {
        self.record_in_window(policy, outcome.is_err());
        let evidence = match outcome {
            Err(error) => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.last = Some(Err(error.clone()));
                Evidence::Failed
            }
            Ok(status) => {
                self.consecutive_failures = 0;
                self.last = Some(Ok(status.latency));
                self.record_latency(policy, status.latency);
                if status.latency >= policy.slow_warning
                    || self.error_rate() > policy.error_rate_warning
                {
                    Evidence::Degraded
                } else {
                    Evidence::Good
                }
            }
        };
        if evidence == Evidence::Good {
            self.good_streak = self.good_streak.saturating_add(1);
            self.not_good_streak = 0;
        } else {
            self.not_good_streak = self.not_good_streak.saturating_add(1);
            self.good_streak = 0;
        }
        self.health = self.next_health(policy, evidence);
        if self.health == Health::Down {
            // A node that stopped answering is not "slow", nor "flaky": judge its latency and
            // its error rate afresh once it answers again.
            self.slowness = Slowness::Normal;
            self.recent_latencies.clear();
            self.window.clear();
            self.window_failures = 0;
        }
        self.health
    }

    fn record_in_window(&mut self, policy: &HealthPolicy, failed: bool) {
        self.window.push_back(failed);
        if failed {
            self.window_failures += 1;
        }
        while self.window.len() > policy.error_window() {
            if self.window.pop_front() == Some(true) {
                self.window_failures -= 1;
            }
        }
    }

    fn record_latency(&mut self, policy: &HealthPolicy, latency: Duration) {
        let p = policy.probes_to_change() as usize;
        self.recent_latencies.push_back(latency);
        while self.recent_latencies.len() > p {
            self.recent_latencies.pop_front();
        }
        if self.recent_latencies.len() < p {
            return;
        }
        let levels = self.recent_latencies.iter().map(|l| policy.slowness_of(*l));
        let lowest = levels.clone().min().unwrap_or(Slowness::Normal);
        let highest = levels.max().unwrap_or(Slowness::Normal);
        if lowest > self.slowness {
            self.slowness = lowest;
        } else if highest < self.slowness {
            self.slowness = highest;
        }
    }

    fn next_health(&self, policy: &HealthPolicy, evidence: Evidence) -> Health {
        if self.consecutive_failures >= policy.failures_to_down() {
            return Health::Down;
        }
        let p = policy.probes_to_change();
        match (self.health, evidence) {
            // Only reachable if `failures_to_down` was raised while the node was Down: a
            // failure is no reason to think it came back.
            (Health::Down, Evidence::Failed) => Health::Down,
            (Health::Down, _) => Health::Degraded,
            (Health::Unknown, Evidence::Good) => Health::Healthy,
            (Health::Unknown, Evidence::Degraded) => Health::Degraded,
            (Health::Unknown, Evidence::Failed) => Health::Unknown,
            (Health::Healthy, Evidence::Good) => Health::Healthy,
            (Health::Healthy, _) if self.not_good_streak >= p => Health::Degraded,
            (Health::Healthy, _) => Health::Healthy,
            (Health::Degraded, Evidence::Good) if self.good_streak >= p => Health::Healthy,
            (Health::Degraded, _) => Health::Degraded,
        }
    }

    /// The current judgement.
    pub fn health(&self) -> Health {
        self.health
    }

    /// Failed probes since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Failures / probes over the last `error_window` probes; 0 before the first probe.
    pub fn error_rate(&self) -> f64 {
        if self.window.is_empty() {
            0.0
        } else {
            self.window_failures as f64 / self.window.len() as f64
        }
    }

    /// Probes in the error window (fewer than `error_window` at first).
    pub fn probes_in_window(&self) -> usize {
        self.window.len()
    }

    /// The latest probe's latency; `None` before the first probe or when the latest failed.
    pub fn last_latency(&self) -> Option<Duration> {
        match &self.last {
            Some(Ok(latency)) => Some(*latency),
            _ => None,
        }
    }

    /// The latest probe's error; `None` before the first probe or when the latest succeeded.
    pub fn last_error(&self) -> Option<&ProbeError> {
        match &self.last {
            Some(Err(error)) => Some(error),
            _ => None,
        }
    }

    /// The sustained latency level (see the module note): never raised by one slow probe.
    pub fn slowness(&self) -> Slowness {
        self.slowness
    }

    /// The latency that supports the current slowness level: the highest of the last
    /// `probes_to_change` successful probes. `None` when the slowness is
    /// [`Slowness::Normal`].
    pub fn slow_latency(&self) -> Option<Duration> {
        if self.slowness == Slowness::Normal {
            return None;
        }
        self.recent_latencies.iter().max().copied()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn success(latency_ms: u64) -> Result<NodeStatus, ProbeError> {
        Ok(NodeStatus {
            latency: Duration::from_millis(latency_ms),
            connect_latency: None,
            in_recovery: false,
            timeline: Some(1),
            current_lsn: None,
            receive_lsn: None,
            replay_lsn: None,
            last_replay_at: None,
            wal_receiver: None,
            downstream: Vec::new(),
            synchronous_standby_names: String::new(),
            wal_sender_timeout: None,
            wal_receiver_timeout: None,
            connections: 1,
            max_connections: 100,
        })
    }

    /// One probe of a test sequence: `F` fast, `S` slow (2 s), `V` very slow (6 s), `T`
    /// timeout, `R` refused.
    fn probe(c: char) -> Result<NodeStatus, ProbeError> {
        match c {
            'F' => success(10),
            'S' => success(2_000),
            'V' => success(6_000),
            'T' => Err(ProbeError::Timeout),
            'R' => Err(ProbeError::Refused),
            other => panic!("unknown probe {other:?}"),
        }
    }

    fn letter(health: Health) -> char {
        match health {
            Health::Healthy => 'H',
            Health::Degraded => 'D',
            Health::Down => 'X',
            Health::Unknown => 'U',
        }
    }

    /// The judgement after each probe of `probes`, as letters.
    fn run(policy: &HealthPolicy, probes: &str) -> String {
        let mut node = NodeHealth::new();
        probes
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| letter(node.observe(policy, &probe(c))))
            .collect()
    }

    /// A policy whose error rate never matters, to isolate the other rules.
    fn no_error_rate() -> HealthPolicy {
        HealthPolicy {
            error_rate_warning: 1.1,
            error_rate_critical: 1.1,
            ..HealthPolicy::default()
        }
    }

    #[test]
    fn defaults_are_the_original_thresholds() {
        let policy = HealthPolicy::default();
        assert_eq!(policy.slow_warning, Duration::from_secs(1));
        assert_eq!(policy.slow_critical, Duration::from_secs(5));
        assert_eq!(policy.failures_to_down, 3);
        assert_eq!(policy.probes_to_change, 2);
        assert_eq!(policy.error_window, 20);
        assert_eq!(policy.error_rate_warning, 0.05);
        assert_eq!(policy.error_rate_critical, 0.20);
    }

    #[test]
    fn transitions_table() {
        // (what it specifies, policy, probes, judgement after each probe)
        let d = HealthPolicy::default();
        let n = no_error_rate();
        let table: &[(&str, &HealthPolicy, &str, &str)] = &[
            ("unknown before any success", &d, "T", "U"),
            ("first fast success is healthy", &d, "F", "H"),
            ("first slow success is degraded", &d, "S", "D"),
            ("one slow probe never flaps", &d, "FFSFF", "HHHHH"),
            ("slow, fast, slow never flaps", &d, "FSFSFS", "HHHHHH"),
            ("two slow probes degrade", &d, "FFSS", "HHHD"),
            ("two fast probes recover", &d, "FSSFF", "HHDDH"),
            ("one fast probe does not recover", &d, "FSSFS", "HHDDD"),
            (
                "a killed node is down at the 3rd failure",
                &d,
                "FFTTT",
                "HHHDX",
            ),
            ("a strong failure alone is not down", &d, "FR", "HH"),
            ("refused counts like timeouts", &d, "FRRR", "HHDX"),
            ("down from unknown", &d, "TTT", "UUX"),
            ("stays down", &d, "FTTTT", "HHDXX"),
            ("first success after down is degraded", &n, "FTTTF", "HHDXD"),
            ("then p good probes recover", &n, "FTTTFF", "HHDXDH"),
            ("a slow probe restarts recovery", &n, "FTTTFSFF", "HHDXDDDH"),
            ("one failure leaves healthy", &n, "FFTF", "HHHH"),
            ("failure then slow degrades", &n, "FFTS", "HHHD"),
            ("failures do not reset down count", &n, "FTTFTTT", "HHDDDDX"),
            ("very slow degrades like slow", &d, "FVV", "HHD"),
        ];
        for (what, policy, probes, expected) in table {
            assert_eq!(run(policy, probes), *expected, "{what}: {probes}");
        }
    }

    #[test]
    fn one_lost_probe_is_noise_two_are_not() {
        // 1 failure in the last 20 probes is 5 %, not above the warning threshold: the node
        // stays Healthy. A second failure makes 10 %: the successes after it are degraded
        // evidence until a failure leaves the window.
        let policy = HealthPolicy::default();
        let mut node = NodeHealth::new();
        for _ in 0..19 {
            node.observe(&policy, &probe('F'));
        }
        assert_eq!(node.observe(&policy, &probe('T')), Health::Healthy);
        assert_eq!(node.error_rate(), 0.05);
        for _ in 0..5 {
            assert_eq!(node.observe(&policy, &probe('F')), Health::Healthy);
        }
        assert_eq!(
            node.observe(&policy, &probe('T')),
            Health::Healthy,
            "one failure alone"
        );
        assert_eq!(node.error_rate(), 0.10);
        assert_eq!(node.observe(&policy, &probe('F')), Health::Degraded);
        // The first failure leaves the window after 13 more probes: 5 % again, and two good
        // probes make the node Healthy.
        for _ in 0..13 {
            node.observe(&policy, &probe('F'));
        }
        assert_eq!(node.error_rate(), 0.05);
        assert_eq!(node.observe(&policy, &probe('F')), Health::Healthy);
    }

    #[test]
    fn a_node_back_from_down_is_not_held_by_its_outage() {
        let policy = HealthPolicy::default();
        let mut node = NodeHealth::new();
        for _ in 0..20 {
            node.observe(&policy, &probe('F'));
        }
        for _ in 0..6 {
            node.observe(&policy, &probe('R'));
        }
        assert_eq!(node.health(), Health::Down);
        assert_eq!(
            node.error_rate(),
            0.0,
            "the outage is not counted as flakiness"
        );
        assert_eq!(node.observe(&policy, &probe('F')), Health::Degraded);
        assert_eq!(node.observe(&policy, &probe('F')), Health::Healthy);
    }

    #[test]
    fn error_rate_counts_the_window_only() {
        let policy = HealthPolicy {
            error_window: 4,
            ..HealthPolicy::default()
        };
        let mut node = NodeHealth::new();
        assert_eq!(node.error_rate(), 0.0);
        node.observe(&policy, &probe('T'));
        assert_eq!(node.error_rate(), 1.0);
        node.observe(&policy, &probe('F'));
        assert_eq!(node.error_rate(), 0.5);
        for _ in 0..3 {
            node.observe(&policy, &probe('F'));
        }
        assert_eq!(node.probes_in_window(), 4);
        assert_eq!(node.error_rate(), 0.0);
    }

    #[test]
    fn last_latency_and_last_error_describe_the_latest_probe() {
        let policy = HealthPolicy::default();
        let mut node = NodeHealth::new();
        assert_eq!(node.last_latency(), None);
        assert_eq!(node.last_error(), None);
        node.observe(&policy, &probe('S'));
        assert_eq!(node.last_latency(), Some(Duration::from_secs(2)));
        assert_eq!(node.last_error(), None);
        node.observe(&policy, &probe('R'));
        assert_eq!(node.last_latency(), None);
        assert_eq!(node.last_error(), Some(&ProbeError::Refused));
        assert_eq!(node.consecutive_failures(), 1);
        node.observe(&policy, &probe('F'));
        assert_eq!(node.consecutive_failures(), 0);
    }

    #[test]
    fn slowness_levels_move_with_hysteresis() {
        let policy = HealthPolicy::default();
        let mut node = NodeHealth::new();
        let mut levels = Vec::new();
        for c in "FSFSSVSVVFVFFT".chars() {
            node.observe(&policy, &probe(c));
            levels.push(node.slowness());
        }
        use Slowness::{Critical as C, Normal as N, Warning as W};
        //              F  S  F  S  S  V  S  V  V  F  V  F  F  T
        assert_eq!(levels, [N, N, N, N, W, W, W, W, C, C, C, C, N, N]);
    }

    #[test]
    fn slow_latency_is_the_highest_recent_success() {
        let policy = HealthPolicy::default();
        let mut node = NodeHealth::new();
        assert_eq!(node.slow_latency(), None);
        node.observe(&policy, &probe('V'));
        node.observe(&policy, &probe('S'));
        assert_eq!(node.slowness(), Slowness::Warning);
        assert_eq!(node.slow_latency(), Some(Duration::from_secs(6)));
        node.observe(&policy, &probe('F'));
        node.observe(&policy, &probe('F'));
        assert_eq!(node.slow_latency(), None);
    }

    #[test]
    fn down_clears_slowness() {
        let policy = HealthPolicy::default();
        let mut node = NodeHealth::new();
        for c in "VVTTT".chars() {
            node.observe(&policy, &probe(c));
        }
        assert_eq!(node.health(), Health::Down);
        assert_eq!(node.slowness(), Slowness::Normal);
        // One slow answer after recovery is not sustained slowness.
        node.observe(&policy, &probe('V'));
        assert_eq!(node.slowness(), Slowness::Normal);
    }

    #[test]
    fn zero_counts_behave_as_one() {
        let policy = HealthPolicy {
            failures_to_down: 0,
            probes_to_change: 0,
            error_window: 0,
            ..no_error_rate()
        };
        assert_eq!(run(&policy, "FSFTF"), "HDHXD");
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn outcome() -> impl Strategy<Value = Result<NodeStatus, ProbeError>> {
            prop_oneof![
                4 => (0u64..1_000).prop_map(success),
                2 => (1_000u64..10_000).prop_map(success),
                1 => Just(Err(ProbeError::Timeout)),
                1 => Just(Err(ProbeError::Refused)),
                1 => Just(Err(ProbeError::Rejected { sqlstate: "57P03".into() })),
            ]
        }

        fn policy() -> impl Strategy<Value = HealthPolicy> {
            (1u32..5, 1u32..4, 1usize..30).prop_map(|(down, change, window)| HealthPolicy {
                failures_to_down: down,
                probes_to_change: change,
                error_window: window,
                ..HealthPolicy::default()
            })
        }

        fn is_good(policy: &HealthPolicy, latency: Option<Duration>, rate: f64) -> bool {
            matches!(latency, Some(l) if l < policy.slow_warning)
                && rate <= policy.error_rate_warning
        }

        proptest! {
            #[test]
            fn one_slow_probe_never_changes_healthy(
                before in 2usize..30,
                after in 0usize..30,
                slow_ms in 1_000u64..60_000,
            ) {
                let policy = HealthPolicy::default();
                let mut node = NodeHealth::new();
                for _ in 0..before {
                    node.observe(&policy, &success(10));
                }
                prop_assert_eq!(node.health(), Health::Healthy);
                prop_assert_eq!(node.observe(&policy, &success(slow_ms)), Health::Healthy);
                for _ in 0..after {
                    prop_assert_eq!(node.observe(&policy, &success(10)), Health::Healthy);
                }
                prop_assert_eq!(node.slowness(), Slowness::Normal);
            }

            #[test]
            fn consecutive_failures_always_give_down(
                policy in policy(),
                prefix in proptest::collection::vec(outcome(), 0..40),
            ) {
                let mut node = NodeHealth::new();
                for probe in &prefix {
                    node.observe(&policy, probe);
                }
                for _ in 0..policy.failures_to_down {
                    node.observe(&policy, &Err(ProbeError::Timeout));
                }
                prop_assert_eq!(node.health(), Health::Down);
            }

            #[test]
            fn changes_need_agreeing_consecutive_probes(
                policy in policy(),
                probes in proptest::collection::vec(outcome(), 1..80),
            ) {
                let p = policy.probes_to_change as usize;
                let mut node = NodeHealth::new();
                // Whether each probe so far was good evidence.
                let mut good = Vec::new();
                for probe in &probes {
                    let before = node.health();
                    let after = node.observe(&policy, probe);
                    good.push(is_good(&policy, node.last_latency(), node.error_rate()));
                    let last_p = &good[good.len().saturating_sub(p)..];
                    if before != Health::Healthy && after == Health::Healthy
                        && before != Health::Unknown
                    {
                        prop_assert!(last_p.len() == p && last_p.iter().all(|g| *g),
                            "recovered without {} good probes: {:?}", p, good);
                    }
                    if before == Health::Healthy && after == Health::Degraded {
                        prop_assert!(last_p.len() == p && last_p.iter().all(|g| !*g),
                            "left healthy without {} bad probes: {:?}", p, good);
                    }
                    if before == Health::Down && after != Health::Down {
                        prop_assert_eq!(after, Health::Degraded);
                    }
                    if after == Health::Down {
                        prop_assert!(node.consecutive_failures() >= policy.failures_to_down);
                    }
                }
            }

            #[test]
            fn sustained_slowness_implies_degraded(
                policy in policy(),
                probes in proptest::collection::vec(outcome(), 1..80),
            ) {
                let mut node = NodeHealth::new();
                for probe in &probes {
                    node.observe(&policy, probe);
                    if node.slowness() != Slowness::Normal {
                        prop_assert_eq!(node.health(), Health::Degraded);
                        let latency = node.slow_latency().unwrap();
                        prop_assert!(policy.slowness_of(latency) >= node.slowness());
                    }
                    let rate = node.error_rate();
                    prop_assert!((0.0..=1.0).contains(&rate));
                }
            }
        }
    }
}
