//! One PostgreSQL server: its directory, port and process, and the helpers tests drive it with.
//!
//! A node's process control (`kill`, `pause`, `resume`) is synchronous and immediate, like
//! pulling a plug; starting, stopping and querying are async because they wait for the server.
//! All methods take `&self`, so a test can kill a node while another task queries it.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use meridian_core::Lsn;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::guardian::Guardian;
use crate::kit::Kit;
use crate::process;
use crate::server::{self, WatchedProcess, free_port};
use crate::wait::{Check, wait_until};

/// How long a server may take to accept connections after its process starts.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// One PostgreSQL server of a test cluster.
#[derive(Debug)]
pub struct Node {
    name: String,
    region: String,
    /// Chosen free before the first start; changed only if that start finds it taken.
    port: AtomicU16,
    started_once: AtomicBool,
    dir: PathBuf,
    kit: Arc<Kit>,
    postmaster: WatchedProcess,
}

impl Node {
    pub(crate) fn new(
        name: &str,
        region: &str,
        dir: PathBuf,
        kit: Arc<Kit>,
        guardian: Arc<Guardian>,
    ) -> anyhow::Result<Node> {
        fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        kit.run_as().give(&dir)?;
        Ok(Node {
            name: name.to_owned(),
            region: region.to_owned(),
            port: AtomicU16::new(free_port()?),
            started_once: AtomicBool::new(false),
            dir,
            kit,
            postmaster: WatchedProcess::new(guardian),
        })
    }

    /// The node's name (`<region>-<n>`), also its `application_name` for replication.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The region the node belongs to.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port.load(Ordering::Relaxed)
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port()))
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server's log file (its stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// A libpq connection string for the superuser `postgres`, database `postgres`.
    pub fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port()
        )
    }

    /// The same as a URL: `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port())
    }

    /// The postmaster's PID while the server runs.
    pub fn pid(&self) -> Option<u32> {
        self.postmaster.pid().map(|pid| pid.as_raw() as u32)
    }

    /// Whether the server process is alive (it may be paused).
    pub fn is_running(&self) -> bool {
        self.postmaster.is_running()
    }

    /// Starts the server and waits until it accepts connections (as primary or hot standby).
    pub async fn start(&self) -> anyhow::Result<()> {
        if self.is_running() {
            bail!("{} is already running", self.name);
        }
        // The port was free when chosen, but a parallel test may have taken it since: on the
        // first start only (nothing refers to the port yet), choose another and try again.
        let mut attempts = 0;
        loop {
            let log_start = fs::metadata(self.log_path()).map(|m| m.len()).unwrap_or(0);
            let pid = self.spawn_postmaster()?;
            match self.wait_accepting(pid).await {
                Ok(()) => {
                    self.started_once.store(true, Ordering::Relaxed);
                    return Ok(());
                }
                Err(e) => {
                    attempts += 1;
                    let port_taken = server::log_since(&self.log_path(), log_start)
                        .contains("Address already in use");
                    if !port_taken || attempts >= 5 || self.started_once.load(Ordering::Relaxed) {
                        return Err(e);
                    }
                    self.port.store(free_port()?, Ordering::Relaxed);
                }
            }
        }
    }

    fn spawn_postmaster(&self) -> anyhow::Result<Pid> {
        let log = server::open_log(&self.log_path())?;
        let child = {
            use std::os::unix::process::CommandExt;
            self.kit
                .run_as()
                .command(self.kit.bin().program("postgres"))
                .arg("-D")
                .arg(self.data_dir())
                .arg("-p")
                .arg(self.port().to_string())
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                // Its own process group: a Ctrl-C meant for the test run must not reach it
                // before the kit shuts it down in order.
                .process_group(0)
                .spawn()
                .with_context(|| format!("cannot start postgres for {}", self.name))?
        };
        // The child is reaped through its PID (see `server`), not through `Child::wait`.
        let pid = Pid::from_raw(child.id() as i32);
        self.postmaster.record(pid);
        Ok(pid)
    }

    async fn wait_accepting(&self, pid: Pid) -> anyhow::Result<()> {
        let pid_file = self.data_dir().join("postmaster.pid");
        let result = wait_until(
            START_TIMEOUT,
            &format!("{} to accept connections", self.name),
            || {
                // `postmaster.pid` line 8 is the status pg_ctl waits for: "ready" or "standby" once
                // connections are accepted. Line 1 must be this process: the file of a killed
                // server stays behind until the next start rewrites it.
                let status = if !self.is_running() {
                    Err("the server exited")
                } else {
                    match fs::read_to_string(&pid_file) {
                        Ok(text) => {
                            let lines: Vec<&str> = text.lines().collect();
                            let ours = lines.first().map(|l| l.trim()) == Some(&*pid.to_string());
                            let status = lines.get(7).map(|l| l.trim()).unwrap_or("");
                            if ours && (status == "ready" || status == "standby") {
                                Ok(())
                            } else {
                                Err("starting")
                            }
                        }
                        Err(_) => Err("no postmaster.pid yet"),
                    }
                };
                async move {
                    match status {
                        Ok(()) => Check::Ready(()),
                        Err(seen) => Check::NotYet(seen.to_owned()),
                    }
                }
            },
        )
        .await;
        if let Err(e) = result {
            self.kill();
            bail!(
                "{} did not start: {e:#}\n--- last lines of {} ---\n{}",
                self.name,
                self.log_path().display(),
                self.log_tail(20)
            );
        }
        Ok(())
    }

    /// Stops the server cleanly (fast shutdown: sessions are terminated, a checkpoint is taken).
    pub async fn stop(&self) -> anyhow::Result<()> {
        self.postmaster
            .stop(&self.name, Signal::SIGINT, Duration::from_secs(30))
            .await
    }

    /// Stops and starts the server.
    pub async fn restart(&self) -> anyhow::Result<()> {
        self.stop().await?;
        self.start().await
    }

    /// Kills the server the way a crash does: SIGKILL to the postmaster and, at the same
    /// instant, to each of its processes (as when the host dies or the OOM killer takes the
    /// instance). Open connections are cut without a goodbye; a later [`Node::start`] runs
    /// crash recovery.
    pub fn kill(&self) {
        self.postmaster.kill();
    }

    /// Freezes every process of the server (SIGSTOP): a hung server. Connections to it stay
    /// open and TCP connects still succeed (the kernel completes the handshake), but nothing
    /// answers.
    pub fn pause(&self) {
        self.postmaster.pause();
    }

    /// Undoes [`Node::pause`].
    pub fn resume(&self) {
        self.postmaster.resume();
    }

    /// Takes charge of a server that something else started in this node's data directory
    /// (Meridian's rejoin restarts an old primary with `pg_ctl`): from then on the kit stops,
    /// kills, pauses and tears it down like one it started. Fails if no server runs there.
    pub fn adopt(&self) -> anyhow::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let pid = self.foreign_postmaster().with_context(|| {
            format!(
                "no server runs in {} (no live postmaster in postmaster.pid)",
                self.data_dir().display()
            )
        })?;
        self.postmaster.record(pid);
        self.started_once.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// A live postmaster of this data directory that the kit did not start, from
    /// `postmaster.pid` (line 1 its PID, line 2 its data directory).
    fn foreign_postmaster(&self) -> Option<Pid> {
        let text = fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        let mut lines = text.lines();
        let pid = Pid::from_raw(lines.next()?.trim().parse().ok()?);
        let dir = fs::canonicalize(lines.next()?.trim()).ok()?;
        (dir == fs::canonicalize(self.data_dir()).ok()? && process::is_postgres(pid)).then_some(pid)
    }

    /// Shuts the server down immediately for teardown (immediate shutdown, then SIGKILL),
    /// whoever started it.
    pub(crate) fn shut_down_for_teardown(&self) {
        self.postmaster.shut_down(
            || self.foreign_postmaster(),
            Signal::SIGQUIT,
            Duration::from_secs(10),
        );
        self.remove_leftover_shared_memory();
    }

    /// Promotes this replica (`pg_promote(wait => true)`), returning once it accepts writes.
    pub async fn promote(&self) -> anyhow::Result<()> {
        let promoted = self
            .query_one("SELECT pg_promote(wait => true, wait_seconds => 60)")
            .await?;
        if promoted.as_deref() != Some("t") {
            bail!("pg_promote on {} returned {promoted:?}", self.name);
        }
        Ok(())
    }

    /// Opens a session as `postgres` to database `postgres`; its connection task runs on the
    /// current tokio runtime.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let mut config: tokio_postgres::Config = self.conninfo().parse()?;
        config
            .connect_timeout(Duration::from_secs(10))
            .application_name("meridian-testkit");
        let (client, connection) = config
            .connect(NoTls)
            .await
            .with_context(|| format!("cannot connect to {} ({})", self.name, self.addr()))?;
        tokio::spawn(async move {
            // The error, if any, surfaces on the client's next call.
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Runs SQL (one or several statements, simple protocol) in a new session, like `psql -c`.
    pub async fn execute(&self, sql: &str) -> anyhow::Result<()> {
        self.client()
            .await?
            .batch_execute(sql)
            .await
            .with_context(|| format!("on {}: {sql}", self.name))
    }

    /// Runs a query in a new session and returns its rows as text, like `psql -At`.
    pub async fn query(&self, sql: &str) -> anyhow::Result<Vec<Vec<Option<String>>>> {
        let messages = self
            .client()
            .await?
            .simple_query(sql)
            .await
            .with_context(|| format!("on {}: {sql}", self.name))?;
        Ok(rows_as_text(messages))
    }

    /// The first column of the first row of a query, or `None` for SQL NULL or no row.
    pub async fn query_one(&self, sql: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .query(sql)
            .await?
            .into_iter()
            .next()
            .and_then(|row| row.into_iter().next().flatten()))
    }

    /// Whether the server is a replica (`pg_is_in_recovery()`).
    pub async fn is_in_recovery(&self) -> anyhow::Result<bool> {
        Ok(self
            .query_one("SELECT pg_is_in_recovery()")
            .await?
            .as_deref()
            == Some("t"))
    }

    /// The WAL position: the current insert position on a primary, the replayed one on a
    /// replica.
    pub async fn lsn(&self) -> anyhow::Result<Lsn> {
        let text = self
            .query_one(
                "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
                 ELSE pg_current_wal_lsn() END",
            )
            .await?
            .with_context(|| format!("{} reported no WAL position", self.name))?;
        Ok(text.parse()?)
    }

    /// The last lines of the server log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        server::log_tail(&self.log_path(), lines)
    }

    /// Sets a parameter in the data directory's `postgresql.auto.conf` (as `ALTER SYSTEM`
    /// would), for a server that is not running or before a reload.
    pub fn set_auto_conf(&self, name: &str, value: &str) -> anyhow::Result<()> {
        set_auto_conf(&self.data_dir(), name, value)
    }

    /// A killed postmaster leaves its System V shared memory segment behind (the next start
    /// in the same directory would remove it). The directory is about to go, so remove it now:
    /// the shmid is on line 7 of `postmaster.pid`.
    fn remove_leftover_shared_memory(&self) {
        let Ok(text) = fs::read_to_string(self.data_dir().join("postmaster.pid")) else {
            return;
        };
        if let Some(shmid) = text
            .lines()
            .nth(6)
            .and_then(|l| l.split_whitespace().nth(1))
            && shmid.parse::<u64>().is_ok()
        {
            let _ = std::process::Command::new("ipcrm")
                .args(["-m", shmid])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Rewrites one parameter of `postgresql.auto.conf`, keeping every other line.
pub(crate) fn set_auto_conf(data_dir: &Path, name: &str, value: &str) -> anyhow::Result<()> {
    let path = data_dir.join("postgresql.auto.conf");
    let text = fs::read_to_string(&path).unwrap_or_default();
    let mut out: Vec<String> = text
        .lines()
        .filter(|line| line.split('=').next().map(str::trim) != Some(name))
        .map(str::to_owned)
        .collect();
    out.push(format!("{name} = '{}'", value.replace('\'', "''")));
    fs::write(&path, out.join("\n") + "\n")
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The rows of a simple-protocol answer, as text (`None` for NULL), like `psql -At`.
pub fn rows_as_text(messages: Vec<SimpleQueryMessage>) -> Vec<Vec<Option<String>>> {
    messages
        .into_iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_owned))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}
