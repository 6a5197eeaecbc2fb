//! The documents of the REST API: every body it sends or accepts, as typed values. The
//! handlers serialize these and the OpenAPI document (`/api/openapi.json`) is generated from
//! the same definitions, so the two cannot drift apart.
//!
//! Conventions: snake_case fields, times in milliseconds since the Unix epoch (`*_at_ms`),
//! durations in milliseconds (`*_ms`) or seconds (`*_seconds`), sizes in bytes (`*_bytes`);
//! a field the monitor has not observed yet is `null`, never a made-up zero.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// Every error: a stable machine-readable `code` and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// `bad_request`, `unauthorized`, `no_token_configured`, `not_found`, `refused`,
    /// `run_failed` or `internal`.
    pub code: String,
    /// What happened and what to do about it.
    pub message: String,
}

/// The overall state `GET /health` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    /// Every node up and healthy, no failover under way.
    Healthy,
    /// Every node up, some slow or failing probes, or a failover under way.
    Degraded,
    /// The primary or a configured replica is down.
    Unhealthy,
}

/// Whether Meridian reaches a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Link {
    /// It answers probes.
    Connected,
    /// It does not.
    Disconnected,
}

/// `GET /health`: the original service's document, plus the replicas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Overall state.
    pub status: HealthState,
    /// Meridian's version.
    pub version: String,
    /// The primary answers and takes writes.
    pub db_primary: Link,
    /// Every replica answers; `null` when none is configured.
    pub db_replica: Option<Link>,
    /// Every node other than the primary.
    pub replicas: Vec<ReplicaHealth>,
}

/// A replica in [`Health`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReplicaHealth {
    /// Node name.
    pub name: String,
    /// Its region.
    pub region: String,
    /// Judged health: `healthy`, `degraded`, `down` or `unknown`.
    pub state: String,
    /// Observed role: `primary`, `replica` or `unknown`.
    pub role: String,
    /// WAL not replayed yet.
    pub lag_bytes: Option<u64>,
    /// How far behind in time.
    pub lag_seconds: Option<f64>,
}

/// `GET /primary`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PrimaryCheck {
    /// `primary` while a writable primary exists, else `null`.
    pub role: Option<String>,
    /// The primary's name.
    pub node: Option<String>,
    /// The cluster generation.
    pub generation: Option<u64>,
    /// Why the check fails.
    pub reason: Option<String>,
}

/// `GET /replica`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReplicaCheck {
    /// The replicas that qualify.
    pub replicas: Vec<String>,
    /// The lag ceiling asked for, in bytes.
    pub max_lag: Option<u64>,
}

/// `GET /liveness`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Liveness {
    /// Always true: the process answers.
    pub alive: bool,
}

/// `GET /readiness`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    /// A writable primary has been observed.
    pub ready: bool,
}

/// `GET /api/database/status`: the topology by region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Topology {
    /// Increases at every change of primary.
    pub generation: u64,
    /// The node taking writes.
    pub primary: Option<String>,
    /// A failover or switchover is under way: writes wait.
    pub paused: bool,
    /// Why automatic failover is halted (an operator resumes it), `null` when it is not.
    pub failover_halted: Option<String>,
    /// Regions in configuration order.
    pub regions: Vec<Region>,
    /// With several instances coordinated through etcd: this instance's part; `null` for a
    /// single instance. `primary`, `generation` and `paused` above are then the view the
    /// leader published, which every proxy routes writes by.
    pub coordination: Option<CoordinationInfo>,
    /// The primary's WAL archiving when a WAL archive is configured (`[backup]
    /// wal_archive`), else `null`.
    pub archiving: Option<Archiving>,
}

/// This instance among several coordinated through etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CoordinationInfo {
    /// This instance's id.
    pub instance: String,
    /// The leading instance, as etcd last said.
    pub leader: Option<String>,
    /// This instance leads: it alone fails over and takes commands.
    pub leading: bool,
    /// It holds a live etcd session (lease).
    pub session: bool,
    /// Its proxy routes no writes: its session is lost and its lease may have expired.
    pub fenced: bool,
    /// etcd refuses every connection: no failover can happen; the known primary keeps
    /// taking writes.
    pub etcd_down: bool,
    /// The last etcd error.
    pub last_error: Option<String>,
}

/// A region of [`Topology`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Region {
    /// Its name.
    pub name: String,
    /// Its nodes in configuration order.
    pub nodes: Vec<NodeStatus>,
}

/// A node as the monitor last saw it, with the proxy's pools to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeStatus {
    /// Configured name.
    pub name: String,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Observed role: `primary`, `replica` or `unknown`.
    pub role: String,
    /// Judged health: `healthy`, `degraded`, `down` or `unknown`.
    pub health: String,
    /// This is the node taking writes.
    pub primary: bool,
    /// WAL not replayed yet (replicas).
    pub lag_bytes: Option<u64>,
    /// How far behind in time (replicas).
    pub lag_seconds: Option<f64>,
    /// Round trip of the last successful probe.
    pub latency_ms: Option<f64>,
    /// How long the last opening of the probe's connection took (TCP, TLS, authentication).
    pub connect_latency_ms: Option<f64>,
    /// Insert position (primary) or replay position (replica).
    pub lsn: Option<String>,
    /// Timeline.
    pub timeline: Option<u32>,
    /// A replica's WAL receiver status (`streaming`, ...).
    pub wal_receiver: Option<String>,
    /// Where a replica streams from (`host:port`).
    pub upstream: Option<String>,
    /// Client backends on the node.
    pub connections: u32,
    /// Its `max_connections`.
    pub max_connections: u32,
    /// Consecutive failed probes.
    pub consecutive_failures: u32,
    /// Share of failed probes in the recent window.
    pub error_rate: f64,
    /// The last probe's error.
    pub last_error: Option<String>,
    /// When it was last probed.
    pub last_probe_at_ms: Option<u64>,
    /// An old primary that gets no traffic until it rejoins.
    pub needs_rejoin: bool,
    /// Configured: never promoted.
    pub no_failover: bool,
    /// Configured preference among equal candidates.
    pub priority: i32,
    /// The proxy's pools to this node.
    pub pools: Vec<PoolState>,
}

/// One pool of server connections (per node, server user and database).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PoolState {
    /// The node.
    pub node: String,
    /// Server user.
    pub user: String,
    /// Database.
    pub database: String,
    /// Connections open or being opened.
    pub open: usize,
    /// Of those, idle.
    pub idle: usize,
    /// Of those, serving a transaction or a pinned session.
    pub in_use: usize,
    /// Transactions waiting for a connection.
    pub waiting: usize,
    /// Checkouts served since start.
    pub checkouts: u64,
    /// Checkouts refused after the checkout timeout (53300).
    pub checkout_timeouts: u64,
    /// Connections opened since start.
    pub connects: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
}

/// `GET /api/database/connections`: the proxy's pools and the servers' own counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Connections {
    /// Every pool.
    pub pools: Vec<PoolState>,
    /// Per node: backends the server reports and its limit.
    pub nodes: Vec<NodeConnections>,
    /// Sessions waiting for a primary right now (during a failover).
    pub waiting_for_primary: usize,
}

/// A node's connection counts in [`Connections`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeConnections {
    /// Node name.
    pub node: String,
    /// Its region.
    pub region: String,
    /// Client backends on the server, from its last probe (all clients, not only Meridian).
    pub server_connections: u32,
    /// Its `max_connections`.
    pub max_connections: u32,
    /// Connections the proxy's pools hold to it.
    pub pooled: usize,
}

/// A count of nodes by judged health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct HealthCounts {
    /// Healthy.
    pub healthy: usize,
    /// Up but slow or failing some probes.
    pub degraded: usize,
    /// Not answering.
    pub down: usize,
    /// Not judged yet.
    pub unknown: usize,
}

/// `GET /api/database/health`: the system's health and its active alerts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SystemHealth {
    /// Overall state, as `GET /health` judges it.
    pub status: HealthState,
    /// The primary answers and takes writes.
    pub primary_healthy: bool,
    /// The primary's name.
    pub primary: Option<String>,
    /// The cluster generation.
    pub generation: u64,
    /// A failover or switchover is under way.
    pub paused: bool,
    /// Why automatic failover is halted, if it is.
    pub failover_halted: Option<String>,
    /// Nodes by health.
    pub nodes: HealthCounts,
    /// Every active alert, newest first.
    pub active_alerts: Vec<Alert>,
}

/// An alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Alert {
    /// Its id.
    pub id: u64,
    /// `endpoint_down`, `endpoint_slow`, `replication_lag`, `high_error_rate`,
    /// `failover_triggered`, `failover_completed`, `failover_failed`, ...
    pub kind: String,
    /// The node it is about.
    pub node: Option<String>,
    /// Its region.
    pub region: Option<String>,
    /// `low`, `medium`, `high` or `critical`.
    pub severity: String,
    /// The measured value that raised it (or last updated it).
    pub value: f64,
    /// The threshold it crossed.
    pub threshold: f64,
    /// What happened.
    pub message: String,
    /// When it was raised.
    pub raised_at_ms: u64,
    /// When it last changed.
    pub updated_at_ms: u64,
    /// When it was resolved.
    pub resolved_at_ms: Option<u64>,
    /// Not resolved yet.
    pub active: bool,
}

/// A failover or switchover run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FailoverRun {
    /// Its id.
    pub id: u64,
    /// `failover` or `switchover`.
    pub kind: String,
    /// Why it started.
    pub reason: String,
    /// The primary before.
    pub old_primary: Option<String>,
    /// The primary after.
    pub new_primary: Option<String>,
    /// The generation it published.
    pub generation: u64,
    /// When it started.
    pub started_at_ms: u64,
    /// When it ended.
    pub finished_at_ms: Option<u64>,
    /// How long it took.
    pub duration_ms: Option<u64>,
    /// `in_progress`, `completed` or `failed: <why>`.
    pub outcome: String,
    /// Its steps in order.
    pub phases: Vec<RunPhase>,
    /// The candidates' ranking, with reasons.
    pub ranking: String,
}

/// A step of a [`FailoverRun`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunPhase {
    /// `detect`, `pause`, `fence`, `promote`, `verify`, `repoint`, `publish`, ...
    pub name: String,
    /// When it started.
    pub started_at_ms: u64,
    /// When it ended.
    pub finished_at_ms: u64,
    /// How long it took.
    pub duration_ms: u64,
    /// How it ended.
    pub outcome: String,
}

/// A probe of a node, as the store keeps it (`GET /api/database/metrics`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProbeSample {
    /// The node.
    pub node: String,
    /// Its region.
    pub region: String,
    /// When the probe ran.
    pub at_ms: u64,
    /// It succeeded.
    pub ok: bool,
    /// Its query's round trip.
    pub latency_ms: Option<f64>,
    /// How long opening its connection took, when it opened one (otherwise it used the
    /// connection the monitor keeps).
    pub connect_ms: Option<f64>,
    /// The role it observed.
    pub role: Option<String>,
    /// The health judged after it.
    pub health: String,
    /// Replication lag in bytes.
    pub lag_bytes: Option<u64>,
    /// Replication lag in seconds.
    pub lag_seconds: Option<f64>,
    /// Why it failed.
    pub error: Option<String>,
}

/// `GET /api/database/performance`: latency, throughput and routing per node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Performance {
    /// The window the rates are measured over, in seconds (about 10; shorter just after
    /// start).
    pub window_seconds: f64,
    /// Transactions routed per second over the window, all nodes.
    pub transactions_per_second: f64,
    /// Per node.
    pub nodes: Vec<NodePerformance>,
    /// Sessions pinned to their server connection since start, by reason.
    pub pins: BTreeMap<String, u64>,
    /// Reads a replica refused with 25006 that ran again on the primary.
    pub read_only_retries: u64,
    /// Reads that checked a replica for the session's last write.
    pub causal_waits: u64,
    /// Of those, the ones that went to the primary after `causal_read_timeout`.
    pub causal_timeouts: u64,
    /// Reads refused because no replica could serve them (`primary_reads = never`).
    pub no_replica_failures: u64,
    /// Sessions waiting for a primary right now.
    pub waiting_for_primary: usize,
}

/// A node in [`Performance`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodePerformance {
    /// Node name.
    pub node: String,
    /// Its region.
    pub region: String,
    /// Observed role.
    pub role: String,
    /// Round trip of its last successful probe.
    pub latency_ms: Option<f64>,
    /// Mean probe round trip since start.
    pub mean_latency_ms: Option<f64>,
    /// Transactions routed to it since start.
    pub transactions: u64,
    /// Transactions routed to it per second over the window.
    pub transactions_per_second: f64,
    /// Its share of the transactions routed over the window (0 to 1; since start when the
    /// window saw none).
    pub share: f64,
    /// Reads that came to the primary because no replica could take them, since start.
    pub fallbacks: u64,
    /// Transactions running on it now.
    pub in_flight: u32,
    /// Reads avoid it for now after a connection to it failed.
    pub circuit_open: bool,
    /// Reads sent elsewhere after a connection to it failed, since start.
    pub rerouted: u64,
    /// Transactions routed to it since start, by routing reason.
    pub reasons: BTreeMap<String, u64>,
}

/// `POST /api/database/switchover`'s optional body.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchoverRequest {
    /// The replica to promote; the best one when absent.
    pub to: Option<String>,
}

/// `POST /api/database/analyze-query`'s body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalyzeRequest {
    /// The SQL text, as an application would send it.
    pub query: String,
}

/// What Meridian makes of a query, against the live cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QueryAnalysis {
    /// The query analysed.
    pub query: String,
    /// The classifier's verdict, e.g. `read: query that only reads`.
    pub class: String,
    /// It only reads (a replica may run it).
    #[serde(rename = "isRead")]
    pub is_read: bool,
    /// It may write (only the primary runs it).
    #[serde(rename = "isWrite")]
    pub is_write: bool,
    /// Where it goes now, and why.
    pub route: QueryRoute,
    /// Why the session would keep its server connection, if it would.
    pub pin: Option<String>,
    /// Each statement of a batch with its class.
    pub statements: Vec<StatementClass>,
    /// `simple`, `moderate` or `complex`.
    #[serde(rename = "estimatedComplexity")]
    pub complexity: String,
    /// What the text shows that matters (joins, subqueries, unbounded writes, ...).
    pub findings: Vec<String>,
    /// One sentence of advice.
    pub recommendation: String,
}

/// The route in a [`QueryAnalysis`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QueryRoute {
    /// `primary`, `replica`, `none` (no node can take it now) or `proxy` (a `meridian.*`
    /// command the proxy answers itself).
    pub target: String,
    /// The node it would go to now.
    pub node: Option<String>,
    /// Why.
    pub reason: String,
}

/// A statement of a batch in [`QueryAnalysis`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StatementClass {
    /// Its text.
    pub text: String,
    /// Its class.
    pub class: String,
}

/// `POST /api/database/connections/refresh` and part of `POST reconnect/{region}`: pools whose
/// connections are replaced gracefully (idle ones now, busy ones when their transaction ends).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct Recycled {
    /// Pools recycled.
    pub pools: usize,
    /// Idle connections closed.
    pub idle: usize,
    /// Connections in use, closed when their transaction or pinned session ends.
    pub in_use: usize,
}

/// `POST /api/database/reconnect/{region}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Reconnected {
    /// The region.
    pub region: String,
    /// Its pools, recycled.
    pub recycled: Recycled,
    /// Its nodes, probed on fresh connections.
    pub nodes: Vec<NodeStatus>,
}

/// `GET /api/database/archiving`: the primary's continuous WAL archiving, as last checked
/// (also in `GET /api/database/status` when a WAL archive is configured).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Archiving {
    /// `healthy`, `behind` (writes older than `max_rpo_seconds` not archived, or nothing
    /// archived yet), `failing` (`archive_command` fails), `off` (the primary does not
    /// archive), or `unknown` (not checked yet, or the check failed: see `error`).
    pub state: String,
    /// The primary checked.
    pub node: Option<String>,
    /// How old the oldest write not archived yet can be; `null` when it cannot be told.
    pub rpo_seconds: Option<f64>,
    /// The ceiling (`[backup] max_rpo`).
    pub max_rpo_seconds: f64,
    /// Whole WAL segments written and not archived yet.
    pub unarchived_segments: Option<u64>,
    /// Files archived since the server's statistics were reset.
    pub archived_count: Option<u64>,
    /// The last file archived.
    pub last_archived_wal: Option<String>,
    /// When.
    pub last_archived_at_ms: Option<u64>,
    /// Failed attempts since the statistics were reset.
    pub failed_count: Option<u64>,
    /// The file of the last failed attempt.
    pub last_failed_wal: Option<String>,
    /// When.
    pub last_failed_at_ms: Option<u64>,
    /// The WAL file being written.
    pub current_wal: Option<String>,
    /// The archive directory (`[backup] wal_archive`).
    pub archive_dir: String,
    /// What holds and, when something is wrong, what to do.
    pub detail: Option<String>,
    /// Why the last check gave no verdict.
    pub error: Option<String>,
    /// When the primary was last checked.
    pub checked_at_ms: Option<u64>,
}

/// `GET /api/database/backups`: the backup catalog, as last read from the backup location.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Backups {
    /// The location (`[backup] location`).
    pub location: String,
    /// Complete backups, oldest first.
    pub backups: Vec<BackupEntry>,
    /// Backups with files but no catalog entry (interrupted, or being written).
    pub incomplete: Vec<String>,
    /// Seconds since the newest physical backup was stored; `null` when there is none.
    pub last_physical_age_seconds: Option<f64>,
    /// Seconds since the newest logical backup was stored; `null` when there is none.
    pub last_logical_age_seconds: Option<f64>,
    /// When the catalog was last read; `null` before the first reading.
    pub checked_at_ms: Option<u64>,
    /// Why the last reading failed.
    pub error: Option<String>,
}

/// One backup of the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BackupEntry {
    /// Its id (`meridian restore --backup ID`).
    pub id: String,
    /// `physical` or `logical`.
    pub kind: String,
    /// The node it was taken from.
    pub node: String,
    /// Taken from a replica.
    pub from_replica: bool,
    /// When the copy ended (RFC 3339): a restore to a time needs a backup that ended before it.
    pub stopped_at: String,
    /// When it was stored (RFC 3339).
    pub finished_at: String,
    /// The timeline.
    pub timeline: u32,
    /// WAL position at the start.
    pub start_lsn: String,
    /// WAL position it is consistent from.
    pub stop_lsn: String,
    /// Bytes of data copied.
    pub data_bytes: u64,
    /// Bytes stored.
    pub stored_bytes: u64,
}

/// `GET /api/database/export`: everything an incident report needs, in one document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Report {
    /// When it was made.
    pub generated_at_ms: u64,
    /// Meridian's version.
    pub version: String,
    /// The configuration in effect, secrets replaced by `"<redacted>"`.
    #[schema(value_type = Object)]
    pub config: Value,
    /// The topology.
    pub topology: Topology,
    /// Health and active alerts.
    pub health: SystemHealth,
    /// The latest alerts (active and resolved), newest first.
    pub alerts: Vec<Alert>,
    /// The latest failovers and switchovers, newest first.
    pub failover_history: Vec<FailoverRun>,
    /// The latest probe samples, newest first.
    pub probes: Vec<ProbeSample>,
    /// Throughput and routing.
    pub performance: Performance,
    /// Pools.
    pub connections: Connections,
}
