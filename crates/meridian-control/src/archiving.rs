//! WAL archiving on the servers: reading what a server says about it, turning it on, and the
//! watch a running Meridian keeps over the primary's archiving.
//!
//! - [`read_stats`] is one query: `pg_stat_archiver`, the archiving settings and the WAL
//!   position, for [`meridian_core::archiving::judge`].
//! - [`archive_command`] builds `'<meridian>' wal-archive %p %f --dir '<dir>'`, quoted for the
//!   shell PostgreSQL runs it with and with `%` doubled (PostgreSQL replaces `%p`, `%f` and
//!   `%%` in it, see section 26.3.1 of the PostgreSQL docs).
//! - [`configure`] sets `archive_mode = on`, `archive_command` and `archive_timeout` with
//!   `ALTER SYSTEM` and `pg_reload_conf()`, changing only what differs; `archive_mode` takes
//!   effect at the next restart, which is reported, never done. It is meant for every node,
//!   replicas included: a replica does not archive while it replays, but once promoted it
//!   does, so the cluster keeps archiving after a failover. [`inspect`] says what it would
//!   change.
//! - [`spawn`] starts the watch: every few seconds it reads the primary's archiver statistics
//!   on a connection of its own, records the primary's position (so the RPO is measured, not
//!   estimated), judges, publishes an [`ArchiveReport`] and raises or resolves the
//!   `archiving_*` alerts through the monitor. When the primary changes (a failover or a
//!   switchover promoted another node) it first makes sure the new primary's archiving
//!   settings are in place. Several coordinated instances each run one: the settings are
//!   idempotent and each instance's alerts are its own.
//!
//! The role needs superuser, or PostgreSQL 15's `GRANT ALTER SYSTEM ON PARAMETER` for the
//! three settings, to configure; `pg_monitor` to read the statistics and settings.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use meridian_config::Config;
use meridian_core::Lsn;
use meridian_core::alerts::Condition;
use meridian_core::archiving::{
    ALERT_KINDS, ArchiveAlerts, ArchiveJudgement, ArchiveMode, ArchiveState, ArchiverStats,
    conditions, judge_tracked,
};
use meridian_core::lag::LagTracker;
use meridian_core::observation::Timestamp;
use meridian_core::topology::NodeId;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_postgres::Client;

use crate::credentials::Credentials;
use crate::locate::{self, LocateError, NodeAddress};
use crate::monitor::MonitorHandle;
use crate::probe::wall_clock;

/// Everything [`read_stats`] needs, in one round trip. `pg_walfile_name` fails during
/// recovery, hence the CASEs; `archive_library` exists from PostgreSQL 15 on (`missing_ok`).
const STATS_SQL: &str = "\
SELECT current_setting('archive_mode'),
       coalesce((SELECT pending_restart FROM pg_settings WHERE name = 'archive_mode'), false),
       current_setting('archive_command') <> ''
         OR coalesce(current_setting('archive_library', true), '') <> '',
       pg_is_in_recovery(),
       a.archived_count,
       a.last_archived_wal,
       (extract(epoch FROM a.last_archived_time) * 1000)::bigint,
       a.failed_count,
       a.last_failed_wal,
       (extract(epoch FROM a.last_failed_time) * 1000)::bigint,
       (extract(epoch FROM a.stats_reset) * 1000)::bigint,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
       (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size')
  FROM pg_stat_archiver a";

/// The server's archiving, as [`meridian_core::archiving::judge`] takes it.
pub async fn read_stats(client: &Client) -> Result<ArchiverStats, tokio_postgres::Error> {
    let row = client.query_one(STATS_SQL, &[]).await?;
    let count = |i: usize| -> Result<u64, tokio_postgres::Error> {
        Ok(row
            .try_get::<_, Option<i64>>(i)?
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0))
    };
    let time = |i: usize| -> Result<Option<Timestamp>, tokio_postgres::Error> {
        Ok(row
            .try_get::<_, Option<i64>>(i)?
            .and_then(|ms| u64::try_from(ms).ok())
            .map(Timestamp))
    };
    let mode: String = row.try_get(0)?;
    Ok(ArchiverStats {
        // An unknown mode (a future PostgreSQL) is judged as on: it archives.
        archive_mode: ArchiveMode::parse(&mode).unwrap_or(ArchiveMode::On),
        archive_mode_pending_restart: row.try_get(1)?,
        archive_command_set: row.try_get::<_, Option<bool>>(2)?.unwrap_or(false),
        in_recovery: row.try_get(3)?,
        archived_count: count(4)?,
        last_archived_wal: row.try_get(5)?,
        last_archived_time: time(6)?,
        failed_count: count(7)?,
        last_failed_wal: row.try_get(8)?,
        last_failed_time: time(9)?,
        stats_reset: time(10)?,
        current_wal: row.try_get(11)?,
        current_lsn: row
            .try_get::<_, Option<String>>(12)?
            .and_then(|text| text.parse::<Lsn>().ok()),
        segment_size: row
            .try_get::<_, Option<String>>(13)?
            .and_then(|text| text.parse().ok())
            .unwrap_or(meridian_core::archiving::DEFAULT_SEGMENT_SIZE),
    })
}

/// A path that cannot go into an archive or restore command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} = {path:?} cannot go into {setting}: {why}")]
pub struct CommandError {
    /// The PostgreSQL setting the command was for (`archive_command`, `restore_command`).
    pub setting: &'static str,
    /// The configuration field it comes from.
    pub field: &'static str,
    /// The path.
    pub path: PathBuf,
    /// What is wrong with it and what to do.
    pub why: &'static str,
}

/// `'<meridian_bin>' wal-archive %p %f --dir '<dir>'`: the `archive_command` that archives
/// into `dir` with the `meridian` executable at `meridian_bin`. Both paths must be absolute
/// (the server runs the command from its data directory), UTF-8 and free of control
/// characters; they are single-quoted for the shell and their `%` doubled.
pub fn archive_command(meridian_bin: &Path, dir: &Path) -> Result<String, CommandError> {
    wal_command("archive_command", "wal-archive %p %f", meridian_bin, dir)
}

/// `'<meridian_bin>' wal-restore %f %p --dir '<dir>'`: the `restore_command` that fetches
/// from the archive in `dir`, its paths checked and quoted as for [`archive_command`].
pub fn restore_command(meridian_bin: &Path, dir: &Path) -> Result<String, CommandError> {
    wal_command("restore_command", "wal-restore %f %p", meridian_bin, dir)
}

fn wal_command(
    setting: &'static str,
    verb: &str,
    meridian_bin: &Path,
    dir: &Path,
) -> Result<String, CommandError> {
    let quoted = |field: &'static str, path: &Path| -> Result<String, CommandError> {
        let fail = |why| CommandError {
            setting,
            field,
            path: path.to_owned(),
            why,
        };
        let text = path.to_str().ok_or_else(|| {
            fail("it is not valid UTF-8, which PostgreSQL's configuration cannot hold")
        })?;
        if !path.is_absolute() {
            return Err(fail(
                "it must be absolute: the server runs the command from its data directory",
            ));
        }
        if text.chars().any(char::is_control) {
            return Err(fail("it holds a control character (a newline?)"));
        }
        Ok(format!(
            "'{}'",
            text.replace('\'', r"'\''").replace('%', "%%")
        ))
    };
    Ok(format!(
        "{} {verb} --dir {}",
        quoted("backup.meridian_bin", meridian_bin)?,
        quoted("backup.wal_archive", dir)?
    ))
}

/// The archiving settings a node should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSettings {
    /// `archive_command` (see [`archive_command`]).
    pub command: String,
    /// `archive_timeout` (whole seconds; at least one).
    pub timeout: Duration,
}

/// What [`configure`] did, or [`inspect`] would do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Configured {
    /// A setting was (or would be) changed with `ALTER SYSTEM`.
    pub changed: bool,
    /// `archive_mode` is not on in the running server: it needs a restart to archive.
    pub restart_needed: bool,
    /// The settings changed (or to change), by name. Their old values are not kept: an old
    /// `archive_command` may hold credentials.
    pub changes: Vec<&'static str>,
}

/// Sets `archive_mode = on`, `archive_command` and `archive_timeout` where they differ, with
/// `ALTER SYSTEM`, then `pg_reload_conf()`. `archive_mode = always` is left as it is.
pub async fn configure(
    client: &Client,
    settings: &ArchiveSettings,
) -> Result<Configured, tokio_postgres::Error> {
    apply(client, settings, true).await
}

/// What [`configure`] would change, changing nothing.
pub async fn inspect(
    client: &Client,
    settings: &ArchiveSettings,
) -> Result<Configured, tokio_postgres::Error> {
    apply(client, settings, false).await
}

async fn apply(
    client: &Client,
    settings: &ArchiveSettings,
    apply: bool,
) -> Result<Configured, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT name, setting FROM pg_settings \
              WHERE name IN ('archive_mode', 'archive_command', 'archive_timeout')",
            &[],
        )
        .await?;
    let current = |name: &str| -> String {
        rows.iter()
            .find(|row| row.get::<_, &str>(0) == name)
            .and_then(|row| row.get::<_, Option<String>>(1))
            .unwrap_or_default()
    };
    let running_mode = current("archive_mode");
    let mut command = current("archive_command");
    if command == DISABLED {
        command = configured_command(client).await.unwrap_or(command);
    }
    let timeout = settings.timeout.as_secs().max(1);
    let mut wanted: Vec<(&'static str, String)> = Vec::new();
    if !matches!(running_mode.as_str(), "on" | "always") {
        wanted.push(("archive_mode", "'on'".to_owned()));
    }
    if command != settings.command {
        wanted.push(("archive_command", sql_literal(&settings.command)));
    }
    if current("archive_timeout") != timeout.to_string() {
        wanted.push(("archive_timeout", timeout.to_string()));
    }
    if apply && !wanted.is_empty() {
        for (name, value) in &wanted {
            // ALTER SYSTEM takes no parameters and runs outside a transaction block.
            client
                .batch_execute(&format!("ALTER SYSTEM SET {name} = {value}"))
                .await?;
        }
        client.batch_execute("SELECT pg_reload_conf()").await?;
    }
    Ok(Configured {
        changed: !wanted.is_empty(),
        // Computed rather than read from pg_settings.pending_restart: right after
        // pg_reload_conf() this session may not have processed the reload yet.
        restart_needed: !matches!(running_mode.as_str(), "on" | "always"),
        changes: wanted.into_iter().map(|(name, _)| name).collect(),
    })
}

/// What `pg_settings` shows for `archive_command` while `archive_mode` is off (PostgreSQL
/// 15's show hook), whatever the setting holds.
const DISABLED: &str = "(disabled)";

/// `archive_command` as the configuration files set it (the last valid line wins), from
/// `pg_file_settings`; `None` when it cannot be read (the view is for superusers) or is unset.
async fn configured_command(client: &Client) -> Option<String> {
    client
        .query_opt(
            "SELECT setting FROM pg_file_settings \
              WHERE name = 'archive_command' AND error IS NULL \
              ORDER BY seqno DESC LIMIT 1",
            &[],
        )
        .await
        .ok()
        .flatten()
        .and_then(|row| row.get::<_, Option<String>>(0))
}

/// A string literal PostgreSQL reads the same whatever `standard_conforming_strings` says.
fn sql_literal(value: &str) -> String {
    format!("E'{}'", value.replace('\\', r"\\").replace('\'', "''"))
}

/// What the watch needs.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// Every configured node, in configuration order (a node's index is its [`NodeId`]).
    pub nodes: Vec<NodeAddress>,
    /// How to log in.
    pub credentials: Credentials,
    /// What a new primary is given.
    pub archive: ArchiveSettings,
    /// The archive directory, for reports.
    pub archive_dir: PathBuf,
    /// The RPO ceiling (`backup.max_rpo`).
    pub max_rpo: Duration,
    /// How often the primary is checked.
    pub interval: Duration,
}

/// Why the watch cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum WatchSetupError {
    /// No way to reach the nodes.
    #[error(transparent)]
    Locate(#[from] LocateError),
    /// A path cannot go into the archive command.
    #[error(transparent)]
    Command(#[from] CommandError),
}

impl WatchSettings {
    /// The watch `config` asks for: `None` without `[backup] wal_archive`. The archive command
    /// runs `[backup] meridian_bin`, else `current_exe`.
    pub fn from_config(
        config: &Config,
        current_exe: &Path,
    ) -> Result<Option<WatchSettings>, WatchSetupError> {
        let Some(backup) = &config.backup else {
            return Ok(None);
        };
        let Some(dir) = &backup.wal_archive else {
            return Ok(None);
        };
        let credentials = Credentials::from_config(config).ok_or(LocateError::NoCredentials)?;
        let bin = backup.meridian_bin.as_deref().unwrap_or(current_exe);
        Ok(Some(WatchSettings {
            nodes: locate::nodes(config)?,
            credentials,
            archive: ArchiveSettings {
                command: archive_command(bin, dir)?,
                timeout: backup.archive_timeout,
            },
            archive_dir: dir.clone(),
            max_rpo: backup.max_rpo,
            // Several checks within the ceiling, none more often than once a second.
            interval: (backup.max_rpo / 8).clamp(Duration::from_secs(1), Duration::from_secs(5)),
        }))
    }
}

/// The last check of the primary's archiving.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ArchiveReport {
    /// The primary checked, by name.
    pub node: Option<Arc<str>>,
    /// When.
    pub checked_at: Option<Timestamp>,
    /// What it said.
    pub stats: Option<ArchiverStats>,
    /// The verdict; `None` when the check could not be made (see `error`).
    pub judgement: Option<ArchiveJudgement>,
    /// Why there is no verdict.
    pub error: Option<String>,
}

/// The watch's outputs, cheap to clone.
#[derive(Debug, Clone)]
pub struct ArchiveWatch {
    report: watch::Receiver<Arc<ArchiveReport>>,
    /// The archive directory.
    pub archive_dir: PathBuf,
    /// The RPO ceiling.
    pub max_rpo: Duration,
}

impl ArchiveWatch {
    /// The latest report.
    pub fn report(&self) -> Arc<ArchiveReport> {
        self.report.borrow().clone()
    }

    /// Follows the reports as they come.
    pub fn reports(&self) -> watch::Receiver<Arc<ArchiveReport>> {
        self.report.clone()
    }
}

/// How long one check may take on an open connection.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Positions of the primary kept to measure the RPO: an hour at one check every 5 s, and
/// longer, coarser, beyond (see [`LagTracker`]).
const HISTORY: usize = 720;

/// Starts the watch on the current runtime; it stops when the monitor does.
pub fn spawn(settings: WatchSettings, monitor: MonitorHandle) -> ArchiveWatch {
    let (report_tx, report_rx) = watch::channel(Arc::new(ArchiveReport::default()));
    let watch = ArchiveWatch {
        report: report_rx,
        archive_dir: settings.archive_dir.clone(),
        max_rpo: settings.max_rpo,
    };
    tokio::spawn(watch_loop(settings, monitor, report_tx));
    watch
}

async fn watch_loop(
    settings: WatchSettings,
    monitor: MonitorHandle,
    reports: watch::Sender<Arc<ArchiveReport>>,
) {
    let mut alerts = restored_alerts(&monitor);
    let mut statuses = monitor.status_updates();
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut primary: Option<NodeId> = None;
    let mut client: Option<Client> = None;
    let mut history = LagTracker::new(HISTORY);
    let mut last_state: Option<ArchiveState> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = statuses.changed() => {
                if changed.is_err() {
                    return;
                }
                // Between ticks, only a change of primary is worth a check.
                if statuses.borrow_and_update().primary == primary {
                    continue;
                }
            }
        }
        if reports.is_closed() {
            return;
        }
        let status = monitor.status();
        let Some(id) = status.primary else {
            // No primary (a failover under way, or none found): nothing to judge; the alerts
            // stay as they are until a primary is known again.
            publish_error(&reports, None, "no primary is known".to_owned());
            continue;
        };
        let Some(node) = settings.nodes.get(usize::from(id.0)) else {
            continue;
        };
        let name: Arc<str> = Arc::from(node.name.as_str());
        if primary != Some(id) {
            let promoted = primary.is_some();
            primary = Some(id);
            client = None;
            history.reset();
            last_state = None;
            if promoted {
                ensure_settings(&settings, node).await;
            }
        }
        if client.as_ref().is_none_or(Client::is_closed) {
            client = match node
                .connect(&settings.credentials, None, "meridian-archive-watch")
                .await
            {
                Ok(c) => Some(c),
                Err(e) => {
                    publish_error(&reports, Some(name), format!("cannot connect: {e}"));
                    continue;
                }
            };
        }
        let Some(connected) = &client else { continue };
        let stats = match tokio::time::timeout(QUERY_TIMEOUT, read_stats(connected)).await {
            Ok(Ok(stats)) => stats,
            Ok(Err(e)) => {
                client = None;
                publish_error(
                    &reports,
                    Some(name),
                    format!("cannot read pg_stat_archiver: {e}"),
                );
                continue;
            }
            Err(_) => {
                client = None;
                publish_error(
                    &reports,
                    Some(name),
                    format!("pg_stat_archiver did not answer within {QUERY_TIMEOUT:?}"),
                );
                continue;
            }
        };
        let now = wall_clock();
        if stats.in_recovery {
            // Demoted since the view was published (a switchover under way): the next
            // primary is judged once the view says which it is.
            publish_error(&reports, Some(name), "the node is in recovery".to_owned());
            continue;
        }
        if let Some(lsn) = stats.current_lsn {
            history.record_primary(now, lsn);
        }
        let judgement = judge_tracked(&stats, now, settings.max_rpo, &history);
        let changes = alerts.reconcile(&conditions(&judgement, &stats, id, settings.max_rpo));
        if !changes.is_empty() {
            monitor.archiving_alerts(changes);
        }
        if last_state != Some(judgement.state) {
            if judgement.state.is_ok() {
                tracing::info!(node = %name, state = judgement.state.as_str(), "WAL archiving: {}", judgement.detail);
            } else {
                tracing::warn!(node = %name, state = judgement.state.as_str(), "WAL archiving: {}", judgement.detail);
            }
            last_state = Some(judgement.state);
        }
        reports.send_replace(Arc::new(ArchiveReport {
            node: Some(name),
            checked_at: Some(now),
            stats: Some(stats),
            judgement: Some(judgement),
            error: None,
        }));
    }
}

/// The archiving alerts the monitor restored from the store, as raised by this watch.
fn restored_alerts(monitor: &MonitorHandle) -> ArchiveAlerts {
    let mut alerts = ArchiveAlerts::new();
    let status = monitor.status();
    for alert in monitor.counters().active_alerts.iter() {
        if !ALERT_KINDS.contains(&alert.kind) {
            continue;
        }
        let node = alert
            .node
            .as_deref()
            .and_then(|name| status.nodes.iter().find(|n| &*n.name == name))
            .map(|n| n.id);
        alerts.adopt(&Condition {
            kind: alert.kind,
            node,
            severity: alert.severity,
            value: alert.value,
            threshold: alert.threshold,
            message: alert.message.clone(),
        });
    }
    alerts
}

/// Gives a newly promoted primary its archiving settings; a needed restart is left to the
/// operator (the judgement then says `off` and the `archiving_off` alert names it).
async fn ensure_settings(settings: &WatchSettings, node: &NodeAddress) {
    let outcome = match node
        .connect(&settings.credentials, None, "meridian-archive-watch")
        .await
    {
        Ok(client) => {
            tokio::time::timeout(QUERY_TIMEOUT, configure(&client, &settings.archive)).await
        }
        Err(e) => {
            tracing::warn!(node = %node.name, "new primary: cannot connect to check its WAL archiving settings: {e}");
            return;
        }
    };
    match outcome {
        Ok(Ok(done)) if done.restart_needed => tracing::warn!(
            node = %node.name,
            changed = ?done.changes,
            "new primary: archive_mode is not on in the running server and needs a restart \
             before it archives; Meridian does not restart it"
        ),
        Ok(Ok(done)) if done.changed => {
            tracing::info!(node = %node.name, changed = ?done.changes, "new primary: WAL archiving settings applied")
        }
        Ok(Ok(_)) => {
            tracing::info!(node = %node.name, "new primary: WAL archiving settings already in place")
        }
        Ok(Err(e)) => tracing::warn!(
            node = %node.name,
            "new primary: cannot apply the WAL archiving settings ({}); run meridian backup \
             setup-archiving with a role that may ALTER SYSTEM",
            describe(&e)
        ),
        Err(_) => tracing::warn!(
            node = %node.name,
            "new primary: applying the WAL archiving settings took longer than {QUERY_TIMEOUT:?}"
        ),
    }
}

fn publish_error(
    reports: &watch::Sender<Arc<ArchiveReport>>,
    node: Option<Arc<str>>,
    error: String,
) {
    reports.send_replace(Arc::new(ArchiveReport {
        node,
        checked_at: Some(wall_clock()),
        stats: None,
        judgement: None,
        error: Some(error),
    }));
}

/// A server error with its SQLSTATE, or the error.
pub fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_quotes_paths_for_the_shell_and_postgres() {
        assert_eq!(
            archive_command(Path::new("/usr/bin/meridian"), Path::new("/srv/wal")).unwrap(),
            "'/usr/bin/meridian' wal-archive %p %f --dir '/srv/wal'"
        );
        // A quote ends the shell's quoting, is escaped and reopens it; % is doubled.
        assert_eq!(
            archive_command(
                Path::new("/opt/o'brien/meridian"),
                Path::new("/srv/100%/w a l")
            )
            .unwrap(),
            r"'/opt/o'\''brien/meridian' wal-archive %p %f --dir '/srv/100%%/w a l'"
        );
    }

    #[test]
    fn unusable_paths_name_their_field() {
        let relative = archive_command(Path::new("meridian"), Path::new("/srv/wal")).unwrap_err();
        assert_eq!(relative.field, "backup.meridian_bin");
        assert!(relative.to_string().contains("absolute"), "{relative}");
        let newline = archive_command(Path::new("/bin/m"), Path::new("/srv/w\nal")).unwrap_err();
        assert_eq!(newline.field, "backup.wal_archive");
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let bytes = std::ffi::OsStr::from_bytes(b"/srv/\xff");
            let invalid = archive_command(Path::new("/bin/m"), Path::new(bytes)).unwrap_err();
            assert!(invalid.why.contains("UTF-8"));
        }
    }

    #[test]
    fn literals_survive_either_string_syntax() {
        assert_eq!(sql_literal(r"a'b\c"), r"E'a''b\\c'");
    }
}
