//! `meridian demo`: Meridian's whole job on one machine, in one command.
//!
//! The demo builds a three-region cluster of real PostgreSQL servers on loopback (see
//! [`cluster`]), starts Meridian in this process in front of it (proxy, monitor and failover,
//! admin API and dashboard), and runs writers and readers through the proxy (see
//! [`workload`]). Then, narrating what Meridian does with the timings it records:
//!
//! 1. it SIGKILLs the primary: Meridian detects it, promotes the best replica, repoints the
//!    others, and the writers' held transactions commit on the new primary;
//! 2. it SIGKILLs every server of the new primary's region: Meridian fails over into the next
//!    region by priority;
//! 3. it has Meridian rejoin the killed servers as replicas of the new primary;
//! 4. it stops the clients, reads every row back from the primary, and prints per failover
//!    the write-unavailability window, the reads and writes that failed and the acknowledged
//!    writes lost, with a verdict (see [`report`]).
//!
//! Exit codes: 0 every failover passed; 1 a failover failed or an acknowledged write was lost
//! (or the demo itself failed); 2 the demo cannot run here (the message says why); 130
//! interrupted. Ctrl-C, SIGTERM or SIGHUP at any point stops every server the demo started.

pub mod cluster;
mod directory;
mod display;
pub mod report;
mod summary;
mod workload;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use clap::Args;
use meridian_config::{Config, Environment};
use meridian_control::monitor::MonitorHandle;
use meridian_core::failover::Command;
use meridian_core::topology::{Health, Role};
use meridian_testkit::{Kit, PgBin, RunAs};
use serde_json::json;

use crate::demo::cluster::{DemoCluster, REGIONS, SYNCHRONOUS, Settings};
use crate::demo::directory::{DemoDir, Prepared};
use crate::demo::display::{Ports, Screen};
use crate::demo::report::Kill;
use crate::demo::summary::{Rejoin, Results, Watched};
use crate::demo::workload::{Shape, Workload};

/// `meridian demo`'s options.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The demo's directory: servers, Meridian's store and logs, the summary.
    #[arg(long, default_value = "meridian-demo")]
    dir: PathBuf,
    /// Empty the directory first (otherwise a second run reuses it: the initdb template and
    /// the failover history stay, the servers are built anew).
    #[arg(long)]
    fresh: bool,
    /// Leave the cluster and Meridian running after the summary, until Ctrl-C.
    #[arg(long)]
    keep: bool,
    /// Shorter pauses between the steps (the same steps; for tests and the impatient).
    #[arg(long)]
    quick: bool,
    /// The proxy's port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 6432)]
    port: u16,
    /// The admin API's and dashboard's port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 9930)]
    admin_port: u16,
}

/// How long the demo lets things run between its steps (for the viewer, not for correctness:
/// every step it waits for is polled with a deadline).
#[derive(Debug, Clone, Copy)]
struct Pace {
    warm_up: Duration,
    settle: Duration,
    after_rejoin: Duration,
}

impl Pace {
    fn of(quick: bool) -> Pace {
        if quick {
            Pace {
                warm_up: Duration::from_secs(3),
                settle: Duration::from_secs(3),
                after_rejoin: Duration::from_secs(1),
            }
        } else {
            Pace {
                warm_up: Duration::from_secs(8),
                settle: Duration::from_secs(8),
                after_rejoin: Duration::from_secs(4),
            }
        }
    }
}

const SHAPE: Shape = Shape {
    writers: 3,
    readers: 3,
    write_every: Duration::from_millis(25),
    read_every: Duration::from_millis(10),
};

/// Bound of each wait for Meridian (a failover, a rejoin): far above what they take.
const STEP_DEADLINE: Duration = Duration::from_secs(90);

const COULD_NOT_RUN: u8 = 2;
const INTERRUPTED: u8 = 130;

/// With `--keep`, the scenario waits after its summary until Ctrl-C, which then ends it with
/// its verdict rather than interrupting the demo.
#[derive(Debug, Default)]
struct Keep {
    /// The summary is out and the scenario waits.
    waiting: AtomicBool,
    /// Ctrl-C came while it waited (a permit is kept if it came before the wait began).
    stop: tokio::sync::Notify,
}

/// The servers, reachable by `main` whatever happens to the scenario, so that they are stopped
/// on every way out.
type Servers = Mutex<Option<Arc<DemoCluster>>>;

/// What the checks before anything runs found.
#[derive(Debug)]
struct Ready {
    bin: PgBin,
    run_as: RunAs,
    dir: DemoDir,
    prepared: Prepared,
}

pub fn main(args: DemoArgs) -> ExitCode {
    let ready = match prepare(&args) {
        Ok(ready) => ready,
        Err(e) => {
            eprintln!("meridian demo: {e:#}");
            return ExitCode::from(COULD_NOT_RUN);
        }
    };
    let dir = &ready.dir;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("meridian-demo")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("meridian demo: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let servers = Servers::default();
    let screen = Screen::new();
    let keep = Keep::default();
    let result = runtime.block_on(async {
        let interrupted = async {
            stop_signal().await;
            if keep.waiting.load(Ordering::SeqCst) {
                // The summary is out: the scenario stops everything and returns its verdict.
                keep.stop.notify_one();
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            result = scenario(&args, &ready, &screen, &servers, &keep) => Some(result),
            _ = interrupted => None,
        }
    });
    screen.finish();
    // Stop Meridian's tasks first (no failover or rejoin may start a server behind our back),
    // then every server.
    runtime.shutdown_timeout(Duration::from_secs(5));
    let cluster = servers.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(cluster) = cluster {
        cluster.servers.shut_down();
    }
    match result {
        None => {
            println!(
                "\ninterrupted: every server stopped; files kept in {}",
                dir.root.display()
            );
            ExitCode::from(INTERRUPTED)
        }
        Some(Ok(passed)) => {
            println!(
                "Every server stopped; files kept in {} (a second run reuses it, --fresh empties it).",
                dir.root.display()
            );
            if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Some(Err(e)) => {
            eprintln!(
                "meridian demo: {e:#}\nMeridian's log: {}; each server's log: {}/<node>/postgres.log",
                dir.log().display(),
                dir.cluster().display()
            );
            ExitCode::FAILURE
        }
    }
}

/// Completes at Ctrl-C (SIGINT), SIGTERM, or SIGHUP (its terminal closed): each stops
/// everything the demo started.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate), Ok(mut hangup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        // Without handlers the signals keep their default action; the test kit's watchdog
        // still stops the servers.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
        _ = hangup.recv() => {}
    }
}

/// What must hold before anything runs: the server binaries, a user to run them as, free
/// ports, and a directory that user can enter; then Meridian's log goes to that directory.
fn prepare(args: &DemoArgs) -> anyhow::Result<Ready> {
    let bin = PgBin::locate().context("the demo runs real PostgreSQL servers")?;
    let run_as = RunAs::resolve().context("the demo runs real PostgreSQL servers")?;
    for (port, flag) in [(args.port, "--port"), (args.admin_port, "--admin-port")] {
        if port != 0 && std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            bail!(
                "port {port} on 127.0.0.1 is taken (another Meridian, or PgBouncer?): \
                 choose another with {flag} N, or {flag} 0 for any free port"
            );
        }
    }
    let (dir, prepared) = directory::prepare(&args.dir, args.fresh)?;
    check_reachable(&run_as, &dir)?;
    init_logging(&dir)?;
    Ok(Ready {
        bin,
        run_as,
        dir,
        prepared,
    })
}

/// Meridian's own log goes to a file: the terminal is the demo's.
fn init_logging(dir: &DemoDir) -> anyhow::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.log())
        .with_context(|| format!("cannot open {}", dir.log().display()))?;
    tracing_subscriber::fmt()
        .with_env_filter(crate::run::log_filter())
        .with_writer(Mutex::new(file))
        .with_ansi(false)
        .with_target(false)
        .init();
    Ok(())
}

/// The whole demo; `Ok(passed)` once the summary is printed.
async fn scenario(
    args: &DemoArgs,
    ready: &Ready,
    screen: &Screen,
    servers: &Servers,
    keep: &Keep,
) -> anyhow::Result<bool> {
    let Ready {
        bin,
        run_as,
        dir,
        prepared,
    } = ready;
    let pace = Pace::of(args.quick);
    let begun = Instant::now();
    screen.say(format!(
        "Meridian demo: three regions of real PostgreSQL {} servers on this machine, Meridian in front of them.",
        version(bin)
    ));
    screen.say(match *prepared {
        Prepared::New => format!("Working in {} (new).", dir.root.display()),
        Prepared::Reused => format!(
            "Working in {} (reused: the template and the failover history stay; --fresh empties it).",
            dir.root.display()
        ),
        Prepared::Emptied => format!("Working in {} (emptied by --fresh).", dir.root.display()),
    });

    let (root, bin, run_as) = (dir.root.clone(), bin.clone(), run_as.clone());
    let kit = tokio::task::spawn_blocking(move || Kit::at(root, bin, run_as)).await??;
    let built = Instant::now();
    let cluster = Arc::new(DemoCluster::build(kit.clone(), &dir.cluster()).await?);
    *servers.lock().unwrap_or_else(|e| e.into_inner()) = Some(cluster.clone());
    screen.say(format!(
        "\nBuilt the cluster in {:.1} s (streaming replication, replication slots; commits wait for {}):",
        built.elapsed().as_secs_f64(),
        SYNCHRONOUS.join(" and ")
    ));
    for line in describe_regions(&cluster) {
        screen.say(line);
    }

    let token = random_hex(16);
    let password = random_hex(8);
    let config = write_config(&cluster, dir, args, &token, &password, kit.bin())?;
    let running = crate::run::start(config)
        .await
        .context("cannot start Meridian")?;
    let proxy = format!(
        "host=127.0.0.1 port={} user=app password={password} dbname=postgres",
        running.listen.port()
    );
    let admin = format!("http://{}", running.admin_listen);
    screen.say(format!(
        "\nMeridian is running (configuration: {}):\n  \
         psql \"{proxy}\"\n  \
         dashboard  {admin}/   admin token {token}\n  \
         meridian status --url {admin}",
        dir.config().display()
    ));

    let setup = workload::connect(&format!("{proxy} connect_timeout=10"))
        .await
        .context("cannot connect through Meridian")?;
    setup
        .batch_execute(workload::TABLE)
        .await
        .context("cannot create the demo's table")?;
    drop(setup);
    let workload = Workload::start(&format!("{proxy} connect_timeout=30"), SHAPE);
    let started = Instant::now();
    let ports = ports_of(&cluster);
    let (stop_display, display) = spawn_display(screen, &running.monitor, &workload, &ports);
    screen.say(format!(
        "\nWorkload: {} writers each numbering its rows (one every {} ms), {} readers noting which server answers (one every {} ms).",
        SHAPE.writers,
        SHAPE.write_every.as_millis(),
        SHAPE.readers,
        SHAPE.read_every.as_millis()
    ));
    tokio::time::sleep(pace.warm_up).await;

    let monitor = &running.monitor;
    let mut watched = Vec::new();
    let primary = primary_name(monitor).context("no primary before the first failover")?;
    screen.say(format!(
        "\n1. The primary dies: SIGKILL to {primary} and every one of its processes."
    ));
    watched.push(
        kill_and_watch(
            screen,
            monitor,
            &workload,
            &cluster,
            "primary killed",
            std::slice::from_ref(&primary),
        )
        .await,
    );
    tokio::time::sleep(pace.settle).await;

    let primary = primary_name(monitor).context("no primary after the first failover")?;
    let region = cluster.servers.node(&primary).region().to_owned();
    let doomed: Vec<String> = cluster
        .servers
        .region(&region)
        .into_iter()
        .filter(|n| n.is_running())
        .map(|n| n.name().to_owned())
        .collect();
    screen.say(format!(
        "\n2. The region {region} is lost: SIGKILL to {}.",
        doomed.join(", ")
    ));
    watched.push(
        kill_and_watch(
            screen,
            monitor,
            &workload,
            &cluster,
            &format!("region {region} lost"),
            &doomed,
        )
        .await,
    );
    tokio::time::sleep(pace.settle).await;

    let rejoins = rejoin_all(screen, monitor, &cluster, &watched).await;
    tokio::time::sleep(pace.after_rejoin).await;

    let _ = stop_display.send(true);
    let _ = display.await;
    let log = workload.stop(STEP_DEADLINE).await;
    let ended = Instant::now();
    screen.finish();
    let primary = primary_name(monitor).context("no primary at the end")?;
    let present = read_back(&cluster, &primary).await?;

    let results = Results::new(watched, &log, ended, &present, rejoins, primary, &ports);
    println!("{}", results.text());
    let mut summary = results.json();
    summary["seconds"] = json!(begun.elapsed().as_secs_f64());
    summary["workload_seconds"] = json!(ended.duration_since(started).as_secs_f64());
    std::fs::write(dir.summary(), format!("{summary:#}\n"))
        .with_context(|| format!("cannot write {}", dir.summary().display()))?;
    println!("(also in {})", dir.summary().display());
    let passed = results.passed();

    if args.keep {
        keep.waiting.store(true, Ordering::SeqCst);
        println!(
            "\n--keep: the cluster and Meridian keep running; Ctrl-C stops everything.\n  \
             psql \"{proxy}\"\n  dashboard  {admin}/   admin token {token}"
        );
        keep.stop.notified().await;
    }
    running.stop().await?;
    Ok(passed)
}

/// `postgres (PostgreSQL) 15.18 (Debian ...)` → `15.18`.
fn version(bin: &PgBin) -> String {
    bin.version()
        .split_whitespace()
        .nth(2)
        .unwrap_or("")
        .to_owned()
}

/// As root, the servers run as an unprivileged user, which must be able to enter the demo's
/// directory (a clone under `/root` is out of its reach); the kit gives it what is inside.
fn check_reachable(run_as: &RunAs, dir: &DemoDir) -> anyhow::Result<()> {
    let reachable = run_as
        .command("sh")
        .args(["-c", "cd \"$1\"", "sh"])
        .arg(&dir.root)
        .status()
        .is_ok_and(|s| s.success());
    if !reachable {
        bail!(
            "PostgreSQL refuses to run as root, so its servers run as the user {}, which cannot \
             enter {}: choose a directory it can reach, e.g. --dir /tmp/meridian-demo",
            run_as.name(),
            dir.root.display()
        );
    }
    Ok(())
}

fn describe_regions(cluster: &DemoCluster) -> Vec<String> {
    REGIONS
        .iter()
        .map(|region| {
            let nodes: Vec<String> = cluster
                .servers
                .region(region.name)
                .iter()
                .enumerate()
                .map(|(i, node)| {
                    let name = node.name();
                    let role = match (region.latency.is_zero(), i) {
                        (true, 0) => "primary",
                        (false, 0) => "region leader, streaming from the primary",
                        (true, _) => "replica",
                        (false, _) => "replica cascading from the leader",
                    };
                    let synchronous = if SYNCHRONOUS.contains(&name) {
                        ", synchronous"
                    } else {
                        ""
                    };
                    format!("{name} ({role}{synchronous})")
                })
                .collect();
            let distance = if region.latency.is_zero() {
                "Meridian's region".to_owned()
            } else {
                format!("{} ms away", region.latency.as_millis())
            };
            format!(
                "  {:<8} priority {:>2}, {distance}: {}",
                region.name,
                region.priority,
                nodes.join(", ")
            )
        })
        .collect()
}

fn random_hex(bytes: usize) -> String {
    (0..bytes).fold(String::new(), |mut out, _| {
        let _ = write!(out, "{:02x}", rand::random::<u8>());
        out
    })
}

/// Writes Meridian's configuration (owner-only: it holds the token and password) and loads it
/// as `meridian run -c` would, without the process environment.
fn write_config(
    cluster: &DemoCluster,
    dir: &DemoDir,
    args: &DemoArgs,
    token: &str,
    password: &str,
    bin: &PgBin,
) -> anyhow::Result<Config> {
    use std::os::unix::fs::OpenOptionsExt;
    let listen = format!("127.0.0.1:{}", args.port);
    let admin_listen = format!("127.0.0.1:{}", args.admin_port);
    let text = cluster.config_toml(
        &Settings {
            listen: &listen,
            admin_listen: &admin_listen,
            admin_token: token,
            password,
            data_dir: &dir.data(),
        },
        bin.dir(),
    );
    let path = dir.config();
    let _ = std::fs::remove_file(&path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut file| std::io::Write::write_all(&mut file, text.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Config::load(
        Some(&path),
        &Environment::from_pairs(std::iter::empty::<(&str, &str)>()),
    )
    .map_err(|errors| anyhow::anyhow!("the demo's configuration is not valid:\n{errors}"))
}

fn ports_of(cluster: &DemoCluster) -> Ports {
    REGIONS
        .iter()
        .flat_map(|region| {
            cluster
                .servers
                .region(region.name)
                .into_iter()
                .map(|node| (node.port(), (node.name().to_owned(), region.name)))
        })
        .collect()
}

/// Redraws the live table every 200 ms until told to stop.
fn spawn_display(
    screen: &Screen,
    monitor: &MonitorHandle,
    workload: &Workload,
    ports: &Ports,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let monitor = monitor.clone();
    let log = workload.log_handle();
    let ports = ports.clone();
    let started = Instant::now();
    let screen = screen.clone();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
            let table = {
                let log = workload::lock(&log);
                display::table(
                    started.elapsed(),
                    &monitor.status(),
                    &log,
                    &ports,
                    Instant::now(),
                )
            };
            screen.show(&table);
        }
    });
    (stop, task)
}

fn primary_name(monitor: &MonitorHandle) -> Option<String> {
    let status = monitor.status();
    status
        .primary
        .and_then(|id| status.node(id))
        .map(|n| n.name.to_string())
}

fn epoch_ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `+0.42 s` after the kill.
fn offset(ms: i64) -> String {
    format!("{:>+8.2} s", ms as f64 / 1000.0)
}

/// Kills `victims`, then narrates Meridian's failover as it happens (from the monitor's status
/// and its failover record) and the first write committed after the kill, until the run has
/// finished and writes are back (or the deadline passed).
async fn kill_and_watch(
    screen: &Screen,
    monitor: &MonitorHandle,
    workload: &Workload,
    cluster: &DemoCluster,
    label: &str,
    victims: &[String],
) -> Watched {
    let before = monitor.recent_runs().first().map(|r| r.id);
    // Killing takes a few milliseconds: its start is the origin of every offset, and only
    // writes sent once it is done count as sent after it (one sent meanwhile may still have
    // committed on the dying server).
    let killed_at = Instant::now();
    let killed_ms = epoch_ms(SystemTime::now()) as i64;
    for victim in victims {
        cluster.servers.node(victim).kill();
    }
    let kill = Kill {
        started: killed_at,
        done: Instant::now(),
    };
    screen.say(format!("{}  killed", offset(0)));
    let since = |at: Instant| at.saturating_duration_since(killed_at).as_millis() as i64;

    let mut said_failed: HashSet<String> = HashSet::new();
    let mut said_down: HashSet<String> = HashSet::new();
    let mut said_suspect = false;
    let mut said_started = false;
    let mut said_phases = 0;
    let mut said_resumed = false;
    let mut record = None;
    let deadline = killed_at + STEP_DEADLINE;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while Instant::now() < deadline {
        tick.tick().await;
        let status = monitor.status();
        for node in status
            .nodes
            .iter()
            .filter(|n| victims.iter().any(|v| **v == *n.name))
        {
            if node.consecutive_failures > 0 && said_failed.insert(node.name.to_string()) {
                screen.say(format!(
                    "{}  probe of {} failed: {}",
                    offset(since(Instant::now())),
                    node.name,
                    node.last_error.as_deref().unwrap_or("no answer")
                ));
            }
            if node.health == Health::Down && said_down.insert(node.name.to_string()) {
                screen.say(format!(
                    "{}  {} judged down",
                    offset(since(Instant::now())),
                    node.name
                ));
            }
        }
        if !said_suspect && status.failover.suspect_since.is_some() {
            said_suspect = true;
            screen.say(format!(
                "{}  the primary is suspect: every node is probed every 200 ms, and the replicas are asked whether they still hear from it",
                offset(since(Instant::now()))
            ));
        }
        let run = monitor
            .recent_runs()
            .iter()
            .find(|r| r.kind == "failover" && before.is_none_or(|b| r.id > b))
            .cloned();
        if let Some(run) = &run {
            if !said_started {
                said_started = true;
                screen.say(format!(
                    "{}  failover started: {}",
                    offset(run.started_at_ms as i64 - killed_ms),
                    run.reason
                ));
            }
            for phase in &run.phases[said_phases..] {
                screen.say(format!(
                    "{}  {:<12} {} ({} ms)",
                    offset(phase.finished_at_ms as i64 - killed_ms),
                    phase.name,
                    phase.outcome,
                    phase.finished_at_ms.saturating_sub(phase.started_at_ms)
                ));
            }
            said_phases = run.phases.len();
        }
        if !said_resumed {
            let first = report::first_acknowledged_after(&workload.log().writes, kill.done);
            if let Some(at) = first {
                said_resumed = true;
                screen.say(format!(
                    "{}  writes are back: the first write sent after the kill has committed on {}",
                    offset(since(at)),
                    primary_name(monitor).unwrap_or_else(|| "?".into())
                ));
            }
        }
        let finished = run.as_ref().is_some_and(|r| r.outcome != "in_progress");
        record = run;
        if finished {
            let run = record.as_ref().expect("finished runs exist");
            if said_resumed || run.outcome != "completed" {
                screen.say(format!(
                    "          failover {}: {} → {}, generation {}. Candidates:",
                    run.outcome,
                    run.old_primary.as_deref().unwrap_or("?"),
                    run.new_primary.as_deref().unwrap_or("?"),
                    run.generation
                ));
                for line in run.ranking.lines() {
                    screen.say(format!("            {line}"));
                }
                break;
            }
        }
    }
    Watched {
        label: label.to_owned(),
        killed: victims.to_vec(),
        kill,
        record,
    }
}

/// Has Meridian turn every killed server into a replica of the current primary, one after the
/// other (pg_rewind, then a start with `pg_ctl`), and waits until each streams.
async fn rejoin_all(
    screen: &Screen,
    monitor: &MonitorHandle,
    cluster: &DemoCluster,
    watched: &[Watched],
) -> Vec<Rejoin> {
    let primary = primary_name(monitor).unwrap_or_else(|| "?".into());
    let mut killed: Vec<String> = watched.iter().flat_map(|w| w.killed.clone()).collect();
    killed.sort();
    killed.dedup();
    screen.say(format!(
        "\n3. Rejoin: Meridian turns {} into replicas of {primary} (pg_rewind, then pg_ctl start).",
        killed.join(", ")
    ));
    let mut results = Vec::new();
    for name in killed {
        let started = Instant::now();
        let result = rejoin(monitor, cluster, &name).await;
        match &result {
            Ok(()) => screen.say(format!(
                "  {name}: streaming from {primary} again after {:.1} s",
                started.elapsed().as_secs_f64()
            )),
            Err(e) => screen.say(format!("  {name}: rejoin failed: {e}")),
        }
        results.push((name, result.map(|()| started.elapsed())));
    }
    results
}

async fn rejoin(monitor: &MonitorHandle, cluster: &DemoCluster, name: &str) -> Result<(), String> {
    let status = monitor.status();
    let node = status
        .nodes
        .iter()
        .find(|n| &*n.name == name)
        .map(|n| n.id)
        .ok_or_else(|| format!("Meridian does not know {name}"))?;
    let id = monitor
        .command(Command::Rejoin { node })
        .await?
        .ok_or("the rejoin started no run")?;
    let run = monitor
        .wait_run(id, STEP_DEADLINE)
        .await
        .ok_or("the rejoin did not finish in time")?;
    if run.outcome != "completed" {
        return Err(run
            .phases
            .last()
            .map(|p| p.outcome.clone())
            .unwrap_or(run.outcome));
    }
    // Meridian started the server with pg_ctl: the kit takes charge of stopping it.
    cluster
        .servers
        .node(name)
        .adopt()
        .map_err(|e| format!("{e:#}"))?;
    let mut updates = monitor.status_updates();
    let streaming = updates.wait_for(|s| {
        s.nodes.iter().any(|n| {
            &*n.name == name
                && n.role == Role::Replica
                && n.health == Health::Healthy
                && n.wal_receiver.as_deref() == Some("streaming")
        })
    });
    match tokio::time::timeout(STEP_DEADLINE, streaming).await {
        Ok(Ok(_)) => Ok(()),
        _ => Err(format!(
            "{name} was restarted but Meridian has not seen it stream from the primary"
        )),
    }
}

/// Every `(writer, seq)` on the primary, read directly from the server (not through Meridian).
async fn read_back(cluster: &DemoCluster, primary: &str) -> anyhow::Result<HashSet<(u32, i64)>> {
    let rows = cluster
        .servers
        .node(primary)
        .query("SELECT writer, seq FROM demo_writes")
        .await
        .with_context(|| format!("cannot read the rows back from {primary}"))?;
    rows.into_iter()
        .map(|row| {
            let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
            Ok((field(0).parse()?, field(1).parse()?))
        })
        .collect()
}
