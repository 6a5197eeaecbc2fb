//! The control plane's store: alerts, failover history and a bounded history of probe samples.
//!
//! [`Store`] is the interface the control loop writes to and the operator API reads from. Two
//! implementations:
//! - [`SqliteStore`]: the embedded default, one SQLite file under the data directory, surviving a
//!   restart (an etcd-backed store can implement the same trait later);
//! - [`MemoryStore`]: the same semantics in memory, for tests of the control loop that need a
//!   store but no file.
//!
//! Invariants every implementation keeps:
//! - `record_*` never block the caller on I/O: they queue and return. Alert changes and failover
//!   records are never dropped; probe samples may be dropped under sustained pressure, and every
//!   dropped sample is counted in [`Store::dropped_samples`].
//! - Reads see what has been written, not what is still queued; [`Store::flush`] waits for the
//!   queue, so "record, flush, read" is exact.
//! - Ids are assigned by the caller; [`Store::next_alert_id`] and [`Store::next_failover_id`]
//!   continue the numbering across a restart (and never reuse an id whose row was pruned).
//! - Every listing is newest first.
//!
//! Timestamps are milliseconds since the Unix epoch, chosen by the caller; the store never reads
//! the clock to decide what a record says (only the SQLite store's periodic pruning reads it, and
//! its pruning function takes "now" as a parameter).

mod memory;
mod sqlite;

#[cfg(test)]
mod conformance;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use memory::MemoryStore;
pub use sqlite::{DEFAULT_FILE_NAME, PruneReport, SqliteStore, default_path};

/// Alert severities, lowest first: the order `AlertQuery::min_severity` filters by.
pub const SEVERITIES: [&str; 4] = ["low", "medium", "high", "critical"];

/// The position of `severity` in [`SEVERITIES`], or `None` for an unknown name.
pub fn severity_rank(severity: &str) -> Option<usize> {
    SEVERITIES.iter().position(|s| *s == severity)
}

/// One alert as stored (the control plane converts from `meridian_core`'s alert type).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRecord {
    /// Assigned by the caller; see [`Store::next_alert_id`].
    pub id: u64,
    /// The condition, e.g. `"endpoint_down"`.
    pub kind: String,
    /// The node concerned, if any.
    pub node: Option<String>,
    /// The region concerned, if any.
    pub region: Option<String>,
    /// One of [`SEVERITIES`].
    pub severity: String,
    /// The observed value that triggered the alert.
    pub value: f64,
    /// The threshold it crossed.
    pub threshold: f64,
    /// Human-readable description.
    pub message: String,
    /// When the alert was raised.
    pub raised_at_ms: u64,
    /// When it last changed.
    pub updated_at_ms: u64,
    /// When it was resolved; `None` while active.
    pub resolved_at_ms: Option<u64>,
}

impl AlertRecord {
    /// Raised and not yet resolved.
    pub fn is_active(&self) -> bool {
        self.resolved_at_ms.is_none()
    }
}

/// What happened to an alert.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertChange {
    /// A new alert: stored whole (replacing any row with the same id).
    Raised(AlertRecord),
    /// Replaces severity, value, threshold, message and `updated_at_ms` of the alert with this id
    /// (stored whole if the store has no such alert).
    Updated(AlertRecord),
    /// Sets `resolved_at_ms` (falling back to `updated_at_ms` when the record has none) and
    /// `updated_at_ms` of the alert with this id (stored whole if the store has no such alert).
    Resolved(AlertRecord),
}

impl AlertChange {
    /// The record the change carries.
    pub fn record(&self) -> &AlertRecord {
        match self {
            AlertChange::Raised(r) | AlertChange::Updated(r) | AlertChange::Resolved(r) => r,
        }
    }
}

/// Which alerts [`Store::alerts`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertQuery {
    /// At most this many (newest first). `0` returns none.
    pub limit: usize,
    /// Only alerts of this severity or above (in the order of [`SEVERITIES`]).
    pub min_severity: Option<String>,
    /// `Some(true)`: only active alerts; `Some(false)`: only resolved ones.
    pub active: Option<bool>,
    /// Only alerts about this node.
    pub node: Option<String>,
}

impl Default for AlertQuery {
    /// The newest 100 alerts, unfiltered.
    fn default() -> Self {
        AlertQuery {
            limit: 100,
            min_severity: None,
            active: None,
            node: None,
        }
    }
}

impl AlertQuery {
    /// The severities the query accepts, or `None` when it does not filter by severity.
    pub fn accepted_severities(&self) -> Result<Option<&'static [&'static str]>, StoreError> {
        match &self.min_severity {
            None => Ok(None),
            Some(min) => match severity_rank(min) {
                Some(rank) => Ok(Some(&SEVERITIES[rank..])),
                None => Err(StoreError::UnknownSeverity(min.clone())),
            },
        }
    }

    /// Whether `alert` passes the filters (not the limit), given the accepted severities.
    fn matches(&self, alert: &AlertRecord, severities: Option<&[&str]>) -> bool {
        severities.is_none_or(|s| s.contains(&alert.severity.as_str()))
            && self.active.is_none_or(|active| alert.is_active() == active)
            && self
                .node
                .as_ref()
                .is_none_or(|node| alert.node.as_ref() == Some(node))
    }
}

/// One probe sample: what one probe of one node observed.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSample {
    /// The node probed.
    pub node: String,
    /// Its region.
    pub region: String,
    /// When the probe was taken.
    pub at_ms: u64,
    /// Whether the probe succeeded.
    pub ok: bool,
    /// Round-trip time of a successful probe's query.
    pub latency_ms: Option<f64>,
    /// How long opening the probe's connection took, when the probe opened one.
    pub connect_ms: Option<f64>,
    /// The observed role, `"primary"` or `"replica"`.
    pub role: Option<String>,
    /// The health judgement after this probe.
    pub health: String,
    /// Replication lag in bytes (replicas).
    pub lag_bytes: Option<u64>,
    /// Replication lag in seconds (replicas).
    pub lag_seconds: Option<f64>,
    /// Why the probe failed.
    pub error: Option<String>,
}

/// One failover or switchover, with its phases.
#[derive(Debug, Clone, PartialEq)]
pub struct FailoverRecord {
    /// Assigned by the caller; see [`Store::next_failover_id`]. Recording the same id again
    /// replaces the record (an in-progress failover is recorded again when it ends).
    pub id: u64,
    /// `"failover"` or `"switchover"`.
    pub kind: String,
    /// Why it started.
    pub reason: String,
    /// The primary before.
    pub old_primary: Option<String>,
    /// The primary after (once chosen).
    pub new_primary: Option<String>,
    /// The generation it publishes.
    pub generation: u64,
    /// When it started.
    pub started_at_ms: u64,
    /// When it ended.
    pub finished_at_ms: Option<u64>,
    /// `"in_progress"`, `"completed"` or `"failed"`.
    pub outcome: String,
    /// Its steps, in order.
    pub phases: Vec<Phase>,
    /// Human-readable candidate ranking with reasons.
    pub ranking: String,
}

/// One step of a failover (pause, fence, promote, verify, repoint, publish...).
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    /// The step.
    pub name: String,
    /// When it started.
    pub started_at_ms: u64,
    /// When it ended.
    pub finished_at_ms: u64,
    /// How it ended.
    pub outcome: String,
}

/// How long the store keeps what it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Probe samples older than this are deleted (default 24 h).
    pub probe_history: Duration,
    /// At most this many probe samples are kept, the newest (default 100 000).
    pub probe_samples_max: usize,
    /// Resolved alerts are deleted this long after their resolution (default 30 days); active
    /// alerts are never deleted.
    pub resolved_alerts: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            probe_history: Duration::from_secs(24 * 60 * 60),
            probe_samples_max: 100_000,
            resolved_alerts: Duration::from_secs(30 * 24 * 60 * 60),
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The directory that holds the store file could not be created.
    #[error("cannot create the directory {} for the store", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// SQLite failed; `operation` says what the store was doing.
    #[error("store {}: {operation} failed", path.display())]
    Sqlite {
        /// The store file.
        path: PathBuf,
        /// What the store was doing, e.g. "opening", "reading alerts".
        operation: &'static str,
        /// The cause.
        source: rusqlite::Error,
    },
    /// The file was written by a newer Meridian.
    #[error(
        "store {} has schema version {found}, newer than the {supported} this build knows; \
         run a newer Meridian or point data_dir elsewhere",
        path.display()
    )]
    SchemaTooNew {
        /// The store file.
        path: PathBuf,
        /// The version in the file.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// The writer thread could not be started.
    #[error("cannot start the writer thread of the store {}", path.display())]
    Spawn {
        /// The store file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The writer thread has stopped (only after a panic in it).
    #[error("the writer thread of the store {} has stopped", path.display())]
    WriterStopped {
        /// The store file.
        path: PathBuf,
    },
    /// A query named a severity that is not one of [`SEVERITIES`].
    #[error("unknown alert severity {0:?}; expected one of low, medium, high, critical")]
    UnknownSeverity(String),
}

impl StoreError {
    /// The store file (or directory) the error is about, if it is about one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            StoreError::CreateDir { path, .. }
            | StoreError::Sqlite { path, .. }
            | StoreError::SchemaTooNew { path, .. }
            | StoreError::Spawn { path, .. }
            | StoreError::WriterStopped { path } => Some(path),
            StoreError::UnknownSeverity(_) => None,
        }
    }

    /// The caller asked for something invalid (as opposed to the store failing).
    pub fn is_invalid_query(&self) -> bool {
        matches!(self, StoreError::UnknownSeverity(_))
    }
}

/// Where the control plane keeps alerts, failover history and probe samples.
///
/// Reads are synchronous and short (an indexed query on a local file); call them from
/// `tokio::task::spawn_blocking` when a runtime thread must not wait even that long.
pub trait Store: Send + Sync + 'static {
    /// Queues an alert change; never blocks (the write happens on the store's own thread).
    fn record_alert(&self, change: AlertChange);
    /// Queues a probe sample; never blocks. Under sustained pressure samples may be dropped
    /// (counted in [`Store::dropped_samples`]); alerts and failovers never are.
    fn record_probe(&self, sample: ProbeSample);
    /// Queues a failover record (insert, or replace the record with the same id).
    fn record_failover(&self, record: FailoverRecord);
    /// Alerts matching `query`, newest first (by raise time, then id).
    fn alerts(&self, query: &AlertQuery) -> Result<Vec<AlertRecord>, StoreError>;
    /// Every alert raised and not yet resolved, newest first.
    fn active_alerts(&self) -> Result<Vec<AlertRecord>, StoreError>;
    /// One more than the highest alert id ever recorded (1 for an empty store), including
    /// queued changes, so a restarted process continues the numbering.
    fn next_alert_id(&self) -> Result<u64, StoreError>;
    /// Probe samples, of one node or all, newest first (by probe time).
    fn probe_history(
        &self,
        node: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ProbeSample>, StoreError>;
    /// Failovers and switchovers with their phases, newest first (by start time, then id).
    fn failover_history(&self, limit: usize) -> Result<Vec<FailoverRecord>, StoreError>;
    /// One more than the highest failover id ever recorded (1 for an empty store).
    fn next_failover_id(&self) -> Result<u64, StoreError>;
    /// Waits until every write queued before the call has been carried out (tests, shutdown).
    fn flush(&self);
    /// Probe samples dropped since the store was opened.
    fn dropped_samples(&self) -> u64;
}
