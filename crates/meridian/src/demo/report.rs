//! What the demo's clients saw, summed up per failover: the figures of the summary table and
//! the verdict, computed from the workload's log and the rows read back at the end.
//!
//! Pure: instants come in as values, so the arithmetic is tested without a cluster.

use std::collections::HashSet;
use std::time::{Duration, Instant};

/// One write a writer sent: its row is `(writer, seq)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// The writer.
    pub writer: u32,
    /// Its sequence number, counted from 1 per writer.
    pub seq: i64,
    /// When it was sent.
    pub sent: Instant,
    /// How it ended.
    pub outcome: Outcome,
}

/// One read a reader sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Read {
    /// When it was sent.
    pub sent: Instant,
    /// The server port that answered, or the failure.
    pub outcome: Result<u16, String>,
}

/// How a write ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The commit was acknowledged at this instant: the row must exist.
    Acknowledged(Instant),
    /// It failed at this instant with this SQLSTATE (if the server or proxy sent one). A
    /// failure is not a promise either way: a statement in flight when its server died may
    /// have committed (SQLSTATE 08007 says so).
    Failed {
        /// When the error came back.
        at: Instant,
        /// Its SQLSTATE.
        code: Option<String>,
    },
}

impl Write {
    /// When the commit was acknowledged, if it was.
    pub fn acknowledged(&self) -> Option<Instant> {
        match self.outcome {
            Outcome::Acknowledged(at) => Some(at),
            Outcome::Failed { .. } => None,
        }
    }
}

/// When a kill began and when it was done (killing a server's processes takes a few
/// milliseconds, during which a write may still commit on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kill {
    pub started: Instant,
    pub done: Instant,
}

/// The figures of one failover, as the clients saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Figures {
    /// From the start of the kill to the first acknowledged write among those sent after it
    /// was done; `None` when no such write was acknowledged.
    pub write_gap: Option<Duration>,
    /// The longest any write sent in the span waited for its acknowledgement: a failover
    /// that brings writes back but makes them stall afterwards (a synchronous replica not
    /// yet streaming from the new primary) shows here.
    pub slowest_write: Option<Duration>,
    /// Reads sent between this kill and the next event that failed.
    pub reads_failed: usize,
    /// Reads sent in that span.
    pub reads: usize,
    /// Writes that failed in that span (those in flight at the kill included).
    pub writes_failed: usize,
    /// Writes acknowledged before this kill and after the previous one: the writes this
    /// failover could lose.
    pub acknowledged: usize,
    /// Of those, the rows missing at the end.
    pub lost: usize,
}

/// The figures of the failover of `kills[index]`; the span it owns runs from its kill to the
/// next kill or to `end`. `present` holds every row read back at the end.
pub fn figures(
    writes: &[Write],
    reads: &[Read],
    kills: &[Kill],
    index: usize,
    end: Instant,
    present: &HashSet<(u32, i64)>,
) -> Figures {
    let kill = kills[index].started;
    let until = kills.get(index + 1).map(|k| k.started).unwrap_or(end);
    let since = index.checked_sub(1).map(|i| kills[i].started);
    let write_gap =
        first_acknowledged_after(writes, kills[index].done).map(|at| at.duration_since(kill));
    let in_span = |at: Instant| at >= kill && at < until;
    let slowest_write = writes
        .iter()
        .filter(|w| in_span(w.sent))
        .filter_map(|w| w.acknowledged().map(|at| at.duration_since(w.sent)))
        .max();
    let span_reads: Vec<&Read> = reads.iter().filter(|r| in_span(r.sent)).collect();
    let writes_failed = writes
        .iter()
        .filter(|w| matches!(w.outcome, Outcome::Failed { at, .. } if in_span(at)))
        .count();
    let exposed: Vec<&Write> = writes
        .iter()
        .filter(|w| {
            w.acknowledged()
                .is_some_and(|at| at < kill && since.is_none_or(|s| at >= s))
        })
        .collect();
    Figures {
        write_gap,
        slowest_write,
        reads_failed: span_reads.iter().filter(|r| r.outcome.is_err()).count(),
        reads: span_reads.len(),
        writes_failed,
        acknowledged: exposed.len(),
        lost: exposed
            .iter()
            .filter(|w| !present.contains(&(w.writer, w.seq)))
            .count(),
    }
}

/// When the first write sent at or after `since` was acknowledged, if one was.
pub fn first_acknowledged_after(writes: &[Write], since: Instant) -> Option<Instant> {
    writes
        .iter()
        .filter(|w| w.sent >= since)
        .filter_map(Write::acknowledged)
        .min()
}

/// Every acknowledged write missing from `present`, as `(writer, seq)`, in order.
pub fn lost(writes: &[Write], present: &HashSet<(u32, i64)>) -> Vec<(u32, i64)> {
    let mut lost: Vec<(u32, i64)> = writes
        .iter()
        .filter(|w| w.acknowledged().is_some() && !present.contains(&(w.writer, w.seq)))
        .map(|w| (w.writer, w.seq))
        .collect();
    lost.sort_unstable();
    lost
}

/// The verdict on one failover: it completed, writes came back, and nothing acknowledged
/// before it was lost.
pub fn passed(completed: bool, figures: &Figures) -> bool {
    completed && figures.write_gap.is_some() && figures.lost == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    /// A kill at `ms` that took 5 ms.
    fn kill(base: Instant, ms: u64) -> Kill {
        Kill {
            started: at(base, ms),
            done: at(base, ms + 5),
        }
    }

    fn acked(base: Instant, writer: u32, seq: i64, sent: u64, ack: u64) -> Write {
        Write {
            writer,
            seq,
            sent: at(base, sent),
            outcome: Outcome::Acknowledged(at(base, ack)),
        }
    }

    fn failed(base: Instant, writer: u32, seq: i64, sent: u64, fail: u64) -> Write {
        Write {
            writer,
            seq,
            sent: at(base, sent),
            outcome: Outcome::Failed {
                at: at(base, fail),
                code: Some("08007".into()),
            },
        }
    }

    #[test]
    fn the_write_gap_runs_from_the_kill_to_the_first_acknowledgement_of_a_write_sent_after_it() {
        let t = Instant::now();
        let writes = vec![
            acked(t, 1, 1, 0, 10),
            // In flight at the kill (1000 ms), acknowledged after it: not a write sent after.
            acked(t, 2, 1, 990, 1010),
            failed(t, 1, 2, 995, 1001),
            // Sent while the kill was under way, committed on the dying primary: not one either.
            acked(t, 3, 1, 1002, 1003),
            // Sent after the kill, held by the proxy, committed on the new primary.
            acked(t, 1, 3, 1020, 1700),
            acked(t, 2, 2, 1030, 1650),
        ];
        let present: HashSet<(u32, i64)> = [(1, 1), (2, 1), (3, 1), (1, 3), (2, 2)].into();
        let f = figures(&writes, &[], &[kill(t, 1000)], 0, at(t, 5000), &present);
        assert_eq!(f.write_gap, Some(Duration::from_millis(650)));
        assert_eq!(f.slowest_write, Some(Duration::from_millis(680)));
        assert_eq!(f.writes_failed, 1);
        // Only writes acknowledged before the kill are exposed to it.
        assert_eq!(f.acknowledged, 1);
        assert_eq!(f.lost, 0);
        assert!(passed(true, &f));
        assert!(!passed(false, &f), "a failover that did not complete fails");
    }

    #[test]
    fn an_acknowledged_row_missing_at_the_end_is_lost_by_the_failover_that_followed_it() {
        let t = Instant::now();
        let writes = vec![
            acked(t, 1, 1, 0, 10),
            acked(t, 1, 2, 100, 110),
            acked(t, 1, 3, 2100, 2110),
            acked(t, 1, 4, 3100, 3110),
        ];
        // (1, 3) was acknowledged between the two kills and is gone.
        let present: HashSet<(u32, i64)> = [(1, 1), (1, 2), (1, 4)].into();
        let kills = [kill(t, 1000), kill(t, 3000)];
        let first = figures(&writes, &[], &kills, 0, at(t, 9000), &present);
        let second = figures(&writes, &[], &kills, 1, at(t, 9000), &present);
        assert_eq!((first.acknowledged, first.lost), (2, 0));
        assert_eq!((second.acknowledged, second.lost), (1, 1));
        assert!(passed(true, &first));
        assert!(!passed(true, &second));
        assert_eq!(lost(&writes, &present), vec![(1, 3)]);
    }

    #[test]
    fn no_write_acknowledged_after_the_kill_means_no_gap_and_a_failed_verdict() {
        let t = Instant::now();
        let writes = vec![acked(t, 1, 1, 0, 10), failed(t, 1, 2, 1100, 16100)];
        let present: HashSet<(u32, i64)> = [(1, 1)].into();
        let f = figures(&writes, &[], &[kill(t, 1000)], 0, at(t, 20000), &present);
        assert_eq!(f.write_gap, None);
        assert!(!passed(true, &f));
    }

    #[test]
    fn reads_are_counted_in_the_span_from_their_kill_to_the_next() {
        let t = Instant::now();
        let read = |sent, outcome| Read {
            sent: at(t, sent),
            outcome,
        };
        let reads = vec![
            read(500, Err("before".into())),
            read(1100, Ok(5433)),
            read(1200, Err("08006".into())),
            read(3100, Err("in the next span".into())),
        ];
        let kills = [kill(t, 1000), kill(t, 3000)];
        let f = figures(&[], &reads, &kills, 0, at(t, 9000), &HashSet::new());
        assert_eq!((f.reads, f.reads_failed), (2, 1));
        let g = figures(&[], &reads, &kills, 1, at(t, 9000), &HashSet::new());
        assert_eq!((g.reads, g.reads_failed), (1, 1));
    }
}
