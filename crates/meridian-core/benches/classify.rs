//! Cost of statement classification: `cargo bench -p meridian-core --bench classify`.
//!
//! A plain `harness = false` benchmark (no criterion: it would add a dependency tree to the
//! workspace's lock file for one table of numbers). For each statement it warms up, then takes
//! 1,000 samples of about 50 µs of calls each and prints the median, 99th percentile and minimum
//! time per call. Short samples keep the median meaningful on a shared 2-core machine: a
//! sample that the scheduler interrupts is an outlier, not the norm, as it would be if a sample
//! lasted longer than a time slice.
//! Run without `--bench` (as `cargo test --benches` does) it classifies each statement once and
//! checks the result, so the benchmark cannot silently measure a wrong answer.

use std::hint::black_box;
use std::time::Instant;

use meridian_core::classify::{Classifier, StatementClass};

const SAMPLES: usize = 1_000;
/// Target duration of one sample.
const SAMPLE_NANOS: f64 = 50_000.0;

/// A long statement with every lexical trap: nested comments, strings and dollar quotes holding
/// write keywords, quoted identifiers, CTEs, a side-effect-free function list, a locking clause.
const LONG_TRICKY: &str = r#"/* report: orders awaiting shipment -- nothing here is SQL: INSERT INTO t; DELETE FROM t;
   /* nested: UPDATE accounts SET balance = 0; */ still a comment FOR UPDATE */
WITH RECURSIVE region_tree(id, parent_id, depth) AS (
    SELECT r.id, r.parent_id, 0 FROM regions r WHERE r.parent_id IS NULL
  UNION ALL
    SELECT r.id, r.parent_id, rt.depth + 1
      FROM regions r JOIN region_tree rt ON r.parent_id = rt.id
     WHERE rt.depth < 8 -- ; DROP TABLE regions;
), pending AS MATERIALIZED (
    SELECT o."id", o."customer_id", o."total", o."note", o."update", c."delete" AS flagged
      FROM "public"."orders" o
      JOIN "public"."customers" c ON c."id" = o."customer_id"
     WHERE o."status" = 'pending; INSERT INTO audit VALUES (''x'')'
       AND o."note" NOT LIKE E'%\'; DELETE FROM orders; --%'
       AND o."created_at" > now() - interval '7 days'
       AND o."tags" @> ARRAY['priority', 'FOR UPDATE']::text[]
)
SELECT p."id", p."total", rt.depth,
       coalesce(p."note", $body$ nextval('s'); SELECT pg_advisory_lock(1) $body$) AS note,
       jsonb_build_object('id', p."id", 'sql', $$ UPDATE t SET a = 1 $$) AS payload,
       count(*) OVER (PARTITION BY rt.depth) AS per_depth,
       to_char(date_trunc('day', now()), 'YYYY-MM-DD') AS day
  FROM pending p
  JOIN customers_regions cr ON cr.customer_id = p."customer_id"
  JOIN region_tree rt ON rt.id = cr.region_id
 WHERE p."total" BETWEEN $1 AND $2
   AND p."id" = ANY($3::bigint[])
 ORDER BY rt.depth, p."total" DESC
 LIMIT 100
   FOR UPDATE OF p SKIP LOCKED"#;

/// (name, SQL, expected class)
fn statements() -> Vec<(&'static str, &'static str, StatementClass)> {
    vec![
        (
            "pgbench select",
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
            StatementClass::Read,
        ),
        (
            "pgbench update",
            "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;",
            StatementClass::Write,
        ),
        (
            "insert, 5 values",
            r#"INSERT INTO "orders" ("customer_id", "total", "status", "created_at", "note") VALUES ($1, $2, $3, $4, $5) RETURNING "id""#,
            StatementClass::Write,
        ),
        (
            "select, 2 joins",
            "SELECT o.id, o.total, c.name, c.email, a.city FROM orders o JOIN customers c ON c.id = o.customer_id LEFT JOIN addresses a ON a.customer_id = c.id AND a.is_default WHERE o.created_at >= $1 AND o.status = $2 ORDER BY o.created_at DESC LIMIT 50",
            StatementClass::Read,
        ),
        (
            "ORM select, quoted",
            r#"SELECT "users"."id", "users"."email", "users"."name" FROM "users" WHERE "users"."email" = $1 LIMIT $2"#,
            StatementClass::Read,
        ),
        (
            "job queue, locking",
            "SELECT id, payload FROM jobs WHERE run_at <= now() AND locked_at IS NULL ORDER BY priority, run_at LIMIT 1 FOR UPDATE SKIP LOCKED",
            StatementClass::Write,
        ),
        (
            "BEGIN",
            "BEGIN",
            StatementClass::Transaction(meridian_core::classify::TransactionControl::Begin {
                read_only: None,
                isolation: None,
            }),
        ),
        ("long tricky", LONG_TRICKY, StatementClass::Write),
    ]
}

fn measure(classifier: &Classifier, sql: &[u8]) -> (f64, f64, f64) {
    let warm_up = Instant::now();
    for _ in 0..20_000 {
        black_box(classifier.classify(black_box(sql)));
    }
    let estimate = warm_up.elapsed().as_nanos() as f64 / 20_000.0;
    let calls = (SAMPLE_NANOS / estimate).clamp(10.0, 100_000.0) as u32;
    let mut per_call: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..calls {
                black_box(classifier.classify(black_box(sql)));
            }
            start.elapsed().as_nanos() as f64 / f64::from(calls)
        })
        .collect();
    per_call.sort_by(f64::total_cmp);
    let median = per_call[SAMPLES / 2];
    let p99 = per_call[SAMPLES * 99 / 100];
    (median, p99, per_call[0])
}

fn main() {
    let classifier = Classifier::default();
    let benchmarking = std::env::args().any(|arg| arg == "--bench");
    for (name, sql, expected) in statements() {
        let got = classifier.classify(sql.as_bytes());
        assert_eq!(got.class, expected, "{name}: {got}");
    }
    if !benchmarking {
        println!(
            "classify bench: all statements classified as expected (run with --bench to time)"
        );
        return;
    }
    println!(
        "{:<20} {:>6} {:>12} {:>12} {:>12}",
        "statement", "bytes", "median µs", "p99 µs", "min µs"
    );
    for (name, sql, _) in statements() {
        let (median, p99, min) = measure(&classifier, sql.as_bytes());
        println!(
            "{:<20} {:>6} {:>12.3} {:>12.3} {:>12.3}",
            name,
            sql.len(),
            median / 1000.0,
            p99 / 1000.0,
            min / 1000.0
        );
    }
}
