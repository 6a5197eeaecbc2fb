//! The demo's results: what each failover did (from Meridian's record) and what the clients saw
//! (from [`report`]), as the summary table and as `summary.json`.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use meridian_control::store::FailoverRecord;
use serde_json::{Value, json};

use crate::demo::display::Ports;
use crate::demo::report::{self, Figures, Kill};
use crate::demo::workload::Log;

/// One failover as the demo caused and watched it.
#[derive(Debug)]
pub struct Watched {
    /// What happened, for the table: "primary killed", "region us-east lost".
    pub label: String,
    /// The servers killed.
    pub killed: Vec<String>,
    pub kill: Kill,
    /// Meridian's record of the failover, if one started.
    pub record: Option<FailoverRecord>,
}

impl Watched {
    fn completed(&self) -> bool {
        self.record
            .as_ref()
            .is_some_and(|r| r.outcome == "completed")
    }
}

/// A rejoin: the node, and how long it took or why it failed.
pub type Rejoin = (String, Result<Duration, String>);

/// Everything the summary says.
#[derive(Debug)]
pub struct Results {
    failovers: Vec<(Watched, Figures, bool)>,
    rejoins: Vec<Rejoin>,
    acknowledged: usize,
    lost: Vec<(u32, i64)>,
    /// Clients that had no answer when the workload stopped.
    unanswered: Vec<String>,
    primary: String,
    reads_by_region: BTreeMap<&'static str, usize>,
}

impl Results {
    /// Results from the failovers `watched`, the clients' `log` (stopped at `ended`), the rows
    /// `present` on the final `primary` at the end, and which port is which node (`ports`).
    pub fn new(
        watched: Vec<Watched>,
        log: &Log,
        ended: Instant,
        present: &HashSet<(u32, i64)>,
        rejoins: Vec<Rejoin>,
        primary: String,
        ports: &Ports,
    ) -> Results {
        let kills: Vec<Kill> = watched.iter().map(|w| w.kill).collect();
        let failovers = watched
            .into_iter()
            .enumerate()
            .map(|(i, w)| {
                let figures = report::figures(&log.writes, &log.reads, &kills, i, ended, present);
                let passed = report::passed(w.completed(), &figures);
                (w, figures, passed)
            })
            .collect();
        let mut reads_by_region = BTreeMap::new();
        for read in &log.reads {
            if let Ok(port) = read.outcome
                && let Some((_, region)) = ports.get(&port)
            {
                *reads_by_region.entry(*region).or_default() += 1;
            }
        }
        Results {
            failovers,
            rejoins,
            acknowledged: log
                .writes
                .iter()
                .filter(|w| w.acknowledged().is_some())
                .count(),
            lost: report::lost(&log.writes, present),
            unanswered: log.unanswered.clone(),
            primary,
            reads_by_region,
        }
    }

    /// Every failover passed, every rejoin worked, every client had its answer, nothing
    /// acknowledged was lost.
    pub fn passed(&self) -> bool {
        self.failovers.iter().all(|(_, _, passed)| *passed)
            && self.rejoins.iter().all(|(_, result)| result.is_ok())
            && self.unanswered.is_empty()
            && self.lost.is_empty()
    }

    /// The summary table and what follows it.
    pub fn text(&self) -> String {
        let mut out = String::from("\nSummary\n");
        let _ = writeln!(
            out,
            "  {:<22} {:<24} {:>11} {:>13} {:>13} {:>13} {:>13} {:>5}  verdict",
            "failover",
            "primary",
            "writes back",
            "slowest write",
            "reads failed",
            "writes failed",
            "acked before",
            "lost",
        );
        let seconds = |d: Option<Duration>| {
            d.map(|d| format!("{:.2} s", d.as_secs_f64()))
                .unwrap_or_else(|| "never".into())
        };
        for (i, (w, f, passed)) in self.failovers.iter().enumerate() {
            let primaries = w
                .record
                .as_ref()
                .map(|r| {
                    format!(
                        "{} → {}",
                        r.old_primary.as_deref().unwrap_or("?"),
                        r.new_primary.as_deref().unwrap_or("?")
                    )
                })
                .unwrap_or_else(|| "no failover".into());
            let _ = writeln!(
                out,
                "  {:<22} {:<24} {:>11} {:>13} {:>13} {:>13} {:>13} {:>5}  {}",
                format!("{}. {}", i + 1, w.label),
                primaries,
                seconds(f.write_gap),
                seconds(f.slowest_write),
                format!("{} of {}", f.reads_failed, f.reads),
                f.writes_failed,
                f.acknowledged,
                f.lost,
                if *passed { "PASS" } else { "FAIL" }
            );
        }
        let _ = writeln!(
            out,
            "\n  writes back: from the kill to the first write sent after it that committed (held by \
             Meridian meanwhile, not failed); slowest write: the longest any write sent after the \
             kill waited.\n  writes failed: statements in flight when their server died (08007: \
             the client is told the outcome is unknown, never silently dropped); acked before: the \
             writes acknowledged before this kill that it could have lost."
        );
        for (node, result) in &self.rejoins {
            let _ = match result {
                Ok(took) => writeln!(
                    out,
                    "  rejoined {node} as a replica of {} in {:.1} s",
                    self.primary,
                    took.as_secs_f64()
                ),
                Err(e) => writeln!(out, "  rejoin of {node} FAILED: {e}"),
            };
        }
        let _ = writeln!(
            out,
            "  reads answered by region: {}",
            self.reads_by_region
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if !self.unanswered.is_empty() {
            let _ = writeln!(
                out,
                "  NO ANSWER: {} still waited for their statement when the workload stopped \
                 (stopped after the bound)",
                self.unanswered.join(", ")
            );
        }
        let missing = if self.lost.is_empty() {
            String::new()
        } else {
            let first: Vec<String> = self
                .lost
                .iter()
                .take(10)
                .map(|(w, s)| format!("writer {w} row {s}"))
                .collect();
            format!(" ({})", first.join(", "))
        };
        let _ = writeln!(
            out,
            "  {} acknowledged writes, every row looked for on {}: {} missing{missing}",
            self.acknowledged,
            self.primary,
            self.lost.len(),
        );
        let _ = write!(
            out,
            "\n{}",
            if self.passed() {
                "PASS: every failover completed, writes came back, no acknowledged write was lost."
            } else {
                "FAIL: see the rows above."
            }
        );
        out
    }

    /// The same, machine-readable (`summary.json`).
    pub fn json(&self) -> Value {
        json!({
            "passed": self.passed(),
            "acknowledged": self.acknowledged,
            "lost": self.lost.iter().map(|(w, s)| json!([w, s])).collect::<Vec<_>>(),
            "unanswered": self.unanswered,
            "final_primary": self.primary,
            "reads_by_region": self.reads_by_region,
            "failovers": self
                .failovers
                .iter()
                .map(|(w, f, passed)| failover_json(w, f, *passed))
                .collect::<Vec<_>>(),
            "rejoins": self.rejoins.iter().map(|(node, result)| json!({
                "node": node,
                "ok": result.is_ok(),
                "seconds": result.as_ref().ok().map(Duration::as_secs_f64),
                "error": result.as_ref().err(),
            })).collect::<Vec<_>>(),
        })
    }
}

fn failover_json(watched: &Watched, figures: &Figures, passed: bool) -> Value {
    let record = watched.record.as_ref();
    json!({
        "label": watched.label,
        "killed": watched.killed,
        "outcome": record.map(|r| r.outcome.as_str()).unwrap_or("not started"),
        "old_primary": record.and_then(|r| r.old_primary.clone()),
        "new_primary": record.and_then(|r| r.new_primary.clone()),
        "generation": record.map(|r| r.generation),
        "phases": record.map(|r| r.phases.iter().map(|p| json!({
            "name": p.name,
            "outcome": p.outcome,
            "ms": p.finished_at_ms.saturating_sub(p.started_at_ms),
        })).collect::<Vec<_>>()),
        "write_unavailable_seconds": figures.write_gap.map(|d| d.as_secs_f64()),
        "slowest_write_seconds": figures.slowest_write.map(|d| d.as_secs_f64()),
        "reads": figures.reads,
        "reads_failed": figures.reads_failed,
        "writes_failed": figures.writes_failed,
        "acknowledged_before": figures.acknowledged,
        "lost": figures.lost,
        "passed": passed,
    })
}
