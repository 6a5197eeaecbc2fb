//! What the control plane's integration tests share: monitor settings for a test-kit cluster.

use std::sync::Arc;
use std::time::Duration;

use meridian_control::credentials::Credentials;
use meridian_control::executor::{ExecNode, Executor};
use meridian_control::monitor::{MonitorSettings, MonitoredNode};
use meridian_core::alerts::AlertPolicy;
use meridian_core::backoff::Backoff;
use meridian_core::failover::FailoverPolicy;
use meridian_core::topology::NodeId;
use meridian_testkit::TestCluster;
use meridian_tls::{ServerTls, ServerTlsSet};

/// Every node's probe interval.
pub const INTERVAL: Duration = Duration::from_millis(250);

/// Settings for `cluster` with Meridian's default detection (3 probes, 200 ms confirmation);
/// `port_of` may route the monitor's connections to a node (probes and failover steps alike:
/// one process, one network path) through a link; `region_priority` per region name.
pub fn settings(
    cluster: &TestCluster,
    port_of: impl Fn(usize) -> u16,
    region_priority: impl Fn(&str) -> i32,
) -> MonitorSettings {
    let credentials = Credentials {
        user: "postgres".into(),
        password: None,
        database: "postgres".into(),
    };
    let nodes: Vec<MonitoredNode> = cluster
        .nodes()
        .iter()
        .enumerate()
        .map(|(i, node)| MonitoredNode {
            id: NodeId(i as u16),
            name: Arc::from(node.name()),
            region: Arc::from(node.region()),
            host: Arc::from("127.0.0.1"),
            port: port_of(i),
            no_failover: false,
            priority: 0,
            region_priority: region_priority(node.region()),
            probe_interval: INTERVAL,
        })
        .collect();
    let executor = Executor {
        nodes: cluster
            .nodes()
            .iter()
            .enumerate()
            .map(|(i, node)| ExecNode {
                id: NodeId(i as u16),
                name: Arc::from(node.name()),
                host: Arc::from("127.0.0.1"),
                port: port_of(i),
                tls: ServerTls::Disable,
                data_dir: Some(node.data_dir()),
                step_timeout: Duration::from_secs(20),
            })
            .collect(),
        credentials: credentials.clone(),
        pg_bin: None,
        rejoin_command: None,
        connect_timeout: Duration::from_secs(1),
    };
    MonitorSettings {
        nodes,
        credentials,
        tls: ServerTlsSet::uniform(ServerTls::Disable),
        probe_timeout: Duration::from_millis(800),
        backoff: Backoff {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(1),
            attempts: 3,
            then: INTERVAL,
            jitter: 0.0,
        },
        policy: AlertPolicy::default(),
        failover: FailoverPolicy {
            min_interval: Duration::ZERO,
            step_timeout: Duration::from_secs(25),
            ..FailoverPolicy::default()
        },
        executor,
        gate: None,
    }
}
