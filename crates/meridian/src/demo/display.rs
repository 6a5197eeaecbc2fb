//! What the demo shows while it runs: narration lines that scroll, and under them a live table
//! (throughput, reads per region, each node's role, health and lag, the current primary)
//! redrawn in place a few times a second.
//!
//! On a terminal the table is drawn with `indicatif`; when the output is a pipe or a file (CI,
//! a test) nothing is redrawn: the table's first line is printed every few seconds instead,
//! so the log stays readable.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use meridian_control::monitor::{health_str, role_str};
use meridian_core::status::ClusterStatus;
use meridian_core::topology::Health;

use crate::demo::cluster::REGIONS;
use crate::demo::workload::Log;

/// Lines of the live table: the headline, reads per region, one per region.
const LINES: usize = 2 + REGIONS.len();

/// How often the table's headline is printed when it cannot be redrawn.
const PLAIN_EVERY: Duration = Duration::from_secs(3);

/// The demo's output; clones share it.
#[derive(Debug, Clone)]
pub struct Screen {
    live: Option<(MultiProgress, Vec<ProgressBar>)>,
    last_plain: Arc<Mutex<Option<Instant>>>,
}

impl Screen {
    /// A screen on standard output: live when it is a terminal.
    pub fn new() -> Screen {
        let live = std::io::stdout().is_terminal().then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout_with_hz(8));
            let style = ProgressStyle::with_template("{msg}").unwrap_or_else(|_| {
                // The template is a constant; this arm is never taken.
                ProgressStyle::default_spinner()
            });
            let lines = (0..LINES)
                .map(|_| multi.add(ProgressBar::new_spinner().with_style(style.clone())))
                .collect();
            (multi, lines)
        });
        Screen {
            live,
            last_plain: Arc::default(),
        }
    }

    /// A narration line, above the table.
    pub fn say(&self, text: impl AsRef<str>) {
        match &self.live {
            Some((multi, _)) => {
                let _ = multi.println(text.as_ref());
            }
            None => println!("{}", text.as_ref()),
        }
    }

    /// Replaces the table.
    pub fn show(&self, table: &[String]) {
        match &self.live {
            Some((_, lines)) => {
                for (line, text) in lines.iter().zip(table) {
                    line.set_message(text.clone());
                }
            }
            None => {
                let mut last = self.last_plain.lock().unwrap_or_else(|e| e.into_inner());
                if last.is_none_or(|at| at.elapsed() >= PLAIN_EVERY)
                    && let Some(headline) = table.first()
                {
                    println!("  · {}", headline.trim_start());
                    *last = Some(Instant::now());
                }
            }
        }
    }

    /// Removes the table (before the summary).
    pub fn finish(&self) {
        if let Some((multi, lines)) = &self.live {
            for line in lines {
                line.finish_and_clear();
            }
            let _ = multi.clear();
        }
    }
}

/// Which node and region a server port belongs to.
pub type Ports = BTreeMap<u16, (String, &'static str)>;

/// The live table: `elapsed` since the workload started, the monitor's `status`, the clients'
/// `log`, counted over the last second before `now`.
pub fn table(
    elapsed: Duration,
    status: &ClusterStatus,
    log: &Log,
    ports: &Ports,
    now: Instant,
) -> Vec<String> {
    let second_ago = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
    let recent_writes = log.writes.iter().rev().take_while(|w| w.sent >= second_ago);
    let writes_per_second = recent_writes.filter(|w| w.acknowledged().is_some()).count();
    let acknowledged = log
        .writes
        .iter()
        .filter(|w| w.acknowledged().is_some())
        .count();
    let failed = log.writes.len() - acknowledged;
    let mut by_region: BTreeMap<&str, usize> = REGIONS.iter().map(|r| (r.name, 0)).collect();
    let mut reads_per_second = 0;
    for read in log.reads.iter().rev().take_while(|r| r.sent >= second_ago) {
        if let Ok(port) = read.outcome {
            reads_per_second += 1;
            if let Some((_, region)) = ports.get(&port) {
                *by_region.entry(region).or_default() += 1;
            }
        }
    }
    let reads_failed = log.reads.iter().filter(|r| r.outcome.is_err()).count();
    let primary = match status.primary.and_then(|id| status.node(id)) {
        Some(node) if status.paused => format!("{} (failover under way)", node.name),
        Some(node) => node.name.to_string(),
        None => "none".to_owned(),
    };
    let mut table = vec![
        format!(
            "{:>6.1} s │ primary {primary}, generation {} │ writes {writes_per_second}/s ({acknowledged} acknowledged, {failed} failed) │ reads {reads_per_second}/s ({reads_failed} failed)",
            elapsed.as_secs_f64(),
            status.generation,
        ),
        format!(
            "         │ reads/s by region: {}",
            by_region
                .iter()
                .map(|(region, n)| format!("{region} {n}"))
                .collect::<Vec<_>>()
                .join(" · ")
        ),
    ];
    for region in REGIONS {
        let nodes: Vec<String> = status
            .nodes
            .iter()
            .filter(|n| &*n.region == region.name)
            .map(|n| {
                let state = match n.health {
                    Health::Down => "down".to_owned(),
                    _ if n.needs_rejoin => "needs rejoin".to_owned(),
                    _ => match (&n.lag, status.primary == Some(n.id)) {
                        (_, true) => "primary".to_owned(),
                        (Some(lag), false) => format!(
                            "{} lag {} {:.1} s",
                            role_str(n.role),
                            bytes(lag.bytes),
                            lag.seconds.as_secs_f64()
                        ),
                        (None, false) => format!("{} {}", role_str(n.role), health_str(n.health)),
                    },
                };
                format!("{} {state}", n.name)
            })
            .collect();
        table.push(format!("{:>8} │ {}", region.name, nodes.join(" · ")));
    }
    table
}

/// `1234` → `1.2 KiB`.
pub fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1_048_576), "3.0 MiB");
    }
}
