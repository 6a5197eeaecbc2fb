//! The [`Store`] contract as tests, run against every implementation (`memory::*`, `sqlite::*`),
//! so the in-memory store used by control-loop tests cannot drift from the SQLite one.

use super::{
    AlertChange, AlertQuery, AlertRecord, FailoverRecord, Phase, ProbeSample, Store, StoreError,
};

pub(crate) fn alert(id: u64, severity: &str, node: Option<&str>, raised_at_ms: u64) -> AlertRecord {
    AlertRecord {
        id,
        kind: "endpoint_slow".to_owned(),
        node: node.map(str::to_owned),
        region: Some("eu".to_owned()),
        severity: severity.to_owned(),
        value: 1.5,
        threshold: 1.0,
        message: format!("alert {id}"),
        raised_at_ms,
        updated_at_ms: raised_at_ms,
        resolved_at_ms: None,
    }
}

pub(crate) fn sample(node: &str, at_ms: u64) -> ProbeSample {
    ProbeSample {
        node: node.to_owned(),
        region: "eu".to_owned(),
        at_ms,
        ok: true,
        latency_ms: Some(0.75),
        connect_ms: Some(3.5),
        role: Some("replica".to_owned()),
        health: "healthy".to_owned(),
        lag_bytes: Some(4096),
        lag_seconds: Some(0.25),
        error: None,
    }
}

pub(crate) fn failover(id: u64, started_at_ms: u64) -> FailoverRecord {
    FailoverRecord {
        id,
        kind: "failover".to_owned(),
        reason: "primary down".to_owned(),
        old_primary: Some("a".to_owned()),
        new_primary: None,
        generation: 2,
        started_at_ms,
        finished_at_ms: None,
        outcome: "in_progress".to_owned(),
        phases: vec![Phase {
            name: "pause".to_owned(),
            started_at_ms,
            finished_at_ms: started_at_ms + 3,
            outcome: "ok".to_owned(),
        }],
        ranking: "b: lsn 0/3000000, region eu (priority 10)".to_owned(),
    }
}

fn ids(alerts: &[AlertRecord]) -> Vec<u64> {
    alerts.iter().map(|a| a.id).collect()
}

fn query(f: impl FnOnce(&mut AlertQuery)) -> AlertQuery {
    let mut query = AlertQuery::default();
    f(&mut query);
    query
}

fn alerts_are_raised_updated_and_resolved(store: &dyn Store) {
    store.record_alert(AlertChange::Raised(alert(1, "medium", Some("a"), 1_000)));
    store.record_alert(AlertChange::Raised(alert(2, "high", Some("b"), 2_000)));
    let mut update = alert(1, "critical", Some("a"), 1_000);
    update.kind = "ignored_by_update".to_owned();
    update.raised_at_ms = 9;
    update.value = 7.0;
    update.threshold = 5.0;
    update.message = "much slower".to_owned();
    update.updated_at_ms = 3_000;
    store.record_alert(AlertChange::Updated(update));
    let mut resolve = alert(2, "high", Some("b"), 2_000);
    resolve.updated_at_ms = 4_000;
    resolve.resolved_at_ms = Some(4_000);
    store.record_alert(AlertChange::Resolved(resolve));
    store.flush();

    let expected_1 = AlertRecord {
        severity: "critical".to_owned(),
        value: 7.0,
        threshold: 5.0,
        message: "much slower".to_owned(),
        updated_at_ms: 3_000,
        ..alert(1, "medium", Some("a"), 1_000)
    };
    let expected_2 = AlertRecord {
        updated_at_ms: 4_000,
        resolved_at_ms: Some(4_000),
        ..alert(2, "high", Some("b"), 2_000)
    };
    assert_eq!(
        store.active_alerts().unwrap(),
        std::slice::from_ref(&expected_1)
    );
    assert_eq!(
        store.alerts(&AlertQuery::default()).unwrap(),
        [expected_2, expected_1],
        "newest first"
    );
}

fn a_resolution_without_a_time_uses_the_update_time(store: &dyn Store) {
    store.record_alert(AlertChange::Raised(alert(1, "low", None, 10)));
    let mut resolve = alert(1, "low", None, 10);
    resolve.updated_at_ms = 20;
    store.record_alert(AlertChange::Resolved(resolve));
    store.flush();
    let stored = store.alerts(&AlertQuery::default()).unwrap();
    assert_eq!(stored[0].resolved_at_ms, Some(20));
    assert!(store.active_alerts().unwrap().is_empty());
}

fn changes_to_unknown_alerts_store_the_record(store: &dyn Store) {
    // The raise may predate the store (a restart between raise and resolution of a memory-only
    // alert); the change still leaves a complete row.
    store.record_alert(AlertChange::Updated(alert(5, "high", Some("a"), 50)));
    let mut resolved = alert(6, "low", Some("a"), 60);
    resolved.updated_at_ms = 70;
    store.record_alert(AlertChange::Resolved(resolved));
    store.flush();
    let stored = store.alerts(&AlertQuery::default()).unwrap();
    assert_eq!(ids(&stored), [6, 5]);
    assert_eq!(stored[0].resolved_at_ms, Some(70));
    assert_eq!(stored[1], alert(5, "high", Some("a"), 50));
}

fn alert_queries_filter_limit_and_order(store: &dyn Store) {
    let severities = ["low", "medium", "high", "critical"];
    for id in 1..=8u64 {
        let node = if id % 2 == 0 { "a" } else { "b" };
        let severity = severities[(id as usize - 1) % 4];
        store.record_alert(AlertChange::Raised(alert(
            id,
            severity,
            Some(node),
            id * 100,
        )));
    }
    // Equal raise times are ordered by id, newest (highest) first.
    store.record_alert(AlertChange::Raised(alert(9, "low", None, 800)));
    for id in [2, 3] {
        let mut resolve = alert(id, severities[(id as usize - 1) % 4], None, id * 100);
        resolve.resolved_at_ms = Some(1_000);
        store.record_alert(AlertChange::Resolved(resolve));
    }
    store.flush();

    let all = store.alerts(&query(|q| q.limit = 100)).unwrap();
    assert_eq!(ids(&all), [9, 8, 7, 6, 5, 4, 3, 2, 1]);
    assert_eq!(
        ids(&store.alerts(&query(|q| q.limit = 3)).unwrap()),
        [9, 8, 7]
    );
    assert!(store.alerts(&query(|q| q.limit = 0)).unwrap().is_empty());

    let at_least = |min: &str| {
        ids(&store
            .alerts(&query(|q| q.min_severity = Some(min.to_owned())))
            .unwrap())
    };
    assert_eq!(at_least("low"), [9, 8, 7, 6, 5, 4, 3, 2, 1]);
    assert_eq!(at_least("medium"), [8, 7, 6, 4, 3, 2]);
    assert_eq!(at_least("high"), [8, 7, 4, 3]);
    assert_eq!(at_least("critical"), [8, 4]);

    let active = |active: bool| ids(&store.alerts(&query(|q| q.active = Some(active))).unwrap());
    assert_eq!(active(true), [9, 8, 7, 6, 5, 4, 1]);
    assert_eq!(active(false), [3, 2]);
    assert_eq!(ids(&store.active_alerts().unwrap()), [9, 8, 7, 6, 5, 4, 1]);

    let on_node = ids(&store
        .alerts(&query(|q| q.node = Some("a".to_owned())))
        .unwrap());
    assert_eq!(on_node, [8, 6, 4, 2]);

    let combined = store
        .alerts(&query(|q| {
            q.node = Some("a".to_owned());
            q.min_severity = Some("medium".to_owned());
            q.active = Some(true);
            q.limit = 2;
        }))
        .unwrap();
    assert_eq!(ids(&combined), [8, 6]);

    let error = store
        .alerts(&query(|q| q.min_severity = Some("urgent".to_owned())))
        .unwrap_err();
    assert!(error.is_invalid_query(), "{error}");
    assert!(matches!(error, StoreError::UnknownSeverity(ref s) if s == "urgent"));
}

fn a_failover_recorded_again_keeps_one_record(store: &dyn Store) {
    store.record_failover(failover(1, 1_000));
    let mut done = failover(1, 1_000);
    done.new_primary = Some("b".to_owned());
    done.finished_at_ms = Some(1_900);
    done.outcome = "completed".to_owned();
    done.generation = 3;
    done.phases.extend(
        ["fence", "promote", "publish"]
            .iter()
            .enumerate()
            .map(|(i, name)| Phase {
                name: (*name).to_owned(),
                started_at_ms: 1_010 + i as u64 * 100,
                finished_at_ms: 1_090 + i as u64 * 100,
                outcome: "ok".to_owned(),
            }),
    );
    store.record_failover(done.clone());
    store.flush();
    assert_eq!(store.failover_history(10).unwrap(), [done.clone()]);

    // A shorter phase list replaces the longer one.
    let mut trimmed = done.clone();
    trimmed.phases.truncate(1);
    store.record_failover(trimmed.clone());
    store.flush();
    assert_eq!(store.failover_history(10).unwrap(), [trimmed]);
}

fn failover_history_is_newest_first(store: &dyn Store) {
    store.record_failover(failover(1, 1_000));
    store.record_failover(FailoverRecord {
        kind: "switchover".to_owned(),
        phases: Vec::new(),
        ..failover(2, 5_000)
    });
    store.record_failover(failover(3, 3_000));
    store.flush();
    let history = store.failover_history(10).unwrap();
    let ids: Vec<u64> = history.iter().map(|f| f.id).collect();
    assert_eq!(ids, [2, 3, 1]);
    assert!(history[0].phases.is_empty());
    assert_eq!(history[1], failover(3, 3_000));
    assert_eq!(store.failover_history(1).unwrap().len(), 1);
}

fn probe_history_is_newest_first_and_by_node(store: &dyn Store) {
    let failed = ProbeSample {
        ok: false,
        latency_ms: None,
        connect_ms: None,
        role: None,
        health: "down".to_owned(),
        lag_bytes: None,
        lag_seconds: None,
        error: Some("connection refused".to_owned()),
        ..sample("b", 300)
    };
    store.record_probe(sample("a", 100));
    store.record_probe(sample("b", 100));
    store.record_probe(sample("a", 200));
    store.record_probe(failed.clone());
    // Recorded late, probed early: ordered by probe time.
    store.record_probe(sample("a", 50));
    store.flush();

    let all = store.probe_history(None, 100).unwrap();
    let order: Vec<(&str, u64)> = all.iter().map(|s| (s.node.as_str(), s.at_ms)).collect();
    assert_eq!(
        order,
        [("b", 300), ("a", 200), ("b", 100), ("a", 100), ("a", 50)]
    );
    assert_eq!(all[0], failed);
    assert_eq!(all[1], sample("a", 200));
    let a: Vec<u64> = store
        .probe_history(Some("a"), 2)
        .unwrap()
        .iter()
        .map(|s| s.at_ms)
        .collect();
    assert_eq!(a, [200, 100]);
    assert!(store.probe_history(Some("c"), 10).unwrap().is_empty());
    assert_eq!(store.dropped_samples(), 0);
}

fn next_ids_follow_the_highest_recorded(store: &dyn Store) {
    assert_eq!(store.next_alert_id().unwrap(), 1);
    assert_eq!(store.next_failover_id().unwrap(), 1);
    store.record_alert(AlertChange::Raised(alert(7, "low", None, 1)));
    store.record_alert(AlertChange::Raised(alert(3, "low", None, 2)));
    store.record_failover(failover(4, 1));
    // Counted as soon as queued, before they reach the disk.
    assert_eq!(store.next_alert_id().unwrap(), 8);
    assert_eq!(store.next_failover_id().unwrap(), 5);
    store.flush();
    assert_eq!(store.next_alert_id().unwrap(), 8);
    assert_eq!(store.next_failover_id().unwrap(), 5);
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(
                #[test]
                fn $test() {
                    super::$test(&crate::store::MemoryStore::default());
                }
            )*
        }
        mod sqlite {
            $(
                #[test]
                fn $test() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = crate::store::SqliteStore::open(
                        &dir.path().join("store.sqlite3"),
                        crate::store::Retention::default(),
                    )
                    .unwrap();
                    super::$test(&store);
                }
            )*
        }
    };
}

conformance!(
    alerts_are_raised_updated_and_resolved,
    a_resolution_without_a_time_uses_the_update_time,
    changes_to_unknown_alerts_store_the_record,
    alert_queries_filter_limit_and_order,
    a_failover_recorded_again_keeps_one_record,
    failover_history_is_newest_first,
    probe_history_is_newest_first_and_by_node,
    next_ids_follow_the_highest_recorded,
);
