//! The `meridian` binary: the command line that wires the crates together.

use clap::{CommandFactory, Parser};

/// Multi-region PostgreSQL failover, routing and pooling.
///
/// Applications connect to Meridian as if it were PostgreSQL; it pools server connections,
/// sends writes to the primary and reads to replicas, and replaces a dead primary within
/// seconds.
#[derive(Debug, Parser)]
#[command(name = "meridian", version, about, long_about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    // No subcommand exists yet: show what the binary is rather than doing nothing silently.
    let _ = Cli::command().print_long_help();
}
