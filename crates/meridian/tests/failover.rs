//! Failover, switchover and rejoin through the `meridian` binary, in front of real clusters,
//! driven as applications and operators drive it: a client writes a numbered row through the
//! proxy every 20 ms while the primary is SIGKILLed or switched over, and the operator commands
//! (`switchover`, `rejoin`, `history`) are run as processes and judged by their exit codes.
//!
//! Meridian runs with its default detection and failover settings (probe every second,
//! `failure_threshold` 3, `confirm_interval` 200 ms, `failover_buffer_timeout` 15 s). Every
//! node's `data_dir` is configured, so Meridian itself turns an old primary into a replica
//! (`pg_rewind`, `pg_ctl`); the kit then adopts the server Meridian started.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_testkit::{Check, Node, TestCluster, wait_until};
use serde_json::Value;
use tokio::process::Command;
use tokio::task::JoinHandle;

use support::{DataDirs, RunningMeridian, cluster_toml, connect, free_port, http_get};

mod support;

/// Bound of every wait: generous, since these 2-core machines are shared.
const TIMEOUT: Duration = Duration::from_secs(60);
/// A killed primary is replaced and writes through Meridian commit again within this.
const WRITE_GAP: Duration = Duration::from_secs(15);
/// The writer's cadence.
const PERIOD: Duration = Duration::from_millis(20);
/// Writes acknowledged before a fault and after recovery, so that both sides are exercised.
const WRITES_AROUND: usize = 25;
const TOKEN: &str = "failover-test-token";
const TABLE: &str = "CREATE TABLE writes (id bigint NOT NULL)";

/// The `meridian` binary in front of a cluster, its output (stdout and stderr) in a file.
struct Meridian {
    running: RunningMeridian,
    token: Option<&'static str>,
}

impl std::ops::Deref for Meridian {
    type Target = RunningMeridian;

    fn deref(&self) -> &RunningMeridian {
        &self.running
    }
}

impl Meridian {
    /// Starts Meridian for `cluster`, requiring `token` for commands (none: commands refused),
    /// with `extra` TOML tables, and waits until it runs a query.
    async fn start(cluster: &TestCluster, token: Option<&'static str>, extra: &str) -> Meridian {
        let mut toml = String::new();
        if let Some(token) = token {
            toml.push_str(&format!("admin_token = \"{token}\"\n"));
        }
        toml.push_str(&cluster_toml(cluster, DataDirs::Managed));
        toml.push_str(extra);
        Meridian {
            running: RunningMeridian::start(&toml, TIMEOUT).await,
            token,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin)
    }

    /// `meridian ARGS --url <this Meridian> [--token <its token>]`.
    async fn cli(&self, args: &[&str]) -> Cli {
        let url = self.url();
        let mut all = args.to_vec();
        all.extend(["--url", &url]);
        if let Some(token) = self.token {
            all.extend(["--token", token]);
        }
        cli(&all, &[]).await
    }

    /// The failover history, newest first, through `meridian history --json`.
    async fn history(&self) -> Vec<Value> {
        let out = self.cli(&["history", "--json"]).await;
        assert_eq!(out.code, Some(0), "{out:?}\n{}", self.log());
        out.json().as_array().cloned().unwrap_or_default()
    }

    /// Waits until the newest run of the history has finished; returns the history.
    async fn wait_run_finished(&self) -> Vec<Value> {
        let history = wait_until(TIMEOUT, "the newest run to finish", || async {
            let history = self.history().await;
            let finished = history
                .first()
                .is_some_and(|run| run["outcome"] != "in_progress");
            Check::when(finished, history.clone(), history)
        })
        .await;
        self.or_log(history)
    }

    /// Waits until `/metrics` has every one of `lines`; returns the exposition.
    async fn wait_metrics(&self, what: &str, lines: &[String]) -> String {
        let metrics = wait_until(TIMEOUT, what, || async {
            match http_get(self.admin, "/metrics").await {
                Ok(body) => {
                    let absent: Vec<&String> = lines
                        .iter()
                        .filter(|l| !body.contains(l.as_str()))
                        .collect();
                    Check::when(absent.is_empty(), body.clone(), absent)
                }
                Err(e) => Check::NotYet(e.to_string()),
            }
        })
        .await;
        self.or_log(metrics)
    }
}

/// What an operator command did.
#[derive(Debug)]
struct Cli {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Cli {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// Runs `meridian ARGS` with nothing from this process's environment but `PATH` and `env`.
async fn cli(args: &[&str], env: &[(&str, &str)]) -> Cli {
    let mut command = Command::new(env!("CARGO_BIN_EXE_meridian"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(180), command.output())
        .await
        .unwrap_or_else(|_| panic!("meridian {args:?} did not finish within 180 s"))
        .unwrap();
    Cli {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// One acknowledged write.
#[derive(Debug, Clone, Copy)]
struct Ack {
    id: i64,
    sent: Instant,
    at: Instant,
    /// The port of the server it committed on.
    port: u16,
}

/// One error the writer saw: a failed connection attempt (no id) or a failed write (which may
/// have committed all the same).
#[derive(Debug, Clone)]
struct Failed {
    id: Option<i64>,
    sent: Instant,
    at: Instant,
    /// SQLSTATE and message when the proxy or the server sent one.
    error: String,
}

/// What the writer saw.
#[derive(Debug, Default, Clone)]
struct Writes {
    acked: Vec<Ack>,
    errors: Vec<Failed>,
}

impl Writes {
    /// The errors, one a line, with when they were sent and seen, in seconds from `origin`.
    fn errors_from(&self, origin: Instant) -> String {
        let seconds = |t: Instant| {
            if t >= origin {
                (t - origin).as_secs_f64()
            } else {
                -(origin - t).as_secs_f64()
            }
        };
        self.errors
            .iter()
            .map(|f| {
                format!(
                    "  sent {:+.3} s, failed {:+.3} s: {} {}",
                    seconds(f.sent),
                    seconds(f.at),
                    f.id.map_or("connect".to_owned(), |id| format!("insert {id}")),
                    f.error
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A client inserting rows numbered 1, 2, 3, ... through Meridian every [`PERIOD`], one
/// autocommit `INSERT` at a time (returning the port of the server it ran on), on one
/// connection that it reopens when it closes. Every id is sent once: an id that failed is never
/// retried.
struct Writer {
    writes: Arc<Mutex<Writes>>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Writer {
    fn start(port: u16) -> Writer {
        let writes = Arc::new(Mutex::new(Writes::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(write_loop(port, writes.clone(), stop.clone()));
        Writer { writes, stop, task }
    }

    /// Waits until `count` acknowledged writes are `wanted`; returns them.
    async fn wait_acked(
        &self,
        count: usize,
        wanted: impl Fn(&Ack) -> bool,
        what: &str,
        meridian: &Meridian,
    ) -> Vec<Ack> {
        let acked = wait_until(TIMEOUT, what, || async {
            let writes = self.writes.lock().unwrap();
            let acked: Vec<Ack> = writes
                .acked
                .iter()
                .filter(|ack| wanted(ack))
                .copied()
                .collect();
            let seen = format!(
                "{} acknowledged, {} errors in all, the last: {:?}",
                acked.len(),
                writes.errors.len(),
                writes.errors.last().map(|f| &f.error)
            );
            Check::when(acked.len() >= count, acked, seen)
        })
        .await;
        meridian.or_log(acked)
    }

    /// Stops after the write under way; returns everything seen.
    async fn stop(self) -> Writes {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(TIMEOUT, self.task)
            .await
            .expect("the writer did not stop")
            .unwrap();
        std::mem::take(&mut *self.writes.lock().unwrap())
    }
}

async fn write_loop(port: u16, writes: Arc<Mutex<Writes>>, stop: Arc<AtomicBool>) {
    let mut client: Option<tokio_postgres::Client> = None;
    let mut id: i64 = 0;
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            let sent = Instant::now();
            match connect(port).await {
                Ok(c) => client = Some(c),
                Err(e) => {
                    writes.lock().unwrap().errors.push(Failed {
                        id: None,
                        sent,
                        at: Instant::now(),
                        error: describe(&e),
                    });
                    continue;
                }
            }
        }
        let Some(c) = &client else { continue };
        id += 1;
        let sent = Instant::now();
        let result = c
            .query_one(
                "INSERT INTO writes (id) VALUES ($1) RETURNING inet_server_port()",
                &[&id],
            )
            .await;
        let at = Instant::now();
        let mut writes = writes.lock().unwrap();
        match result {
            Ok(row) => writes.acked.push(Ack {
                id,
                sent,
                at,
                port: row.get::<_, i32>(0) as u16,
            }),
            Err(e) => writes.errors.push(Failed {
                id: Some(id),
                sent,
                at,
                error: describe(&e),
            }),
        }
    }
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}", db.code().code(), db.message()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

/// How many rows of each id `node` holds.
async fn rows(node: &Node) -> BTreeMap<i64, u64> {
    node.query("SELECT id, count(*) FROM writes GROUP BY id")
        .await
        .unwrap()
        .into_iter()
        .map(|row| {
            let number = |i: usize| row[i].as_deref().unwrap().parse::<i64>().unwrap();
            (number(0), number(1) as u64)
        })
        .collect()
}

/// Ids present more than once.
fn duplicates(rows: &BTreeMap<i64, u64>) -> Vec<i64> {
    rows.iter()
        .filter(|(_, count)| **count > 1)
        .map(|(id, _)| *id)
        .collect()
}

/// Acknowledged ids absent from `rows`.
fn missing(acked: &[Ack], rows: &BTreeMap<i64, u64>) -> Vec<i64> {
    acked
        .iter()
        .map(|ack| ack.id)
        .filter(|id| !rows.contains_key(id))
        .collect()
}

/// Those of `names` that accept writes now, asked directly.
async fn writable(cluster: &TestCluster, names: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for name in names {
        if cluster.node(name).is_in_recovery().await.ok() == Some(false) {
            out.push((*name).to_owned());
        }
    }
    out
}

/// Waits until `replica` streams WAL from `upstream` (its WAL receiver's sender port).
async fn wait_streams_from(cluster: &TestCluster, replica: &str, upstream: &str, m: &Meridian) {
    let port = cluster.node(upstream).port();
    let streaming = wait_until(
        TIMEOUT,
        &format!("{replica} to stream from {upstream}"),
        || async {
            let seen = cluster
                .node(replica)
                .query_one(
                    "SELECT sender_port FROM pg_stat_wal_receiver WHERE status = 'streaming'",
                )
                .await;
            match seen {
                Ok(Some(p)) if p.parse() == Ok(port) => Check::Ready(()),
                other => Check::NotYet(format!("{other:?}")),
            }
        },
    )
    .await;
    m.or_log(streaming);
}

/// A cluster of a primary and two replicas with an empty `writes` table everywhere.
async fn cluster(synchronous: bool) -> TestCluster {
    let mut builder = TestCluster::builder().replicas(2);
    if synchronous {
        builder = builder.synchronous(1);
    }
    let cluster = builder.start().await.unwrap();
    cluster.primary().execute(TABLE).await.unwrap();
    cluster.wait_replicated(TIMEOUT).await.unwrap();
    cluster
}

/// SIGKILL of the primary while a client writes through Meridian: writes resume within
/// [`WRITE_GAP`], exactly one replica is promoted, no row is written twice; with synchronous
/// replication, no acknowledged row is lost.
async fn kill_under_write_load(synchronous: bool) {
    let cluster = cluster(synchronous).await;
    let meridian = Meridian::start(&cluster, Some(TOKEN), "").await;
    let writer = Writer::start(meridian.port);
    writer
        .wait_acked(WRITES_AROUND, |_| true, "writes before the kill", &meridian)
        .await;

    let old_port = cluster.primary().port();
    cluster.primary().kill();
    // Timed once kill() returns: every server process is dead and reaped by then, so a write
    // sent later cannot have reached a live backend of the old primary.
    let killed = Instant::now();
    let resumed = writer
        .wait_acked(
            1,
            |ack| ack.sent >= killed && ack.port != old_port,
            "a write sent after the kill to commit on another node",
            &meridian,
        )
        .await[0];
    writer
        .wait_acked(
            WRITES_AROUND,
            |ack| ack.sent >= resumed.at,
            "writes after resuming",
            &meridian,
        )
        .await;
    let writes = writer.stop().await;
    let gap = resumed.at - killed;
    eprintln!(
        "kill ({}): writes resumed {gap:.2?} after the kill; {} acknowledged; errors seen (from the kill):\n{}",
        if synchronous {
            "synchronous"
        } else {
            "asynchronous"
        },
        writes.acked.len(),
        writes.errors_from(killed)
    );
    assert!(
        gap < WRITE_GAP,
        "writes resumed {gap:?} after the kill\n{}",
        meridian.log()
    );
    // Only the write in flight at the kill may fail (its server connection died): the proxy
    // holds every later one until the new primary takes it.
    assert!(
        writes.errors.iter().all(|f| f.sent < killed),
        "writes sent after the kill failed (timed from the kill):\n{}\n{}",
        writes.errors_from(killed),
        meridian.log()
    );

    let survivors = writable(&cluster, &["main-2", "main-3"]).await;
    assert_eq!(
        survivors.len(),
        1,
        "exactly one survivor is writable: {survivors:?}\n{}",
        meridian.log()
    );
    let new = survivors[0].as_str();
    assert_eq!(resumed.port, cluster.node(new).port(), "{resumed:?}");
    let history = meridian.wait_run_finished().await;
    assert_eq!(history.len(), 1, "exactly one run: {history:#?}");
    let run = &history[0];
    assert_eq!(run["kind"], "failover", "{run:#}");
    assert_eq!(run["outcome"], "completed", "{run:#}\n{}", meridian.log());
    assert_eq!(run["old_primary"], "main-1", "{run:#}");
    assert_eq!(run["new_primary"], new, "{run:#}");
    assert_eq!(run["generation"], 2, "{run:#}");

    let rows = rows(cluster.node(new)).await;
    assert_eq!(duplicates(&rows), Vec::<i64>::new(), "ids present twice");
    let lost = missing(&writes.acked, &rows);
    let failed_yet_present: Vec<i64> = writes
        .errors
        .iter()
        .filter_map(|f| f.id)
        .filter(|id| rows.contains_key(id))
        .collect();
    eprintln!(
        "acknowledged writes missing on {new}: {lost:?}; failed writes present there: {failed_yet_present:?}"
    );
    if synchronous {
        assert_eq!(
            lost,
            Vec::<i64>::new(),
            "acknowledged ids missing on {new}, the new primary"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_is_replaced_under_write_load_once_and_without_duplicates() {
    kill_under_write_load(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_synchronous_replication_a_killed_primary_loses_no_acknowledged_write() {
    kill_under_write_load(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_from_the_cli_under_write_load_loses_nothing_and_shows_no_error() {
    let cluster = cluster(false).await;
    let meridian = Meridian::start(&cluster, Some(TOKEN), "").await;
    let writer = Writer::start(meridian.port);
    writer
        .wait_acked(
            WRITES_AROUND,
            |_| true,
            "writes before the switchover",
            &meridian,
        )
        .await;

    let asked = Instant::now();
    let out = meridian.cli(&["switchover", "--json"]).await;
    let answered = Instant::now();
    assert_eq!(out.code, Some(0), "{out:?}\n{}", meridian.log());
    let run = out.json();
    assert_eq!(run["kind"], "switchover", "{run:#}");
    assert_eq!(run["outcome"], "completed", "{run:#}");
    assert_eq!(run["old_primary"], "main-1", "{run:#}");
    let new = run["new_primary"].as_str().unwrap().to_owned();
    assert_ne!(new, "main-1");
    writer
        .wait_acked(
            WRITES_AROUND,
            |ack| ack.sent >= answered,
            "writes after the switchover",
            &meridian,
        )
        .await;
    let writes = writer.stop().await;
    eprintln!(
        "switchover: answered in {:.2?}; {} acknowledged; errors seen (from the command):\n{}",
        answered - asked,
        writes.acked.len(),
        writes.errors_from(asked)
    );
    // The proxy holds transactions while the primary changes: the client sees nothing of it.
    assert!(
        writes.errors.is_empty(),
        "the writer saw errors (timed from the switchover command):\n{}\n{}",
        writes.errors_from(asked),
        meridian.log()
    );

    // Meridian rewound and restarted the old primary as a replica: the kit takes it over.
    meridian.or_log(cluster.node("main-1").adopt());
    assert_eq!(
        writable(&cluster, &["main-1", "main-2", "main-3"]).await,
        std::slice::from_ref(&new),
        "only the new primary is writable\n{}",
        meridian.log()
    );
    let new_port = cluster.node(&new).port();
    let stray: Vec<&Ack> = writes
        .acked
        .iter()
        .filter(|ack| ack.sent >= answered && ack.port != new_port)
        .collect();
    assert!(
        stray.is_empty(),
        "writes after the switchover not on {new}: {stray:?}"
    );
    let other = if new == "main-2" { "main-3" } else { "main-2" };
    wait_streams_from(&cluster, "main-1", &new, &meridian).await;
    wait_streams_from(&cluster, other, &new, &meridian).await;

    let rows = rows(cluster.node(&new)).await;
    assert_eq!(duplicates(&rows), Vec::<i64>::new(), "ids present twice");
    assert_eq!(
        missing(&writes.acked, &rows),
        Vec::<i64>::new(),
        "acknowledged ids missing on {new}, the new primary"
    );
    let history = meridian.history().await;
    assert_eq!(history.len(), 1, "{history:#?}");
    assert_eq!(history[0]["generation"], 2, "{history:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_are_refused_with_a_reason_and_exit_codes_say_why() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    let meridian = Meridian::start(&cluster, Some(TOKEN), "").await;
    let url = meridian.url();

    // No token.
    let out = cli(&["switchover", "--url", &url], &[]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("Bearer") && out.stderr.contains("HTTP 401"),
        "{out:?}"
    );
    // A wrong token.
    let out = cli(&["switchover", "--url", &url, "--token", "wrong"], &[]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("token is wrong") && out.stderr.contains("HTTP 401"),
        "{out:?}"
    );
    // Nothing listens there.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let out = cli(&["switchover", "--url", &closed, "--token", TOKEN], &[]).await;
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(out.stderr.contains(&closed), "{out:?}");
    // Rejoin of the primary, with URL and token from the environment.
    let out = cli(
        &["rejoin", "main-1"],
        &[
            ("MERIDIAN_ADMIN_URL", url.as_str()),
            ("MERIDIAN_ADMIN_TOKEN", TOKEN),
        ],
    )
    .await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("main-1 is the primary") && out.stderr.contains("HTTP 409"),
        "{out:?}"
    );

    // Without admin_token, commands are refused whatever the token, saying how to enable them.
    let untokened = Meridian::start(&cluster, None, "").await;
    let out = cli(
        &["switchover", "--url", &untokened.url(), "--token", TOKEN],
        &[],
    )
    .await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("admin_token") && out.stderr.contains("HTTP 403"),
        "{out:?}"
    );

    // None of that changed anything.
    assert_eq!(meridian.history().await, Vec::<Value>::new());
    assert_eq!(untokened.history().await, Vec::<Value>::new());
    assert_eq!(
        writable(&cluster, &["main-1", "main-2"]).await,
        ["main-1"],
        "{}",
        meridian.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_primary_back_on_its_timeline_gets_no_writes_until_rejoined_from_the_cli() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    cluster.primary().execute(TABLE).await.unwrap();
    cluster.wait_replicated(TIMEOUT).await.unwrap();
    // Reconnection to a dead node backs off up to 32 s by default: keep it short, so that
    // Meridian sees the old primary soon after it comes back.
    let meridian =
        Meridian::start(&cluster, Some(TOKEN), "[monitor]\nreconnect_max = \"2s\"\n").await;
    let (old, new) = (cluster.node("main-1"), cluster.node("main-2"));

    old.kill();
    let history = meridian.wait_run_finished().await;
    assert_eq!(history[0]["outcome"], "completed", "{history:#?}");
    assert_eq!(history[0]["new_primary"], "main-2", "{history:#?}");

    // The old primary comes back as it was: writable, on the old timeline.
    old.start().await.unwrap();
    assert!(!old.is_in_recovery().await.unwrap());
    meridian
        .wait_metrics(
            "main-1 seen up and writable, and marked for rejoin",
            &[
                "meridian_node_up{node=\"main-1\",region=\"main\"} 1".into(),
                "meridian_node_role{node=\"main-1\",region=\"main\",role=\"primary\"} 1".into(),
                "meridian_node_needs_rejoin{node=\"main-1\",region=\"main\"} 1".into(),
                "meridian_cluster_primary{node=\"main-2\",region=\"main\"} 1".into(),
                // Timed when the probe opened its new connection (the value varies).
                "meridian_node_connect_latency_seconds{node=\"main-1\",region=\"main\"} ".into(),
            ],
        )
        .await;
    for id in 1..=20_i64 {
        let client = connect(meridian.port).await.unwrap();
        let row = client
            .query_one(
                "INSERT INTO writes (id) VALUES ($1) RETURNING inet_server_port()",
                &[&id],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), i32::from(new.port()), "write {id}");
        let row = client
            .query_one("/* meridian:primary */ SELECT inet_server_port()", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), i32::from(new.port()), "read {id}");
    }
    assert_eq!(
        old.query_one("SELECT count(*) FROM writes").await.unwrap(),
        Some("0".into()),
        "writes reached the old primary"
    );

    let out = meridian.cli(&["rejoin", "main-1"]).await;
    assert_eq!(out.code, Some(0), "{out:?}\n{}", meridian.log());
    eprintln!("rejoin: {}", out.stdout);
    let history = meridian.history().await;
    assert_eq!(
        history.len(),
        2,
        "the failover and the rejoin: {history:#?}"
    );
    assert_eq!(history[0]["kind"], "rejoin", "{history:#?}");
    assert_eq!(history[0]["outcome"], "completed", "{history:#?}");
    meridian.or_log(old.adopt());
    wait_streams_from(&cluster, "main-1", "main-2", &meridian).await;
    assert!(old.is_in_recovery().await.unwrap());
    let replayed = wait_until(TIMEOUT, "main-1 to replay the 20 rows", || async {
        match old.query_one("SELECT count(*) FROM writes").await {
            Ok(count) => Check::when(count.as_deref() == Some("20"), (), count),
            Err(e) => Check::NotYet(e.to_string()),
        }
    })
    .await;
    meridian.or_log(replayed);
    meridian
        .wait_metrics(
            "main-1 seen as a replica that needs no rejoin",
            &[
                "meridian_node_role{node=\"main-1\",region=\"main\",role=\"replica\"} 1".into(),
                "meridian_node_needs_rejoin{node=\"main-1\",region=\"main\"} 0".into(),
            ],
        )
        .await;
}

/// The synchronous replica main-2 stops receiving (its link blackholed) while a
/// commit waits for it; the asynchronous main-3 receives that commit's WAL; then the primary
/// dies. main-2, holding every acknowledged commit, is promoted; main-3 is ahead of it and
/// cannot follow its timeline without a rewind. Were main-3 named among main-2's synchronous
/// replicas (the old primary's `ANY 1 (main-2)` with the promoted name replaced), every commit
/// on the new primary would wait forever: writes through Meridian must commit again. And
/// main-3 holds a commit main-2 lacks: it needs a rejoin and serves no read until an
/// operator's rejoin rewinds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_ahead_of_the_promoted_one_neither_holds_commits_nor_serves_reads() {
    use meridian_testkit::{Direction, Fault};
    let cluster = TestCluster::builder()
        .replicas(2)
        .synchronous_among(1, &["main-2"])
        .replication_links()
        // main-2's blackholed stream looks alive, proving the primary alive, for half of this
        // (PostgreSQL's default of 60 s would hold the failover 30 s).
        .setting("wal_receiver_timeout", "4s")
        .start()
        .await
        .unwrap();
    cluster.primary().execute(TABLE).await.unwrap();
    cluster.wait_replicated(TIMEOUT).await.unwrap();
    let meridian = Meridian::start(&cluster, Some(TOKEN), "").await;

    let link = cluster.replication_link("main-2").unwrap();
    link.set(Direction::ToClient, Fault::Blackhole);
    let direct = cluster.primary().client().await.unwrap();
    // Never acknowledged: main-2 does not confirm it, and the primary dies waiting.
    let unconfirmed =
        tokio::spawn(async move { direct.execute("INSERT INTO writes VALUES (1)", &[]).await });
    let main_3 = cluster.node("main-3");
    wait_until(
        TIMEOUT,
        "main-3 to replay the unconfirmed commit",
        || async {
            let count = main_3.query_one("SELECT count(*) FROM writes").await;
            Check::when(
                matches!(&count, Ok(Some(n)) if n == "1"),
                (),
                format!("{count:?}"),
            )
        },
    )
    .await
    .unwrap();
    // The link stays blackholed: what it holds never reaches main-2.
    cluster.primary().kill();
    assert!(unconfirmed.await.unwrap().is_err(), "never acknowledged");

    let history = meridian.wait_run_finished().await;
    let run = &history[0];
    assert_eq!(run["outcome"], "completed", "{run:#}\n{}", meridian.log());
    assert_eq!(
        run["new_primary"], "main-2",
        "the synchronous replica: {run:#}"
    );
    let write = async {
        let client = connect(meridian.port).await?;
        client
            .query_one(
                "INSERT INTO writes VALUES (2) RETURNING inet_server_port()",
                &[],
            )
            .await
            .map(|row| row.get::<_, i32>(0))
    };
    let port = match tokio::time::timeout(WRITE_GAP, write).await {
        Ok(result) => result.unwrap_or_else(|e| panic!("{e}\n{}", meridian.log())),
        Err(_) => panic!(
            "a write on the new primary had no answer within {WRITE_GAP:?}:\n{}",
            meridian.log()
        ),
    };
    assert_eq!(port, i32::from(cluster.node("main-2").port()));
    let log = meridian.log();
    assert!(
        log.contains("main-3 received WAL up to") && log.contains("until it is rejoined"),
        "the replica left out is named: {log}"
    );

    // main-3 holds row 1, which was never acknowledged and which main-2 does not have: it
    // needs a rejoin, and no read through Meridian may see that row.
    meridian
        .wait_metrics(
            "main-3 marked for rejoin",
            &["meridian_node_needs_rejoin{node=\"main-3\",region=\"main\"} 1".into()],
        )
        .await;
    for _ in 0..20 {
        let client = connect(meridian.port).await.unwrap();
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE id = 1), inet_server_port() FROM writes",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            (row.get::<_, i64>(0), row.get::<_, i32>(1)),
            (0, i32::from(cluster.node("main-2").port())),
            "a read answered from the replica ahead\n{}",
            meridian.log()
        );
    }

    // The operator rejoins it: rewound onto main-2's timeline, without the row, and in
    // service again.
    let out = meridian.cli(&["rejoin", "main-3"]).await;
    assert_eq!(out.code, Some(0), "{out:?}\n{}", meridian.log());
    meridian.or_log(main_3.adopt());
    wait_streams_from(&cluster, "main-3", "main-2", &meridian).await;
    meridian
        .wait_metrics(
            "main-3 back in service",
            &["meridian_node_needs_rejoin{node=\"main-3\",region=\"main\"} 0".into()],
        )
        .await;
    assert_eq!(
        main_3
            .query_one("SELECT count(*) FILTER (WHERE id = 1) FROM writes")
            .await
            .unwrap()
            .as_deref(),
        Some("0"),
        "the unacknowledged row is gone from main-3"
    );
}
