//! Measures how long an etcd test cluster takes to start, and to accept writes again after its
//! leader is killed.
//!
//! `cargo run --release -p meridian-testkit --example etcd_start_time [TRIALS]` (default 10).

mod timing;

use std::time::{Duration, Instant};

use meridian_testkit::{Check, EtcdCluster, wait_until};
use timing::summary;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let trials = timing::trials()?;
    for members in [1, 3] {
        let mut times = Vec::with_capacity(trials);
        for _ in 0..trials {
            let started = Instant::now();
            let etcd = EtcdCluster::start(members).await?;
            times.push(started.elapsed());
            drop(etcd);
        }
        println!(
            "{members} member(s) healthy, {trials} starts: {}",
            summary(times)
        );
    }

    let mut times = Vec::with_capacity(trials);
    for _ in 0..trials {
        let etcd = EtcdCluster::start(3).await?;
        etcd.leader().await?.kill();
        let killed = Instant::now();
        wait_until(Duration::from_secs(30), "a write", || async {
            Check::from(
                etcd.etcdctl(&["put", "k", "v", "--command-timeout=200ms"])
                    .await,
            )
        })
        .await?;
        times.push(killed.elapsed());
    }
    println!(
        "3 members, leader killed, until an etcdctl put succeeds, {trials} trials: {}",
        summary(times)
    );
    Ok(())
}
