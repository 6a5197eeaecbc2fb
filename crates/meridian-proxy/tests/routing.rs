//! Read/write splitting against a real primary and two streaming replicas: where each kind of
//! statement runs (checked on the server that ran it, with `inet_server_port()`,
//! `pg_is_in_recovery()` or the data itself), the 25006 safety net for reads that write,
//! session pins, hints and `meridian.*` commands, read-your-writes under replication delay,
//! a replica dying under read load, and `primary_reads = "never"`.
//!
//! There is no monitor here: the view published at start calls every node healthy, and only
//! what the proxy finds out itself (a refused connection, a closed socket) changes where reads
//! go, unless a test publishes another view.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_core::classify::PinReason;
use meridian_core::routing::RouteReason;
use meridian_core::topology::{Health, NodeId};
use meridian_proxy::RoutingReport;
use meridian_testkit::{Check, Node, TestCluster, wait_until};
use support::{ProxyUnderTest, STEP, sqlstate, view_of};
use tokio::time::Instant;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Statement};

/// The ports of the cluster's servers, as `inet_server_port()` reports them.
#[derive(Debug, Clone)]
struct Ports {
    primary: i32,
    replicas: Vec<i32>,
}

impl Ports {
    fn of(cluster: &TestCluster) -> Ports {
        Ports {
            primary: i32::from(cluster.primary().port()),
            replicas: cluster
                .replicas()
                .iter()
                .map(|node| i32::from(node.port()))
                .collect(),
        }
    }

    fn is_replica(&self, port: i32) -> bool {
        self.replicas.contains(&port)
    }
}

/// A primary and two replicas, with table `t` (and anything in `schema`) replicated to both.
async fn cluster_with(schema: &str) -> TestCluster {
    let cluster = TestCluster::builder().replicas(2).start().await.unwrap();
    cluster
        .primary()
        .execute(&format!("CREATE TABLE t (id int PRIMARY KEY); {schema}"))
        .await
        .unwrap();
    cluster.wait_replicated(STEP).await.unwrap();
    cluster
}

/// The rows of a simple-protocol query, as text.
async fn simple_rows(
    client: &Client,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, tokio_postgres::Error> {
    Ok(meridian_testkit::rows_as_text(
        client.simple_query(sql).await?,
    ))
}

/// The only row of a simple-protocol query, as text (NULL as "NULL").
async fn simple_row(client: &Client, sql: &str) -> Vec<String> {
    let rows = simple_rows(client, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
    rows[0]
        .iter()
        .map(|v| v.clone().unwrap_or_else(|| "NULL".into()))
        .collect()
}

/// The two ways of sending a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// A Query message.
    Simple,
    /// Parse (once, named, kept), then Bind, Execute, Sync.
    Extended,
}

use Protocol::{Extended, Simple};

/// A client of the proxy that prepares each extended-protocol statement once and keeps it
/// open. tokio-postgres closes a statement it drops with a Close and Sync request of its own,
/// which the proxy routes like any request (see
/// `a_closed_statement_does_not_send_the_next_read_to_the_primary`): tests of other rules keep
/// their statements, so that every request routed is one they chose.
struct Conn {
    client: Client,
    prepared: Mutex<HashMap<String, Statement>>,
}

impl Conn {
    async fn connect(proxy: &ProxyUnderTest) -> Conn {
        Conn {
            client: proxy.connect().await,
            prepared: Mutex::default(),
        }
    }

    /// `sql` prepared on this connection, the first time it is asked for.
    async fn statement(&self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        let known = self.prepared.lock().unwrap().get(sql).cloned();
        match known {
            Some(statement) => Ok(statement),
            None => {
                let statement = self.client.prepare(sql).await?;
                self.prepared
                    .lock()
                    .unwrap()
                    .insert(sql.to_owned(), statement.clone());
                Ok(statement)
            }
        }
    }

    /// The first column (an `int4`) of the only row of `sql`.
    async fn int(&self, sql: &str, protocol: Protocol) -> Result<i32, tokio_postgres::Error> {
        match protocol {
            Simple => {
                let rows = simple_rows(&self.client, sql).await?;
                assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
                Ok(rows[0][0].as_deref().unwrap().parse().unwrap())
            }
            Extended => {
                let statement = self.statement(sql).await?;
                Ok(self.client.query_one(&statement, &[]).await?.get(0))
            }
        }
    }

    /// The port of the server that ran `sql`, whose first column is `inet_server_port()`.
    async fn port(&self, sql: &str, protocol: Protocol) -> i32 {
        self.int(sql, protocol)
            .await
            .unwrap_or_else(|e| panic!("{protocol:?}: {sql}: {e}"))
    }
}

impl Deref for Conn {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// The first column of the first row of `sql` run on `node` directly.
async fn on_node(node: &Node, sql: &str) -> String {
    node.query_one(sql)
        .await
        .unwrap_or_else(|e| panic!("on {}: {sql}: {e:#}", node.name()))
        .unwrap_or_else(|| "NULL".into())
}

/// Transactions routed to node `index` for `reason`.
fn routed(report: &RoutingReport, index: usize, reason: RouteReason) -> u64 {
    report
        .nodes
        .iter()
        .find(|n| n.node == NodeId(index as u16))
        .and_then(|n| n.routed.iter().find(|(r, _)| *r == reason))
        .map_or(0, |(_, count)| *count)
}

/// Transactions routed to node `index`, for any reason.
fn routed_total(report: &RoutingReport, index: usize) -> u64 {
    report
        .nodes
        .iter()
        .find(|n| n.node == NodeId(index as u16))
        .map_or(0, |n| n.routed.iter().map(|(_, count)| count).sum())
}

/// Sessions pinned for `reason`.
fn pins(report: &RoutingReport, reason: PinReason) -> u64 {
    report
        .pins
        .iter()
        .find(|(r, _)| *r == reason)
        .map_or(0, |(_, count)| *count)
}

/// Asserts that `result` is an ERROR with `code`, and returns its message.
fn expect_error<T: std::fmt::Debug>(
    result: Result<T, tokio_postgres::Error>,
    code: &str,
    what: &str,
) -> String {
    let error = result.expect_err(what);
    assert_eq!(sqlstate(&error), code, "{what}: {error}");
    let db = error.as_db_error().unwrap();
    assert_eq!(db.severity(), "ERROR", "{what}");
    db.message().to_owned()
}

/// Autocommit SELECTs, simple and extended, run on the replicas (both of them over many
/// reads, never the primary); INSERT, UPDATE and DELETE, simple and extended, run on the
/// primary.
#[tokio::test]
async fn autocommit_reads_go_to_both_replicas_and_writes_to_the_primary() {
    let cluster = cluster_with("").await;
    let ports = Ports::of(&cluster);
    let proxy = ProxyUnderTest::start(&cluster, "").await;
    let conn = Conn::connect(&proxy).await;

    let mut served = BTreeMap::<i32, u32>::new();
    for i in 0..40 {
        let protocol = if i % 2 == 0 { Simple } else { Extended };
        let port = conn.port("SELECT inet_server_port()", protocol).await;
        assert!(
            ports.is_replica(port),
            "read {i} ({protocol:?}) ran on port {port}; {ports:?}"
        );
        *served.entry(port).or_default() += 1;
    }
    assert_eq!(
        served.len(),
        2,
        "both replicas share the reads: {served:?} of {ports:?}"
    );

    for (sql, protocol) in [
        (
            "INSERT INTO t VALUES (10) RETURNING inet_server_port()",
            Simple,
        ),
        (
            "INSERT INTO t VALUES (20) RETURNING inet_server_port()",
            Extended,
        ),
        (
            "UPDATE t SET id = 11 WHERE id = 10 RETURNING inet_server_port()",
            Extended,
        ),
        (
            "UPDATE t SET id = 21 WHERE id = 20 RETURNING inet_server_port()",
            Simple,
        ),
        (
            "DELETE FROM t WHERE id = 11 RETURNING inet_server_port()",
            Simple,
        ),
        (
            "INSERT INTO t VALUES (30) RETURNING inet_server_port()",
            Extended,
        ),
        (
            "DELETE FROM t WHERE id = 30 RETURNING inet_server_port()",
            Extended,
        ),
    ] {
        assert_eq!(conn.port(sql, protocol).await, ports.primary, "{sql}");
    }
    assert_eq!(
        on_node(cluster.primary(), "SELECT string_agg(id::text, ',') FROM t").await,
        "21",
        "every write took effect on the primary"
    );

    let report = proxy.proxy.routing_report();
    assert_eq!(routed(&report, 0, RouteReason::Read), 0, "{report:#?}");
    assert!(
        routed(&report, 1, RouteReason::Read) + routed(&report, 2, RouteReason::Read) >= 40,
        "{report:#?}"
    );
    assert!(
        routed(&report, 0, RouteReason::MayWrite) >= 7,
        "{report:#?}"
    );
    assert_eq!(report.read_only_retries, 0, "{report:#?}");
}

/// Extended-protocol reads with the unnamed statement (Parse, Bind, Execute, Sync in one
/// batch: what libpq's `PQexecParams`, and many drivers by default, send) run on the replicas;
/// writes sent that way run on the primary.
#[tokio::test]
async fn unnamed_statement_reads_go_to_the_replicas() {
    let cluster = cluster_with("").await;
    let ports = Ports::of(&cluster);
    let proxy = ProxyUnderTest::start(&cluster, "").await;
    let client = proxy.connect().await;

    for i in 0..10 {
        let rows = client
            .query_typed("SELECT inet_server_port() + $1", &[(&0i32, Type::INT4)])
            .await
            .unwrap();
        let port = rows[0].get::<_, i32>(0);
        assert!(ports.is_replica(port), "read {i} ran on {port}; {ports:?}");
    }
    let rows = client
        .query_typed(
            "INSERT INTO t VALUES ($1) RETURNING inet_server_port()",
            &[(&1i32, Type::INT4)],
        )
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, i32>(0), ports.primary);

    let report = proxy.proxy.routing_report();
    assert_eq!(routed(&report, 0, RouteReason::Read), 0, "{report:#?}");
    assert_eq!(routed(&report, 0, RouteReason::MayWrite), 1, "{report:#?}");
}

/// tokio-postgres closes a statement it drops, with a Close and a Sync, and sends the next
/// query right behind it. Closing a statement needs no server (the proxy answers a named
/// Close itself), so it must neither go to the primary nor take the next read there: a client
/// that only reads, with statements prepared, used and dropped, sends nothing to the primary.
#[tokio::test]
async fn a_closed_statement_does_not_send_the_next_read_to_the_primary() {
    let cluster = cluster_with("").await;
    let ports = Ports::of(&cluster);
    let proxy = ProxyUnderTest::start(&cluster, "").await;
    let client = proxy.connect().await;

    for i in 0..10 {
        // Prepared, executed, and dropped: the Close and Sync are queued for sending.
        let port: i32 = client
            .query_one("SELECT inet_server_port()", &[])
            .await
            .unwrap()
            .get(0);
        assert!(ports.is_replica(port), "read {i} ran on {port}; {ports:?}");
        let port: i32 = simple_row(&client, "SELECT inet_server_port()").await[0]
            .parse()
            .unwrap();
        assert!(
            ports.is_replica(port),
            "read {i} right behind a Close ran on {port}; {ports:?}"
        );
    }
    let report = proxy.proxy.routing_report();
    assert_eq!(
        routed_total(&report, 0),
        0,
        "a read-only client sent requests to the primary; {report:#?}"
    );
}

/// Statements that look like reads but write run on the primary and succeed: `nextval`, a
/// data-modifying CTE, `SELECT ... FOR UPDATE`, `SELECT ... INTO`, in both protocols. They
/// were routed to the primary in the first place: none went to a replica (where the 25006
/// safety net would have hidden a wrong route).
#[tokio::test]
async fn reads_that_write_run_on_the_primary() {
    let cluster = cluster_with("CREATE SEQUENCE s").await;
    let primary = cluster.primary();
    let ports = Ports::of(&cluster);
    let proxy = ProxyUnderTest::start(&cluster, "").await;
    let conn = Conn::connect(&proxy).await;

    for (protocol, id) in [(Simple, 1), (Extended, 2)] {
        for sql in [
            "SELECT inet_server_port() FROM nextval('s')".to_owned(),
            format!(
                "WITH x AS (INSERT INTO t VALUES ({id}) RETURNING id) \
                 SELECT inet_server_port() FROM x"
            ),
            format!("SELECT inet_server_port() FROM t WHERE id = {id} FOR UPDATE"),
        ] {
            assert_eq!(
                conn.port(&sql, protocol).await,
                ports.primary,
                "{protocol:?}: {sql}"
            );
        }
    }
    let rows = simple_rows(&conn, "SELECT * INTO copy_simple FROM t")
        .await
        .unwrap();
    assert!(rows.is_empty(), "{rows:?}");
    let statement = conn
        .statement("SELECT * INTO copy_extended FROM t")
        .await
        .unwrap();
    assert_eq!(conn.execute(&statement, &[]).await.unwrap(), 2);

    assert_eq!(on_node(primary, "SELECT last_value FROM s").await, "2");
    assert_eq!(
        on_node(
            primary,
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM t"
        )
        .await,
        "1,2"
    );
    for table in ["copy_simple", "copy_extended"] {
        assert_eq!(
            on_node(primary, &format!("SELECT count(*) FROM {table}")).await,
            "2",
            "{table} was created and filled on the primary"
        );
    }
    let report = proxy.proxy.routing_report();
    assert_eq!(
        routed_total(&report, 1) + routed_total(&report, 2),
        0,
        "a statement was routed to a replica; {report:#?}"
    );
    assert_eq!(report.read_only_retries, 0, "{report:#?}");
    assert!(
        routed(&report, 0, RouteReason::MayWrite) >= 12,
        "{report:#?}"
    );
}

/// The function of the 25006 tests: it inserts `new_id` into `t` and returns the port of the
/// server it ran on.
const ADD_ROW: &str = "CREATE FUNCTION add_row(new_id int) RETURNS int LANGUAGE plpgsql AS $$ \
     BEGIN INSERT INTO t VALUES (new_id); RETURN inet_server_port(); END $$";

/// Read-only retries so far, and reads routed to the replicas.
fn retries_and_replica_reads(proxy: &ProxyUnderTest) -> (u64, u64) {
    let report = proxy.proxy.routing_report();
    (
        report.read_only_retries,
        routed(&report, 1, RouteReason::Read) + routed(&report, 2, RouteReason::Read),
    )
}

/// The rows of `t`, in order, as the primary has them.
async fn ids_on(node: &Node) -> String {
    on_node(node, "SELECT string_agg(id::text, ',' ORDER BY id) FROM t").await
}

/// A plpgsql function that inserts, called as `SELECT add_row(...)`, looks like a read: a
/// replica refuses it with 25006 and the proxy runs it again on the primary. The client sees
/// only the success, the row exists once, on the primary, and each call counts one retry.
/// With the simple protocol, and a named prepared statement executed twice.
#[tokio::test]
async fn a_function_that_writes_is_retried_on_the_primary_after_25006() {
    let cluster = cluster_with(ADD_ROW).await;
    let ports = Ports::of(&cluster);
    let proxy = ProxyUnderTest::start(&cluster, "").await;
    let conn = Conn::connect(&proxy).await;

    let (retries, reads) = retries_and_replica_reads(&proxy);
    assert_eq!(conn.port("SELECT add_row(1)", Simple).await, ports.primary);
    let (retries_after, reads_after) = retries_and_replica_reads(&proxy);
    assert_eq!(retries_after, retries + 1, "simple");
    assert_eq!(
        reads_after,
        reads + 1,
        "simple: it was tried on a replica first"
    );
    assert_eq!(ids_on(cluster.primary()).await, "1");

    let statement = conn.statement("SELECT add_row($1)").await.unwrap();
    for id in [2i32, 3] {
        let (retries, _) = retries_and_replica_reads(&proxy);
        let row = conn.query_one(&statement, &[&id]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), ports.primary, "execution for {id}");
        assert_eq!(
            retries_and_replica_reads(&proxy).0,
            retries + 1,
            "execution for {id}"
        );
    }
    assert_eq!(
        ids_on(cluster.primary()).await,
        "1,2,3",
        "each call wrote its row exactly once"
    );
    // The session goes on normally afterwards.
    assert!(ports.is_replica(conn.port("SELECT inet_server_port()", Extended).await));
}

/// The same with the unnamed statement: Parse, Bind, Execute and Sync in one batch.
#[tokio::test]
async fn a_function_that_writes_is_retried_on_the_primary_with_the_unnamed_statement() {
    let cluster = cluster_with(ADD_ROW).await;
    let ports = Ports::of(&cluster);
    let proxy = ProxyUnderTest::start(&cluster, "").await;
    let client = proxy.connect().await;

    for id in [1i32, 2] {
        let (retries, reads) = retries_and_replica_reads(&proxy);
        let rows = client
            .query_typed("SELECT add_row($1)", &[(&id, Type::INT4)])
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].get::<_, i32>(0), ports.primary, "call for {id}");
        assert_eq!(
            retries_and_replica_reads(&proxy),
            (retries + 1, reads + 1),
            "call for {id}: tried on a replica, then retried on the primary"
        );
    }
    assert_eq!(ids_on(cluster.primary()).await, "1,2");
}

/// A transaction mixing reads and writes (BEGIN; SELECT; INSERT; SELECT; COMMIT) runs
/// entirely on the primary, on one backend, in both protocols.
#[tokio::test]
async fn a_read_write_transaction_runs_entirely_on_the_primary() {
    let cluster = cluster_with("").await;
    let ports = Ports::of(&cluster);
    let proxy = ProxyUnderTest::start(&cluster, "").await;
    let mut client = proxy.connect().await;

    // Extended protocol inside (tokio-postgres sends BEGIN and COMMIT as simple queries).
    let transaction = client.transaction().await.unwrap();
    let mut seen = Vec::new();
    for sql in [
        "SELECT inet_server_port(), pg_backend_pid()",
        "INSERT INTO t VALUES (1) RETURNING inet_server_port(), pg_backend_pid()",
        "SELECT inet_server_port(), pg_backend_pid() FROM t WHERE id = 1",
    ] {
        let row = transaction
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        seen.push((row.get::<_, i32>(0), row.get::<_, i32>(1)));
    }
    transaction.commit().await.unwrap();
    assert!(
        seen.iter().all(|s| *s == (ports.primary, seen[0].1)),
        "{seen:?}, primary {}",
        ports.primary
    );

    // Simple protocol, statement by statement.
    let mut seen = Vec::new();
    client.batch_execute("BEGIN").await.unwrap();
    for sql in [
        "SELECT inet_server_port(), pg_backend_pid()",
        "INSERT INTO t VALUES (2) RETURNING inet_server_port(), pg_backend_pid()",
        "SELECT inet_server_port(), pg_backend_pid() FROM t WHERE id = 2",
    ] {
        seen.push(simple_row(&client, sql).await);
    }
    client.batch_execute("COMMIT").await.unwrap();
    let expected = [ports.primary.to_string(), seen[0][1].clone()];
    assert!(seen.iter().all(|s| *s == expected), "{seen:?}, {ports:?}");

    assert_eq!(
        on_node(
            cluster.primary(),
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM t"
        )
        .await,
        "1,2"
    );
    let report = proxy.proxy.routing_report();
    assert_eq!(
        routed(&report, 0, RouteReason::ReadWriteTransaction),
        2,
        "{report:#?}"
    );
    assert_eq!(routed_total(&report, 1) + routed_total(&report, 2), 0);
}

/// Read-only transactions run on a replica, every statement on the same backend: `BEGIN READ
/// ONLY`, `START TRANSACTION READ ONLY` (what tokio-postgres's builder sends), and a plain
/// `BEGIN` followed by `SET TRANSACTION READ ONLY`.
#[tokio::test]
async fn read_only_transactions_run_on_a_replica() {
    let cluster = cluster_with("").await;
    let ports = Ports::of(&cluster);
    let proxy = ProxyUnderTest::start(&cluster, "").await;
    let conn = Conn::connect(&proxy).await;
    const SQL: &str = "SELECT inet_server_port(), pg_is_in_recovery(), pg_backend_pid()";
    let statement = conn.statement(SQL).await.unwrap();

    for begin in [
        &["BEGIN READ ONLY"][..],
        &["START TRANSACTION READ ONLY"],
        &["BEGIN", "SET TRANSACTION READ ONLY"],
    ] {
        for sql in begin {
            conn.batch_execute(sql).await.unwrap();
        }
        let first = conn.query_one(&statement, &[]).await.unwrap();
        let second = simple_row(&conn, SQL).await;
        conn.batch_execute("COMMIT").await.unwrap();
        let port = first.get::<_, i32>(0);
        assert!(ports.is_replica(port), "{begin:?}: {port}, {ports:?}");
        assert!(first.get::<_, bool>(1), "{begin:?}");
        assert_eq!(
            second,
            [
                port.to_string(),
                "t".to_owned(),
                first.get::<_, i32>(2).to_string()
            ],
            "{begin:?}: the same backend for the whole transaction"
        );
    }

    let report = proxy.proxy.routing_report();
    assert_eq!(
        routed(&report, 1, RouteReason::ReadOnlyTransaction)
            + routed(&report, 2, RouteReason::ReadOnlyTransaction),
        3,
        "{report:#?}"
    );
    assert_eq!(routed_total(&report, 0), 0, "{report:#?}");
}

/// A temporary table pins the session to its primary connection: later separate
/// transactions, autocommit SELECTs included (which would run on a replica, or on another
/// pooled connection, where the table does not exist), all use it. Another client meanwhile
/// gets another connection. The pin is counted once.
#[tokio::test]
async fn a_temporary_table_pins_the_session_to_its_server() {
    let cluster = cluster_with("").await;
    let ports = Ports::of(&cluster);
    let proxy = ProxyUnderTest::start(&cluster, "").await;
    let client = proxy.connect().await;
    let other = proxy.connect().await;

    client
        .batch_execute("CREATE TEMP TABLE scratch (a int)")
        .await
        .unwrap();
    let pid: i32 = client
        .query_one(
            "INSERT INTO scratch VALUES (1) RETURNING pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    for round in 0..3 {
        // Another client works on the primary in between: it must not get the pinned
        // connection.
        let other_pid: i32 = other
            .query_one(
                "SELECT pg_backend_pid() FROM pg_class LIMIT 1 FOR SHARE",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_ne!(
            other_pid, pid,
            "round {round}: another client got the pinned backend"
        );

        let row = client
            .query_one(
                "SELECT inet_server_port(), pg_backend_pid(), count(*)::int FROM scratch",
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("round {round}, extended: {e}"));
        assert_eq!(
            (
                row.get::<_, i32>(0),
                row.get::<_, i32>(1),
                row.get::<_, i32>(2)
            ),
            (ports.primary, pid, 1),
            "round {round}, extended"
        );
        assert_eq!(
            simple_row(
                &client,
                "SELECT inet_server_port(), pg_backend_pid(), count(*) FROM scratch"
            )
            .await,
            [ports.primary.to_string(), pid.to_string(), "1".to_owned()],
            "round {round}, simple"
        );
    }
    client.batch_execute("BEGIN").await.unwrap();
    let in_transaction: i32 = client
        .query_one("SELECT count(*)::int FROM scratch", &[])
        .await
        .unwrap()
        .get(0);
    client.batch_execute("COMMIT").await.unwrap();
    assert_eq!(in_transaction, 1);

    let report = proxy.proxy.routing_report();
    assert_eq!(pins(&report, PinReason::TemporaryTable), 1, "{report:#?}");
}

/// A session advisory lock pins the session: the lock is still held by the session's backend
/// after its transaction ended (an unpinned connection would be reset, which releases it),
/// and the session can unlock it later.
#[tokio::test]
async fn a_session_advisory_lock_pins_the_session_to_its_server() {
    let cluster = cluster_with("").await;
    let primary = cluster.primary();
    let proxy = ProxyUnderTest::start(&cluster, "").await;
    let client = proxy.connect().await;
    let other = proxy.connect().await;

    let row = simple_row(&client, "SELECT pg_advisory_lock(4242), pg_backend_pid()").await;
    let pid = row[1].clone();
    // Other traffic through the proxy, then a look from outside.
    for id in 0..3 {
        other
            .execute(&format!("INSERT INTO t VALUES ({id})"), &[])
            .await
            .unwrap();
        assert_eq!(simple_row(&client, "SELECT pg_backend_pid()").await[0], pid);
    }
    let holders = "SELECT string_agg(pid::text, ',') FROM pg_locks \
         WHERE locktype = 'advisory' AND objid = 4242 AND granted";
    assert_eq!(
        on_node(primary, holders).await,
        pid,
        "the session holds the lock"
    );
    assert_eq!(
        on_node(primary, "SELECT pg_try_advisory_lock(4242)").await,
        "f",
        "nobody else can take it"
    );

    assert_eq!(
        simple_row(&client, "SELECT pg_advisory_unlock(4242)").await,
        ["t"],
        "the session unlocks its own lock"
    );
    assert_eq!(on_node(primary, holders).await, "NULL");
    let report = proxy.proxy.routing_report();
    assert_eq!(
        pins(&report, PinReason::SessionAdvisoryLock),
        1,
        "{report:#?}"
    );
}

/// Hints and `meridian.route`: a leading `/* meridian:primary */` sends that statement to the
/// primary; `SET meridian.route = primary` sends the session's later reads there (a
/// `/* meridian:replica */` hint still wins), `SHOW meridian.route` tells it, `RESET` goes
/// back to replicas. A bad value is 22023 and an unknown `meridian.*` setting 42704, and the
/// session goes on.
#[tokio::test]
async fn hints_and_meridian_route_choose_the_server() {
    let cluster = cluster_with("").await;
    let ports = Ports::of(&cluster);
    let proxy = ProxyUnderTest::start(&cluster, "").await;
    let conn = Conn::connect(&proxy).await;
    let show_route = || async { simple_row(&conn, "SHOW meridian.route").await };
    const READ: &str = "SELECT inet_server_port()";

    for protocol in [Simple, Extended] {
        assert_eq!(
            conn.port("/* meridian:primary */ SELECT inet_server_port()", protocol)
                .await,
            ports.primary,
            "hint, {protocol:?}"
        );
        assert!(ports.is_replica(conn.port(READ, protocol).await));
    }
    assert_eq!(show_route().await, ["auto"]);

    conn.batch_execute("SET meridian.route = primary")
        .await
        .unwrap();
    assert_eq!(show_route().await, ["primary"]);
    for (i, protocol) in [Simple, Extended].repeat(3).into_iter().enumerate() {
        assert_eq!(
            conn.port(READ, protocol).await,
            ports.primary,
            "read {i} ({protocol:?}) after SET meridian.route = primary"
        );
    }
    assert!(
        ports.is_replica(
            conn.port("/* meridian:replica */ SELECT inet_server_port()", Extended)
                .await
        ),
        "a statement's hint beats the session's setting"
    );

    let message = expect_error(
        conn.simple_query("SET meridian.route = nonsense").await,
        "22023",
        "SET meridian.route = nonsense",
    );
    assert!(message.contains("nonsense"), "{message}");
    assert_eq!(show_route().await, ["primary"], "unchanged by the bad SET");
    expect_error(
        conn.simple_query("SHOW meridian.nope").await,
        "42704",
        "SHOW meridian.nope",
    );
    assert_eq!(
        conn.port(READ, Extended).await,
        ports.primary,
        "the session goes on after the errors"
    );

    conn.batch_execute("RESET meridian.route").await.unwrap();
    assert_eq!(show_route().await, ["auto"]);
    for (i, protocol) in [Simple, Extended].repeat(2).into_iter().enumerate() {
        assert!(
            ports.is_replica(conn.port(READ, protocol).await),
            "read {i} ({protocol:?}) after RESET"
        );
    }

    let report = proxy.proxy.routing_report();
    assert_eq!(
        routed(&report, 0, RouteReason::HintPrimary),
        3,
        "simple, prepare, execute; {report:#?}"
    );
    assert_eq!(
        routed(&report, 0, RouteReason::SessionPrimary),
        7,
        "{report:#?}"
    );
    assert_eq!(
        routed(&report, 1, RouteReason::HintReplica) + routed(&report, 2, RouteReason::HintReplica),
        2,
        "prepare and execute of the hinted read; {report:#?}"
    );
}

/// Meridian's own commands work over the extended protocol too (as JDBC and other drivers
/// send every statement): `SET`, `SHOW` and `RESET` of `meridian.route` through prepared and
/// unnamed statements, answered by the proxy, with errors that leave the session usable.
#[tokio::test]
async fn meridian_commands_work_over_the_extended_protocol() {
    let cluster = cluster_with("").await;
    let ports = Ports::of(&cluster);
    let proxy = ProxyUnderTest::start(&cluster, "").await;
    let client = proxy.connect().await;
    const READ: &str = "SELECT inet_server_port()";
    let read_port = || async { client.query_one(READ, &[]).await.unwrap().get::<_, i32>(0) };

    client
        .execute("SET meridian.route = primary", &[])
        .await
        .unwrap();
    let shown: String = client
        .query_one("SHOW meridian.route", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(shown, "primary");
    for i in 0..4 {
        assert_eq!(
            read_port().await,
            ports.primary,
            "read {i} after SET (extended)"
        );
    }

    // A named prepared statement, run twice, and its RowDescription.
    let show = client.prepare("SHOW meridian.lsn").await.unwrap();
    assert_eq!(show.columns()[0].name(), "meridian.lsn");
    for _ in 0..2 {
        let lsn: String = client.query_one(&show, &[]).await.unwrap().get(0);
        assert_eq!(lsn, "0/0", "no write yet");
    }
    drop(show);

    let message = expect_error(
        client.execute("SET meridian.route = nowhere", &[]).await,
        "22023",
        "SET meridian.route = nowhere (extended)",
    );
    assert!(message.contains("nowhere"), "{message}");
    expect_error(
        client.query("SHOW meridian.nope", &[]).await,
        "42704",
        "SHOW meridian.nope (extended)",
    );
    assert_eq!(read_port().await, ports.primary, "the session goes on");

    client.execute("RESET meridian.route", &[]).await.unwrap();
    for i in 0..4 {
        assert!(ports.is_replica(read_port().await), "read {i} after RESET");
    }
}

/// Makes every replica of `cluster` apply each commit `delay` after it was made.
async fn delay_replicas(cluster: &TestCluster, delay: &str) {
    for replica in cluster.replicas() {
        replica
            .execute(&format!(
                "ALTER SYSTEM SET recovery_min_apply_delay = '{delay}'"
            ))
            .await
            .unwrap();
        replica.execute("SELECT pg_reload_conf()").await.unwrap();
        wait_until(
            STEP,
            &format!("{} to apply recovery_min_apply_delay", replica.name()),
            || async {
                let value = replica.query_one("SHOW recovery_min_apply_delay").await;
                match value {
                    Ok(value) => Check::when(value.as_deref() == Some(delay), (), value),
                    Err(e) => Check::NotYet(format!("{e:#}")),
                }
            },
        )
        .await
        .unwrap();
    }
}

/// What the read-your-writes checker saw.
#[derive(Debug, Default)]
struct Checked {
    reads: usize,
    stale: usize,
    on_replicas: usize,
}

/// `clients` concurrent clients, each `rounds` times: INSERT a unique row, then read it back
/// at once (autocommit both, alternating extended and simple protocol). A read that does not
/// find the row is stale.
async fn read_your_writes_checker(
    proxy: &ProxyUnderTest,
    ports: &Ports,
    clients: usize,
    rounds: usize,
) -> Checked {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = proxy.connect().await;
        let ports = ports.clone();
        tasks.push(tokio::spawn(async move {
            let insert = client.prepare("INSERT INTO t VALUES ($1)").await.unwrap();
            let read = client
                .prepare("SELECT inet_server_port(), EXISTS (SELECT 1 FROM t WHERE id = $1)")
                .await
                .unwrap();
            let mut checked = Checked::default();
            for r in 0..rounds {
                let id = (c * 1000 + r) as i32;
                let (port, found) = if r % 2 == 0 {
                    client.execute(&insert, &[&id]).await.unwrap();
                    let row = client.query_one(&read, &[&id]).await.unwrap();
                    (row.get::<_, i32>(0), row.get::<_, bool>(1))
                } else {
                    client
                        .batch_execute(&format!("INSERT INTO t VALUES ({id})"))
                        .await
                        .unwrap();
                    let row = simple_row(
                        &client,
                        &format!(
                            "SELECT inet_server_port(), EXISTS (SELECT 1 FROM t WHERE id = {id})"
                        ),
                    )
                    .await;
                    (row[0].parse().unwrap(), row[1] == "t")
                };
                checked.reads += 1;
                checked.stale += usize::from(!found);
                checked.on_replicas += usize::from(ports.is_replica(port));
            }
            checked
        }));
    }
    let mut all = Checked::default();
    for task in tasks {
        let checked = tokio::time::timeout(2 * STEP, task)
            .await
            .expect("a checker client did not finish")
            .unwrap();
        all.reads += checked.reads;
        all.stale += checked.stale;
        all.on_replicas += checked.on_replicas;
    }
    all
}

/// Read-your-writes (`read_your_writes = "session"`, the default) with replicas applying
/// commits 50 ms late: 16 clients each insert a row and read it back at once, and no read
/// is stale. The reads still run on the replicas: each waits there for its write
/// (`causal_read_timeout` is far longer than the delay) instead of going to the primary.
#[tokio::test]
async fn read_your_writes_has_no_stale_reads_and_still_reads_from_replicas() {
    let cluster = cluster_with("").await;
    let ports = Ports::of(&cluster);
    delay_replicas(&cluster, "50ms").await;
    let proxy = ProxyUnderTest::start(&cluster, "[routing]\ncausal_read_timeout = \"5s\"\n").await;

    let checked = read_your_writes_checker(&proxy, &ports, 16, 8).await;
    let report = proxy.proxy.routing_report();
    assert_eq!(checked.stale, 0, "{checked:?}; {report:#?}");
    assert!(
        checked.on_replicas * 2 >= checked.reads,
        "most reads should wait on a replica, not go to the primary: {checked:?}; {report:#?}"
    );
    assert!(report.causal_waits > 0, "{report:#?}");
}

/// The same checker with `read_your_writes = "off"` finds stale reads: it can fail.
#[tokio::test]
async fn without_read_your_writes_the_checker_finds_stale_reads() {
    let cluster = cluster_with("").await;
    let ports = Ports::of(&cluster);
    delay_replicas(&cluster, "50ms").await;
    let proxy = ProxyUnderTest::start(&cluster, "[routing]\nread_your_writes = \"off\"\n").await;

    let checked = read_your_writes_checker(&proxy, &ports, 16, 8).await;
    assert!(checked.stale > 0, "{checked:?}");
    assert_eq!(checked.on_replicas, checked.reads, "{checked:?}");
    assert_eq!(proxy.proxy.routing_report().causal_waits, 0);
}

/// The read-your-writes token across connections: client A writes and asks `SHOW
/// meridian.lsn`; client B sets `meridian.min_lsn` to it and reads the row, on a replica that
/// applies commits 200 ms late: found.
#[tokio::test]
async fn a_read_your_writes_token_carries_across_connections() {
    let cluster = cluster_with("").await;
    let ports = Ports::of(&cluster);
    delay_replicas(&cluster, "200ms").await;
    let proxy = ProxyUnderTest::start(&cluster, "[routing]\ncausal_read_timeout = \"5s\"\n").await;
    let writer = proxy.connect().await;
    let reader = proxy.connect().await;
    assert_eq!(simple_row(&writer, "SHOW meridian.lsn").await, ["0/0"]);

    writer
        .batch_execute("INSERT INTO t VALUES (7)")
        .await
        .unwrap();
    let token = simple_row(&writer, "SHOW meridian.lsn").await.remove(0);
    assert_ne!(token, "0/0", "the writer's position is known");

    reader
        .batch_execute(&format!("SET meridian.min_lsn = '{token}'"))
        .await
        .unwrap();
    assert_eq!(simple_row(&reader, "SHOW meridian.min_lsn").await, [token]);
    let waits = proxy.proxy.routing_report().causal_waits;
    let row = reader
        .query_one(
            "SELECT inet_server_port(), EXISTS (SELECT 1 FROM t WHERE id = 7)",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(1), "the reader sees the writer's row");
    assert!(
        ports.is_replica(row.get(0)),
        "it waited on a replica: {}",
        row.get::<_, i32>(0)
    );
    let report = proxy.proxy.routing_report();
    assert!(report.causal_waits > waits, "{report:#?}");
    assert_eq!(report.causal_timeouts, 0, "{report:#?}");
}

/// `read_your_writes = "global"`: a read sees every write committed before it, whoever made
/// it; in `session` mode another session's fresh write is not waited for (the replicas are
/// 200 ms behind, so its read comes back without the row).
#[tokio::test]
async fn global_read_your_writes_sees_other_sessions_writes() {
    let cluster = cluster_with("").await;
    let ports = Ports::of(&cluster);
    delay_replicas(&cluster, "200ms").await;
    let read = "SELECT inet_server_port(), EXISTS (SELECT 1 FROM t WHERE id = $1)";
    for (mode, id, expect_seen) in [("global", 21, true), ("session", 22, false)] {
        let proxy = ProxyUnderTest::start(
            &cluster,
            &format!("[routing]\nread_your_writes = \"{mode}\"\ncausal_read_timeout = \"5s\"\n"),
        )
        .await;
        let writer = proxy.connect().await;
        let reader = proxy.connect().await;
        writer
            .execute("INSERT INTO t VALUES ($1)", &[&id])
            .await
            .unwrap();
        let row = reader.query_one(read, &[&id]).await.unwrap();
        assert!(ports.is_replica(row.get(0)), "{mode}: read on a replica");
        assert_eq!(
            row.get::<_, bool>(1),
            expect_seen,
            "{mode}: the other session's row"
        );
    }
}

/// One read of the replica-kill test.
#[derive(Debug)]
struct Read {
    started: Instant,
    finished: Instant,
    outcome: Result<i32, String>,
}

/// A replica killed under read load: reads in flight at the kill may fail, but every read
/// started after it succeeds on the other replica (the proxy opens the dead node's circuit
/// when it cannot connect; the view still calls the node healthy), and none takes longer
/// than 5 s.
#[tokio::test]
async fn reads_started_after_a_replica_dies_succeed_on_the_other_replica() {
    let cluster = cluster_with("").await;
    let ports = Ports::of(&cluster);
    let victim = &cluster.replicas()[0];
    let survivor = i32::from(cluster.replicas()[1].port());
    let proxy = ProxyUnderTest::start(&cluster, "").await;

    let stop = Arc::new(AtomicBool::new(false));
    // Every finished read, shared so that the test can wait for enough of them.
    let finished: Arc<std::sync::Mutex<Vec<Read>>> = Arc::default();
    let mut readers = Vec::new();
    for r in 0..4 {
        let client = proxy.connect().await;
        let simple = r % 2 == 0;
        let statement = client.prepare("SELECT inet_server_port()").await.unwrap();
        let stop = stop.clone();
        let finished = finished.clone();
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let read = async {
                    if simple {
                        simple_rows(&client, "SELECT inet_server_port()")
                            .await
                            .map(|rows| rows[0][0].as_deref().unwrap().parse().unwrap())
                    } else {
                        client
                            .query_one(&statement, &[])
                            .await
                            .map(|row| row.get::<_, i32>(0))
                    }
                };
                let outcome = match tokio::time::timeout(STEP, read).await {
                    Ok(Ok(port)) => Ok(port),
                    Ok(Err(e)) => Err(format!("{}: {e}", sqlstate(&e))),
                    Err(_) => Err("no answer within 30 s".to_owned()),
                };
                finished.lock().unwrap().push(Read {
                    started,
                    finished: Instant::now(),
                    outcome,
                });
            }
        }));
    }
    wait_until(STEP, "reads on both replicas", || async {
        let report = proxy.proxy.routing_report();
        let counts = [1, 2].map(|i| routed(&report, i, RouteReason::Read));
        Check::when(counts.iter().all(|&n| n >= 20), (), counts)
    })
    .await
    .unwrap();

    victim.kill();
    let killed = Instant::now();
    // Load until the dead node's circuit has closed once (after 2 s), a read has tried it
    // again and opened it a second time, and at least 20 reads started after the kill have
    // finished (however slow a loaded machine makes them).
    wait_until(
        STEP,
        "the dead replica's circuit to open twice under 20 reads",
        || async {
            let rerouted = proxy.proxy.routing_report().nodes[1].rerouted;
            let after = finished
                .lock()
                .unwrap()
                .iter()
                .filter(|r| r.started >= killed)
                .count();
            Check::when(rerouted >= 2 && after >= 20, (), (rerouted, after))
        },
    )
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }
    let reads = std::mem::take(&mut *finished.lock().unwrap());

    let before: Vec<&Read> = reads.iter().filter(|r| r.started < killed).collect();
    let after: Vec<&Read> = reads.iter().filter(|r| r.started >= killed).collect();
    let failed_in_flight = before.iter().filter(|r| r.outcome.is_err()).count();
    let bad: Vec<String> = after
        .iter()
        .filter(|r| r.outcome.as_ref() != Ok(&survivor))
        .map(|r| {
            format!(
                "started {:?} after the kill: {:?}",
                r.started - killed,
                r.outcome
            )
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} reads started after the kill did not succeed on the survivor (port \
         {survivor}; {ports:?}; {failed_in_flight} in flight failed):\n{}",
        bad.len(),
        after.len(),
        bad.join("\n")
    );
    let first = after.iter().min_by_key(|r| r.started).unwrap();
    assert!(
        first.finished - killed < Duration::from_secs(5),
        "the first read after the kill finished {:?} after it",
        first.finished - killed
    );
    let slowest = after.iter().map(|r| r.finished - r.started).max().unwrap();
    assert!(slowest < Duration::from_secs(5), "a read took {slowest:?}");
    let report = proxy.proxy.routing_report();
    assert!(report.nodes[1].rerouted >= 1, "{report:#?}");
}

/// `primary_reads = "never"` with every replica down: a read fails with 08006 and a message
/// naming primary_reads, with the simple and the extended protocol; writes still run on the
/// primary. First with the view still calling the replicas healthy (the proxy finds out by
/// failing to connect), then with a view that marks them down.
#[tokio::test]
async fn with_primary_reads_never_and_no_replica_reads_fail_and_writes_work() {
    let cluster = cluster_with("").await;
    let ports = Ports::of(&cluster);
    let proxy = ProxyUnderTest::start(&cluster, "[routing]\nprimary_reads = \"never\"\n").await;
    let conn = Conn::connect(&proxy).await;
    assert!(ports.is_replica(conn.port("SELECT inet_server_port()", Simple).await));

    for replica in cluster.replicas() {
        replica.kill();
    }
    for (stage, round) in [
        ("replicas killed, view unchanged", 1),
        ("view marks them down", 2),
    ] {
        if round == 2 {
            let mut view = view_of(&cluster, 0);
            for node in &mut view.nodes[1..] {
                node.health = Health::Down;
            }
            proxy.publish(view);
        }
        let failures = proxy.proxy.routing_report().no_replica_failures;
        for protocol in [Simple, Extended] {
            let message = expect_error(
                conn.int("SELECT inet_server_port()", protocol).await,
                "08006",
                &format!("{stage}: a read, {protocol:?}"),
            );
            assert!(
                message.contains("primary_reads"),
                "{stage}, {protocol:?}: {message}"
            );
        }
        assert_eq!(
            proxy.proxy.routing_report().no_replica_failures,
            failures + 2,
            "{stage}"
        );
        for (id, protocol) in [(round * 10, Simple), (round * 10 + 1, Extended)] {
            assert_eq!(
                conn.port(
                    &format!("INSERT INTO t VALUES ({id}) RETURNING inet_server_port()"),
                    protocol
                )
                .await,
                ports.primary,
                "{stage}: a write"
            );
        }
    }
    assert_eq!(ids_on(cluster.primary()).await, "10,11,20,21");
}

/// `primary_reads = "never"` with every replica down: a new client can still log in (logging
/// in reads nothing: it only needs some server's parameters) and write.
#[tokio::test]
async fn with_primary_reads_never_and_no_replica_a_new_client_logs_in_and_writes() {
    let cluster = cluster_with("").await;
    let ports = Ports::of(&cluster);
    let proxy = ProxyUnderTest::start(&cluster, "[routing]\nprimary_reads = \"never\"\n").await;
    for replica in cluster.replicas() {
        replica.kill();
    }
    let mut view = view_of(&cluster, 0);
    for node in &mut view.nodes[1..] {
        node.health = Health::Down;
    }
    proxy.publish(view);

    let client = tokio::time::timeout(STEP, proxy.connect_as("app", support::PASSWORD))
        .await
        .expect("no answer to the login")
        .unwrap_or_else(|e| {
            panic!(
                "the login failed: {} {:?}",
                sqlstate(&e),
                e.as_db_error().map(|db| db.message())
            )
        });
    let port: i32 = client
        .query_one("INSERT INTO t VALUES (1) RETURNING inet_server_port()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(port, ports.primary);
}
