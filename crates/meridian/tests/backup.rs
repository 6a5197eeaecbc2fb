//! `meridian backup` and `meridian restore` against real clusters archiving their WAL through
//! `meridian wal-archive`: the restore drill to a point in time, a restore of the latest
//! archived state, corruption caught before anything is touched, retention that keeps what the
//! kept backups need, backups from a replica and logical ones, and a restore across a timeline
//! switch after a failover.
//!
//! Backups go to a directory through `object_store`'s local backend: the same code path an
//! `s3://` location takes.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use meridian_testkit::{Check, Kit, Node, TestCluster, wait_until};
use tempfile::TempDir;

/// A cluster whose nodes archive into a directory, and a backup location.
struct Archived {
    cluster: TestCluster,
    archive: TempDir,
    backups: TempDir,
    /// Holds the copy of the binary the servers run, and the configuration.
    bin: TempDir,
    /// Restores go in here (traversable by the servers' user).
    restores: TempDir,
}

impl Archived {
    /// A primary and `replicas` replicas, every node with archive_mode on and
    /// `meridian wal-archive` as its archive_command (so a promoted replica archives too).
    async fn start(replicas: usize) -> Archived {
        // The servers run as an unprivileged user when the tests run as root: they write the
        // archive, execute a copy of the binary (CI builds under root's home) and enter the
        // restore directory.
        let archive = support::dir_with_mode(0o777);
        let restores = support::dir_with_mode(0o755);
        let (bin, meridian) = support::executable_meridian();
        let command = format!(
            "{} wal-archive %p %f --dir {}",
            meridian.display(),
            archive.path().display()
        );
        let cluster = TestCluster::builder()
            .replicas(replicas)
            .setting("archive_mode", "on")
            .setting("archive_command", &command)
            .start()
            .await
            .unwrap();
        let archived = Archived {
            cluster,
            archive,
            backups: tempfile::tempdir().unwrap(),
            bin,
            restores,
        };
        std::fs::write(archived.config(), archived.toml()).unwrap();
        archived
    }

    fn toml(&self) -> String {
        format!(
            "{}[backup]\nlocation = \"{}\"\nwal_archive = \"{}\"\nmeridian_bin = \"{}\"\n",
            support::cluster_toml(&self.cluster, support::DataDirs::Unmanaged),
            self.backups.path().display(),
            self.archive.path().display(),
            self.bin.path().join("meridian").display(),
        )
    }

    fn config(&self) -> PathBuf {
        self.bin.path().join("meridian.toml")
    }

    /// `meridian <args> -c <config>`.
    fn meridian(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        let config = self.config();
        all.extend(["-c", config.to_str().unwrap()]);
        meridian(&all)
    }

    /// Takes a backup; its id.
    fn backup(&self, extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["backup", "--json"];
        args.extend(extra);
        let out = self.meridian(&args);
        assert!(out.status.success(), "backup failed: {}", describe(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Switches WAL on the primary and waits until the segment it closed is archived.
    async fn archive_current_segment(&self, primary: &Node) {
        support::switch_and_wait_archived(primary, self.archive.path()).await;
    }

    fn restore_dir(&self, name: &str) -> PathBuf {
        self.restores.path().join(name)
    }
}

fn meridian(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(args)
        .env_remove("MERIDIAN_BACKUP_LOCATION")
        .env_remove("MERIDIAN_WAL_ARCHIVE_DIR")
        .output()
        .unwrap()
}

fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A server `meridian restore` started, stopped when the test ends (also on panic).
struct Restored {
    dir: PathBuf,
    port: u16,
}

impl Restored {
    /// `meridian restore <args> --to <dir> --port <free>`; panics with the output on failure.
    fn run(archived: &Archived, dir: PathBuf, args: &[&str]) -> Restored {
        let port = support::free_port();
        let out = restore(archived, &dir, port, args);
        let restored = Restored { dir, port };
        assert!(out.status.success(), "restore failed: {}", describe(&out));
        restored
    }

    async fn rows(&self, sql: &str) -> Vec<i32> {
        let client = support_client(self.port).await;
        client
            .query(sql, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        if !self.dir.join("postmaster.pid").exists() {
            return;
        }
        let kit = Kit::get().unwrap();
        let _ = kit
            .run_as()
            .command(kit.bin().program("pg_ctl"))
            .args(["stop", "-m", "immediate", "-D"])
            .arg(&self.dir)
            .output();
    }
}

fn restore(archived: &Archived, dir: &Path, port: u16, args: &[&str]) -> Output {
    let kit = Kit::get().unwrap();
    let port = port.to_string();
    let mut all = vec![
        "restore",
        "--to",
        dir.to_str().unwrap(),
        "--port",
        &port,
        "--os-user",
        kit.run_as().name(),
        "--timeout",
        "120s",
    ];
    all.extend(args);
    archived.meridian(&all)
}

async fn support_client(port: u16) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=10"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn the_restore_drill_recovers_exactly_the_rows_committed_before_the_target_time() {
    let archived = Archived::start(1).await;
    let primary = archived.cluster.primary();
    primary
        .execute("CREATE TABLE drill (id int PRIMARY KEY); INSERT INTO drill SELECT generate_series(1, 10)")
        .await
        .unwrap();
    let backup = archived.backup(&[]);
    assert_eq!(backup["kind"], "physical");
    assert_eq!(backup["node"], primary.name());

    primary
        .execute("INSERT INTO drill SELECT generate_series(11, 20)")
        .await
        .unwrap();
    // Read after the second batch committed, before the third: the target between them.
    let target = primary
        .query_one("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
        .await
        .unwrap()
        .unwrap();
    // The third batch must commit strictly after the target, at millisecond precision.
    wait_until(
        Duration::from_secs(5),
        "the clock past the target",
        || async {
            let later = primary
                .query_one(&format!(
                    "SELECT clock_timestamp() > '{target}'::timestamptz + interval '2 ms'"
                ))
                .await
                .unwrap();
            Check::when(later.as_deref() == Some("t"), (), "not yet")
        },
    )
    .await
    .unwrap();
    primary
        .execute("INSERT INTO drill SELECT generate_series(21, 30)")
        .await
        .unwrap();
    archived.archive_current_segment(primary).await;

    let restored = Restored::run(
        &archived,
        archived.restore_dir("drill"),
        &["--backup", "latest", "--target-time", &target],
    );
    let ids = restored.rows("SELECT id FROM drill ORDER BY id").await;
    assert_eq!(ids, (1..=20).collect::<Vec<i32>>());
    // Promoted: it takes writes on a timeline of its own.
    let client = support_client(restored.port).await;
    client
        .execute("INSERT INTO drill VALUES (1000)", &[])
        .await
        .unwrap();
    // The cluster itself is untouched.
    let count = primary
        .query_one("SELECT count(*) FROM drill")
        .await
        .unwrap();
    assert_eq!(count.as_deref(), Some("30"));
}

#[tokio::test]
async fn a_restore_of_latest_replays_every_archived_segment_and_no_further() {
    let archived = Archived::start(0).await;
    let primary = archived.cluster.primary();
    primary
        .execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    archived.backup(&[]);
    primary.execute("INSERT INTO t VALUES (2)").await.unwrap();
    archived.archive_current_segment(primary).await;
    // Written after the last archived segment: only in the live server's WAL.
    primary.execute("INSERT INTO t VALUES (3)").await.unwrap();

    let restored = Restored::run(&archived, archived.restore_dir("latest"), &[]);
    assert_eq!(restored.rows("SELECT id FROM t ORDER BY id").await, [1, 2]);
}

#[tokio::test]
async fn a_corrupted_backup_is_caught_by_verify_and_refused_by_restore_before_touching_the_target()
{
    let archived = Archived::start(0).await;
    let backup = archived.backup(&[]);
    let id = backup["id"].as_str().unwrap();
    let out = archived.meridian(&["backup", "verify", id]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("pg_verifybackup"));

    // One byte flipped in the middle of the stored pack.
    let pack = archived.backups.path().join(id).join("base.tar.gz");
    let mut bytes = std::fs::read(&pack).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&pack, bytes).unwrap();

    let out = archived.meridian(&["backup", "verify", "latest"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("base.tar.gz is corrupted"),
        "{}",
        describe(&out)
    );

    // A target holding something: refused without --force, and with --force the corruption
    // is found before the target is emptied.
    let target = archived.restore_dir("precious");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep-me"), "data").unwrap();
    let out = restore(&archived, &target, support::free_port(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not empty"),
        "{}",
        describe(&out)
    );
    let out = restore(&archived, &target, support::free_port(), &["--force"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("corrupted"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        std::fs::read_to_string(target.join("keep-me")).unwrap(),
        "data"
    );
}

#[tokio::test]
async fn retention_deletes_old_backups_but_never_the_wal_the_oldest_kept_one_needs() {
    let archived = Archived::start(0).await;
    let primary = archived.cluster.primary();
    primary.execute("CREATE TABLE t (id int)").await.unwrap();
    let mut ids = Vec::new();
    for round in 1..=3 {
        primary
            .execute(&format!("INSERT INTO t VALUES ({round})"))
            .await
            .unwrap();
        archived.archive_current_segment(primary).await;
        let backup = archived.backup(&[]);
        ids.push(backup);
    }
    primary.execute("INSERT INTO t VALUES (4)").await.unwrap();
    archived.archive_current_segment(primary).await;
    let mut toml = archived.toml();
    toml.push_str("keep = 2\n");
    std::fs::write(archived.config(), toml).unwrap();

    let out = archived.meridian(&["backup", "prune", "--dry-run"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        archived
            .backups
            .path()
            .join(ids[0]["id"].as_str().unwrap())
            .exists()
    );
    let out = archived.meridian(&["backup", "prune"]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "deleted backup {}",
            ids[0]["id"].as_str().unwrap()
        )),
        "{text}"
    );

    let list = archived.meridian(&["backup", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let kept: Vec<&str> = list["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        kept,
        [
            ids[1]["id"].as_str().unwrap(),
            ids[2]["id"].as_str().unwrap()
        ]
    );

    // Nothing from the oldest kept backup's start on was deleted, and something before it was.
    let horizon = ids[1]["start_wal"].as_str().unwrap().to_owned();
    let names: Vec<String> = std::fs::read_dir(archived.archive.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 24)
        .collect();
    assert!(
        names.iter().all(|n| n[8..] >= horizon[8..]),
        "{names:?} vs {horizon}"
    );
    let first = ids[0]["start_wal"].as_str().unwrap();
    assert!(!names.iter().any(|n| n == first), "{first} should be gone");

    // And the oldest kept backup still restores all the way to the last archived write.
    let restored = Restored::run(
        &archived,
        archived.restore_dir("kept"),
        &["--backup", ids[1]["id"].as_str().unwrap()],
    );
    assert_eq!(
        restored.rows("SELECT id FROM t ORDER BY id").await,
        [1, 2, 3, 4]
    );
}

#[tokio::test]
async fn backups_from_a_replica_and_logical_backups_are_verified_and_restorable() {
    let archived = Archived::start(1).await;
    let primary = archived.cluster.primary();
    primary
        .execute("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 5)")
        .await
        .unwrap();
    archived
        .cluster
        .wait_replicated(Duration::from_secs(30))
        .await
        .unwrap();
    let from_replica = archived.backup(&["--from", "replica"]);
    assert_eq!(from_replica["from_replica"], true);
    assert_eq!(from_replica["node"], archived.cluster.replicas()[0].name());
    let logical = archived.backup(&["--logical"]);
    assert_eq!(logical["kind"], "logical");
    let files: Vec<&str> = logical["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(files.contains(&"globals.sql"), "{files:?}");
    for id in [&from_replica["id"], &logical["id"]] {
        let out = archived.meridian(&["backup", "verify", id.as_str().unwrap()]);
        assert!(out.status.success(), "{}", describe(&out));
    }
    // The dump of `postgres` holds the table's rows: load it into a new database.
    let dump = logical["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["database"] == "postgres")
        .unwrap()["name"]
        .as_str()
        .unwrap();
    primary.execute("CREATE DATABASE reloaded").await.unwrap();
    let kit = Kit::get().unwrap();
    let out = Command::new(kit.bin().program("pg_restore"))
        .args([
            "--dbname",
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname=reloaded",
                primary.port()
            ),
        ])
        .arg(
            archived
                .backups
                .path()
                .join(logical["id"].as_str().unwrap())
                .join(dump),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let client = {
        let (client, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname=reloaded",
                primary.port()
            ),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(connection);
        client
    };
    let n: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 5);
    // A replica's physical backup restores like the primary's.
    let restored = Restored::run(
        &archived,
        archived.restore_dir("from-replica"),
        &["--backup", from_replica["id"].as_str().unwrap()],
    );
    assert_eq!(
        restored.rows("SELECT id FROM t ORDER BY id").await,
        [1, 2, 3, 4, 5]
    );
}

#[tokio::test]
async fn archiving_continues_on_the_promoted_replica_and_a_restore_follows_the_new_timeline() {
    let archived = Archived::start(1).await;
    let primary = archived.cluster.primary();
    primary
        .execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let backup = archived.backup(&[]);
    assert_eq!(backup["timeline"], 1);
    archived
        .cluster
        .wait_replicated(Duration::from_secs(30))
        .await
        .unwrap();
    primary.kill();
    let promoted = &archived.cluster.replicas()[0];
    promoted.promote().await.unwrap();
    promoted.execute("INSERT INTO t VALUES (2)").await.unwrap();
    archived.archive_current_segment(promoted).await;
    assert!(archived.archive.path().join("00000002.history").exists());

    let restored = Restored::run(&archived, archived.restore_dir("timeline"), &[]);
    assert_eq!(restored.rows("SELECT id FROM t ORDER BY id").await, [1, 2]);
    let timeline = support_client(restored.port)
        .await
        .query_one("SELECT timeline_id FROM pg_control_checkpoint()", &[])
        .await
        .unwrap()
        .get::<_, i32>(0);
    assert!(timeline >= 2, "restored onto timeline {timeline}");
}

#[tokio::test]
async fn a_running_meridian_serves_the_catalog_in_its_api_and_metrics() {
    let archived = Archived::start(0).await;
    let backup = archived.backup(&[]);
    let id = backup["id"].as_str().unwrap().to_owned();
    let meridian = support::RunningMeridian::start(&archived.toml(), Duration::from_secs(60)).await;
    let listed = wait_until(Duration::from_secs(30), "the catalog read", || async {
        match support::http_json(meridian.admin, "GET", "/api/database/backups", None, None).await {
            Ok((200, body)) if body["backups"][0]["id"] == id.as_str() => Check::Ready(body),
            other => Check::NotYet(format!("{other:?}")),
        }
    })
    .await;
    let listed = meridian.or_log(listed);
    assert_eq!(listed["backups"][0]["kind"], "physical");
    assert_eq!(
        listed["location"],
        archived.backups.path().display().to_string()
    );
    let age = listed["last_physical_age_seconds"].as_f64().unwrap();
    assert!((0.0..600.0).contains(&age), "{age}");
    assert_eq!(listed["last_logical_age_seconds"], serde_json::Value::Null);
    let metrics = support::http_get(meridian.admin, "/metrics").await.unwrap();
    assert!(
        metrics.contains("meridian_backups{kind=\"physical\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("meridian_backup_catalog_readable 1"),
        "{metrics}"
    );
}

#[test]
fn bad_arguments_and_missing_settings_are_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().join("backups");
    let location = location.to_str().unwrap();
    let to = dir.path().join("restored");
    let to = to.to_str().unwrap();
    // The server's OS user (when the tests run as root) is named, so the other checks speak.
    let kit = Kit::get().unwrap();
    let user = kit.run_as().name();

    let out = meridian(&["backup", "list", "--location", location]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no backup in"));

    // Each refused restore names the problem, exit code 1.
    let restore = |extra: &[&str], says: &str| {
        let mut args = vec![
            "restore",
            "--os-user",
            user,
            "--location",
            location,
            "--to",
            to,
        ];
        args.extend(extra);
        let out = meridian(&args);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{says:?} expected: {}",
            describe(&out)
        );
    };
    restore(&["--target-time", "yesterday"], "RFC 3339");
    restore(&["--target-lsn", "0/1000000"], "needs the WAL archive");
    restore(&[], "no physical backup");
    assert!(!Path::new(to).exists(), "nothing was created");

    let out = meridian(&["backup", "verify", "latest", "--location", "ftp://host/x"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ftp:// locations are not supported"));

    // Taking a backup needs a cluster: without one, the configuration error says what is missing.
    let out = meridian(&["backup", "--location", location]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}
