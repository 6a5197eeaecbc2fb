//! `meridian migrate` through the binary against a real primary and replica: migrations apply
//! in version order and are recorded with their checksums, roll back, refuse a changed applied
//! file, leave nothing behind when they fail, run `CREATE INDEX CONCURRENTLY` outside a
//! transaction, change nothing in a dry run, find the primary wherever the configuration lists
//! it, and apply once when two runs race.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use meridian_testkit::{Check, TestCluster, wait_until};
use sha2::{Digest, Sha256};
use support::{DataDirs, cluster_toml};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A primary with one replica, a configuration file listing both, and an empty migrations
/// directory.
struct Fixture {
    cluster: TestCluster,
    config: PathBuf,
    migrations: tempfile::TempDir,
    _files: tempfile::TempDir,
}

impl Fixture {
    async fn start() -> Fixture {
        let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
        let toml = cluster_toml(&cluster, DataDirs::Unmanaged);
        Fixture::with_config(cluster, &toml)
    }

    fn with_config(cluster: TestCluster, toml: &str) -> Fixture {
        let files = tempfile::tempdir().unwrap();
        let config = files.path().join("meridian.toml");
        std::fs::write(&config, toml).unwrap();
        Fixture {
            cluster,
            config,
            migrations: tempfile::tempdir().unwrap(),
            _files: files,
        }
    }

    fn dir(&self) -> &Path {
        self.migrations.path()
    }

    fn write(&self, file: &str, sql: &str) {
        std::fs::write(self.dir().join(file), sql).unwrap();
    }

    /// `meridian migrate <args> --dir DIR -c CONFIG`.
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = meridian();
        command
            .arg("migrate")
            .args(args)
            .arg("--dir")
            .arg(self.dir())
            .arg("-c")
            .arg(&self.config);
        command
    }

    async fn migrate(&self, args: &[&str]) -> Run {
        Run::of(self.command(args)).await
    }

    /// Rows of `sql` on the primary, as text.
    async fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        rows(&self.cluster, None, sql).await
    }

    /// `(version, name, checksum)` of the versions table, in version order.
    async fn versions(&self) -> Vec<(String, String, String)> {
        self.rows("SELECT version, name, checksum FROM meridian_schema_migrations ORDER BY 1")
            .await
            .into_iter()
            .map(|row| (row[0].clone(), row[1].clone(), row[2].clone()))
            .collect()
    }

    /// The versions applied, in order.
    async fn version_numbers(&self) -> Vec<String> {
        self.versions().await.into_iter().map(|(v, ..)| v).collect()
    }

    async fn exists(&self, relation: &str) -> bool {
        self.rows(&format!("SELECT to_regclass('{relation}') IS NOT NULL"))
            .await
            .concat()
            == ["t"]
    }
}

/// The binary with a clean environment.
fn meridian() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_meridian"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    command
}

/// Rows of `sql` on the primary (in `database`, `postgres` by default), every value as text
/// (`NULL` for null).
async fn rows(cluster: &TestCluster, database: Option<&str>, sql: &str) -> Vec<Vec<String>> {
    let primary = cluster.primary();
    let (client, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname={}",
            primary.port(),
            database.unwrap_or("postgres")
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    meridian_testkit::rows_as_text(messages)
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|value| value.unwrap_or_else(|| "NULL".into()))
                .collect()
        })
        .collect()
}

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    async fn of(mut command: tokio::process::Command) -> Run {
        let output = tokio::time::timeout(TIMEOUT, command.output())
            .await
            .expect("meridian migrate did not finish in time")
            .unwrap();
        Run::from(output)
    }

    fn from(output: Output) -> Run {
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    #[track_caller]
    fn ok(self) -> Run {
        assert_eq!(self.code, Some(0), "{self:#?}");
        self
    }

    #[track_caller]
    fn refused(self) -> Run {
        assert_eq!(self.code, Some(1), "{self:#?}");
        self
    }
}

fn sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The lines of `text` that start with `prefix`.
fn lines_starting<'t>(text: &'t str, prefix: &str) -> Vec<&'t str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[tokio::test]
async fn up_applies_pending_migrations_in_version_order_and_records_their_checksums() {
    let f = Fixture::start().await;
    let files = [
        (
            "0001_create_accounts.up.sql",
            "CREATE TABLE accounts (id bigint PRIMARY KEY, email text NOT NULL);\n",
        ),
        (
            "0002_add_balance.up.sql",
            "ALTER TABLE accounts ADD COLUMN balance numeric NOT NULL DEFAULT 0;\n\
             INSERT INTO accounts VALUES (1, 'a@example.com', 10);\n",
        ),
        // Versions compare as numbers: 9 before 0010, whatever the names' text order.
        (
            "9_create_ledger.up.sql",
            "CREATE TABLE ledger (account bigint REFERENCES accounts, amount numeric);\n",
        ),
        (
            "0010_ledger_by_account.up.sql",
            "CREATE INDEX ledger_by_account ON ledger (account);\n",
        ),
    ];
    for (file, sql) in files {
        f.write(file, sql);
    }
    f.write("README.md", "not a migration: ignored\n");

    let run = f.migrate(&["up"]).await.ok();
    assert_eq!(
        lines_starting(&run.stdout, "applied ")
            .iter()
            .map(|l| l.split_whitespace().nth(1).unwrap())
            .collect::<Vec<_>>(),
        [
            "0001_create_accounts.up.sql",
            "0002_add_balance.up.sql",
            "9_create_ledger.up.sql",
            "0010_ledger_by_account.up.sql"
        ],
        "{run:#?}"
    );
    assert!(run.stdout.contains("4 migration(s) applied"), "{run:#?}");
    assert_eq!(
        f.versions().await,
        [
            ("1", "create_accounts", files[0].1),
            ("2", "add_balance", files[1].1),
            ("9", "create_ledger", files[2].1),
            ("10", "ledger_by_account", files[3].1),
        ]
        .map(|(v, n, sql)| (v.to_owned(), n.to_owned(), sha256(sql)))
    );
    assert_eq!(
        f.rows("SELECT id, balance FROM accounts").await,
        [["1", "10"]]
    );
    assert!(f.exists("ledger_by_account").await);
    assert_eq!(
        f.rows(
            "SELECT count(*) FROM meridian_schema_migrations \
              WHERE duration_ms >= 0 AND applied_at <= now()"
        )
        .await
        .concat(),
        ["4"]
    );

    // Again: nothing pending, nothing run.
    let again = f.migrate(&["up"]).await.ok();
    assert!(again.stdout.contains("nothing to apply"), "{again:#?}");
    assert!(lines_starting(&again.stdout, "applied ").is_empty());

    // Status lists them all as applied; a new file shows as pending.
    f.write(
        "0011_add_note.up.sql",
        "ALTER TABLE ledger ADD COLUMN note text;\n",
    );
    let status = f.migrate(&["status"]).await.ok();
    let table: Vec<Vec<&str>> = status
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("version"))
        .skip(1)
        .take(5)
        .map(|l| l.split_whitespace().take(3).collect())
        .collect();
    assert_eq!(
        table,
        [
            ["1", "create_accounts", "applied"],
            ["2", "add_balance", "applied"],
            ["9", "create_ledger", "applied"],
            ["10", "ledger_by_account", "applied"],
            ["11", "add_note", "pending"],
        ],
        "{status:#?}"
    );
    assert!(
        status
            .stdout
            .contains("4 applied, 1 pending, 0 changed, 0 missing"),
        "{status:#?}"
    );
    // An applied row shows when it was applied.
    assert!(
        status
            .stdout
            .lines()
            .any(|l| l.starts_with("1 ") && l.ends_with(" UTC")),
        "{status:#?}"
    );
}

#[tokio::test]
async fn down_rolls_back_the_newest_then_steps_then_to_and_refuses_without_a_down_file() {
    let f = Fixture::start().await;
    // 0001 has no down file; 0002 to 0005 each create a table and drop it on the way down.
    f.write("0001_t1.up.sql", "CREATE TABLE t1 (a int);\n");
    for n in 2..=5 {
        f.write(
            &format!("000{n}_t{n}.up.sql"),
            &format!("CREATE TABLE t{n} (a int);\n"),
        );
        f.write(
            &format!("000{n}_t{n}.down.sql"),
            &format!("DROP TABLE t{n};\n"),
        );
    }
    f.migrate(&["up"]).await.ok();

    let one = f.migrate(&["down"]).await.ok();
    assert_eq!(
        lines_starting(&one.stdout, "rolled back ")
            .iter()
            .map(|l| l.split_whitespace().nth(2).unwrap())
            .collect::<Vec<_>>(),
        ["0005_t5.down.sql"],
        "{one:#?}"
    );
    assert!(!f.exists("t5").await && f.exists("t4").await);
    assert_eq!(f.version_numbers().await, ["1", "2", "3", "4"]);

    let two = f.migrate(&["down", "--steps", "2"]).await.ok();
    assert_eq!(
        lines_starting(&two.stdout, "rolled back ")
            .iter()
            .map(|l| l.split_whitespace().nth(2).unwrap())
            .collect::<Vec<_>>(),
        ["0004_t4.down.sql", "0003_t3.down.sql"],
        "{two:#?}"
    );
    assert!(!f.exists("t4").await && !f.exists("t3").await && f.exists("t2").await);
    assert_eq!(f.version_numbers().await, ["1", "2"]);

    // More steps than applied, or --to a version that is not applied: refused, nothing done.
    let too_many = f.migrate(&["down", "--steps", "3"]).await.refused();
    assert!(too_many.stderr.contains("--steps 3"), "{too_many:#?}");
    let typo = f.migrate(&["down", "--to", "3"]).await.refused();
    assert!(
        typo.stderr.contains("version 3 is not applied"),
        "{typo:#?}"
    );
    assert_eq!(f.version_numbers().await, ["1", "2"]);

    let to = f.migrate(&["down", "--to", "0001"]).await.ok();
    assert!(
        to.stdout.contains("rolled back 0002_t2.down.sql"),
        "{to:#?}"
    );
    assert!(!f.exists("t2").await && f.exists("t1").await);
    assert_eq!(f.version_numbers().await, ["1"]);

    // 0001 has no down file: a clear refusal naming it, and it stays applied.
    let refused = f.migrate(&["down"]).await.refused();
    assert!(
        refused.stderr.contains("0001_t1.up.sql has no down file")
            && refused.stderr.contains("add 0001_t1.down.sql"),
        "{refused:#?}"
    );
    assert!(f.exists("t1").await);
    assert_eq!(f.version_numbers().await, ["1"]);

    // And up brings the rest back.
    f.migrate(&["up"]).await.ok();
    assert_eq!(f.version_numbers().await, ["1", "2", "3", "4", "5"]);
}

#[tokio::test]
async fn a_changed_missing_or_out_of_order_migration_is_refused_before_anything_runs() {
    let f = Fixture::start().await;
    f.write("0002_a.up.sql", "CREATE TABLE a (x int);\n");
    f.migrate(&["up"]).await.ok();
    let applied = f.versions().await;

    // An applied file edited, and a new migration beside it: nothing runs, not even the new one.
    f.write(
        "0002_a.up.sql",
        "CREATE TABLE a (x int); -- and a second thought\n",
    );
    f.write("0003_b.up.sql", "CREATE TABLE b (x int);\n");
    let changed = f.migrate(&["up"]).await.refused();
    assert!(
        changed
            .stderr
            .contains("0002_a.up.sql was changed after it was applied")
            && changed.stderr.contains("nothing was run"),
        "{changed:#?}"
    );
    assert!(!f.exists("b").await);
    assert_eq!(f.versions().await, applied);
    let status = f.migrate(&["status"]).await.refused();
    assert!(
        status
            .stdout
            .lines()
            .any(|l| l.starts_with("2 ") && l.contains(" changed "))
            && status
                .stdout
                .lines()
                .any(|l| l.starts_with("3 ") && l.contains(" pending")),
        "{status:#?}"
    );

    // The applied file gone.
    std::fs::remove_file(f.dir().join("0002_a.up.sql")).unwrap();
    let missing = f.migrate(&["up"]).await.refused();
    assert!(
        missing
            .stderr
            .contains("version 2 (a) is applied but has no up file"),
        "{missing:#?}"
    );
    let status = f.migrate(&["status"]).await.refused();
    assert!(
        status
            .stdout
            .lines()
            .any(|l| l.starts_with("2 ") && l.contains(" missing ")),
        "{status:#?}"
    );
    assert!(!f.exists("b").await);

    // Restored: a new migration numbered below the applied one is refused, naming both.
    f.write("0002_a.up.sql", "CREATE TABLE a (x int);\n");
    f.write("0001_early.up.sql", "CREATE TABLE early (x int);\n");
    let out_of_order = f.migrate(&["up"]).await.refused();
    assert!(
        out_of_order
            .stderr
            .contains("0001_early.up.sql is pending but version 2 (a) is already applied"),
        "{out_of_order:#?}"
    );
    assert!(!f.exists("early").await && !f.exists("b").await);

    std::fs::remove_file(f.dir().join("0001_early.up.sql")).unwrap();
    f.migrate(&["up"]).await.ok();
    assert!(f.exists("b").await);
}

#[tokio::test]
async fn a_failing_migration_leaves_no_trace_and_stops_the_run() {
    let f = Fixture::start().await;
    f.write("0001_kept.up.sql", "CREATE TABLE kept (x int);\n");
    f.write(
        "0002_fails.up.sql",
        "CREATE TABLE half (x int);\nINSERT INTO half VALUES (1);\nSELECT 1 / 0;\n",
    );
    f.write("0003_after.up.sql", "CREATE TABLE after (x int);\n");
    let run = f.migrate(&["up"]).await.refused();
    assert!(run.stdout.contains("applied 0001_kept.up.sql"), "{run:#?}");
    // The file, where in it, and the server's SQLSTATE (22012 division_by_zero).
    assert!(
        run.stderr.contains("0002_fails.up.sql failed")
            && run.stderr.contains("22012")
            && run.stderr.contains("rolled back"),
        "{run:#?}"
    );
    assert!(f.exists("kept").await);
    assert!(!f.exists("half").await, "the failed file's table stayed");
    assert!(!f.exists("after").await, "the run went on after a failure");
    assert_eq!(f.version_numbers().await, ["1"]);

    // A syntax error is placed in the file.
    f.write(
        "0002_fails.up.sql",
        "CREATE TABLE half (x int);\nSELEC 1;\n",
    );
    let syntax = f.migrate(&["up"]).await.refused();
    assert!(
        syntax.stderr.contains("at line 2, column 1") && syntax.stderr.contains("42601"),
        "{syntax:#?}"
    );
    assert!(!f.exists("half").await);

    // The file and its version row are one transaction: when recording the version fails
    // (here the file itself took the row), the file's work goes too.
    f.write(
        "0002_fails.up.sql",
        "CREATE TABLE half (x int);\n\
         INSERT INTO meridian_schema_migrations (version, name, checksum, duration_ms) \
         VALUES (2, 'squatter', '', 0);\n",
    );
    let recording = f.migrate(&["up"]).await.refused();
    assert!(
        recording.stderr.contains("recording version 2 failed")
            && recording.stderr.contains("23505")
            && recording.stderr.contains("rolled back"),
        "{recording:#?}"
    );
    assert!(
        !f.exists("half").await,
        "the file's table outlived its version row"
    );
    assert_eq!(f.version_numbers().await, ["1"]);

    // Fixed, the run completes.
    f.write("0002_fails.up.sql", "CREATE TABLE half (x int);\n");
    f.migrate(&["up"]).await.ok();
    assert!(f.exists("half").await && f.exists("after").await);
}

#[tokio::test]
async fn a_no_transaction_migration_creates_and_drops_indexes_concurrently() {
    let f = Fixture::start().await;
    f.write(
        "0001_items.up.sql",
        "CREATE TABLE items (a int, b int);\n\
         INSERT INTO items SELECT g, g FROM generate_series(1, 1000) g;\n",
    );
    let index = "CREATE INDEX CONCURRENTLY items_a ON items (a);\n\
                 CREATE INDEX CONCURRENTLY items_b ON items (b);\n";
    // Without the marker PostgreSQL refuses it in the transaction; the error says what to do.
    f.write("0002_indexes.up.sql", index);
    let refused = f.migrate(&["up"]).await.refused();
    assert!(
        refused.stderr.contains("25001") && refused.stderr.contains("-- meridian:no-transaction"),
        "{refused:#?}"
    );
    assert!(!f.exists("items_a").await);

    f.write(
        "0002_indexes.up.sql",
        &format!("-- meridian:no-transaction\n{index}"),
    );
    f.write(
        "0002_indexes.down.sql",
        "-- meridian:no-transaction\n\
         DROP INDEX CONCURRENTLY items_a;\nDROP INDEX CONCURRENTLY items_b;\n",
    );
    let dry = f.migrate(&["up", "--dry-run"]).await.ok();
    assert!(
        dry.stdout.contains(
            "would apply 0002_indexes.up.sql (version 2, outside a transaction, 2 statement(s)"
        ),
        "{dry:#?}"
    );
    f.migrate(&["up"]).await.ok();
    assert_eq!(
        f.rows(
            "SELECT c.relname, i.indisvalid FROM pg_index i \
               JOIN pg_class c ON c.oid = i.indexrelid \
              WHERE c.relname IN ('items_a', 'items_b') ORDER BY 1"
        )
        .await,
        [["items_a", "t"], ["items_b", "t"]]
    );
    assert_eq!(f.version_numbers().await, ["1", "2"]);

    f.migrate(&["down"]).await.ok();
    assert!(!f.exists("items_a").await && !f.exists("items_b").await);
    assert_eq!(f.version_numbers().await, ["1"]);
}

/// Everything in `database` a migration could change: relations of schema public, and the
/// versions table's rows if it exists.
async fn snapshot(cluster: &TestCluster, database: &str) -> Vec<Vec<String>> {
    let mut seen = rows(
        cluster,
        Some(database),
        "SELECT relname, relkind::text FROM pg_class \
          WHERE relnamespace = 'public'::regnamespace ORDER BY 1",
    )
    .await;
    if seen
        .iter()
        .any(|row| row[0] == "meridian_schema_migrations")
    {
        seen.extend(
            rows(
                cluster,
                Some(database),
                "SELECT 'row', version::text || ' ' || name \
                   FROM meridian_schema_migrations ORDER BY version",
            )
            .await,
        );
    }
    seen
}

#[tokio::test]
async fn dry_run_changes_nothing_and_database_url_names_the_database() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    cluster
        .primary()
        .execute("CREATE DATABASE shop")
        .await
        .unwrap();
    let migrations = tempfile::tempdir().unwrap();
    std::fs::write(
        migrations.path().join("0001_orders.up.sql"),
        "CREATE TABLE orders (id int);\n",
    )
    .unwrap();
    std::fs::write(
        migrations.path().join("0001_orders.down.sql"),
        "DROP TABLE orders;\n",
    )
    .unwrap();
    std::fs::write(
        migrations.path().join("0002_orders_by_id.up.sql"),
        "-- meridian:no-transaction\nCREATE INDEX CONCURRENTLY orders_by_id ON orders (id);\n",
    )
    .unwrap();
    std::fs::write(
        migrations.path().join("0002_orders_by_id.down.sql"),
        "DROP INDEX orders_by_id;\n",
    )
    .unwrap();
    let url = |node: &str| {
        format!(
            "postgres://postgres@127.0.0.1:{}/shop",
            cluster.node(node).port()
        )
    };
    // Configured by the environment alone, as `meridian run` can be; the migrations directory
    // from MERIDIAN_MIGRATIONS_DIR.
    let migrate = |args: &[&str]| {
        let mut command = meridian();
        command
            .arg("migrate")
            .args(args)
            .env("DATABASE_URL", url("main-1"))
            .env("DATABASE_REPLICA_URL", url("main-2"))
            .env("MERIDIAN_MIGRATIONS_DIR", migrations.path());
        Run::of(command)
    };

    let before = snapshot(&cluster, "shop").await;
    let dry = migrate(&["up", "--dry-run"]).await.ok();
    assert_eq!(
        lines_starting(&dry.stdout, "would apply "),
        [
            "would apply 0001_orders.up.sql (version 1, in a transaction)",
            "would apply 0002_orders_by_id.up.sql (version 2, outside a transaction, 1 statement(s) one by one)",
        ],
        "{dry:#?}"
    );
    // DATABASE_URL's node is named `primary`; it is, and the database is the URL's.
    assert!(
        dry.stdout.contains(&format!(
            "database shop on primary (127.0.0.1:{})",
            cluster.primary().port()
        )),
        "{dry:#?}"
    );
    assert!(dry.stdout.contains("nothing was run"), "{dry:#?}");
    assert_eq!(snapshot(&cluster, "shop").await, before);
    assert!(
        !before
            .iter()
            .any(|row| row[0] == "meridian_schema_migrations"),
        "{before:?}"
    );

    // For real: into `shop`, the URL's database, not the monitor's `postgres`.
    migrate(&["up"]).await.ok();
    let applied = snapshot(&cluster, "shop").await;
    assert!(
        applied.iter().any(|row| row[0] == "orders")
            && applied.iter().any(|row| row == &["row", "2 orders_by_id"]),
        "{applied:?}"
    );
    assert_eq!(
        rows(
            &cluster,
            Some("postgres"),
            "SELECT to_regclass('meridian_schema_migrations') IS NULL"
        )
        .await
        .concat(),
        ["t"]
    );

    // A dry run down names what it would roll back, newest first, and rolls back nothing.
    let dry_down = migrate(&["down", "--steps", "2", "--dry-run"]).await.ok();
    assert_eq!(
        lines_starting(&dry_down.stdout, "would roll back "),
        [
            "would roll back 0002_orders_by_id.down.sql (version 2, in a transaction)",
            "would roll back 0001_orders.down.sql (version 1, in a transaction)",
        ],
        "{dry_down:#?}"
    );
    assert_eq!(snapshot(&cluster, "shop").await, applied);
}

#[tokio::test]
async fn it_runs_on_the_primary_even_when_the_replica_is_listed_first() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    let (primary, replica) = (cluster.node("main-1"), cluster.node("main-2"));
    assert!(replica.is_in_recovery().await.unwrap());
    let toml = format!(
        "[[users]]\nname = \"app\"\npassword = \"{}\"\nserver_user = \"postgres\"\n\
         [[regions]]\nname = \"main\"\n\
         [[regions.nodes]]\nname = \"{}\"\nhost = \"127.0.0.1\"\nport = {}\n\
         [[regions.nodes]]\nname = \"{}\"\nhost = \"127.0.0.1\"\nport = {}\n",
        support::PASSWORD,
        replica.name(),
        replica.port(),
        primary.name(),
        primary.port(),
    );
    let f = Fixture::with_config(cluster, &toml);
    f.write("0001_t.up.sql", "CREATE TABLE t (x int);\n");
    let run = f.migrate(&["up"]).await.ok();
    assert!(
        run.stdout.contains(&format!(
            "on main-1 (127.0.0.1:{})",
            f.cluster.node("main-1").port()
        )),
        "{run:#?}"
    );
    assert!(f.exists("t").await);
    assert_eq!(f.versions().await.len(), 1);
}

#[tokio::test]
async fn two_concurrent_runs_apply_each_migration_exactly_once() {
    let f = Fixture::start().await;
    let primary = f.cluster.primary();
    // The second migration waits on a table the test holds locked, so that one run is
    // certainly inside it while the other starts, and the test decides when it ends.
    primary.execute("CREATE TABLE gate (x int)").await.unwrap();
    f.write(
        "0001_log.up.sql",
        "CREATE TABLE migration_log (version int NOT NULL, pid int NOT NULL DEFAULT pg_backend_pid());\n\
         INSERT INTO migration_log (version) VALUES (1);\n",
    );
    f.write(
        "0002_gated.up.sql",
        "SELECT count(*) FROM gate;\nINSERT INTO migration_log (version) VALUES (2);\n",
    );
    let gate = primary.client().await.unwrap();
    gate.batch_execute("BEGIN; LOCK TABLE gate IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    let first = f.command(&["up"]).output();
    let second = f.command(&["up"]).output();
    let runs = tokio::spawn(async move { tokio::join!(first, second) });

    // One run is blocked on the gate inside 0002, the other waits for the migration lock.
    let seen = wait_until(TIMEOUT, "one run in 0002 and the other waiting", || async {
        let counts = f
            .rows(
                "SELECT count(*) FILTER (WHERE locktype = 'relation' \
                                         AND relation = 'gate'::regclass AND NOT granted), \
                        count(*) FILTER (WHERE locktype = 'advisory' AND NOT granted) \
                   FROM pg_locks",
            )
            .await
            .concat();
        Check::when(counts == ["1", "1"], (), counts)
    })
    .await;
    gate.batch_execute("COMMIT").await.unwrap();
    let (first, second) = tokio::time::timeout(TIMEOUT, runs)
        .await
        .expect("the runs did not finish")
        .unwrap();
    let runs = [Run::from(first.unwrap()), Run::from(second.unwrap())];
    seen.unwrap_or_else(|e| panic!("{e}\n{runs:#?}"));
    for run in &runs {
        assert_eq!(run.code, Some(0), "{runs:#?}");
    }
    let outputs: Vec<&str> = runs.iter().map(|r| r.stdout.as_str()).collect();
    assert_eq!(
        outputs
            .iter()
            .filter(|o| o.contains("2 migration(s) applied"))
            .count(),
        1,
        "{runs:#?}"
    );
    assert_eq!(
        outputs
            .iter()
            .filter(|o| o.contains("nothing to apply"))
            .count(),
        1,
        "{runs:#?}"
    );
    assert!(
        runs.iter()
            .any(|r| r.stderr.contains("waiting for the migration lock")
                && r.stderr.contains("held by another run (server pid ")
                && r.stderr.contains("application \"meridian-migrate\"")),
        "{runs:#?}"
    );
    assert_eq!(
        f.rows("SELECT version, count(*) FROM migration_log GROUP BY 1 ORDER BY 1")
            .await,
        [["1", "1"], ["2", "1"]]
    );
    assert_eq!(f.versions().await.len(), 2);
}

#[tokio::test]
async fn bad_files_and_bad_configuration_are_refused_before_connecting() {
    let migrations = tempfile::tempdir().unwrap();
    for file in [
        "0001_Init.up.sql",
        "0002_b.down.sql",
        "0003_c.up.sql",
        "3_d.up.sql",
        "0004_e.sql",
        "0005_f.up.sql",
    ] {
        std::fs::write(migrations.path().join(file), "SELECT 1;\n").unwrap();
    }
    std::fs::write(
        migrations.path().join("0005_f.up.sql"),
        "CREATE TABLE f (x int);\nCOMMIT;\n",
    )
    .unwrap();
    // Nothing listens there: a refusal that mentions a connection would mean it tried.
    let nowhere = format!(
        "postgres://postgres@127.0.0.1:{}/postgres",
        support::free_port()
    );
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = meridian();
        command.arg("migrate").args(args);
        for (name, value) in env {
            command.env(name, value);
        }
        Run::of(command)
    };
    let dir = migrations.path().to_str().unwrap();

    let layout = run(&["up", "--dir", dir], &[("DATABASE_URL", &nowhere)])
        .await
        .refused();
    for expected in [
        "0001_Init.up.sql: the name after the version must be lower-case",
        "0002_b.down.sql has no up file",
        "0003_c.up.sql and 3_d.up.sql have the same version 3",
        "0004_e.sql: a migration file is named <version>_<name>.up.sql",
        "0005_f.up.sql: line 2: `COMMIT` would end the transaction",
        "nothing was run",
    ] {
        assert!(layout.stderr.contains(expected), "{expected}\n{layout:#?}");
    }
    assert!(!layout.stderr.contains("connect"), "{layout:#?}");

    // Unusable configuration or arguments: exit code 2.
    let empty = tempfile::tempdir().unwrap();
    let empty = empty.path().to_str().unwrap();
    let no_config = run(&["status", "--dir", empty], &[]).await;
    assert_eq!(no_config.code, Some(2), "{no_config:#?}");
    assert!(
        no_config.stderr.contains("configuration is not valid"),
        "{no_config:#?}"
    );
    let no_dir = run(
        &["up", "--dir", "/nonexistent/migrations"],
        &[("DATABASE_URL", &nowhere)],
    )
    .await;
    assert_eq!(no_dir.code, Some(2), "{no_dir:#?}");
    assert!(
        no_dir.stderr.contains("/nonexistent/migrations"),
        "{no_dir:#?}"
    );
    let bad_to = run(
        &["down", "--dir", empty, "--to", "v3"],
        &[("DATABASE_URL", &nowhere)],
    )
    .await;
    assert_eq!(bad_to.code, Some(2), "{bad_to:#?}");

    // A valid directory and configuration with no primary to reach: refused, exit 1.
    let unreachable = run(&["up", "--dir", empty], &[("DATABASE_URL", &nowhere)])
        .await
        .refused();
    assert!(
        unreachable.stderr.contains("cannot find the primary"),
        "{unreachable:#?}"
    );
}
