//! The `meridian` binary: the command line that wires the crates together.

mod analyze;
mod archiving;
mod backups;
mod cli;
mod demo;
mod migrate;
mod operator;
mod performance;
mod run;
mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use meridian_backup::wal_archive;

/// Multi-region PostgreSQL failover, routing and pooling.
#[derive(Debug, Parser)]
#[command(name = "meridian", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a local three-region PostgreSQL cluster with Meridian in front of it, run a
    /// workload, kill the primary, then its whole region, and show what the clients saw.
    ///
    /// Needs the PostgreSQL server binaries (apt-get install -y postgresql); finds them with
    /// pg_config or MERIDIAN_PG_BIN. Exit code 0 when no acknowledged write was lost and every
    /// failover completed.
    #[command(args_override_self = true)]
    Demo(demo::DemoArgs),
    /// Run the proxy in front of the configured cluster.
    ///
    /// Configuration comes from the file given with -c and the environment (MERIDIAN_*
    /// overrides). Without a file, DATABASE_URL (plus DATABASE_REPLICA_URL[S]) or
    /// DB_<REGION>_URL variables describe the cluster.
    Run {
        /// The configuration file (TOML).
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Planned change of primary, losing nothing: pause writes, fence the primary, wait for
    /// the new one to replay everything, promote it, and turn the old one into its replica.
    Switchover {
        /// The replica to promote (default: the best one).
        #[arg(long, value_name = "NODE")]
        to: Option<String>,
        #[command(flatten)]
        api: cli::ApiArgs,
    },
    /// Move the primary to the best replica of a region (a switchover while the primary
    /// answers, a failover when it does not).
    Failover {
        /// The region.
        #[arg(long)]
        region: String,
        #[command(flatten)]
        api: cli::ApiArgs,
    },
    /// Turn an old primary into a replica of the current primary (pg_rewind for nodes whose
    /// data_dir Meridian manages, the rejoin_command for others).
    Rejoin {
        /// The node.
        node: String,
        #[command(flatten)]
        api: cli::ApiArgs,
    },
    /// What Meridian makes of a statement: its class, a session pin, where the routing
    /// policy (from -c FILE or the environment; the defaults without either) sends it and
    /// why, and its complexity. With --live, the running Meridian answers against its live
    /// cluster.
    AnalyzeQuery {
        /// The SQL text (one statement or a batch).
        sql: String,
        /// The configuration file (TOML).
        #[arg(short, long, value_name = "FILE", conflicts_with = "live")]
        config: Option<PathBuf>,
        /// The session's `SET meridian.route` (auto, primary or replica).
        #[arg(long, default_value = "auto", value_parser = parse_route)]
        route: meridian_core::routing::Target,
        /// Ask the running Meridian (--url) instead of analysing locally.
        #[arg(long)]
        live: bool,
        #[command(flatten)]
        api: cli::ApiArgs,
    },
    /// A full report as JSON (redacted configuration, topology, alerts, history, probes,
    /// performance, pools), e.g. `meridian export > report.json`.
    Export {
        #[command(flatten)]
        api: cli::ApiArgs,
    },
    /// Probe every node now and show the topology.
    HealthCheck {
        #[command(flatten)]
        api: cli::ApiArgs,
    },
    /// Rebuild the pools and probe connections to a region (after a network change).
    Reconnect {
        /// The region.
        region: String,
        #[command(flatten)]
        api: cli::ApiArgs,
    },
    /// Replace every pooled server connection gracefully (idle ones now, busy ones when
    /// their transaction ends).
    RefreshConnections {
        #[command(flatten)]
        api: cli::ApiArgs,
    },
    /// The alerts raised, newest first.
    Alerts {
        /// Only those not resolved yet.
        #[arg(long)]
        active: bool,
        /// Only this severity and above: low, medium, high or critical.
        #[arg(long)]
        severity: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        api: cli::ApiArgs,
    },
    /// Every node of every region: role, health, replication lag, probe latency.
    Status {
        #[command(flatten)]
        api: cli::ApiArgs,
    },
    /// PostgreSQL's archive_command: archive_command = 'meridian wal-archive %p %f --dir DIR'.
    ///
    /// Atomic (temporary name, fsync, rename), idempotent (the same segment again is
    /// success; different content is an error that keeps the archived one), with a SHA-256
    /// checksum beside each file.
    WalArchive {
        /// The file to archive (%p).
        path: PathBuf,
        /// Its name (%f).
        name: String,
        /// The archive directory.
        #[arg(long, env = "MERIDIAN_WAL_ARCHIVE_DIR")]
        dir: PathBuf,
    },
    /// PostgreSQL's restore_command: restore_command = 'meridian wal-restore %f %p --dir DIR'.
    ///
    /// Verifies the file's checksum before handing it over; exit code 1 when it is not in the
    /// archive (PostgreSQL's normal end of recovery) or is corrupted.
    WalRestore {
        /// The name asked for (%f).
        name: String,
        /// Where PostgreSQL wants it (%p).
        path: PathBuf,
        /// The archive directory.
        #[arg(long, env = "MERIDIAN_WAL_ARCHIVE_DIR")]
        dir: PathBuf,
    },
    /// Versioned schema migrations from a directory of SQL files, on the primary: `up`,
    /// `down`, `status`, with --dry-run (docs/migrations.md).
    ///
    /// One run at a time (an advisory lock), each file in a transaction with its version row
    /// unless marked `-- meridian:no-transaction`, checksums refusing changed migrations.
    /// Exit code 0 done, 1 refused or failed, 2 unusable configuration.
    Migrate(migrate::MigrateArgs),
    /// Take a base backup of the primary (or --from replica; --logical for pg_dump),
    /// verified and checksummed, into the backup location; or list, verify or prune them.
    Backup(backups::BackupArgs),
    /// Restore a backup into a new data directory, recover it through the WAL archive to
    /// the latest point, a time or an LSN, and start it.
    Restore(backups::RestoreArgs),
    /// The failovers and switchovers recorded, newest first.
    History {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        api: cli::ApiArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run::main(config.as_deref()),
        Command::Demo(args) => demo::main(args),
        Command::Switchover { to, api } => cli::switchover(&api, to.as_deref()),
        Command::Failover { region, api } => cli::failover(&api, &region),
        Command::Rejoin { node, api } => cli::rejoin(&api, &node),
        Command::History { limit, api } => cli::history(&api, limit),
        Command::Migrate(args) => migrate::main(args),
        Command::Status { api } => cli::status(&api),
        Command::Alerts {
            active,
            severity,
            limit,
            api,
        } => cli::alerts(&api, active, severity.as_deref(), limit),
        Command::AnalyzeQuery {
            sql,
            live: true,
            api,
            ..
        } => cli::analyze_live(&api, &sql),
        Command::AnalyzeQuery {
            sql, config, route, ..
        } => analyze::main(config.as_deref(), route, &sql),
        Command::Export { api } => cli::export(&api),
        Command::HealthCheck { api } => cli::health_check(&api),
        Command::Reconnect { region, api } => cli::reconnect(&api, &region),
        Command::RefreshConnections { api } => cli::refresh_connections(&api),
        Command::Backup(args) => backups::main(&args),
        Command::Restore(args) => backups::restore(&args),
        Command::WalArchive { path, name, dir } => {
            report(wal_archive::archive(&path, &name, &dir), "wal-archive")
        }
        Command::WalRestore { name, path, dir } => {
            report(wal_archive::restore(&name, &path, &dir), "wal-restore")
        }
    }
}

/// Exit code 0, or 1 with the error on stderr (PostgreSQL logs it).
fn report(result: Result<(), wal_archive::ArchiveError>, command: &str) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meridian {command}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_route(text: &str) -> Result<meridian_core::routing::Target, String> {
    meridian_core::routing::Target::parse(text.as_bytes())
        .ok_or_else(|| format!("{text:?}: must be auto, primary or replica"))
}
