//! Probing one node: a dedicated connection, one query per probe, and reconnection with backoff.
//!
//! Each probe is a single round trip that returns everything the judgement needs: role, WAL
//! positions, replay time, the WAL receiver (who the node streams from), the replicas streaming
//! from it (`pg_stat_replication`) and connection counts. The connection is kept open between
//! probes; when it breaks, reconnection follows the backoff schedule (2 s doubling to 32 s, then
//! the probe interval), and the probes in between report the node as still failing without
//! hammering it. A forced probe (an operator's health check, or the proxy's fast signal after a
//! connection error) reconnects at once.
//!
//! The role that probes needs `pg_monitor` (or superuser) to see `pg_stat_wal_receiver` and the
//! addresses in `pg_stat_replication`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meridian_core::Lsn;
use meridian_core::backoff::Backoff;
use meridian_core::observation::{Downstream, NodeStatus, ProbeError, Timestamp, WalReceiver};
use meridian_core::topology::NodeId;
use meridian_tls::ServerTls;
use tokio::time::Instant;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::credentials::Credentials;

/// One round trip with everything a probe reports. `pg_walfile_name` names the current WAL file,
/// whose first eight hex digits are the primary's timeline; it fails during recovery, hence the
/// CASE. `received_tli` is the timeline a replica receives.
const PROBE_SQL: &str = "\
SELECT r.in_recovery,
       CASE WHEN r.in_recovery THEN NULL ELSE pg_current_wal_lsn()::text END,
       CASE WHEN r.in_recovery THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END,
       pg_last_wal_receive_lsn()::text,
       pg_last_wal_replay_lsn()::text,
       (extract(epoch FROM pg_last_xact_replay_timestamp()) * 1000)::bigint,
       w.status, w.sender_host, w.sender_port,
       (extract(epoch FROM w.last_msg_receipt_time) * 1000)::bigint, w.received_tli,
       (extract(epoch FROM now() - w.last_msg_receipt_time) * 1000)::bigint,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
       current_setting('max_connections'),
       (SELECT coalesce(json_agg(json_build_array(application_name, state, sync_state,
                                                  flush_lsn::text, replay_lsn::text)), '[]')
          FROM pg_stat_replication),
       current_setting('synchronous_standby_names'),
       (SELECT setting FROM pg_settings WHERE name = 'wal_sender_timeout'),
       (SELECT setting FROM pg_settings WHERE name = 'wal_receiver_timeout')
  FROM (SELECT pg_is_in_recovery() AS in_recovery) r
  LEFT JOIN pg_stat_wal_receiver w ON true";

/// Where a node is and how to reach it.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    /// The node.
    pub node: NodeId,
    /// Its name, for logs.
    pub name: Arc<str>,
    /// Host.
    pub host: Arc<str>,
    /// Port.
    pub port: u16,
    /// TLS toward it.
    pub tls: ServerTls,
}

/// The probe connection of one node and its reconnection state.
#[derive(Debug)]
pub struct Prober {
    target: ProbeTarget,
    credentials: Credentials,
    timeout: Duration,
    backoff: Backoff,
    client: Option<Client>,
    /// Reconnection attempts since the connection was lost.
    attempt: u32,
    /// No reconnection before this (the backoff); `None`: connect whenever asked.
    next_attempt: Option<Instant>,
    /// What the last failed attempt said, repeated while waiting for the next attempt.
    last_error: Option<ProbeError>,
}

impl Prober {
    /// A prober that connects on its first probe.
    pub fn new(
        target: ProbeTarget,
        credentials: Credentials,
        timeout: Duration,
        backoff: Backoff,
    ) -> Prober {
        Prober {
            target,
            credentials,
            timeout,
            backoff,
            client: None,
            attempt: 0,
            next_attempt: None,
            last_error: None,
        }
    }

    /// The node probed.
    pub fn target(&self) -> &ProbeTarget {
        &self.target
    }

    /// Probes the node. `force` reconnects now even if the backoff says to wait.
    pub async fn probe(&mut self, force: bool) -> Result<NodeStatus, ProbeError> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        let mut connect_latency = None;
        if self.client.is_none() {
            let due = self.next_attempt.is_none_or(|at| Instant::now() >= at);
            if !due && !force {
                return Err(self.last_error.clone().unwrap_or(ProbeError::Refused));
            }
            let connecting = Instant::now();
            match tokio::time::timeout(self.timeout, self.connect()).await {
                Ok(Ok(client)) => {
                    connect_latency = Some(connecting.elapsed());
                    self.client = Some(client);
                    self.attempt = 0;
                    self.next_attempt = None;
                    self.last_error = None;
                }
                Ok(Err(error)) => return Err(self.failed(error)),
                Err(_) => return Err(self.failed(ProbeError::Timeout)),
            }
        }
        let client = self.client.as_ref().expect("connected above");
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, client.simple_query(PROBE_SQL)).await;
        let latency = started.elapsed();
        match result {
            Ok(Ok(messages)) => parse(&messages, latency)
                .map(|status| NodeStatus {
                    connect_latency,
                    ..status
                })
                .map_err(|problem| self.failed(ProbeError::Other(problem))),
            Ok(Err(error)) => {
                let error = classify(&error);
                // A query error on a healthy connection (e.g. the server is shutting down) leaves
                // the connection unusable for our purpose: start over.
                self.client = None;
                Err(self.failed(error))
            }
            Err(_) => {
                // The server did not answer in time; the connection may still be fine, but a
                // late reply would be mistaken for the next probe's: start over.
                self.client = None;
                Err(self.failed(ProbeError::Timeout))
            }
        }
    }

    /// Drops the connection (the proxy saw the node fail; the next probe reconnects at once).
    pub fn disconnect(&mut self) {
        self.client = None;
        self.next_attempt = None;
    }

    /// Records a failure and schedules the next reconnection.
    fn failed(&mut self, error: ProbeError) -> ProbeError {
        self.client = None;
        let delay = self.backoff.delay(self.attempt, rand::random::<f64>());
        self.attempt = self.attempt.saturating_add(1);
        self.next_attempt = Some(Instant::now() + delay);
        self.last_error = Some(error.clone());
        error
    }

    async fn connect(&self) -> Result<Client, ProbeError> {
        crate::locate::connect(
            &self.target.host,
            self.target.port,
            &self.target.tls,
            &self.credentials,
            None,
            "meridian-monitor",
            self.timeout,
        )
        .await
        .map_err(|e| classify(&e))
    }
}

/// The strength of a failure: refused or reset connections are strong, a server's SQLSTATE is
/// kept, anything else is described.
fn classify(error: &tokio_postgres::Error) -> ProbeError {
    if let Some(db) = error.as_db_error() {
        return ProbeError::Rejected {
            sqlstate: db.code().code().to_owned(),
        };
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            return match io.kind() {
                ConnectionRefused | ConnectionReset | ConnectionAborted | BrokenPipe
                | UnexpectedEof => ProbeError::Refused,
                TimedOut => ProbeError::Timeout,
                _ => ProbeError::Other(io.to_string()),
            };
        }
        source = e.source();
    }
    if error.is_closed() {
        return ProbeError::Refused;
    }
    ProbeError::Other(error.to_string())
}

/// Reads the probe's single row.
fn parse(messages: &[SimpleQueryMessage], latency: Duration) -> Result<NodeStatus, String> {
    let row = messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .ok_or("the probe query returned no row")?;
    let text = |i: usize| row.get(i).filter(|s| !s.is_empty());
    let lsn = |i: usize| -> Result<Option<Lsn>, String> {
        text(i)
            .map(|s| s.parse::<Lsn>().map_err(|e| e.to_string()))
            .transpose()
    };
    let number = |i: usize| -> Result<Option<i64>, String> {
        text(i)
            .map(|s| s.parse::<i64>().map_err(|e| format!("column {i}: {e}")))
            .transpose()
    };
    let millis = |i: usize| -> Result<Option<Timestamp>, String> {
        Ok(number(i)?.map(|n| Timestamp(n.max(0) as u64)))
    };
    let in_recovery = text(0) == Some("t");
    let walfile_timeline = text(2)
        .and_then(|name| name.get(..8))
        .and_then(|hex| u32::from_str_radix(hex, 16).ok());
    let wal_receiver = match text(6) {
        None => None,
        Some(status) => Some(WalReceiver {
            status: Some(status.to_owned()),
            sender_host: text(7).map(str::to_owned),
            sender_port: number(8)?.and_then(|p| u16::try_from(p).ok()),
            last_message_at: millis(9)?,
            timeline: number(10)?.and_then(|t| u32::try_from(t).ok()),
            last_message_age: number(11)?.map(|ms| Duration::from_millis(ms.max(0) as u64)),
        }),
    };
    let timeline = if in_recovery {
        wal_receiver.as_ref().and_then(|w| w.timeline)
    } else {
        walfile_timeline
    };
    let downstream: Vec<serde_json::Value> = serde_json::from_str(text(14).unwrap_or("[]"))
        .map_err(|e| format!("pg_stat_replication: {e}"))?;
    let downstream = downstream
        .into_iter()
        .filter_map(|entry| {
            let fields = entry.as_array()?;
            let get = |i: usize| fields.get(i).and_then(|v| v.as_str()).map(str::to_owned);
            Some(Downstream {
                application_name: get(0).unwrap_or_default(),
                state: get(1).unwrap_or_default(),
                sync_state: get(2).unwrap_or_default(),
                flush_lsn: get(3).and_then(|s| s.parse().ok()),
                replay_lsn: get(4).and_then(|s| s.parse().ok()),
            })
        })
        .collect();
    Ok(NodeStatus {
        latency,
        connect_latency: None,
        in_recovery,
        timeline,
        current_lsn: lsn(1)?,
        receive_lsn: lsn(3)?,
        replay_lsn: lsn(4)?,
        last_replay_at: millis(5)?,
        wal_receiver,
        downstream,
        connections: number(12)?.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32,
        max_connections: number(13)?.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32,
        synchronous_standby_names: text(15).unwrap_or_default().to_owned(),
        wal_sender_timeout: number(16)?.map(|ms| Duration::from_millis(ms.max(0) as u64)),
        wal_receiver_timeout: number(17)?.map(|ms| Duration::from_millis(ms.max(0) as u64)),
    })
}

/// The wall clock as a [`Timestamp`].
pub fn wall_clock() -> Timestamp {
    Timestamp(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    )
}
