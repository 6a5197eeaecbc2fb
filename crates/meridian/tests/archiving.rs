//! Continuous WAL archiving through the `meridian` binary on real clusters:
//! `meridian backup setup-archiving` configuring every node, `meridian backup status` judging
//! the primary, a running Meridian raising the archiving alert and serving
//! `/api/database/archiving` when `archive_command` fails, and a failover after which the new
//! primary, given its settings by Meridian, archives its new timeline into the same directory.
//!
//! The servers run `archive_command` as their own OS user (an unprivileged one when the tests
//! run as root, as in CI, whose build directory under root's home that user cannot reach): each
//! test gives them an executable copy of the binary in a directory they can enter.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use meridian_testkit::{Check, Node, TestCluster, wait_until};
use serde_json::Value;
use tempfile::TempDir;
use tokio::process::Command;

use support::{DataDirs, RunningMeridian, cluster_toml, http_get, http_json};

mod support;

/// Bound of every wait: generous, since these 2-core machines are shared.
const TIMEOUT: Duration = Duration::from_secs(90);

/// What a `meridian` command did.
#[derive(Debug)]
struct Cli {
    code: Option<i32>,
    stdout: String,
    /// Read in failure messages, through `Debug`.
    #[allow(dead_code)]
    stderr: String,
}

impl Cli {
    /// Its output as JSON; `null` when it is not.
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_default()
    }
}

/// Runs `meridian ARGS` with nothing from this process's environment but `PATH`.
async fn meridian(args: &[&str]) -> Cli {
    let output = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), output)
        .await
        .unwrap_or_else(|_| panic!("meridian {args:?} did not finish within 120 s"))
        .unwrap();
    Cli {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The test's files: an executable copy of the binary, the archive directory (not created:
/// setup-archiving creates it) and the configuration.
struct Place {
    base: TempDir,
    _bin_dir: TempDir,
    bin: PathBuf,
}

impl Place {
    fn new() -> Place {
        let (bin_dir, bin) = support::executable_meridian();
        Place {
            base: support::dir_with_mode(0o755),
            _bin_dir: bin_dir,
            bin,
        }
    }

    fn archive(&self) -> PathBuf {
        self.base.path().join("wal")
    }

    fn config(&self) -> PathBuf {
        self.base.path().join("meridian.toml")
    }

    /// `[backup]` for this place: the archive, the binary, the default RPO ceiling.
    fn backup_toml(&self) -> String {
        format!(
            "[backup]\nlocation = \"{}\"\nwal_archive = \"{}\"\nmeridian_bin = \"{}\"\n",
            self.base.path().join("backups").display(),
            self.archive().display(),
            self.bin.display()
        )
    }

    /// Writes the configuration of `cluster` (its data directories managed, so that
    /// setup-archiving learns who owns them) with `[backup]`.
    fn write_config(&self, cluster: &TestCluster) -> String {
        let toml = format!(
            "{}{}",
            cluster_toml(cluster, DataDirs::Managed),
            self.backup_toml()
        );
        std::fs::write(self.config(), &toml).unwrap();
        toml
    }

    async fn setup_archiving(&self) -> Cli {
        meridian(&[
            "backup",
            "setup-archiving",
            "-c",
            self.config().to_str().unwrap(),
        ])
        .await
    }

    async fn status(&self, json: bool) -> Cli {
        let config = self.config();
        let mut args = vec!["backup", "status", "-c", config.to_str().unwrap()];
        if json {
            args.push("--json");
        }
        meridian(&args).await
    }

    /// The files in the archive whose name `wanted` accepts.
    fn archived(&self, wanted: impl Fn(&str) -> bool) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.archive())
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|name| wanted(name))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Locks the servers out of the archive (`mode` 0o500) or lets them in again (0o700).
    fn set_archive_mode(&self, mode: u32) {
        std::fs::set_permissions(self.archive(), std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// A WAL segment's name on `timeline` (24 hexadecimal digits).
fn is_segment_of(name: &str, timeline: u32) -> bool {
    name.len() == 24
        && name.bytes().all(|b| b.is_ascii_hexdigit())
        && name.starts_with(&format!("{timeline:08X}"))
}

/// One setting of a node as `pg_settings` shows it.
async fn setting(node: &Node, name: &str) -> Option<String> {
    node.query_one(&format!(
        "SELECT setting FROM pg_settings WHERE name = '{name}'"
    ))
    .await
    .unwrap()
}

/// Writes on `primary` and switches its WAL; returns the segment the switch closed.
async fn write_and_switch(primary: &Node, table: &str) -> String {
    primary
        .execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (x int); INSERT INTO {table} VALUES (1)"
        ))
        .await
        .unwrap();
    support::switch_wal(primary).await
}

/// Waits until `name` is in the archive, reporting the primary's last failure meanwhile.
async fn wait_archived(place: &Place, primary: &Node, name: &str) {
    support::wait_archived(primary, &place.archive(), name).await;
}

#[tokio::test]
async fn setup_archiving_configures_every_node_and_status_reports_the_archived_segment() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    let place = Place::new();
    place.write_config(&cluster);
    let expected_command = format!(
        "'{}' wal-archive %p %f --dir '{}'",
        place.bin.display(),
        place.archive().display()
    );

    // Before: archiving is off, and status says so with exit code 1.
    let off = place.status(false).await;
    assert_eq!(off.code, Some(1), "{off:?}");
    assert!(off.stdout.contains(": off"), "{off:?}");

    // A dry run changes nothing.
    let dry = meridian(&[
        "backup",
        "setup-archiving",
        "--dry-run",
        "-c",
        place.config().to_str().unwrap(),
    ])
    .await;
    assert_eq!(dry.code, Some(0), "{dry:?}");
    assert!(dry.stdout.contains("would set archive_mode"), "{dry:?}");
    assert!(!place.archive().exists());
    assert_eq!(
        setting(cluster.primary(), "archive_mode").await.as_deref(),
        Some("off")
    );

    let setup = place.setup_archiving().await;
    assert_eq!(setup.code, Some(0), "{setup:?}");
    for node in cluster.nodes() {
        let line = setup
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{} (", node.name())))
            .unwrap_or_else(|| panic!("no line for {}: {setup:?}", node.name()));
        assert!(
            line.contains("set archive_mode, archive_command, archive_timeout")
                && line.contains("needs a restart"),
            "{line}"
        );
        assert_eq!(
            node.query_one(
                "SELECT pending_restart::text FROM pg_settings WHERE name = 'archive_mode'"
            )
            .await
            .unwrap()
            .as_deref(),
            Some("true"),
            "{}",
            node.name()
        );
    }
    // The directory was made for the servers' OS user, who alone may use it.
    let owner = std::fs::metadata(cluster.primary().data_dir())
        .unwrap()
        .uid();
    let archive = std::fs::metadata(place.archive()).unwrap();
    assert_eq!(
        (archive.uid(), archive.permissions().mode() & 0o777),
        (owner, 0o700)
    );

    // The restart archive_mode needs; then every node has the settings.
    for node in cluster.nodes() {
        node.restart().await.unwrap();
    }
    cluster.wait_replicated(TIMEOUT).await.unwrap();
    for node in cluster.nodes() {
        assert_eq!(setting(node, "archive_mode").await.as_deref(), Some("on"));
        assert_eq!(
            setting(node, "archive_command").await.as_deref(),
            Some(expected_command.as_str()),
            "{}",
            node.name()
        );
        assert_eq!(
            setting(node, "archive_timeout").await.as_deref(),
            Some("60")
        );
    }
    let again = place.setup_archiving().await;
    assert_eq!(again.code, Some(0), "{again:?}");
    assert_eq!(
        again.stdout.matches(": already set").count(),
        2,
        "{again:?}"
    );
    assert!(!again.stdout.contains("needs a restart"), "{again:?}");

    // A switched segment reaches the archive, checksum beside it, and status is healthy.
    let primary = cluster.primary();
    let segment = write_and_switch(primary, "archived").await;
    wait_archived(&place, primary, &segment).await;
    assert!(place.archive().join(format!("{segment}.sha256")).exists());
    let status = wait_until(TIMEOUT, "status to report the segment", || async {
        let status = place.status(true).await;
        let ready = status.code == Some(0)
            && status.json()["last_archived_wal"] == Value::String(segment.clone());
        Check::when(ready, status.json(), status)
    })
    .await
    .unwrap();
    assert_eq!(status["state"], "healthy", "{status}");
    assert_eq!(status["node"], primary.name(), "{status}");
    assert_eq!(status["failed_count"], 0, "{status}");
    assert_eq!(
        status["archive_dir"],
        place.archive().display().to_string(),
        "{status}"
    );
    let text = place.status(false).await;
    assert_eq!(text.code, Some(0), "{text:?}");
    assert!(
        text.stdout.contains(": healthy") && text.stdout.contains(&segment),
        "{text:?}"
    );
}

/// A single-node cluster with archive_mode already on (so no restart is needed), its archiving
/// set up by the binary, and Meridian running in front of it with the same configuration.
async fn archiving_cluster(replicas: usize, place: &Place) -> (TestCluster, RunningMeridian) {
    let cluster = TestCluster::builder()
        .replicas(replicas)
        .setting("archive_mode", "on")
        .start()
        .await
        .unwrap();
    let toml = place.write_config(&cluster);
    let setup = place.setup_archiving().await;
    assert_eq!(setup.code, Some(0), "{setup:?}");
    assert!(!setup.stdout.contains("needs a restart"), "{setup:?}");
    let running = RunningMeridian::start(&toml, TIMEOUT).await;
    (cluster, running)
}

/// `/api/database/archiving` once `accept` takes it.
async fn wait_archiving(
    meridian: &RunningMeridian,
    what: &str,
    accept: impl Fn(&Value) -> bool,
) -> Value {
    let document = wait_until(TIMEOUT, what, || async {
        match http_json(meridian.admin, "GET", "/api/database/archiving", None, None).await {
            Ok((200, body)) => Check::when(accept(&body), body.clone(), body),
            other => Check::NotYet(format!("{other:?}")),
        }
    })
    .await;
    meridian.or_log(document)
}

/// The kinds of the active alerts.
async fn active_alerts(meridian: &RunningMeridian) -> Vec<String> {
    let (code, alerts) = http_json(
        meridian.admin,
        "GET",
        "/api/database/alerts?active=true",
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(code, 200, "{alerts}");
    alerts
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["kind"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_failing_archive_command_is_reported_by_status_the_alert_the_api_and_the_metrics() {
    let place = Place::new();
    let (cluster, meridian) = archiving_cluster(0, &place).await;
    let primary = cluster.primary();
    let first = write_and_switch(primary, "before").await;
    wait_archived(&place, primary, &first).await;
    wait_archiving(&meridian, "archiving healthy", |a| a["state"] == "healthy").await;

    // The servers' OS user can no longer write the archive.
    place.set_archive_mode(0o500);
    let stuck = write_and_switch(primary, "stuck").await;
    let failed = wait_archiving(&meridian, "archiving failing", |a| a["state"] == "failing").await;
    assert_eq!(failed["last_failed_wal"], stuck.as_str(), "{failed}");
    assert_eq!(failed["node"], primary.name(), "{failed}");
    assert!(
        failed["detail"].as_str().unwrap().contains(&stuck),
        "{failed}"
    );
    let alerted = wait_until(TIMEOUT, "the archiving_failing alert", || async {
        let kinds = active_alerts(&meridian).await;
        Check::when(kinds.iter().any(|k| k == "archiving_failing"), (), kinds)
    })
    .await;
    meridian.or_log(alerted);
    let metrics = http_get(meridian.admin, "/metrics").await.unwrap();
    assert!(
        metrics.contains("meridian_archive_state{state=\"failing\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "meridian_archive_failed_total{{node=\"{}\"}}",
            primary.name()
        )),
        "{metrics}"
    );
    let (_, topology) = http_json(meridian.admin, "GET", "/api/database/status", None, None)
        .await
        .unwrap();
    assert_eq!(topology["archiving"]["state"], "failing", "{topology}");

    // The status command says the same, with exit code 1 and the segment it is stuck on.
    let status = place.status(false).await;
    assert_eq!(status.code, Some(1), "{status:?}");
    assert!(
        status.stdout.contains(": failing") && status.stdout.contains(&stuck),
        "{status:?}"
    );

    // Writable again: PostgreSQL's retry goes through (a new segment wakes the archiver
    // sooner than its one-minute wait) and the alert is resolved.
    place.set_archive_mode(0o700);
    write_and_switch(primary, "after").await;
    wait_archived(&place, primary, &stuck).await;
    wait_archiving(&meridian, "archiving healthy again", |a| {
        a["state"] == "healthy"
    })
    .await;
    let resolved = wait_until(TIMEOUT, "the alert resolved", || async {
        let kinds = active_alerts(&meridian).await;
        Check::when(!kinds.iter().any(|k| k.starts_with("archiving")), (), kinds)
    })
    .await;
    meridian.or_log(resolved);
    assert_eq!(place.status(false).await.code, Some(0));
}

#[tokio::test]
async fn after_a_failover_the_new_primary_archives_its_new_timeline_into_the_same_directory() {
    let place = Place::new();
    let (cluster, meridian) = archiving_cluster(1, &place).await;
    let (old, new) = (cluster.primary(), &cluster.replicas()[0]);
    // The replica loses its archive_command: the one it archives with after the failover is
    // the one Meridian gives the new primary.
    // Two statements: ALTER SYSTEM cannot run in the implicit transaction of a batch.
    new.execute("ALTER SYSTEM RESET archive_command")
        .await
        .unwrap();
    new.execute("SELECT pg_reload_conf()").await.unwrap();
    let cleared = wait_until(TIMEOUT, "the replica's archive_command reset", || async {
        let command = setting(new, "archive_command").await;
        Check::when(command.as_deref() == Some(""), (), command)
    })
    .await;
    cleared.unwrap();

    let before = write_and_switch(old, "before_failover").await;
    wait_archived(&place, old, &before).await;
    cluster.wait_replicated(TIMEOUT).await.unwrap();

    old.kill();
    let promoted = wait_until(TIMEOUT, "Meridian to promote the replica", || async {
        match new.is_in_recovery().await {
            Ok(false) => Check::Ready(()),
            other => Check::NotYet(format!("{other:?}")),
        }
    })
    .await;
    meridian.or_log(promoted);

    // The new timeline's history file, then its first segment once one is switched, land in
    // the same archive.
    let history = wait_until(TIMEOUT, "00000002.history archived", || async {
        let names = place.archived(|n| n.ends_with(".history"));
        Check::when(names.iter().any(|n| n == "00000002.history"), (), names)
    })
    .await;
    meridian.or_log(history);
    let switched = write_and_switch(new, "after_failover").await;
    assert!(is_segment_of(&switched, 2), "{switched}");
    let segment = wait_until(TIMEOUT, "a timeline-2 segment archived", || async {
        let names = place.archived(|n| is_segment_of(n, 2));
        Check::when(names.contains(&switched), names.clone(), names)
    })
    .await;
    meridian.or_log(segment);
    assert!(
        place.archived(|n| is_segment_of(n, 1)).contains(&before),
        "the old timeline's segments stay"
    );
    wait_archiving(&meridian, "the new primary's archiving healthy", |a| {
        a["node"] == new.name()
            && a["state"] == "healthy"
            && a["last_archived_wal"]
                .as_str()
                .is_some_and(|w| w.starts_with("00000002"))
    })
    .await;
    assert!(
        meridian
            .log()
            .contains("new primary: WAL archiving settings applied"),
        "{}",
        meridian.log()
    );
}
