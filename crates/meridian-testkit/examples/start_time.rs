//! Measures how long a cluster of one primary and two streaming replicas takes to start.
//!
//! `cargo run --release -p meridian-testkit --example start_time [TRIALS]` (default 10). The
//! first start builds the template if it is not cached yet; it is reported apart.

mod timing;

use std::time::{Duration, Instant};

use meridian_testkit::{Kit, TestCluster};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let trials = timing::trials()?;
    let started = Instant::now();
    Kit::get()?;
    println!(
        "kit ready (template cached or built) in {:?}",
        started.elapsed()
    );

    let mut times: Vec<Duration> = Vec::with_capacity(trials);
    for _ in 0..trials {
        let started = Instant::now();
        let cluster = TestCluster::builder().replicas(2).start().await?;
        times.push(started.elapsed());
        drop(cluster);
    }
    println!(
        "1 primary + 2 replicas streaming, {trials} starts: {}",
        timing::summary(times)
    );
    Ok(())
}
