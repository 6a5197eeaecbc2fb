//! Node control does what a crash, a hang, a promotion or a restart does to a real server.

use std::time::Duration;

use meridian_testkit::{Check, TestCluster, wait_until};

const TIMEOUT: Duration = Duration::from_secs(30);

/// The process state letter from `/proc/PID/stat` (`T` stopped, `Z` zombie), or `None` if the
/// process does not exist.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// PIDs of the processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let ppid = stat[close + 1..].split_whitespace().nth(1);
        if ppid == Some(&*pid.to_string()) {
            children.push(child);
        }
    }
    children
}

#[tokio::test]
async fn kill_is_a_crash_and_start_recovers_committed_data() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let node = cluster.primary();
    node.execute("CREATE TABLE t (id int); INSERT INTO t VALUES (42)")
        .await
        .unwrap();
    let session = node.client().await.unwrap();
    let postmaster = node.pid().unwrap();
    let children = children_of(postmaster);
    assert!(!children.is_empty(), "a running server has child processes");

    node.kill();

    assert!(!node.is_running());
    assert_eq!(node.pid(), None);
    for pid in std::iter::once(postmaster).chain(children) {
        assert_eq!(process_state(pid), None, "process {pid} survived the kill");
    }
    let error = session.simple_query("SELECT 1").await.unwrap_err();
    assert!(
        error.is_closed(),
        "the session should be cut, got: {error:?}"
    );
    assert!(
        node.client().await.is_err(),
        "a killed server accepted a connection"
    );

    node.start().await.unwrap();
    assert_eq!(
        node.query_one("SELECT id FROM t").await.unwrap().as_deref(),
        Some("42")
    );
    assert!(
        std::fs::read_to_string(node.log_path())
            .unwrap()
            .contains("database system was interrupted"),
        "the restart after a kill should run crash recovery"
    );
}

#[tokio::test]
async fn pause_hangs_every_process_and_resume_brings_it_back() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let node = cluster.primary();
    let session = node.client().await.unwrap();
    let postmaster = node.pid().unwrap();

    node.pause();

    for pid in std::iter::once(postmaster).chain(children_of(postmaster)) {
        assert_eq!(
            process_state(pid),
            Some('T'),
            "process {pid} is not stopped"
        );
    }
    let query = tokio::spawn(async move {
        let rows = session.simple_query("SELECT 1").await.map(|_| ());
        (session, rows)
    });
    // Every process is stopped (checked above); this only shows the client-side symptom: no
    // answer within a moment in which a live server answers in well under a millisecond.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!query.is_finished(), "a paused server answered a query");

    node.resume();

    let (_session, answered) = tokio::time::timeout(TIMEOUT, query).await.unwrap().unwrap();
    answered.unwrap();
    for pid in std::iter::once(postmaster).chain(children_of(postmaster)) {
        assert_ne!(
            process_state(pid),
            Some('T'),
            "process {pid} is still stopped"
        );
    }
    assert!(node.is_running());
}

#[tokio::test]
async fn promote_turns_a_replica_into_a_writable_primary_on_a_new_timeline() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    let replica = cluster.node("main-2");
    let timeline = |node: &'static str| {
        let node = cluster.node(node);
        async move {
            node.query_one("SELECT timeline_id FROM pg_control_checkpoint()")
                .await
                .unwrap()
                .unwrap()
                .parse::<u32>()
                .unwrap()
        }
    };
    let before = timeline("main-2").await;
    assert!(replica.is_in_recovery().await.unwrap());
    assert!(
        replica.execute("CREATE TABLE t (id int)").await.is_err(),
        "a replica took a write"
    );

    replica.promote().await.unwrap();

    assert!(!replica.is_in_recovery().await.unwrap());
    replica
        .execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    replica.execute("CHECKPOINT").await.unwrap();
    assert!(timeline("main-2").await > before);
}

#[tokio::test]
async fn stop_and_start_keep_the_data_and_the_port() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let node = cluster.primary();
    let port = node.port();
    node.execute("CREATE TABLE t (id int); INSERT INTO t VALUES (7)")
        .await
        .unwrap();

    node.stop().await.unwrap();
    assert!(!node.is_running());
    assert!(
        node.client().await.is_err(),
        "a stopped server accepted a connection"
    );
    assert!(
        node.stop().await.is_err(),
        "stopping a stopped server should say so"
    );

    node.start().await.unwrap();
    assert_eq!(node.port(), port);
    assert_eq!(
        node.query_one("SELECT id FROM t").await.unwrap().as_deref(),
        Some("7")
    );
    assert!(
        node.start().await.is_err(),
        "starting a running server should say so"
    );
}

#[tokio::test]
async fn lsn_follows_writes_on_the_primary_and_replay_on_replicas() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    let primary = cluster.primary();
    let replica = cluster.node("main-2");
    let before = primary.lsn().await.unwrap();
    primary
        .execute("CREATE TABLE t AS SELECT generate_series(1, 10000) AS id")
        .await
        .unwrap();
    let after = primary.lsn().await.unwrap();
    assert!(after.bytes_after(before) > 100_000, "{before} -> {after}");

    let replayed = wait_until(TIMEOUT, "the replica to replay the write", || async {
        match replica.lsn().await {
            Ok(lsn) => Check::when(lsn >= after, lsn, lsn.to_string()),
            Err(e) => Check::NotYet(format!("{e:#}")),
        }
    })
    .await
    .unwrap();
    assert!(replayed >= after);
}
