//! Probes for the teardown tests: a probe is an ignored test of the same binary, run as a
//! child process, that starts a cluster, writes down every process of it, then panics or
//! hangs until killed; the parent test then checks, from outside, that every one of those
//! processes is gone.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use meridian_testkit::{Check, KEEP_ENV, wait_until};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

const TIMEOUT: Duration = Duration::from_secs(30);
const REPORT_ENV: &str = "MERIDIAN_TESTKIT_PROBE_REPORT";
const MODE_ENV: &str = "MERIDIAN_TESTKIT_PROBE_MODE";

/// How a probe fails once its report is written.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// It panics: the cluster is dropped while unwinding.
    Panic,
    /// It waits to be killed: nothing is dropped.
    Hang,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Panic => "panic",
            Mode::Hang => "hang",
        }
    }
}

/// What a probe saw of its cluster before it failed.
#[derive(Debug, Default)]
pub struct Report {
    /// The cluster directory, or empty for none to check.
    pub dir: PathBuf,
    pub ports: Vec<u16>,
    pub pids: Vec<u32>,
    pub watchdog: Option<u32>,
    /// The probe wrote all of it.
    pub complete: bool,
}

impl Report {
    /// Reads what a probe has written to `path` so far.
    pub fn read(path: &Path) -> Report {
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

    /// Waits until the probe writing to `path` has written all of its report.
    pub async fn wait_complete(path: &Path) -> Report {
        wait_until(Duration::from_secs(120), "the probe's report", || async {
            let report = Report::read(path);
            Check::when(report.complete, report, "incomplete")
        })
        .await
        .unwrap()
    }
}

/// The state letter of a process (`Z` for a zombie), `None` once it is gone.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// The command that runs the probe `test` of this binary as a child process, failing as
/// `mode` says after writing its report to `report`; its stderr is the caller's to set.
pub fn command(test: &str, mode: Mode, report: &Path) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", test, "--ignored", "--nocapture"])
        .env(REPORT_ENV, report)
        .env(MODE_ENV, mode.name())
        // The teardown tests check that the directory goes.
        .env_remove(KEEP_ENV)
        .stdout(Stdio::null());
    command
}

/// In the probe, once its cluster runs: writes `report` where the parent test said, then
/// fails as it said.
pub async fn report_then_fail(report: &Report) {
    let path = std::env::var_os(REPORT_ENV).expect("run by the teardown tests");
    let mode = std::env::var(MODE_ENV).expect("run by the teardown tests");
    let mut file = std::fs::File::create(path).unwrap();
    writeln!(file, "dir {}", report.dir.display()).unwrap();
    if let Some(watchdog) = report.watchdog {
        writeln!(file, "watchdog {watchdog}").unwrap();
    }
    for port in &report.ports {
        writeln!(file, "port {port}").unwrap();
    }
    for pid in &report.pids {
        writeln!(file, "pid {pid}").unwrap();
    }
    writeln!(file, "complete").unwrap();
    drop(file);
    if mode == Mode::Panic.name() {
        panic!("the probe panics with its cluster running");
    }
    std::future::pending::<()>().await;
}

/// Waits until every reported process and the watchdog have exited (reaping those orphaned to
/// us), then checks that every reported port refuses connections, and waits until the
/// reported directory (if any) is gone.
pub async fn assert_nothing_left(report: &Report) {
    let pids: Vec<u32> = report.pids.iter().copied().chain(report.watchdog).collect();
    wait_until(TIMEOUT, "every reported process to exit", || async {
        let alive: Vec<(u32, char)> = pids
            .iter()
            .filter_map(|&pid| {
                if process_state(pid) == Some('Z') {
                    // An orphan handed to us by the subreaper setting: reap it.
                    let _ = waitpid(Pid::from_raw(pid as i32), None);
                }
                process_state(pid).map(|state| (pid, state))
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
