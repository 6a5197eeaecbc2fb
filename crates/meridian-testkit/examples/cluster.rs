//! Starts a test cluster and keeps it running for scripts (the benchmarks).
//!
//! `cluster [--replicas N] [--synchronous K] [--dir DIR] [--set NAME=VALUE]...` prints one
//! line per node, `node <name> <region> 127.0.0.1 <port>`, then `ready`, and keeps the cluster up until its
//! standard input closes or it receives SIGINT/SIGTERM; then every server is stopped.

use meridian_testkit::TestCluster;
use tokio::io::AsyncReadExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut builder = TestCluster::builder();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{arg} needs a value"))
        };
        builder = match arg.as_str() {
            "--replicas" => builder.replicas(value()?.parse()?),
            "--synchronous" => builder.synchronous(value()?.parse()?),
            "--dir" => builder.dir(value()?),
            "--set" => {
                let setting = value()?;
                let (name, value) = setting
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--set {setting}: write NAME=VALUE"))?;
                builder.setting(name, value)
            }
            other => anyhow::bail!(
                "unknown argument {other}; expected --replicas, --synchronous, --dir or --set"
            ),
        };
    }
    let cluster = builder.start().await?;
    for node in cluster.nodes() {
        println!(
            "node {} {} 127.0.0.1 {}",
            node.name(),
            node.region(),
            node.port()
        );
    }
    println!("ready");
    let stdin_closed = async {
        let mut sink = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    };
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        () = stdin_closed => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    drop(cluster);
    // Exit now: the runtime would otherwise wait at shutdown for the blocking read of stdin.
    std::process::exit(0)
}
