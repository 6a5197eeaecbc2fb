//! The `meridian` binary: the command line that wires the crates together.

mod run;
mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Multi-region PostgreSQL failover, routing and pooling.
#[derive(Debug, Parser)]
#[command(name = "meridian", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run::main(config.as_deref()),
    }
}
