//! The failover machine in a simulated cluster (see `sim/mod.rs`): scenarios that each name
//! the behaviour they specify, and properties over random fault schedules that check the
//! safety promises of `meridian_core::failover` (never two primaries in a published view, the
//! generation only increases, no promotion of a replica while the primary is reachable and
//! writable, one run at a time, a failed promotion halts automatic failover, no failover of a
//! primary its replicas still hear from, automatic failovers `min_interval` apart).
//!
//! Virtual time only; the schedules come from proptest's seeded strategies.

mod sim;

use std::time::Duration;

use meridian_core::Lsn;
use meridian_core::alerts::{AlertKind, Severity};
use meridian_core::failover::{
    Command, FailoverPolicy, Published, RunKind, RunOutcome, StepOutput, Work,
};
use meridian_core::topology::NodeId;
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

use sim::{
    CONNECT_TIMEOUT, ClusterConfig, Event, Fault, PROBE_INTERVAL, PROBE_TIMEOUT, Reach, Sim,
    SimRole, StepFault, TICK, node,
};

const N0: NodeId = NodeId(0);
const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// n0 primary and n1 in `us` (priority 10), n2 in `eu` (priority 8); all stream from n0.
fn three_nodes() -> ClusterConfig {
    ClusterConfig::new(vec![
        node("us", 10),
        node("us", 10).from(0),
        node("eu", 8).from(0),
    ])
}

/// Runs until the first view is published and checks it: n0, generation 1.
fn started(config: ClusterConfig) -> Sim {
    let mut sim = Sim::new(config);
    sim.run_until(PROBE_INTERVAL);
    assert_eq!(
        sim.view(),
        Some(Published {
            generation: 1,
            primary: Some(N0),
            paused: false
        }),
        "{}",
        sim.report(50)
    );
    sim
}

fn assert_safe(sim: &Sim) {
    assert!(sim.violations.is_empty(), "{}", sim.report(200));
}

/// The slowest a step against a reachable node is carried out (base delay + jitter).
const PROMOTE_DELAY: u64 = 300 + 2 * TICK;

#[test]
fn the_writable_node_is_published_once_every_node_answered() {
    let mut sim = Sim::new(three_nodes());
    sim.run_until(5_000);
    assert_eq!(
        sim.published,
        vec![(
            TICK,
            Published {
                generation: 1,
                primary: Some(N0),
                paused: false
            }
        )],
        "one view, as soon as the first probes came back"
    );
    assert!(sim.executed.is_empty());
    assert_safe(&sim);
}

#[test]
fn a_killed_primary_is_replaced_within_the_detection_bound() {
    let mut sim = started(three_nodes());
    let policy = FailoverPolicy::default();
    let killed = 10_000;
    sim.fault(killed, Fault::Kill(0));
    let promoted = sim.run_until_true(30_000, |s| {
        s.view()
            .is_some_and(|v| v.primary.is_some() && v.primary != Some(N0))
    });
    // The first probe after the kill sees a refused connection; then every confirm_interval
    // until failure_threshold failures, the replicas' streams broke at once; the promotion
    // itself; a tick of slack at each hand-over.
    let bound = PROBE_INTERVAL
        + u64::from(policy.failure_threshold) * ms(policy.confirm_interval)
        + PROMOTE_DELAY
        + 3 * TICK;
    let promoted = promoted.expect("a new primary is published");
    assert!(
        promoted - killed <= bound,
        "published {} ms after the kill, bound {bound} ms\n{}",
        promoted - killed,
        sim.report(80)
    );
    sim.run_until(40_000);
    // n1 and n2 hold the same WAL: n1's region has the higher priority.
    let views: Vec<Published> = sim.published.iter().map(|(_, p)| *p).collect();
    assert_eq!(
        views,
        vec![
            Published {
                generation: 1,
                primary: Some(N0),
                paused: false
            },
            Published {
                generation: 1,
                primary: None,
                paused: true
            },
            Published {
                generation: 2,
                primary: Some(N1),
                paused: false
            },
        ]
    );
    // A dead primary is not fenced (nothing listens); the candidate is told it replicates
    // asynchronously, as its predecessor did, then promoted; n2 follows the new primary.
    assert_eq!(
        sim.works_since(killed),
        vec![
            Work::SetSynchronous {
                node: N1,
                value: String::new()
            },
            Work::Promote { node: N1 },
            Work::Repoint {
                node: N2,
                upstream: N1
            }
        ]
    );
    assert_eq!(sim.node(2).upstream, Some(N1));
    assert_eq!(sim.node(2).lsn, sim.node(1).lsn, "n2 streams from n1");
    let run = sim.runs.values().last().expect("a run");
    assert_eq!(run.record.outcome, RunOutcome::Completed);
    assert_eq!(run.record.kind, RunKind::Failover);
    let phases: Vec<&str> = run.record.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        phases,
        [
            "detection",
            "fence",
            "synchronous",
            "promote",
            "publish",
            "repoint"
        ]
    );
    assert_eq!(sim.machine.state().needs_rejoin, vec![N0]);
    assert_eq!(sim.raised_of(AlertKind::FailoverTriggered).len(), 1);
    assert_eq!(sim.raised_of(AlertKind::FailoverCompleted).len(), 1);
    assert_safe(&sim);
}

#[test]
fn a_hung_primary_is_replaced_once_its_replicas_stop_hearing_from_it() {
    let mut sim = started(three_nodes());
    let policy = FailoverPolicy::default();
    let hung = 10_000;
    sim.fault(hung, Fault::Hang(0));
    let promoted = sim.run_until_true(60_000, |s| {
        s.view()
            .is_some_and(|v| v.primary.is_some() && v.primary != Some(N0))
    });
    // The replicas' connections stay open and silent: they count as proof of life until
    // receiver_timeout (raised to half of wal_sender_timeout + 1 s). Probes time out, one at a
    // time; the fence is tried (a timeout is weak evidence) and times out on connecting.
    let receiver_timeout = ms(policy
        .receiver_timeout
        .max(sim::WAL_SENDER_TIMEOUT / 2 + Duration::from_secs(1)));
    let bound = PROBE_INTERVAL
        + receiver_timeout.max(u64::from(policy.failure_threshold) * (PROBE_TIMEOUT + TICK))
        + PROBE_TIMEOUT
        + CONNECT_TIMEOUT
        + PROMOTE_DELAY
        + 3 * TICK;
    let promoted = promoted.expect("a new primary is published");
    assert!(
        promoted - hung <= bound,
        "published {} ms after the hang, bound {bound} ms\n{}",
        promoted - hung,
        sim.report(80)
    );
    assert!(
        promoted - hung > receiver_timeout,
        "not before the replicas' streams went silent for receiver_timeout"
    );
    let works = sim.works_since(hung);
    assert_eq!(works[0], Work::Fence { node: N0 }, "{works:?}");
    assert_eq!(works[2], Work::Promote { node: N1 }, "{works:?}");
    assert_safe(&sim);
}

#[test]
fn a_primary_cut_off_from_the_monitor_only_is_not_failed_over() {
    let mut sim = started(three_nodes());
    sim.fault(10_000, Fault::Partition(0));
    sim.run_until(60_000);
    assert!(sim.executed.is_empty(), "{}", sim.report(60));
    assert_eq!(
        sim.view(),
        Some(Published {
            generation: 1,
            primary: Some(N0),
            paused: false
        })
    );
    assert_eq!(sim.published.len(), 1);
    assert!(sim.machine.state().suspect_since.is_some());
    // An alert instead, once.
    let down = sim.raised_of(AlertKind::PrimaryUnreachable);
    assert_eq!(down.len(), 1, "{}", sim.report(40));
    assert_eq!(down[0].1.node, Some(N0));
    assert_eq!(down[0].1.severity, Severity::Critical);
    // The partition heals: the suspicion ends.
    sim.fault(61_000, Fault::Revive(0));
    sim.run_until(64_000);
    assert_eq!(sim.machine.state().suspect_since, None);
    assert!(
        sim.resolved.iter().any(|&(at, kind, node)| at >= 61_000
            && kind == AlertKind::PrimaryUnreachable
            && node == Some(N0)),
        "the alert is resolved once the primary answers: {:?}",
        sim.resolved
    );
    assert!(sim.executed.is_empty());
    assert_safe(&sim);
}

#[test]
fn in_synchronous_mode_only_a_synchronous_replica_is_promoted_and_nothing_acknowledged_is_lost() {
    // n1 would win without synchronous mode (its region's priority is higher).
    let mut config = three_nodes();
    config.synchronous = "FIRST 1 (n2)".into();
    let mut sim = started(config);
    sim.fault(10_000, Fault::Kill(0));
    sim.run_until(30_000);
    assert_eq!(
        sim.view().and_then(|v| v.primary),
        Some(N2),
        "{}",
        sim.report(60)
    );
    assert_eq!(sim.promotions.len(), 1);
    let promotion = &sim.promotions[0];
    assert_eq!(promotion.node, N2);
    assert_eq!(promotion.lost_acknowledged, 0);
    assert!(promotion.lsn >= promotion.old_acknowledged);
    // The surviving replica becomes the new primary's synchronous replica, before the
    // promotion: its first commit as primary already waits for it.
    let works = sim.works_since(10_000);
    let set = works.iter().position(|w| {
        *w == Work::SetSynchronous {
            node: N2,
            value: "FIRST 1 (\"n1\")".into(),
        }
    });
    let promoted = works.iter().position(|w| *w == Work::Promote { node: N2 });
    assert!(set.is_some() && set < promoted, "{works:?}");
    assert_eq!(sim.node(2).synchronous_standby_names, "FIRST 1 (\"n1\")");
    assert_safe(&sim);
}

#[test]
fn the_replica_with_the_most_wal_is_promoted_whatever_its_region() {
    // n1 (preferred region) receives less than the primary writes: it falls behind.
    let config = ClusterConfig::new(vec![
        node("us", 10),
        node("us", 10).from(0).throughput(900),
        node("eu", 8).from(0),
    ]);
    let mut sim = started(config);
    sim.fault(10_000, Fault::Kill(0));
    sim.run_until(30_000);
    assert!(sim.node(1).lsn < sim.node(2).lsn || sim.node(1).upstream == Some(N2));
    assert_eq!(
        sim.view().and_then(|v| v.primary),
        Some(N2),
        "{}",
        sim.report(60)
    );
    let run = sim.runs.values().last().expect("a run");
    assert!(
        run.record.ranking.starts_with("1. n2"),
        "{}",
        run.record.ranking
    );
    assert_safe(&sim);
}

#[test]
fn replicas_too_far_behind_or_marked_no_failover_are_not_promoted() {
    let mut config = ClusterConfig::new(vec![
        node("us", 10),
        node("us", 10).from(0).no_failover(),
        node("us", 10).from(0).throughput(500),
        node("eu", 8).from(0),
    ]);
    config.policy.max_lag = 8_000;
    let mut sim = started(config);
    sim.fault(20_000, Fault::Kill(0));
    sim.run_until(40_000);
    assert_eq!(
        sim.view().and_then(|v| v.primary),
        Some(NodeId(3)),
        "{}",
        sim.report(60)
    );
    let run = sim.runs.values().last().expect("a run");
    assert!(
        run.record.ranking.contains("n1: configured no_failover"),
        "{}",
        run.record.ranking
    );
    assert!(
        run.record.ranking.contains("n2: ") && run.record.ranking.contains("max_lag_on_failover"),
        "{}",
        run.record.ranking
    );
    assert_safe(&sim);
}

/// us (10): n0 primary, n1; eu (8): n2 leader, n3 from n2; ap (6): n4 leader, n5 from n4.
/// The ap nodes answer fastest, so that only the region priority prefers eu.
fn three_regions() -> ClusterConfig {
    ClusterConfig::new(vec![
        node("us", 10),
        node("us", 10).from(0),
        node("eu", 8).from(0).priority(1).latency_ms(20),
        node("eu", 8).from(2).latency_ms(20),
        node("ap", 6).from(0).latency_ms(1),
        node("ap", 6).from(4).latency_ms(1),
    ])
}

#[test]
fn a_lost_region_fails_over_to_the_next_region_by_priority_and_regions_keep_their_cascades() {
    let mut sim = started(three_regions());
    sim.fault(10_000, Fault::Kill(0));
    sim.fault(10_000, Fault::Kill(1));
    sim.run_until(30_000);
    assert_eq!(
        sim.view().and_then(|v| v.primary),
        Some(N2),
        "{}",
        sim.report(80)
    );
    // Equal WAL everywhere: eu wins on region priority (ap answers faster), n2 on node priority.
    let run = sim.runs.values().last().expect("a run");
    assert_eq!(run.record.new_primary, Some(N2));
    assert!(
        run.record.ranking.starts_with("1. n2 (eu"),
        "{}",
        run.record.ranking
    );
    // repoint_plan: the new primary feeds its own region (n3 already streams from n2) and the
    // leader of every other region (n4); n5 keeps cascading from its leader.
    let repoints: Vec<Work> = sim
        .works_since(10_000)
        .into_iter()
        .filter(|w| matches!(w, Work::Repoint { .. }))
        .collect();
    assert_eq!(
        repoints,
        vec![Work::Repoint {
            node: NodeId(4),
            upstream: N2
        }]
    );
    assert_eq!(
        sim.machine.repoint_plan(N2),
        vec![],
        "nothing left to repoint"
    );
    assert_eq!(sim.node(3).upstream, Some(N2));
    assert_eq!(sim.node(4).upstream, Some(N2));
    assert_eq!(sim.node(5).upstream, Some(NodeId(4)));
    for replica in [3, 4, 5] {
        assert_eq!(
            sim.node(replica).lsn,
            sim.node(2).lsn,
            "n{replica} caught up"
        );
        assert!(sim.node(replica).receiver.as_ref().is_some_and(|r| r.live));
    }
    assert_safe(&sim);
}

#[test]
fn synchronous_replication_across_regions_survives_the_primary_then_its_whole_region() {
    // Commits wait for n1 (us) and n2 (eu's leader), as `meridian demo` sets it up.
    let mut config = three_regions();
    config.synchronous = "ANY 2 (n1, n2)".into();
    let mut sim = started(config);
    sim.fault(10_000, Fault::Kill(0));
    sim.run_until_true(30_000, |s| s.promotions.len() == 1)
        .unwrap_or_else(|| panic!("no promotion:\n{}", sim.report(60)));
    assert_eq!(sim.promotions[0].node, N1, "{}", sim.report(60));
    assert_eq!(sim.promotions[0].lost_acknowledged, 0);
    // n2 stays synchronous; n1's place goes to a replica that streams from the new primary:
    // ap's leader n4, never the cascaded n3, which would never confirm a commit.
    let settings: Vec<Work> = sim
        .works_since(10_000)
        .into_iter()
        .filter(|w| matches!(w, Work::SetSynchronous { .. }))
        .collect();
    assert_eq!(
        settings,
        vec![Work::SetSynchronous {
            node: N1,
            value: "ANY 2 (\"n2\", \"n4\")".into()
        }]
    );

    // Then the whole us region: only the synchronous n2 may be promoted, and it lacks nothing.
    sim.fault(80_000, Fault::Kill(1));
    sim.run_until_true(110_000, |s| s.promotions.len() == 2)
        .unwrap_or_else(|| panic!("no second promotion:\n{}", sim.report(60)));
    let second = &sim.promotions[1];
    assert_eq!(second.node, N2, "{}", sim.report(60));
    assert!(second.old_synchronous);
    assert_eq!(second.lost_acknowledged, 0);
    assert!(second.lsn >= second.old_acknowledged);
    // n4 stays; n3 (n2's cascade) now streams from the primary itself and takes n2's place.
    sim.run_until(140_000);
    assert_eq!(
        sim.node(2).synchronous_standby_names,
        "ANY 2 (\"n4\", \"n3\")"
    );
    assert_safe(&sim);
}

#[test]
fn a_switchover_fences_waits_for_replay_then_promotes_and_loses_nothing() {
    // n1 lags: its WaitReplay must really wait.
    let config = ClusterConfig::new(vec![
        node("us", 10),
        node("us", 10).from(0).throughput(900),
        node("eu", 8).from(0),
    ]);
    let mut sim = started(config);
    let asked = 10_000;
    sim.command(asked, Command::Switchover { to: Some(N1) });
    sim.run_until(30_000);
    let steps = sim.work_since(asked);
    let works: Vec<&Work> = steps.iter().map(|e| &e.work).collect();
    let fence = steps[0];
    let Some(sim::Finished {
        result: Ok(StepOutput::Fenced { lsn: Some(fenced) }),
        ..
    }) = sim.outcome_of(fence.step)
    else {
        panic!(
            "the fence reports the primary's last position: {}",
            sim.report(60)
        );
    };
    let fenced = *fenced;
    assert_eq!(
        works,
        vec![
            &Work::Fence { node: N0 },
            &Work::WaitReplay {
                node: N1,
                lsn: fenced
            },
            &Work::SetSynchronous {
                node: N1,
                value: String::new()
            },
            &Work::Promote { node: N1 },
            &Work::Repoint {
                node: N2,
                upstream: N1
            },
            &Work::Rejoin {
                node: N0,
                upstream: N1
            },
        ],
        "{}",
        sim.report(60)
    );
    // The promotion waited for the replay, which took a while.
    let replayed = sim.outcome_of(steps[1].step).expect("replayed");
    assert!(
        replayed.at >= steps[1].at + 5 * TICK,
        "n1 had WAL to catch up"
    );
    assert!(steps[2].at >= replayed.at);
    // Nothing lost: the new primary holds everything the old one wrote.
    assert_eq!(sim.promotions.len(), 1);
    assert!(Lsn(sim.promotions[0].lsn) >= fenced);
    // The old primary follows the new one, with nothing to rewind.
    assert_eq!(sim.node(0).role, SimRole::Replica);
    assert_eq!(sim.node(0).upstream, Some(N1));
    assert!(sim.node(0).receiver.as_ref().is_some_and(|r| r.live));
    assert_eq!(sim.node(0).timeline, sim.node(1).timeline);
    let views: Vec<Published> = sim.published.iter().map(|(_, p)| *p).collect();
    assert_eq!(
        views[1..],
        [
            Published {
                generation: 1,
                primary: None,
                paused: true
            },
            Published {
                generation: 2,
                primary: Some(N1),
                paused: false
            }
        ]
    );
    let run = sim.runs.values().last().expect("a run");
    assert_eq!(run.record.kind, RunKind::Switchover);
    assert_eq!(run.record.outcome, RunOutcome::Completed);
    assert!(
        sim.machine.state().needs_rejoin.is_empty(),
        "n0 was seen as a replica"
    );
    assert_safe(&sim);
}

#[test]
fn an_aborted_switchover_republishes_the_old_primary_unpaused_and_unfences_it() {
    // n1 receives far less than n0 writes: it cannot replay n0's position in time.
    let config = ClusterConfig::new(vec![
        node("us", 10),
        node("us", 10).from(0).throughput(200),
        node("eu", 8).from(0),
    ]);
    let mut sim = started(config);
    let asked = 10_000;
    sim.command(asked, Command::Switchover { to: Some(N1) });
    sim.run_until(40_000);
    let works = sim.works_since(asked);
    assert!(
        matches!(
            works.as_slice(),
            [
                Work::Fence { node: N0 },
                Work::WaitReplay { node: N1, .. },
                Work::Unfence { node: N0 }
            ]
        ),
        "{works:?}\n{}",
        sim.report(60)
    );
    let views: Vec<Published> = sim.published.iter().map(|(_, p)| *p).collect();
    assert_eq!(
        views,
        vec![
            Published {
                generation: 1,
                primary: Some(N0),
                paused: false
            },
            Published {
                generation: 1,
                primary: None,
                paused: true
            },
            Published {
                generation: 1,
                primary: Some(N0),
                paused: false
            }
        ]
    );
    assert!(!sim.node(0).fenced, "unfenced");
    assert_eq!(sim.node(0).role, SimRole::Primary);
    let lsn = sim.node(0).lsn;
    sim.run_until(41_000);
    assert!(sim.node(0).lsn > lsn, "n0 takes writes again");
    assert!(sim.promotions.is_empty());
    let run = sim.runs.values().last().expect("a run");
    assert!(
        matches!(&run.record.outcome, RunOutcome::Failed(why) if why.contains("did not catch up")),
        "the run's last record says it failed: {:?}",
        run.record
    );
    assert_eq!(sim.machine.state().running, None);
    assert_eq!(sim.raised_of(AlertKind::FailoverFailed).len(), 1);
    assert_safe(&sim);
}

#[test]
fn a_switchover_whose_fence_fails_keeps_the_primary() {
    let mut sim = started(three_nodes());
    sim.fail_step(1, StepFault::Fail);
    sim.command(10_000, Command::Switchover { to: None });
    sim.run_until(20_000);
    assert_eq!(sim.works_since(10_000), vec![Work::Fence { node: N0 }]);
    assert_eq!(
        sim.view(),
        Some(Published {
            generation: 1,
            primary: Some(N0),
            paused: false
        })
    );
    assert!(sim.promotions.is_empty());
    assert_eq!(sim.machine.state().running, None);
    assert_safe(&sim);
}

#[test]
fn an_operator_failover_with_a_live_primary_fences_it_first() {
    let mut sim = started(three_nodes());
    sim.command(
        10_000,
        Command::Failover {
            region: Some("eu".into()),
            node: None,
        },
    );
    sim.run_until(20_000);
    let works = sim.works_since(10_000);
    assert!(
        matches!(
            works.as_slice(),
            [
                Work::Fence { node: N0 },
                Work::WaitReplay { node: N2, .. },
                Work::SetSynchronous { node: N2, .. },
                Work::Promote { node: N2 },
                ..
            ]
        ),
        "{works:?}"
    );
    assert_eq!(sim.view().and_then(|v| v.primary), Some(N2));
    assert_safe(&sim);
}

#[test]
fn automatic_failovers_are_at_least_min_interval_apart() {
    let mut config = three_nodes();
    config.policy.min_interval = Duration::from_secs(30);
    let mut sim = started(config);
    sim.fault(10_000, Fault::Kill(0));
    sim.fault(15_000, Fault::Kill(1));
    sim.run_until(60_000);
    let automatic: Vec<(u64, u64)> = sim
        .runs
        .values()
        .filter(|r| r.automatic && r.record.outcome == RunOutcome::Completed)
        .map(|r| (r.started, r.record.finished_at.expect("finished").0))
        .collect();
    assert_eq!(automatic.len(), 2, "{}", sim.report(80));
    let (first_end, second_start) = (automatic[0].1, automatic[1].0);
    assert!(second_start - first_end >= 30_000, "{automatic:?}");
    assert!(
        second_start - first_end <= 30_000 + 2 * TICK,
        "and not much later: {automatic:?}"
    );
    assert_eq!(sim.view().and_then(|v| v.primary), Some(N2));
    assert_eq!(sim.view().map(|v| v.generation), Some(3));
    assert_safe(&sim);
}

#[test]
fn a_failed_promotion_halts_automatic_failover() {
    let mut sim = started(three_nodes());
    // The primary is dead, so the second step is the promotion (the first sets the
    // candidate's synchronous replicas).
    sim.fail_step(2, StepFault::Fail);
    sim.fault(10_000, Fault::Kill(0));
    sim.run_until(60_000);
    assert_eq!(
        sim.works_since(10_000),
        vec![
            Work::SetSynchronous {
                node: N1,
                value: String::new()
            },
            Work::Promote { node: N1 }
        ]
    );
    let failed = sim.raised_of(AlertKind::FailoverFailed);
    assert_eq!(failed.len(), 1, "{}", sim.report(60));
    assert_eq!(failed[0].1.severity, Severity::Critical);
    assert_eq!(
        sim.view(),
        Some(Published {
            generation: 1,
            primary: None,
            paused: false
        })
    );
    assert!(sim.machine.state().halted.is_some());
    assert_safe(&sim);
}

#[test]
fn after_a_failed_promotion_an_operator_failover_promotes_a_replica() {
    let mut sim = started(three_nodes());
    sim.fail_step(2, StepFault::Fail);
    sim.fault(10_000, Fault::Kill(0));
    sim.run_until(30_000);
    assert!(sim.machine.state().halted.is_some());
    sim.command(
        30_000,
        Command::Failover {
            region: None,
            node: None,
        },
    );
    sim.run_until(40_000);
    assert!(
        sim.view()
            .is_some_and(|v| v.primary.is_some_and(|p| p != N0) && !v.paused),
        "the operator's failover promotes a replica: {:?}\n{}",
        sim.view(),
        sim.report(2000)
    );
    assert_safe(&sim);
}

#[test]
fn an_old_primary_that_comes_back_gets_no_traffic_until_it_rejoins() {
    let mut sim = started(three_nodes());
    sim.fault(10_000, Fault::Kill(0));
    sim.fault(20_000, Fault::Revive(0));
    sim.run_until(30_000);
    // n0 restarted as a writable primary on the old timeline: a split brain in the servers,
    // not in the published view.
    assert_eq!(sim.node(0).role, SimRole::Primary);
    assert_eq!(sim.view().and_then(|v| v.primary), Some(N1));
    assert_eq!(sim.machine.state().needs_rejoin, vec![N0]);
    sim.command(30_000, Command::Rejoin { node: N0 });
    sim.run_until(35_000);
    assert_eq!(
        sim.works_since(30_000),
        vec![Work::Rejoin {
            node: N0,
            upstream: N1
        }]
    );
    assert_eq!(sim.node(0).role, SimRole::Replica);
    assert!(
        sim.node(0)
            .receiver
            .as_ref()
            .is_some_and(|r| r.live && r.upstream == N1)
    );
    assert!(sim.machine.state().needs_rejoin.is_empty());
    assert_eq!(sim.view().and_then(|v| v.primary), Some(N1));
    assert_safe(&sim);
}

#[test]
fn an_old_primary_is_not_adopted_again_after_its_successor_was() {
    // Found by `safety_holds_over_random_fault_schedules`, minimized. n0 dies; n1's promotion
    // takes effect but its reply is lost (the run fails, automatic failover halts); once
    // resumed, the machine adopts n1, the writable node on the newest timeline. n1 hangs; the
    // promotion of n2 fails outright; resumed again. Then n0 restarts: a writable node on the
    // timeline n1 left behind. It must not become the primary again: everything written on
    // n1's timeline would be lost to the clients.
    let mut sim = started(three_nodes());
    sim.fail_step(2, StepFault::LostReply);
    sim.fault(10_000, Fault::Kill(0));
    sim.command(15_000, Command::ResumeAutomatic);
    sim.run_until(20_000);
    assert_eq!(
        sim.view(),
        Some(Published {
            generation: 2,
            primary: Some(N1),
            paused: false
        }),
        "{}",
        sim.report(80)
    );
    // Fence n1 (times out: it hangs), set n2's synchronous replicas, then promote n2: fails.
    sim.fail_step(5, StepFault::Fail);
    sim.fault(20_000, Fault::Hang(1));
    sim.command(40_000, Command::ResumeAutomatic);
    sim.run_until(40_000);
    assert_eq!(
        sim.works_since(20_000),
        vec![
            Work::Fence { node: N1 },
            Work::SetSynchronous {
                node: N2,
                value: String::new()
            },
            Work::Promote { node: N2 }
        ]
    );
    assert_eq!(sim.view().and_then(|v| v.primary), None);
    sim.fault(45_000, Fault::Revive(0));
    sim.run_until(60_000);
    assert_eq!(sim.node(0).role, SimRole::Primary);
    assert!(sim.node(0).timeline < sim.node(1).timeline);
    assert_eq!(
        sim.view().and_then(|v| v.primary),
        None,
        "n0 is an old primary\n{}",
        sim.report(40)
    );
    assert!(sim.machine.state().needs_rejoin.contains(&N0));
    assert_safe(&sim);
}

#[test]
fn killing_replicas_never_moves_the_primary() {
    let mut sim = started(three_regions());
    sim.fault(5_000, Fault::Kill(1));
    sim.fault(6_000, Fault::Hang(2));
    sim.fault(7_000, Fault::Partition(4));
    sim.fault(20_000, Fault::Revive(1));
    sim.fault(21_000, Fault::Revive(2));
    sim.run_until(40_000);
    assert_eq!(sim.published.len(), 1);
    assert!(sim.executed.is_empty());
    assert_eq!(sim.node(0).reach, Reach::Alive);
    assert_safe(&sim);
}

// ---- properties over random fault schedules ------------------------------------------------

/// The clusters the properties run on: (what, configuration).
fn preset(which: usize) -> ClusterConfig {
    let mut config = match which {
        0..=2 => three_nodes(),
        3 | 6 => ClusterConfig::new(vec![
            node("us", 10),
            node("us", 10).from(0),
            node("eu", 8).from(0),
            node("eu", 8).from(2),
        ]),
        4 => three_regions(),
        _ => ClusterConfig::new(vec![
            node("us", 10),
            node("us", 10).from(0).throughput(900),
            node("us", 10).from(0).no_failover(),
            node("eu", 8).from(0),
        ]),
    };
    config.synchronous = match which {
        1 => "FIRST 1 (n1, n2)".into(),
        2 => "ANY 1 (n1, n2)".into(),
        6 => "FIRST 1 (n1)".into(),
        _ => String::new(),
    };
    config.policy.min_interval = Duration::from_secs(20);
    config
}

const PRESETS: usize = 7;
const SYNCHRONOUS_PRESETS: [usize; 3] = [1, 2, 6];
/// Virtual length of one schedule.
const HORIZON: u64 = 120_000;

/// Whom a fault hits: whoever was last published as primary, or a node by index.
#[derive(Debug, Clone)]
enum Target {
    Primary,
    Node(u8),
}

/// One random event.
#[derive(Debug, Clone)]
enum Chaos {
    Kill(Target),
    Hang(Target),
    Partition(Target),
    Revive(Target),
    FastSignal(Target),
    Switchover(Option<u8>),
    Failover { region: Option<u8> },
    FailoverTo(u8),
    Rejoin(u8),
    Resume,
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![Just(Target::Primary), (0u8..8).prop_map(Target::Node)]
}

fn fault() -> impl Strategy<Value = Chaos> {
    prop_oneof![
        3 => target().prop_map(Chaos::Kill),
        2 => target().prop_map(Chaos::Hang),
        2 => target().prop_map(Chaos::Partition),
        4 => target().prop_map(Chaos::Revive),
        1 => target().prop_map(Chaos::FastSignal),
    ]
}

fn chaos() -> impl Strategy<Value = Chaos> {
    prop_oneof![
        12 => fault(),
        1 => proptest::option::of(0u8..8).prop_map(Chaos::Switchover),
        1 => proptest::option::of(0u8..3).prop_map(|region| Chaos::Failover { region }),
        1 => (0u8..8).prop_map(Chaos::FailoverTo),
        1 => (0u8..8).prop_map(Chaos::Rejoin),
        1 => Just(Chaos::Resume),
    ]
}

/// Events at tick-aligned times within the horizon.
fn schedule(events: impl Strategy<Value = Chaos>) -> impl Strategy<Value = Vec<(u64, Chaos)>> {
    proptest::collection::vec((1u64..HORIZON / TICK, events), 0..16)
        .prop_map(|events| events.into_iter().map(|(t, e)| (t * TICK, e)).collect())
}

fn step_faults() -> impl Strategy<Value = Vec<(u64, StepFault)>> {
    proptest::collection::vec(
        (
            1u64..24,
            prop_oneof![Just(StepFault::Fail), Just(StepFault::LostReply)],
        ),
        0..4,
    )
}

/// `events` without the faults that would hit (after wrapping) a node below `first`.
fn sparing(which: usize, events: Vec<(u64, Chaos)>, first: usize) -> Vec<(u64, Chaos)> {
    let count = preset(which).nodes.len();
    events
        .into_iter()
        .filter(|(_, c)| match c {
            Chaos::Kill(Target::Node(n))
            | Chaos::Hang(Target::Node(n))
            | Chaos::Partition(Target::Node(n))
            | Chaos::Revive(Target::Node(n)) => usize::from(*n) % count >= first,
            _ => true,
        })
        .collect()
}

/// Runs one schedule to the horizon.
fn simulate(
    which: usize,
    events: &[(u64, Chaos)],
    faults: &[(u64, StepFault)],
    seed: u64,
    tracing: bool,
) -> Sim {
    let mut config = preset(which);
    config.seed = seed;
    let regions: Vec<&'static str> = {
        let mut r: Vec<&'static str> = config.nodes.iter().map(|n| n.region).collect();
        r.dedup();
        r
    };
    let mut sim = Sim::new(config);
    if !tracing {
        sim = sim.quiet();
    }
    for &(ordinal, fault) in faults {
        sim.fail_step(ordinal, fault);
    }
    let mut events = events.to_vec();
    events.sort_by_key(|(t, _)| *t);
    let count = sim.node_count();
    for (at, chaos) in events {
        sim.run_until(at);
        let pick = |t: &Target, sim: &Sim| match t {
            Target::Primary => sim.last_published_primary().map_or(0, |n| n.0),
            Target::Node(n) => u16::from(*n) % count as u16,
        };
        let id = |n: u8| NodeId(u16::from(n) % count as u16);
        let event = match &chaos {
            Chaos::Kill(t) => Event::Fault(Fault::Kill(pick(t, &sim))),
            Chaos::Hang(t) => Event::Fault(Fault::Hang(pick(t, &sim))),
            Chaos::Partition(t) => Event::Fault(Fault::Partition(pick(t, &sim))),
            Chaos::Revive(t) => Event::Fault(Fault::Revive(pick(t, &sim))),
            Chaos::FastSignal(t) => Event::Fault(Fault::FastSignal(pick(t, &sim))),
            Chaos::Switchover(to) => Event::Command(Command::Switchover { to: to.map(id) }),
            Chaos::Failover { region } => Event::Command(Command::Failover {
                region: region.map(|r| regions[usize::from(r) % regions.len()].into()),
                node: None,
            }),
            Chaos::FailoverTo(n) => Event::Command(Command::Failover {
                region: None,
                node: Some(id(*n)),
            }),
            Chaos::Rejoin(n) => Event::Command(Command::Rejoin { node: id(*n) }),
            Chaos::Resume => Event::Command(Command::ResumeAutomatic),
        };
        sim.at(at, event);
    }
    sim.run_until(HORIZON);
    sim
}

/// The schedule's sim, re-run with its trace when it broke a promise (the trace's last
/// `MERIDIAN_SIM_TRACE_LINES` lines up to the first violation, 250 by default).
fn check(
    which: usize,
    events: &[(u64, Chaos)],
    faults: &[(u64, StepFault)],
    seed: u64,
    extra: impl Fn(&Sim) -> Vec<String>,
) -> Result<(), TestCaseError> {
    let sim = simulate(which, events, faults, seed, false);
    let broken: Vec<String> = sim.violations.iter().cloned().chain(extra(&sim)).collect();
    if broken.is_empty() {
        return Ok(());
    }
    let traced = simulate(which, events, faults, seed, true);
    let lines = std::env::var("MERIDIAN_SIM_TRACE_LINES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(250);
    Err(TestCaseError::fail(format!(
        "{}\n{}",
        broken.join("\n"),
        traced.report(lines)
    )))
}

/// `cases` cases from a fixed seed, so that every run checks the same schedules; the
/// environment's `PROPTEST_CASES` and `PROPTEST_RNG_SEED` take over when set (to explore).
/// Nothing is written next to the sources: a failure prints its minimal schedule and trace.
fn config(cases: u32) -> ProptestConfig {
    let from_environment = ProptestConfig::default();
    ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            from_environment.cases
        } else {
            cases
        },
        rng_seed: if std::env::var_os("PROPTEST_RNG_SEED").is_some() {
            from_environment.rng_seed
        } else {
            RngSeed::Fixed(0x6d65_7269_6469_616e)
        },
        failure_persistence: None,
        ..from_environment
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Kills, hangs, partitions and revivals of any node (the primary of the moment included),
    /// proxy signals, operator commands and failing steps at random times: every promise the
    /// sim checks holds (one primary per view that the servers agree is writable and was never
    /// replaced, generations only increase and name one node each, no promotion while the old
    /// primary is reachable and writable, one run at a time, a failed promotion halts automatic
    /// failover, no failover while a replica hears from the primary, `min_interval`).
    #[test]
    fn safety_holds_over_random_fault_schedules(
        which in 0..PRESETS,
        events in schedule(chaos()),
        faults in step_faults(),
        seed in any::<u64>(),
    ) {
        check(which, &events, &faults, seed, |_| Vec::new())?;
    }
}

proptest! {
    #![proptest_config(config(128))]

    /// In synchronous mode, whatever fails and whatever the operators do, no promotion leaves
    /// out a commit that the old primary acknowledged.
    #[test]
    fn synchronous_mode_never_loses_an_acknowledged_write(
        which in proptest::sample::select(SYNCHRONOUS_PRESETS.to_vec()),
        events in schedule(chaos()),
        faults in step_faults(),
        seed in any::<u64>(),
    ) {
        check(which, &events, &faults, seed, |sim| {
            sim.promotions
                .iter()
                .filter(|p| p.old_synchronous && p.lost_acknowledged > 0)
                .map(|p| format!("promotion of n{} lost {} acknowledged bytes of n{:?}", p.node.0, p.lost_acknowledged, p.old))
                .collect()
        })?;
    }

    /// A primary that only the monitor cannot reach, however often that happens, while n1
    /// keeps streaming from it and other replicas fail and come back: never a run.
    #[test]
    fn a_primary_cut_off_from_the_monitor_only_is_never_failed_over(
        which in proptest::sample::select(vec![0usize, 3, 4]),
        events in schedule(prop_oneof![
            2 => Just(Chaos::Partition(Target::Node(0))),
            2 => Just(Chaos::Revive(Target::Node(0))),
            1 => Just(Chaos::FastSignal(Target::Node(0))),
            2 => (2u8..8).prop_map(|n| Chaos::Kill(Target::Node(n))),
            1 => (2u8..8).prop_map(|n| Chaos::Hang(Target::Node(n))),
            2 => (2u8..8).prop_map(|n| Chaos::Revive(Target::Node(n))),
        ]),
        seed in any::<u64>(),
    ) {
        // Node indices wrap: the replica faults must spare n0 and n1.
        let events = sparing(which, events, 2);
        check(which, &events, &[], seed, |sim| {
            let mut broken = Vec::new();
            if !sim.runs.is_empty() || !sim.executed.is_empty() {
                broken.push(format!("runs: {:?}", sim.runs.keys().collect::<Vec<_>>()));
            }
            if sim.published.len() != 1 {
                broken.push(format!("views: {:?}", sim.published));
            }
            broken
        })?;
    }

    /// Replicas that die, hang, are cut off and come back never move the primary.
    #[test]
    fn replica_faults_never_move_the_primary(
        which in 0..PRESETS,
        events in schedule(prop_oneof![
            (1u8..8).prop_map(|n| Chaos::Kill(Target::Node(n))),
            (1u8..8).prop_map(|n| Chaos::Hang(Target::Node(n))),
            (1u8..8).prop_map(|n| Chaos::Partition(Target::Node(n))),
            (1u8..8).prop_map(|n| Chaos::Revive(Target::Node(n))),
        ]),
        seed in any::<u64>(),
    ) {
        // Node indices wrap: keep n0 out of it.
        let events = sparing(which, events, 1);
        check(which, &events, &[], seed, |sim| {
            if sim.published.len() == 1 && sim.executed.is_empty() {
                Vec::new()
            } else {
                vec![format!("views: {:?}; steps: {}", sim.published, sim.executed.len())]
            }
        })?;
    }
}
