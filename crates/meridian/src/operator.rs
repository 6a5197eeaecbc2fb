//! What the operator interface asks of the running Meridian: metrics, the monitor's status,
//! alerts, the failover history, and the commands (switchover, failover to a region, rejoin) handed to the failover machine.

use std::sync::Arc;
use std::time::Duration;

use meridian_admin::{AlertFilter, ApiError, Control, Mutation, MutationFuture, StatusCode};
use meridian_control::monitor::MonitorHandle;
use meridian_control::store::{AlertQuery, AlertRecord, FailoverRecord, SEVERITIES, Store};
use meridian_core::failover::Command;
use meridian_core::topology::NodeId;
use serde_json::{Value, json};

use crate::telemetry::Telemetry;

/// How long a command's HTTP request waits for its run to finish before answering with the
/// run in progress (the run goes on; the history shows how it ends).
const RUN_WAIT: Duration = Duration::from_secs(120);

/// The running Meridian as the operator interface sees it.
#[derive(Clone)]
pub struct Operator {
    pub telemetry: Telemetry,
    pub monitor: MonitorHandle,
    pub store: Arc<dyn Store>,
}

impl Operator {
    fn node_id(&self, name: &str) -> Result<NodeId, ApiError> {
        let status = self.monitor.status();
        status
            .nodes
            .iter()
            .find(|n| &*n.name == name)
            .map(|n| n.id)
            .ok_or_else(|| {
                let known: Vec<&str> = status.nodes.iter().map(|n| &*n.name).collect();
                ApiError::not_found(format!(
                    "no node named {name:?}; the nodes are {}",
                    known.join(", ")
                ))
            })
    }

    fn region(&self, name: &str) -> Result<Arc<str>, ApiError> {
        let status = self.monitor.status();
        let mut regions: Vec<Arc<str>> = status.nodes.iter().map(|n| n.region.clone()).collect();
        regions.dedup();
        regions
            .iter()
            .find(|r| &***r == name)
            .cloned()
            .ok_or_else(|| {
                let known: Vec<&str> = regions.iter().map(|r| &**r).collect();
                ApiError::not_found(format!(
                    "no region named {name:?}; the regions are {}",
                    known.join(", ")
                ))
            })
    }

    async fn run(&self, command: Command) -> Result<Value, ApiError> {
        let id = match self.monitor.command(command).await {
            Ok(Some(id)) => id,
            Ok(None) => return Ok(json!({ "outcome": "done" })),
            Err(why) => return Err(ApiError::refused(why)),
        };
        let record = self
            .monitor
            .wait_run(id, RUN_WAIT)
            .await
            .ok_or_else(|| ApiError::internal(format!("run {id} left no record")))?;
        if let Some(why) = record.outcome.strip_prefix("failed: ") {
            // 502: the command was valid but the servers did not carry it out.
            return Err(ApiError::new(
                meridian_admin::StatusCode::BAD_GATEWAY,
                "run_failed",
                format!("run {id} failed: {why}"),
            ));
        }
        Ok(record_json(&record))
    }
}

impl Control for Operator {
    fn metrics(&self) -> String {
        self.telemetry.metrics()
    }

    fn status(&self) -> Arc<meridian_core::status::ClusterStatus> {
        self.monitor.status()
    }

    fn alerts(&self, filter: AlertFilter) -> Result<Value, ApiError> {
        let query = AlertQuery {
            limit: filter.limit.unwrap_or(100),
            min_severity: filter.severity,
            active: filter.active,
            node: filter.node,
        };
        match self.store.alerts(&query) {
            Ok(alerts) => Ok(Value::Array(alerts.iter().map(alert_json).collect())),
            Err(e) if e.is_invalid_query() => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("{e}; severity is one of {}", SEVERITIES.join(", ")),
            )),
            Err(e) => Err(ApiError::internal(format!("cannot read the alerts: {e}"))),
        }
    }

    fn failover_history(&self, limit: usize) -> Result<Value, ApiError> {
        let records = self
            .store
            .failover_history(limit)
            .map_err(|e| ApiError::internal(format!("cannot read the failover history: {e}")))?;
        Ok(Value::Array(records.iter().map(record_json).collect()))
    }

    fn mutate(&self, mutation: Mutation) -> MutationFuture<'_> {
        Box::pin(async move {
            let command = match mutation {
                Mutation::Switchover { to: None } => Command::Switchover { to: None },
                Mutation::Switchover { to: Some(name) } => Command::Switchover {
                    to: Some(self.node_id(&name)?),
                },
                Mutation::Failover { region } => Command::Failover {
                    region: Some(self.region(&region)?),
                    node: None,
                },
                Mutation::Rejoin { node } => Command::Rejoin {
                    node: self.node_id(&node)?,
                },
            };
            self.run(command).await
        })
    }
}

/// A run record as the API shows it; times in milliseconds since the epoch, phases with
/// their durations.
pub fn record_json(record: &FailoverRecord) -> Value {
    json!({
        "id": record.id,
        "kind": record.kind,
        "reason": record.reason,
        "old_primary": record.old_primary,
        "new_primary": record.new_primary,
        "generation": record.generation,
        "started_at_ms": record.started_at_ms,
        "finished_at_ms": record.finished_at_ms,
        "duration_ms": record.finished_at_ms.map(|end| end.saturating_sub(record.started_at_ms)),
        "outcome": record.outcome,
        "phases": record.phases.iter().map(|p| json!({
            "name": p.name,
            "started_at_ms": p.started_at_ms,
            "finished_at_ms": p.finished_at_ms,
            "duration_ms": p.finished_at_ms.saturating_sub(p.started_at_ms),
            "outcome": p.outcome,
        })).collect::<Vec<_>>(),
        "ranking": record.ranking,
    })
}

/// An alert as the API shows it.
fn alert_json(alert: &AlertRecord) -> Value {
    json!({
        "id": alert.id,
        "kind": alert.kind,
        "node": alert.node,
        "region": alert.region,
        "severity": alert.severity,
        "value": alert.value,
        "threshold": alert.threshold,
        "message": alert.message,
        "raised_at_ms": alert.raised_at_ms,
        "updated_at_ms": alert.updated_at_ms,
        "resolved_at_ms": alert.resolved_at_ms,
        "active": alert.is_active(),
    })
}
