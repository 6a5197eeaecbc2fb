//! No server survives its test: not when the test panics, not when its process is killed.
//!
//! Each test runs a probe (the ignored test at the bottom) as a child process, which starts a
//! cluster, writes down every process of every server, then panics or hangs; the test then
//! checks, from outside, that every one of those processes is gone.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use meridian_testkit::{Check, Kit, TestCluster, wait_until};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

const TIMEOUT: Duration = Duration::from_secs(30);
const REPORT_ENV: &str = "MERIDIAN_TESTKIT_PROBE_REPORT";
const MODE_ENV: &str = "MERIDIAN_TESTKIT_PROBE_MODE";

/// What the probe saw of its cluster before it panicked or hung.
#[derive(Debug, Default)]
struct Report {
    dir: PathBuf,
    ports: Vec<u16>,
    pids: Vec<u32>,
    watchdog: Option<u32>,
    complete: bool,
}

fn read_report(path: &Path) -> Report {
    let mut report = Report::default();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        match line.split_once(' ') {
            Some(("dir", dir)) => report.dir = dir.into(),
            Some(("port", port)) => report.ports.push(port.parse().unwrap()),
            Some(("pid", pid)) => report.pids.push(pid.parse().unwrap()),
            Some(("watchdog", pid)) => report.watchdog = Some(pid.parse().unwrap()),
            _ if line == "complete" => report.complete = true,
            _ => {}
        }
    }
    report
}

fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

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

fn spawn_probe(mode: &str, report: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "probe_starts_a_cluster_then_fails",
            "--ignored",
            "--nocapture",
        ])
        .env(REPORT_ENV, report)
        .env(MODE_ENV, mode)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits until every reported process has exited (reaping those that were orphaned to us),
/// every port refuses connections and the cluster directory (if one is named) is gone.
async fn assert_nothing_left(report: &Report) {
    let pids: Vec<u32> = report.pids.iter().copied().chain(report.watchdog).collect();
    wait_until(TIMEOUT, "every server process to exit", || async {
        let alive: Vec<(u32, char)> = pids
            .iter()
            .filter_map(|&pid| {
                let state = process_state(pid)?;
                if state == 'Z' {
                    // An orphan handed to us by the subreaper setting: reap it.
                    let _ = waitpid(Pid::from_raw(pid as i32), None);
                    return process_state(pid).map(|s| (pid, s));
                }
                Some((pid, state))
            })
            .collect();
        Check::when(alive.is_empty(), (), alive)
    })
    .await
    .unwrap();
    for port in &report.ports {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", *port)).is_err(),
            "port {port} still accepts connections"
        );
    }
    if report.dir != Path::new("") {
        wait_until(TIMEOUT, "the cluster directory to be removed", || async {
            Check::when(!report.dir.exists(), (), report.dir.display().to_string())
        })
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn no_server_survives_a_panicking_test() {
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("report");
    let status = spawn_probe("panic", &report_path).wait().unwrap();
    assert!(!status.success(), "the probe was meant to fail");
    let report = read_report(&report_path);
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
    let mut probe = spawn_probe("hang", &report_path);
    let report = wait_until(Duration::from_secs(120), "the probe's report", || async {
        let report = read_report(&report_path);
        Check::when(report.complete, report, "incomplete")
    })
    .await
    .unwrap();

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
    let report_path = std::env::var_os(REPORT_ENV).expect("run by the teardown tests");
    let mode = std::env::var(MODE_ENV).expect("run by the teardown tests");
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    let mut report = std::fs::File::create(report_path).unwrap();
    writeln!(report, "dir {}", cluster.dir().display()).unwrap();
    writeln!(report, "watchdog {}", cluster.watchdog_pid().unwrap()).unwrap();
    for node in cluster.nodes() {
        let postmaster = node.pid().unwrap();
        writeln!(report, "port {}", node.port()).unwrap();
        writeln!(report, "pid {postmaster}").unwrap();
        for child in children_of(postmaster) {
            writeln!(report, "pid {child}").unwrap();
        }
    }
    writeln!(report, "complete").unwrap();
    drop(report);
    match mode.as_str() {
        "panic" => panic!("the probe panics with its cluster running"),
        _ => std::future::pending::<()>().await,
    }
}
