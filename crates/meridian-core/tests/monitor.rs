//! The monitor's judgement end to end, in simulated time: probe outcomes go through
//! `NodeHealth`, the primary's WAL positions through `LagTracker`, both through
//! `node_conditions` into an `AlertBook`. No clock, no server: `now` is a counter.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use meridian_core::Lsn;
use meridian_core::alerts::{
    AlertBook, AlertEvent, AlertKind, AlertPolicy, Severity, node_conditions,
};
use meridian_core::health::NodeHealth;
use meridian_core::lag::LagTracker;
use meridian_core::observation::{NodeStatus, ProbeError, Timestamp};
use meridian_core::topology::{Health, NodeId};
use proptest::prelude::*;

const PROBE_INTERVAL: Duration = Duration::from_secs(1);
const PRIMARY: NodeId = NodeId(0);
const REPLICA: NodeId = NodeId(1);

fn success(latency: Duration) -> Result<NodeStatus, ProbeError> {
    Ok(NodeStatus {
        latency,
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

fn fast() -> Result<NodeStatus, ProbeError> {
    success(Duration::from_millis(5))
}

/// One probe round of the two-node cluster.
#[derive(Debug, Clone)]
struct Round {
    primary: Result<NodeStatus, ProbeError>,
    replica: Result<NodeStatus, ProbeError>,
    /// WAL bytes the primary wrote since the previous round (0: idle).
    written: u64,
    /// Whether the replica replayed everything the primary had written.
    replays: bool,
    /// Extra delay of this round beyond the probe interval, in milliseconds.
    jitter_ms: u64,
}

/// A two-node cluster as the monitor sees it, with a model of the alert book's promises.
struct Monitor {
    policy: AlertPolicy,
    now: Timestamp,
    primary: NodeHealth,
    replica: NodeHealth,
    tracker: LagTracker,
    primary_lsn: Lsn,
    replica_replayed: Lsn,
    book: AlertBook,
    /// Open alerts by id: (kind, node, raised_at, updated_at).
    open: BTreeMap<u64, (AlertKind, Option<String>, Timestamp, Timestamp)>,
    /// Every id ever raised.
    raised: BTreeSet<u64>,
    events: Vec<AlertEvent>,
}

impl Monitor {
    fn new() -> Self {
        Monitor {
            policy: AlertPolicy::default(),
            now: Timestamp(1_700_000_000_000),
            primary: NodeHealth::new(),
            replica: NodeHealth::new(),
            tracker: LagTracker::new(600),
            primary_lsn: Lsn(0x300_0000),
            replica_replayed: Lsn(0x300_0000),
            book: AlertBook::new(1),
            open: BTreeMap::new(),
            raised: BTreeSet::new(),
            events: Vec::new(),
        }
    }

    /// Runs one round and checks every invariant of the book after it.
    fn round(&mut self, round: &Round) -> Result<(), TestCaseError> {
        self.now = self
            .now
            .plus(PROBE_INTERVAL + Duration::from_millis(round.jitter_ms));
        self.primary_lsn = Lsn(self.primary_lsn.0 + round.written);
        let policy = &self.policy.health;
        self.primary.observe(policy, &round.primary);
        if round.primary.is_ok() {
            self.tracker.record_primary(self.now, self.primary_lsn);
        }
        self.replica.observe(policy, &round.replica);
        if round.replica.is_ok() && round.replays {
            self.replica_replayed = self.primary_lsn;
        }
        let lag = self.tracker.lag(self.replica_replayed, self.now);

        let nodes = [
            (PRIMARY, "pg0", "eu", true, &self.primary, None),
            (REPLICA, "pg1", "us", false, &self.replica, lag),
        ];
        for (id, name, region, is_primary, health, lag) in nodes {
            let conditions = node_conditions(&self.policy, id, is_primary, health, lag);
            let events = self
                .book
                .reconcile_node(id, name, region, &conditions, self.now);
            for event in &events {
                check_event(&mut self.open, &mut self.raised, event)?;
            }
            self.events.extend(events);

            // The book now holds exactly the node's conditions.
            let wanted: BTreeMap<_, _> = conditions.iter().map(|c| (c.kind, c.severity)).collect();
            let active: BTreeMap<_, _> = self
                .book
                .active()
                .filter(|a| a.node.as_deref() == Some(name))
                .map(|a| (a.kind, a.severity))
                .collect();
            prop_assert_eq!(active, wanted);
            // An endpoint alert always agrees with a non-healthy judgement.
            if matches!(health.health(), Health::Healthy | Health::Unknown) {
                prop_assert!(
                    !conditions
                        .iter()
                        .any(|c| c.kind != AlertKind::ReplicationLag)
                );
            }
        }

        let mut keys = BTreeSet::new();
        for alert in self.book.active() {
            prop_assert!(
                keys.insert((alert.kind, alert.node.clone())),
                "two active {:?} alerts for {:?}",
                alert.kind,
                alert.node
            );
        }
        let active_ids: BTreeSet<_> = self.book.active().map(|a| a.id).collect();
        let open_ids: BTreeSet<_> = self.open.keys().copied().collect();
        prop_assert_eq!(active_ids, open_ids);
        Ok(())
    }

    fn raised_of(&self, kind: AlertKind) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, AlertEvent::Raised(a) if a.kind == kind))
            .count()
    }
}

/// Checks one event against what the book promised so far, and records it.
fn check_event(
    open: &mut BTreeMap<u64, (AlertKind, Option<String>, Timestamp, Timestamp)>,
    raised: &mut BTreeSet<u64>,
    event: &AlertEvent,
) -> Result<(), TestCaseError> {
    let alert = event.alert();
    prop_assert!(alert.raised_at <= alert.updated_at);
    match event {
        AlertEvent::Raised(_) => {
            prop_assert!(raised.insert(alert.id), "id {} raised twice", alert.id);
            prop_assert!(alert.resolved_at.is_none());
            prop_assert_eq!(alert.raised_at, alert.updated_at);
            open.insert(
                alert.id,
                (
                    alert.kind,
                    alert.node.clone(),
                    alert.raised_at,
                    alert.updated_at,
                ),
            );
        }
        AlertEvent::Updated(_) | AlertEvent::Resolved(_) => {
            let Some((kind, node, raised_at, updated_at)) = open.get(&alert.id).cloned() else {
                return Err(TestCaseError::fail(format!(
                    "{event:?} refers to no open alert"
                )));
            };
            prop_assert_eq!((kind, &node), (alert.kind, &alert.node));
            prop_assert_eq!(raised_at, alert.raised_at);
            prop_assert!(alert.updated_at >= updated_at);
            if let AlertEvent::Resolved(_) = event {
                let resolved_at = alert.resolved_at.expect("resolved alert has a time");
                prop_assert!(resolved_at >= alert.updated_at);
                open.remove(&alert.id);
            } else {
                prop_assert!(alert.resolved_at.is_none());
                open.insert(alert.id, (kind, node, raised_at, alert.updated_at));
            }
        }
    }
    Ok(())
}

fn outcome() -> impl Strategy<Value = Result<NodeStatus, ProbeError>> {
    prop_oneof![
        5 => (0u64..1_000).prop_map(|ms| success(Duration::from_millis(ms))),
        2 => (1_000u64..10_000).prop_map(|ms| success(Duration::from_millis(ms))),
        1 => Just(Err(ProbeError::Timeout)),
        1 => Just(Err(ProbeError::Refused)),
    ]
}

/// Rounds in runs, so that sustained states (a dead node, a slow node, a stuck replica)
/// happen as well as noise.
fn rounds() -> impl Strategy<Value = Vec<Round>> {
    let run = (
        outcome(),
        outcome(),
        0u64..5_000,
        any::<bool>(),
        0u64..300,
        1usize..40,
    );
    proptest::collection::vec(run, 1..30).prop_map(|runs| {
        runs.into_iter()
            .flat_map(|(primary, replica, written, replays, jitter_ms, length)| {
                std::iter::repeat_n(
                    Round {
                        primary,
                        replica,
                        written,
                        replays,
                        jitter_ms,
                    },
                    length,
                )
            })
            .collect()
    })
}

fn quiet_round() -> Round {
    Round {
        primary: fast(),
        replica: fast(),
        written: 100,
        replays: true,
        jitter_ms: 0,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn the_book_keeps_its_promises_and_clears(rounds in rounds()) {
        let mut monitor = Monitor::new();
        for round in &rounds {
            monitor.round(round)?;
        }
        // Conditions clear: every failure leaves the error window, latency and lag are back.
        let enough = monitor.policy.health.error_window + 2 * monitor.policy.health.probes_to_change as usize;
        for _ in 0..enough {
            monitor.round(&quiet_round())?;
        }
        prop_assert_eq!(monitor.primary.health(), Health::Healthy);
        prop_assert_eq!(monitor.replica.health(), Health::Healthy);
        prop_assert_eq!(monitor.book.active().count(), 0);
        prop_assert!(monitor.open.is_empty());
    }

    #[test]
    fn one_slow_probe_among_fast_ones_never_raises_endpoint_slow(
        before in 0usize..40,
        after in 0usize..40,
        slow_ms in 1_000u64..120_000,
        slow_primary in any::<bool>(),
    ) {
        let mut monitor = Monitor::new();
        for _ in 0..before {
            monitor.round(&quiet_round())?;
        }
        let slow = success(Duration::from_millis(slow_ms));
        let mut round = quiet_round();
        if slow_primary { round.primary = slow } else { round.replica = slow }
        monitor.round(&round)?;
        for _ in 0..after {
            monitor.round(&quiet_round())?;
        }
        prop_assert_eq!(monitor.raised_of(AlertKind::EndpointSlow), 0);
        prop_assert!(monitor.events.is_empty(), "{:?}", monitor.events);
    }

    #[test]
    fn consecutive_failures_always_raise_endpoint_down(
        prefix in rounds(),
        replica_dies in any::<bool>(),
        strong in any::<bool>(),
    ) {
        let mut monitor = Monitor::new();
        for round in &prefix {
            monitor.round(round)?;
        }
        let error = if strong { ProbeError::Refused } else { ProbeError::Timeout };
        let (node, severity) = if replica_dies {
            (REPLICA, Severity::High)
        } else {
            (PRIMARY, Severity::Critical)
        };
        for _ in 0..monitor.policy.health.failures_to_down {
            let mut round = quiet_round();
            if replica_dies { round.replica = Err(error.clone()) } else { round.primary = Err(error.clone()) }
            monitor.round(&round)?;
        }
        let alert = monitor.book.get(AlertKind::EndpointDown, Some(node));
        prop_assert_eq!(alert.map(|a| a.severity), Some(severity));
    }
}

#[test]
fn a_killed_replica_is_down_within_three_probe_intervals() {
    let mut monitor = Monitor::new();
    for _ in 0..30 {
        monitor.round(&quiet_round()).unwrap();
    }
    let killed_at = monitor.now;
    let dead = Round {
        replica: Err(ProbeError::Refused),
        ..quiet_round()
    };
    while monitor.replica.health() != Health::Down {
        monitor.round(&dead).unwrap();
        assert!(
            monitor.now.since(killed_at) <= 3 * PROBE_INTERVAL,
            "still {:?} at {:?} after the kill",
            monitor.replica.health(),
            monitor.now.since(killed_at)
        );
    }
    let down = monitor
        .book
        .get(AlertKind::EndpointDown, Some(REPLICA))
        .unwrap();
    assert_eq!(down.severity, Severity::High);
    assert_eq!(down.node.as_deref(), Some("pg1"));
    assert_eq!(down.region.as_deref(), Some("us"));
    assert_eq!((down.value, down.threshold), (3.0, 3.0));
}

#[test]
fn an_idle_primary_never_makes_its_replica_lag() {
    let mut monitor = Monitor::new();
    let idle = Round {
        written: 0,
        ..quiet_round()
    };
    // An hour without a single write.
    for _ in 0..3_600 {
        monitor.round(&idle).unwrap();
    }
    let lag = monitor
        .tracker
        .lag(monitor.replica_replayed, monitor.now)
        .unwrap();
    assert_eq!((lag.bytes, lag.seconds), (0, Duration::ZERO));
    assert_eq!(monitor.raised_of(AlertKind::ReplicationLag), 0);
}

#[test]
fn a_stuck_replica_lags_raises_escalates_and_resolves_without_an_event_per_probe() {
    let mut monitor = Monitor::new();
    for _ in 0..10 {
        monitor.round(&quiet_round()).unwrap();
    }
    let stuck = Round {
        replays: false,
        ..quiet_round()
    };
    let mut raised_after = None;
    let mut critical_after = None;
    for second in 1..=400u64 {
        monitor.round(&stuck).unwrap();
        let alert = monitor.book.get(AlertKind::ReplicationLag, Some(REPLICA));
        if raised_after.is_none() && alert.is_some() {
            raised_after = Some(second);
        }
        if critical_after.is_none() && alert.is_some_and(|a| a.severity == Severity::High) {
            critical_after = Some(second);
        }
    }
    // The replica misses the primary's sample of its first stuck round, so it is 30 s behind
    // 30 rounds later; likewise 300 s.
    assert_eq!(raised_after, Some(31));
    assert_eq!(critical_after, Some(301));
    let lag_events = monitor
        .events
        .iter()
        .filter(|e| e.alert().kind == AlertKind::ReplicationLag)
        .count();
    // 370 rounds of creeping lag: a raise, one update per 10 % of growth, the escalation.
    assert!(lag_events < 40, "{lag_events} events");

    monitor.round(&quiet_round()).unwrap();
    assert!(
        monitor
            .book
            .get(AlertKind::ReplicationLag, Some(REPLICA))
            .is_none()
    );
    assert!(matches!(
        monitor.events.last(),
        Some(AlertEvent::Resolved(a)) if a.kind == AlertKind::ReplicationLag
    ));
}

#[test]
fn a_slow_primary_raises_endpoint_slow_after_two_probes_and_resolves_after_two() {
    let mut monitor = Monitor::new();
    for _ in 0..5 {
        monitor.round(&quiet_round()).unwrap();
    }
    let slow = Round {
        primary: success(Duration::from_millis(1_500)),
        ..quiet_round()
    };
    monitor.round(&slow).unwrap();
    assert!(
        monitor
            .book
            .get(AlertKind::EndpointSlow, Some(PRIMARY))
            .is_none()
    );
    monitor.round(&slow).unwrap();
    let alert = monitor
        .book
        .get(AlertKind::EndpointSlow, Some(PRIMARY))
        .unwrap();
    assert_eq!(alert.severity, Severity::Medium);
    assert_eq!((alert.value, alert.threshold), (1.5, 1.0));

    monitor.round(&quiet_round()).unwrap();
    assert!(
        monitor
            .book
            .get(AlertKind::EndpointSlow, Some(PRIMARY))
            .is_some()
    );
    monitor.round(&quiet_round()).unwrap();
    assert!(
        monitor
            .book
            .get(AlertKind::EndpointSlow, Some(PRIMARY))
            .is_none()
    );
    assert_eq!(monitor.raised_of(AlertKind::EndpointSlow), 1);
}
