//! What only a file-backed store can show: restarts, retention, queue pressure, concurrent
//! readers, failed writes and errors that name the file.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::*;
use crate::store::conformance::{alert, failover, sample};

const HOUR_MS: u64 = 60 * 60 * 1000;
const DAY_MS: u64 = 24 * HOUR_MS;

fn store_in(dir: &tempfile::TempDir) -> (PathBuf, SqliteStore) {
    let path = dir.path().join("data").join(DEFAULT_FILE_NAME);
    let store = SqliteStore::open(&path, Retention::default()).unwrap();
    (path, store)
}

/// A second connection to the store's file, as another process would open it.
fn side(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn
}

fn count(path: &Path, table: &str) -> i64 {
    side(path)
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
            row.get(0)
        })
        .unwrap()
}

#[test]
fn opening_creates_the_directory_in_wal_mode_at_the_newest_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let (path, store) = store_in(&dir);
    assert_eq!(store.path(), path);
    assert_eq!(default_path(&dir.path().join("data")), path);
    let side = side(&path);
    let mode: String = side
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let version: i64 = side
        .query_row("SELECT version FROM schema_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, MIGRATIONS.len() as i64);
    drop(store);
    // Reopening an up-to-date file migrates nothing.
    let _store = SqliteStore::open(&path, Retention::default()).unwrap();
    assert_eq!(count(&path, "schema_version"), 1);
}

#[test]
fn everything_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (path, store) = store_in(&dir);
    let now = unix_now_ms();
    store.record_alert(AlertChange::Raised(alert(1, "high", Some("a"), now)));
    store.record_alert(AlertChange::Raised(alert(2, "low", Some("b"), now + 1)));
    let mut resolve = alert(2, "low", Some("b"), now + 1);
    resolve.resolved_at_ms = Some(now + 2);
    store.record_alert(AlertChange::Resolved(resolve));
    let mut done = failover(1, now);
    done.outcome = "completed".to_owned();
    done.finished_at_ms = Some(now + 900);
    store.record_failover(failover(1, now));
    store.record_failover(done.clone());
    for i in 0..50 {
        store.record_probe(sample("a", now + i));
    }
    let alerts_before = store.alerts(&AlertQuery::default());
    // No flush: dropping the store writes what is queued.
    drop(store);
    assert!(alerts_before.is_ok());

    let store = SqliteStore::open(&path, Retention::default()).unwrap();
    let active = store.active_alerts().unwrap();
    assert_eq!(active, [alert(1, "high", Some("a"), now)]);
    assert_eq!(store.alerts(&AlertQuery::default()).unwrap().len(), 2);
    assert_eq!(store.failover_history(10).unwrap(), [done]);
    let history = store.probe_history(Some("a"), 1_000).unwrap();
    assert_eq!(history.len(), 50);
    assert_eq!(history[0], sample("a", now + 49));
    assert_eq!(store.next_alert_id().unwrap(), 3);
    assert_eq!(store.next_failover_id().unwrap(), 2);
}

#[test]
fn ids_are_not_reused_after_their_rows_are_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let (path, store) = store_in(&dir);
    let mut resolved = alert(41, "low", None, 1_000);
    resolved.resolved_at_ms = Some(2_000);
    store.record_alert(AlertChange::Raised(resolved));
    store.flush();
    let report = store.prune_now(2_000 + 31 * DAY_MS).unwrap();
    assert_eq!(report.resolved_alerts, 1);
    assert_eq!(count(&path, "alerts"), 0);
    drop(store);
    let store = SqliteStore::open(&path, Retention::default()).unwrap();
    assert_eq!(store.next_alert_id().unwrap(), 42);
}

#[test]
fn values_outside_sqlite_integers_and_nan_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (_path, store) = store_in(&dir);
    let mut odd = alert(1, "low", None, 5);
    odd.value = f64::NAN;
    odd.threshold = f64::INFINITY;
    store.record_alert(AlertChange::Raised(odd));
    let mut huge = sample("a", 5);
    huge.lag_bytes = Some(u64::MAX);
    store.record_probe(huge);
    store.flush();
    let stored = &store.active_alerts().unwrap()[0];
    assert!(stored.value.is_nan());
    assert_eq!(stored.threshold, f64::INFINITY);
    let sample = &store.probe_history(None, 1).unwrap()[0];
    assert_eq!(sample.lag_bytes, Some(i64::MAX as u64));
    assert_eq!(store.write_failures(), 0);
}

/// The probe loop's view: queuing 100 000 samples as fast as possible returns at once, and after
/// a flush every sample is either stored or counted as dropped.
#[test]
fn recording_never_blocks_and_every_drop_is_counted() {
    const QUEUED: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DEFAULT_FILE_NAME);
    let retention = Retention {
        probe_samples_max: 1_000_000,
        ..Retention::default()
    };
    let store = SqliteStore::open(&path, retention).unwrap();
    let now = unix_now_ms();

    let started = Instant::now();
    for i in 0..QUEUED {
        store.record_probe(sample(if i % 2 == 0 { "a" } else { "b" }, now + i));
    }
    // Alerts queued in the middle of the pressure are never dropped.
    store.record_alert(AlertChange::Raised(alert(1, "critical", None, now)));
    let queued_in = started.elapsed();
    store.flush();
    let flushed_in = started.elapsed();

    let stored = count(&path, "probe_samples") as u64;
    let dropped = store.dropped_samples();
    eprintln!(
        "queued {QUEUED} samples in {queued_in:?}; flushed after {flushed_in:?}; \
         stored {stored}, dropped {dropped}"
    );
    assert!(
        queued_in < Duration::from_secs(2),
        "queuing took {queued_in:?}"
    );
    assert_eq!(stored + dropped, QUEUED);
    assert_eq!(store.active_alerts().unwrap().len(), 1);
    assert_eq!(store.write_failures(), 0);
}

#[test]
fn retention_removes_expired_and_excess_samples_and_old_resolved_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DEFAULT_FILE_NAME);
    let retention = Retention {
        probe_history: Duration::from_secs(60 * 60),
        probe_samples_max: 50,
        resolved_alerts: Duration::from_secs(24 * 60 * 60),
    };
    let store = SqliteStore::open(&path, retention).unwrap();
    let now = 1_000 * DAY_MS;
    // 30 samples older than an hour, 80 within it.
    for i in 0..30 {
        store.record_probe(sample("a", now - 2 * HOUR_MS + i));
    }
    for i in 0..80 {
        store.record_probe(sample("a", now - HOUR_MS + 1 + i));
    }
    let mut old = alert(1, "low", None, now - 3 * DAY_MS);
    old.resolved_at_ms = Some(now - 2 * DAY_MS);
    let mut recent = alert(2, "low", None, now - 3 * DAY_MS);
    recent.resolved_at_ms = Some(now - HOUR_MS);
    let ancient_but_active = alert(3, "high", None, now - 300 * DAY_MS);
    for record in [old, recent, ancient_but_active] {
        store.record_alert(AlertChange::Raised(record));
    }

    let report = store.prune_now(now).unwrap();
    assert_eq!(
        report,
        PruneReport {
            samples_expired: 30,
            samples_over_limit: 30,
            resolved_alerts: 1,
        }
    );
    let kept = store.probe_history(None, 1_000).unwrap();
    assert_eq!(kept.len(), 50);
    // The newest are kept.
    assert_eq!(kept.first().unwrap().at_ms, now - HOUR_MS + 80);
    assert_eq!(kept.last().unwrap().at_ms, now - HOUR_MS + 31);
    let alerts: Vec<u64> = store
        .alerts(&AlertQuery::default())
        .unwrap()
        .iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(alerts, [2, 3]);
    // A second pass at the same time has nothing left to do.
    assert_eq!(store.prune_now(now).unwrap(), PruneReport::default());
}

#[test]
fn retention_is_applied_when_the_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DEFAULT_FILE_NAME);
    let store = SqliteStore::open(&path, Retention::default()).unwrap();
    let now = unix_now_ms();
    store.record_probe(sample("a", now - 2 * DAY_MS));
    store.record_probe(sample("a", now));
    drop(store);
    assert_eq!(count(&path, "probe_samples"), 2);
    let store = SqliteStore::open(&path, Retention::default()).unwrap();
    assert_eq!(store.probe_history(None, 10).unwrap(), [sample("a", now)]);
}

#[test]
fn readers_run_while_the_writer_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (_path, store) = store_in(&dir);
    let store = Arc::new(store);
    let writing = Arc::new(AtomicBool::new(true));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let store = Arc::clone(&store);
            let writing = Arc::clone(&writing);
            std::thread::spawn(move || {
                let mut reads = 0u64;
                let mut last_seen = 0;
                while writing.load(Ordering::Acquire) {
                    let samples = store.probe_history(None, 10).unwrap();
                    let alerts = store.alerts(&AlertQuery::default()).unwrap();
                    store.failover_history(10).unwrap();
                    // Commits only add: a reader never sees fewer alerts than before.
                    assert!(alerts.len() >= last_seen, "{} < {last_seen}", alerts.len());
                    last_seen = alerts.len();
                    assert!(samples.len() <= 10);
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for i in 0..2_000u64 {
        store.record_probe(sample("a", 1_000 + i));
        if i % 20 == 0 {
            store.record_alert(AlertChange::Raised(alert(i + 1, "low", None, i)));
            store.record_failover(failover(i + 1, i));
        }
        if i % 200 == 0 {
            store.flush();
        }
    }
    store.flush();
    writing.store(false, Ordering::Release);
    let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(reads > 0);
    assert_eq!(store.active_alerts().unwrap().len(), 100);
    assert_eq!(store.failover_history(1_000).unwrap().len(), 100);
    assert_eq!(
        store.probe_history(None, 10_000).unwrap().len() as u64 + store.dropped_samples(),
        2_000
    );
}

/// A write that fails (here: a trigger refusing one alert, standing in for a full disk) keeps
/// the alert for a retry instead of losing it; the samples of that transaction are counted as
/// dropped.
#[test]
fn a_failed_write_keeps_alerts_for_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    let (path, store) = store_in(&dir);
    let side = side(&path);
    side.execute_batch(
        "CREATE TRIGGER refuse BEFORE INSERT ON alerts WHEN NEW.kind = 'poison' \
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
    )
    .unwrap();
    let mut poison = alert(1, "high", None, 10);
    poison.kind = "poison".to_owned();
    store.record_alert(AlertChange::Raised(poison.clone()));
    for i in 0..10 {
        store.record_probe(sample("a", unix_now_ms() + i));
    }
    store.flush();
    assert!(store.write_failures() >= 1);
    assert!(store.active_alerts().unwrap().is_empty());
    assert_eq!(
        count(&path, "probe_samples") as u64 + store.dropped_samples(),
        10
    );

    side.execute_batch("DROP TRIGGER refuse").unwrap();
    // The next wakeup retries.
    store.flush();
    assert_eq!(store.active_alerts().unwrap(), [poison]);
}

#[test]
fn a_file_of_the_first_version_is_migrated_keeping_its_samples() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DEFAULT_FILE_NAME);
    // A file as the first release left it: version 1, one recent sample without connect_ms.
    let now = unix_now_ms();
    let old = Connection::open(&path).unwrap();
    old.execute_batch(SCHEMA_V1).unwrap();
    old.execute_batch(&format!(
        "CREATE TABLE schema_version (version INTEGER NOT NULL) STRICT;
         INSERT INTO schema_version (version) VALUES (1);
         INSERT INTO probe_samples (node, region, at_ms, ok, latency_ms, health)
         VALUES ('a', 'eu', {}, 1, 0.5, 'healthy');",
        now - 2_000
    ))
    .unwrap();
    drop(old);
    let store = SqliteStore::open(&path, Retention::default()).unwrap();
    let version: i64 = side(&path)
        .query_row("SELECT version FROM schema_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, 2);
    store.record_probe(sample("a", now - 1_000));
    store.flush();
    let history = store.probe_history(Some("a"), 10).unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].connect_ms, Some(3.5));
    assert_eq!(history[1].at_ms, now - 2_000);
    assert_eq!(history[1].connect_ms, None);
}

#[test]
fn a_file_from_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, store) = store_in(&dir);
    drop(store);
    side(&path)
        .execute("UPDATE schema_version SET version = 99", [])
        .unwrap();
    let error = SqliteStore::open(&path, Retention::default()).unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::SchemaTooNew {
                found: 99,
                supported: 2,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.path(), Some(path.as_path()));
    assert!(error.to_string().contains(&path.display().to_string()));
}

#[test]
fn errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();

    let not_a_database = dir.path().join("garbage.sqlite3");
    std::fs::write(&not_a_database, vec![b'x'; 4096]).unwrap();
    let error = SqliteStore::open(&not_a_database, Retention::default()).unwrap_err();
    assert!(matches!(error, StoreError::Sqlite { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains(&not_a_database.display().to_string()),
        "{error}"
    );
    assert!(std::error::Error::source(&error).is_some());

    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let under_a_file = file.join("store.sqlite3");
    let error = SqliteStore::open(&under_a_file, Retention::default()).unwrap_err();
    assert!(matches!(error, StoreError::CreateDir { .. }), "{error:?}");
    assert_eq!(error.path(), Some(file.as_path()));
    assert!(error.to_string().contains(&file.display().to_string()));
}
