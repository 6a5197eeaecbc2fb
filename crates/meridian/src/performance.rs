//! `GET /api/database/performance`: per-node latency, throughput and routing.
//!
//! Routing counts only grow, so throughput is a difference over time: a sampler task records
//! each node's routed total once a second and keeps the last [`WINDOW`]; a rate is the
//! difference between the newest sample and the oldest one kept, over the time between them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_admin::model::{NodePerformance, Performance};
use meridian_control::monitor::MonitorHandle;
use meridian_core::topology::NodeId;
use meridian_proxy::Proxy;
use meridian_proxy::router::{NodeRouting, RoutingReport};

/// How far back rates look.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Each node's routed total at one moment.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    at: Instant,
    totals: Vec<(NodeId, u64)>,
}

/// Routed totals sampled once a second over the last [`WINDOW`].
#[derive(Debug, Default)]
pub struct Throughput {
    samples: Mutex<VecDeque<Sample>>,
}

impl Throughput {
    /// Samples `proxy` once a second, for as long as the returned task runs.
    pub fn spawn(proxy: Proxy) -> Arc<Throughput> {
        let throughput = Arc::new(Throughput::default());
        let sampler = Arc::downgrade(&throughput);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(throughput) = sampler.upgrade() else {
                    return;
                };
                throughput.record(Instant::now(), &proxy.routing_report());
            }
        });
        throughput
    }

    fn record(&self, at: Instant, report: &RoutingReport) {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples.push_back(Sample {
            at,
            totals: totals(report),
        });
        // Keep one sample at or beyond the window's start, so a rate covers the full window.
        while samples.len() > 2 && at.duration_since(samples[1].at) >= WINDOW {
            samples.pop_front();
        }
    }

    /// Per node, transactions per second between the oldest sample kept and `report` (now),
    /// and the seconds that covers.
    fn rates(&self, now: Instant, report: &RoutingReport) -> (f64, BTreeMap<NodeId, f64>) {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let Some(oldest) = samples.front() else {
            return (0.0, BTreeMap::new());
        };
        rates(
            oldest,
            &Sample {
                at: now,
                totals: totals(report),
            },
        )
    }
}

fn totals(report: &RoutingReport) -> Vec<(NodeId, u64)> {
    report
        .nodes
        .iter()
        .map(|node| (node.node, routed_total(node)))
        .collect()
}

/// Transactions routed to a node since start, for every reason.
fn routed_total(node: &NodeRouting) -> u64 {
    node.routed.iter().map(|(_, n)| n).sum()
}

/// Rates between two samples: (seconds between them, per-node transactions per second).
fn rates(older: &Sample, newer: &Sample) -> (f64, BTreeMap<NodeId, f64>) {
    let seconds = newer.at.duration_since(older.at).as_secs_f64();
    if seconds <= 0.0 {
        return (0.0, BTreeMap::new());
    }
    let before: BTreeMap<NodeId, u64> = older.totals.iter().copied().collect();
    let per_node = newer
        .totals
        .iter()
        .map(|&(node, total)| {
            let earlier = before.get(&node).copied().unwrap_or(0);
            (node, total.saturating_sub(earlier) as f64 / seconds)
        })
        .collect();
    (seconds, per_node)
}

/// The performance document now.
pub fn performance(monitor: &MonitorHandle, proxy: &Proxy, throughput: &Throughput) -> Performance {
    let status = monitor.status();
    let counters = monitor.counters();
    let report = proxy.routing_report();
    let (window_seconds, per_second) = throughput.rates(Instant::now(), &report);
    let window_total: f64 = per_second.values().sum();
    let all_time: u64 = report.nodes.iter().map(routed_total).sum();
    let nodes = status
        .nodes
        .iter()
        .map(|node| {
            let routing = report.nodes.iter().find(|r| r.node == node.id);
            let transactions = routing.map_or(0, routed_total);
            let rate = per_second.get(&node.id).copied().unwrap_or(0.0);
            let share = if window_total > 0.0 {
                rate / window_total
            } else if all_time > 0 {
                transactions as f64 / all_time as f64
            } else {
                0.0
            };
            let latency = counters.latency.get(&*node.name);
            NodePerformance {
                node: node.name.to_string(),
                region: node.region.to_string(),
                role: node.role.as_str().to_owned(),
                latency_ms: node.latency.map(|l| l.as_secs_f64() * 1000.0),
                mean_latency_ms: latency
                    .filter(|h| h.count > 0)
                    .map(|h| h.sum / h.count as f64 * 1000.0),
                transactions,
                transactions_per_second: rate,
                share,
                fallbacks: routing.map_or(0, |r| {
                    r.routed
                        .iter()
                        .filter(|(reason, _)| reason.is_fallback())
                        .map(|(_, n)| n)
                        .sum()
                }),
                in_flight: routing.map_or(0, |r| r.in_flight),
                circuit_open: routing.is_some_and(|r| r.circuit_open),
                rerouted: routing.map_or(0, |r| r.rerouted),
                reasons: routing
                    .map(|r| {
                        r.routed
                            .iter()
                            .filter(|(_, n)| *n > 0)
                            .map(|(reason, n)| (reason.as_str().to_owned(), *n))
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        })
        .collect();
    Performance {
        window_seconds,
        transactions_per_second: window_total,
        nodes,
        pins: report
            .pins
            .iter()
            .map(|(reason, n)| (crate::telemetry::pin_str(*reason).to_owned(), *n))
            .collect(),
        read_only_retries: report.read_only_retries,
        causal_waits: report.causal_waits,
        causal_timeouts: report.causal_timeouts,
        no_replica_failures: report.no_replica_failures,
        waiting_for_primary: proxy.waiting_for_primary(),
    }
}

#[cfg(test)]
mod tests {
    use meridian_core::routing::RouteReason;

    use super::*;

    fn report(counts: &[(u16, u64)]) -> RoutingReport {
        RoutingReport {
            nodes: counts
                .iter()
                .map(|&(id, n)| NodeRouting {
                    node: NodeId(id),
                    routed: vec![(RouteReason::ALL[0], n)],
                    in_flight: 0,
                    circuit_open: false,
                    rerouted: 0,
                })
                .collect(),
            pins: Vec::new(),
            read_only_retries: 0,
            causal_waits: 0,
            causal_timeouts: 0,
            no_replica_failures: 0,
        }
    }

    #[test]
    fn rates_are_differences_over_the_time_between_samples() {
        let start = Instant::now();
        let throughput = Throughput::default();
        throughput.record(start, &report(&[(0, 100), (1, 0)]));
        let (seconds, rates) = throughput.rates(
            start + Duration::from_secs(2),
            &report(&[(0, 300), (1, 50)]),
        );
        assert_eq!(seconds, 2.0);
        assert_eq!(rates[&NodeId(0)], 100.0);
        assert_eq!(rates[&NodeId(1)], 25.0);
    }

    #[test]
    fn samples_older_than_the_window_are_dropped_but_one_spans_it() {
        let start = Instant::now();
        let throughput = Throughput::default();
        for second in 0..30u64 {
            throughput.record(
                start + Duration::from_secs(second),
                &report(&[(0, second * 10)]),
            );
        }
        let kept = throughput.samples.lock().unwrap().len();
        assert_eq!(kept, WINDOW.as_secs() as usize + 1);
        let (seconds, rates) =
            throughput.rates(start + Duration::from_secs(30), &report(&[(0, 300)]));
        assert_eq!(seconds, WINDOW.as_secs_f64() + 1.0);
        assert_eq!(rates[&NodeId(0)], 10.0);
    }

    #[test]
    fn no_samples_or_no_time_means_no_rate() {
        let throughput = Throughput::default();
        let now = Instant::now();
        assert_eq!(
            throughput.rates(now, &report(&[(0, 5)])),
            (0.0, BTreeMap::new())
        );
        throughput.record(now, &report(&[(0, 5)]));
        assert_eq!(throughput.rates(now, &report(&[(0, 9)])).0, 0.0);
    }
}
