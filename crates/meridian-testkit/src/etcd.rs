//! `EtcdCluster`: a real etcd of 1 or 3 members on loopback, for tests of Meridian instances
//! that coordinate through etcd. What a test sees is documented on [`EtcdCluster`]; how it
//! is done: members are ordinary child processes (etcd may run as root), signalled and reaped
//! through `process` like PostgreSQL servers; readiness is polled over plain HTTP (`/health`
//! on the client port, or on a separate metrics port with TLS; `/version` on the peer port)
//! with a few lines of HTTP/1.0 rather than an HTTP client; the watchdog is `guardian`'s,
//! recognising members by their directory.

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures::future::try_join_all;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cluster::KEEP_ENV;
use crate::fault_link::FaultLink;
use crate::guardian::{Guardian, Recognise};
use crate::kit::base_dir;
use crate::server::{self, WatchedProcess, free_ports};
use crate::tls::Authority;
use crate::wait::{Check, wait_until};

/// The environment variable naming the etcd program (or the directory holding `etcd` and
/// `etcdctl`) instead of `etcd` on `PATH`.
pub const ETCD_BIN_ENV: &str = "MERIDIAN_ETCD_BIN";

/// How long a member may take to report healthy after its process starts.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one HTTP probe (`/health`, `/metrics`) may take before it counts as no answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Raft timing for tests; see the module note.
const HEARTBEAT_INTERVAL_MS: u32 = 50;
const ELECTION_TIMEOUT_MS: u32 = 500;

/// First starts tried on new ports when a chosen port turns out to be taken.
const PORT_ATTEMPTS: usize = 3;

/// The etcd programs of one installation.
#[derive(Debug, Clone)]
pub struct EtcdBin {
    etcd: PathBuf,
    etcdctl: Option<PathBuf>,
    version: String,
}

impl EtcdBin {
    /// The process's etcd programs, found on first call through `MERIDIAN_ETCD_BIN` or `PATH`.
    pub fn get() -> anyhow::Result<EtcdBin> {
        static BIN: OnceLock<Result<EtcdBin, String>> = OnceLock::new();
        BIN.get_or_init(|| EtcdBin::locate().map_err(|e| format!("{e:#}")))
            .clone()
            .map_err(|e| anyhow!(e))
    }

    /// Finds `etcd` through `MERIDIAN_ETCD_BIN` (a program, or a directory holding `etcd`)
    /// or on `PATH`, and `etcdctl` next to it or on `PATH`.
    pub fn locate() -> anyhow::Result<EtcdBin> {
        let etcd = match std::env::var_os(ETCD_BIN_ENV) {
            Some(path) => {
                let path = PathBuf::from(path);
                let program = if path.is_dir() {
                    path.join("etcd")
                } else {
                    path
                };
                if !program.is_file() {
                    bail!(
                        "{ETCD_BIN_ENV} names {}, which is not a file: set it to the etcd \
                         program or the directory holding it",
                        program.display()
                    );
                }
                program
            }
            None => on_path("etcd").context(
                "no etcd on PATH: install it (apt-get install -y etcd-server etcd-client) or set \
                 MERIDIAN_ETCD_BIN to the etcd program",
            )?,
        };
        let etcdctl = etcd
            .parent()
            .map(|dir| dir.join("etcdctl"))
            .filter(|sibling| sibling.is_file())
            .or_else(|| on_path("etcdctl"));
        let output = Command::new(&etcd)
            .arg("--version")
            .output()
            .with_context(|| format!("cannot run {} --version", etcd.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        // "etcd Version: 3.4.23" on the first line.
        let version = stdout
            .lines()
            .find_map(|line| line.strip_prefix("etcd Version:"))
            .map(|v| v.trim().to_owned())
            .filter(|v| output.status.success() && !v.is_empty())
            .with_context(|| {
                format!(
                    "{} --version did not print \"etcd Version: ...\": {}",
                    etcd.display(),
                    stdout.trim()
                )
            })?;
        Ok(EtcdBin {
            etcd,
            etcdctl,
            version,
        })
    }

    /// The `etcd` program.
    pub fn etcd(&self) -> &Path {
        &self.etcd
    }

    /// The `etcdctl` program; an error says how to install it when there is none.
    pub fn etcdctl(&self) -> anyhow::Result<&Path> {
        self.etcdctl.as_deref().context(
            "no etcdctl next to etcd or on PATH: install it (apt-get install -y etcd-client)",
        )
    }

    /// The server version, e.g. `3.4.23`.
    pub fn version(&self) -> &str {
        &self.version
    }
}

/// A running etcd cluster of 1 or 3 members, for tests of Meridian instances that
/// coordinate through etcd; every member stops when it is dropped.
///
/// ```no_run
/// # async fn example() -> anyhow::Result<()> {
/// use meridian_testkit::EtcdCluster;
///
/// let etcd = EtcdCluster::start(3).await?;
/// etcd.etcdctl(&["put", "k", "v"]).await?;
/// let leader = etcd.leader().await?;
/// leader.kill(); // the others elect a new leader within about a second
/// leader.start().await?; // same data directory: it rejoins and catches up
/// let links = etcd.links()?; // a FaultLink in front of each member
/// // give one Meridian instance `links.endpoints()`, then cut it off from etcd:
/// links.blackhole();
/// # Ok(()) }
/// ```
///
/// - The program is `$MERIDIAN_ETCD_BIN` (the `etcd` binary, or a directory holding it) or
///   `etcd` on `PATH` (Debian: `etcd-server`); `etcdctl` is looked for next to it, then on
///   `PATH` (Debian: `etcd-client`). etcd runs as whoever runs the tests, root included.
/// - Each member listens on two free loopback ports (client, peer) and keeps its data and its
///   log (`etcd.log`, zap JSON lines) in `<cluster dir>/<name>/`; the cluster directory is a
///   new one under `$MERIDIAN_TESTKIT_DIR` (default `$TMPDIR/meridian-testkit`), removed when
///   the cluster is dropped unless `MERIDIAN_TESTKIT_KEEP` is set. A member's data takes
///   about 125 MB of disk: etcd preallocates two 64 MB write-ahead log segments.
/// - Members start one after another, each as soon as the previous one serves its peer port
///   (started together, they wait up to a second for each other's answer to "does this
///   cluster exist yet?"), and the cluster is ready when every member's `/health` answers
///   `{"health":"true"}`: in etcd 3.4 that means a leader is known and a linearizable read
///   went through. A port taken by someone else between choosing and binding it makes the
///   whole first start begin again on new ports: peer URLs are fixed at bootstrap.
/// - Test settings: `--heartbeat-interval 50 --election-timeout 500` (half etcd's defaults)
///   so that a killed leader is replaced within a second; the defaults' ratio of 10
///   heartbeats to an election timeout is kept, and 500 ms leave room for a busy 2-core
///   machine, where shorter timeouts would risk elections without a fault.
///   `--pre-vote`: a member that comes back from a kill or a pause first asks whether it could
///   win before raising the term, so its return does not depose a healthy leader.
/// - Measured on the project's 2-core machines with etcd 3.4.23 (`cargo run --release -p
///   meridian-testkit --example etcd_start_time`, 3 × 10 trials, 2026-12-07): healthy after a
///   median of 0.27–0.37 s for 1 member and 0.22–0.27 s for 3 (at most 0.53 s); after the
///   leader of 3 is killed, an `etcdctl put` retried every 200 ms succeeds after a median of
///   0.70 s (at most 0.97 s).
/// - TLS ([`EtcdCluster::start_tls`]): client URLs are `https://127.0.0.1:PORT` with a
///   server certificate for `localhost` and `127.0.0.1` signed by a new CA, and
///   `--client-cert-auth`: a client must present a certificate signed by that CA, such as
///   [`EtcdCluster::tls_client_cert`]. Peer URLs stay plain HTTP. `/health` and `/metrics`
///   are probed on a third port, plain HTTP (`--listen-metrics-urls`), which etcd serves
///   without asking for a certificate.
/// - Teardown: dropping the cluster SIGKILLs every member (test data needs no clean stop),
///   also when the test panics; a watchdog process, as for the PostgreSQL clusters, kills
///   them and removes the directory if the test process dies without dropping it.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<EtcdMember>,
    bin: EtcdBin,
    dir: PathBuf,
    watchdog: Arc<Guardian>,
    keep: bool,
    tls: Option<Arc<Authority>>,
}

impl EtcdCluster {
    /// Starts a cluster of `members` (1 or 3) and waits until every member is healthy.
    pub async fn start(members: usize) -> anyhow::Result<EtcdCluster> {
        EtcdCluster::start_with(members, false).await
    }

    /// As [`EtcdCluster::start`], with clients served over TLS only and asked for a client
    /// certificate: see [`EtcdCluster::tls_root_cert`], [`EtcdCluster::tls_client_cert`] and
    /// [`EtcdCluster::tls_client_key`].
    pub async fn start_tls(members: usize) -> anyhow::Result<EtcdCluster> {
        EtcdCluster::start_with(members, true).await
    }

    async fn start_with(members: usize, tls: bool) -> anyhow::Result<EtcdCluster> {
        if members != 1 && members != 3 {
            bail!(
                "an etcd test cluster has 1 or 3 members, not {members}: 1 for tests that need \
                 a store, 3 for tests that lose a member and keep a quorum (2 would lose it)"
            );
        }
        let bin = tokio::task::spawn_blocking(EtcdBin::get).await??;
        let base = base_dir();
        fs::create_dir_all(&base).with_context(|| format!("cannot create {}", base.display()))?;
        let dir = tempfile::Builder::new()
            .prefix("etcd-")
            .tempdir_in(&base)
            .context("cannot create the etcd cluster directory")?
            .keep();
        let keep = std::env::var_os(KEEP_ENV).is_some();
        // A member is recognised by its `--data-dir` under `dir`, which never matches a
        // reused PID; members hold no data worth a clean stop: SIGKILL at once.
        let watchdog = Arc::new(Guardian::start(
            &dir,
            keep,
            Recognise::PathUnder(dir.clone()),
            Signal::SIGKILL,
        )?);
        let mut cluster = EtcdCluster {
            members: Vec::new(),
            bin,
            dir,
            watchdog,
            keep,
            tls: None,
        };
        // From here on, a failure drops `cluster`, which stops whatever was started.
        if tls {
            cluster.tls = Some(Arc::new(Authority::install(&cluster.dir)?));
        }
        let mut attempt = 1;
        loop {
            cluster.plan(members)?;
            let Err(e) = cluster.boot().await else {
                return Ok(cluster);
            };
            let port_taken = cluster
                .members
                .iter()
                .any(|m| m.log_tail(50).contains("address already in use"));
            for member in &cluster.members {
                member.kill();
            }
            if !port_taken || attempt == PORT_ATTEMPTS {
                return Err(e);
            }
            attempt += 1;
        }
    }

    /// Starts every member for the first time and waits until all are healthy.
    ///
    /// One after the other, each once the previous one serves its peer port: on its first
    /// start a member asks each peer whether the cluster already exists, and a peer that is
    /// listening but not serving yet (it is asking the same question) leaves that request
    /// hanging for a second. Started together, 3 members took a median of 1.3–2.2 s to be
    /// healthy, mostly waiting for each other this way; one after the other, 0.22–0.27 s.
    /// (Client ports are served only once a quorum has elected a leader, so the peer port is
    /// the one that tells.)
    async fn boot(&self) -> anyhow::Result<()> {
        for member in &self.members {
            member.spawn()?;
            member.wait_for(Wanted::PeerPort).await?;
        }
        try_join_all(
            self.members
                .iter()
                .map(|member| member.wait_for(Wanted::Healthy)),
        )
        .await?;
        Ok(())
    }

    /// Chooses ports and creates the (empty) member directories for a first start.
    fn plan(&mut self, members: usize) -> anyhow::Result<()> {
        for member in self.members.drain(..) {
            let _ = fs::remove_dir_all(&member.dir);
        }
        // Client, peer, and with TLS a plain metrics port.
        let per_member = if self.tls.is_some() { 3 } else { 2 };
        let ports = free_ports(per_member * members)?;
        let names: Vec<String> = (1..=members).map(|i| format!("etcd-{i}")).collect();
        let initial_cluster = names
            .iter()
            .zip(ports.chunks(per_member))
            .map(|(name, ports)| format!("{name}=http://127.0.0.1:{}", ports[1]))
            .collect::<Vec<_>>()
            .join(",");
        // Unique per start, so that members of two clusters can never join each other.
        let token = format!(
            "meridian-{}-{}",
            std::process::id(),
            self.dir.file_name().unwrap_or_default().to_string_lossy()
        );
        for (name, ports) in names.iter().zip(ports.chunks(per_member)) {
            let dir = self.dir.join(name);
            fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            self.members.push(EtcdMember {
                name: name.clone(),
                client_port: ports[0],
                peer_port: ports[1],
                metrics_port: ports.get(2).copied(),
                tls: self.tls.clone(),
                dir,
                initial_cluster: initial_cluster.clone(),
                token: token.clone(),
                bin: self.bin.clone(),
                process: WatchedProcess::new(self.watchdog.clone()),
            });
        }
        Ok(())
    }

    /// The client URLs of every member (`http://127.0.0.1:PORT`, or `https://` with TLS), in
    /// member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(EtcdMember::endpoint).collect()
    }

    /// Every member, in order (`etcd-1` first).
    pub fn members(&self) -> &[EtcdMember] {
        &self.members
    }

    /// Member `i`, counted from 0 (named `etcd-{i+1}`); panics if there is none.
    pub fn member(&self, i: usize) -> &EtcdMember {
        self.members.get(i).unwrap_or_else(|| {
            panic!(
                "no etcd member {i}: the cluster has {} (counted from 0)",
                self.members.len()
            )
        })
    }

    /// The member that leads, once exactly one running member says it does (its
    /// `etcd_server_is_leader` metric); waits through an election.
    pub async fn leader(&self) -> anyhow::Result<&EtcdMember> {
        wait_until(START_TIMEOUT, "one etcd leader", || async {
            let mut leaders = Vec::new();
            let mut seen = Vec::new();
            for member in self.members.iter().filter(|m| m.is_running()) {
                match member.is_leader().await {
                    Ok(true) => leaders.push(member),
                    Ok(false) => {}
                    Err(e) => seen.push(format!("{}: {e:#}", member.name)),
                }
            }
            match leaders.as_slice() {
                [leader] => Check::Ready(*leader),
                _ => {
                    let names: Vec<&str> = leaders.iter().map(|m| m.name()).collect();
                    seen.insert(0, format!("leaders {names:?}"));
                    Check::NotYet(seen.join("; "))
                }
            }
        })
        .await
    }

    /// A [`FaultLink`] in front of each member's client port, to give one client (a Meridian
    /// instance) endpoints that a test can cut off from etcd while the others keep theirs.
    pub fn links(&self) -> anyhow::Result<EtcdLinks> {
        let links = self
            .members
            .iter()
            .map(EtcdMember::link)
            .collect::<anyhow::Result<_>>()?;
        Ok(EtcdLinks {
            links,
            scheme: scheme(self.tls.as_deref()),
        })
    }

    /// Runs `etcdctl` (API v3) against the running members, e.g. `&["put", "k", "v"]`, and
    /// returns its standard output; see [`EtcdMember::etcdctl`].
    pub async fn etcdctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let endpoints: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.is_running())
            .map(EtcdMember::endpoint)
            .collect();
        etcdctl(&self.bin, self.tls.as_deref(), &endpoints, args).await
    }

    /// Runs `etcdctl` (API v3) against `endpoints` (e.g. [`EtcdLinks::endpoints`]), as
    /// [`EtcdMember::etcdctl`] does.
    pub async fn etcdctl_at(&self, endpoints: &[String], args: &[&str]) -> anyhow::Result<String> {
        etcdctl(&self.bin, self.tls.as_deref(), endpoints, args).await
    }

    /// With TLS, the CA certificate (PEM) that signed the members' certificate and the
    /// client's: what a client verifies the members against.
    pub fn tls_root_cert(&self) -> Option<&Path> {
        self.tls.as_deref().map(|tls| tls.root_cert.as_path())
    }

    /// With TLS, a client certificate (PEM) the members accept.
    pub fn tls_client_cert(&self) -> Option<&Path> {
        self.tls.as_deref().map(|tls| tls.client_cert.as_path())
    }

    /// With TLS, the key (PEM) of [`EtcdCluster::tls_client_cert`].
    pub fn tls_client_key(&self) -> Option<&Path> {
        self.tls.as_deref().map(|tls| tls.client_key.as_path())
    }

    /// The programs the cluster runs.
    pub fn bin(&self) -> &EtcdBin {
        &self.bin
    }

    /// The cluster's directory (one subdirectory per member: `data/` and `etcd.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The watchdog process's PID while it runs (for tests of the teardown).
    pub fn watchdog_pid(&self) -> Option<u32> {
        self.watchdog.pid()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        // Kill first: nothing below may leave a member running, even if it panics.
        for member in &self.members {
            member.kill();
        }
        // `writeln!`, not `eprintln!`: a closed stderr must not panic here (a panic while
        // unwinding would skip the rest of the teardown).
        let mut stderr = std::io::stderr();
        if std::thread::panicking() {
            for member in &self.members {
                let _ = writeln!(
                    stderr,
                    "--- {} ({}) last log lines ---\n{}",
                    member.name,
                    member.log_path().display(),
                    member.log_tail(15)
                );
            }
        }
        if self.keep {
            let _ = writeln!(stderr, "{KEEP_ENV} is set: keeping {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
        self.watchdog.dismiss();
    }
}

/// One member of an [`EtcdCluster`].
///
/// Process control (`kill`, `pause`, `resume`) is synchronous and immediate; `start` and `stop`
/// are async because they wait for the member. All methods take `&self`.
#[derive(Debug)]
pub struct EtcdMember {
    name: String,
    client_port: u16,
    peer_port: u16,
    /// With TLS: `/health` and `/metrics` over plain HTTP.
    metrics_port: Option<u16>,
    tls: Option<Arc<Authority>>,
    dir: PathBuf,
    initial_cluster: String,
    token: String,
    bin: EtcdBin,
    process: WatchedProcess,
}

impl EtcdMember {
    /// The member's name (`etcd-1`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its client URL, `http://127.0.0.1:PORT` (`https://` with TLS).
    pub fn endpoint(&self) -> String {
        format!(
            "{}://127.0.0.1:{}",
            scheme(self.tls.as_deref()),
            self.client_port
        )
    }

    /// The loopback port clients connect to (gRPC, and HTTP: `/health`, `/metrics`, `/v3/`;
    /// over TLS with a client certificate when started with [`EtcdCluster::start_tls`]).
    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// The client address.
    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.client_port))
    }

    /// The loopback port the other members connect to.
    pub fn peer_port(&self) -> u16 {
        self.peer_port
    }

    /// The peer address.
    pub fn peer_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.peer_port))
    }

    /// With TLS, the loopback port serving `/health` and `/metrics` over plain HTTP.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_port
    }

    /// Where `/health` and `/metrics` are probed over plain HTTP: the metrics port with TLS,
    /// the client port without.
    fn probe_addr(&self) -> SocketAddr {
        let port = self.metrics_port.unwrap_or(self.client_port);
        SocketAddr::from((Ipv4Addr::LOCALHOST, port))
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The member's log file (its stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    /// The process's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid().map(|pid| pid.as_raw() as u32)
    }

    /// Whether the process is alive (it may be paused).
    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    /// Starts the member again on its data directory and ports, and waits until it is
    /// healthy: back in the cluster and caught up enough to serve a linearizable read (which
    /// needs a quorum of members running).
    pub async fn start(&self) -> anyhow::Result<()> {
        if self.is_running() {
            bail!("{} is already running", self.name);
        }
        self.spawn()?;
        self.wait_for(Wanted::Healthy).await
    }

    /// Stops the member cleanly (SIGTERM: a leader hands leadership over first), killing it
    /// if it has not exited within 10 s.
    pub async fn stop(&self) -> anyhow::Result<()> {
        self.process
            .stop(&self.name, Signal::SIGTERM, Duration::from_secs(10))
            .await
    }

    /// Kills the member the way a crash does (SIGKILL); a later [`EtcdMember::start`]
    /// recovers from its write-ahead log.
    pub fn kill(&self) {
        self.process.kill();
    }

    /// Freezes the member (SIGSTOP): TCP connects to it still succeed, nothing answers, and
    /// the others stop hearing from it.
    pub fn pause(&self) {
        self.process.pause();
    }

    /// Undoes [`EtcdMember::pause`].
    pub fn resume(&self) {
        self.process.resume();
    }

    /// `Ok` when `GET /health` answers `{"health":"true"}`; otherwise an error saying what it
    /// answered, or that it did not within 2 s.
    pub async fn health(&self) -> anyhow::Result<()> {
        let (status, body) = http_get(self.probe_addr(), "/health").await?;
        if status == 200 && body.contains(r#""health":"true""#) {
            Ok(())
        } else {
            bail!("{} /health: HTTP {status} {}", self.name, body.trim())
        }
    }

    /// Whether this member is the leader, from its `etcd_server_is_leader` metric.
    pub async fn is_leader(&self) -> anyhow::Result<bool> {
        let (status, body) = http_get(self.probe_addr(), "/metrics").await?;
        if status != 200 {
            bail!("{} /metrics: HTTP {status}", self.name);
        }
        body.lines()
            .find_map(|line| line.strip_prefix("etcd_server_is_leader "))
            .map(|value| value.trim() == "1")
            .with_context(|| format!("{} /metrics has no etcd_server_is_leader", self.name))
    }

    /// A new [`FaultLink`] in front of the client port; clients given
    /// `http://127.0.0.1:{link.port()}` (`https://` with TLS) reach this member through it.
    pub fn link(&self) -> anyhow::Result<FaultLink> {
        FaultLink::start(self.client_addr())
    }

    /// Runs `etcdctl` (API v3) against this member only, e.g. `&["get", "k",
    /// "--print-value-only"]`, and returns its standard output; fails with its standard error
    /// if it exits non-zero. Dial and command timeouts default to 2 s and 5 s (later
    /// `--dial-timeout`/`--command-timeout` arguments override them).
    pub async fn etcdctl(&self, args: &[&str]) -> anyhow::Result<String> {
        etcdctl(&self.bin, self.tls.as_deref(), &[self.endpoint()], args).await
    }

    /// The last lines of the member's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        server::log_tail(&self.log_path(), lines)
    }

    fn spawn(&self) -> anyhow::Result<()> {
        let log = server::open_log(&self.log_path())?;
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut command = Command::new(self.bin.etcd());
        // etcd also reads its flags from ETCD_* variables; none of the caller's may interfere.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ETCD_") {
                command.env_remove(name);
            }
        }
        let mut args: Vec<OsString> = vec![
            "--name".into(),
            self.name.clone().into(),
            "--data-dir".into(),
            self.data_dir().into(),
            "--listen-client-urls".into(),
            client.clone().into(),
            "--advertise-client-urls".into(),
            client.into(),
            "--listen-peer-urls".into(),
            peer.clone().into(),
            "--initial-advertise-peer-urls".into(),
            peer.into(),
            // Read only on the first start; later starts recover the membership from `data/`.
            "--initial-cluster".into(),
            self.initial_cluster.clone().into(),
            "--initial-cluster-state".into(),
            "new".into(),
            "--initial-cluster-token".into(),
            self.token.clone().into(),
            "--heartbeat-interval".into(),
            HEARTBEAT_INTERVAL_MS.to_string().into(),
            "--election-timeout".into(),
            ELECTION_TIMEOUT_MS.to_string().into(),
            "--pre-vote".into(),
            "--logger".into(),
            "zap".into(),
            "--log-outputs".into(),
            "stderr".into(),
        ];
        if let (Some(tls), Some(metrics_port)) = (&self.tls, self.metrics_port) {
            args.extend::<[OsString; 9]>([
                "--cert-file".into(),
                tls.server_cert.clone().into(),
                "--key-file".into(),
                tls.server_key.clone().into(),
                "--trusted-ca-file".into(),
                tls.root_cert.clone().into(),
                "--client-cert-auth".into(),
                "--listen-metrics-urls".into(),
                format!("http://127.0.0.1:{metrics_port}").into(),
            ]);
        }
        let child = {
            use std::os::unix::process::CommandExt;
            command
                .args(args)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                // Its own process group, like the PostgreSQL servers: a Ctrl-C meant for the
                // test run must not reach it before the kit stops it.
                .process_group(0)
                .spawn()
                .with_context(|| {
                    format!("cannot start {} ({})", self.name, self.bin.etcd().display())
                })?
        };
        // Reaped through its PID (see `server`), not through `Child::wait`.
        self.process.record(Pid::from_raw(child.id() as i32));
        Ok(())
    }

    /// Waits until the member is as `wanted`, or has exited.
    async fn wait_for(&self, wanted: Wanted) -> anyhow::Result<()> {
        let what = match wanted {
            Wanted::PeerPort => format!("{} to serve its peer port", self.name),
            Wanted::Healthy => format!("{} to report healthy", self.name),
        };
        let result = wait_until(START_TIMEOUT, &what, || async {
            if !self.is_running() {
                // Ready, to stop waiting: an exited member will never answer.
                return Check::Ready(false);
            }
            let answer = match wanted {
                Wanted::PeerPort => http_get(self.peer_addr(), "/version").await.map(drop),
                Wanted::Healthy => self.health().await,
            };
            match answer {
                Ok(()) => Check::Ready(true),
                Err(e) => Check::NotYet(format!("{e:#}")),
            }
        })
        .await;
        let reason = match result {
            Ok(true) => return Ok(()),
            Ok(false) => "it exited".to_owned(),
            Err(e) => {
                self.kill();
                format!("{e:#}")
            }
        };
        bail!(
            "{} did not start: {reason}\n--- last lines of {} ---\n{}",
            self.name,
            self.log_path().display(),
            self.log_tail(20)
        )
    }
}

impl Drop for EtcdMember {
    /// A member dropped without its cluster's teardown (an unwinding start) is killed too.
    fn drop(&mut self) {
        self.kill();
    }
}

/// What [`EtcdMember::wait_for`] waits for.
#[derive(Debug, Clone, Copy)]
enum Wanted {
    /// The peer port answers HTTP (`GET /version`): the member has started its server.
    PeerPort,
    /// `GET /health` answers `{"health":"true"}` (see [`EtcdMember::health`]).
    Healthy,
}

/// A [`FaultLink`] in front of each member of a cluster, from [`EtcdCluster::links`].
#[derive(Debug)]
pub struct EtcdLinks {
    links: Vec<FaultLink>,
    scheme: &'static str,
}

impl EtcdLinks {
    /// The URLs to give the client instead of [`EtcdCluster::endpoints`], in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.links
            .iter()
            .map(|link| format!("{}://127.0.0.1:{}", self.scheme, link.port()))
            .collect()
    }

    /// The link in front of member `i`; panics if there is none.
    pub fn link(&self, i: usize) -> &FaultLink {
        &self.links[i]
    }

    /// Every link, in member order.
    pub fn links(&self) -> &[FaultLink] {
        &self.links
    }

    /// Cuts the client off from every member (both directions blackholed).
    pub fn blackhole(&self) {
        self.links.iter().for_each(FaultLink::blackhole);
    }

    /// Resets the client's connections to every member, now and until the fault changes.
    pub fn reset(&self) {
        self.links.iter().for_each(FaultLink::reset);
    }

    /// Heals every link.
    pub fn pass(&self) {
        self.links.iter().for_each(FaultLink::pass);
    }
}

/// The client URLs' scheme.
fn scheme(tls: Option<&Authority>) -> &'static str {
    if tls.is_some() { "https" } else { "http" }
}

/// `ETCDCTL_API=3 etcdctl --endpoints=... ARGS` (with TLS, `--cacert --cert --key` too), with
/// the caller's other `ETCDCTL_*` removed.
async fn etcdctl(
    bin: &EtcdBin,
    tls: Option<&Authority>,
    endpoints: &[String],
    args: &[&str],
) -> anyhow::Result<String> {
    let mut command = tokio::process::Command::new(bin.etcdctl()?);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ETCDCTL_") {
            command.env_remove(name);
        }
    }
    let output = command
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .args(["--dial-timeout=2s", "--command-timeout=5s"])
        .args(tls.map_or_else(Vec::new, |tls| {
            vec![
                format!("--cacert={}", tls.root_cert.display()),
                format!("--cert={}", tls.client_cert.display()),
                format!("--key={}", tls.client_key.display()),
            ]
        }))
        .args(args)
        .stdin(Stdio::null())
        // A caller that stops waiting (a `wait_until` deadline) ends the run.
        .kill_on_drop(true)
        .output()
        .await
        .context("cannot run etcdctl")?;
    if !output.status.success() {
        bail!(
            "etcdctl {} against {endpoints:?} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `GET path` over HTTP/1.0 (so that the answer is never chunked) with [`PROBE_TIMEOUT`]:
/// the status code and the body.
///
/// The body ends after `Content-Length` bytes, or when the server closes: etcd's peer port
/// sometimes keeps an HTTP/1.0 connection open after answering.
async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut response = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            response.extend_from_slice(&chunk[..n]);
            if let Some(length) = complete_length(&response) {
                response.truncate(length);
                break;
            }
        }
        anyhow::Ok(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("GET {path} on {addr}: no answer within {PROBE_TIMEOUT:?}"))?
        .with_context(|| format!("GET {path} on {addr}"))?;
    // "HTTP/1.0 200 OK\r\n...headers...\r\n\r\nbody"
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("GET {path} on {addr}: not an HTTP answer: {response:.200}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The length of a whole HTTP response once its headers and all `Content-Length` bytes of its
/// body are in `response`; `None` while more is due (or no length is given: read to the end).
fn complete_length(response: &[u8]) -> Option<usize> {
    let headers_end = response.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let headers = String::from_utf8_lossy(&response[..headers_end]);
    let body_length: usize = headers.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })?;
    (response.len() >= headers_end + body_length).then_some(headers_end + body_length)
}

/// The first file called `program` in a `PATH` directory.
fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_complete_after_its_content_length() {
        let head =
            b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n";
        let whole = [&head[..], b"{...}"].concat();
        assert_eq!(complete_length(&whole[..head.len() - 2]), None);
        assert_eq!(complete_length(&whole[..whole.len() - 1]), None);
        assert_eq!(complete_length(&whole), Some(whole.len()));
        let extra = [&whole[..], b"more"].concat();
        assert_eq!(complete_length(&extra), Some(whole.len()));
        // No length: the body ends when the server closes.
        assert_eq!(complete_length(b"HTTP/1.0 200 OK\r\n\r\nbody"), None);
    }
}
