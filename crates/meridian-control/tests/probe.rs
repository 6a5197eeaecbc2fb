//! Probes of a real multi-region cluster report what the servers say: roles, timelines, WAL
//! positions, who streams from whom, and failures by their strength.

use std::sync::Arc;
use std::time::Duration;

use meridian_control::credentials::Credentials;
use meridian_control::probe::{ProbeTarget, Prober};
use meridian_core::backoff::Backoff;
use meridian_core::observation::ProbeError;
use meridian_core::topology::NodeId;
use meridian_testkit::{Node, TestCluster};
use meridian_tls::ServerTls;

fn prober(node: &Node, id: u16) -> Prober {
    Prober::new(
        ProbeTarget {
            node: NodeId(id),
            name: Arc::from(node.name()),
            host: Arc::from("127.0.0.1"),
            port: node.port(),
            tls: ServerTls::Disable,
        },
        Credentials {
            user: "postgres".into(),
            password: None,
            database: "postgres".into(),
        },
        Duration::from_secs(2),
        Backoff {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(32),
            attempts: 5,
            then: Duration::from_secs(1),
            jitter: 0.2,
        },
    )
}

#[tokio::test]
async fn probes_report_roles_positions_and_the_streaming_topology() {
    let cluster = TestCluster::builder()
        .region("us-east", 2)
        .region("eu-west", 2)
        .start()
        .await
        .unwrap();
    cluster
        .primary()
        .execute("CREATE TABLE t AS SELECT generate_series(1, 1000) AS id")
        .await
        .unwrap();
    cluster
        .wait_replicated(Duration::from_secs(30))
        .await
        .unwrap();

    let written = cluster.primary().lsn().await.unwrap();
    let primary = prober(cluster.primary(), 0).probe(false).await.unwrap();
    assert!(!primary.in_recovery);
    assert_eq!(primary.timeline, Some(1));
    let current = primary
        .current_lsn
        .expect("a primary reports its WAL position");
    assert!(
        current >= written,
        "{current} is before {written}, written before the probe"
    );
    assert_eq!(primary.replay_lsn, None);
    assert!(primary.wal_receiver.is_none());
    let mut downstream: Vec<&str> = primary
        .downstream
        .iter()
        .map(|d| d.application_name.as_str())
        .collect();
    downstream.sort();
    assert_eq!(downstream, ["eu-west-1", "us-east-2"]);
    assert!(primary.downstream.iter().all(|d| d.state == "streaming"));
    assert!(primary.max_connections >= 100);
    assert!(primary.connections >= 1, "the probe's own session counts");

    let leader = cluster.node("eu-west-1");
    let replica = prober(leader, 2).probe(false).await.unwrap();
    assert!(replica.in_recovery);
    assert_eq!(replica.timeline, Some(1));
    assert!(replica.replay_lsn.unwrap() >= current);
    assert!(replica.receive_lsn.unwrap() >= current);
    let receiver = replica
        .wal_receiver
        .expect("a replica reports its WAL receiver");
    assert!(receiver.is_streaming());
    assert_eq!(receiver.sender_port, Some(cluster.primary().port()));
    assert!(receiver.last_message_at.is_some());
    assert_eq!(
        replica
            .downstream
            .iter()
            .map(|d| d.application_name.as_str())
            .collect::<Vec<_>>(),
        ["eu-west-2"],
        "the cascaded replica streams from its region leader"
    );

    let cascaded = prober(cluster.node("eu-west-2"), 3)
        .probe(false)
        .await
        .unwrap();
    assert_eq!(
        cascaded.wal_receiver.unwrap().sender_port,
        Some(leader.port())
    );
}

#[tokio::test]
async fn a_killed_node_is_refused_strongly_and_a_paused_one_times_out() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    let mut killed = prober(cluster.node("main-2"), 1);
    killed.probe(false).await.unwrap();
    cluster.node("main-2").kill();
    let error = killed.probe(false).await.unwrap_err();
    assert!(error.is_strong(), "{error:?}");

    // Until the backoff allows another attempt, probes keep reporting the failure without
    // reconnecting; a forced probe reconnects at once.
    cluster.node("main-2").start().await.unwrap();
    assert!(
        killed.probe(false).await.is_err(),
        "the backoff should hold the next attempt"
    );
    killed.probe(true).await.expect("a forced probe reconnects");

    let mut paused = prober(cluster.primary(), 0);
    paused.probe(false).await.unwrap();
    cluster.primary().pause();
    let error = paused.probe(false).await.unwrap_err();
    assert_eq!(error, ProbeError::Timeout);
    cluster.primary().resume();
    paused
        .probe(true)
        .await
        .expect("probes recover once the server answers");
}
