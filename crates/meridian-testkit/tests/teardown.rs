//! No server survives its test: not when the test panics, not when its process is killed.
//!
//! Each test runs a probe (the ignored test at the bottom) as a child process, which starts a
//! cluster, writes down every process of every server, then panics or hangs; the test then
//! checks, from outside, that every one of those processes is gone.

mod probe;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use meridian_testkit::{Kit, TestCluster};
use probe::{Mode, Report, assert_nothing_left, process_state};

const PROBE: &str = "probe_starts_a_cluster_then_fails";

fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| {
            std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|stat| {
                stat.rfind(')')
                    .and_then(|i| stat[i + 1..].split_whitespace().nth(1).map(str::to_owned))
                    == Some(pid.to_string())
            })
        })
        .collect()
}

fn spawn_probe(mode: Mode, report: &Path) -> Child {
    probe::command(PROBE, mode, report)
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn no_server_survives_a_panicking_test() {
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("report");
    let status = spawn_probe(Mode::Panic, &report_path).wait().unwrap();
    assert!(!status.success(), "the probe was meant to fail");
    let report = Report::read(&report_path);
    assert!(
        report.complete,
        "the probe did not get to start its cluster: {report:?}"
    );
    assert!(report.pids.len() > 2, "{report:?}");
    assert_nothing_left(&report).await;
}

#[tokio::test]
async fn no_server_survives_a_killed_test_process() {
    // The probe's servers are orphaned when it dies; make them ours to reap.
    meridian_testkit::adopt_orphans();
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("report");
    let mut probe = spawn_probe(Mode::Hang, &report_path);
    let report = Report::wait_complete(&report_path).await;

    probe.kill().unwrap();
    probe.wait().unwrap();
    assert_nothing_left(&report).await;
}

#[tokio::test]
async fn a_server_another_program_started_in_a_data_directory_stops_with_the_cluster() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    let replica = &cluster.replicas()[0];
    replica.stop().await.unwrap();
    // As Meridian's rejoin does: pg_ctl starts the server, which the kit did not start.
    let kit = Kit::get().unwrap();
    let started = kit
        .run_as()
        .command(kit.bin().program("pg_ctl"))
        .arg("-D")
        .arg(replica.data_dir())
        .arg("-l")
        .arg(replica.data_dir().join("pg_ctl.log"))
        .arg("-o")
        .arg(format!("-p {}", replica.port()))
        .args(["start", "-w", "-t", "60"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(started.success());
    let pid_file = std::fs::read_to_string(replica.data_dir().join("postmaster.pid")).unwrap();
    let postmaster: u32 = pid_file.lines().next().unwrap().trim().parse().unwrap();
    assert!(process_state(postmaster).is_some_and(|s| s != 'Z'));

    cluster.shut_down();
    assert_nothing_left(&Report {
        dir: PathBuf::new(),
        ports: vec![replica.port()],
        pids: vec![postmaster],
        watchdog: None,
        complete: true,
    })
    .await;
}

/// Run only as a child of the tests above, which set its environment.
#[tokio::test]
#[ignore = "a probe run as a child process by the teardown tests"]
async fn probe_starts_a_cluster_then_fails() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    let mut report = Report {
        dir: cluster.dir().to_owned(),
        watchdog: Some(cluster.watchdog_pid().expect("a watchdog runs")),
        ..Report::default()
    };
    for node in cluster.nodes() {
        let postmaster = node.pid().unwrap();
        report.ports.push(node.port());
        report.pids.push(postmaster);
        report.pids.extend(children_of(postmaster));
    }
    probe::report_then_fail(&report).await;
}
