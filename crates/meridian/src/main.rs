//! The `meridian` binary: the command line that wires the crates together.

use clap::{CommandFactory, Parser};

/// Multi-region PostgreSQL failover, routing and pooling.
#[derive(Debug, Parser)]
#[command(name = "meridian", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    // No subcommand exists yet: show what the binary is rather than doing nothing silently.
    let _ = Cli::command().print_long_help();
}
