//! One node: its sqlx pool, what the monitor last saw of it, its circuit breaker and its
//! counters.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use meridian_core::Lsn;
use meridian_core::balance::{NodeState, Role};
use meridian_core::breaker::{Breaker, BreakerState};
use meridian_core::observation::Timestamp;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio::sync::Notify;

/// What the last check of a node found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Observed {
    pub(crate) role: Role,
    pub(crate) reachable: bool,
    /// Insert position (primary) or replay position (replica).
    pub(crate) lsn: Option<Lsn>,
    pub(crate) latency: Option<Duration>,
    /// Bytes behind the primary, when the control plane says (the client computes it
    /// otherwise).
    pub(crate) lag_bytes: Option<u64>,
    /// Checks failed in a row.
    pub(crate) failures: u32,
    pub(crate) last_error: Option<String>,
}

impl Default for Observed {
    fn default() -> Self {
        Observed {
            role: Role::Unknown,
            reachable: false,
            lsn: None,
            latency: None,
            lag_bytes: None,
            failures: 0,
            last_error: None,
        }
    }
}

pub(crate) struct Node {
    /// `host:port/database`.
    pub(crate) name: String,
    pub(crate) pool: PgPool,
    /// For the monitor's own connection.
    pub(crate) connect: PgConnectOptions,
    pub(crate) observed: Mutex<Observed>,
    pub(crate) breaker: Mutex<Breaker>,
    /// Wakes the monitor for an immediate check (a query just failed on this node).
    pub(crate) check_now: Notify,
    /// Notified (to every waiter) when a check finds the node unreachable.
    pub(crate) down: Notify,
    /// Queries routed here.
    pub(crate) routed: AtomicU64,
    /// Queries that failed because of the node (connection lost, refused, shutting down).
    pub(crate) failures: AtomicU64,
}

impl Node {
    pub(crate) fn observed(&self) -> Observed {
        self.observed.lock().expect("not poisoned").clone()
    }

    pub(crate) fn breaker_state(&self, now: Timestamp) -> BreakerState {
        self.breaker.lock().expect("not poisoned").state(now)
    }

    /// Connections checked out of its pool right now.
    pub(crate) fn in_use(&self) -> u32 {
        let idle = u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX);
        self.pool.size().saturating_sub(idle)
    }

    /// The node as the pure chooser sees it; `primary_lsn` is the primary's last position (for
    /// the lag), when one is known.
    pub(crate) fn state(
        &self,
        observed: &Observed,
        now: Timestamp,
        primary_lsn: Option<Lsn>,
    ) -> NodeState {
        let lag_bytes = observed
            .lag_bytes
            .or_else(|| match (observed.role, observed.lsn) {
                (Role::Replica, Some(replayed)) => primary_lsn.map(|p| p.bytes_after(replayed)),
                _ => None,
            });
        NodeState {
            role: observed.role,
            reachable: observed.reachable,
            circuit_open: matches!(self.breaker_state(now), BreakerState::Open { .. }),
            lag_bytes,
            replayed: match observed.role {
                Role::Replica => observed.lsn,
                _ => None,
            },
            latency: observed.latency,
            in_flight: self.in_use(),
        }
    }

    pub(crate) fn count_routed(&self) {
        self.routed.fetch_add(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the pool nor the connect options: they hold the password.
        f.debug_struct("Node")
            .field("name", &self.name)
            .field("observed", &self.observed())
            .finish_non_exhaustive()
    }
}
