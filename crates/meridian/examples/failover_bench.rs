//! The failover benchmark behind `bench/failover.sh`: what a client sees when the primary is
//! SIGKILLed under Meridian.
//!
//! Each trial starts a test-kit cluster (a primary and two replicas, optionally synchronous),
//! runs the `meridian` binary given with `--meridian` in front of it with its default failover
//! settings, and runs two clients through Meridian: a writer inserting a numbered row every
//! 20 ms and a reader selecting every 20 ms, each on one connection that it reopens after an
//! error. After a warm-up the primary is SIGKILLed; the clients go on until writes have been
//! accepted again for a few seconds. Per trial it reports:
//!
//! - write unavailability: from the kill to the first write *sent after the kill* that commits;
//! - read unavailability: from the kill to the first read sent after the kill that answers;
//! - acknowledged writes lost: ids whose commit was acknowledged but that the new primary lacks;
//! - duplicates: ids present more than once;
//! - read failures: reads sent after the kill that failed;
//! - errors: statements sent after the kill that failed, as the clients saw them (the target:
//!   none, since transactions wait for the new primary), and apart from them the statements
//!   in flight at the kill that failed (their server died under them: 08006 is the truth).
//!
//! usage: failover_bench --meridian PATH [--trials N] [--synchronous]

use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use meridian_testkit::{Check, TestCluster, wait_until};
use tokio_postgres::NoTls;

const PERIOD: Duration = Duration::from_millis(20);
const WARM_UP: Duration = Duration::from_secs(3);
/// After writes resume, how long the clients keep going (late errors would show here).
const SETTLE: Duration = Duration::from_secs(3);
/// A trial whose writes do not resume within this is reported as such.
const GIVE_UP: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct Log {
    /// (id, sent, acknowledged) of every write.
    writes: Vec<(i64, Instant, Option<Instant>)>,
    /// (sent, answered) of every read.
    reads: Vec<(Instant, Option<Instant>)>,
    /// Errors: when the failed statement (or connection attempt) was sent, and what it said.
    errors: Vec<(Instant, String)>,
}

#[derive(Debug)]
struct Trial {
    write_gap: Option<Duration>,
    read_gap: Option<Duration>,
    lost: usize,
    duplicates: usize,
    read_failures: usize,
    /// Failures of statements sent after the kill.
    errors: Vec<String>,
    /// Failures of statements sent before the kill.
    in_flight: usize,
    acknowledged: usize,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

async fn connect(port: u16) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={port} user=app password=bench dbname=postgres connect_timeout=30"
        ),
        NoTls,
    )
    .await?;
    tokio::spawn(connection);
    Ok(client)
}

/// One client loop: `statement(client, n)` every period until `stop`.
async fn client_loop(
    port: u16,
    log: Arc<Mutex<Log>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    write: bool,
) {
    let mut client: Option<tokio_postgres::Client> = None;
    let mut next_id: i64 = 1;
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        tick.tick().await;
        let sent = Instant::now();
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            match connect(port).await {
                Ok(c) => client = Some(c),
                Err(e) => {
                    log.lock().unwrap().errors.push((sent, e.to_string()));
                    continue;
                }
            }
        }
        let c = client.as_ref().expect("connected above");
        if write {
            let id = next_id;
            next_id += 1;
            let result = c
                .execute("INSERT INTO bench_writes (id) VALUES ($1)", &[&id])
                .await;
            let mut log = log.lock().unwrap();
            match result {
                Ok(_) => log.writes.push((id, sent, Some(Instant::now()))),
                Err(e) => {
                    log.writes.push((id, sent, None));
                    log.errors.push((sent, describe(&e)));
                    client = None;
                }
            }
        } else {
            let result = c.query_one("SELECT count(*) FROM bench_writes", &[]).await;
            let mut log = log.lock().unwrap();
            match result {
                Ok(_) => log.reads.push((sent, Some(Instant::now()))),
                Err(e) => {
                    log.reads.push((sent, None));
                    log.errors.push((sent, describe(&e)));
                    client = None;
                }
            }
        }
    }
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

async fn trial(meridian: &str, synchronous: bool) -> anyhow::Result<Trial> {
    let mut builder = TestCluster::builder().replicas(2);
    if synchronous {
        builder = builder.synchronous(1);
    }
    let cluster = builder.start().await?;
    cluster
        .primary()
        .execute("CREATE TABLE bench_writes (id bigint, at timestamptz DEFAULT now())")
        .await?;
    cluster.wait_replicated(Duration::from_secs(30)).await?;

    let dir = tempfile::tempdir()?;
    let (port, admin) = (free_port(), free_port());
    let mut config = format!(
        "listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\ndata_dir = \"{}\"\n\
         [[users]]\nname = \"app\"\npassword = \"bench\"\nserver_user = \"postgres\"\n\
         [[regions]]\nname = \"main\"\n",
        dir.path().join("data").display()
    );
    for node in cluster.nodes() {
        config.push_str(&format!(
            "[[regions.nodes]]\nname = \"{}\"\nhost = \"127.0.0.1\"\nport = {}\n",
            node.name(),
            node.port()
        ));
    }
    let path = dir.path().join("meridian.toml");
    std::fs::write(&path, config)?;
    let log_path = dir.path().join("meridian.log");
    let mut child = tokio::process::Command::new(meridian)
        .arg("run")
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path)?)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start meridian")?;
    wait_until(
        Duration::from_secs(30),
        "Meridian to accept clients",
        || async {
            match connect(port).await {
                Ok(client) => match client.simple_query("SELECT 1").await {
                    Ok(_) => Check::Ready(()),
                    Err(e) => Check::NotYet(e.to_string()),
                },
                Err(e) => Check::NotYet(e.to_string()),
            }
        },
    )
    .await?;

    let log = Arc::new(Mutex::new(Log::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn(client_loop(port, log.clone(), stop.clone(), true));
    let reader = tokio::spawn(client_loop(port, log.clone(), stop.clone(), false));
    tokio::time::sleep(WARM_UP).await; // a warm-up, not a wait for a condition
    // Timed once kill() returns: every process of the server is dead and reaped by then, so a
    // statement sent later cannot have reached a live backend.
    cluster.primary().kill();
    let killed = Instant::now();

    let resumed = wait_until(GIVE_UP, "writes to resume", || async {
        let log = log.lock().unwrap();
        let first = log
            .writes
            .iter()
            .filter(|(_, sent, acked)| *sent >= killed && acked.is_some())
            .map(|(_, _, acked)| acked.expect("filtered"))
            .min();
        Check::when(first.is_some(), (), log.writes.len())
    })
    .await;
    if resumed.is_ok() {
        tokio::time::sleep(SETTLE).await; // keep the clients going: late errors show here
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = writer.await;
    let _ = reader.await;

    let log = std::mem::take(&mut *log.lock().unwrap());
    let after = |t: &Instant| *t >= killed;
    let write_gap = log
        .writes
        .iter()
        .filter(|(_, sent, acked)| after(sent) && acked.is_some())
        .filter_map(|(_, _, acked)| *acked)
        .min()
        .map(|t| t - killed);
    let read_gap = log
        .reads
        .iter()
        .filter(|(sent, answered)| after(sent) && answered.is_some())
        .filter_map(|(_, answered)| *answered)
        .min()
        .map(|t| t - killed);
    let acknowledged: BTreeSet<i64> = log
        .writes
        .iter()
        .filter(|(_, _, acked)| acked.is_some())
        .map(|(id, _, _)| *id)
        .collect();

    // What the new primary holds, read directly.
    let primary = writable_node(&cluster).await?;
    let rows = primary
        .query("SELECT id, count(*) FROM bench_writes GROUP BY id")
        .await?;
    let mut present = BTreeSet::new();
    let mut duplicates = 0;
    for row in rows {
        let id: i64 = row[0].as_deref().unwrap_or("0").parse()?;
        let count: i64 = row[1].as_deref().unwrap_or("0").parse()?;
        present.insert(id);
        if count > 1 {
            duplicates += 1;
        }
    }
    let lost = acknowledged.difference(&present).count();
    let read_failures = log
        .reads
        .iter()
        .filter(|(sent, answered)| after(sent) && answered.is_none())
        .count();
    let errors = log
        .errors
        .iter()
        .filter(|(sent, _)| after(sent))
        .map(|(_, text)| text.clone())
        .collect();
    // In flight at the kill: sent before it, failed (necessarily after it, or during warm-up).
    let in_flight = log
        .writes
        .iter()
        .filter(|(_, sent, acked)| !after(sent) && acked.is_none())
        .count()
        + log
            .reads
            .iter()
            .filter(|(sent, answered)| !after(sent) && answered.is_none())
            .count();

    let _ = stop_meridian(&mut child).await;
    if resumed.is_err() {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        eprintln!("--- meridian log ---\n{text}");
    }
    Ok(Trial {
        write_gap,
        read_gap,
        lost,
        duplicates,
        read_failures,
        errors,
        in_flight,
        acknowledged: acknowledged.len(),
    })
}

/// The node that is primary now (the writable one), straight from the servers.
async fn writable_node(cluster: &TestCluster) -> anyhow::Result<&meridian_testkit::Node> {
    for node in cluster.nodes() {
        if node.is_running() && node.is_in_recovery().await.ok() == Some(false) {
            return Ok(node);
        }
    }
    bail!("no writable node after the trial")
}

async fn stop_meridian(child: &mut tokio::process::Child) -> anyhow::Result<()> {
    if let Some(pid) = child.id() {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
    }
    tokio::time::timeout(Duration::from_secs(40), child.wait()).await??;
    Ok(())
}

fn seconds(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.2}", d.as_secs_f64()))
        .unwrap_or_else(|| "never".into())
}

fn median(mut values: Vec<Duration>) -> Option<Duration> {
    values.sort();
    values.get(values.len() / 2).copied()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut meridian = None;
    let mut trials = 5;
    let mut synchronous = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--meridian" => meridian = args.next(),
            "--trials" => trials = args.next().context("--trials N")?.parse()?,
            "--synchronous" => synchronous = true,
            other => bail!(
                "unknown argument {other}; usage: failover_bench --meridian PATH [--trials N] [--synchronous]"
            ),
        }
    }
    let meridian = meridian.context("--meridian PATH (the meridian binary) is required")?;
    let mode = if synchronous {
        "synchronous"
    } else {
        "asynchronous"
    };
    println!("1 primary + 2 replicas, {mode} replication, SIGKILL of the primary, {trials} trials");
    println!(
        "{:>5}  {:>12}  {:>11}  {:>5}  {:>4}  {:>6}  {:>10}  {:>6}  {:>9}",
        "trial",
        "write gap s",
        "read gap s",
        "acked",
        "lost",
        "dupes",
        "read fails",
        "errors",
        "in flight"
    );
    let mut results = Vec::new();
    for n in 1..=trials {
        let result = trial(&meridian, synchronous).await?;
        println!(
            "{:>5}  {:>12}  {:>11}  {:>5}  {:>4}  {:>6}  {:>10}  {:>6}  {:>9}",
            n,
            seconds(result.write_gap),
            seconds(result.read_gap),
            result.acknowledged,
            result.lost,
            result.duplicates,
            result.read_failures,
            result.errors.len(),
            result.in_flight
        );
        for error in result.errors.iter().take(3) {
            println!("       error: {error}");
        }
        results.push(result);
    }
    let writes: Vec<Duration> = results.iter().filter_map(|r| r.write_gap).collect();
    let reads: Vec<Duration> = results.iter().filter_map(|r| r.read_gap).collect();
    let never = results.iter().filter(|r| r.write_gap.is_none()).count();
    println!(
        "write unavailability: median {} s, worst {} s{}",
        seconds(median(writes.clone())),
        seconds(writes.iter().max().copied()),
        if never > 0 {
            format!(" ({never} trials never resumed)")
        } else {
            String::new()
        }
    );
    println!(
        "read unavailability: median {} s, worst {} s",
        seconds(median(reads.clone())),
        seconds(reads.iter().max().copied())
    );
    println!(
        "acknowledged writes lost: {}; duplicates: {}; read failures: {}; errors of statements \
         sent after the kill: {}; failed in flight at the kill: {}",
        results.iter().map(|r| r.lost).sum::<usize>(),
        results.iter().map(|r| r.duplicates).sum::<usize>(),
        results.iter().map(|r| r.read_failures).sum::<usize>(),
        results.iter().map(|r| r.errors.len()).sum::<usize>(),
        results.iter().map(|r| r.in_flight).sum::<usize>()
    );
    Ok(())
}
