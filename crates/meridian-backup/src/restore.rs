//! `meridian restore`: a stored base backup into a new data directory, verified before the
//! target is touched, recovered through the WAL archive to the latest point, a time or an LSN,
//! promoted, started, and watched until it accepts writes.
//!
//! The order matters: the backup is fetched, checksummed, unpacked and checked with
//! `pg_verifybackup` in a work directory beside the target; only then is a non-empty target
//! (with `--force`) replaced, by a rename on the same file system. The restored server's
//! settings are made safe for a copy living next to the original: it does not archive (its new
//! timeline would otherwise land in the cluster's archive), it follows no primary, waits for
//! no synchronous standby, and listens on the port given.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use meridian_control::archiving::restore_command;
use meridian_control::credentials::Credentials;
use meridian_control::locate::connect;
use meridian_core::backups::{NoBackup, Target, choose};
use meridian_tls::ServerTls;

use crate::catalog::{self, Backup, Kind};
use crate::programs::{Programs, ServerUser, run, tail};
use crate::store::Store;
use crate::verify;

/// What a restore is asked to do.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// A backup id, or `latest`: the newest that can reach the target.
    pub backup: String,
    /// Where recovery stops.
    pub target: Target,
    /// The target data directory.
    pub to: PathBuf,
    /// Replace a non-empty target.
    pub force: bool,
    /// The WAL archive to recover from; without it the backup restores to its own end.
    pub wal_archive: Option<PathBuf>,
    /// The `meridian` the server runs as `restore_command`.
    pub meridian_bin: PathBuf,
    /// The port the restored server listens on.
    pub port: u16,
    /// Start the server and wait for it (else leave it configured, stopped).
    pub start: bool,
    /// Who runs it.
    pub server_user: ServerUser,
    /// Credentials to log in to the restored server with (the source's roles came along).
    pub credentials: Credentials,
    /// How long recovery may take.
    pub timeout: Duration,
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The backup restored.
    pub backup: Backup,
    /// Fetching, checking and unpacking it.
    pub fetch: Duration,
    /// From starting the server to its accepting writes (zero when not started).
    pub recovery: Duration,
    /// Everything.
    pub total: Duration,
    /// The checks passed.
    pub checks: Vec<String>,
    /// The server's timeline once promoted.
    pub timeline: Option<u32>,
    /// The last transaction replayed (its commit time), when recovery replayed any.
    pub replayed_to: Option<String>,
}

/// The backup `options` ask for, among `backups`.
pub fn select(backups: &[Backup], options: &RestoreOptions) -> anyhow::Result<Backup> {
    let mut restorable = Vec::new();
    for backup in backups {
        if let Some(r) = backup.restorable()? {
            restorable.push(r);
        }
    }
    if options.backup != "latest" {
        let backup = backups
            .iter()
            .find(|b| b.id == options.backup)
            .with_context(|| {
                format!(
                    "no backup {} (meridian backup list shows them)",
                    options.backup
                )
            })?;
        if backup.kind != Kind::Physical {
            bail!(
                "backup {} is logical (pg_dump): restore it with pg_restore; meridian restore \
                 needs a physical backup",
                backup.id
            );
        }
        let r = backup.restorable()?.expect("physical");
        if choose(std::slice::from_ref(&r), options.target).is_err() {
            bail!(
                "backup {} ended at {} ({}), after the recovery target: choose an older backup \
                 or --backup latest",
                backup.id,
                backup.stopped_at,
                backup.stop_lsn
            );
        }
        return Ok(backup.clone());
    }
    match choose(&restorable, options.target) {
        Ok(chosen) => Ok(backups
            .iter()
            .find(|b| b.id == chosen.id)
            .expect("chosen among them")
            .clone()),
        Err(NoBackup::Empty) => bail!("there is no physical backup to restore"),
        Err(NoBackup::TooEarly { earliest }) => bail!(
            "every backup ended after the recovery target; the earliest, {}, ended at {}",
            earliest.id,
            backups
                .iter()
                .find(|b| b.id == earliest.id)
                .map(|b| b.stopped_at.as_str())
                .unwrap_or("?")
        ),
    }
}

/// Restores as `options` say.
pub async fn restore(
    store: &Store,
    programs: &Programs,
    options: &RestoreOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<Restored> {
    let began = Instant::now();
    if options.target != Target::Latest && options.wal_archive.is_none() {
        bail!(
            "a recovery target needs the WAL archive: set [backup] wal_archive \
             (MERIDIAN_WAL_ARCHIVE_DIR) or --wal-archive"
        );
    }
    check_target(&options.to, options.force)?;
    let listing = catalog::list(store).await?;
    let backup = select(&listing.backups, options)?;
    progress(&format!(
        "restore: backup {} ({} from {}, consistent from {})",
        backup.id, backup.stopped_at, backup.node, backup.stop_lsn
    ));

    let parent = parent_of(&options.to)?;
    let work = tempfile::Builder::new()
        .prefix(".meridian-restore-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot make a work directory in {}", parent.display()))?;
    let fetched = verify::fetch(store, &backup, programs, work.path()).await?;
    let data = fetched
        .data
        .context("a physical backup unpacks a data directory")?;
    let fetch = began.elapsed();
    progress(&format!(
        "restore: fetched and verified in {:.1} s",
        fetch.as_secs_f64()
    ));

    if options.to.exists() {
        std::fs::remove_dir_all(&options.to)
            .with_context(|| format!("cannot empty {}", options.to.display()))?;
    }
    std::fs::rename(&data, &options.to).with_context(|| {
        format!(
            "cannot move the restored data into {}",
            options.to.display()
        )
    })?;
    configure(&options.to, &backup, options)?;
    std::fs::set_permissions(
        &options.to,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .with_context(|| format!("cannot restrict {}", options.to.display()))?;
    options.server_user.give_tree(&options.to)?;
    if !options.start {
        return Ok(Restored {
            backup,
            fetch,
            recovery: Duration::ZERO,
            total: began.elapsed(),
            checks: fetched.checks,
            timeline: None,
            replayed_to: None,
        });
    }

    let started = Instant::now();
    progress(&format!(
        "restore: starting the server on port {}",
        options.port
    ));
    let log = options.to.join("meridian-restore.log");
    let mut pg_ctl = programs.command("pg_ctl");
    // --wait: until it accepts connections, which with hot_standby is once it is consistent,
    // still recovering; the promotion is watched below.
    pg_ctl
        .args(["start", "--wait", "--pgdata"])
        .arg(&options.to)
        .arg(format!("--timeout={}", options.timeout.as_secs().max(1)))
        .arg("--log")
        .arg(&log)
        .arg("-o")
        .arg(format!("-p {}", options.port));
    options.server_user.apply(&mut pg_ctl);
    if let Err(e) = run(pg_ctl, "cannot start the restored server").await {
        let log_text = std::fs::read(&log).unwrap_or_default();
        bail!("{e:#}; its log: {}", tail(&log_text));
    }
    progress(&format!(
        "restore: consistent after {:.1} s (read-only connections accepted); replaying to the target",
        started.elapsed().as_secs_f64()
    ));
    let (timeline, replayed_to) = wait_promoted(options, programs, &log).await?;
    let recovery = started.elapsed();
    Ok(Restored {
        backup,
        fetch,
        recovery,
        total: began.elapsed(),
        checks: fetched.checks,
        timeline: Some(timeline),
        replayed_to,
    })
}

/// Refuses a non-empty target without `force`, and a running server's directory always.
fn check_target(to: &Path, force: bool) -> anyhow::Result<()> {
    if !to.exists() {
        return Ok(());
    }
    if !to.is_dir() {
        bail!("{} exists and is not a directory", to.display());
    }
    if to.join("postmaster.pid").exists() {
        bail!(
            "{} holds a running (or crashed) server (postmaster.pid): stop it first; a restore \
             never replaces a live data directory",
            to.display()
        );
    }
    let empty = std::fs::read_dir(to)
        .with_context(|| format!("cannot read {}", to.display()))?
        .next()
        .is_none();
    if !empty && !force {
        bail!(
            "{} is not empty: refusing to replace it (add --force to replace its contents)",
            to.display()
        );
    }
    Ok(())
}

fn parent_of(to: &Path) -> anyhow::Result<PathBuf> {
    let absolute = if to.is_absolute() {
        to.to_owned()
    } else {
        std::env::current_dir()
            .context("cannot read the current directory")?
            .join(to)
    };
    let parent = absolute
        .parent()
        .with_context(|| format!("{} has no parent directory", to.display()))?
        .to_owned();
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    Ok(parent)
}

/// A value in `postgresql.conf` syntax.
fn conf_value(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Writes the recovery settings into the restored directory.
fn configure(dir: &Path, backup: &Backup, options: &RestoreOptions) -> anyhow::Result<()> {
    let mut settings = vec![
        ("port", options.port.to_string()),
        ("archive_mode", conf_value("off")),
        ("primary_conninfo", conf_value("")),
        ("primary_slot_name", conf_value("")),
        ("synchronous_standby_names", conf_value("")),
    ];
    for stale in ["standby.signal", "recovery.signal", "postmaster.opts"] {
        let path = dir.join(stale);
        if path.exists() {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    if let Some(archive) = &options.wal_archive {
        settings.push((
            "restore_command",
            conf_value(&restore_command(&options.meridian_bin, archive)?),
        ));
        settings.push(("recovery_target_timeline", conf_value("latest")));
        match options.target {
            Target::Latest => {}
            Target::Time(at) => {
                let time = std::time::UNIX_EPOCH + Duration::from_millis(at.0);
                // PostgreSQL 15 refuses the RFC 3339 form ("…T…Z") here; it takes
                // "2026-12-07 15:30:00.000+00".
                let rfc3339 = humantime::format_rfc3339_millis(time).to_string();
                let postgres = rfc3339.replacen('T', " ", 1).replace('Z', "+00");
                settings.push(("recovery_target_time", conf_value(&postgres)));
                settings.push(("recovery_target_action", conf_value("promote")));
            }
            Target::Lsn(lsn) => {
                settings.push(("recovery_target_lsn", conf_value(&lsn.to_string())));
                settings.push(("recovery_target_action", conf_value("promote")));
            }
        }
        let signal = dir.join("recovery.signal");
        std::fs::write(&signal, b"")
            .with_context(|| format!("cannot write {}", signal.display()))?;
    }
    let path = dir.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    text.push_str(&format!(
        "\n# meridian restore of backup {} ({})\n",
        backup.id,
        catalog::now()
    ));
    for (name, value) in settings {
        text.push_str(&format!("{name} = {value}\n"));
    }
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Polls the restored server until it accepts writes; its timeline and last replayed commit.
async fn wait_promoted(
    options: &RestoreOptions,
    programs: &Programs,
    log: &Path,
) -> anyhow::Result<(u32, Option<String>)> {
    let deadline = Instant::now() + options.timeout;
    loop {
        let mut status = programs.command("pg_ctl");
        status.args(["status", "--pgdata"]).arg(&options.to);
        options.server_user.apply(&mut status);
        let running = status
            .output()
            .await
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !running {
            let log_text = std::fs::read(log).unwrap_or_default();
            bail!(
                "the restored server stopped during recovery: {}",
                tail(&log_text)
            );
        }
        let last_error = match connect(
            "127.0.0.1",
            options.port,
            &ServerTls::Disable,
            &options.credentials,
            None,
            "meridian-restore",
            Duration::from_secs(2),
        )
        .await
        {
            Ok(client) => {
                let row = client
                    .query_one(
                        "SELECT pg_is_in_recovery(), \
                         CASE WHEN pg_is_in_recovery() THEN NULL \
                              ELSE pg_walfile_name(pg_current_wal_lsn()) END, \
                         pg_last_xact_replay_timestamp()::text",
                        &[],
                    )
                    .await;
                match row {
                    Ok(row) if !row.get::<_, bool>(0) => {
                        let wal: String = row.get(1);
                        let timeline = u32::from_str_radix(&wal[..8], 16)
                            .context("unexpected WAL file name")?;
                        return Ok((timeline, row.get(2)));
                    }
                    Ok(_) => "still recovering".to_owned(),
                    Err(e) => e.to_string(),
                }
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            bail!(
                "the restored server did not finish recovery within {} ({last_error}); it is \
                 still running: see {}",
                humantime::format_duration(options.timeout),
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
