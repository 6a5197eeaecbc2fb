//! The demo's cluster: three regions of real PostgreSQL servers on loopback, with simulated
//! distance between them, and the configuration Meridian runs with in front of it.
//!
//! - `us-east` (priority 10): the primary and two replicas; `us-east-2` is synchronous.
//! - `eu-west` (priority 8): a region leader streaming from the primary, synchronous too, and
//!   a replica cascading from the leader.
//! - `ap-south` (priority 6): a region leader.
//!
//! Commits wait for `ANY 2 ("us-east-2", "eu-west-1")`: one copy in the primary's region and
//! one outside it. That is what makes losing the whole of `us-east` lose nothing: in
//! synchronous mode Meridian promotes only a synchronous replica, and `eu-west-1` holds every
//! acknowledged commit. The price is a cross-region round trip per commit.
//!
//! Distance is a [`FaultLink`] adding latency. Meridian sits in `us-east`: it reaches the other
//! regions' nodes through a link each, and the cross-region streams the cluster is built with
//! run through links too. A replica Meridian repoints streams from its new upstream's address
//! as Meridian knows it: through that node's link when the upstream is remote, directly when
//! it is in `us-east` (one address per node cannot tell who is asking).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use meridian_testkit::{FaultLink, Kit, Node, TestCluster};

/// A region of the demo: name, priority, servers, one-way latency from `us-east`.
#[derive(Debug, Clone, Copy)]
pub struct Region {
    pub name: &'static str,
    pub priority: i32,
    pub nodes: usize,
    pub latency: Duration,
}

/// The regions, the primary's first.
pub const REGIONS: [Region; 3] = [
    Region {
        name: "us-east",
        priority: 10,
        nodes: 3,
        latency: Duration::ZERO,
    },
    Region {
        name: "eu-west",
        priority: 8,
        nodes: 2,
        latency: Duration::from_millis(20),
    },
    Region {
        name: "ap-south",
        priority: 6,
        nodes: 1,
        latency: Duration::from_millis(50),
    },
];

/// The replicas commits wait for.
pub const SYNCHRONOUS: [&str; 2] = ["us-east-2", "eu-west-1"];

/// The running servers and the links in front of the remote ones.
#[derive(Debug)]
pub struct DemoCluster {
    pub servers: TestCluster,
    /// Meridian's way to each remote node, by node name.
    client_links: Vec<(String, FaultLink)>,
}

/// What Meridian's configuration needs besides the nodes.
#[derive(Debug)]
pub struct Settings<'a> {
    pub listen: &'a str,
    pub admin_listen: &'a str,
    pub admin_token: &'a str,
    pub password: &'a str,
    pub data_dir: &'a Path,
}

impl DemoCluster {
    /// Builds the cluster in `dir` with `kit` and waits until every replica streams and both
    /// synchronous replicas confirm commits.
    pub async fn build(kit: Arc<Kit>, dir: &Path) -> anyhow::Result<DemoCluster> {
        let mut builder = TestCluster::builder()
            .kit(kit)
            .dir(dir)
            .keep_files()
            .replication_links()
            .synchronous_among(SYNCHRONOUS.len(), &SYNCHRONOUS);
        for region in REGIONS {
            builder = builder.region(region.name, region.nodes);
        }
        let servers = builder.start().await?;
        let mut client_links = Vec::new();
        for region in REGIONS.iter().filter(|r| !r.latency.is_zero()) {
            for node in servers.region(region.name) {
                // A region leader's stream comes from us-east; its cascades stay in-region.
                if node.name().ends_with("-1")
                    && let Some(link) = servers.replication_link(node.name())
                {
                    link.latency(region.latency);
                }
                let link = FaultLink::start(node.addr())
                    .with_context(|| format!("cannot start the link to {}", node.name()))?;
                link.latency(region.latency);
                client_links.push((node.name().to_owned(), link));
            }
        }
        Ok(DemoCluster {
            servers,
            client_links,
        })
    }

    /// The port Meridian reaches `node` on: its link when remote, the server itself otherwise.
    pub fn port(&self, node: &Node) -> u16 {
        self.client_links
            .iter()
            .find(|(name, _)| name == node.name())
            .map(|(_, link)| link.port())
            .unwrap_or_else(|| node.port())
    }

    /// Meridian's configuration for this cluster, as TOML: every node with its `data_dir` (so
    /// that Meridian rejoins old primaries itself), reads preferring `us-east`, a proxy that
    /// stops quickly, and automatic failovers allowed a second apart (the demo has two within
    /// a minute; the default keeps them a minute apart).
    pub fn config_toml(&self, settings: &Settings<'_>, pg_bin: &Path) -> String {
        let mut toml = String::new();
        let _ = write!(
            toml,
            "# Written by `meridian demo` for the cluster it runs; see the README for every option.\n\
             listen = \"{}\"\nadmin_listen = \"{}\"\nadmin_token = \"{}\"\ndata_dir = \"{}\"\n\n\
             [proxy]\nshutdown_timeout = \"2s\"\n\n\
             [routing]\nlocal_region = \"{}\"\n\n\
             [failover]\nmin_interval = \"1s\"\npg_bin = \"{}\"\n\n\
             [[users]]\nname = \"app\"\npassword = \"{}\"\nserver_user = \"postgres\"\n",
            settings.listen,
            settings.admin_listen,
            settings.admin_token,
            settings.data_dir.display(),
            REGIONS[0].name,
            pg_bin.display(),
            settings.password,
        );
        for region in REGIONS {
            let _ = write!(
                toml,
                "\n[[regions]]\nname = \"{}\"\npriority = {}\n",
                region.name, region.priority
            );
            for node in self.servers.region(region.name) {
                let _ = write!(
                    toml,
                    "[[regions.nodes]]\nname = \"{}\"\nhost = \"127.0.0.1\"\nport = {}\ndata_dir = \"{}\"\n",
                    node.name(),
                    self.port(node),
                    node.data_dir().display()
                );
                // A region's leader first among equally up-to-date nodes.
                if node.name().ends_with("-1") {
                    toml.push_str("priority = 1\n");
                }
            }
        }
        toml
    }
}
