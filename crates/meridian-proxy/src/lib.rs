//! The data plane: a PostgreSQL wire-protocol proxy that pools server connections and runs
//! each transaction where a decision from `meridian-core` says.
//!
//! [`Proxy::run`] accepts clients until its shutdown future completes, then stops accepting,
//! lets open transactions finish for `shutdown_timeout`, tells every remaining client that
//! the proxy is shutting down (SQLSTATE 57P01) and closes the pools. Each client is one task
//! ([`session`]); the pools, the prepared-statement registry and the cancel keys are shared
//! by all of them through [`Shared`]. The cluster view comes in through a `watch` channel, so
//! the control plane can move the primary without restarting the proxy.
//!
//! During a failover (see [`session`]) a transaction that needs the primary waits for the next
//! view instead of failing, up to `failover_buffer_timeout`; at most `failover_buffer_size`
//! sessions wait at once, counted here. Server connections are tagged with the view generation
//! they were opened under ([`pool`]), and a session whose connection belongs to a replaced
//! primary abandons it as soon as the view moves on.
//!
//! [`Proxy::recycle`] is the operator's "refresh connections": it replaces every server
//! connection of every pool (or of some nodes' pools) gracefully, without interrupting a
//! transaction or a pinned session (see [`pool`]). It is called from the operator interface's
//! runtime, not the proxy's: it neither blocks nor spawns, and the proxy's own tasks do the
//! closing and reopening.

mod cancel;
mod failure;
mod login;
pub mod pool;
pub mod router;
mod server;
mod session;
mod session_state;
mod settings;
mod statements;
mod stream;
mod tracker;
mod woken;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::BytesMut;
use meridian_core::topology::{ClusterView, NodeId, ProxySignal};
use meridian_wire::startup::{self, StartupPacket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

pub use failure::Failure;
pub use meridian_tls::{ClientTls, ServerTls, ServerTlsSet, TlsSetupError};
pub use pool::{PoolSettings, PoolStats, RecycleCounts};
pub use router::{NodeRouting, RoutingReport};
pub use server::ServerError;
pub use settings::{ClientAuth, ProxySettings, SettingsError, User, classifier, route_policy};

use crate::cancel::CancelRegistry;
use crate::login::Opening;
use crate::pool::Pools;
use crate::router::Router;
use crate::session::Session;
use crate::statements::{ParameterSets, StatementRegistry};

/// What every session shares.
pub(crate) struct Shared {
    pub(crate) settings: ProxySettings,
    pub(crate) view: watch::Receiver<Arc<ClusterView>>,
    pub(crate) router: Arc<Router>,
    pub(crate) pools: Pools,
    pub(crate) statements: StatementRegistry,
    pub(crate) cancels: CancelRegistry,
    pub(crate) parameter_sets: ParameterSets,
    /// Keys the fixed per-user salt of mock authentication for unknown users.
    pub(crate) mock_secret: [u8; 32],
    /// Where to report a node the proxy could not use (the monitor probes it at once) and the
    /// first write of each generation.
    fast_signal: Option<mpsc::UnboundedSender<ProxySignal>>,
    /// The newest view generation whose first committed write was reported.
    write_reported: AtomicU64,
    next_session: AtomicU64,
    /// Sessions waiting for a primary (the failover buffer).
    waiting: AtomicUsize,
}

impl Shared {
    pub(crate) fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// The proxy could not connect to `node` or lost a connection to it: a faster signal than
    /// the next scheduled probe.
    pub(crate) fn report_unusable(&self, node: NodeId) {
        if let Some(signal) = &self.fast_signal {
            let _ = signal.send(ProxySignal::Unusable(node));
        }
    }

    /// Whether no write under `generation` was reported yet (one relaxed load: it runs for
    /// every command completed).
    pub(crate) fn first_write_unreported(&self, generation: u64) -> bool {
        generation > self.write_reported.load(Ordering::Relaxed)
    }

    /// A transaction that wrote rows committed on `node` under `generation`: the first such
    /// of the generation is reported, which closes a failover's write unavailability.
    pub(crate) fn report_write(&self, node: NodeId, generation: u64) {
        let before = self.write_reported.fetch_max(generation, Ordering::Relaxed);
        if before < generation
            && let Some(signal) = &self.fast_signal
        {
            let _ = signal.send(ProxySignal::WriteAccepted { node, generation });
        }
    }

    /// A place in the failover buffer, or `None` when `failover_buffer_size` sessions already
    /// wait.
    pub(crate) fn enter_failover_buffer(self: &Arc<Self>) -> Option<BufferSlot> {
        let before = self.waiting.fetch_add(1, Ordering::AcqRel);
        if before >= self.settings.failover_buffer_size {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(BufferSlot(self.clone()))
    }
}

/// A session's place in the failover buffer, given back when dropped.
pub(crate) struct BufferSlot(Arc<Shared>);

impl Drop for BufferSlot {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A proxy instance.
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("pools", &self.shared.pools)
            .finish()
    }
}

/// One pool's identity and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolReport {
    /// Node name.
    pub node: String,
    /// Server role.
    pub user: String,
    /// Database.
    pub database: String,
    /// Counters.
    pub stats: PoolStats,
}

/// What [`Proxy::recycle`] found to replace, summed over the pools it touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecycleReport {
    /// Pools recycled.
    pub pools: usize,
    /// Idle connections, closed right away.
    pub idle: usize,
    /// Connections in use, closed when their transaction (or pinned session) ends.
    pub in_use: usize,
}

impl Proxy {
    /// A proxy with these settings, following the cluster view published on `view`, and
    /// reporting on `fast_signal` the nodes it cannot use and the first write of each
    /// generation.
    pub fn new(
        settings: ProxySettings,
        view: watch::Receiver<Arc<ClusterView>>,
        fast_signal: Option<mpsc::UnboundedSender<ProxySignal>>,
    ) -> Proxy {
        let router = Arc::new(Router::new(settings.routing.clone(), &view.borrow()));
        Proxy {
            shared: Arc::new(Shared {
                settings,
                view,
                router,
                pools: Pools::default(),
                statements: StatementRegistry::default(),
                cancels: CancelRegistry::default(),
                parameter_sets: ParameterSets::default(),
                mock_secret: rand::random(),
                fast_signal,
                write_reported: AtomicU64::new(0),
                next_session: AtomicU64::new(1),
                waiting: AtomicUsize::new(0),
            }),
        }
    }

    /// Counters of every pool.
    pub fn pool_reports(&self) -> Vec<PoolReport> {
        self.shared
            .pools
            .all()
            .into_iter()
            .map(|pool| {
                let (user, database) = pool.identity();
                PoolReport {
                    node: pool.node_name().to_owned(),
                    user,
                    database,
                    stats: pool.stats(),
                }
            })
            .collect()
    }

    /// Replaces the server connections of every pool, or only of the pools of `nodes`,
    /// gracefully: idle ones are closed, ones in use are closed when their transaction or
    /// pinned session gives them back, no later checkout gets one of them, and each pool
    /// reopens its `min_size`. Pools made later are new anyway.
    ///
    /// Callable from any thread or runtime (the operator interface runs on its own): it does
    /// no I/O and returns at once; the closing happens on the proxy's runtime.
    pub fn recycle(&self, nodes: Option<&[NodeId]>) -> RecycleReport {
        let mut report = RecycleReport::default();
        for pool in self.shared.pools.all() {
            if nodes.is_some_and(|nodes| !nodes.contains(&pool.node())) {
                continue;
            }
            let counts = pool.recycle();
            report.pools += 1;
            report.idle += counts.idle;
            report.in_use += counts.in_use;
        }
        report
    }

    /// What routing decided so far, per node and reason, and its other counters.
    pub fn routing_report(&self) -> RoutingReport {
        self.shared.router.report()
    }

    /// Sessions waiting for a primary right now (a failover is under way, or the primary
    /// stopped answering), at most `failover_buffer_size`.
    pub fn waiting_for_primary(&self) -> usize {
        self.shared.waiting.load(Ordering::Acquire)
    }

    /// Serves clients from `listener` until `shutdown` completes, then shuts down gracefully.
    pub async fn run(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let settings = &self.shared.settings;
        let permits = Arc::new(Semaphore::new(settings.max_client_connections));
        let (stop, stopping) = watch::channel(false);
        let mut sessions = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = &mut shutdown => break,
            };
            while sessions.try_join_next().is_some() {}
            let Ok((tcp, _)) = accepted else {
                // Out of file descriptors or a connection reset before accept: keep serving.
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tokio::spawn(refuse(tcp));
                continue;
            };
            let shared = self.shared.clone();
            let stopping = stopping.clone();
            // Unconstrained: a session yields whenever a socket has nothing to read, so tokio's
            // cooperative budget only adds bookkeeping to every poll of its hot loop.
            sessions.spawn(tokio::task::unconstrained(async move {
                let _permit = permit;
                let login_timeout = shared.settings.client_login_timeout;
                match tokio::time::timeout(login_timeout, login::open(&shared, tcp)).await {
                    Ok(Ok(Opening::Session(login))) => Session::run(shared, *login, stopping).await,
                    Ok(Ok(Opening::Cancel)) | Ok(Err(_)) => {}
                    // The client did not finish logging in: close without a word, as the
                    // connection may not even be speaking the protocol.
                    Err(_) => {}
                }
            }));
        }
        drop(listener);
        let _ = stop.send(true);
        let all = u32::try_from(settings.max_client_connections).unwrap_or(u32::MAX);
        let drained =
            tokio::time::timeout(settings.shutdown_timeout, permits.acquire_many(all)).await;
        if drained.is_err() {
            sessions.abort_all();
        }
        while sessions.join_next().await.is_some() {}
        for pool in self.shared.pools.all() {
            pool.close_idle();
        }
    }
}

/// Answers a client over `max_client_connections` as PostgreSQL does: after its startup
/// packet (declining TLS first if asked), FATAL 53300.
async fn refuse(mut tcp: TcpStream) {
    let mut buf = BytesMut::with_capacity(512);
    let read = async {
        loop {
            match startup::decode(&mut buf) {
                Ok(Some(StartupPacket::SslRequest | StartupPacket::GssEncRequest)) => {
                    tcp.write_all(b"N").await.ok()?;
                }
                Ok(Some(StartupPacket::Startup { .. })) => return Some(()),
                Ok(Some(_)) | Err(_) => return None,
                Ok(None) => {
                    if tcp.read_buf(&mut buf).await.ok()? == 0 {
                        return None;
                    }
                }
            }
        }
    };
    if tokio::time::timeout(std::time::Duration::from_secs(5), read)
        .await
        .ok()
        .flatten()
        .is_some()
    {
        let mut out = BytesMut::new();
        meridian_wire::backend::encode_error_response(
            &mut out,
            &Failure::TooManyClients.to_fields(),
        );
        let _ = tcp.write_all(&out).await;
    }
}
