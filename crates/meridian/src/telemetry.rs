//! The metrics Meridian exposes, read from the monitor's and the proxy's snapshots at each
//! scrape (nothing is counted twice, and there is no global recorder).
//!
//! Names follow the Prometheus conventions: `meridian_` prefix, base units (seconds, bytes),
//! `_total` for counters. Every node metric carries `node` and `region` labels.

use std::sync::Arc;

use meridian_backup::watch::CatalogWatch;
use meridian_control::archiving::ArchiveWatch;
use meridian_control::monitor::{LATENCY_BUCKETS, MonitorHandle, health_str, role_str};
use meridian_control::store::Store;
use meridian_core::archiving::ArchiveState;
use meridian_core::classify::PinReason;
use meridian_core::topology::{Health, Role};
use meridian_proxy::Proxy;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// What the operator listener reads.
#[derive(Clone)]
pub struct Telemetry {
    pub monitor: MonitorHandle,
    pub proxy: Proxy,
    pub store: Arc<dyn Store>,
    /// The watch over the primary's WAL archiving, when a WAL archive is configured.
    pub archiving: Option<ArchiveWatch>,
    /// The backup catalog, re-read on an interval, when a backup location is configured.
    pub backups: Option<CatalogWatch>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Telemetry")
    }
}

impl Telemetry {
    /// Everything measured, in the Prometheus text exposition format.
    pub fn metrics(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.clone()));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}

type Labels = Vec<(&'static str, String)>;

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(Labels, f64)],
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in values {
        ConstGauge::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(Labels, u64)],
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in values {
        ConstCounter::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for Telemetry {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let status = self.monitor.status();
        let counters = self.monitor.counters();
        let node_labels = |name: &str, region: &str| -> Labels {
            vec![("node", name.to_owned()), ("region", region.to_owned())]
        };
        let nodes = &status.nodes;

        gauge(
            &mut encoder,
            "meridian_node_up",
            "1 when the node answers probes (its health is not down).",
            &nodes
                .iter()
                .map(|n| {
                    (
                        node_labels(&n.name, &n.region),
                        f64::from(u8::from(
                            n.health != Health::Down && n.health != Health::Unknown,
                        )),
                    )
                })
                .collect::<Vec<_>>(),
        )?;
        let mut health = Vec::new();
        let mut role = Vec::new();
        for n in nodes {
            for state in [
                Health::Healthy,
                Health::Degraded,
                Health::Down,
                Health::Unknown,
            ] {
                let mut labels = node_labels(&n.name, &n.region);
                labels.push(("state", health_str(state).to_owned()));
                health.push((labels, f64::from(u8::from(n.health == state))));
            }
            for r in [Role::Primary, Role::Replica, Role::Unknown] {
                let mut labels = node_labels(&n.name, &n.region);
                labels.push(("role", role_str(r).to_owned()));
                role.push((labels, f64::from(u8::from(n.role == r))));
            }
        }
        gauge(
            &mut encoder,
            "meridian_node_health",
            "The node's judged health: 1 for the current state.",
            &health,
        )?;
        gauge(
            &mut encoder,
            "meridian_node_role",
            "The node's observed role: 1 for the current role.",
            &role,
        )?;
        gauge(
            &mut encoder,
            "meridian_node_replication_lag_bytes",
            "WAL the primary wrote that the replica has not replayed.",
            &nodes
                .iter()
                .filter_map(|n| Some((node_labels(&n.name, &n.region), n.lag?.bytes as f64)))
                .collect::<Vec<_>>(),
        )?;
        gauge(
            &mut encoder,
            "meridian_node_replication_lag_seconds",
            "How long ago the primary was where the replica is now (0 when caught up).",
            &nodes
                .iter()
                .filter_map(|n| {
                    Some((
                        node_labels(&n.name, &n.region),
                        n.lag?.seconds.as_secs_f64(),
                    ))
                })
                .collect::<Vec<_>>(),
        )?;
        gauge(
            &mut encoder,
            "meridian_node_connect_latency_seconds",
            "How long the last opening of the probe's connection took (TCP, TLS, authentication).",
            &nodes
                .iter()
                .filter_map(|n| {
                    Some((
                        node_labels(&n.name, &n.region),
                        n.connect_latency?.as_secs_f64(),
                    ))
                })
                .collect::<Vec<_>>(),
        )?;
        gauge(
            &mut encoder,
            "meridian_node_connections",
            "Client backends on the node, as its last probe saw.",
            &nodes
                .iter()
                .map(|n| (node_labels(&n.name, &n.region), f64::from(n.connections)))
                .collect::<Vec<_>>(),
        )?;
        counter(
            &mut encoder,
            "meridian_node_probes",
            "Probes of the node.",
            &nodes
                .iter()
                .map(|n| (node_labels(&n.name, &n.region), n.probes))
                .collect::<Vec<_>>(),
        )?;
        counter(
            &mut encoder,
            "meridian_node_probe_errors",
            "Probes of the node that failed.",
            &nodes
                .iter()
                .map(|n| (node_labels(&n.name, &n.region), n.probe_failures))
                .collect::<Vec<_>>(),
        )?;
        {
            let mut metric = encoder.encode_descriptor(
                "meridian_node_probe_latency_seconds",
                "Round trip of successful probe queries.",
                None,
                MetricType::Histogram,
            )?;
            for n in nodes {
                let Some(histogram) = counters.latency.get(&*n.name) else {
                    continue;
                };
                // Per-bucket counts (the encoder accumulates them), then the overflow bucket.
                let mut previous = 0;
                let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
                    .iter()
                    .zip(histogram.buckets)
                    .map(|(&bound, cumulative)| {
                        let count = cumulative - previous;
                        previous = cumulative;
                        (bound, count)
                    })
                    .collect();
                buckets.push((f64::INFINITY, histogram.count - previous));
                let labels = node_labels(&n.name, &n.region);
                metric
                    .encode_family(&labels)?
                    .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                        histogram.sum,
                        histogram.count,
                        &buckets,
                        None,
                    )?;
            }
        }
        gauge(
            &mut encoder,
            "meridian_cluster_generation",
            "Increases whenever the primary changes.",
            &[(Vec::new(), status.generation as f64)],
        )?;
        gauge(
            &mut encoder,
            "meridian_cluster_primary",
            "1 for the node taking writes.",
            &status
                .primary
                .and_then(|id| status.node(id))
                .map(|n| vec![(node_labels(&n.name, &n.region), 1.0)])
                .unwrap_or_default(),
        )?;
        gauge(
            &mut encoder,
            "meridian_cluster_paused",
            "1 while a failover or switchover holds transactions that need the primary.",
            &[(Vec::new(), f64::from(u8::from(status.paused)))],
        )?;
        gauge(
            &mut encoder,
            "meridian_failover_halted",
            "1 while automatic failover is halted after a failed promotion (an operator resumes it).",
            &[(
                Vec::new(),
                f64::from(u8::from(status.failover.halted.is_some())),
            )],
        )?;
        gauge(
            &mut encoder,
            "meridian_node_needs_rejoin",
            "1 for an old primary that gets no traffic until it rejoins as a replica.",
            &nodes
                .iter()
                .map(|n| {
                    (
                        node_labels(&n.name, &n.region),
                        f64::from(u8::from(n.needs_rejoin)),
                    )
                })
                .collect::<Vec<_>>(),
        )?;
        counter(
            &mut encoder,
            "meridian_failover_runs",
            "Failovers and switchovers finished since start, by kind and outcome.",
            &counters
                .runs_finished
                .iter()
                .map(|((kind, outcome), n)| {
                    (
                        vec![("kind", kind.clone()), ("outcome", outcome.clone())],
                        *n,
                    )
                })
                .collect::<Vec<_>>(),
        )?;
        let mut active: std::collections::BTreeMap<(&str, &str), u64> =
            std::collections::BTreeMap::new();
        for alert in &counters.active_alerts {
            *active
                .entry((alert.kind.as_str(), alert.severity.as_str()))
                .or_default() += 1;
        }
        gauge(
            &mut encoder,
            "meridian_alerts_active",
            "Active alerts by type and severity.",
            &active
                .iter()
                .map(|((kind, severity), n)| {
                    (
                        vec![
                            ("type", kind.to_string()),
                            ("severity", severity.to_string()),
                        ],
                        *n as f64,
                    )
                })
                .collect::<Vec<_>>(),
        )?;
        counter(
            &mut encoder,
            "meridian_alerts_raised",
            "Alerts raised since start, by type and severity.",
            &counters
                .alerts_raised
                .iter()
                .map(|((kind, severity), n)| {
                    (
                        vec![
                            ("type", kind.as_str().to_owned()),
                            ("severity", severity.as_str().to_owned()),
                        ],
                        *n,
                    )
                })
                .collect::<Vec<_>>(),
        )?;
        let pools = self.proxy.pool_reports();
        let pool_labels = |p: &meridian_proxy::PoolReport| -> Labels {
            vec![
                ("node", p.node.clone()),
                ("user", p.user.clone()),
                ("database", p.database.clone()),
            ]
        };
        let mut connections = Vec::new();
        for p in &pools {
            let mut idle = pool_labels(p);
            idle.push(("state", "idle".to_owned()));
            connections.push((idle, p.stats.idle as f64));
            let mut busy = pool_labels(p);
            busy.push(("state", "in_use".to_owned()));
            connections.push((busy, p.stats.in_use() as f64));
        }
        gauge(
            &mut encoder,
            "meridian_pool_connections",
            "Server connections of each pool, idle or in use.",
            &connections,
        )?;
        gauge(
            &mut encoder,
            "meridian_pool_waiting",
            "Transactions waiting for a server connection.",
            &pools
                .iter()
                .map(|p| (pool_labels(p), p.stats.waiting as f64))
                .collect::<Vec<_>>(),
        )?;
        counter(
            &mut encoder,
            "meridian_pool_checkouts",
            "Server connections handed to transactions.",
            &pools
                .iter()
                .map(|p| (pool_labels(p), p.stats.checkouts))
                .collect::<Vec<_>>(),
        )?;
        counter(
            &mut encoder,
            "meridian_pool_checkout_timeouts",
            "Transactions refused with 53300 after the checkout timeout.",
            &pools
                .iter()
                .map(|p| (pool_labels(p), p.stats.timeouts))
                .collect::<Vec<_>>(),
        )?;
        counter(
            &mut encoder,
            "meridian_pool_connects",
            "Server connections opened.",
            &pools
                .iter()
                .map(|p| (pool_labels(p), p.stats.connects))
                .collect::<Vec<_>>(),
        )?;
        counter(
            &mut encoder,
            "meridian_pool_connect_failures",
            "Server connections that could not be opened.",
            &pools
                .iter()
                .map(|p| (pool_labels(p), p.stats.connect_failures))
                .collect::<Vec<_>>(),
        )?;
        let routing = self.proxy.routing_report();
        let routed_labels = |id: meridian_core::topology::NodeId| -> Option<Labels> {
            status.node(id).map(|n| node_labels(&n.name, &n.region))
        };
        let mut routed = Vec::new();
        let mut in_flight = Vec::new();
        let mut circuit = Vec::new();
        let mut rerouted = Vec::new();
        for node in &routing.nodes {
            let Some(labels) = routed_labels(node.node) else {
                continue;
            };
            for (reason, n) in &node.routed {
                let mut with_reason = labels.clone();
                with_reason.push(("reason", reason.as_str().to_owned()));
                with_reason.push(("fallback", reason.is_fallback().to_string()));
                routed.push((with_reason, *n));
            }
            in_flight.push((labels.clone(), f64::from(node.in_flight)));
            circuit.push((labels.clone(), f64::from(u8::from(node.circuit_open))));
            rerouted.push((labels, node.rerouted));
        }
        counter(
            &mut encoder,
            "meridian_routed",
            "Transactions routed to each node, by reason; fallback=\"true\" for reads that went to the primary because no replica could take them.",
            &routed,
        )?;
        gauge(
            &mut encoder,
            "meridian_routing_in_flight",
            "Transactions running on each node through this proxy.",
            &in_flight,
        )?;
        gauge(
            &mut encoder,
            "meridian_routing_circuit_open",
            "1 while reads avoid the node after a connection to it failed.",
            &circuit,
        )?;
        counter(
            &mut encoder,
            "meridian_routing_connect_failures",
            "Reads routed elsewhere after a connection to the node failed.",
            &rerouted,
        )?;
        counter(
            &mut encoder,
            "meridian_session_pins",
            "Sessions pinned to their server connection, by reason.",
            &routing
                .pins
                .iter()
                .map(|(reason, n)| (vec![("reason", pin_str(*reason).to_owned())], *n))
                .collect::<Vec<_>>(),
        )?;
        counter(
            &mut encoder,
            "meridian_read_only_retries",
            "Reads a replica refused with 25006 (they write) that ran again on the primary.",
            &[(Vec::new(), routing.read_only_retries)],
        )?;
        counter(
            &mut encoder,
            "meridian_causal_waits",
            "Reads that checked a replica for the session's last write (read-your-writes).",
            &[(Vec::new(), routing.causal_waits)],
        )?;
        counter(
            &mut encoder,
            "meridian_causal_timeouts",
            "Of those, the reads that went to the primary after causal_read_timeout.",
            &[(Vec::new(), routing.causal_timeouts)],
        )?;
        counter(
            &mut encoder,
            "meridian_no_replica_failures",
            "Reads refused because no replica could serve them (primary_reads = never).",
            &[(Vec::new(), routing.no_replica_failures)],
        )?;
        counter(
            &mut encoder,
            "meridian_store_dropped_samples",
            "Probe samples the store dropped because its writer could not keep up.",
            &[(Vec::new(), self.store.dropped_samples())],
        )?;
        if let Some(watch) = &self.archiving {
            archive_metrics(&mut encoder, watch)?;
        }
        if let Some(watch) = &self.backups {
            let catalog = crate::backups::document(watch);
            let by_kind = |physical: Option<f64>, logical: Option<f64>| -> Vec<(Labels, f64)> {
                [("physical", physical), ("logical", logical)]
                    .into_iter()
                    .filter_map(|(kind, value)| Some((vec![("kind", kind.to_owned())], value?)))
                    .collect()
            };
            let count =
                |kind: &str| catalog.backups.iter().filter(|b| b.kind == kind).count() as f64;
            gauge(
                &mut encoder,
                "meridian_backups",
                "Complete backups in the catalog, by kind (as last read from the location).",
                &by_kind(Some(count("physical")), Some(count("logical"))),
            )?;
            gauge(
                &mut encoder,
                "meridian_backup_age_seconds",
                "Seconds since the newest backup of each kind was stored.",
                &by_kind(
                    catalog.last_physical_age_seconds,
                    catalog.last_logical_age_seconds,
                ),
            )?;
            gauge(
                &mut encoder,
                "meridian_backup_catalog_readable",
                "1 when the last reading of the backup catalog succeeded.",
                &[(
                    Vec::new(),
                    f64::from(u8::from(
                        catalog.checked_at_ms.is_some() && catalog.error.is_none(),
                    )),
                )],
            )?;
        }
        Ok(())
    }
}

/// The primary's WAL archiving, as the archive watch last judged it.
fn archive_metrics(encoder: &mut DescriptorEncoder, watch: &ArchiveWatch) -> std::fmt::Result {
    let report = watch.report();
    let state = report.judgement.as_ref().map(|j| j.state);
    let node: Labels = report
        .node
        .as_deref()
        .map(|name| vec![("node", name.to_owned())])
        .unwrap_or_default();
    let mut states: Vec<(Labels, f64)> = ArchiveState::ALL
        .iter()
        .map(|s| {
            (
                vec![("state", s.as_str().to_owned())],
                f64::from(u8::from(state == Some(*s))),
            )
        })
        .collect();
    states.push((
        vec![("state", "unknown".to_owned())],
        f64::from(u8::from(state.is_none())),
    ));
    gauge(
        encoder,
        "meridian_archive_state",
        "The primary's WAL archiving: 1 for the current state (off, healthy, behind, failing, \
         unknown when not checked).",
        &states,
    )?;
    gauge(
        encoder,
        "meridian_archive_max_rpo_seconds",
        "The RPO ceiling ([backup] max_rpo).",
        &[(Vec::new(), watch.max_rpo.as_secs_f64())],
    )?;
    let judged = |value: Option<f64>| -> Vec<(Labels, f64)> {
        value.map(|v| (node.clone(), v)).into_iter().collect()
    };
    let judgement = report.judgement.as_ref();
    let stats = report.stats.as_ref();
    gauge(
        encoder,
        "meridian_archive_rpo_seconds",
        "How old the oldest write not archived yet can be, on the primary.",
        &judged(judgement.and_then(|j| j.rpo).map(|rpo| rpo.as_secs_f64())),
    )?;
    gauge(
        encoder,
        "meridian_archive_unarchived_segments",
        "Whole WAL segments the primary wrote and has not archived.",
        &judged(judgement.map(|j| j.unarchived_segments as f64)),
    )?;
    gauge(
        encoder,
        "meridian_archive_last_archived_timestamp_seconds",
        "When the primary last archived a file (Unix time).",
        &judged(
            stats
                .and_then(|s| s.last_archived_time)
                .map(|t| t.0 as f64 / 1000.0),
        ),
    )?;
    let count = |value: Option<u64>| -> Vec<(Labels, u64)> {
        value.map(|v| (node.clone(), v)).into_iter().collect()
    };
    counter(
        encoder,
        "meridian_archive_archived",
        "Files the primary archived since its statistics were reset (pg_stat_archiver).",
        &count(stats.map(|s| s.archived_count)),
    )?;
    counter(
        encoder,
        "meridian_archive_failed",
        "Failed archive_command runs on the primary since its statistics were reset.",
        &count(stats.map(|s| s.failed_count)),
    )?;
    Ok(())
}

/// The snake_case name of a pin reason, for labels.
pub fn pin_str(reason: PinReason) -> &'static str {
    match reason {
        PinReason::TemporaryTable => "temporary_table",
        PinReason::SessionAdvisoryLock => "session_advisory_lock",
        PinReason::Listen => "listen",
        PinReason::HoldCursor => "hold_cursor",
        PinReason::PreparedStatement => "prepared_statement",
        PinReason::SessionSetting => "session_setting",
        PinReason::LoadedLibrary => "loaded_library",
    }
}
