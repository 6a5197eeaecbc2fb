//! [`SqliteStore`]: the embedded store, one SQLite file under the data directory.
//!
//! Concurrency: one writer thread owns the write connection and is fed by two channels, so
//! `record_*` never wait on the disk:
//! - probe samples go through a bounded channel with `try_send`; when it is full the sample is
//!   dropped and counted (a probe loop must not slow down because the disk is slow);
//! - alert changes, failover records and control messages (wake, flush, prune, shutdown) go
//!   through an unbounded channel: they are rare and must never be lost.
//!
//! The writer sleeps on the command channel. A producer that queues a sample sends one `Wake`
//! unless one is already outstanding (an atomic flag the writer clears, with `swap`, before it
//! drains the samples), so a burst of samples costs one wakeup, not one per sample. Each wakeup
//! writes everything queued in one transaction: hundreds of samples a second cost a few commits.
//!
//! With `journal_mode = WAL` and `synchronous = NORMAL` a commit is an append to the WAL without
//! an fsync (the WAL is synced at checkpoints): a power loss may forget the last commits but never
//! corrupts the file, the trade-off SQLite documents for WAL mode. Reads use a second connection
//! behind a mutex; WAL lets them run while the writer commits.
//!
//! A failed transaction (disk full, I/O error) is rolled back; its alert changes and failover
//! records are kept and retried (every second, and at every wakeup), its samples are dropped and
//! counted. `flush` returns after the writer has attempted everything queued before it, whether
//! or not the attempt succeeded, so a broken disk cannot hang shutdown; failures are logged and
//! counted in [`SqliteStore::write_failures`].
//!
//! Retention is applied at open and then every minute by the writer, with the wall clock as
//! "now"; [`SqliteStore::prune_now`] runs the same pass with a caller-chosen "now".
//!
//! Schema: numbered migrations (see `MIGRATIONS`), the applied version in `schema_version`. A
//! file from a newer build is refused rather than guessed at. Integers are SQLite's `i64`: `u64`
//! values above `i64::MAX` are stored as `i64::MAX` (no realistic id, time or lag gets there), and
//! NaN, which SQLite stores as NULL, reads back as NaN.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::{
    AlertChange, AlertQuery, AlertRecord, FailoverRecord, Phase, ProbeSample, Retention, Store,
    StoreError,
};

/// The store's file name inside the data directory.
pub const DEFAULT_FILE_NAME: &str = "meridian.sqlite3";

/// Where the store lives in `data_dir` by default.
pub fn default_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DEFAULT_FILE_NAME)
}

/// Probe samples that may wait for the writer before new ones are dropped: 10 s of probes of
/// 1 000 nodes at the default interval.
const SAMPLE_QUEUE: usize = 10_000;
/// Most samples written in one transaction; a writer that falls behind still commits regularly.
const SAMPLES_PER_TRANSACTION: usize = 20_000;
/// How often retention is applied.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);
/// How soon a failed write is retried when nothing else wakes the writer.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// Attempts to write what is left at shutdown before giving up on it.
const SHUTDOWN_ATTEMPTS: u32 = 3;
/// How long a connection waits for a lock held by the other one (checkpoints, another process).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema migrations; entry `i` takes the schema from version `i` to version `i + 1`.
const MIGRATIONS: &[&str] = &[SCHEMA_V1, SCHEMA_V2];

const SCHEMA_V1: &str = "
CREATE TABLE alerts (
    id             INTEGER PRIMARY KEY,
    kind           TEXT    NOT NULL,
    node           TEXT,
    region         TEXT,
    severity       TEXT    NOT NULL,
    value          REAL,
    threshold      REAL,
    message        TEXT    NOT NULL,
    raised_at_ms   INTEGER NOT NULL,
    updated_at_ms  INTEGER NOT NULL,
    resolved_at_ms INTEGER
) STRICT;
CREATE INDEX alerts_by_raise ON alerts (raised_at_ms, id);
CREATE INDEX alerts_active ON alerts (raised_at_ms, id) WHERE resolved_at_ms IS NULL;
CREATE INDEX alerts_by_resolution ON alerts (resolved_at_ms) WHERE resolved_at_ms IS NOT NULL;

CREATE TABLE probe_samples (
    id          INTEGER PRIMARY KEY,
    node        TEXT    NOT NULL,
    region      TEXT    NOT NULL,
    at_ms       INTEGER NOT NULL,
    ok          INTEGER NOT NULL,
    latency_ms  REAL,
    role        TEXT,
    health      TEXT    NOT NULL,
    lag_bytes   INTEGER,
    lag_seconds REAL,
    error       TEXT
) STRICT;
CREATE INDEX probe_samples_by_time ON probe_samples (at_ms, id);
CREATE INDEX probe_samples_by_node ON probe_samples (node, at_ms, id);

CREATE TABLE failovers (
    id             INTEGER PRIMARY KEY,
    kind           TEXT    NOT NULL,
    reason         TEXT    NOT NULL,
    old_primary    TEXT,
    new_primary    TEXT,
    generation     INTEGER NOT NULL,
    started_at_ms  INTEGER NOT NULL,
    finished_at_ms INTEGER,
    outcome        TEXT    NOT NULL,
    ranking        TEXT    NOT NULL
) STRICT;
CREATE INDEX failovers_by_start ON failovers (started_at_ms, id);

CREATE TABLE failover_phases (
    failover_id    INTEGER NOT NULL REFERENCES failovers (id) ON DELETE CASCADE,
    position       INTEGER NOT NULL,
    name           TEXT    NOT NULL,
    started_at_ms  INTEGER NOT NULL,
    finished_at_ms INTEGER NOT NULL,
    outcome        TEXT    NOT NULL,
    PRIMARY KEY (failover_id, position)
) STRICT, WITHOUT ROWID;

-- The highest id ever recorded, so pruning old rows never lets an id be reused.
CREATE TABLE id_high_water (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
INSERT INTO id_high_water (name, value) VALUES ('alert', 0), ('failover', 0);
";

/// Version 2: how long a probe took to open its connection, when it opened one.
const SCHEMA_V2: &str = "ALTER TABLE probe_samples ADD COLUMN connect_ms REAL;";

const ALERT_COLUMNS: &str = "id, kind, node, region, severity, value, threshold, message, \
                             raised_at_ms, updated_at_ms, resolved_at_ms";
const ALERT_INSERT: &str = "INSERT INTO alerts (id, kind, node, region, severity, value, \
                            threshold, message, raised_at_ms, updated_at_ms, resolved_at_ms) \
                            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
const ON_RAISED: &str = " ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, \
                         node = excluded.node, region = excluded.region, \
                         severity = excluded.severity, value = excluded.value, \
                         threshold = excluded.threshold, message = excluded.message, \
                         raised_at_ms = excluded.raised_at_ms, \
                         updated_at_ms = excluded.updated_at_ms, \
                         resolved_at_ms = excluded.resolved_at_ms";
const ON_UPDATED: &str = " ON CONFLICT (id) DO UPDATE SET severity = excluded.severity, \
                          value = excluded.value, threshold = excluded.threshold, \
                          message = excluded.message, updated_at_ms = excluded.updated_at_ms";
const ON_RESOLVED: &str = " ON CONFLICT (id) DO UPDATE SET \
                           resolved_at_ms = excluded.resolved_at_ms, \
                           updated_at_ms = excluded.updated_at_ms";

const SAMPLE_COLUMNS: &str =
    "node, region, at_ms, ok, latency_ms, role, health, lag_bytes, lag_seconds, error, connect_ms";
const FAILOVER_COLUMNS: &str = "id, kind, reason, old_primary, new_primary, generation, \
                                started_at_ms, finished_at_ms, outcome, ranking";

/// What one retention pass deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PruneReport {
    /// Probe samples older than `Retention::probe_history`.
    pub samples_expired: u64,
    /// Probe samples beyond `Retention::probe_samples_max`.
    pub samples_over_limit: u64,
    /// Alerts resolved longer ago than `Retention::resolved_alerts`.
    pub resolved_alerts: u64,
}

/// The embedded [`Store`]: one SQLite file, one writer thread.
///
/// Dropping it writes everything still queued, then stops and joins the writer thread.
pub struct SqliteStore {
    path: PathBuf,
    reader: Mutex<Connection>,
    commands: Sender<Command>,
    samples: SyncSender<ProbeSample>,
    shared: Arc<Shared>,
    /// The highest alert id recorded, on disk or queued.
    alert_high: AtomicU64,
    /// The highest failover id recorded, on disk or queued.
    failover_high: AtomicU64,
    writer: Option<JoinHandle<()>>,
}

/// State shared by the producers and the writer thread.
#[derive(Debug, Default)]
struct Shared {
    /// A `Wake` is queued or the writer has not yet drained the samples since the last one.
    wake_pending: AtomicBool,
    dropped_samples: AtomicU64,
    write_failures: AtomicU64,
}

#[derive(Debug)]
enum Command {
    /// Samples are waiting.
    Wake,
    Alert(AlertChange),
    Failover(FailoverRecord),
    /// Answer once everything queued before is written (or attempted).
    Flush(SyncSender<()>),
    /// Apply retention as of `now_ms` once everything queued before is written.
    Prune {
        now_ms: u64,
        reply: SyncSender<Result<PruneReport, StoreError>>,
    },
    /// Write what is queued and stop.
    Shutdown,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("dropped_samples", &self.dropped_samples())
            .field("write_failures", &self.write_failures())
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating it and its parent directories if needed) the store at `path`, applies
    /// pending migrations and retention, and starts the writer thread.
    pub fn open(path: &Path, retention: Retention) -> Result<SqliteStore, StoreError> {
        let path = path.to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let sqlite = |operation| {
            let path = path.clone();
            move |source| StoreError::Sqlite {
                path,
                operation,
                source,
            }
        };

        let mut conn = connect(&path)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(sqlite("setting journal_mode = WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "the store is not in WAL mode: reads will wait for writes");
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sqlite("setting synchronous = NORMAL"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sqlite("enabling foreign keys"))?;
        migrate(&mut conn, &path)?;
        prune(&mut conn, &retention, unix_now_ms()).map_err(sqlite("applying retention"))?;
        let alert_high = id_high_water(&conn, "alert", "alerts").map_err(sqlite("reading ids"))?;
        let failover_high =
            id_high_water(&conn, "failover", "failovers").map_err(sqlite("reading ids"))?;

        let reader = connect(&path)?;
        reader
            .pragma_update(None, "query_only", "ON")
            .map_err(sqlite("opening the read connection"))?;

        let (commands, command_rx) = mpsc::channel();
        let (samples, sample_rx) = mpsc::sync_channel(SAMPLE_QUEUE);
        let shared = Arc::new(Shared::default());
        let writer = Writer {
            conn,
            path: path.clone(),
            retention,
            commands: command_rx,
            samples: sample_rx,
            shared: Arc::clone(&shared),
        };
        let handle = std::thread::Builder::new()
            .name("meridian-store".to_owned())
            .spawn(move || writer.run())
            .map_err(|source| StoreError::Spawn {
                path: path.clone(),
                source,
            })?;
        Ok(SqliteStore {
            path,
            reader: Mutex::new(reader),
            commands,
            samples,
            shared,
            alert_high: AtomicU64::new(alert_high),
            failover_high: AtomicU64::new(failover_high),
            writer: Some(handle),
        })
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Transactions that failed since the store was opened (each is logged).
    pub fn write_failures(&self) -> u64 {
        self.shared.write_failures.load(Ordering::Relaxed)
    }

    /// Writes everything queued, then applies retention as of `now_ms` (Unix epoch
    /// milliseconds) and reports what it deleted. The writer does the same every minute with the
    /// wall clock.
    pub fn prune_now(&self, now_ms: u64) -> Result<PruneReport, StoreError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.commands
            .send(Command::Prune { now_ms, reply })
            .map_err(|_| self.writer_stopped())?;
        answer.recv().map_err(|_| self.writer_stopped())?
    }

    fn writer_stopped(&self) -> StoreError {
        StoreError::WriterStopped {
            path: self.path.clone(),
        }
    }

    fn send(&self, command: Command) {
        if let Err(mpsc::SendError(command)) = self.commands.send(command) {
            // Only after a panic of the writer thread, which has been reported already.
            tracing::error!(path = %self.path.display(), ?command, "store writer has stopped; not recorded");
        }
    }

    /// Runs `f` on the read connection, naming `operation` in its error.
    fn read<T>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        // A panic while holding the lock cannot leave a connection half-changed: reads only.
        let conn = self.reader.lock().unwrap_or_else(PoisonError::into_inner);
        f(&conn).map_err(|source| StoreError::Sqlite {
            path: self.path.clone(),
            operation,
            source,
        })
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Queued after everything recorded so far: the writer writes it all, then stops.
        let _ = self.commands.send(Command::Shutdown);
        if let Some(handle) = self.writer.take()
            && handle.join().is_err()
        {
            tracing::error!(path = %self.path.display(), "store writer thread panicked");
        }
    }
}

impl Store for SqliteStore {
    fn record_alert(&self, change: AlertChange) {
        self.alert_high
            .fetch_max(change.record().id, Ordering::Relaxed);
        self.send(Command::Alert(change));
    }

    fn record_probe(&self, sample: ProbeSample) {
        match self.samples.try_send(sample) {
            Ok(()) => {
                // One wakeup per drain, not per sample; see the module note.
                if !self.shared.wake_pending.swap(true, Ordering::AcqRel) {
                    self.send(Command::Wake);
                }
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.shared.dropped_samples.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn record_failover(&self, record: FailoverRecord) {
        self.failover_high.fetch_max(record.id, Ordering::Relaxed);
        self.send(Command::Failover(record));
    }

    fn alerts(&self, query: &AlertQuery) -> Result<Vec<AlertRecord>, StoreError> {
        let severities = query.accepted_severities()?;
        let mut sql = format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE 1 = 1");
        let mut values: Vec<Value> = Vec::new();
        if let Some(severities) = severities {
            let marks = vec!["?"; severities.len()].join(", ");
            sql.push_str(&format!(" AND severity IN ({marks})"));
            values.extend(severities.iter().map(|s| Value::Text((*s).to_owned())));
        }
        match query.active {
            Some(true) => sql.push_str(" AND resolved_at_ms IS NULL"),
            Some(false) => sql.push_str(" AND resolved_at_ms IS NOT NULL"),
            None => {}
        }
        if let Some(node) = &query.node {
            sql.push_str(" AND node = ?");
            values.push(Value::Text(node.clone()));
        }
        sql.push_str(" ORDER BY raised_at_ms DESC, id DESC LIMIT ?");
        values.push(Value::Integer(limit(query.limit)));
        self.read("reading alerts", |conn| {
            let mut statement = conn.prepare_cached(&sql)?;
            let rows = statement.query_map(rusqlite::params_from_iter(values), alert_from_row)?;
            rows.collect()
        })
    }

    fn active_alerts(&self) -> Result<Vec<AlertRecord>, StoreError> {
        self.alerts(&AlertQuery {
            limit: usize::MAX,
            active: Some(true),
            ..AlertQuery::default()
        })
    }

    fn next_alert_id(&self) -> Result<u64, StoreError> {
        Ok(self.alert_high.load(Ordering::Relaxed).saturating_add(1))
    }

    fn probe_history(
        &self,
        node: Option<&str>,
        limit_rows: usize,
    ) -> Result<Vec<ProbeSample>, StoreError> {
        self.read("reading probe history", |conn| match node {
            Some(node) => conn
                .prepare_cached(&format!(
                    "SELECT {SAMPLE_COLUMNS} FROM probe_samples WHERE node = ?1 \
                         ORDER BY at_ms DESC, id DESC LIMIT ?2"
                ))?
                .query_map(params![node, limit(limit_rows)], sample_from_row)?
                .collect(),
            None => conn
                .prepare_cached(&format!(
                    "SELECT {SAMPLE_COLUMNS} FROM probe_samples \
                         ORDER BY at_ms DESC, id DESC LIMIT ?1"
                ))?
                .query_map(params![limit(limit_rows)], sample_from_row)?
                .collect(),
        })
    }

    fn failover_history(&self, limit_rows: usize) -> Result<Vec<FailoverRecord>, StoreError> {
        self.read("reading failover history", |conn| {
            // One read transaction, so a failover and its phases come from the same commit.
            let tx = conn.unchecked_transaction()?;
            let failovers = failovers_with_phases(&tx, limit_rows)?;
            tx.commit()?;
            Ok(failovers)
        })
    }

    fn next_failover_id(&self) -> Result<u64, StoreError> {
        Ok(self.failover_high.load(Ordering::Relaxed).saturating_add(1))
    }

    fn flush(&self) {
        let (reply, done) = mpsc::sync_channel(1);
        if self.commands.send(Command::Flush(reply)).is_ok() {
            // An error means the writer stopped: there is nothing left to wait for.
            let _ = done.recv();
        }
    }

    fn dropped_samples(&self) -> u64 {
        self.shared.dropped_samples.load(Ordering::Relaxed)
    }
}

fn failovers_with_phases(
    conn: &Connection,
    limit_rows: usize,
) -> rusqlite::Result<Vec<FailoverRecord>> {
    let mut failovers: Vec<FailoverRecord> = conn
        .prepare_cached(&format!(
            "SELECT {FAILOVER_COLUMNS} FROM failovers \
             ORDER BY started_at_ms DESC, id DESC LIMIT ?1"
        ))?
        .query_map([limit(limit_rows)], failover_from_row)?
        .collect::<rusqlite::Result<_>>()?;
    let mut phases = conn.prepare_cached(
        "SELECT name, started_at_ms, finished_at_ms, outcome FROM failover_phases \
         WHERE failover_id = ?1 ORDER BY position",
    )?;
    for failover in &mut failovers {
        failover.phases = phases
            .query_map([signed(failover.id)], |row| {
                Ok(Phase {
                    name: row.get(0)?,
                    started_at_ms: unsigned(row.get(1)?),
                    finished_at_ms: unsigned(row.get(2)?),
                    outcome: row.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
    }
    Ok(failovers)
}

/// Opens a connection to `path` with the busy timeout both connections use.
fn connect(path: &Path) -> Result<Connection, StoreError> {
    let error = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        operation: "opening",
        source,
    };
    let conn = Connection::open(path).map_err(error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(error)?;
    Ok(conn)
}

/// Brings the schema to the newest version, one migration per transaction. Each step rereads
/// the version under the write lock, so two processes opening a new file do not both migrate.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let supported = MIGRATIONS.len() as i64;
    loop {
        match migrate_step(conn, supported) {
            Ok(None) => continue,
            Ok(Some(found)) if found > supported => {
                return Err(StoreError::SchemaTooNew {
                    path: path.to_path_buf(),
                    found,
                    supported,
                });
            }
            Ok(Some(_)) => return Ok(()),
            Err(source) => {
                return Err(StoreError::Sqlite {
                    path: path.to_path_buf(),
                    operation: "migrating the schema",
                    source,
                });
            }
        }
    }
}

/// Applies the next migration, or returns the version found when there is none to apply.
fn migrate_step(conn: &mut Connection, supported: i64) -> rusqlite::Result<Option<i64>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL) STRICT",
    )?;
    let current: i64 = tx.query_row(
        "SELECT coalesce(max(version), 0) FROM schema_version",
        [],
        |row| row.get(0),
    )?;
    if current >= supported {
        tx.commit()?;
        return Ok(Some(current));
    }
    let next = usize::try_from(current).unwrap_or(0);
    tx.execute_batch(MIGRATIONS[next])?;
    tx.execute("DELETE FROM schema_version", [])?;
    tx.execute(
        "INSERT INTO schema_version (version) VALUES (?1)",
        [current + 1],
    )?;
    tx.commit()?;
    Ok(None)
}

/// The highest id ever recorded in `table`, from its high-water mark and its rows.
fn id_high_water(conn: &Connection, name: &str, table: &str) -> rusqlite::Result<u64> {
    let mark: Option<i64> = conn
        .query_row(
            "SELECT value FROM id_high_water WHERE name = ?1",
            [name],
            |row| row.get(0),
        )
        .optional()?;
    let rows: i64 = conn.query_row(
        &format!("SELECT coalesce(max(id), 0) FROM {table}"),
        [],
        |row| row.get(0),
    )?;
    Ok(unsigned(mark.unwrap_or(0).max(rows)))
}

/// Deletes what `retention` no longer keeps as of `now_ms`, in one transaction.
fn prune(
    conn: &mut Connection,
    retention: &Retention,
    now_ms: u64,
) -> rusqlite::Result<PruneReport> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let samples_expired = tx.execute(
        "DELETE FROM probe_samples WHERE at_ms < ?1",
        [signed(
            now_ms.saturating_sub(millis(retention.probe_history)),
        )],
    )?;
    let samples_over_limit = tx.execute(
        "DELETE FROM probe_samples WHERE id IN (SELECT id FROM probe_samples \
         ORDER BY at_ms DESC, id DESC LIMIT -1 OFFSET ?1)",
        [limit(retention.probe_samples_max)],
    )?;
    let resolved_alerts = tx.execute(
        "DELETE FROM alerts WHERE resolved_at_ms < ?1",
        [signed(
            now_ms.saturating_sub(millis(retention.resolved_alerts)),
        )],
    )?;
    tx.commit()?;
    Ok(PruneReport {
        samples_expired: samples_expired as u64,
        samples_over_limit: samples_over_limit as u64,
        resolved_alerts: resolved_alerts as u64,
    })
}

/// What the writer has accepted and not yet committed.
#[derive(Debug, Default)]
struct Batch {
    alerts: Vec<AlertChange>,
    failovers: Vec<FailoverRecord>,
    samples: Vec<ProbeSample>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.alerts.is_empty() && self.failovers.is_empty() && self.samples.is_empty()
    }

    /// Alert changes or failover records are waiting (kept after a failed write).
    fn has_durable(&self) -> bool {
        !self.alerts.is_empty() || !self.failovers.is_empty()
    }
}

/// Requests that wait for the current batch to be written.
#[derive(Debug, Default)]
struct Waiting {
    flushes: Vec<SyncSender<()>>,
    prunes: Vec<(u64, SyncSender<Result<PruneReport, StoreError>>)>,
    stopping: bool,
}

/// The writer thread's state: the write connection and the receiving ends.
struct Writer {
    conn: Connection,
    path: PathBuf,
    retention: Retention,
    commands: Receiver<Command>,
    samples: Receiver<ProbeSample>,
    shared: Arc<Shared>,
}

impl Writer {
    fn run(mut self) {
        let mut batch = Batch::default();
        let mut waiting = Waiting::default();
        let mut next_prune = Instant::now() + PRUNE_INTERVAL;
        let mut drained = true;
        let mut shutdown_attempts = 0;
        loop {
            if !waiting.stopping {
                let wait = if !drained {
                    Duration::ZERO
                } else if batch.has_durable() {
                    RETRY_DELAY
                } else {
                    next_prune.saturating_duration_since(Instant::now())
                };
                match self.commands.recv_timeout(wait) {
                    Ok(command) => accept(command, &mut batch, &mut waiting),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => waiting.stopping = true,
                }
            }
            while let Ok(command) = self.commands.try_recv() {
                accept(command, &mut batch, &mut waiting);
            }
            // Cleared before draining, and with a read-modify-write, so a producer that saw the
            // flag set has its sample visible to the drain below.
            self.shared.wake_pending.swap(false, Ordering::AcqRel);
            drained = self.drain_samples(&mut batch);

            if !batch.is_empty() {
                self.write(&mut batch);
            }
            for (now_ms, reply) in waiting.prunes.drain(..) {
                let _ = reply.send(self.prune(now_ms));
            }
            if Instant::now() >= next_prune {
                if let Err(error) = self.prune(unix_now_ms()) {
                    tracing::error!(error = %with_causes(&error), "store retention failed");
                }
                next_prune = Instant::now() + PRUNE_INTERVAL;
            }
            if drained {
                for flush in waiting.flushes.drain(..) {
                    let _ = flush.send(());
                }
            }
            if waiting.stopping && drained {
                if !batch.has_durable() {
                    return;
                }
                shutdown_attempts += 1;
                if shutdown_attempts >= SHUTDOWN_ATTEMPTS {
                    tracing::error!(
                        path = %self.path.display(),
                        alert_changes = batch.alerts.len(),
                        failovers = batch.failovers.len(),
                        "store closing with writes that kept failing; they are lost"
                    );
                    return;
                }
                std::thread::sleep(RETRY_DELAY);
            }
        }
    }

    /// Moves queued samples into the batch; `false` when it stopped at the per-transaction cap
    /// with samples still queued.
    fn drain_samples(&self, batch: &mut Batch) -> bool {
        while batch.samples.len() < SAMPLES_PER_TRANSACTION {
            match self.samples.try_recv() {
                Ok(sample) => batch.samples.push(sample),
                Err(_) => return true,
            }
        }
        false
    }

    /// Commits the batch in one transaction. On failure the samples are dropped (and counted),
    /// the alert changes and failover records stay in the batch for the next attempt.
    fn write(&mut self, batch: &mut Batch) {
        match write_batch(&mut self.conn, batch) {
            Ok(()) => {
                batch.alerts.clear();
                batch.failovers.clear();
            }
            Err(error) => {
                self.shared.write_failures.fetch_add(1, Ordering::Relaxed);
                self.shared
                    .dropped_samples
                    .fetch_add(batch.samples.len() as u64, Ordering::Relaxed);
                tracing::error!(
                    path = %self.path.display(),
                    %error,
                    alert_changes = batch.alerts.len(),
                    failovers = batch.failovers.len(),
                    samples_dropped = batch.samples.len(),
                    "store write failed; alerts and failovers will be retried"
                );
            }
        }
        batch.samples.clear();
    }

    fn prune(&mut self, now_ms: u64) -> Result<PruneReport, StoreError> {
        let report = prune(&mut self.conn, &self.retention, now_ms).map_err(|source| {
            StoreError::Sqlite {
                path: self.path.clone(),
                operation: "applying retention",
                source,
            }
        })?;
        if report != PruneReport::default() {
            tracing::debug!(path = %self.path.display(), ?report, "store retention applied");
        }
        Ok(report)
    }
}

fn accept(command: Command, batch: &mut Batch, waiting: &mut Waiting) {
    match command {
        Command::Wake => {}
        Command::Alert(change) => batch.alerts.push(change),
        Command::Failover(record) => batch.failovers.push(record),
        Command::Flush(reply) => waiting.flushes.push(reply),
        Command::Prune { now_ms, reply } => waiting.prunes.push((now_ms, reply)),
        Command::Shutdown => waiting.stopping = true,
    }
}

fn write_batch(conn: &mut Connection, batch: &Batch) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if !batch.alerts.is_empty() {
        let mut high = 0;
        for change in &batch.alerts {
            let (record, conflict) = match change {
                AlertChange::Raised(r) => (r, ON_RAISED),
                AlertChange::Updated(r) => (r, ON_UPDATED),
                AlertChange::Resolved(r) => (r, ON_RESOLVED),
            };
            let resolved_at = match change {
                AlertChange::Resolved(r) => Some(r.resolved_at_ms.unwrap_or(r.updated_at_ms)),
                _ => record.resolved_at_ms,
            };
            high = high.max(record.id);
            tx.prepare_cached(&format!("{ALERT_INSERT}{conflict}"))?
                .execute(params![
                    signed(record.id),
                    record.kind,
                    record.node,
                    record.region,
                    record.severity,
                    record.value,
                    record.threshold,
                    record.message,
                    signed(record.raised_at_ms),
                    signed(record.updated_at_ms),
                    resolved_at.map(signed),
                ])?;
        }
        raise_high_water(&tx, "alert", high)?;
    }
    if !batch.failovers.is_empty() {
        let mut high = 0;
        for record in &batch.failovers {
            high = high.max(record.id);
            write_failover(&tx, record)?;
        }
        raise_high_water(&tx, "failover", high)?;
    }
    if !batch.samples.is_empty() {
        let mut insert = tx.prepare_cached(&format!(
            "INSERT INTO probe_samples ({SAMPLE_COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
        ))?;
        for sample in &batch.samples {
            insert.execute(params![
                sample.node,
                sample.region,
                signed(sample.at_ms),
                sample.ok,
                sample.latency_ms,
                sample.role,
                sample.health,
                sample.lag_bytes.map(signed),
                sample.lag_seconds,
                sample.error,
                sample.connect_ms,
            ])?;
        }
    }
    tx.commit()
}

fn write_failover(tx: &rusqlite::Transaction<'_>, record: &FailoverRecord) -> rusqlite::Result<()> {
    tx.prepare_cached(&format!(
        "INSERT INTO failovers ({FAILOVER_COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
         ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, reason = excluded.reason, \
         old_primary = excluded.old_primary, new_primary = excluded.new_primary, \
         generation = excluded.generation, started_at_ms = excluded.started_at_ms, \
         finished_at_ms = excluded.finished_at_ms, outcome = excluded.outcome, \
         ranking = excluded.ranking"
    ))?
    .execute(params![
        signed(record.id),
        record.kind,
        record.reason,
        record.old_primary,
        record.new_primary,
        signed(record.generation),
        signed(record.started_at_ms),
        record.finished_at_ms.map(signed),
        record.outcome,
        record.ranking,
    ])?;
    // The record carries all its phases: replace the stored ones.
    tx.prepare_cached("DELETE FROM failover_phases WHERE failover_id = ?1")?
        .execute([signed(record.id)])?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO failover_phases \
         (failover_id, position, name, started_at_ms, finished_at_ms, outcome) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for (position, phase) in record.phases.iter().enumerate() {
        insert.execute(params![
            signed(record.id),
            position as i64,
            phase.name,
            signed(phase.started_at_ms),
            signed(phase.finished_at_ms),
            phase.outcome,
        ])?;
    }
    Ok(())
}

fn raise_high_water(tx: &rusqlite::Transaction<'_>, name: &str, id: u64) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE id_high_water SET value = max(value, ?2) WHERE name = ?1")?
        .execute(params![name, signed(id)])?;
    Ok(())
}

fn alert_from_row(row: &Row<'_>) -> rusqlite::Result<AlertRecord> {
    Ok(AlertRecord {
        id: unsigned(row.get(0)?),
        kind: row.get(1)?,
        node: row.get(2)?,
        region: row.get(3)?,
        severity: row.get(4)?,
        value: row.get::<_, Option<f64>>(5)?.unwrap_or(f64::NAN),
        threshold: row.get::<_, Option<f64>>(6)?.unwrap_or(f64::NAN),
        message: row.get(7)?,
        raised_at_ms: unsigned(row.get(8)?),
        updated_at_ms: unsigned(row.get(9)?),
        resolved_at_ms: row.get::<_, Option<i64>>(10)?.map(unsigned),
    })
}

fn sample_from_row(row: &Row<'_>) -> rusqlite::Result<ProbeSample> {
    Ok(ProbeSample {
        node: row.get(0)?,
        region: row.get(1)?,
        at_ms: unsigned(row.get(2)?),
        ok: row.get(3)?,
        latency_ms: row.get(4)?,
        role: row.get(5)?,
        health: row.get(6)?,
        lag_bytes: row.get::<_, Option<i64>>(7)?.map(unsigned),
        lag_seconds: row.get(8)?,
        error: row.get(9)?,
        connect_ms: row.get(10)?,
    })
}

fn failover_from_row(row: &Row<'_>) -> rusqlite::Result<FailoverRecord> {
    Ok(FailoverRecord {
        id: unsigned(row.get(0)?),
        kind: row.get(1)?,
        reason: row.get(2)?,
        old_primary: row.get(3)?,
        new_primary: row.get(4)?,
        generation: unsigned(row.get(5)?),
        started_at_ms: unsigned(row.get(6)?),
        finished_at_ms: row.get::<_, Option<i64>>(7)?.map(unsigned),
        outcome: row.get(8)?,
        phases: Vec::new(),
        ranking: row.get(9)?,
    })
}

/// A `u64` as SQLite's integer, saturating (see the module note).
fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// An integer this store wrote, back as `u64` (never negative; clamped if the file says so).
fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A row count as a SQL `LIMIT`.
fn limit(rows: usize) -> i64 {
    i64::try_from(rows).unwrap_or(i64::MAX)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// An error and its sources, for a log line.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn unix_now_ms() -> u64 {
    // A clock before 1970 is a broken clock: treat it as the epoch (prunes nothing).
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

#[cfg(test)]
mod tests;
