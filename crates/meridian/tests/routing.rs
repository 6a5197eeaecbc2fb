//! Read/write splitting through the `meridian` binary, in front of real clusters of a primary
//! (`main-1`) and two replicas (`main-2`, `main-3`), watched as an operator watches it: which
//! server answered (`SELECT inet_server_port()` through the proxy) and what `/metrics` says.
//!
//! - a replica over `max_replica_lag_bytes` gets no reads, and gets them back once it replays;
//! - an idle cluster never looks lagging (lag in seconds is not "age of the last transaction");
//! - a replica killed under read load: reads never hang, and none fails once it is marked down;
//! - reads keep flowing to replicas while writes wait out a failover;
//! - `meridian_routed_total` counts reads on replicas and writes on the primary.
//!
//! Probes run every few hundred milliseconds so that the monitor's view follows quickly; every
//! wait polls with a deadline ([`wait_until`]); nothing sleeps and hopes.
//!
//! Replicas of one region are chosen by `latency × (in-flight + 1)`, and on one host the probe
//! latencies of two replicas differ by a few milliseconds, in turn: sequential reads go to one
//! replica for a probe interval, then perhaps to the other. Where a test must know which
//! replica reads would go to (to see them avoid it), that replica is put alone in the proxy's
//! `local_region` ([`near_far_toml`]); where it needs both to serve reads, several clients read
//! at once (a busy replica scores worse).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_testkit::{Check, TestCluster, wait_until};
use tokio::task::JoinHandle;
use tokio_postgres::SimpleQueryMessage;

use support::{DataDirs, PASSWORD, RunningMeridian, cluster_toml, connect, http_get};

mod support;

/// Bound of every wait: generous, since these 2-core machines are shared.
const TIMEOUT: Duration = Duration::from_secs(60);
/// The monitor's probe interval in these tests.
const PROBE_INTERVAL: Duration = Duration::from_millis(300);
const PROBE_INTERVAL_TOML: &str = "300ms";
/// The pools' checkout (and connect) timeout in these tests.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(2);
const CHECKOUT_TIMEOUT_TOML: &str = "2s";
/// Added to bounds on how long a read may take, for scheduling noise on shared machines.
const SLACK: Duration = Duration::from_secs(5);
/// The replicas, as the kit names them.
const REPLICAS: [&str; 2] = ["main-2", "main-3"];
const PRIMARY: &str = "main-1";

// ---------------------------------------------------------------------------------------------
// Meridian as a process
// ---------------------------------------------------------------------------------------------

/// The `meridian` binary in front of a cluster, its output (stdout and stderr) in a file.
struct Meridian(RunningMeridian);

impl std::ops::Deref for Meridian {
    type Target = RunningMeridian;

    fn deref(&self) -> &RunningMeridian {
        &self.0
    }
}

impl Meridian {
    /// Starts Meridian for `cluster`, every node in region `main` (see [`cluster_toml`]); see
    /// [`Meridian::start_with`].
    async fn start(cluster: &TestCluster, routing: &str) -> Meridian {
        Meridian::start_with(cluster_toml(cluster, DataDirs::Unmanaged), routing).await
    }

    /// Starts Meridian with `nodes` (its `[[users]]` and `[[regions]]`), probes every
    /// [`PROBE_INTERVAL`], the pools' timeouts at [`CHECKOUT_TIMEOUT`], and `routing` as the
    /// body of its `[routing]` table; waits until it runs a query.
    async fn start_with(nodes: String, routing: &str) -> Meridian {
        let settings = format!(
            "[monitor]\nprobe_interval = \"{PROBE_INTERVAL_TOML}\"\n\
             [pool]\ncheckout_timeout = \"{CHECKOUT_TIMEOUT_TOML}\"\n\
             connect_timeout = \"{CHECKOUT_TIMEOUT_TOML}\"\n\
             [routing]\n{routing}\n{nodes}"
        );
        Meridian(RunningMeridian::start(&settings, TIMEOUT).await)
    }

    /// One scrape of `/metrics`.
    async fn metrics(&self) -> Result<Metrics, String> {
        let response = http_get(self.admin, "/metrics")
            .await
            .map_err(|e| e.to_string())?;
        Metrics::parse(&response)
    }

    /// Scrapes `/metrics` until `holds`; returns that scrape.
    async fn wait_metrics(&self, what: &str, holds: impl Fn(&Metrics) -> bool) -> Metrics {
        let metrics = wait_until(TIMEOUT, what, || async {
            match self.metrics().await {
                Ok(metrics) if holds(&metrics) => Check::Ready(metrics),
                Ok(metrics) => Check::NotYet(metrics.node_summary()),
                Err(e) => Check::NotYet(e),
            }
        })
        .await;
        self.or_log(metrics)
    }

    /// Waits until the monitor observes `main-1` as the primary and both replicas as healthy
    /// replicas with a measured lag: from then on reads go to replicas.
    async fn wait_replicas_routable(&self) -> Metrics {
        self.wait_metrics(
            "main-1 the primary, both replicas healthy replicas with their lag measured",
            |m| {
                m.get("meridian_cluster_primary", &[("node", PRIMARY)]) == Some(1.0)
                    && REPLICAS.iter().all(|n| {
                        m.get("meridian_node_health", &[("node", n), ("state", "healthy")])
                            == Some(1.0)
                            && m.get("meridian_node_role", &[("node", n), ("role", "replica")])
                                == Some(1.0)
                            && m.get("meridian_node_replication_lag_bytes", &[("node", n)])
                                .is_some()
                    })
            },
        )
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

/// One sample of the exposition.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed `/metrics` response.
#[derive(Debug, Clone)]
struct Metrics {
    samples: Vec<Sample>,
}

impl Metrics {
    /// Parses an HTTP response carrying the Prometheus text format.
    fn parse(response: &str) -> Result<Metrics, String> {
        let (head, body) = response
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("not an HTTP response: {response:?}"))?;
        if !head.starts_with("HTTP/1.1 200") {
            return Err(format!("not a 200: {head}"));
        }
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            return Err("a chunked /metrics response: this parser reads whole bodies".into());
        }
        let mut samples = Vec::new();
        for line in body.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .ok_or_else(|| format!("no value: {line}"))?;
            let value: f64 = value
                .parse()
                .map_err(|e| format!("bad value in {line}: {e}"))?;
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), BTreeMap::new()),
                Some((name, rest)) => {
                    let inner = rest
                        .strip_suffix('}')
                        .ok_or_else(|| format!("unclosed labels: {line}"))?;
                    (name.to_owned(), parse_labels(inner)?)
                }
            };
            samples.push(Sample {
                name,
                labels,
                value,
            });
        }
        Ok(Metrics { samples })
    }

    /// The samples of `name` carrying every one of `labels`.
    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The value of the one sample of `name` with `labels`, if there is one.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.matching(name, labels).next().map(|s| s.value)
    }

    /// The sum over the samples of `name` with `labels` (0 when there are none).
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// Every `meridian_routed_total` sample with a non-zero count, for messages.
    fn routed(&self) -> Vec<String> {
        self.matching("meridian_routed_total", &[])
            .filter(|s| s.value != 0.0)
            .map(|s| {
                format!(
                    "{} {} {}={}",
                    s.labels["node"], s.labels["reason"], s.labels["fallback"], s.value
                )
            })
            .collect()
    }

    /// Health, role and lag of each node, for timeout messages.
    fn node_summary(&self) -> String {
        let mut out = Vec::new();
        for node in [PRIMARY, REPLICAS[0], REPLICAS[1]] {
            let state = |metric: &str, key: &str| {
                self.matching(metric, &[("node", node)])
                    .find(|s| s.value == 1.0)
                    .map(|s| s.labels[key].clone())
                    .unwrap_or_else(|| "?".into())
            };
            out.push(format!(
                "{node}: {} {} lag {:?} B {:?} s",
                state("meridian_node_health", "state"),
                state("meridian_node_role", "role"),
                self.get("meridian_node_replication_lag_bytes", &[("node", node)]),
                self.get("meridian_node_replication_lag_seconds", &[("node", node)]),
            ));
        }
        out.join("; ")
    }
}

/// `k="v",k2="v2"` (values with `\\`, `\"` and `\n` escapes).
fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek() == Some(&',') || chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(labels);
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if chars.next() != Some('"') {
            return Err(format!("label {key} has no quoted value in {text}"));
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                None => return Err(format!("unterminated value of {key} in {text}")),
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => return Err(format!("dangling escape in {text}")),
                },
                Some(c) => value.push(c),
            }
        }
        labels.insert(key.trim().to_owned(), value);
    }
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/// Node names by port.
fn names(cluster: &TestCluster) -> HashMap<u16, String> {
    cluster
        .nodes()
        .iter()
        .map(|n| (n.port(), n.name().to_owned()))
        .collect()
}

/// `SELECT inet_server_port()` in one autocommit statement (simple protocol: one round trip,
/// one routing decision): the port of the server that answered.
async fn served_by(client: &tokio_postgres::Client) -> Result<u16, String> {
    let messages = client
        .simple_query("SELECT inet_server_port()")
        .await
        .map_err(|e| describe(&e))?;
    messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).and_then(|p| p.parse().ok()),
            _ => None,
        })
        .ok_or_else(|| format!("no port in the answer: {messages:?}"))
}

/// `count` reads on one new session; how many each node served (by name).
async fn read_many(
    port: u16,
    names: &HashMap<u16, String>,
    count: usize,
) -> BTreeMap<String, usize> {
    let client = connect(port).await.unwrap();
    let mut served = BTreeMap::new();
    for i in 0..count {
        let port = served_by(&client)
            .await
            .unwrap_or_else(|e| panic!("read {i} of {count} failed: {e}"));
        *served.entry(names[&port].clone()).or_default() += 1;
    }
    served
}

/// Reads on one session until `node` serves one; returns how many reads it took.
async fn wait_read_on(port: u16, names: &HashMap<u16, String>, node: &str, m: &Meridian) -> usize {
    let client = connect(port).await.unwrap();
    let seen = Mutex::new(BTreeMap::<String, usize>::new());
    let found = wait_until(TIMEOUT, &format!("a read served by {node}"), || async {
        match served_by(&client).await {
            Ok(port) => {
                let name = names[&port].clone();
                let mut seen = seen.lock().unwrap();
                *seen.entry(name.clone()).or_default() += 1;
                Check::when(name == node, (), &*seen)
            }
            Err(e) => Check::NotYet(e),
        }
    })
    .await;
    m.or_log(found);
    seen.into_inner().unwrap().values().sum()
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

/// One read a [`Readers`] task made.
#[derive(Debug, Clone)]
struct Read {
    sent: Instant,
    at: Instant,
    /// `sent` and `at` in wall-clock milliseconds since the epoch (Meridian's history is
    /// timed so).
    sent_ms: u64,
    at_ms: u64,
    /// The port that served it, or the error (a failed connection attempt included).
    outcome: Result<u16, String>,
}

/// Now, in milliseconds since the epoch.
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Seconds from `origin` (negative before it), for messages.
fn secs(t: Instant, origin: Instant) -> f64 {
    if t >= origin {
        (t - origin).as_secs_f64()
    } else {
        -(origin - t).as_secs_f64()
    }
}

/// Failed reads, one a line, timed from `origin`.
fn failures(reads: &[Read], origin: Instant) -> String {
    reads
        .iter()
        .filter_map(|r| {
            r.outcome.as_ref().err().map(|e| {
                format!(
                    "  sent {:+.3} s, failed {:+.3} s: {e}",
                    secs(r.sent, origin),
                    secs(r.at, origin)
                )
            })
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Clients reading through Meridian in a loop, each on its own session (reopened when it
/// closes), one read every `period`, every outcome recorded.
struct Readers {
    reads: Arc<Mutex<Vec<Read>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Readers {
    fn start(port: u16, clients: usize, period: Duration) -> Readers {
        let reads = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| tokio::spawn(read_loop(port, period, reads.clone(), stop.clone())))
            .collect();
        Readers { reads, stop, tasks }
    }

    /// Waits until `holds` for the reads so far.
    async fn wait(&self, what: &str, holds: impl Fn(&[Read]) -> bool, m: &Meridian) {
        let done = wait_until(TIMEOUT, what, || async {
            let reads = self.reads.lock().unwrap();
            let errors = reads.iter().filter(|r| r.outcome.is_err()).count();
            Check::when(
                holds(&reads),
                (),
                format!("{} reads, {errors} failed", reads.len()),
            )
        })
        .await;
        m.or_log(done);
    }

    /// Stops after the reads under way; returns every read.
    async fn stop(self) -> Vec<Read> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            tokio::time::timeout(TIMEOUT, task)
                .await
                .expect("a reader did not stop")
                .unwrap();
        }
        std::mem::take(&mut *self.reads.lock().unwrap())
    }
}

async fn read_loop(
    port: u16,
    period: Duration,
    reads: Arc<Mutex<Vec<Read>>>,
    stop: Arc<AtomicBool>,
) {
    let mut client: Option<tokio_postgres::Client> = None;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let (sent, sent_ms) = (Instant::now(), wall_ms());
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            match connect(port).await {
                Ok(c) => client = Some(c),
                Err(e) => {
                    reads.lock().unwrap().push(Read {
                        sent,
                        at: Instant::now(),
                        sent_ms,
                        at_ms: wall_ms(),
                        outcome: Err(format!("connect: {}", describe(&e))),
                    });
                    continue;
                }
            }
        }
        let Some(c) = &client else { continue };
        let outcome = served_by(c).await;
        reads.lock().unwrap().push(Read {
            sent,
            at: Instant::now(),
            sent_ms,
            at_ms: wall_ms(),
            outcome,
        });
    }
}

/// One write the [`Writer`] saw acknowledged.
#[derive(Debug, Clone, Copy)]
struct Ack {
    sent: Instant,
    at: Instant,
    port: u16,
}

/// A client inserting a row through Meridian every `period`, on one session (reopened when it
/// closes), recording acknowledgements and counting errors.
struct Writer {
    acked: Arc<Mutex<Vec<Ack>>>,
    errors: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Writer {
    fn start(port: u16, period: Duration) -> Writer {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (acked, errors, stop) = (acked.clone(), errors.clone(), stop.clone());
            async move {
                let mut client: Option<tokio_postgres::Client> = None;
                let mut id = 0_i64;
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let sent = Instant::now();
                    if client.as_ref().is_none_or(|c| c.is_closed()) {
                        match connect(port).await {
                            Ok(c) => client = Some(c),
                            Err(e) => {
                                errors.lock().unwrap().push((sent, describe(&e)));
                                continue;
                            }
                        }
                    }
                    let Some(c) = &client else { continue };
                    id += 1;
                    let result = served_by_write(c, id).await;
                    match result {
                        Ok(port) => acked.lock().unwrap().push(Ack {
                            sent,
                            at: Instant::now(),
                            port,
                        }),
                        Err(e) => errors.lock().unwrap().push((sent, e)),
                    }
                }
            }
        });
        Writer {
            acked,
            errors,
            stop,
            task,
        }
    }

    /// Waits until an acknowledged write is `wanted`; returns the first such.
    async fn wait_ack(&self, what: &str, wanted: impl Fn(&Ack) -> bool, m: &Meridian) -> Ack {
        let ack = wait_until(TIMEOUT, what, || async {
            let acked = self.acked.lock().unwrap();
            match acked.iter().find(|a| wanted(a)) {
                Some(ack) => Check::Ready(*ack),
                None => {
                    let errors = self.errors.lock().unwrap();
                    Check::NotYet(format!(
                        "{} acknowledged, {} errors, the last: {:?}",
                        acked.len(),
                        errors.len(),
                        errors.last()
                    ))
                }
            }
        })
        .await;
        m.or_log(ack)
    }

    /// Stops after the write under way; returns the acknowledgements and the errors.
    async fn stop(self) -> (Vec<Ack>, Vec<(Instant, String)>) {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(TIMEOUT, self.task)
            .await
            .expect("the writer did not stop")
            .unwrap();
        let acked = std::mem::take(&mut *self.acked.lock().unwrap());
        let errors = std::mem::take(&mut *self.errors.lock().unwrap());
        (acked, errors)
    }
}

/// `INSERT ... RETURNING inet_server_port()`: the port of the server the write committed on.
async fn served_by_write(client: &tokio_postgres::Client, id: i64) -> Result<u16, String> {
    let messages = client
        .simple_query(&format!(
            "INSERT INTO writes (id) VALUES ({id}) RETURNING inet_server_port()"
        ))
        .await
        .map_err(|e| describe(&e))?;
    messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).and_then(|p| p.parse().ok()),
            _ => None,
        })
        .ok_or_else(|| format!("no port in the answer: {messages:?}"))
}

/// A primary and two replicas, streaming.
async fn cluster() -> TestCluster {
    TestCluster::builder().replicas(2).start().await.unwrap()
}

/// `[[users]]` and `[[regions]]` for `cluster` with the replica `near` alone in region `near`
/// and the other nodes in region `far`: with `local_region = "near"` (see [`NEAR_ROUTING`])
/// every read goes to `near` while it qualifies, and to the other replica only when it does
/// not. Replicas of one region are otherwise chosen by probe latency, which takes turns
/// unpredictably on one host: this makes "reads avoid it" mean something.
fn near_far_toml(cluster: &TestCluster, near: &str) -> String {
    let mut text = format!(
        "[[users]]\nname = \"app\"\npassword = \"{PASSWORD}\"\nserver_user = \"postgres\"\n"
    );
    for (region, near_region) in [("far", false), ("near", true)] {
        text.push_str(&format!("[[regions]]\nname = \"{region}\"\n"));
        for node in cluster
            .nodes()
            .iter()
            .filter(|n| (n.name() == near) == near_region)
        {
            text.push_str(&format!(
                "[[regions.nodes]]\nname = \"{}\"\nhost = \"127.0.0.1\"\nport = {}\n",
                node.name(),
                node.port()
            ));
        }
    }
    text
}

/// The `[routing]` line that goes with [`near_far_toml`].
const NEAR_ROUTING: &str = "local_region = \"near\"";

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// The lagging replica is the preferred one (the proxy's local region): before the lag and
/// after it catches up every read goes there, so its absence in between is the ceiling's doing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_over_the_byte_lag_ceiling_gets_no_reads_until_it_catches_up() {
    const CEILING: u64 = 1024 * 1024;
    let cluster = cluster().await;
    let names = names(&cluster);
    let (a, b) = (REPLICAS[0], REPLICAS[1]);
    // Only the byte ceiling matters here: the one in seconds is far away.
    let m = Meridian::start_with(
        near_far_toml(&cluster, a),
        &format!(
            "{NEAR_ROUTING}\nmax_replica_lag_bytes = {CEILING}\nmax_replica_lag_seconds = \"1h\""
        ),
    )
    .await;
    m.wait_replicas_routable().await;
    let served = read_many(m.port, &names, 20).await;
    assert_eq!(
        served.get(a),
        Some(&20),
        "{a}, the local region's replica, serves every read to begin with: {served:?}"
    );

    let writer = connect(m.port).await.unwrap();
    writer
        .batch_execute("CREATE TABLE filler (id int, pad text)")
        .await
        .unwrap();
    cluster
        .node(a)
        .execute("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    let paused = wait_until(TIMEOUT, &format!("replay paused on {a}"), || async {
        match cluster
            .node(a)
            .query_one("SELECT pg_get_wal_replay_pause_state()")
            .await
        {
            Ok(state) => Check::when(state.as_deref() == Some("paused"), (), state),
            Err(e) => Check::NotYet(format!("{e:#}")),
        }
    })
    .await;
    m.or_log(paused);
    // About 4 MB of rows (960-byte values: below the TOAST threshold, not compressed), through
    // the proxy.
    writer
        .batch_execute(
            "INSERT INTO filler SELECT g, repeat(md5(g::text), 30) FROM generate_series(1, 4000) g",
        )
        .await
        .unwrap();

    let lagging = m
        .wait_metrics(
            &format!("{a} over the ceiling of {CEILING} bytes and {b} under it"),
            |metrics| {
                let lag =
                    |n: &str| metrics.get("meridian_node_replication_lag_bytes", &[("node", n)]);
                lag(a).is_some_and(|l| l > CEILING as f64)
                    && lag(b).is_some_and(|l| l <= CEILING as f64)
            },
        )
        .await;
    eprintln!("lagging: {}", lagging.node_summary());

    // A fresh session: no read-your-writes position of its own.
    let served = read_many(m.port, &names, 100).await;
    eprintln!("100 reads while {a} lags: {served:?}");
    assert_eq!(
        served.get(a),
        None,
        "reads reached {a}, {} bytes behind (ceiling {CEILING}): {served:?}\n{}",
        lagging
            .get("meridian_node_replication_lag_bytes", &[("node", a)])
            .unwrap_or(f64::NAN),
        m.log()
    );
    assert_eq!(
        served.get(b),
        Some(&100),
        "{b} is caught up: it takes the reads, not the primary: {served:?}\n{}",
        m.log()
    );
    let metrics = m.metrics().await.unwrap();
    assert_eq!(
        metrics.sum(
            "meridian_routed_total",
            &[("node", PRIMARY), ("fallback", "true")]
        ),
        0.0,
        "reads fell back to the primary while {b} qualified: {:?}",
        metrics.routed()
    );

    cluster
        .node(a)
        .execute("SELECT pg_wal_replay_resume()")
        .await
        .unwrap();
    let reads = wait_read_on(m.port, &names, a, &m).await;
    let metrics = m.metrics().await.unwrap();
    eprintln!(
        "{a} served a read again after {reads} reads: {}",
        metrics.node_summary()
    );
    assert!(
        metrics
            .get("meridian_node_replication_lag_bytes", &[("node", a)])
            .is_some_and(|l| l <= CEILING as f64),
        "{a} gets reads again but the monitor still reports it over the ceiling: {}",
        metrics.node_summary()
    );
    let served = read_many(m.port, &names, 20).await;
    assert_eq!(
        served.get(a),
        Some(&20),
        "{a}, caught up, takes every read again: {served:?}"
    );
}

/// Replicas of one region take turns by probe latency: several clients reading at once
/// spread the load (a busy replica scores worse), so both replicas serve reads unless one is
/// disqualified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_cluster_never_marks_a_caught_up_replica_as_lagging() {
    let cluster = cluster().await;
    let m = Meridian::start(&cluster, "max_replica_lag_seconds = \"1s\"").await;
    let before = m.wait_replicas_routable().await;
    let probes = |metrics: &Metrics, node: &str| {
        metrics.sum("meridian_node_probes_total", &[("node", node)])
    };
    let routed =
        |metrics: &Metrics, node: &str| metrics.sum("meridian_routed_total", &[("node", node)]);
    let fallbacks =
        |metrics: &Metrics| metrics.sum("meridian_routed_total", &[("fallback", "true")]);

    // Nothing writes: for four times the ceiling (and at least ten probe intervals), read and
    // watch where reads go and what lag the monitor reports, at every scrape.
    let window = Duration::from_secs(4).max(PROBE_INTERVAL * 10);
    let readers = Readers::start(m.port, 4, Duration::from_millis(2));
    let start = Instant::now();
    let mut lag_seen: Vec<String> = Vec::new();
    let mut scrapes = 0;
    let mut last = before.clone();
    while start.elapsed() < window {
        let metrics = m.metrics().await.unwrap();
        scrapes += 1;
        for node in REPLICAS {
            let bytes = metrics.get("meridian_node_replication_lag_bytes", &[("node", node)]);
            let seconds = metrics.get("meridian_node_replication_lag_seconds", &[("node", node)]);
            if bytes != Some(0.0) || seconds != Some(0.0) {
                lag_seen.push(format!(
                    "{:.2} s: {node} lag {bytes:?} B {seconds:?} s",
                    start.elapsed().as_secs_f64()
                ));
            }
        }
        last = metrics;
        // A scrape every 50 ms or so is plenty at a 300 ms probe interval.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reads = readers.stop().await;
    let failed = reads.iter().filter(|r| r.outcome.is_err()).count();
    eprintln!(
        "idle window {window:?}: {scrapes} scrapes, {} reads ({failed} failed), routed {:?}",
        reads.len(),
        last.routed()
    );
    for node in REPLICAS {
        let probed = probes(&last, node) - probes(&before, node);
        assert!(
            probed >= 5.0,
            "{node} was probed only {probed} times in the window: it proves nothing"
        );
    }
    assert!(
        lag_seen.is_empty(),
        "an idle, caught-up replica was reported lagging:\n{}\n{}",
        lag_seen.join("\n"),
        m.log()
    );
    assert_eq!(
        failed,
        0,
        "reads failed on an idle, healthy cluster:\n{}",
        failures(&reads, start)
    );
    for node in REPLICAS {
        assert!(
            routed(&last, node) > routed(&before, node),
            "{node} served no read in the idle window: {:?}\n{}",
            last.routed(),
            m.log()
        );
    }
    assert_eq!(
        routed(&last, PRIMARY),
        routed(&before, PRIMARY),
        "reads went to the primary: {:?}",
        last.routed()
    );
    assert_eq!(
        fallbacks(&last),
        fallbacks(&before),
        "reads fell back to the primary on an idle cluster: {:?}",
        last.routed()
    );
}

/// The killed replica is the preferred one (the proxy's local region), so the reads right
/// after the kill are routed to it and must get past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_read_load_fails_no_read_once_it_is_marked_down() {
    let cluster = cluster().await;
    let names = names(&cluster);
    let (dead, alive) = (REPLICAS[0], REPLICAS[1]);
    let m = Meridian::start_with(near_far_toml(&cluster, dead), NEAR_ROUTING).await;
    m.wait_replicas_routable().await;
    let dead_port = cluster.node(dead).port();

    let readers = Readers::start(m.port, 3, Duration::from_millis(5));
    readers
        .wait(
            &format!("50 reads served by {dead}"),
            |reads| reads.iter().filter(|r| r.outcome == Ok(dead_port)).count() >= 50,
            &m,
        )
        .await;
    let first = connect(m.port).await.unwrap();
    assert_eq!(served_by(&first).await, Ok(dead_port));

    let killing = Instant::now();
    cluster.node(dead).kill();
    // kill() returns once every server process is dead and reaped.
    let killed = Instant::now();
    let first_outcome = served_by(&first).await;
    let first_took = killed.elapsed();
    let marked = m
        .wait_metrics(&format!("{dead} judged down"), |metrics| {
            metrics.get("meridian_node_health", &[("node", dead), ("state", "down")]) == Some(1.0)
        })
        .await;
    let down = Instant::now();
    // Keep the load on a while after the monitor's verdict.
    readers
        .wait(
            "100 reads sent after the node was marked down",
            |reads| reads.iter().filter(|r| r.sent >= down).count() >= 100,
            &m,
        )
        .await;
    let reads = readers.stop().await;

    let bound = PROBE_INTERVAL + CHECKOUT_TIMEOUT + SLACK;
    let in_window: Vec<&Read> = reads
        .iter()
        .filter(|r| r.sent >= killed && r.sent < down)
        .collect();
    let failed_in_window = in_window.iter().filter(|r| r.outcome.is_err()).count();
    // Reads running on the node when it died fail (08007): a server lost mid-statement.
    let failed_in_flight = reads
        .iter()
        .filter(|r| r.sent < killed && r.at >= killing && r.outcome.is_err())
        .count();
    let slowest = in_window
        .iter()
        .map(|r| r.at - r.sent)
        .max()
        .unwrap_or_default();
    eprintln!(
        "kill of {dead} (took {:.2?}): {failed_in_flight} reads in flight failed; first read \
         {first_outcome:?} in {first_took:.2?}; judged down {:.2?} after the kill; {} reads \
         sent in between, {failed_in_window} failed, the slowest took {slowest:.2?}; failures \
         (timed from the kill):\n{}\nrouted: {:?}, connect failures on {dead}: {:?}",
        killed - killing,
        down - killed,
        in_window.len(),
        failures(&reads, killed),
        marked.routed(),
        marked.get("meridian_routing_connect_failures_total", &[("node", dead)]),
    );
    assert!(
        first_took < bound,
        "the first read after the kill took {first_took:?} (bound {bound:?}): {first_outcome:?}\n{}",
        m.log()
    );
    assert!(
        slowest < bound,
        "a read sent between the kill and the verdict took {slowest:?} (bound {bound:?})\n{}",
        m.log()
    );
    let after: Vec<Read> = reads.iter().filter(|r| r.sent >= down).cloned().collect();
    assert!(
        after.iter().all(|r| r.outcome.is_ok()),
        "reads sent after {dead} was marked down failed (timed from the kill):\n{}\n{}",
        failures(&after, killed),
        m.log()
    );

    // And on a fresh session, once the node is down: every read succeeds, on the survivor.
    let served = read_many(m.port, &names, 200).await;
    eprintln!("200 reads after the verdict: {served:?}");
    assert_eq!(served.get(alive), Some(&200), "{served:?}");
}

/// SIGKILL of the primary under a writer (every 20 ms) and two readers (every 10 ms each), with
/// Meridian's default failover settings: writes wait for the new primary, reads do not. The
/// window is measured twice: at the client (from the kill to the first write acknowledged
/// after it) and from Meridian's history (from the paused view to the new primary's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_keep_flowing_to_replicas_while_writes_wait_for_a_failover() {
    let cluster = cluster().await;
    cluster
        .primary()
        .execute("CREATE TABLE writes (id bigint NOT NULL)")
        .await
        .unwrap();
    cluster.wait_replicated(TIMEOUT).await.unwrap();
    let names = names(&cluster);
    let m = Meridian::start(&cluster, "").await;
    m.wait_replicas_routable().await;
    let old_port = cluster.primary().port();
    let replica_ports: Vec<u16> = REPLICAS.iter().map(|n| cluster.node(n).port()).collect();

    let writer = Writer::start(m.port, Duration::from_millis(20));
    let readers = Readers::start(m.port, 2, Duration::from_millis(10));
    writer
        .wait_ack("a write before the kill", |_| true, &m)
        .await;
    readers
        .wait(
            "reads served by both replicas",
            |reads| {
                replica_ports
                    .iter()
                    .all(|p| reads.iter().any(|r| r.outcome.as_ref() == Ok(p)))
            },
            &m,
        )
        .await;

    cluster.primary().kill();
    let killed = Instant::now();
    let resumed = writer
        .wait_ack(
            "a write sent after the kill to commit on another node",
            |ack| ack.sent >= killed && ack.port != old_port,
            &m,
        )
        .await;
    // Some more traffic once writes flow again.
    readers
        .wait(
            "50 reads sent after writes resumed",
            |reads| reads.iter().filter(|r| r.sent >= resumed.at).count() >= 50,
            &m,
        )
        .await;
    let reads = readers.stop().await;
    let (acked, write_errors) = writer.stop().await;
    // When the view was paused (the run's start) and when the new primary was published.
    let run = m.or_log(
        wait_until(TIMEOUT, "the failover run to finish", || async {
            let history = match http_get(m.admin, "/api/database/failover-history").await {
                Ok(response) => response,
                Err(e) => return Check::NotYet(e.to_string()),
            };
            let body = history.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            let runs: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            let run = runs[0].clone();
            Check::when(run["outcome"] == "completed", run, history)
        })
        .await,
    );
    let paused_ms = run["started_at_ms"].as_u64().unwrap();
    let published_ms = run["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "publish")
        .and_then(|p| p["finished_at_ms"].as_u64())
        .unwrap_or_else(|| panic!("no publish phase: {run:#}"));
    let while_paused: Vec<&Read> = reads
        .iter()
        .filter(|r| r.sent_ms >= paused_ms && r.at_ms <= published_ms)
        .collect();
    eprintln!(
        "paused for {} ms: {} reads sent and answered then; phases {}",
        published_ms - paused_ms,
        while_paused.len(),
        run["phases"]
    );

    let during: Vec<&Read> = reads
        .iter()
        .filter(|r| r.sent >= killed && r.at <= resumed.at)
        .collect();
    let mut served_during = BTreeMap::<String, usize>::new();
    for r in &during {
        if let Ok(port) = &r.outcome {
            *served_during.entry(names[port].clone()).or_default() += 1;
        }
    }
    let longest = during
        .iter()
        .map(|r| r.at - r.sent)
        .max()
        .unwrap_or_default();
    eprintln!(
        "failover: writes resumed {:.2?} after the kill on {}; {} writes acknowledged, {} \
         write errors; {} reads in all, {} sent and answered while writes waited ({served_during:?}, \
         the longest {longest:.2?}); read failures (timed from the kill):\n{}",
        resumed.at - killed,
        names[&resumed.port],
        acked.len(),
        write_errors.len(),
        reads.len(),
        during.len(),
        failures(&reads, killed)
    );
    assert!(
        reads.iter().all(|r| r.outcome.is_ok()),
        "reads failed across the failover (timed from the kill):\n{}\n{}",
        failures(&reads, killed),
        m.log()
    );
    assert!(
        !during.is_empty(),
        "no read completed while writes waited ({:.2?} from the kill to the first write)\n{}",
        resumed.at - killed,
        m.log()
    );
    assert!(
        !while_paused.is_empty(),
        "no read was sent and answered while the view was paused ({} ms, from the run's start to \
         the publication of the new primary): reads waited with the writes\n{}",
        published_ms - paused_ms,
        m.log()
    );
    assert!(
        during
            .iter()
            .all(|r| r.outcome.as_ref().is_ok_and(|p| replica_ports.contains(p))),
        "reads while writes waited were not served by the replicas: {served_during:?}"
    );
}

/// Eleven writes (a CREATE TABLE and ten INSERTs) and forty reads on fresh sessions: each is
/// counted once, on the node that ran it, with its reason and `fallback="false"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_reads_on_replicas_and_writes_on_the_primary() {
    let cluster = cluster().await;
    let names = names(&cluster);
    let m = Meridian::start(&cluster, "").await;
    m.wait_replicas_routable().await;
    let before = m.metrics().await.unwrap();
    let routed = |metrics: &Metrics, node: &str, reason: &str| {
        metrics.sum(
            "meridian_routed_total",
            &[("node", node), ("reason", reason)],
        )
    };

    let writer = connect(m.port).await.unwrap();
    writer
        .batch_execute("CREATE TABLE t (id int)")
        .await
        .unwrap();
    for id in 0..10 {
        let port = writer
            .simple_query(&format!(
                "INSERT INTO t VALUES ({id}) RETURNING inet_server_port()"
            ))
            .await
            .unwrap()
            .iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                _ => None,
            })
            .unwrap();
        assert_eq!(port, cluster.primary().port().to_string(), "write {id}");
    }
    // Reads on another session (the writer's own would wait for its writes to replicate).
    let served = read_many(m.port, &names, 40).await;
    assert_eq!(served.get(PRIMARY), None, "{served:?}");

    let after = m.metrics().await.unwrap();
    eprintln!("reads {served:?}; routed {:?}", after.routed());
    let delta =
        |node: &str, reason: &str| routed(&after, node, reason) - routed(&before, node, reason);
    // The CREATE TABLE and the ten INSERTs.
    assert!(
        delta(PRIMARY, "may_write") >= 11.0,
        "may_write on {PRIMARY}: {:?}",
        after.routed()
    );
    assert_eq!(
        after.get(
            "meridian_routed_total",
            &[
                ("node", PRIMARY),
                ("region", "main"),
                ("reason", "may_write"),
                ("fallback", "false")
            ]
        ),
        Some(routed(&after, PRIMARY, "may_write")),
        "writes on the primary are labelled region=\"main\", fallback=\"false\": {:?}",
        after.routed()
    );
    for node in REPLICAS {
        let count = served.get(node).copied().unwrap_or(0) as f64;
        assert!(
            delta(node, "read") >= count,
            "{node} served {count} reads but counts {} (reason=\"read\"): {:?}",
            delta(node, "read"),
            after.routed()
        );
        assert_eq!(
            routed(&after, node, "may_write"),
            0.0,
            "writes counted on replica {node}: {:?}",
            after.routed()
        );
        assert_eq!(
            after.get(
                "meridian_routed_total",
                &[
                    ("node", node),
                    ("reason", "read"),
                    ("fallback", "false"),
                    ("region", "main")
                ]
            ),
            Some(routed(&after, node, "read")),
            "reads on {node} are labelled fallback=\"false\", region=\"main\""
        );
    }
    assert_eq!(
        REPLICAS.iter().map(|n| delta(n, "read")).sum::<f64>(),
        40.0,
        "the 40 reads, each counted once on the replica that served it: {:?}",
        after.routed()
    );
    assert_eq!(delta(PRIMARY, "read"), 0.0, "{:?}", after.routed());
    assert_eq!(
        after.sum("meridian_routed_total", &[("fallback", "true")])
            - before.sum("meridian_routed_total", &[("fallback", "true")]),
        0.0,
        "{:?}",
        after.routed()
    );
    // A session gives its server connection back just after its client has the answer:
    // the gauges settle a moment after the last reply.
    let settled = wait_until(TIMEOUT, "in-flight transactions back to 0", || async {
        let now = match m.metrics().await {
            Ok(now) => now,
            Err(e) => return Check::NotYet(e),
        };
        let busy: Vec<_> = [PRIMARY, REPLICAS[0], REPLICAS[1]]
            .into_iter()
            .filter(|node| now.get("meridian_routing_in_flight", &[("node", node)]) != Some(0.0))
            .collect();
        Check::when(busy.is_empty(), now, format!("still in flight on {busy:?}"))
    })
    .await
    .unwrap();
    for node in [PRIMARY, REPLICAS[0], REPLICAS[1]] {
        assert_eq!(
            settled.get("meridian_routing_circuit_open", &[("node", node)]),
            Some(0.0),
            "{node}'s circuit is closed"
        );
    }
}
