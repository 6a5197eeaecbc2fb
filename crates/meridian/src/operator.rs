//! What the operator interface asks of the running Meridian: metrics, the monitor's status,
//! the proxy's pools and routing, alerts, history and probes from the store, query analysis,
//! and the commands (switchover, failover to a region, rejoin) handed to the failover
//! machine, probes on demand and pool recycling.

use std::sync::Arc;
use std::time::Duration;

use meridian_admin::model::{
    Alert, Archiving, CoordinationInfo, FailoverRun, Performance, PoolState, ProbeSample,
    QueryAnalysis, Recycled, RunPhase,
};
use meridian_admin::{
    AlertFilter, ApiError, Control, ControlFuture, Mutation, PublishedView, StatusCode,
};
use meridian_config::Config;
use meridian_control::coordination::Coordination;
use meridian_control::monitor::MonitorHandle;
use meridian_control::store::{self, AlertQuery, AlertRecord, FailoverRecord, SEVERITIES, Store};
use meridian_core::classify::Classifier;
use meridian_core::failover::Command;
use meridian_core::status::ClusterStatus;
use meridian_core::topology::NodeId;
use serde_json::Value;

use crate::performance::Throughput;
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
    /// The configuration in effect (for export and query analysis).
    pub config: Arc<Config>,
    /// The proxy's classifier, for query analysis.
    pub classifier: Arc<Classifier>,
    pub throughput: Arc<Throughput>,
    /// With several instances: the etcd coordination.
    pub coordination: Option<Coordination>,
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

    /// The nodes of region `name` (a 404 naming the regions when there is none).
    fn region_nodes(&self, name: &str) -> Result<Vec<NodeId>, ApiError> {
        let region = self.region(name)?;
        Ok(self
            .monitor
            .status()
            .nodes
            .iter()
            .filter(|node| node.region == region)
            .map(|node| node.id)
            .collect())
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

    async fn run(&self, command: Command) -> Result<FailoverRun, ApiError> {
        let id = match self.monitor.command(command).await {
            Ok(Some(id)) => id,
            // Only resuming automatic failover is done at once, and the API does not send it.
            Ok(None) => {
                return Err(ApiError::internal(
                    "the failover machine accepted the command but started no run",
                ));
            }
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
        Ok(run_of(&record))
    }
}

impl Control for Operator {
    fn metrics(&self) -> String {
        self.telemetry.metrics()
    }

    fn status(&self) -> Arc<ClusterStatus> {
        self.monitor.status()
    }

    fn pools(&self) -> Vec<PoolState> {
        self.telemetry
            .proxy
            .pool_reports()
            .into_iter()
            .map(|pool| PoolState {
                in_use: pool.stats.in_use(),
                node: pool.node,
                user: pool.user,
                database: pool.database,
                open: pool.stats.open,
                idle: pool.stats.idle,
                waiting: pool.stats.waiting,
                checkouts: pool.stats.checkouts,
                checkout_timeouts: pool.stats.timeouts,
                connects: pool.stats.connects,
                connect_failures: pool.stats.connect_failures,
            })
            .collect()
    }

    fn waiting_for_primary(&self) -> usize {
        self.telemetry.proxy.waiting_for_primary()
    }

    fn alerts(&self, filter: AlertFilter) -> Result<Vec<Alert>, ApiError> {
        let query = AlertQuery {
            limit: filter.limit.unwrap_or(100),
            min_severity: filter.severity,
            active: filter.active,
            node: filter.node,
        };
        match self.store.alerts(&query) {
            Ok(alerts) => Ok(alerts.iter().map(alert_of).collect()),
            Err(e) if e.is_invalid_query() => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("{e}; severity is one of {}", SEVERITIES.join(", ")),
            )),
            Err(e) => Err(ApiError::internal(format!("cannot read the alerts: {e}"))),
        }
    }

    fn failover_history(&self, limit: usize) -> Result<Vec<FailoverRun>, ApiError> {
        let records = self
            .store
            .failover_history(limit)
            .map_err(|e| ApiError::internal(format!("cannot read the failover history: {e}")))?;
        Ok(records.iter().map(run_of).collect())
    }

    fn probe_history(
        &self,
        node: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ProbeSample>, ApiError> {
        if let Some(node) = node {
            self.node_id(node)?;
        }
        let samples = self
            .store
            .probe_history(node, limit)
            .map_err(|e| ApiError::internal(format!("cannot read the probe history: {e}")))?;
        Ok(samples.into_iter().map(probe_of).collect())
    }

    fn performance(&self) -> Performance {
        crate::performance::performance(&self.monitor, &self.telemetry.proxy, &self.throughput)
    }

    fn config(&self) -> Value {
        serde_json::to_value(&*self.config)
            .unwrap_or_else(|e| Value::String(format!("the configuration could not be shown: {e}")))
    }

    fn analyze(&self, query: &str) -> Result<QueryAnalysis, ApiError> {
        Ok(crate::analyze::analysis(
            &self.classifier,
            &self.config.routing,
            &self.monitor.view().borrow(),
            query,
        ))
    }

    fn mutate(&self, mutation: Mutation) -> ControlFuture<'_, Result<FailoverRun, ApiError>> {
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

    fn probe_all(&self) -> ControlFuture<'_, Arc<ClusterStatus>> {
        Box::pin(self.monitor.probe_now(None))
    }

    fn reconnect(&self, region: &str) -> ControlFuture<'_, Result<Arc<ClusterStatus>, ApiError>> {
        let nodes = self.region_nodes(region);
        Box::pin(async move { Ok(self.monitor.reconnect(&nodes?).await) })
    }

    fn recycle(&self, region: Option<&str>) -> Result<Recycled, ApiError> {
        let nodes = region.map(|region| self.region_nodes(region)).transpose()?;
        let report = self.telemetry.proxy.recycle(nodes.as_deref());
        Ok(Recycled {
            pools: report.pools,
            idle: report.idle,
            in_use: report.in_use,
        })
    }

    fn backups(&self) -> Option<meridian_admin::model::Backups> {
        self.telemetry
            .backups
            .as_ref()
            .map(crate::backups::document)
    }

    fn archiving(&self) -> Option<Archiving> {
        let watch = self.telemetry.archiving.as_ref()?;
        Some(crate::archiving::document(
            &watch.report(),
            &watch.archive_dir,
            watch.max_rpo,
        ))
    }

    fn coordination(&self) -> Option<(CoordinationInfo, Option<PublishedView>)> {
        let coordination = self.coordination.as_ref()?;
        let state = coordination.state.borrow().clone();
        let info = CoordinationInfo {
            instance: state.instance.clone(),
            leader: state.leader.clone(),
            leading: state.leading,
            session: state.session,
            fenced: state.fenced,
            etcd_down: state.etcd_down,
            last_error: state.last_error.clone(),
        };
        // The routed view carries the published generation and primary once one was read.
        let published = state.generation.map(|_| {
            let view = coordination.routed.borrow();
            PublishedView {
                generation: view.generation,
                primary: view
                    .primary
                    .and_then(|id| view.node(id))
                    .map(|n| n.name.to_string()),
                paused: view.paused,
            }
        });
        Some((info, published))
    }
}

/// A run record as the API shows it; times in milliseconds since the epoch, phases with
/// their durations.
pub fn run_of(record: &FailoverRecord) -> FailoverRun {
    FailoverRun {
        id: record.id,
        kind: record.kind.clone(),
        reason: record.reason.clone(),
        old_primary: record.old_primary.clone(),
        new_primary: record.new_primary.clone(),
        generation: record.generation,
        started_at_ms: record.started_at_ms,
        finished_at_ms: record.finished_at_ms,
        duration_ms: record
            .finished_at_ms
            .map(|end| end.saturating_sub(record.started_at_ms)),
        outcome: record.outcome.clone(),
        phases: record
            .phases
            .iter()
            .map(|p| RunPhase {
                name: p.name.clone(),
                started_at_ms: p.started_at_ms,
                finished_at_ms: p.finished_at_ms,
                duration_ms: p.finished_at_ms.saturating_sub(p.started_at_ms),
                outcome: p.outcome.clone(),
            })
            .collect(),
        ranking: record.ranking.clone(),
    }
}

/// An alert as the API shows it.
fn alert_of(alert: &AlertRecord) -> Alert {
    Alert {
        id: alert.id,
        kind: alert.kind.clone(),
        node: alert.node.clone(),
        region: alert.region.clone(),
        severity: alert.severity.clone(),
        value: alert.value,
        threshold: alert.threshold,
        message: alert.message.clone(),
        raised_at_ms: alert.raised_at_ms,
        updated_at_ms: alert.updated_at_ms,
        resolved_at_ms: alert.resolved_at_ms,
        active: alert.is_active(),
    }
}

/// A probe sample as the API shows it.
fn probe_of(sample: store::ProbeSample) -> ProbeSample {
    ProbeSample {
        node: sample.node,
        region: sample.region,
        at_ms: sample.at_ms,
        ok: sample.ok,
        latency_ms: sample.latency_ms,
        connect_ms: sample.connect_ms,
        role: sample.role,
        health: sample.health,
        lag_bytes: sample.lag_bytes,
        lag_seconds: sample.lag_seconds,
        error: sample.error,
    }
}
