//! What one probe of one node saw: the input of every health, lag and failover decision.
//!
//! The control plane fills these in from SQL (`pg_is_in_recovery()`, `pg_stat_replication`,
//! `pg_stat_wal_receiver`, ...) and hands them to the pure judgement code. Times are wall-clock
//! [`Timestamp`]s read by the caller; nothing here reads a clock.

use std::time::Duration;

use crate::lsn::Lsn;
use crate::topology::NodeId;

/// Milliseconds since the Unix epoch, as read by whoever made the observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The time `duration` later.
    pub fn plus(self, duration: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(duration.as_millis() as u64))
    }

    /// How long after `earlier` this is; zero if it is not after.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// Why a probe failed, by the strength of what it says about the node.
///
/// A refused or reset connection from a host that answers means no postmaster listens: strong
/// evidence the server is gone. A timeout is weak: the server may be slow, hung, or the
/// network between us partitioned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeError {
    /// Connection refused or reset: nothing listens.
    Refused,
    /// No answer within the probe timeout.
    Timeout,
    /// The server answered but refused us (authentication, too many connections, starting up
    /// or shutting down), with its SQLSTATE.
    Rejected {
        /// The server's SQLSTATE.
        sqlstate: String,
    },
    /// Anything else (DNS, TLS, protocol), described.
    Other(String),
}

impl ProbeError {
    /// Whether the failure is strong evidence that the server is not running.
    pub fn is_strong(&self) -> bool {
        match self {
            ProbeError::Refused => true,
            // 57P01-57P03: shutting down, crashed, or not accepting connections yet.
            ProbeError::Rejected { sqlstate } => sqlstate.starts_with("57P"),
            ProbeError::Timeout | ProbeError::Other(_) => false,
        }
    }
}

/// A replica's WAL receiver, from `pg_stat_wal_receiver` on that replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalReceiver {
    /// `streaming`, `waiting`, `starting`, `stopping`, ...; `None` when no receiver runs.
    pub status: Option<String>,
    /// Host and port it streams from.
    pub sender_host: Option<String>,
    /// Port it streams from.
    pub sender_port: Option<u16>,
    /// When the last message from the sender arrived.
    pub last_message_at: Option<Timestamp>,
    /// How long ago that was, by the replica's own clock (so no clock skew between hosts
    /// enters the judgement).
    pub last_message_age: Option<Duration>,
    /// The timeline it receives.
    pub timeline: Option<u32>,
}

impl WalReceiver {
    /// Whether it is streaming right now.
    pub fn is_streaming(&self) -> bool {
        self.status.as_deref() == Some("streaming")
    }
}

/// One replica as its upstream sees it, from `pg_stat_replication` there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downstream {
    /// The replica's `application_name` (Meridian's node name when it set up the replica).
    pub application_name: String,
    /// `streaming`, `catchup`, `backup`, ...
    pub state: String,
    /// `async`, `potential`, `sync` or `quorum`.
    pub sync_state: String,
    /// Last position the replica confirmed written to disk.
    pub flush_lsn: Option<Lsn>,
    /// Last position the replica replayed.
    pub replay_lsn: Option<Lsn>,
}

/// What a successful probe reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// Round trip of the probe query (not counting the connection).
    pub latency: Duration,
    /// How long opening the probe's connection took (TCP, TLS, authentication), when this
    /// probe opened one; `None` when it used the connection it keeps.
    pub connect_latency: Option<Duration>,
    /// `pg_is_in_recovery()`.
    pub in_recovery: bool,
    /// The timeline the node writes (primary) or receives/replays (replica).
    pub timeline: Option<u32>,
    /// The primary's current WAL insert position.
    pub current_lsn: Option<Lsn>,
    /// A replica's last received position.
    pub receive_lsn: Option<Lsn>,
    /// A replica's last replayed position.
    pub replay_lsn: Option<Lsn>,
    /// A replica's `pg_last_xact_replay_timestamp()`.
    pub last_replay_at: Option<Timestamp>,
    /// A replica's WAL receiver.
    pub wal_receiver: Option<WalReceiver>,
    /// Replicas streaming from this node.
    pub downstream: Vec<Downstream>,
    /// `synchronous_standby_names` (meaningful on a primary; empty = asynchronous).
    pub synchronous_standby_names: String,
    /// `wal_sender_timeout`: the sender pings a replica that has not reported for half of it.
    pub wal_sender_timeout: Option<Duration>,
    /// `wal_receiver_timeout` (a replica's): a replica that heard nothing from its sender for
    /// half of it asks for a reply, so a live idle stream carries a message at least that
    /// often; zero: never.
    pub wal_receiver_timeout: Option<Duration>,
    /// Client backends connected.
    pub connections: u32,
    /// `max_connections`.
    pub max_connections: u32,
}

/// One probe of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The node probed.
    pub node: NodeId,
    /// When the probe finished.
    pub at: Timestamp,
    /// What it found.
    pub outcome: Result<NodeStatus, ProbeError>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_add_and_subtract_without_overflow() {
        let t = Timestamp(1_000);
        assert_eq!(t.plus(Duration::from_millis(500)), Timestamp(1_500));
        assert_eq!(Timestamp(1_500).since(t), Duration::from_millis(500));
        assert_eq!(t.since(Timestamp(1_500)), Duration::ZERO);
        assert_eq!(
            Timestamp(u64::MAX).plus(Duration::from_secs(1)),
            Timestamp(u64::MAX)
        );
    }

    #[test]
    fn evidence_strength() {
        assert!(ProbeError::Refused.is_strong());
        assert!(
            ProbeError::Rejected {
                sqlstate: "57P01".into()
            }
            .is_strong()
        );
        assert!(
            !ProbeError::Rejected {
                sqlstate: "28P01".into()
            }
            .is_strong()
        );
        assert!(!ProbeError::Timeout.is_strong());
        assert!(!ProbeError::Other("tls".into()).is_strong());
    }
}
