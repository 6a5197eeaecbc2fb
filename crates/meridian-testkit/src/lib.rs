//! Real PostgreSQL clusters, with real streaming replication, for Meridian's tests.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use meridian_testkit::TestCluster;
//!
//! let cluster = TestCluster::builder()
//!     .region("us-east", 3) // primary + 2 replicas
//!     .region("eu-west", 2) // region leader + 1 cascaded replica
//!     .synchronous(1)
//!     .start()
//!     .await?;
//! cluster.primary().execute("CREATE TABLE t (id int)").await?;
//! cluster.node("eu-west-2").kill();
//! # Ok(()) }
//! ```
//!
//! - Servers run on free loopback ports, each in its own directory under
//!   `$MERIDIAN_TESTKIT_DIR` (default `$TMPDIR/meridian-testkit`). Binaries come from
//!   `MERIDIAN_PG_BIN` or `pg_config --bindir`. As root, servers run as an unprivileged user
//!   (`MERIDIAN_PG_USER`, default `meridian-pg`, created on first use).
//! - `initdb` runs once: its result is cached as a template keyed by server version and
//!   settings, and copied for each cluster.
//! - Everything a cluster starts stops when it is dropped, panicking tests included, and a
//!   watchdog process stops it if the test process is killed.
//! - [`ClusterBuilder::tls`] turns on TLS with a self-signed certificate for the loopback.
//! - [`FaultLink`] relays TCP with latency, blackholes and resets switched at run time.
//! - [`wait_until`] polls a condition with a deadline and reports what it last saw.
//! - [`EtcdCluster`] starts a real etcd of 1 or 3 members on loopback (for coordination
//!   tests), from `MERIDIAN_ETCD_BIN` or `etcd` on `PATH`, with member kill, stop, restart and
//!   pause, [`EtcdCluster::links`] to cut one client off from etcd, and
//!   [`EtcdCluster::start_tls`] for clients over TLS with a client certificate.
//!
//! Start time of one primary and two streaming replicas, measured on the project's 2-core
//! machines with PostgreSQL 15.18 (`cargo run --release -p meridian-testkit --example
//! start_time`, 10 starts, 2026-11-24): **median 1.2 s** (0.74–1.5 s); building the template
//! (`initdb`), once per machine and server version, adds 1.5 s to the first start.

mod cluster;
mod etcd;
mod fault_link;
mod guardian;
mod kit;
mod node;
mod pg_bin;
mod process;
mod run_as;
mod server;
mod template;
mod tls;
mod wait;

pub use cluster::{ClusterBuilder, KEEP_ENV, TestCluster, slot_name};
pub use etcd::{ETCD_BIN_ENV, EtcdBin, EtcdCluster, EtcdLinks, EtcdMember};
pub use fault_link::{Direction, Fault, FaultLink};
pub use kit::{BASE_DIR_ENV, Kit};
pub use node::{Node, rows_as_text};
pub use pg_bin::{PG_BIN_ENV, PgBin};
pub use process::adopt_orphans;
pub use run_as::{DEFAULT_PG_USER, PG_USER_ENV, RunAs};
pub use wait::{Check, wait_until};
