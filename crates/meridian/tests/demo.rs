//! `meridian demo`, run as a newcomer runs it: as a process, judged by its exit code, its
//! summary (`summary.json` and the text) and what it leaves behind.
//!
//! The full run (`--quick`: the same steps, shorter pauses) builds six real servers, kills the
//! primary, then its region, and rejoins the killed servers; Ctrl-C in the middle must leave no
//! server running; and the demo refuses, without touching anything, what it cannot do.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_testkit::{Check, wait_until};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A safety bound far above the demo's usual 30–40 s (debug build, loaded 2-core machine),
/// and with [`STOP_TIMEOUT`] and [`STATEMENT_TIMEOUT`] under the test runner's 300 s, so that
/// a demo that hangs fails here with everything it printed rather than being killed silently.
const DEMO_TIMEOUT: Duration = Duration::from_secs(200);

/// How long the demo may take to stop once interrupted.
const STOP_TIMEOUT: Duration = Duration::from_secs(40);

/// How long a statement through the kept demo's Meridian may take.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `meridian demo`, its standard output and error collected line by line.
struct Demo {
    child: Child,
    output: Arc<Mutex<String>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Demo {
    /// `meridian demo --quick --dir DIR --port 0 --admin-port 0 EXTRA...` with a clean
    /// environment.
    fn spawn(dir: &Path, extra: &[&str]) -> Demo {
        Demo::spawn_with(dir, extra, &[])
    }

    /// The same with `env` set.
    fn spawn_with(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args([
                "demo",
                "--quick",
                "--port",
                "0",
                "--admin-port",
                "0",
                "--dir",
            ])
            .arg(dir)
            .args(extra)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        let streams: [Box<dyn tokio::io::AsyncRead + Unpin + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        let readers = streams
            .into_iter()
            .map(|stream| {
                let output = output.clone();
                tokio::spawn(async move {
                    let mut lines = BufReader::new(stream).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let mut output = output.lock().unwrap();
                        output.push_str(&line);
                        output.push('\n');
                    }
                })
            })
            .collect();
        Demo {
            child,
            output,
            readers,
        }
    }

    /// Ctrl-C.
    fn interrupt(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id().unwrap() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
    }

    /// What it printed so far.
    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits for it to exit (within the safety bound) and for its output to be read to the
    /// end; returns its exit code and everything it printed.
    async fn finish(mut self) -> (Option<i32>, String) {
        let status = match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!(
                "the demo did not end within {STOP_TIMEOUT:?}:\n{}",
                self.output()
            ),
        };
        for reader in self.readers.drain(..) {
            reader.await.unwrap();
        }
        (status.code(), self.output())
    }
}

/// Live `postgres` postmasters whose data directory lies under `dir`.
fn servers_under(dir: &Path) -> Vec<(u32, String)> {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let state = stat[stat.rfind(')')? + 1..].trim_start().chars().next()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let data = args.windows(2).find(|w| w[0] == "-D")?[1].clone();
            let under = Path::new(&data)
                .canonicalize()
                .is_ok_and(|d| d.starts_with(&dir));
            (state != 'Z' && args[0].ends_with("postgres") && under).then(|| (pid, args.join(" ")))
        })
        .collect()
}

#[tokio::test]
async fn the_quick_demo_fails_over_twice_rejoins_and_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    // --keep: after its summary the demo keeps the cluster and Meridian running until Ctrl-C.
    let demo = Demo::spawn(dir.path(), &["--keep"]);
    let text = wait_until(DEMO_TIMEOUT, "the summary, then --keep", || async {
        let text = demo.output();
        Check::when(
            text.contains("--keep: the cluster and Meridian keep running"),
            text.clone(),
            text,
        )
    })
    .await
    .unwrap();
    // Meridian still takes writes, on the new primary, through the connection string printed.
    let conninfo = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("psql \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no psql line: {text}"));
    let insert = async {
        let (client, connection) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        client
            .query_one(
                "INSERT INTO demo_writes (writer, seq) VALUES (99, 1) RETURNING inet_server_port()",
                &[],
            )
            .await
            .map(|row| row.get::<_, i32>(0))
    };
    let port = match tokio::time::timeout(STATEMENT_TIMEOUT, insert).await {
        Ok(Ok(port)) => port,
        Ok(Err(e)) => panic!(
            "the write through the kept demo failed: {e}\n{}",
            demo.output()
        ),
        Err(_) => panic!(
            "the write through the kept demo had no answer within {STATEMENT_TIMEOUT:?}:\n{}",
            demo.output()
        ),
    };
    // On eu-west-1, the primary after both failovers (its port: line 4 of postmaster.pid).
    let pid_file = dir.path().join("cluster/eu-west-1/data/postmaster.pid");
    let eu_west_1: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .lines()
        .nth(3)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(port, eu_west_1);
    demo.interrupt();
    let (code, text) = demo.finish().await;
    assert_eq!(code, Some(0), "the verdict, not the interruption: {text}");
    assert!(text.contains("Every server stopped"), "{text}");
    assert!(text.contains("PASS: every failover completed"), "{text}");

    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["passed"], true, "{summary:#}");
    assert_eq!(summary["lost"], Value::Array(vec![]), "{summary:#}");
    assert!(
        summary["acknowledged"].as_u64().unwrap() > 100,
        "{summary:#}"
    );
    assert_eq!(summary["final_primary"], "eu-west-1");

    let failovers = summary["failovers"].as_array().unwrap();
    assert_eq!(failovers.len(), 2, "{summary:#}");
    // The primary alone: the synchronous replica of its own region takes over.
    assert_eq!(failovers[0]["old_primary"], "us-east-1");
    assert_eq!(failovers[0]["new_primary"], "us-east-2");
    // The whole region: the next region by priority, through its synchronous leader.
    assert_eq!(failovers[1]["old_primary"], "us-east-2");
    assert_eq!(failovers[1]["new_primary"], "eu-west-1");
    assert_eq!(
        failovers[1]["killed"],
        serde_json::json!(["us-east-2", "us-east-3"])
    );
    for failover in failovers {
        assert_eq!(failover["outcome"], "completed", "{failover:#}");
        assert_eq!(failover["passed"], true, "{failover:#}");
        assert_eq!(failover["lost"], 0, "{failover:#}");
        assert!(failover["acknowledged_before"].as_u64().unwrap() > 0);
        // Writes came back, within the proxy's hold (failover_buffer_timeout, 15 s).
        let gap = failover["write_unavailable_seconds"].as_f64().unwrap();
        assert!(gap > 0.0 && gap < 15.0, "{failover:#}");
        let phases: Vec<&str> = failover["phases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        for phase in ["detection", "synchronous", "promote", "publish", "repoint"] {
            assert!(phases.contains(&phase), "{phase} missing: {failover:#}");
        }
    }

    let rejoins = summary["rejoins"].as_array().unwrap();
    let rejoined: Vec<&str> = rejoins
        .iter()
        .map(|r| r["node"].as_str().unwrap())
        .collect();
    assert_eq!(rejoined, ["us-east-1", "us-east-2", "us-east-3"]);
    assert!(rejoins.iter().all(|r| r["ok"] == true), "{summary:#}");

    // Reads were answered in the primary's region first, and in eu-west once it was lost.
    assert!(summary["reads_by_region"]["us-east"].as_u64().unwrap() > 0);
    assert!(summary["reads_by_region"]["eu-west"].as_u64().unwrap() > 0);

    assert_eq!(servers_under(dir.path()), vec![], "servers left running");
}

#[tokio::test]
async fn ctrl_c_in_the_middle_stops_every_server() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::spawn(dir.path(), &[]);
    // In the middle: the workload runs against the whole cluster and the first kill is under
    // way.
    wait_until(DEMO_TIMEOUT, "the demo to kill the primary", || async {
        let text = demo.output();
        Check::when(text.contains("1. The primary dies"), (), text)
    })
    .await
    .unwrap();
    let running = servers_under(dir.path());
    assert!(running.len() >= 5, "{running:?}");
    demo.interrupt();
    let (code, text) = demo.finish().await;
    assert_eq!(code, Some(130), "{text}");
    assert!(text.contains("interrupted: every server stopped"), "{text}");
    assert_eq!(servers_under(dir.path()), vec![], "{text}");
}

#[tokio::test]
async fn the_demo_refuses_a_directory_it_did_not_make_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    for extra in [&[][..], &["--fresh"][..]] {
        let (code, text) = Demo::spawn(dir.path(), extra).finish().await;
        assert_eq!(code, Some(2), "{text}");
        assert!(text.contains("was not made by `meridian demo`"), "{text}");
        assert!(text.contains("--dir"), "{text}");
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
    assert_eq!(left.len(), 1);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("notes.txt")).unwrap(),
        "mine"
    );
}

#[tokio::test]
async fn the_demo_names_a_taken_port_and_the_flag_that_changes_it() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (code, text) = Demo::spawn(&dir.path().join("demo"), &["--port", &port])
        .finish()
        .await;
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains(&format!("port {port}")), "{text}");
    assert!(text.contains("--port"), "{text}");
    assert!(!dir.path().join("demo").exists(), "nothing is created");
}

#[tokio::test]
async fn without_the_postgresql_binaries_the_demo_says_how_to_install_them() {
    let dir = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let bin = empty.path().to_str().unwrap();
    let (code, text) = Demo::spawn_with(&dir.path().join("demo"), &[], &[("MERIDIAN_PG_BIN", bin)])
        .finish()
        .await;
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("apt-get install -y postgresql"), "{text}");
    assert!(text.contains("MERIDIAN_PG_BIN"), "{text}");
    assert!(!dir.path().join("demo").exists(), "nothing is created");
}
