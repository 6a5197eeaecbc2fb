//! `meridian backup` (create, list, verify, prune) and `meridian restore`: the command-line
//! side of `meridian-backup`.
//!
//! The cluster comes from `-c FILE` or the environment, as for `meridian run`; the backup
//! location and WAL archive from `[backup]`, overridable with `--location` and
//! `--wal-archive` (which also let `list`, `verify`, `prune` and `restore` work with no
//! cluster configured at all). Exit codes: 0 done, 1 failed or refused (the message says
//! why), 2 bad configuration.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Args;
use meridian_backup::catalog::{self, Backup, Kind};
use meridian_backup::programs::{Programs, ServerUser};
use meridian_backup::restore::RestoreOptions;
use meridian_backup::{Store, logical, physical, prune, restore, verify};
use meridian_config::{Config, Environment};
use meridian_control::credentials::Credentials;
use meridian_control::locate::Want;
use meridian_core::backups::{Retention, Target};

/// Where the cluster and the backups are.
#[derive(Debug, Clone, Args)]
pub struct Place {
    /// The configuration file (TOML); without it, the environment describes the cluster.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The backup location (overrides [backup] location): a directory, file:///dir or
    /// s3://bucket/prefix.
    #[arg(long, value_name = "LOCATION")]
    pub location: Option<String>,
    /// The WAL archive directory (overrides [backup] wal_archive).
    #[arg(long, value_name = "DIR")]
    pub wal_archive: Option<PathBuf>,
}

/// `meridian backup [SUBCOMMAND]`.
#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BackupArgs {
    /// Without a subcommand: take a backup.
    #[command(subcommand)]
    pub command: Option<BackupCommand>,
    #[command(flatten)]
    pub create: CreateArgs,
    #[command(flatten)]
    pub place: Place,
}

/// What `meridian backup` does besides taking a backup.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum BackupCommand {
    /// The catalog: every complete backup, oldest first, and any incomplete one.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        place: Place,
    },
    /// Fetch a stored backup and check it again: checksums, then pg_verifybackup (physical)
    /// or pg_restore --list (logical).
    Verify {
        /// A backup id, or `latest`.
        id: String,
        #[command(flatten)]
        place: Place,
    },
    /// Apply the retention policy ([backup] keep, keep_for): delete old backups and the
    /// archived WAL no kept backup needs.
    Prune {
        /// Print what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        place: Place,
    },
    /// Turn on continuous WAL archiving into [backup] wal_archive on every configured node,
    /// replicas included (archive_mode, archive_command, archive_timeout by ALTER SYSTEM),
    /// creating the directory; says which nodes need a restart, then how the primary
    /// archives (docs/archiving.md).
    SetupArchiving {
        /// Say what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// The configuration file (TOML); without it, the environment describes the cluster.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// The primary's WAL archiving judged: state, RPO, last archived WAL and its age,
    /// failures. Exit code 0 healthy (idle included), 1 behind, failing or off.
    Status {
        /// JSON (the admin API's /api/database/archiving document) instead of text.
        #[arg(long)]
        json: bool,
        /// The configuration file (TOML); without it, the environment describes the cluster.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

/// `meridian backup ...`.
pub fn main(args: &BackupArgs) -> ExitCode {
    match &args.command {
        None => create(&args.place, &args.create),
        Some(BackupCommand::List { json, place }) => list(place, *json),
        Some(BackupCommand::Verify { id, place }) => verify(place, id),
        Some(BackupCommand::Prune { dry_run, place }) => prune(place, *dry_run),
        Some(BackupCommand::SetupArchiving { dry_run, config }) => {
            crate::archiving::setup_archiving(config.as_deref(), *dry_run)
        }
        Some(BackupCommand::Status { json, config }) => {
            crate::archiving::status(config.as_deref(), *json)
        }
    }
}

/// `meridian backup` with no subcommand: take a backup.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// Take it from the most caught-up streaming replica instead of the primary.
    #[arg(long, value_name = "ROLE", value_parser = ["primary", "replica"], default_value = "primary")]
    pub from: String,
    /// A logical backup: pg_dump -Fc of every database, and the roles.
    #[arg(long)]
    pub logical: bool,
    /// Where to stage it before storing (default: the system's temporary directory).
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<PathBuf>,
    /// Print the catalog entry as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `meridian restore`.
#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub place: Place,
    /// The backup: an id from `meridian backup list`, or `latest` (the newest that can reach
    /// the target).
    #[arg(long, value_name = "ID", default_value = "latest")]
    pub backup: String,
    /// Recover up to this time (RFC 3339, e.g. 2026-12-07T15:30:00Z): every transaction
    /// committed before it, none after.
    #[arg(long, value_name = "TIME", conflicts_with = "target_lsn")]
    pub target_time: Option<String>,
    /// Recover up to this WAL position (e.g. 0/3000060).
    #[arg(long, value_name = "LSN")]
    pub target_lsn: Option<String>,
    /// The data directory to restore into (created; must be empty unless --force).
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// Replace a non-empty target directory.
    #[arg(long)]
    pub force: bool,
    /// The port the restored server listens on.
    #[arg(long, default_value_t = 5433)]
    pub port: u16,
    /// Restore and configure, but do not start the server.
    #[arg(long)]
    pub no_start: bool,
    /// The OS user the server runs as (needed when running as root; MERIDIAN_PG_USER).
    #[arg(long, value_name = "USER")]
    pub os_user: Option<String>,
    /// The role to check the restored server with (default: the configuration's monitor
    /// role, else postgres).
    #[arg(long, value_name = "ROLE")]
    pub user: Option<String>,
    /// How long recovery may take.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// What the commands found in the configuration and flags.
struct Setup {
    config: Option<Config>,
    store: Store,
    wal_archive: Option<PathBuf>,
    retention: Retention,
    meridian_bin: Option<PathBuf>,
    programs: Programs,
}

/// Reads the configuration (required with `need_cluster`) and opens the location.
fn setup(place: &Place, need_cluster: bool) -> Result<Setup, ExitCode> {
    let env = Environment::from_process();
    let config = match Config::load(place.config.as_deref(), &env) {
        Ok(config) => Some(config),
        Err(errors) if need_cluster || place.config.is_some() || place.location.is_none() => {
            eprintln!("meridian: {errors}");
            return Err(ExitCode::from(2));
        }
        Err(_) => None,
    };
    let backup = config.as_ref().and_then(|c| c.backup.clone());
    let Some(location) = place
        .location
        .clone()
        .or_else(|| backup.as_ref().map(|b| b.location.clone()))
    else {
        eprintln!(
            "meridian: no backup location: set [backup] location (MERIDIAN_BACKUP_LOCATION) or \
             pass --location"
        );
        return Err(ExitCode::from(2));
    };
    let store = Store::open(&location).map_err(fail)?;
    let pg_bin = config.as_ref().and_then(|c| c.failover.pg_bin.clone());
    let programs = Programs::locate(pg_bin.as_deref()).map_err(fail)?;
    Ok(Setup {
        // The server runs restore_command from its data directory: paths given relative to
        // here (a flag, the environment) are made absolute.
        wal_archive: place
            .wal_archive
            .clone()
            .or_else(|| backup.as_ref().and_then(|b| b.wal_archive.clone()))
            .map(std::path::absolute)
            .transpose()
            .map_err(|e| fail(anyhow::anyhow!("cannot resolve the WAL archive path: {e}")))?,
        retention: Retention {
            keep: backup.as_ref().and_then(|b| b.keep),
            keep_for: backup.as_ref().and_then(|b| b.keep_for),
        },
        meridian_bin: backup.as_ref().and_then(|b| b.meridian_bin.clone()),
        config,
        store,
        programs,
    })
}

fn fail(error: anyhow::Error) -> ExitCode {
    eprintln!("meridian: {error:#}");
    ExitCode::FAILURE
}

fn block_on<T>(work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?
        .block_on(work)
}

fn progress(line: &str) {
    eprintln!("{line}");
}

/// `meridian backup [--from replica] [--logical]`.
pub fn create(place: &Place, args: &CreateArgs) -> ExitCode {
    let setup = match setup(place, true) {
        Ok(setup) => setup,
        Err(code) => return code,
    };
    let config = setup.config.as_ref().expect("required");
    let from = if args.from == "replica" {
        Want::Replica
    } else {
        Want::Primary
    };
    let scratch = args.scratch.clone().unwrap_or_else(std::env::temp_dir);
    let result = block_on(async {
        if args.logical {
            logical::take(
                config,
                &setup.store,
                &setup.programs,
                from,
                &scratch,
                &progress,
            )
            .await
        } else {
            physical::take(
                config,
                &setup.store,
                &setup.programs,
                from,
                &scratch,
                &progress,
            )
            .await
        }
    });
    match result {
        Ok(backup) if args.json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&backup).expect("encodes")
            );
            ExitCode::SUCCESS
        }
        Ok(backup) => {
            println!(
                "backup {} stored in {}: {} from {} (timeline {}, {} to {}), {} of data in {}",
                backup.id,
                setup.store,
                kind(&backup),
                backup.node,
                backup.timeline,
                backup.start_lsn,
                backup.stop_lsn,
                bytes(backup.data_bytes),
                bytes(backup.stored_bytes()),
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn kind(backup: &Backup) -> &'static str {
    match backup.kind {
        Kind::Physical => "physical",
        Kind::Logical => "logical",
    }
}

/// A byte count for people.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `meridian backup list`.
pub fn list(place: &Place, json: bool) -> ExitCode {
    let setup = match setup(place, false) {
        Ok(setup) => setup,
        Err(code) => return code,
    };
    let listing = match block_on(catalog::list(&setup.store)) {
        Ok(listing) => listing,
        Err(e) => return fail(e),
    };
    if json {
        let value = serde_json::json!({
            "location": setup.store.location(),
            "backups": listing.backups,
            "incomplete": listing.incomplete,
        });
        println!("{value:#}");
        return ExitCode::SUCCESS;
    }
    if listing.backups.is_empty() {
        println!("no backup in {}", setup.store);
    } else {
        println!(
            "{:<20}  {:<8}  {:<12}  {:<24}  {:>3}  {:<23}  {:>10}  {:>10}",
            "id", "kind", "node", "consistent at", "tli", "wal", "data", "stored"
        );
        for b in &listing.backups {
            println!(
                "{:<20}  {:<8}  {:<12}  {:<24}  {:>3}  {:<23}  {:>10}  {:>10}",
                b.id,
                kind(b),
                b.node,
                b.stopped_at,
                b.timeline,
                format!("{}..{}", b.start_lsn, b.stop_lsn),
                bytes(b.data_bytes),
                bytes(b.stored_bytes()),
            );
        }
    }
    for name in &listing.incomplete {
        println!("{name}: incomplete (no catalog entry: interrupted, or being written)");
    }
    ExitCode::SUCCESS
}

/// `meridian backup verify ID|latest`.
pub fn verify(place: &Place, id: &str) -> ExitCode {
    let setup = match setup(place, false) {
        Ok(setup) => setup,
        Err(code) => return code,
    };
    let result = block_on(verify::verify(&setup.store, id, &setup.programs));
    match result {
        Ok((backup, fetched)) => {
            for check in &fetched.checks {
                println!("{check}");
            }
            println!("backup {} verified", backup.id);
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// `meridian backup prune [--dry-run]`.
pub fn prune(place: &Place, dry_run: bool) -> ExitCode {
    let setup = match setup(place, false) {
        Ok(setup) => setup,
        Err(code) => return code,
    };
    if setup.retention == Retention::default() {
        eprintln!(
            "meridian: no retention policy: set [backup] keep and/or keep_for; without one, \
             prune would keep everything"
        );
        return ExitCode::from(2);
    }
    let now = meridian_core::observation::Timestamp(catalog::millis(SystemTime::now()));
    let result = block_on(prune::prune(
        &setup.store,
        setup.wal_archive.as_deref(),
        setup.retention,
        now,
        dry_run,
    ));
    match result {
        Ok(pruned) => {
            let verb = if dry_run { "would delete" } else { "deleted" };
            for id in &pruned.deleted {
                println!("{verb} backup {id}");
            }
            println!(
                "kept {} backup(s); {verb} {} archived WAL file(s){}",
                pruned.kept.len(),
                pruned.wal_deleted.len(),
                pruned
                    .wal_horizon
                    .map(|h| format!(" (everything from {h} on is kept)"))
                    .unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// `meridian restore --backup ID|latest [--target-time T | --target-lsn L] --to DIR`.
pub fn restore(args: &RestoreArgs) -> ExitCode {
    let setup = match setup(&args.place, false) {
        Ok(setup) => setup,
        Err(code) => return code,
    };
    let options = match restore_options(&setup, args) {
        Ok(options) => options,
        Err(e) => return fail(e),
    };
    let result = block_on(restore::restore(
        &setup.store,
        &setup.programs,
        &options,
        &progress,
    ));
    match result {
        Ok(restored) => {
            for check in &restored.checks {
                println!("{check}");
            }
            print!(
                "restored backup {} into {} in {:.1} s (fetch and verify {:.1} s",
                restored.backup.id,
                args.to.display(),
                restored.total.as_secs_f64(),
                restored.fetch.as_secs_f64(),
            );
            if args.no_start {
                println!(
                    "); not started: pg_ctl start -D {} starts its recovery",
                    args.to.display()
                );
            } else {
                println!(
                    ", recovery {:.1} s)\nthe server accepts writes on port {} (timeline {}{}); \
                     stop it with pg_ctl stop -D {}",
                    restored.recovery.as_secs_f64(),
                    args.port,
                    restored.timeline.unwrap_or(0),
                    restored
                        .replayed_to
                        .map(|t| format!(", last transaction replayed committed at {t}"))
                        .unwrap_or_default(),
                    args.to.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn restore_options(setup: &Setup, args: &RestoreArgs) -> anyhow::Result<RestoreOptions> {
    let target = match (&args.target_time, &args.target_lsn) {
        (Some(time), _) => {
            let at = humantime::parse_rfc3339_weak(time).with_context(|| {
                format!("--target-time {time:?}: write an RFC 3339 time like 2026-12-07T15:30:00Z")
            })?;
            Target::Time(meridian_core::observation::Timestamp(catalog::millis(at)))
        }
        (None, Some(lsn)) => Target::Lsn(catalog::parse_lsn(lsn).context("--target-lsn")?),
        (None, None) => Target::Latest,
    };
    let credentials = match (
        &args.user,
        setup.config.as_ref().and_then(Credentials::from_config),
    ) {
        (Some(user), found) => Credentials {
            user: user.clone(),
            password: found.and_then(|c| c.password),
            database: "postgres".to_owned(),
        },
        (None, Some(found)) => found,
        (None, None) => Credentials {
            user: "postgres".to_owned(),
            password: None,
            database: "postgres".to_owned(),
        },
    };
    let meridian_bin = match &setup.meridian_bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe().context("cannot find the running meridian executable")?,
    };
    Ok(RestoreOptions {
        backup: args.backup.clone(),
        target,
        to: args.to.clone(),
        force: args.force,
        wal_archive: setup.wal_archive.clone(),
        meridian_bin,
        port: args.port,
        start: !args.no_start,
        server_user: ServerUser::resolve(args.os_user.as_deref())?,
        credentials,
        timeout: args.timeout,
    })
}

/// The catalog as the admin API shows it, from the running instance's last reading.
pub fn document(watch: &meridian_backup::watch::CatalogWatch) -> meridian_admin::model::Backups {
    use meridian_admin::model::{BackupEntry, Backups};
    let mut document = Backups {
        location: watch.location.clone(),
        backups: Vec::new(),
        incomplete: Vec::new(),
        last_physical_age_seconds: None,
        last_logical_age_seconds: None,
        checked_at_ms: None,
        error: None,
    };
    let Some(reading) = watch.last() else {
        return document;
    };
    document.checked_at_ms = Some(catalog::millis(reading.at));
    let listing = match reading.listing {
        Ok(listing) => listing,
        Err(error) => {
            document.error = Some(error);
            return document;
        }
    };
    let now = catalog::millis(SystemTime::now());
    let age = |kind: Kind| {
        listing
            .backups
            .iter()
            .filter(|b| b.kind == kind)
            .filter_map(|b| catalog::parse_time(&b.finished_at).ok())
            .max()
            .map(|at| now.saturating_sub(at.0) as f64 / 1000.0)
    };
    document.last_physical_age_seconds = age(Kind::Physical);
    document.last_logical_age_seconds = age(Kind::Logical);
    document.incomplete = listing.incomplete.clone();
    document.backups = listing
        .backups
        .iter()
        .map(|b| BackupEntry {
            id: b.id.clone(),
            kind: kind(b).to_owned(),
            node: b.node.clone(),
            from_replica: b.from_replica,
            stopped_at: b.stopped_at.clone(),
            finished_at: b.finished_at.clone(),
            timeline: b.timeline,
            start_lsn: b.start_lsn.clone(),
            stop_lsn: b.stop_lsn.clone(),
            data_bytes: b.data_bytes,
            stored_bytes: b.stored_bytes(),
        })
        .collect();
    document
}
