//! `meridian backup setup-archiving` and `meridian backup status`: continuous WAL archiving
//! into `[backup] wal_archive`, set up on every node and judged on the primary, without a
//! running Meridian; and the one JSON document of the archiving that this status, the admin
//! API and the metrics share ([`document`]).
//!
//! `setup-archiving` asks every configured node at once whether it is in recovery and where its
//! data directory is, creates the archive directory when it is missing (owned by the servers'
//! OS user when a node's data directory on this host tells who that is), then sets
//! `archive_mode`, `archive_command` and `archive_timeout` on each node, replicas included (a
//! replica archives once promoted), and says which need a restart. It never restarts a server.
//! It ends with the primary's archiving judged.
//!
//! Exit codes: 0 done (setup) or healthy (status); 1 a node could not be configured, or the
//! archiving is behind, failing or off; 2 the configuration is unusable.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use meridian_admin::model::Archiving;
use meridian_config::{BackupConfig, Config, Environment};
use meridian_control::archiving::{
    ArchiveReport, ArchiveSettings, Configured, archive_command, configure, describe, inspect,
    read_stats,
};
use meridian_control::credentials::Credentials;
use meridian_control::locate::{self, NodeAddress, Want};
use meridian_control::probe::wall_clock;
use meridian_core::archiving::{ArchiveState, judge};
use meridian_core::observation::Timestamp;
use tokio_postgres::Client;

const CONFIG_ERROR: u8 = 2;

/// The archiving of `report` as the API, the status command and the metrics show it.
pub fn document(report: &ArchiveReport, archive_dir: &Path, max_rpo: Duration) -> Archiving {
    let stats = report.stats.as_ref();
    let judgement = report.judgement.as_ref();
    let ms = |at: Option<Timestamp>| at.map(|t| t.0);
    Archiving {
        state: judgement.map_or("unknown", |j| j.state.as_str()).to_owned(),
        node: report.node.as_deref().map(str::to_owned),
        rpo_seconds: judgement.and_then(|j| j.rpo).map(|rpo| rpo.as_secs_f64()),
        max_rpo_seconds: max_rpo.as_secs_f64(),
        unarchived_segments: judgement.map(|j| j.unarchived_segments),
        archived_count: stats.map(|s| s.archived_count),
        last_archived_wal: stats.and_then(|s| s.last_archived_wal.clone()),
        last_archived_at_ms: ms(stats.and_then(|s| s.last_archived_time)),
        failed_count: stats.map(|s| s.failed_count),
        last_failed_wal: stats.and_then(|s| s.last_failed_wal.clone()),
        last_failed_at_ms: ms(stats.and_then(|s| s.last_failed_time)),
        current_wal: stats.and_then(|s| s.current_wal.clone()),
        archive_dir: archive_dir.display().to_string(),
        detail: judgement.map(|j| j.detail.clone()),
        error: report.error.clone(),
        checked_at_ms: ms(report.checked_at),
    }
}

/// What both commands read from the configuration.
struct Setup {
    config: Config,
    backup: BackupConfig,
    credentials: Credentials,
}

fn load(config_path: Option<&Path>) -> Result<Setup, ExitCode> {
    let refuse = |message: String| {
        eprintln!("meridian: {message}");
        ExitCode::from(CONFIG_ERROR)
    };
    let config = Config::load(config_path, &Environment::from_process())
        .map_err(|errors| refuse(format!("the configuration is not valid:\n{errors}")))?;
    let backup = config.backup.clone().ok_or_else(|| {
        refuse(
            "no [backup] section in the configuration: add one with location and wal_archive \
             (the directory archive_command writes into)"
                .to_owned(),
        )
    })?;
    let credentials = Credentials::from_config(&config).ok_or_else(|| {
        refuse(
            "no credentials to reach the nodes: set monitor.user (MERIDIAN_MONITOR_USER) or a \
             [[users]] entry"
                .to_owned(),
        )
    })?;
    Ok(Setup {
        config,
        backup,
        credentials,
    })
}

fn block_on<T>(work: impl Future<Output = T>) -> anyhow::Result<T> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?
        .block_on(work))
}

/// `meridian backup setup-archiving [-c FILE] [--dry-run]`.
pub fn setup_archiving(config_path: Option<&Path>, dry_run: bool) -> ExitCode {
    let setup = match load(config_path) {
        Ok(setup) => setup,
        Err(code) => return code,
    };
    let Some(dir) = &setup.backup.wal_archive else {
        eprintln!(
            "meridian: [backup] wal_archive is not set: add wal_archive = \"/path/to/archive\" \
             to [backup] (MERIDIAN_BACKUP_WAL_ARCHIVE), a directory the servers' OS user can \
             write"
        );
        return ExitCode::from(CONFIG_ERROR);
    };
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
    let bin = match &setup.backup.meridian_bin {
        Some(bin) => bin.clone(),
        None => match std::env::current_exe() {
            Ok(exe) => exe,
            Err(e) => {
                eprintln!(
                    "meridian: cannot tell where this meridian executable is ({e}): set \
                     [backup] meridian_bin"
                );
                return ExitCode::from(CONFIG_ERROR);
            }
        },
    };
    let settings = match archive_command(&bin, &dir) {
        Ok(command) => ArchiveSettings {
            command,
            timeout: setup.backup.archive_timeout,
        },
        Err(e) => {
            eprintln!("meridian: {e}");
            return ExitCode::from(CONFIG_ERROR);
        }
    };
    let nodes = match locate::nodes(&setup.config) {
        Ok(nodes) => nodes,
        Err(e) => {
            eprintln!("meridian: {e}");
            return ExitCode::from(CONFIG_ERROR);
        }
    };
    if nix::unistd::geteuid().is_root() && !executable_by_anyone(&bin) {
        eprintln!(
            "warning: {} (or a directory above it) is not executable by other users, and the \
             servers run archive_command as their own OS user: set [backup] meridian_bin to a \
             copy they can execute",
            bin.display()
        );
    }
    println!(
        "{} on {} node(s): archive_mode = on, archive_command = {}, archive_timeout = {}",
        if dry_run {
            "WAL archiving would be set"
        } else {
            "WAL archiving"
        },
        nodes.len(),
        settings.command,
        humantime::format_duration(Duration::from_secs(settings.timeout.as_secs().max(1)))
    );
    match block_on(set_up(&setup, &nodes, &settings, &dir, dry_run)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("meridian: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A node reached, with what it said about itself.
struct Reached {
    node: NodeAddress,
    client: Client,
    in_recovery: bool,
    /// The server's `data_directory`, when it may be read.
    data_directory: Option<PathBuf>,
}

async fn set_up(
    setup: &Setup,
    nodes: &[NodeAddress],
    settings: &ArchiveSettings,
    dir: &Path,
    dry_run: bool,
) -> ExitCode {
    let mut failed = false;
    let mut reached = Vec::new();
    for node in nodes {
        match reach(node, &setup.credentials).await {
            Ok(node) => reached.push(node),
            Err(e) => {
                println!("{}: cannot connect: {e}", node.name);
                failed = true;
            }
        }
    }

    // The directory first: archiving starts at the reload, and fails until it exists.
    let owner = reached
        .iter()
        .flat_map(|r| [r.node.data_dir.clone(), r.data_directory.clone()])
        .flatten()
        .find_map(|data| std::fs::metadata(&data).ok().map(|m| (m.uid(), m.gid())));
    match archive_directory(dir, owner, dry_run) {
        Ok(line) => println!("{line}"),
        Err(e) => {
            println!("{e:#}");
            failed = true;
        }
    }

    for node in &reached {
        let role = if node.in_recovery {
            "replica"
        } else {
            "primary"
        };
        let name = format!(
            "{} ({role}, {}:{})",
            node.node.name, node.node.host, node.node.port
        );
        let done = if dry_run {
            inspect(&node.client, settings).await
        } else {
            configure(&node.client, settings).await
        };
        match done {
            Ok(done) => println!("{name}: {}", describe_change(&done, node, dry_run)),
            Err(e) => {
                failed = true;
                let hint =
                    if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) {
                        format!(
                            ": the role {} may not ALTER SYSTEM; use a superuser, or GRANT ALTER \
                         SYSTEM ON PARAMETER archive_mode, archive_command, archive_timeout TO \
                         {} (PostgreSQL 15)",
                            setup.credentials.user, setup.credentials.user
                        )
                    } else {
                        String::new()
                    };
                println!("{name}: not configured: {}{hint}", describe(&e));
            }
        }
    }

    // The primary's archiving now, on a new session: a session applies a reload only one
    // command late.
    match reached.iter().find(|r| !r.in_recovery) {
        Some(primary) => match primary
            .node
            .connect(&setup.credentials, None, "meridian")
            .await
        {
            Ok(client) => match read_stats(&client).await {
                Ok(stats) => {
                    let now = wall_clock();
                    let judgement = judge(&stats, now, setup.backup.max_rpo);
                    let report = ArchiveReport {
                        node: Some(primary.node.name.as_str().into()),
                        checked_at: Some(now),
                        stats: Some(stats),
                        judgement: Some(judgement),
                        error: None,
                    };
                    println!();
                    print!(
                        "{}",
                        text(&document(&report, dir, setup.backup.max_rpo), now)
                    );
                }
                Err(e) => println!("cannot read the primary's archiver: {}", describe(&e)),
            },
            Err(e) => println!("cannot reconnect to the primary: {}", describe(&e)),
        },
        None => println!("no node answered as the primary: its archiving is not shown"),
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn reach(node: &NodeAddress, credentials: &Credentials) -> Result<Reached, String> {
    let client = node
        .connect(credentials, None, "meridian")
        .await
        .map_err(|e| describe(&e))?;
    let in_recovery: bool = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(|e| describe(&e))?
        .get(0);
    // Superusers and pg_read_all_settings only: without it, no owner is learnt from it.
    let data_directory = client
        .query_one("SELECT current_setting('data_directory')", &[])
        .await
        .ok()
        .map(|row| PathBuf::from(row.get::<_, String>(0)));
    Ok(Reached {
        node: node.clone(),
        client,
        in_recovery,
        data_directory,
    })
}

/// Creates `dir` when missing, for `owner` (a data directory's owner: the servers' OS user),
/// readable and writable by it alone; says what it did or found.
fn archive_directory(
    dir: &Path,
    owner: Option<(u32, u32)>,
    dry_run: bool,
) -> anyhow::Result<String> {
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => {
            anyhow::bail!(
                "archive directory {}: exists and is not a directory ([backup] wal_archive)",
                dir.display()
            )
        }
        Ok(meta) => {
            let writable = match owner {
                None => true,
                Some((uid, gid)) => {
                    let mode = meta.permissions().mode();
                    (meta.uid() == uid && mode & 0o200 != 0)
                        || (meta.gid() == gid && mode & 0o020 != 0)
                        || mode & 0o002 != 0
                }
            };
            Ok(if writable {
                format!("archive directory {}: exists", dir.display())
            } else {
                format!(
                    "archive directory {}: exists, but the servers' OS user (uid {}) cannot \
                     write it: chown it to that user",
                    dir.display(),
                    owner.map_or(0, |(uid, _)| uid)
                )
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if dry_run {
                return Ok(format!(
                    "archive directory {}: would be created",
                    dir.display()
                ));
            }
            std::fs::create_dir_all(dir).with_context(|| {
                format!(
                    "archive directory {}: cannot create it ([backup] wal_archive)",
                    dir.display()
                )
            })?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).with_context(
                || format!("archive directory {}: cannot set its mode", dir.display()),
            )?;
            match owner {
                Some((uid, gid)) => {
                    std::os::unix::fs::chown(dir, Some(uid), Some(gid)).with_context(|| {
                        format!(
                            "archive directory {}: created, but cannot give it to the servers' \
                             OS user (uid {uid}): chown it to that user",
                            dir.display()
                        )
                    })?;
                    Ok(format!(
                        "archive directory {}: created for the servers' OS user (uid {uid})",
                        dir.display()
                    ))
                }
                None => Ok(format!(
                    "archive directory {}: created; no data directory on this host tells the \
                     servers' OS user: make sure it can write there",
                    dir.display()
                )),
            }
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "archive directory {}: cannot look at it ([backup] wal_archive)",
            dir.display()
        ))),
    }
}

fn describe_change(done: &Configured, node: &Reached, dry_run: bool) -> String {
    let mut text = if done.changes.is_empty() {
        "already set".to_owned()
    } else {
        format!(
            "{} {}",
            if dry_run { "would set" } else { "set" },
            done.changes.join(", ")
        )
    };
    if done.restart_needed {
        let data = node.node.data_dir.as_ref().or(node.data_directory.as_ref());
        text.push_str(&match data {
            Some(data) => format!(
                "; needs a restart for archive_mode (pg_ctl restart -D {})",
                data.display()
            ),
            None => "; needs a restart of its server for archive_mode".to_owned(),
        });
    }
    text
}

/// Whether every directory above `path` can be searched, and `path` executed, by anyone.
fn executable_by_anyone(path: &Path) -> bool {
    path.ancestors().all(|p| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    })
}

/// `meridian backup status [-c FILE] [--json]`.
pub fn status(config_path: Option<&Path>, json: bool) -> ExitCode {
    let setup = match load(config_path) {
        Ok(setup) => setup,
        Err(code) => return code,
    };
    let dir = setup
        .backup
        .wal_archive
        .clone()
        .unwrap_or_else(|| PathBuf::from("(none: [backup] wal_archive is not set)"));
    let result = block_on(async {
        let located = locate::locate(&setup.config, Want::Primary).await?;
        let stats = read_stats(&located.client)
            .await
            .map_err(|e| anyhow::anyhow!("{}: {}", located.node.name, describe(&e)))?;
        anyhow::Ok((located.node.name, stats))
    });
    let (node, stats) = match result.and_then(|r| r) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("meridian: cannot read the primary's archiving: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let now = wall_clock();
    let judgement = judge(&stats, now, setup.backup.max_rpo);
    let ok = judgement.state == ArchiveState::Healthy;
    let report = ArchiveReport {
        node: Some(node.as_str().into()),
        checked_at: Some(now),
        stats: Some(stats),
        judgement: Some(judgement),
        error: None,
    };
    let document = document(&report, &dir, setup.backup.max_rpo);
    if json {
        match serde_json::to_string_pretty(&document) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("meridian: cannot encode the status: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", text(&document, now));
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The status for people, one fact a line.
fn text(document: &Archiving, now: Timestamp) -> String {
    let ago = |at: Option<u64>| {
        at.map(|ms| format!(", {} ago", seconds(now.since(Timestamp(ms)))))
            .unwrap_or_default()
    };
    let mut out = format!(
        "WAL archiving of {}: {}\n",
        document.node.as_deref().unwrap_or("the primary"),
        document.state
    );
    let mut line = |label: &str, value: String| out.push_str(&format!("  {label:<15}{value}\n"));
    line(
        "RPO",
        format!(
            "{} (max {})",
            document
                .rpo_seconds
                .map_or("unknown".to_owned(), |s| seconds(Duration::from_secs_f64(
                    s
                ))),
            seconds(Duration::from_secs_f64(document.max_rpo_seconds))
        ),
    );
    line(
        "last archived",
        match &document.last_archived_wal {
            Some(wal) => format!("{wal}{}", ago(document.last_archived_at_ms)),
            None => "none".to_owned(),
        },
    );
    line(
        "failures",
        match (&document.last_failed_wal, document.failed_count) {
            (Some(wal), Some(n)) => {
                format!("{n}, last for {wal}{}", ago(document.last_failed_at_ms))
            }
            (_, n) => n.unwrap_or(0).to_string(),
        },
    );
    if let Some(n) = document.unarchived_segments {
        line("unarchived", format!("{n} whole segment(s)"));
    }
    if let Some(wal) = &document.current_wal {
        line("writing", wal.clone());
    }
    line("archive", document.archive_dir.clone());
    if let Some(detail) = &document.detail {
        out.push_str(&format!("  {detail}\n"));
    }
    out
}

/// `12 s`, `4 min 5 s`, `2 h 3 min`.
fn seconds(duration: Duration) -> String {
    let s = duration.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_directory_is_created_private_and_a_file_refused() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("a/b");
        let me = std::fs::metadata(base.path()).unwrap();
        let said = archive_directory(&dir, Some((me.uid(), me.gid())), true).unwrap();
        assert!(said.contains("would be created") && !dir.exists(), "{said}");
        let said = archive_directory(&dir, Some((me.uid(), me.gid())), false).unwrap();
        assert!(said.contains("created for"), "{said}");
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        assert!(
            archive_directory(&dir, None, false)
                .unwrap()
                .ends_with("exists")
        );

        let file = base.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let refused = archive_directory(&file, None, false).unwrap_err();
        assert!(refused.to_string().contains("not a directory"), "{refused}");
    }

    #[test]
    fn an_unwritable_directory_is_named() {
        let base = tempfile::tempdir().unwrap();
        std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let meta = std::fs::metadata(base.path()).unwrap();
        // Another user, in another group.
        let other = (meta.uid() + 1, meta.gid() + 1);
        let said = archive_directory(base.path(), Some(other), false).unwrap();
        assert!(said.contains("cannot write it"), "{said}");
    }

    #[test]
    fn the_document_of_a_failed_check_is_unknown_with_its_error() {
        let report = ArchiveReport {
            node: Some("pg1".into()),
            error: Some("cannot connect".into()),
            ..ArchiveReport::default()
        };
        let document = document(&report, Path::new("/srv/wal"), Duration::from_secs(300));
        assert_eq!(document.state, "unknown");
        assert_eq!(document.error.as_deref(), Some("cannot connect"));
        assert_eq!(document.rpo_seconds, None);
        assert!(text(&document, Timestamp(0)).contains("RPO            unknown (max 5 min 0 s)"));
    }
}
