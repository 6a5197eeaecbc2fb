//! The service end to end, in-process over HTTP, on real PostgreSQL clusters with real
//! streaming replication:
//!
//! - migrations create the table on the primary, once, even when two run at the same time;
//! - a posted transaction reads back by id with its `x-wal-token` even while the replica's
//!   replay is paused, when a plain read cannot see it yet (read-your-writes);
//! - the list pages newest first; bad parameters, bodies, ids and tokens are refused naming
//!   the field; unknown ids are 404;
//! - `/health` reports both nodes with the version, and turns 503 with `db_replica:
//!   "disconnected"` when the replica dies, while reads and writes go on.
//!
//! Every wait polls with a deadline ([`wait_until`]); nothing sleeps and hopes.

mod support;

use meridian_client::WalToken;
use meridian_testkit::{Check, TestCluster, wait_until};
use serde_json::{Value, json};

use support::{Service, TIMEOUT, manager};

/// The ids of a list reply, in order.
fn ids(list: &Value) -> Vec<i64> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|row| row["id"].as_i64().unwrap())
        .collect()
}

/// Rows of `transactions` on the primary.
async fn stored_rows(cluster: &TestCluster) -> String {
    cluster
        .primary()
        .query_one("SELECT count(*) FROM transactions")
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn migrations_create_the_table_on_the_primary_once_even_when_two_run_at_once() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    let db = manager(&cluster).await;
    let other = manager(&cluster).await;

    // Two instances starting together: sqlx's advisory lock lets one apply the migration and
    // the other find it applied.
    let (first, second) = tokio::join!(synapse::migrate(&db), synapse::migrate(&other));
    first.unwrap();
    second.unwrap();
    synapse::migrate(&db)
        .await
        .expect("running them again is a no-op");

    let primary = cluster.primary();
    assert_eq!(
        primary
            .query_one("SELECT count(*) FROM _sqlx_migrations WHERE success")
            .await
            .unwrap()
            .as_deref(),
        Some("1")
    );
    for relation in ["transactions", "transactions_account_id_idx"] {
        assert_eq!(
            primary
                .query_one(&format!("SELECT to_regclass('public.{relation}')::text"))
                .await
                .unwrap()
                .as_deref(),
            Some(relation)
        );
    }
    // The constraints repeat the service's rules for any other writer.
    let refused = primary
        .execute(
            "INSERT INTO transactions (account, amount_cents, currency) VALUES ('a', 1, 'eur')",
        )
        .await;
    assert!(refused.is_err(), "a lower-case currency was stored");
    // Created on the primary, the table reaches the replica by replication.
    let replica = &cluster.replicas()[0];
    wait_until(TIMEOUT, "the table on the replica", || async {
        let found = replica
            .query_one("SELECT to_regclass('public.transactions')::text")
            .await;
        match found {
            Ok(Some(name)) => Check::Ready(name),
            other => Check::NotYet(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_posted_transaction_reads_back_with_its_token_while_the_replica_lags() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    let replica = &cluster.replicas()[0];
    let service = Service::start(manager(&cluster).await).await;
    wait_until(TIMEOUT, "the table on the replica", || async {
        replica
            .query_one("SELECT to_regclass('public.transactions')::text")
            .await
            .map(|found| Check::when(found.is_some(), (), found))
            .unwrap_or_else(|e| Check::NotYet(e.to_string()))
    })
    .await
    .unwrap();

    // The replica stops applying WAL: it keeps serving reads, from before the write.
    replica
        .execute("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    wait_until(TIMEOUT, "replay to be paused", || async {
        let state = replica
            .query_one("SELECT pg_get_wal_replay_pause_state()")
            .await;
        match state {
            Ok(Some(state)) if state == "paused" => Check::Ready(()),
            other => Check::NotYet(format!("{other:?}")),
        }
    })
    .await
    .unwrap();

    let created = service
        .post(
            "/transactions",
            r#"{"account": "acc-1", "amount_cents": -1250, "currency": "EUR", "description": "rent"}"#,
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let row = created.json();
    let id = row["id"].as_i64().expect("an id");
    assert_eq!(row["account"], "acc-1");
    assert_eq!(row["amount_cents"], -1250);
    assert_eq!(row["currency"], "EUR");
    assert_eq!(row["description"], "rent");
    // RFC 3339 in UTC with microseconds: 2026-01-31T09:15:02.123456Z.
    let at = row["created_at"].as_str().expect("created_at");
    assert_eq!(
        (at.len(), &at[4..5], &at[10..11], &at[19..20], &at[26..]),
        (27, "-", "T", ".", "Z"),
        "{at}"
    );
    assert_eq!(
        created.header("location"),
        Some(&*format!("/transactions/{id}"))
    );
    let token = created.header("x-wal-token").expect("a token").to_owned();
    token.parse::<WalToken>().expect("a WAL position");

    // With the token, the read goes where the write is visible: the primary, since the
    // replica cannot have replayed it.
    let path = format!("/transactions/{id}");
    let read = service.get_after(&path, &token).await;
    assert_eq!((read.status, read.json()), (200, row.clone()));
    let list = service.get_after("/transactions", &token).await;
    assert_eq!((list.status, ids(&list.json())), (200, vec![id]));
    // Without it, the read goes to the replica, which has not seen the write.
    let stale = service.get(&path).await;
    assert_eq!(stale.status, 404, "{stale:?}");
    assert!(stale.json()["error"].is_string(), "{stale:?}");
    assert_eq!(
        ids(&service.get("/transactions").await.json()),
        Vec::<i64>::new()
    );
    let metrics = service.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    let fallbacks: u64 = metrics
        .body
        .lines()
        .find_map(|line| line.strip_prefix("meridian_client_read_fallbacks_total "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}", metrics.body));
    assert!(
        fallbacks >= 2,
        "the reads after the write fell back to the primary"
    );

    // Replay resumes: plain reads see the row too.
    replica
        .execute("SELECT pg_wal_replay_resume()")
        .await
        .unwrap();
    wait_until(TIMEOUT, "a plain read to see the row", || async {
        let read = service.get(&path).await;
        Check::when(read.status == 200, read.json(), read)
    })
    .await
    .map(|seen| assert_eq!(seen, row))
    .unwrap();
}

#[tokio::test]
async fn the_list_pages_newest_first_and_bad_parameters_are_named() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let service = Service::start(manager(&cluster).await).await;
    let mut created = Vec::new();
    for n in 1..=5 {
        created.push(
            service.create(&format!("acc-{n}"), n * 100).await.json()["id"]
                .as_i64()
                .unwrap(),
        );
    }
    let newest_first: Vec<i64> = created.iter().rev().copied().collect();

    for (query, expected) in [
        ("", &newest_first[..]),
        ("?limit=500", &newest_first[..]),
        ("?limit=2", &newest_first[..2]),
        ("?limit=2&offset=2", &newest_first[2..4]),
        ("?offset=4", &newest_first[4..]),
        ("?offset=5", &[]),
    ] {
        let list = service.get(&format!("/transactions{query}")).await;
        assert_eq!(list.status, 200, "{query}: {list:?}");
        assert_eq!(ids(&list.json()), expected, "{query}");
    }
    let first = &service.get("/transactions?limit=1").await.json()[0];
    assert_eq!(first["account"], "acc-5");
    assert_eq!(first["amount_cents"], 500);

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("limit=1&limit=2", "limit"),
        ("page=2", "page"),
    ] {
        let refused = service.get(&format!("/transactions?{query}")).await;
        assert_eq!(
            (refused.status, refused.field()),
            (400, json!(field)),
            "{query}: {refused:?}"
        );
    }
    let refused = service.get_after("/transactions", "yesterday").await;
    assert_eq!(
        (refused.status, refused.field()),
        (400, json!("x-wal-token"))
    );
}

#[tokio::test]
async fn invalid_requests_are_refused_naming_the_field_and_store_nothing() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let service = Service::start(manager(&cluster).await).await;

    for (body, field) in [
        (r#"{"amount_cents": 1, "currency": "EUR"}"#, "account"),
        (
            r#"{"account": "", "amount_cents": 1, "currency": "EUR"}"#,
            "account",
        ),
        (
            r#"{"account": "a", "amount_cents": 0, "currency": "EUR"}"#,
            "amount_cents",
        ),
        (
            r#"{"account": "a", "amount_cents": 1.5, "currency": "EUR"}"#,
            "amount_cents",
        ),
        (
            r#"{"account": "a", "amount_cents": 1, "currency": "eur"}"#,
            "currency",
        ),
        (
            r#"{"account": "a", "amount_cents": 1, "currency": "EURO"}"#,
            "currency",
        ),
        (
            r#"{"account": "a", "amount_cents": 1, "currency": "EUR", "to": "b"}"#,
            "to",
        ),
        ("[]", "body"),
    ] {
        let refused = service.post("/transactions", body).await;
        assert_eq!(
            (refused.status, refused.field()),
            (422, json!(field)),
            "{body}: {refused:?}"
        );
        assert!(refused.json()["error"].is_string(), "{refused:?}");
    }
    let not_json = service.post("/transactions", "{\"account\": ").await;
    assert_eq!((not_json.status, not_json.field()), (400, json!("body")));
    let untyped = service
        .call("POST", "/transactions", &[], Some(r#"{"account": "a"}"#))
        .await;
    assert_eq!(untyped.status, 415, "{untyped:?}");
    assert_eq!(stored_rows(&cluster).await, "0");

    let id = service.create("acc-1", 1).await.json()["id"]
        .as_i64()
        .unwrap();
    let missing = service.get(&format!("/transactions/{}", id + 1)).await;
    assert_eq!(missing.status, 404, "{missing:?}");
    assert!(missing.json()["error"].is_string(), "{missing:?}");
    let bad_id = service.get("/transactions/abc").await;
    assert_eq!((bad_id.status, bad_id.field()), (400, json!("id")));
    let bad_token = service
        .get_after(&format!("/transactions/{id}"), "not-a-position")
        .await;
    assert_eq!(
        (bad_token.status, bad_token.field()),
        (400, json!("x-wal-token"))
    );
    let nowhere = service.get("/accounts").await;
    assert_eq!(nowhere.status, 404);
    assert!(nowhere.json()["error"].is_string(), "{nowhere:?}");
    assert_eq!(stored_rows(&cluster).await, "1");

    // Shutdown: the server stops accepting and its task ends cleanly.
    let port = service.port;
    service.stop().await.expect("a clean shutdown");
    assert!(
        support::request(port, "GET", "/health", &[], None)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn health_turns_503_when_the_replica_dies_while_reads_and_writes_go_on() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    let service = Service::start(manager(&cluster).await).await;

    let health = service.get("/health").await;
    assert_eq!(health.status, 200, "{health:?}");
    let body = health.json();
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["db_primary"], "connected");
    assert_eq!(body["db_replica"], "connected");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    let roles: Vec<&str> = body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["primary", "replica"]);
    let metrics = service.get("/metrics").await;
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{metrics:?}"
    );
    assert!(
        metrics.body.contains(&format!(
            "meridian_client_up{{node=\"127.0.0.1:{}/postgres\",role=\"primary\"}} 1",
            cluster.primary().port()
        )),
        "{}",
        metrics.body
    );

    let before = service.create("acc-1", 100).await;
    let id = before.json()["id"].as_i64().unwrap();
    let path = format!("/transactions/{id}");
    // Once the replica has the row, a plain read may well be served there.
    wait_until(TIMEOUT, "a plain read to see the row", || async {
        let read = service.get(&path).await;
        Check::when(read.status == 200, (), read)
    })
    .await
    .unwrap();

    let replica = &cluster.replicas()[0];
    replica.kill();
    // At once, before anything noticed: the read on the dead replica is retried elsewhere as
    // soon as the replica's check finds it down (the library does not wait for sqlx's pool).
    let read = service.get(&path).await;
    assert_eq!(read.status, 200, "{read:?}");
    let unhealthy = wait_until(TIMEOUT, "/health to answer 503", || async {
        let health = service.get("/health").await;
        Check::when(health.status == 503, health.json(), health)
    })
    .await
    .unwrap();
    assert_eq!(unhealthy["status"], "unhealthy");
    assert_eq!(unhealthy["db_replica"], "disconnected");
    assert_eq!(unhealthy["db_primary"], "connected");
    assert_eq!(unhealthy["version"], env!("CARGO_PKG_VERSION"));
    let down: Vec<&str> = unhealthy["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["state"] == "down")
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(down, [format!("127.0.0.1:{}/postgres", replica.port())]);

    // Reads go to the primary now, writes as before.
    for _ in 0..5 {
        let read = service.get(&path).await;
        assert_eq!((read.status, read.json()), (200, before.json()));
    }
    let after = service.create("acc-2", 200).await;
    let token = after.header("x-wal-token").unwrap();
    let list = service.get_after("/transactions", token).await;
    assert_eq!(
        ids(&list.json()),
        [after.json()["id"].as_i64().unwrap(), id],
        "{list:?}"
    );
}
