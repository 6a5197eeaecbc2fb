//! The library's cost over a bare sqlx pool: `cargo bench -p meridian-client --bench overhead`.
//!
//! Starts a primary and a replica with the test kit and runs the same read-heavy loop (a
//! primary-key `SELECT` on a replica, 8 concurrent tasks) three ways, interleaved round after
//! round so that the noise of a shared machine hits all alike:
//!
//! - `sqlx`: a bare `PgPool` to the replica, as a service without the library would do;
//! - `pool(Read)`: the manager chooses the node for every query, then the same sqlx call;
//! - `run(Read)`: the helper, which also admits through the breaker and records the outcome.
//!
//! It prints the median queries per second of each and their ratio to bare sqlx. Run without
//! `--bench` (as `cargo test --benches` does) it runs one short round of each and checks the
//! answers, so the benchmark cannot silently measure failures.

use std::time::{Duration, Instant};

use meridian_client::{PoolManager, QueryIntent};
use meridian_testkit::TestCluster;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

const TASKS: usize = 8;
const ROUNDS: usize = 5;

#[derive(Clone, Copy, Debug)]
enum Way {
    Sqlx,
    Pool,
    Run,
}

/// Runs the loop the given way for `duration`; queries done.
async fn round(way: Way, bare: &PgPool, db: &PoolManager, duration: Duration) -> u64 {
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (bare, db) = (bare.clone(), db.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                let id = i32::try_from((done as usize * TASKS + task) % 1000).unwrap() + 1;
                let value: i32 = match way {
                    Way::Sqlx => sqlx::query_scalar("SELECT v FROM kv WHERE id = $1")
                        .bind(id)
                        .fetch_one(&bare)
                        .await
                        .unwrap(),
                    Way::Pool => sqlx::query_scalar("SELECT v FROM kv WHERE id = $1")
                        .bind(id)
                        .fetch_one(&db.pool(QueryIntent::Read).unwrap())
                        .await
                        .unwrap(),
                    Way::Run => db
                        .run(QueryIntent::Read, |conn| {
                            Box::pin(async move {
                                Ok(sqlx::query_scalar("SELECT v FROM kv WHERE id = $1")
                                    .bind(id)
                                    .fetch_one(conn)
                                    .await?)
                            })
                        })
                        .await
                        .unwrap(),
                };
                assert_eq!(
                    value,
                    id * 2,
                    "a wrong answer would make the figure meaningless"
                );
                done += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    total
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    cluster
        .primary()
        .execute("CREATE TABLE kv AS SELECT g AS id, g * 2 AS v FROM generate_series(1, 1000) g; ALTER TABLE kv ADD PRIMARY KEY (id)")
        .await
        .unwrap();
    cluster
        .wait_replicated(Duration::from_secs(60))
        .await
        .unwrap();
    let replica = &cluster.replicas()[0];
    let bare = PgPoolOptions::new()
        .max_connections(10)
        .connect(&replica.url())
        .await
        .unwrap();
    let db = PoolManager::builder()
        .primary(cluster.primary().url())
        .replica(replica.url())
        .build()
        .await
        .unwrap();

    let (rounds, duration) = if measuring {
        (ROUNDS, Duration::from_secs(5))
    } else {
        (1, Duration::from_millis(200))
    };
    let ways = [Way::Sqlx, Way::Pool, Way::Run];
    // Warm every pool up first.
    for way in ways {
        round(way, &bare, &db, Duration::from_millis(300)).await;
    }
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); ways.len()];
    for _ in 0..rounds {
        for (i, way) in ways.iter().enumerate() {
            let done = round(*way, &bare, &db, duration).await;
            assert!(done > 0, "{way:?} did no query");
            rates[i].push(done as f64 / duration.as_secs_f64());
        }
    }
    if !measuring {
        return;
    }
    println!("read loop, {TASKS} tasks, median of {rounds} interleaved rounds of {duration:?}");
    let base = median(rates[0].clone());
    for (way, rates) in ways.iter().zip(rates) {
        let m = median(rates);
        println!(
            "{:<12} {:>9.0} queries/s  {:>5.3} of bare sqlx",
            format!("{way:?}"),
            m,
            m / base
        );
    }
}
