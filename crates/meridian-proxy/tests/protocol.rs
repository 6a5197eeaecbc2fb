//! The protocol's harder paths through the proxy: pipelined extended-protocol queries, errors
//! inside a batch, prepared-statement name errors, COPY in both directions and both query
//! protocols, and results and parameters far larger than the proxy's buffers.
//!
//! Batches whose exact message sequence matters are written by hand (`support::raw`, as a
//! `trust` user); the rest use tokio-postgres, which pipelines whatever is awaited together.

mod support;

use bytes::Bytes;
use futures::{SinkExt, StreamExt, TryStreamExt};
use meridian_testkit::TestCluster;
use support::raw::{self, RawClient};
use support::{PASSWORD, ProxyUnderTest, describe, run, sqlstate, trust_user};
use tokio_postgres::SimpleQueryMessage;

#[tokio::test]
async fn pipelined_queries_on_one_client_all_complete_in_order() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy = ProxyUnderTest::start(&cluster, "").await;
    let client = proxy.connect().await;
    let double = client.prepare("SELECT $1::int * 2").await.unwrap();

    // tokio-postgres writes every request before reading any reply: 50 Bind/Execute/Sync
    // groups reach the proxy back to back, some in one read.
    let queries = (0..50i32).map(|i| {
        let client = &client;
        let double = &double;
        async move { client.query_one(double, &[&i]).await }
    });
    let results = futures::future::join_all(queries).await;
    let doubled: Vec<i32> = results.into_iter().map(|r| r.unwrap().get(0)).collect();
    assert_eq!(doubled, (0..50).map(|i| i * 2).collect::<Vec<_>>());

    // Different statements, each prepared and run in the same pipeline.
    let (one, text, rows) = tokio::join!(
        client.query_one("SELECT 1::int", &[]),
        client.query_one("SELECT $1::text || '!'", &[&"hello"]),
        client.query("SELECT g FROM generate_series(1, 1000) g", &[]),
    );
    assert_eq!(one.unwrap().get::<_, i32>(0), 1);
    assert_eq!(text.unwrap().get::<_, String>(0), "hello!");
    assert_eq!(rows.unwrap().len(), 1000);
}

#[tokio::test]
async fn an_error_in_a_pipeline_fails_only_its_own_query() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy = ProxyUnderTest::start(&cluster, "").await;
    let client = proxy.connect().await;
    let divide = client.prepare("SELECT 10 / $1::int").await.unwrap();

    let divisors = [1i32, 2, 0, 5, 10];
    let results = futures::future::join_all(divisors.iter().map(|d| {
        let client = &client;
        let divide = &divide;
        async move { client.query_one(divide, &[d]).await }
    }))
    .await;

    let outcomes: Vec<Result<i32, String>> = results
        .iter()
        .map(|r| match r {
            Ok(row) => Ok(row.get(0)),
            Err(e) => Err(sqlstate(e)),
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![Ok(10), Ok(5), Err("22012".to_owned()), Ok(2), Ok(1)]
    );
    let row = client.query_one(&divide, &[&4i32]).await.unwrap();
    assert_eq!(
        row.get::<_, i32>(0),
        2,
        "the connection works after the error"
    );
}

#[tokio::test]
async fn an_error_in_an_extended_batch_skips_the_rest_of_the_batch_only() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy = ProxyUnderTest::start_with_users(&cluster, &trust_user("raw")).await;
    let mut client = RawClient::login_trust(proxy.addr, "raw").await;

    // One batch, one Sync: the division fails at execution (random() keeps the planner from
    // folding it earlier), and the server skips the second query up to the Sync.
    client
        .send(&raw::batch(&[
            raw::parse("", "SELECT 10 / (random() * 0)::int"),
            raw::bind(""),
            raw::execute(),
            raw::parse("", "SELECT 2"),
            raw::bind(""),
            raw::execute(),
            raw::sync(),
        ]))
        .await;
    let replies = client.until_ready().await;
    assert_eq!(raw::tags(&replies), "12EZ", "{replies:?}");
    assert_eq!(replies[2].sqlstate(), "22012");
    assert_eq!(
        replies[3].body, b"I",
        "the implicit transaction was rolled back"
    );

    client
        .send(&raw::batch(&[
            raw::parse("", "SELECT 3"),
            raw::bind(""),
            raw::execute(),
            raw::sync(),
        ]))
        .await;
    let replies = client.until_ready().await;
    assert_eq!(raw::tags(&replies), "12DCZ", "{replies:?}");
    assert_eq!(replies[2].data_row(), vec![Some("3".to_owned())]);
}

#[tokio::test]
async fn an_unknown_prepared_statement_is_26000() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy = ProxyUnderTest::start_with_users(&cluster, &trust_user("raw")).await;
    let mut client = RawClient::login_trust(proxy.addr, "raw").await;

    client
        .send(&raw::batch(&[
            raw::bind("never_prepared"),
            raw::execute(),
            raw::sync(),
        ]))
        .await;
    let replies = client.until_ready().await;
    assert_eq!(raw::tags(&replies), "EZ", "{replies:?}");
    assert_eq!(replies[0].sqlstate(), "26000");

    client
        .send(&raw::batch(&[
            raw::describe_statement("never_prepared"),
            raw::sync(),
        ]))
        .await;
    let replies = client.until_ready().await;
    assert_eq!(raw::tags(&replies), "EZ", "{replies:?}");
    assert_eq!(replies[0].sqlstate(), "26000");

    client.send(&raw::query("SELECT 'usable'")).await;
    let replies = client.until_ready().await;
    assert_eq!(raw::tags(&replies), "TDCZ", "{replies:?}");
}

#[tokio::test]
async fn preparing_an_existing_name_again_is_42p05_and_keeps_the_first_statement() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy = ProxyUnderTest::start_with_users(&cluster, &trust_user("raw")).await;
    let mut client = RawClient::login_trust(proxy.addr, "raw").await;

    client
        .send(&raw::batch(&[raw::parse("s1", "SELECT 1"), raw::sync()]))
        .await;
    assert_eq!(raw::tags(&client.until_ready().await), "1Z");

    client
        .send(&raw::batch(&[
            raw::parse("s1", "SELECT 2"),
            raw::bind("s1"),
            raw::execute(),
            raw::sync(),
        ]))
        .await;
    let replies = client.until_ready().await;
    assert_eq!(raw::tags(&replies), "EZ", "{replies:?}");
    assert_eq!(replies[0].sqlstate(), "42P05");

    client
        .send(&raw::batch(&[raw::bind("s1"), raw::execute(), raw::sync()]))
        .await;
    let replies = client.until_ready().await;
    assert_eq!(raw::tags(&replies), "2DCZ", "{replies:?}");
    assert_eq!(
        replies[1].data_row(),
        vec![Some("1".to_owned())],
        "s1 is still the first statement"
    );

    // Once closed, the name is free again.
    client
        .send(&raw::batch(&[
            raw::close_statement("s1"),
            raw::parse("s1", "SELECT 2"),
            raw::bind("s1"),
            raw::execute(),
            raw::sync(),
        ]))
        .await;
    let replies = client.until_ready().await;
    assert_eq!(raw::tags(&replies), "312DCZ", "{replies:?}");
    assert_eq!(replies[3].data_row(), vec![Some("2".to_owned())]);
}

#[tokio::test]
async fn copy_from_stdin_loads_every_row() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy = ProxyUnderTest::start(&cluster, "").await;
    let client = proxy.connect().await;
    client
        .batch_execute("CREATE TABLE loaded (id int, label text)")
        .await
        .unwrap();

    let sink = client
        .copy_in("COPY loaded (id, label) FROM STDIN")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    // 20 000 rows in chunks of 1 000: many CopyData messages, some larger than a read buffer.
    for chunk in 0..20 {
        let text: String = (chunk * 1000..(chunk + 1) * 1000)
            .map(|i| format!("{i}\tlabel {i}\n"))
            .collect();
        sink.send(Bytes::from(text)).await.unwrap();
    }
    let copied = sink.finish().await.unwrap();

    assert_eq!(copied, 20_000);
    let row = client
        .query_one(
            "SELECT count(*), sum(id), count(DISTINCT label) FROM loaded",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 20_000);
    assert_eq!(row.get::<_, i64>(1), (0..20_000i64).sum::<i64>());
    assert_eq!(row.get::<_, i64>(2), 20_000);
}

#[tokio::test]
async fn a_failed_copy_from_stdin_leaves_the_connection_usable() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy = ProxyUnderTest::start(&cluster, "").await;
    let client = proxy.connect().await;
    client
        .batch_execute("CREATE TABLE loaded (id int)")
        .await
        .unwrap();

    let sink = client.copy_in("COPY loaded FROM STDIN").await.unwrap();
    futures::pin_mut!(sink);
    sink.send(Bytes::from_static(b"1\nnot a number\n3\n"))
        .await
        .unwrap();
    let error = sink.finish().await.unwrap_err();

    assert_eq!(sqlstate(&error), "22P02");
    let row = client
        .query_one("SELECT count(*) FROM loaded", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 0, "the failed COPY loaded nothing");
}

#[tokio::test]
async fn a_sync_sent_during_copy_in_is_ignored_as_postgresql_does() {
    let cluster = TestCluster::builder().start().await.unwrap();
    cluster
        .primary()
        .execute("CREATE TABLE loaded (id int)")
        .await
        .unwrap();
    let proxy = ProxyUnderTest::start_with_users(&cluster, &trust_user("raw")).await;
    let mut client = RawClient::login_trust(proxy.addr, "raw").await;

    // What libpq and tokio-postgres send for an extended-protocol COPY FROM STDIN: a Sync
    // right behind the Execute, then the data, CopyDone and another Sync. The server ignores
    // a Sync in copy-in mode (PostgreSQL docs, 55.2.6 "COPY Operations"), so only the second
    // one is answered.
    client
        .send(&raw::batch(&[
            raw::parse("", "COPY loaded FROM STDIN"),
            raw::bind(""),
            raw::execute(),
            raw::sync(),
        ]))
        .await;
    let mut started = Vec::new();
    for _ in 0..3 {
        started.push(client.read().await.expect("closed during COPY"));
    }
    // ParseComplete, BindComplete, CopyInResponse.
    assert_eq!(raw::tags(&started), "12G", "{started:?}");
    client
        .send(&raw::batch(&[
            raw::message(b'd', b"1\n2\n"),
            raw::message(b'c', b""),
            raw::sync(),
        ]))
        .await;
    let replies = client.until_ready().await;
    assert_eq!(raw::tags(&replies), "CZ", "{replies:?}");

    client
        .send(&raw::query("SELECT count(*) FROM loaded"))
        .await;
    let replies = client.until_ready().await;
    assert_eq!(raw::tags(&replies), "TDCZ", "{replies:?}");
    assert_eq!(replies[1].data_row(), vec![Some("2".to_owned())]);
}

#[tokio::test]
async fn copy_to_stdout_streams_every_row() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy = ProxyUnderTest::start(&cluster, "").await;
    let client = proxy.connect().await;

    let stream = client
        .copy_out("COPY (SELECT g, 'row ' || g FROM generate_series(1, 50000) g) TO STDOUT")
        .await
        .unwrap();
    let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
    let text: Vec<u8> = chunks.concat();

    let expected: String = (1..=50_000).map(|g| format!("{g}\trow {g}\n")).collect();
    assert_eq!(text.len(), expected.len());
    assert!(text == expected.as_bytes(), "COPY output differs");
    let row = client.query_one("SELECT 'after'", &[]).await.unwrap();
    assert_eq!(row.get::<_, &str>(0), "after");
}

#[tokio::test]
async fn copy_in_and_out_over_the_simple_protocol_with_psql() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy = ProxyUnderTest::start(&cluster, "").await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.tsv");
    let expected: String = (1..=5000).map(|i| format!("{i}\tline {i}\n")).collect();
    std::fs::write(&input, &expected).unwrap();
    let output_path = dir.path().join("out.tsv");

    // psql's \copy runs COPY ... FROM STDIN / TO STDOUT as simple Query messages.
    let output = run(proxy.libpq_command("psql", "app", PASSWORD).args([
        "-X".to_owned(),
        "-q".to_owned(),
        "-v".to_owned(),
        "ON_ERROR_STOP=1".to_owned(),
        "-c".to_owned(),
        "CREATE TABLE lines (id int, line text)".to_owned(),
        "-c".to_owned(),
        format!("\\copy lines FROM '{}'", input.display()),
        "-c".to_owned(),
        format!(
            "\\copy (SELECT * FROM lines ORDER BY id) TO '{}'",
            output_path.display()
        ),
    ]))
    .await;

    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        std::fs::read_to_string(&output_path).unwrap() == expected,
        "the rows copied out differ from those copied in"
    );
}

#[tokio::test]
async fn a_ten_megabyte_value_streams_through_intact() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy = ProxyUnderTest::start(&cluster, "").await;
    let client = proxy.connect().await;

    // Extended protocol.
    let row = client
        .query_one("SELECT repeat('x', 10000000)", &[])
        .await
        .unwrap();
    let value: &str = row.get(0);
    assert_eq!(value.len(), 10_000_000);
    assert!(value.bytes().all(|b| b == b'x'));

    // Simple protocol, with a row after the big one to check the framing after it.
    let messages = client
        .simple_query("SELECT repeat('y', 10000000) UNION ALL SELECT 'end'")
        .await
        .unwrap();
    let rows: Vec<String> = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].len(), 10_000_000);
    assert!(rows[0].bytes().all(|b| b == b'y'));
    assert_eq!(rows[1], "end");
}

#[tokio::test]
async fn two_hundred_thousand_rows_stream_through_intact() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy = ProxyUnderTest::start(&cluster, "").await;
    let client = proxy.connect().await;

    // Consumed as the rows arrive, the way a client reads a result larger than it buffers.
    let stream = client
        .query_raw(
            "SELECT g FROM generate_series(1, 200000) g",
            Vec::<i32>::new(),
        )
        .await
        .unwrap();
    futures::pin_mut!(stream);
    let mut expected = 1;
    while let Some(row) = stream.next().await {
        let g: i32 = row.unwrap().get(0);
        assert_eq!(g, expected, "rows arrive complete and in order");
        expected += 1;
    }

    assert_eq!(expected - 1, 200_000, "row count");
    assert_eq!(stream.rows_affected(), Some(200_000));
    let row = client.query_one("SELECT 'after'", &[]).await.unwrap();
    assert_eq!(row.get::<_, &str>(0), "after");
}

#[tokio::test]
async fn a_ten_megabyte_parameter_reaches_the_server_intact() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy = ProxyUnderTest::start(&cluster, "").await;
    let client = proxy.connect().await;
    let value = "z".repeat(10_000_000);

    let row = client
        .query_one(
            "SELECT length($1::text), md5($1::text) = md5(repeat('z', 10000000))",
            &[&value],
        )
        .await
        .unwrap();

    assert_eq!(row.get::<_, i32>(0), 10_000_000);
    assert!(row.get::<_, bool>(1));
}
