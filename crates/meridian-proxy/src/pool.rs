//! Server connection pools: one per (node, server role, database).
//!
//! A pool hands out logged-in server connections and takes them back. Invariants, kept under
//! one short mutex:
//! - `open` counts every connection that exists or is being made (idle, in use, connecting),
//!   and never exceeds `max_size`;
//! - a connection given back goes to the oldest waiter first, else to the idle stack (LIFO,
//!   so the warmest connection is reused and the coldest age out);
//! - when a connection is lost, its slot goes to the oldest waiter, who opens a new one.
//!
//! A waiter that gives up (checkout timeout) may race with a grant already on its way; it
//! takes the grant back out of its channel and returns it, so no slot leaks. A maintenance
//! task per pool closes connections idle longer than `idle_timeout` or older than
//! `max_lifetime`, and keeps `min_size` connections open.
//!
//! Ages are kept on a coarse clock, the pool's `tick` (seconds, advanced by the maintenance
//! task), not by reading the system clock: checkout and release run for every transaction,
//! and the clock reads were a visible share of their cost. Ages are therefore whole seconds.
//!
//! Every connection carries the generation of the cluster view under which it was opened
//! (the fencing token, see `meridian_core::topology`). A checkout names the current
//! generation; the pool remembers the newest one it was asked for, and a connection opened
//! under an older one is closed instead of being handed out or taken back, so nothing opened
//! before a failover carries a transaction after it, even if its node becomes the primary
//! again. A connection the server has closed (its node was killed) is noticed at checkout from
//! the socket's readiness, which the runtime already tracks, without a system call.
//!
//! An operator can *recycle* a pool ([`Pool::recycle`]): every connection that exists then is
//! replaced, gracefully. The pool has a recycle epoch, stamped on each connection when its
//! login starts; recycling advances it, and a connection of an older epoch is stale exactly as
//! one of an older generation is (`Pool::is_stale`, the one test used at checkout, release
//! and maintenance). So an idle one is closed (Terminate) instead of being handed out, and one in
//! use finishes its transaction, or its pinned session, and is closed when given back; a
//! checkout that starts after the recycle never gets one. Recycling is called from the
//! operator interface, which runs on another runtime than the proxy: it does no I/O and spawns
//! nothing. It only advances the epoch under the lock and wakes the maintenance task, which
//! closes the idle connections and reopens `min_size` on the proxy's own runtime at once,
//! without waiting for its next tick (a checkout meanwhile closes any it meets itself).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use meridian_core::topology::NodeId;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::server::{ServerConnection, ServerError, ServerLogin};

/// Sizes and timeouts of every pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Connections kept open even when idle.
    pub min_size: usize,
    /// Most connections open at once.
    pub max_size: usize,
    /// How long a checkout waits for a connection before giving up.
    pub checkout_timeout: Duration,
    /// Idle connections older than this are closed (down to `min_size`); `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Connections older than this are closed when given back; `None`: never.
    pub max_lifetime: Option<Duration>,
}

/// An idle connection unused for at least this many ticks (seconds) is checked for a closed
/// socket before it is handed out; a busy pool skips the check (a system call) on its hot path.
const CHECK_IDLE_AFTER_TICKS: u64 = 1;

/// A duration in whole ticks (seconds), at least one.
fn ticks(duration: Duration) -> u64 {
    duration.as_secs().max(1)
}

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Every connection stayed busy for the whole checkout timeout.
    #[error(
        "no server connection became free within {timeout:?} (pool of {max_size} for {node} is exhausted)"
    )]
    Exhausted {
        /// The checkout timeout.
        timeout: Duration,
        /// The pool size.
        max_size: usize,
        /// The node's name.
        node: String,
    },
    /// A new connection could not be made.
    #[error(transparent)]
    Connect(#[from] ServerError),
}

enum Grant {
    Connection(Box<ServerConnection>),
    /// A slot is free: open a connection yourself (already counted in `open`).
    Open,
}

#[derive(Default)]
struct State {
    idle: VecDeque<Box<ServerConnection>>,
    open: usize,
    waiters: VecDeque<oneshot::Sender<Grant>>,
}

/// What one [`Pool::recycle`] found to replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecycleCounts {
    /// Idle connections, closed by the pool's maintenance task right away (or by the next
    /// checkout that meets one).
    pub idle: usize,
    /// Connections checked out (or being opened), closed when given back: after their
    /// transaction, or their session when it is pinned.
    pub in_use: usize,
}

/// Counters of one pool, for metrics and the operator API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// Connections that exist or are being made.
    pub open: usize,
    /// Of those, idle in the pool.
    pub idle: usize,
    /// Checkouts waiting for a connection.
    pub waiting: usize,
    /// Checkouts served since start.
    pub checkouts: u64,
    /// Checkouts that timed out.
    pub timeouts: u64,
    /// Connections made.
    pub connects: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
}

impl PoolStats {
    /// Connections lent out: open and not idle (being made counts as lent).
    pub fn in_use(&self) -> usize {
        self.open.saturating_sub(self.idle)
    }
}

/// One pool.
pub struct Pool {
    login: ServerLogin,
    node_name: String,
    settings: PoolSettings,
    state: Mutex<State>,
    /// The coarse clock: seconds since the pool was made, as counted by its maintenance task.
    tick: AtomicU64,
    /// The newest view generation a checkout named: connections opened under an older one
    /// are closed.
    generation: AtomicU64,
    /// Advanced by [`Pool::recycle`] (under the state lock): connections whose login started
    /// under an older epoch are closed.
    recycle_epoch: AtomicU64,
    /// Wakes the maintenance task between its ticks (after a recycle).
    wake: Arc<Notify>,
    checkouts: AtomicU64,
    timeouts: AtomicU64,
    connects: AtomicU64,
    connect_failures: AtomicU64,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("node", &self.node_name)
            .field("user", &self.login.user)
            .field("database", &self.login.database)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Pool {
    /// A pool for `login`; its maintenance task runs on the current runtime until the pool
    /// is dropped.
    pub fn new(login: ServerLogin, node_name: String, settings: PoolSettings) -> Arc<Pool> {
        let wake = Arc::new(Notify::new());
        let pool = Arc::new(Pool {
            login,
            node_name,
            settings,
            state: Mutex::new(State::default()),
            tick: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            recycle_epoch: AtomicU64::new(0),
            wake: wake.clone(),
            checkouts: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
        });
        tokio::spawn(maintain(Arc::downgrade(&pool), wake));
        pool
    }

    /// The node this pool connects to.
    pub fn node(&self) -> NodeId {
        self.login.node
    }

    /// The node's name.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The server role and database.
    pub fn identity(&self) -> (String, String) {
        (self.login.user.to_string(), self.login.database.to_string())
    }

    /// A connection opened under view `generation` or a newer one: an idle one, a new one, or
    /// the next one given back.
    pub async fn checkout(&self, generation: u64) -> Result<Box<ServerConnection>, PoolError> {
        let generation = self.advance_generation(generation);
        let mut deadline = None;
        loop {
            let waiter = {
                let mut state = self.lock();
                if let Some(conn) = self.take_idle(&mut state) {
                    drop(state);
                    self.checkouts.fetch_add(1, Ordering::Relaxed);
                    return Ok(conn);
                }
                if state.open < self.settings.max_size {
                    state.open += 1;
                    None
                } else {
                    let (tx, rx) = oneshot::channel();
                    state.waiters.push_back(tx);
                    Some(rx)
                }
            };
            let grant = match waiter {
                None => Grant::Open,
                Some(mut rx) => match tokio::time::timeout_at(
                    *deadline
                        .get_or_insert_with(|| Instant::now() + self.settings.checkout_timeout),
                    &mut rx,
                )
                .await
                {
                    Ok(Ok(grant)) => grant,
                    // The pool dropped our sender without a grant: try again.
                    Ok(Err(_)) => continue,
                    Err(_) => {
                        rx.close();
                        match rx.try_recv() {
                            Ok(Grant::Connection(conn)) => self.give_back(conn),
                            Ok(Grant::Open) => self.slot_lost(),
                            Err(_) => {}
                        }
                        self.timeouts.fetch_add(1, Ordering::Relaxed);
                        return Err(PoolError::Exhausted {
                            timeout: self.settings.checkout_timeout,
                            max_size: self.settings.max_size,
                            node: self.node_name.clone(),
                        });
                    }
                },
            };
            match grant {
                Grant::Connection(conn) if !self.is_stale(&conn) => {
                    self.checkouts.fetch_add(1, Ordering::Relaxed);
                    return Ok(conn);
                }
                Grant::Connection(stale) => {
                    // Given back under an older generation or recycle epoch: close it and use
                    // its slot.
                    tokio::spawn(stale.terminate());
                    let conn = self.open_connection(generation).await?;
                    self.checkouts.fetch_add(1, Ordering::Relaxed);
                    return Ok(conn);
                }
                Grant::Open => {
                    let conn = self.open_connection(generation).await?;
                    self.checkouts.fetch_add(1, Ordering::Relaxed);
                    return Ok(conn);
                }
            }
        }
    }

    /// Gives a connection back after use. `reusable` is false when its state is unknown
    /// (an error mid-stream, a desync): it is closed and its slot freed, as is a connection
    /// marked [`ServerConnection::retire`] or stale (`Pool::is_stale`).
    pub fn release(&self, mut conn: Box<ServerConnection>, reusable: bool) {
        let now = self.now();
        let expired = self
            .settings
            .max_lifetime
            .is_some_and(|lifetime| now - conn.created_tick >= ticks(lifetime));
        if !reusable || conn.retire || expired || self.is_stale(&conn) {
            tokio::spawn(conn.terminate());
            self.slot_lost();
            return;
        }
        conn.idle_tick = now;
        self.give_back(conn);
    }

    /// Replaces every connection that exists now, gracefully: idle ones are closed, ones in
    /// use are closed when given back, and no later checkout gets one of them; `min_size` is
    /// then reopened. Returns how many of each kind there were.
    ///
    /// Safe to call from any thread or runtime, or from none: it only advances the recycle
    /// epoch and wakes the pool's maintenance task, which closes the idle connections on the
    /// runtime that owns them (see the module notes).
    pub fn recycle(&self) -> RecycleCounts {
        let counts = {
            let state = self.lock();
            // Under the lock: a checkout that takes it after us sees the new epoch.
            self.recycle_epoch.fetch_add(1, Ordering::AcqRel);
            let idle = state.idle.len();
            RecycleCounts {
                idle,
                in_use: state.open - idle,
            }
        };
        self.wake.notify_one();
        counts
    }

    /// Whether `conn` must be closed rather than used again: it was opened under an older
    /// view generation than the newest one checked out, or before the last
    /// [`Pool::recycle`].
    pub(crate) fn is_stale(&self, conn: &ServerConnection) -> bool {
        conn.generation < self.generation.load(Ordering::Relaxed)
            || conn.recycle_epoch < self.recycle_epoch.load(Ordering::Acquire)
    }

    /// Closes every idle connection (shutdown, or the node is gone).
    pub fn close_idle(&self) {
        let idle: Vec<Box<ServerConnection>> = {
            let mut state = self.lock();
            let idle: Vec<_> = state.idle.drain(..).collect();
            state.open -= idle.len();
            idle
        };
        for conn in idle {
            tokio::spawn(conn.terminate());
        }
    }

    /// Current counters.
    pub fn stats(&self) -> PoolStats {
        let state = self.lock();
        PoolStats {
            open: state.open,
            idle: state.idle.len(),
            waiting: state.waiters.len(),
            checkouts: self.checkouts.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            connects: self.connects.load(Ordering::Relaxed),
            connect_failures: self.connect_failures.load(Ordering::Relaxed),
        }
    }

    fn give_back(&self, conn: Box<ServerConnection>) {
        let mut state = self.lock();
        let mut conn = conn;
        while let Some(waiter) = state.waiters.pop_front() {
            match waiter.send(Grant::Connection(conn)) {
                Ok(()) => return,
                // That waiter gave up; try the next one.
                Err(Grant::Connection(back)) => conn = back,
                Err(Grant::Open) => unreachable!("we sent a connection"),
            }
        }
        state.idle.push_back(conn);
    }

    /// A connection is gone: its slot goes to the oldest waiter, or is freed.
    fn slot_lost(&self) {
        let mut state = self.lock();
        while let Some(waiter) = state.waiters.pop_front() {
            if waiter.send(Grant::Open).is_ok() {
                return;
            }
        }
        state.open -= 1;
    }

    /// Records that a checkout named `generation`; returns the newest generation named so far.
    fn advance_generation(&self, generation: u64) -> u64 {
        let newest = self.generation.load(Ordering::Relaxed);
        if generation <= newest {
            return newest;
        }
        self.generation
            .fetch_max(generation, Ordering::Relaxed)
            .max(generation)
    }

    /// The warmest usable idle connection. Stale connections are closed politely (in the
    /// background: this runs under the lock, and only after a failover or a recycle);
    /// connections the server closed are dropped.
    fn take_idle(&self, state: &mut State) -> Option<Box<ServerConnection>> {
        while let Some(conn) = state.idle.pop_back() {
            if self.is_stale(&conn) {
                state.open -= 1;
                tokio::spawn(conn.terminate());
                continue;
            }
            // A server that exits closes its sockets: the runtime has seen the FIN already.
            // Anything else the server does to an idle connection (a FATAL before closing) is
            // found by a peek, made only for connections idle a while: it is a system call.
            let closed = conn.stream.closed_by_peer()
                || (self.now() - conn.idle_tick >= CHECK_IDLE_AFTER_TICKS
                    && conn.stream.is_broken());
            if !closed {
                return Some(conn);
            }
            // Closed by the server while idle (killed, restarted, idle_session_timeout, ...).
            state.open -= 1;
        }
        None
    }

    async fn open_connection(&self, generation: u64) -> Result<Box<ServerConnection>, PoolError> {
        // Read before logging in: a recycle during the login replaces this connection too.
        let recycle_epoch = self.recycle_epoch.load(Ordering::Acquire);
        match ServerConnection::connect(&self.login).await {
            Ok(mut conn) => {
                self.connects.fetch_add(1, Ordering::Relaxed);
                conn.generation = generation;
                conn.recycle_epoch = recycle_epoch;
                conn.created_tick = self.now();
                conn.idle_tick = conn.created_tick;
                Ok(Box::new(conn))
            }
            Err(e) => {
                self.connect_failures.fetch_add(1, Ordering::Relaxed);
                self.slot_lost();
                Err(e.into())
            }
        }
    }

    /// The coarse clock's current tick.
    fn now(&self) -> u64 {
        self.tick.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Closes idle, expired and stale connections and keeps `min_size` open, once a second and
/// whenever `wake` is notified (a recycle), for as long as the pool exists. Only the ticks
/// advance the pool's clock.
async fn maintain(pool: Weak<Pool>, wake: Arc<Notify>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let ticked = tokio::select! {
            _ = tick.tick() => true,
            () = wake.notified() => false,
        };
        let Some(pool) = pool.upgrade() else { return };
        let now = if ticked {
            pool.tick.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            pool.now()
        };
        let generation = pool.generation.load(Ordering::Relaxed);
        let expired: Vec<Box<ServerConnection>> = {
            let mut state = pool.lock();
            let mut expired = Vec::new();
            let mut kept = VecDeque::with_capacity(state.idle.len());
            // Oldest idle first: the front of the stack.
            while let Some(conn) = state.idle.pop_front() {
                let over_idle = pool
                    .settings
                    .idle_timeout
                    .is_some_and(|t| now - conn.idle_tick >= ticks(t))
                    && state.open - expired.len() > pool.settings.min_size;
                let over_age = pool
                    .settings
                    .max_lifetime
                    .is_some_and(|t| now - conn.created_tick >= ticks(t));
                if over_idle || over_age || pool.is_stale(&conn) {
                    expired.push(conn);
                } else {
                    kept.push_back(conn);
                }
            }
            state.idle = kept;
            state.open -= expired.len();
            expired
        };
        for conn in expired {
            tokio::spawn(conn.terminate());
        }
        let missing = {
            let mut state = pool.lock();
            let missing = pool.settings.min_size.saturating_sub(state.open);
            state.open += missing;
            missing
        };
        for attempt in 0..missing {
            match pool.open_connection(generation).await {
                Ok(conn) => pool.give_back(conn),
                Err(_) => {
                    // That attempt freed its own slot; free the ones not attempted and try
                    // again next tick.
                    for _ in attempt + 1..missing {
                        pool.slot_lost();
                    }
                    break;
                }
            }
        }
    }
}

/// Identifies a pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// The node.
    pub node: NodeId,
    /// Server role.
    pub user: Arc<str>,
    /// Database.
    pub database: Arc<str>,
}

/// Every pool of the proxy, created on first use.
#[derive(Debug, Default)]
pub struct Pools {
    pools: Mutex<HashMap<PoolKey, Arc<Pool>>>,
}

impl Pools {
    /// The pool for `key`, made with `make` if it does not exist yet.
    pub fn get_or_create(&self, key: PoolKey, make: impl FnOnce() -> Arc<Pool>) -> Arc<Pool> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.entry(key).or_insert_with(make).clone()
    }

    /// Every pool, for statistics.
    pub fn all(&self) -> Vec<Arc<Pool>> {
        self.pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}
