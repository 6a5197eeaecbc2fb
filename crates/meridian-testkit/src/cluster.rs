//! `TestCluster`: a primary and its replicas, across regions, with real streaming replication.
//!
//! The first region holds the primary and replicas that stream from it. Every other region's
//! first node is its *region leader*, streaming from the primary; the region's other nodes
//! cascade from the leader, as a region across a WAN would be built. Each replica is made with
//! `pg_basebackup -X stream -R` and a physical replication slot on its upstream, named after
//! it, and connects with its node name as `application_name` (what
//! `synchronous_standby_names` refers to).
//!
//! Dropping the cluster stops every server and removes its directory, also when the test
//! panics; a watchdog process does the same if the test process is killed (see `guardian`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::future::join_all;
use nix::sys::signal::Signal;

use crate::fault_link::FaultLink;
use crate::guardian::{Guardian, Recognise};
use crate::kit::Kit;
use crate::node::Node;
use crate::wait::{Check, wait_until};

/// How long replicas may take to start streaming after the cluster is built.
const STREAMING_TIMEOUT: Duration = Duration::from_secs(60);

/// The environment variable that keeps cluster directories after the test, for debugging.
pub const KEEP_ENV: &str = "MERIDIAN_TESTKIT_KEEP";

#[derive(Debug, Clone)]
struct RegionSpec {
    name: String,
    nodes: usize,
}

#[derive(Debug, Clone)]
struct Synchronous {
    quorum: usize,
    /// `None`: every replica of the primary's region.
    names: Option<Vec<String>>,
}

/// Describes a cluster to start; see [`TestCluster::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until .start() is awaited"]
pub struct ClusterBuilder {
    regions: Vec<RegionSpec>,
    synchronous: Option<Synchronous>,
    replication_links: bool,
    tls: bool,
    dir: Option<PathBuf>,
    kit: Option<Arc<Kit>>,
    keep_files: bool,
    settings: Vec<(String, String)>,
}

impl ClusterBuilder {
    /// Adds replicas to the primary's region (named `main` unless a region was declared).
    pub fn replicas(mut self, count: usize) -> Self {
        if self.regions.is_empty() {
            self.regions.push(RegionSpec {
                name: "main".into(),
                nodes: 1,
            });
        }
        self.regions[0].nodes += count;
        self
    }

    /// Adds a region of `nodes` servers. The first region declared holds the primary (and
    /// `nodes - 1` replicas); in later regions the first node is the region leader and the
    /// others cascade from it. Node names are `<region>-<n>`, counted from 1.
    pub fn region(mut self, name: &str, nodes: usize) -> Self {
        self.regions.push(RegionSpec {
            name: name.to_owned(),
            nodes,
        });
        self
    }

    /// Synchronous replication: commits wait for `quorum` of the primary region's replicas
    /// (`synchronous_standby_names = 'ANY quorum (...)'`).
    pub fn synchronous(mut self, quorum: usize) -> Self {
        self.synchronous = Some(Synchronous {
            quorum,
            names: None,
        });
        self
    }

    /// Synchronous replication with the named replicas as candidates.
    pub fn synchronous_among(mut self, quorum: usize, names: &[&str]) -> Self {
        self.synchronous = Some(Synchronous {
            quorum,
            names: Some(names.iter().map(|n| n.to_string()).collect()),
        });
        self
    }

    /// Puts a [`FaultLink`] on every replica's replication connection, reachable with
    /// [`TestCluster::replication_link`] (to add cross-region latency or cut a region off).
    pub fn replication_links(mut self) -> Self {
        self.replication_links = true;
        self
    }

    /// Servers accept TLS (`ssl = on`) with a self-signed certificate for `localhost` and
    /// `127.0.0.1`; clients verify it against [`TestCluster::tls_root_cert`]. Replicas get the
    /// same certificate through their base backup, and their replication connections use TLS
    /// (libpq's default `sslmode=prefer`).
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Builds the cluster in `dir` (created if missing; it must be empty) instead of a new
    /// directory under the kit's base. It is still removed when the cluster is dropped unless
    /// `MERIDIAN_TESTKIT_KEEP` is set.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Uses `kit` (see [`Kit::at`]) instead of the process's shared one.
    pub fn kit(mut self, kit: Arc<Kit>) -> Self {
        self.kit = Some(kit);
        self
    }

    /// Sets a server parameter on every node before its first start (in the primary's
    /// `postgresql.auto.conf`, which replicas copy with their base backup): for settings that
    /// need a restart, such as `archive_mode`.
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Keeps the cluster's directory (data and server logs) when the servers stop, whether
    /// by drop or by the watchdog, as if `MERIDIAN_TESTKIT_KEEP` were set.
    pub fn keep_files(mut self) -> Self {
        self.keep_files = true;
        self
    }

    /// Starts every server and waits until each replica streams (and, in synchronous mode,
    /// until the quorum is synchronous).
    pub async fn start(self) -> anyhow::Result<TestCluster> {
        let plan = Plan::of(&self)?;
        let kit = match &self.kit {
            Some(kit) => kit.clone(),
            None => tokio::task::spawn_blocking(Kit::get).await??,
        };
        let dir = match &self.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                dir.clone()
            }
            None => tempfile::Builder::new()
                .prefix("cluster-")
                .tempdir_in(kit.base())
                .context("cannot create the cluster directory")?
                .keep(),
        };
        kit.run_as().give(&dir)?;
        let keep = self.keep_files || std::env::var_os(KEEP_ENV).is_some();
        // PostgreSQL's children rewrite their command lines: recognised by process name, and
        // stopped with an immediate shutdown (SIGQUIT) first.
        let guardian = Arc::new(Guardian::start(
            &dir,
            keep,
            Recognise::Name("postgres"),
            Signal::SIGQUIT,
        )?);
        let mut cluster = TestCluster {
            nodes: Vec::new(),
            links: HashMap::new(),
            dir,
            tls_root_cert: None,
            guardian: guardian.clone(),
            keep,
        };
        // From here on, a failure drops `cluster`, which stops whatever was started.
        for step in &plan.nodes {
            let node = Node::new(
                &step.name,
                &step.region,
                cluster.dir.join(&step.name),
                kit.clone(),
                guardian.clone(),
            )?;
            cluster.nodes.push(node);
        }
        cluster.build(&kit, &plan, &self).await?;
        Ok(cluster)
    }
}

/// The node list in build order, each with its upstream.
#[derive(Debug)]
struct Plan {
    nodes: Vec<PlannedNode>,
    sync_names: Vec<String>,
}

#[derive(Debug)]
struct PlannedNode {
    name: String,
    region: String,
    /// Index of the node it streams from; `None` for the primary.
    upstream: Option<usize>,
}

impl Plan {
    fn of(builder: &ClusterBuilder) -> anyhow::Result<Plan> {
        let regions = if builder.regions.is_empty() {
            vec![RegionSpec {
                name: "main".into(),
                nodes: 1,
            }]
        } else {
            builder.regions.clone()
        };
        let mut nodes: Vec<PlannedNode> = Vec::new();
        for (r, region) in regions.iter().enumerate() {
            if region.nodes == 0 {
                bail!("region {} has no nodes", region.name);
            }
            if regions[..r].iter().any(|other| other.name == region.name) {
                bail!("region {} is declared twice", region.name);
            }
            let first = nodes.len();
            for n in 0..region.nodes {
                let upstream = match (r, n) {
                    (0, 0) => None,
                    (0, _) => Some(0),
                    (_, 0) => Some(0),
                    (_, _) => Some(first),
                };
                nodes.push(PlannedNode {
                    name: format!("{}-{}", region.name, n + 1),
                    region: region.name.clone(),
                    upstream,
                });
            }
        }
        let primary_region_replicas: Vec<String> = nodes[1..regions[0].nodes]
            .iter()
            .map(|n| n.name.clone())
            .collect();
        let sync_names = match &builder.synchronous {
            None => Vec::new(),
            Some(sync) => {
                let names = sync.names.clone().unwrap_or(primary_region_replicas);
                for name in &names {
                    let Some(node) = nodes.iter().find(|n| &n.name == name) else {
                        bail!("synchronous replica {name} is not a node of the cluster");
                    };
                    if node.upstream != Some(0) {
                        bail!(
                            "synchronous replica {name} must stream from the primary, not cascade"
                        );
                    }
                }
                if sync.quorum == 0 || sync.quorum > names.len() {
                    bail!(
                        "a synchronous quorum of {} needs between 1 and {} candidates ({names:?})",
                        sync.quorum,
                        names.len()
                    );
                }
                let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
                vec![format!("ANY {} ({})", sync.quorum, quoted.join(", "))]
            }
        };
        Ok(Plan { nodes, sync_names })
    }
}

/// A running cluster; every server stops when it is dropped.
#[derive(Debug)]
pub struct TestCluster {
    nodes: Vec<Node>,
    links: HashMap<String, FaultLink>,
    dir: PathBuf,
    tls_root_cert: Option<PathBuf>,
    guardian: Arc<Guardian>,
    keep: bool,
}

impl TestCluster {
    /// A cluster of one primary, with nothing else until configured.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            regions: Vec::new(),
            synchronous: None,
            replication_links: false,
            tls: false,
            dir: None,
            kit: None,
            keep_files: false,
            settings: Vec::new(),
        }
    }

    async fn build(
        &mut self,
        kit: &Kit,
        plan: &Plan,
        builder: &ClusterBuilder,
    ) -> anyhow::Result<()> {
        let primary = &self.nodes[0];
        let template = kit.template().to_owned();
        let data_dir = primary.data_dir();
        let run_as = kit.run_as().clone();
        tokio::task::spawn_blocking(move || {
            crate::template::copy_data_dir(&template, &data_dir, &run_as)
        })
        .await??;
        // Before the first start: replicas copy the primary's certificate and `ssl = on` with
        // their base backup.
        let root_cert = if builder.tls {
            let root = crate::tls::install(&primary.data_dir(), &self.dir, kit.run_as())?;
            primary.set_auto_conf("ssl", "on")?;
            Some(root)
        } else {
            None
        };
        for (name, value) in &builder.settings {
            primary.set_auto_conf(name, value)?;
        }
        primary.start().await?;
        self.tls_root_cert = root_cert;

        // Replicas in waves: first those streaming from the primary, then the cascades, each
        // wave's base backups running concurrently.
        for wave in [Wave::FromPrimary, Wave::Cascaded] {
            let members: Vec<usize> = (1..plan.nodes.len())
                .filter(|&i| (plan.nodes[i].upstream == Some(0)) == (wave == Wave::FromPrimary))
                .collect();
            let mut links = Vec::new();
            for &i in &members {
                let upstream = &self.nodes[plan.nodes[i].upstream.unwrap_or(0)];
                let link = if builder.replication_links {
                    Some(FaultLink::start(upstream.addr())?)
                } else {
                    None
                };
                links.push(link);
            }
            let backups = members.iter().zip(&links).map(|(&i, link)| {
                let upstream = &self.nodes[plan.nodes[i].upstream.unwrap_or(0)];
                let via = link
                    .as_ref()
                    .map(FaultLink::port)
                    .unwrap_or(upstream.port());
                make_replica(kit, upstream, &self.nodes[i], via)
            });
            for result in join_all(backups).await {
                result?;
            }
            for (&i, link) in members.iter().zip(links) {
                if let Some(link) = link {
                    self.links.insert(plan.nodes[i].name.clone(), link);
                }
            }
            let starts = members.iter().map(|&i| self.nodes[i].start());
            for result in join_all(starts).await {
                result?;
            }
        }

        if let Some(names) = plan.sync_names.first() {
            let primary = &self.nodes[0];
            // ALTER SYSTEM cannot share an implicit transaction with other statements.
            primary
                .execute(&format!(
                    "ALTER SYSTEM SET synchronous_standby_names = '{}'",
                    names.replace('\'', "''")
                ))
                .await?;
            primary.execute("SELECT pg_reload_conf()").await?;
        }
        for (i, planned) in plan.nodes.iter().enumerate() {
            if let Some(upstream) = planned.upstream {
                wait_streaming(&self.nodes[upstream], &self.nodes[i]).await?;
            }
        }
        if let Some(sync) = &builder.synchronous {
            wait_synchronous(&self.nodes[0], sync.quorum).await?;
        }
        Ok(())
    }

    /// Every node, in build order (primary first).
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node named `name` (`<region>-<n>`); panics with the list of names if there is none.
    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name() == name)
            .unwrap_or_else(|| {
                let names: Vec<&str> = self.nodes.iter().map(Node::name).collect();
                panic!("no node named {name}; the cluster has {names:?}")
            })
    }

    /// The node built as the primary. Roles change with promotions; this one does not.
    pub fn primary(&self) -> &Node {
        &self.nodes[0]
    }

    /// The nodes built as replicas, in build order.
    pub fn replicas(&self) -> &[Node] {
        &self.nodes[1..]
    }

    /// The nodes of one region.
    pub fn region(&self, region: &str) -> Vec<&Node> {
        self.nodes.iter().filter(|n| n.region() == region).collect()
    }

    /// The link carrying `replica`'s replication connection, when built with
    /// [`ClusterBuilder::replication_links`].
    pub fn replication_link(&self, replica: &str) -> Option<&FaultLink> {
        self.links.get(replica)
    }

    /// The cluster's directory (one subdirectory per node: `data/` and `postgres.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The certificate to verify the servers against, when built with
    /// [`ClusterBuilder::tls`]: the servers' own (self-signed) certificate, in PEM.
    pub fn tls_root_cert(&self) -> Option<&Path> {
        self.tls_root_cert.as_deref()
    }

    /// The PID of the watchdog process that stops this cluster's servers if the test process
    /// dies (for tests of the kit itself).
    pub fn watchdog_pid(&self) -> Option<u32> {
        self.guardian.pid()
    }

    /// Stops every server of the cluster now (immediate shutdown, then SIGKILL), those other
    /// programs started in its data directories included (Meridian's rejoin runs `pg_ctl`).
    /// Dropping the cluster does this too; a program that must be sure its servers are gone
    /// whoever still holds the cluster (`meridian demo` on Ctrl-C) calls it itself.
    pub fn shut_down(&self) {
        for node in &self.nodes {
            node.shut_down_for_teardown();
        }
        for postmaster in crate::process::postmasters_in(&self.dir) {
            crate::process::shut_down(postmaster, Signal::SIGQUIT, Duration::from_secs(10));
        }
    }

    /// Waits until every running replica has replayed the primary's current WAL position.
    pub async fn wait_replicated(&self, timeout: Duration) -> anyhow::Result<()> {
        let target = self.primary().lsn().await?;
        for replica in self.replicas().iter().filter(|n| n.is_running()) {
            wait_until(
                timeout,
                &format!("{} to replay {target}", replica.name()),
                || async {
                    match replica.lsn().await {
                        Ok(lsn) => Check::when(lsn >= target, (), lsn.to_string()),
                        Err(e) => Check::NotYet(format!("{e:#}")),
                    }
                },
            )
            .await?;
        }
        Ok(())
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        use std::io::Write as _;
        // Servers first, words after, and words that cannot fail: `eprintln!` panics when
        // stderr is closed, and a panic here (during a test's panic) would abort before the
        // servers are stopped.
        let tails: Vec<String> = if std::thread::panicking() {
            self.nodes
                .iter()
                .map(|node| {
                    format!(
                        "--- {} ({}) last log lines ---\n{}",
                        node.name(),
                        node.log_path().display(),
                        node.log_tail(15)
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        self.shut_down();
        for tail in tails {
            let _ = writeln!(std::io::stderr(), "{tail}");
        }
        self.links.clear();
        if self.keep {
            if std::env::var_os(KEEP_ENV).is_some() {
                let _ = writeln!(
                    std::io::stderr(),
                    "{KEEP_ENV} is set: keeping {}",
                    self.dir.display()
                );
            }
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        self.guardian.dismiss();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wave {
    FromPrimary,
    Cascaded,
}

/// `pg_basebackup` of `upstream` into `replica`'s data directory, with a slot on the upstream,
/// and the replica's connection pointed at port `via` (the upstream itself or a link to it).
async fn make_replica(kit: &Kit, upstream: &Node, replica: &Node, via: u16) -> anyhow::Result<()> {
    let slot = slot_name(replica.name());
    let output = kit
        .run_as()
        .async_command(kit.bin().program("pg_basebackup"))
        .arg("--pgdata")
        .arg(replica.data_dir())
        .args([
            "--wal-method=stream",
            "--write-recovery-conf",
            "--create-slot",
            "--checkpoint=fast",
            "--no-sync",
        ])
        .arg(format!("--slot={slot}"))
        .arg(format!("--dbname={}", upstream.conninfo()))
        .kill_on_drop(true)
        .output()
        .await
        .context("cannot run pg_basebackup")?;
    if !output.status.success() {
        bail!(
            "pg_basebackup of {} from {} failed: {}",
            replica.name(),
            upstream.name(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    // `-R` wrote the connection pg_basebackup used; name the replica and route it via the link.
    replica.set_auto_conf(
        "primary_conninfo",
        &format!(
            "host=127.0.0.1 port={via} user=postgres application_name={}",
            replica.name()
        ),
    )?;
    replica.set_auto_conf("primary_slot_name", &slot)
}

/// Replication slot names allow only lower-case letters, digits and underscores.
pub fn slot_name(node: &str) -> String {
    node.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

async fn wait_streaming(upstream: &Node, replica: &Node) -> anyhow::Result<()> {
    let sql = format!(
        "SELECT state FROM pg_stat_replication WHERE application_name = '{}'",
        replica.name()
    );
    wait_until(
        STREAMING_TIMEOUT,
        &format!("{} to stream from {}", replica.name(), upstream.name()),
        || async {
            upstream
                .query_one(&sql)
                .await
                .map(|state| Check::when(state.as_deref() == Some("streaming"), (), state))
                .unwrap_or_else(|e| Check::NotYet(format!("{e:#}")))
        },
    )
    .await
}

async fn wait_synchronous(primary: &Node, quorum: usize) -> anyhow::Result<()> {
    let sql = "SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')";
    wait_until(
        STREAMING_TIMEOUT,
        &format!("{quorum} synchronous replicas"),
        || async {
            match primary.query_one(sql).await {
                Ok(count) => {
                    let n: usize = count.as_deref().unwrap_or("0").parse().unwrap_or(0);
                    Check::when(n >= quorum, (), format!("{n} synchronous"))
                }
                Err(e) => Check::NotYet(format!("{e:#}")),
            }
        },
    )
    .await
}
