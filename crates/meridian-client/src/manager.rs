//! [`PoolManager`]: one sqlx pool per node, and the choice of node for every query.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_core::balance::{self, NodeState, Policy, Reason, Role};
use meridian_core::breaker::{Admission, Breaker};
use meridian_core::observation::Timestamp;
use meridian_core::retry::{self, Decision, Operation};
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool, PgTransaction, Postgres};
use tokio::sync::{Notify, watch};

use crate::BoxFuture;
use crate::error::{Error, Result};
use crate::intent::{QueryIntent, WalToken};
use crate::monitor;
use crate::node::{Node, Observed};
use crate::options::{Builder, NodeSpec, Options, builder_from};
use crate::transaction::TxOptions;

/// How long an acquisition may take before it wakes the node's check: longer than opening a
/// connection to a live node on a LAN takes, short next to sqlx's acquire timeout.
const NUDGE_AFTER: Duration = Duration::from_millis(100);

/// What the manager and its background tasks share.
pub(crate) struct Shared {
    pub(crate) nodes: Vec<Node>,
    pub(crate) options: Options,
    /// Promotions the monitor has seen: orders them, so the latest primary wins.
    pub(crate) promotions: AtomicU64,
    /// Until when the control plane's last view decides the roles.
    control_until: Mutex<Option<Instant>>,
    started: Instant,
    /// Rotates replica choice.
    turn: AtomicU64,
    /// Reads served by the primary because no replica qualified.
    pub(crate) fallbacks: AtomicU64,
}

impl Shared {
    pub(crate) fn now(&self) -> Timestamp {
        Timestamp(u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    pub(crate) fn control_plane_fresh(&self) -> bool {
        self.control_until
            .lock()
            .expect("not poisoned")
            .is_some_and(|until| Instant::now() < until)
    }

    pub(crate) fn control_plane_seen(&self, until: Instant) {
        *self.control_until.lock().expect("not poisoned") = Some(until);
    }

    /// Every node as the chooser sees it now.
    pub(crate) fn states(&self, now: Timestamp) -> Vec<NodeState> {
        // Read under the locks, not cloned: this runs for every query. (Each is taken alone
        // everywhere else, so holding them together cannot deadlock.)
        let observed: Vec<_> = self
            .nodes
            .iter()
            .map(|n| n.observed.lock().expect("not poisoned"))
            .collect();
        // The lag of replicas is measured against the position of the primary writes go to.
        let primary_lsn = observed
            .iter()
            .filter(|o| o.reachable)
            .filter_map(|o| match o.role {
                Role::Primary { since } => Some((since, o.lsn)),
                _ => None,
            })
            .max_by_key(|(since, _)| *since)
            .and_then(|(_, lsn)| lsn);
        self.nodes
            .iter()
            .zip(&observed)
            .map(|(node, o)| node.state(o, now, primary_lsn))
            .collect()
    }

    fn policy(&self) -> Policy {
        Policy {
            strategy: self.options.strategy,
            max_lag_bytes: self.options.max_lag_bytes,
        }
    }

    fn choose(&self, states: &[NodeState], intent: QueryIntent) -> Result<balance::Choice> {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        balance::choose(states, intent.decision(), &self.policy(), turn).map_err(|why| {
            Error::Unavailable {
                intent,
                reason: why.to_string(),
            }
        })
    }

    fn count(&self, choice: balance::Choice) {
        self.nodes[choice.node].count_routed();
        if matches!(choice.reason, Reason::NoReplica | Reason::NotReplayed) {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Stops the background tasks when the last clone of the manager goes.
struct Tasks {
    stop: watch::Sender<bool>,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// One sqlx pool per node of a replicated PostgreSQL cluster, and the node for each query:
/// writes to the primary, reads spread over replicas close enough to it, reads after a write
/// to a replica that has replayed it. A background monitor follows each node's role, so
/// after a failover writes go to the promoted node without a restart.
///
/// Cheap to clone (all clones share the pools); the monitor stops when the last clone is
/// dropped.
///
/// ```no_run
/// # async fn f() -> meridian_client::Result<()> {
/// use meridian_client::{PoolManager, QueryIntent};
/// // DATABASE_URL, and optionally DATABASE_REPLICA_URL(S).
/// let db = PoolManager::from_env().await?;
/// let pool = db.pool(QueryIntent::Read)?;
/// let n: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts").fetch_one(&pool).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PoolManager {
    shared: Arc<Shared>,
    _tasks: Arc<Tasks>,
}

/// A transaction's value and the primary's WAL position after its commit, as returned by
/// [`PoolManager::write`].
///
/// ```
/// use meridian_client::{QueryIntent, Written};
/// fn read_back<T>(written: &Written<T>) -> QueryIntent {
///     QueryIntent::ReadAfter(written.token)
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written<T> {
    /// What the transaction returned.
    pub value: T,
    /// Pass to [`QueryIntent::ReadAfter`] to read the write back from a replica.
    pub token: WalToken,
}

impl PoolManager {
    /// A builder, node by node.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// From the environment: `DATABASE_URL` (the primary, required), `DATABASE_REPLICA_URL`
    /// and `DATABASE_REPLICA_URLS` (comma-separated), and `MERIDIAN_ADMIN_URL` /
    /// `MERIDIAN_ADMIN_TOKEN` to follow a Meridian control plane. With no replica, everything
    /// uses the primary, as before replicas existed.
    pub async fn from_env() -> Result<PoolManager> {
        builder_from(|name| std::env::var(name).ok())?.build().await
    }

    /// From URLs: the first is the primary, the rest are replicas.
    ///
    /// ```no_run
    /// # async fn f() -> meridian_client::Result<()> {
    /// let db = meridian_client::PoolManager::from_urls([
    ///     "postgres://app:secret@db-1/app",
    ///     "postgres://app:secret@db-2/app",
    /// ])
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub async fn from_urls<S: Into<String>>(
        urls: impl IntoIterator<Item = S>,
    ) -> Result<PoolManager> {
        let mut builder = Builder::default();
        for (i, url) in urls.into_iter().enumerate() {
            builder = if i == 0 {
                builder.primary(url)
            } else {
                builder.replica(url)
            };
        }
        builder.build().await
    }

    /// Opens the pools (lazily), checks every node once and starts the monitor.
    pub(crate) async fn start(specs: Vec<NodeSpec>, options: Options) -> PoolManager {
        let nodes = specs
            .into_iter()
            .map(|spec| Node {
                pool: PgPoolOptions::new()
                    .max_connections(options.max_connections)
                    .min_connections(options.min_connections)
                    .acquire_timeout(options.acquire_timeout)
                    .connect_lazy_with(spec.connect.clone()),
                name: spec.name,
                connect: spec.connect,
                observed: Mutex::new(Observed::default()),
                breaker: Mutex::new(Breaker::new(options.breaker)),
                check_now: Notify::new(),
                down: Notify::new(),
                routed: AtomicU64::new(0),
                failures: AtomicU64::new(0),
            })
            .collect();
        let shared = Arc::new(Shared {
            nodes,
            options,
            promotions: AtomicU64::new(0),
            control_until: Mutex::new(None),
            started: Instant::now(),
            turn: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
        });
        let connections = monitor::first_round(&shared).await;
        let (stop, stopped) = watch::channel(false);
        for (index, conn) in connections.into_iter().enumerate() {
            tokio::spawn(monitor::watch_node(
                shared.clone(),
                index,
                conn,
                stopped.clone(),
            ));
        }
        if let Some(url) = shared.options.control_plane.clone() {
            tokio::spawn(monitor::follow_control_plane(shared.clone(), url, stopped));
        }
        let manager = PoolManager {
            shared,
            _tasks: Arc::new(Tasks { stop }),
        };
        for node in &manager.shared.nodes {
            let o = node.observed();
            tracing::info!(node = %node.name, role = ?o.role, reachable = o.reachable, "node checked");
        }
        manager
    }

    /// The pool for `intent`, for running sqlx queries on directly. The helpers ([`run`],
    /// [`retry`], [`transaction`]) also feed the nodes' circuit breakers and wake the monitor
    /// when a node fails; a bare pool cannot.
    ///
    /// [`run`]: PoolManager::run
    /// [`retry`]: PoolManager::retry
    /// [`transaction`]: PoolManager::transaction
    ///
    /// ```no_run
    /// # async fn f(db: meridian_client::PoolManager) -> meridian_client::Result<()> {
    /// use meridian_client::QueryIntent;
    /// sqlx::query("INSERT INTO events (kind) VALUES ('login')")
    ///     .execute(&db.pool(QueryIntent::Write)?)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn pool(&self, intent: QueryIntent) -> Result<PgPool> {
        let states = self.shared.states(self.shared.now());
        let choice = self.shared.choose(&states, intent)?;
        self.shared.count(choice);
        Ok(self.shared.nodes[choice.node].pool.clone())
    }

    /// The current primary's pool (for migrations, say).
    ///
    /// ```no_run
    /// # async fn f(db: meridian_client::PoolManager) -> meridian_client::Result<()> {
    /// sqlx::raw_sql("CREATE TABLE IF NOT EXISTS notes (id bigint PRIMARY KEY)")
    ///     .execute(&db.primary()?)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn primary(&self) -> Result<PgPool> {
        let states = self.shared.states(self.shared.now());
        let choice = self.shared.choose(&states, QueryIntent::Write)?;
        Ok(self.shared.nodes[choice.node].pool.clone())
    }

    /// The pools of the nodes last seen as reachable replicas.
    ///
    /// ```no_run
    /// # fn f(db: meridian_client::PoolManager) {
    /// let idle: usize = db.replicas().iter().map(|pool| pool.num_idle()).sum();
    /// # }
    /// ```
    pub fn replicas(&self) -> Vec<PgPool> {
        let states = self.shared.states(self.shared.now());
        self.shared
            .nodes
            .iter()
            .zip(states)
            .filter(|(_, s)| s.role == Role::Replica && s.reachable)
            .map(|(n, _)| n.pool.clone())
            .collect()
    }

    /// Chooses a node for `intent` and asks its breaker; a half-open breaker with its trials
    /// taken sends the query elsewhere.
    fn route(&self, intent: QueryIntent) -> Result<(usize, Admission)> {
        let now = self.shared.now();
        let mut states = self.shared.states(now);
        loop {
            let choice = self.shared.choose(&states, intent)?;
            let admission = self.shared.nodes[choice.node]
                .breaker
                .lock()
                .expect("not poisoned")
                .admit(now);
            if admission.is_allowed() {
                self.shared.count(choice);
                return Ok((choice.node, admission));
            }
            // Each refusal excludes a node: the loop ends.
            states[choice.node].circuit_open = true;
        }
    }

    /// Reports how a query admitted on node `index` ended.
    fn record<T>(&self, index: usize, admission: Admission, result: &Result<T>) {
        let node = &self.shared.nodes[index];
        let failed = matches!(result, Err(e) if e.is_node_failure());
        node.breaker
            .lock()
            .expect("not poisoned")
            .record(self.shared.now(), admission, !failed);
        if failed {
            node.failures.fetch_add(1, Ordering::Relaxed);
            node.check_now.notify_one();
        }
    }

    /// Runs `f` once on a connection of the node chosen for `intent`.
    ///
    /// ```no_run
    /// # async fn f(db: meridian_client::PoolManager) -> meridian_client::Result<()> {
    /// use meridian_client::QueryIntent;
    /// let name: String = db
    ///     .run(QueryIntent::Read, |conn| {
    ///         Box::pin(async move {
    ///             Ok(sqlx::query_scalar("SELECT name FROM users WHERE id = 1")
    ///                 .fetch_one(conn)
    ///                 .await?)
    ///         })
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn run<T>(
        &self,
        intent: QueryIntent,
        f: impl for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T>>,
    ) -> Result<T> {
        let (index, admission) = self.route(intent)?;
        let result = match self.acquire(index).await {
            Ok(mut conn) => f(&mut conn).await,
            Err(e) => Err(e),
        };
        self.record(index, admission, &result);
        result
    }

    /// A connection from node `index`'s pool, or an error as soon as the monitor sees the node
    /// down. sqlx alone keeps retrying a refused connection until the acquire timeout (5 s by
    /// default); a node that died is found faster by its check, which a slow acquisition
    /// wakes.
    async fn acquire(&self, index: usize) -> Result<PoolConnection<Postgres>> {
        let node = &self.shared.nodes[index];
        let down = node.down.notified();
        tokio::pin!(down);
        // Registered before looking, so a fall between the look and the wait is not missed.
        down.as_mut().enable();
        let refused = |why: String| Error::Connect {
            node: node.name.clone(),
            source: sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::NotConnected, why)),
        };
        if !node.observed().reachable {
            return Err(refused("the node is down".into()));
        }
        let acquire = node.pool.acquire();
        tokio::pin!(acquire);
        let nudge = tokio::time::sleep(NUDGE_AFTER);
        tokio::pin!(nudge);
        let mut nudged = false;
        loop {
            tokio::select! {
                acquired = &mut acquire => {
                    return acquired.map_err(|source| Error::Connect {
                        node: node.name.clone(),
                        source,
                    });
                }
                () = &mut nudge, if !nudged => {
                    nudged = true;
                    node.check_now.notify_one();
                }
                () = &mut down => {
                    let why = node.observed().last_error.unwrap_or_default();
                    return Err(refused(format!("the node went down: {why}")));
                }
            }
        }
    }

    /// Runs `f` like [`run`](PoolManager::run), again after a transient failure (SQLSTATE
    /// class `08`, `40001`, `40P01`, `57P01`–`57P03`, `53300`, a lost connection, no node
    /// available yet), with the backoff of [`Options::retry`], choosing the node afresh each
    /// time. A [`QueryIntent::Write`] is never retried once its commit may have happened (the
    /// connection broke after sending, `08007`, `57P01`): see
    /// [`retry_idempotent`](PoolManager::retry_idempotent) for writes that may run twice.
    ///
    /// ```no_run
    /// # async fn f(db: meridian_client::PoolManager) -> meridian_client::Result<()> {
    /// use meridian_client::QueryIntent;
    /// let total: i64 = db
    ///     .retry(QueryIntent::Read, |conn| {
    ///         Box::pin(async move {
    ///             Ok(sqlx::query_scalar("SELECT sum(amount)::bigint FROM transactions")
    ///                 .fetch_one(conn)
    ///                 .await?)
    ///         })
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn retry<T>(
        &self,
        intent: QueryIntent,
        f: impl for<'c> FnMut(&'c mut PgConnection) -> BoxFuture<'c, Result<T>>,
    ) -> Result<T> {
        self.retrying(intent, false, f).await
    }

    /// Like [`retry`](PoolManager::retry), for a write declared safe to run twice (an upsert,
    /// an update to an absolute value): it is retried even when its commit is in doubt.
    ///
    /// ```no_run
    /// # async fn f(db: meridian_client::PoolManager) -> meridian_client::Result<()> {
    /// use meridian_client::QueryIntent;
    /// db.retry_idempotent(QueryIntent::Write, |conn| {
    ///     Box::pin(async move {
    ///         sqlx::query("UPDATE settings SET value = 'on' WHERE name = 'feature'")
    ///             .execute(conn)
    ///             .await?;
    ///         Ok(())
    ///     })
    /// })
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub async fn retry_idempotent<T>(
        &self,
        intent: QueryIntent,
        f: impl for<'c> FnMut(&'c mut PgConnection) -> BoxFuture<'c, Result<T>>,
    ) -> Result<T> {
        self.retrying(intent, true, f).await
    }

    async fn retrying<T>(
        &self,
        intent: QueryIntent,
        idempotent: bool,
        mut f: impl for<'c> FnMut(&'c mut PgConnection) -> BoxFuture<'c, Result<T>>,
    ) -> Result<T> {
        let operation = match intent {
            QueryIntent::Write => Operation::Write { idempotent },
            QueryIntent::Read | QueryIntent::ReadAfter(_) => Operation::Read,
        };
        let mut attempt = 0;
        loop {
            let result = self.run(intent, |conn| f(conn)).await;
            match self.after_failure(&result, operation, attempt) {
                Some(delay) => tokio::time::sleep(delay).await,
                None => return result,
            }
            attempt += 1;
        }
    }

    /// How long to wait before trying again after `result`, or `None` to stop here.
    fn after_failure<T>(
        &self,
        result: &Result<T>,
        operation: Operation,
        attempt: u32,
    ) -> Option<Duration> {
        let error = result.as_ref().err()?;
        let failure = error.failure()?;
        match retry::decide(
            failure,
            operation,
            attempt,
            &self.shared.options.retry,
            rand::random(),
        ) {
            Decision::Retry { after } => {
                tracing::debug!(%error, attempt, ?after, "retrying");
                Some(after)
            }
            Decision::GiveUp(why) => {
                tracing::debug!(%error, attempt, ?why, "not retrying");
                None
            }
        }
    }

    /// Runs `f` in a transaction: committed when it returns `Ok`, rolled back when it returns
    /// `Err` (or panics, or is cancelled). Read-only transactions go to a replica (serializable
    /// ones to the primary: PostgreSQL refuses serializable mode on a standby); others to
    /// the primary. With [`TxOptions::retry`], a transaction rolled back by a serialization
    /// failure or a deadlock (or that could not begin) runs again, with backoff; one whose
    /// commit may have happened never does.
    ///
    /// ```no_run
    /// # async fn f(db: meridian_client::PoolManager) -> meridian_client::Result<()> {
    /// use meridian_client::TxOptions;
    /// db.transaction(TxOptions::new().serializable().retry(), |tx| {
    ///     Box::pin(async move {
    ///         sqlx::query("UPDATE accounts SET balance = balance - 10 WHERE id = 1")
    ///             .execute(&mut **tx)
    ///             .await?;
    ///         sqlx::query("UPDATE accounts SET balance = balance + 10 WHERE id = 2")
    ///             .execute(&mut **tx)
    ///             .await?;
    ///         Ok(())
    ///     })
    /// })
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub async fn transaction<T>(
        &self,
        options: TxOptions,
        f: impl for<'t, 'c> FnMut(&'t mut PgTransaction<'c>) -> BoxFuture<'t, Result<T>>,
    ) -> Result<T> {
        self.transaction_on(options, f)
            .await
            .map(|(value, _)| value)
    }

    /// A transaction on the primary, with the WAL position after its commit: reads with
    /// [`QueryIntent::ReadAfter`] of that token see the write, on a replica when one has
    /// replayed it.
    ///
    /// ```no_run
    /// # async fn f(db: meridian_client::PoolManager) -> meridian_client::Result<()> {
    /// use meridian_client::{QueryIntent, TxOptions};
    /// let written = db
    ///     .write(TxOptions::new(), |tx| {
    ///         Box::pin(async move {
    ///             Ok(sqlx::query_scalar::<_, i64>("INSERT INTO notes (body) VALUES ('hi') RETURNING id")
    ///                 .fetch_one(&mut **tx)
    ///                 .await?)
    ///         })
    ///     })
    ///     .await?;
    /// let body: String = db
    ///     .run(QueryIntent::ReadAfter(written.token), |conn| {
    ///         Box::pin(async move {
    ///             Ok(sqlx::query_scalar("SELECT body FROM notes WHERE id = $1")
    ///                 .bind(written.value)
    ///                 .fetch_one(conn)
    ///                 .await?)
    ///         })
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn write<T>(
        &self,
        options: TxOptions,
        f: impl for<'t, 'c> FnMut(&'t mut PgTransaction<'c>) -> BoxFuture<'t, Result<T>>,
    ) -> Result<Written<T>> {
        let (value, index) = self.transaction_on(options.writable(), f).await?;
        // After the commit returned, the insert position is past the commit record. Should the
        // primary fail right now, the write still happened: hand out a token that sends reads
        // to the primary rather than an error.
        let token = sqlx::query_scalar::<_, String>("SELECT pg_current_wal_insert_lsn()::text")
            .fetch_one(&self.shared.nodes[index].pool)
            .await
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or(WalToken::PRIMARY);
        Ok(Written { value, token })
    }

    async fn transaction_on<T>(
        &self,
        options: TxOptions,
        mut f: impl for<'t, 'c> FnMut(&'t mut PgTransaction<'c>) -> BoxFuture<'t, Result<T>>,
    ) -> Result<(T, usize)> {
        let intent = options.intent();
        let operation = Operation::Write { idempotent: false };
        let mut attempt = 0;
        loop {
            let routed = self.route(intent);
            let result = match routed {
                Ok((index, admission)) => {
                    let result = self.one_transaction(index, options, &mut f).await;
                    self.record(index, admission, &result);
                    result.map(|value| (value, index))
                }
                Err(e) => Err(e),
            };
            if !options.retries() {
                return result;
            }
            match self.after_failure(&result, operation, attempt) {
                Some(delay) => tokio::time::sleep(delay).await,
                None => return result,
            }
            attempt += 1;
        }
    }

    async fn one_transaction<T>(
        &self,
        index: usize,
        options: TxOptions,
        f: &mut impl for<'t, 'c> FnMut(&'t mut PgTransaction<'c>) -> BoxFuture<'t, Result<T>>,
    ) -> Result<T> {
        let node = &self.shared.nodes[index];
        let mut conn = self.acquire(index).await?;
        let mut tx = conn
            .begin_with(options.begin_statement())
            .await
            .map_err(|source| Error::Connect {
                node: node.name.clone(),
                source,
            })?;
        match f(&mut tx).await {
            Ok(value) => {
                tx.commit().await?;
                Ok(value)
            }
            Err(e) => {
                // A rollback that fails leaves the connection to sqlx, which closes it; the
                // transaction's own error is what the caller needs.
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }

    /// Closes every pool and stops the monitor (a service's shutdown).
    ///
    /// ```no_run
    /// # async fn f(db: meridian_client::PoolManager) {
    /// db.close().await;
    /// # }
    /// ```
    pub async fn close(&self) {
        let _ = self._tasks.stop.send(true);
        for node in &self.shared.nodes {
            node.pool.close().await;
        }
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }
}

impl fmt::Debug for PoolManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Node names and states only: the pools' connect options hold passwords.
        f.debug_struct("PoolManager")
            .field("nodes", &self.shared.nodes)
            .field("options", &self.shared.options)
            .finish()
    }
}
