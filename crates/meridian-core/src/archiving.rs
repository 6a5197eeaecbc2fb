//! Continuous WAL archiving judged: does every write reach the archive, and how old can the
//! oldest write be that is not there yet (the recovery point objective, RPO, of a restore from
//! the archive if the primary vanished now).
//!
//! The input is what PostgreSQL reports ([`ArchiverStats`]: `pg_stat_archiver`, the archiving
//! settings and the primary's current WAL position); [`judge`] is a pure function of it, `now`
//! and the RPO ceiling. [`judge_tracked`] also takes the history of the primary's positions a
//! running Meridian keeps ([`LagTracker`]) and measures the RPO instead of estimating it.
//!
//! # How the RPO is found
//!
//! PostgreSQL archives whole segments (16 MiB by default, the `wal_segment_size` of the server,
//! see section 30.6 "WAL Internals" of the PostgreSQL docs): the segment being written is only
//! archived once it is full or switched (`archive_timeout`, `pg_switch_wal()`). The last archived
//! file names a position: everything before the end of that segment is in the archive. Whatever
//! the primary wrote after it is not.
//!
//! - **All archived**: the current position is at or before the end of the last archived
//!   segment (right after a switch the position sits exactly on the segment boundary). RPO 0.
//! - **Idle**: PostgreSQL switches a segment on `archive_timeout` only when *important* WAL was
//!   written since the last switch, and after a switch an idle server still writes one
//!   running-transactions record (its background writer's snapshot for hot standby, marked
//!   unimportant) into the new segment: the position then rests a few dozen bytes past the
//!   boundary for as long as the server stays idle, while `last_archived_time` grows old. A
//!   tail no longer than a page header and one such record ([`IDLE_TAIL`]) holds no write: RPO
//!   0. Any write transaction adds more than that (its heap record and its commit record).
//! - **Writes not archived yet**: the oldest of them is as old as the moment the primary went
//!   past the idle tail. A running Meridian knows that moment from its samples of the
//!   primary's position (a lower bound, short by at most one sampling interval) when its
//!   samples reach back that far. Otherwise it is estimated by the time of the last archiving:
//!   the segment after the last archived one began about when that one was complete, and a
//!   keeping-up archiver archives a segment moments after it is complete.
//! - **Nothing archived yet** (or only a `.history` file): the RPO cannot be told from the
//!   statistics; a running Meridian counts from its first sample of this primary, a lower
//!   bound that gives a new archive `max_rpo` to archive its first segment.
//! - **Unarchived whole segments** are counted from the positions (`TTTTTTTTXXXXXXXXYYYYYYYY`:
//!   timeline, then the segment number in two halves, see `XLogFileName` in PostgreSQL's
//!   `xlog_internal.h`). Positions continue across timelines, so a segment archived on the old
//!   timeline and the current position on the new one compare directly.
//!
//! After a failover the new primary archives the new timeline's `.history` file and the old
//! timeline's last segment as `.partial`: a `.partial` (or a `.backup` label) names a segment
//! that is not wholly archived, so only what precedes it counts as archived; a `.history` file
//! names no position at all, and the RPO is then unknown until the first segment of the new
//! timeline is archived.
//!
//! # States
//!
//! | state     | when                                                                                      |
//! |-----------|-------------------------------------------------------------------------------------------|
//! | `off`     | `archive_mode` is off (or waits for a restart), no `archive_command`, or a replica that does not archive |
//! | `failing` | the last failure of `archive_command` is newer than its last success                        |
//! | `behind`  | the RPO exceeds the ceiling, or it cannot be measured because nothing is archived yet         |
//! | `healthy` | otherwise (idle included)                                                                 |
//!
//! PostgreSQL retries a failed segment forever and never skips one, so "the last failure is
//! newer than the last success" means it is stuck on that segment: every later segment waits in
//! `pg_wal`, which grows until the disk is full.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::alerts::{AlertKind, Condition, Severity};
use crate::lag::LagTracker;
use crate::lsn::Lsn;
use crate::observation::Timestamp;
use crate::topology::NodeId;

/// PostgreSQL's default `wal_segment_size`.
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

/// The most WAL an idle primary writes after a segment switch: the segment's long page header
/// (40 bytes) and one running-transactions record (56 bytes with no transaction running; 4 more
/// per running transaction, aligned to 8). A write transaction writes more than this.
pub const IDLE_TAIL: u64 = 40 + 64;

/// `archive_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArchiveMode {
    /// No archiving.
    #[default]
    Off,
    /// The primary archives (a replica archives once promoted).
    On,
    /// Replicas archive too, what they receive.
    Always,
}

impl ArchiveMode {
    /// The setting's text as PostgreSQL shows it; `None` for anything else.
    pub fn parse(text: &str) -> Option<ArchiveMode> {
        match text {
            "off" => Some(ArchiveMode::Off),
            "on" => Some(ArchiveMode::On),
            "always" => Some(ArchiveMode::Always),
            _ => None,
        }
    }

    /// `off`, `on` or `always`.
    pub fn as_str(self) -> &'static str {
        match self {
            ArchiveMode::Off => "off",
            ArchiveMode::On => "on",
            ArchiveMode::Always => "always",
        }
    }
}

/// What a server says about its archiving: `pg_stat_archiver`, the settings, its WAL position.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ArchiverStats {
    /// `archive_mode` in effect.
    pub archive_mode: ArchiveMode,
    /// A changed `archive_mode` waits for a restart (`pg_settings.pending_restart`).
    pub archive_mode_pending_restart: bool,
    /// `archive_command` (or `archive_library`) is set.
    pub archive_command_set: bool,
    /// The server is in recovery (a replica).
    pub in_recovery: bool,
    /// Files archived since the statistics were reset.
    pub archived_count: u64,
    /// The last file archived (a segment, `.partial`, `.history` or `.backup` name).
    pub last_archived_wal: Option<String>,
    /// When it was archived.
    pub last_archived_time: Option<Timestamp>,
    /// Failed attempts since the statistics were reset.
    pub failed_count: u64,
    /// The file of the last failed attempt.
    pub last_failed_wal: Option<String>,
    /// When it failed.
    pub last_failed_time: Option<Timestamp>,
    /// The WAL file holding the last byte written (`pg_walfile_name(pg_current_wal_lsn())`);
    /// `None` on a replica.
    pub current_wal: Option<String>,
    /// The primary's write position (`pg_current_wal_lsn()`); `None` on a replica.
    pub current_lsn: Option<Lsn>,
    /// `wal_segment_size` in bytes.
    pub segment_size: u64,
    /// When these statistics were last reset (also at a crash).
    pub stats_reset: Option<Timestamp>,
}

/// A file name PostgreSQL archives, with the position it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalFile {
    /// A whole segment, starting at `start`.
    Segment {
        /// Its timeline.
        timeline: u32,
        /// Its first position.
        start: Lsn,
    },
    /// The last, partial segment of a timeline left at a promotion (`<segment>.partial`).
    Partial {
        /// Its timeline.
        timeline: u32,
        /// The segment's first position.
        start: Lsn,
    },
    /// A backup history file (`<segment>.<offset>.backup`), named after its start segment.
    Backup {
        /// Its timeline.
        timeline: u32,
        /// The start segment's first position.
        start: Lsn,
    },
    /// A timeline history file (`<timeline>.history`), written at a promotion.
    History {
        /// The new timeline.
        timeline: u32,
    },
}

impl WalFile {
    /// Parses an archived file name for a server with `segment_size`; `None` for anything else
    /// (or a segment number too large for that size).
    pub fn parse(name: &str, segment_size: u64) -> Option<WalFile> {
        let hex = |s: &str| {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u32::from_str_radix(s, 16).ok())
                .flatten()
        };
        if let Some(timeline) = name.strip_suffix(".history") {
            return (timeline.len() == 8)
                .then(|| hex(timeline))
                .flatten()
                .map(|timeline| WalFile::History { timeline });
        }
        let stem = name.get(..24)?;
        let rest = &name[24..];
        let timeline = hex(stem.get(..8)?)?;
        let log = hex(stem.get(8..16)?)?;
        let segment = hex(stem.get(16..24)?)?;
        // The low half counts segments within one 4 GiB "log": fewer than 2^32 / size.
        let per_log = (1u64 << 32) / segment_size.max(1);
        if u64::from(segment) >= per_log {
            return None;
        }
        let start = Lsn((u64::from(log) << 32) + u64::from(segment) * segment_size);
        match rest {
            "" => Some(WalFile::Segment { timeline, start }),
            ".partial" => Some(WalFile::Partial { timeline, start }),
            _ => {
                let offset = rest.strip_prefix('.')?.strip_suffix(".backup")?;
                (offset.len() == 8 && hex(offset).is_some())
                    .then_some(WalFile::Backup { timeline, start })
            }
        }
    }

    /// Its timeline.
    pub fn timeline(self) -> u32 {
        match self {
            WalFile::Segment { timeline, .. }
            | WalFile::Partial { timeline, .. }
            | WalFile::Backup { timeline, .. }
            | WalFile::History { timeline } => timeline,
        }
    }

    /// The position before which everything is archived once this file is: the end of a whole
    /// segment, the start of a partial one or of a backup's start segment (whose rest may not
    /// be archived yet); `None` for a history file, which names no position.
    pub fn archived_through(self, segment_size: u64) -> Option<Lsn> {
        match self {
            WalFile::Segment { start, .. } => Some(Lsn(start.0.saturating_add(segment_size))),
            WalFile::Partial { start, .. } | WalFile::Backup { start, .. } => Some(start),
            WalFile::History { .. } => None,
        }
    }
}

/// The overall verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ArchiveState {
    /// The server does not archive.
    Off,
    /// Everything older than the RPO ceiling is archived.
    Healthy,
    /// Writes older than the ceiling are not archived, or nothing is archived yet.
    Behind,
    /// `archive_command` fails: archiving is stuck on one segment.
    Failing,
}

impl ArchiveState {
    /// Every state, in order.
    pub const ALL: [ArchiveState; 4] = [
        ArchiveState::Off,
        ArchiveState::Healthy,
        ArchiveState::Behind,
        ArchiveState::Failing,
    ];

    /// `off`, `healthy`, `behind` or `failing`.
    pub fn as_str(self) -> &'static str {
        match self {
            ArchiveState::Off => "off",
            ArchiveState::Healthy => "healthy",
            ArchiveState::Behind => "behind",
            ArchiveState::Failing => "failing",
        }
    }

    /// Whether all is well (`healthy`).
    pub fn is_ok(self) -> bool {
        self == ArchiveState::Healthy
    }
}

impl fmt::Display for ArchiveState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`judge`] concluded, with its reason.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveJudgement {
    /// The verdict.
    pub state: ArchiveState,
    /// How old the oldest write not archived yet can be; `None` when it cannot be told
    /// (archiving off, nothing archived yet, a replica).
    pub rpo: Option<Duration>,
    /// Whole segments written but not archived (0 when unknown: see `rpo`).
    pub unarchived_segments: u64,
    /// Bytes of WAL written after the last archived position; `None` when unknown.
    pub unarchived_bytes: Option<u64>,
    /// For people: what holds and, when something is wrong, what to do.
    pub detail: String,
}

/// Judges `stats` as of `now` against the ceiling `max_rpo`, estimating the age of unarchived
/// writes from the time of the last archiving (see the module notes).
pub fn judge(stats: &ArchiverStats, now: Timestamp, max_rpo: Duration) -> ArchiveJudgement {
    judge_with(stats, now, max_rpo, None)
}

/// Like [`judge`], with `history`: when the primary reached which position (its samples must
/// include `stats.current_lsn`). The RPO is then measured: `now` minus when the primary was
/// first seen past the archived position and its idle tail.
pub fn judge_tracked(
    stats: &ArchiverStats,
    now: Timestamp,
    max_rpo: Duration,
    history: &LagTracker,
) -> ArchiveJudgement {
    judge_with(stats, now, max_rpo, Some(history))
}

fn judge_with(
    stats: &ArchiverStats,
    now: Timestamp,
    max_rpo: Duration,
    history: Option<&LagTracker>,
) -> ArchiveJudgement {
    let off = |detail: String| ArchiveJudgement {
        state: ArchiveState::Off,
        rpo: None,
        unarchived_segments: 0,
        unarchived_bytes: None,
        detail,
    };
    if stats.in_recovery && stats.archive_mode != ArchiveMode::Always {
        return off(format!(
            "in recovery: a replica archives nothing while it replays (archive_mode = {}); it \
             archives once promoted when archive_mode is on",
            stats.archive_mode.as_str()
        ));
    }
    if stats.archive_mode == ArchiveMode::Off {
        return off(if stats.archive_mode_pending_restart {
            "archive_mode = on is set but waits for a restart of the server: restart it \
             (pg_ctl restart), then archiving starts"
                .to_owned()
        } else {
            "archive_mode is off: nothing is archived (meridian backup setup-archiving turns it \
             on; a restart of the server follows)"
                .to_owned()
        });
    }
    if !stats.archive_command_set {
        return off(
            "archive_mode is on but archive_command is empty: segments pile up in pg_wal until \
             one is set (meridian backup setup-archiving sets it)"
                .to_owned(),
        );
    }

    let segment_size = if is_valid_segment_size(stats.segment_size) {
        stats.segment_size
    } else {
        DEFAULT_SEGMENT_SIZE
    };
    let current_timeline = stats
        .current_wal
        .as_deref()
        .and_then(|name| WalFile::parse(name, segment_size))
        .map(WalFile::timeline);
    let archived_file = stats
        .last_archived_wal
        .as_deref()
        .and_then(|name| WalFile::parse(name, segment_size));
    // A file of a later timeline than the server's own is of another history (a node rewound
    // or restored after it archived): it says nothing about this server's position.
    let archived_through = archived_file
        .filter(|file| current_timeline.is_none_or(|tl| file.timeline() <= tl))
        .and_then(|file| file.archived_through(segment_size));

    let last_success = stats.last_archived_time;
    let age = |at: Timestamp| now.since(at);
    // Measured only when the history reaches back to `position`: a watch begun after the
    // primary passed it knows less than the time of the last archiving does.
    let measured_since = |position: Lsn| {
        history
            .filter(|h| h.oldest().is_some_and(|(_, oldest)| oldest <= position))
            .and_then(|h| h.lag(position, now))
            .map(|lag| lag.seconds)
    };

    let mut unarchived_segments = 0;
    let mut unarchived_bytes = None;
    let mut idle = false;
    let rpo = match (stats.current_lsn, archived_through) {
        (Some(current), Some(through)) => {
            let tail = current.bytes_after(through);
            unarchived_bytes = Some(tail);
            // Whole segments between the archived position and the start of the segment
            // being written.
            let complete_end = current.0 - current.0 % segment_size;
            unarchived_segments = complete_end.saturating_sub(through.0) / segment_size;
            if unarchived_segments == 0 && tail <= IDLE_TAIL {
                idle = tail > 0;
                Some(Duration::ZERO)
            } else {
                let past_idle_tail = Lsn(through.0.saturating_add(IDLE_TAIL));
                measured_since(past_idle_tail).or_else(|| last_success.map(age))
            }
        }
        // Nothing archived (or only a history file): how long the primary has been watched
        // is all that can be told, a lower bound.
        (Some(_), None) => history
            .and_then(|h| h.lag(Lsn::INVALID, now))
            .map(|lag| lag.seconds),
        (None, _) => None,
    };

    let failing = match (stats.last_failed_time, last_success) {
        (Some(failed), Some(archived)) => failed > archived,
        (Some(_), None) => true,
        (None, _) => false,
    };
    let last_archived = match (&stats.last_archived_wal, last_success) {
        (Some(name), Some(at)) => format!("last archived {name} {} ago", seconds(age(at))),
        _ => match stats.stats_reset {
            Some(reset) => format!(
                "nothing archived since the statistics were reset {} ago",
                seconds(age(reset))
            ),
            None => "nothing archived yet".to_owned(),
        },
    };
    let rpo_text = match rpo {
        Some(rpo) => format!("RPO {} (max {})", seconds(rpo), seconds(max_rpo)),
        None => "RPO unknown".to_owned(),
    };
    let backlog = if unarchived_segments > 0 {
        format!("; {unarchived_segments} whole segment(s) wait to be archived")
    } else {
        String::new()
    };

    let (state, detail) = if failing {
        let name = stats.last_failed_wal.as_deref().unwrap_or("a WAL file");
        let when = stats
            .last_failed_time
            .map(|at| format!(" {} ago", seconds(age(at))))
            .unwrap_or_default();
        (
            ArchiveState::Failing,
            format!(
                "archive_command fails: last failure for {name}{when}, {} failure(s) counted, \
                 {last_archived}; {rpo_text}{backlog}. PostgreSQL retries that segment and \
                 keeps it and every later one in pg_wal until the command succeeds: the \
                 server's log has the command's error (does the archive directory exist, and \
                 can the server's OS user write it?)",
                stats.failed_count
            ),
        )
    } else {
        match rpo {
            Some(rpo) if rpo > max_rpo => (
                ArchiveState::Behind,
                format!(
                    "{rpo_text}: writes older than the ceiling are not archived{backlog}; \
                     {last_archived}. Archiving is slower than WAL is written, or the segment \
                     in progress is not switched (archive_timeout; PostgreSQL 15 ignores it \
                     after a start until its first checkpoint or a configuration reload)"
                ),
            ),
            Some(_) if archived_through.is_none() => (
                ArchiveState::Healthy,
                format!(
                    "{rpo_text}, counted from when this primary was first watched: no segment \
                     of its WAL is in the archive yet ({last_archived}); the next one is \
                     archived when it fills, archive_timeout after a write, or at once with \
                     SELECT pg_switch_wal()"
                ),
            ),
            Some(rpo) if rpo.is_zero() => (
                ArchiveState::Healthy,
                if idle {
                    format!("idle: every write is archived ({last_archived})")
                } else {
                    format!("every write is archived ({last_archived})")
                },
            ),
            Some(_) => (
                ArchiveState::Healthy,
                format!("{rpo_text}{backlog}; {last_archived}"),
            ),
            None if stats.current_lsn.is_none() => (
                if archived_through.is_some() {
                    ArchiveState::Healthy
                } else {
                    ArchiveState::Behind
                },
                format!("{last_archived}; the server's WAL position is unknown, so is the RPO"),
            ),
            None => (
                ArchiveState::Behind,
                format!(
                    "{last_archived}: no segment of this server's WAL is in the archive yet, \
                     so the RPO cannot be told and no recent write can be restored from it. \
                     The next segment is archived when it fills, archive_timeout after a \
                     write, or at once with SELECT pg_switch_wal()"
                ),
            ),
        }
    };
    ArchiveJudgement {
        state,
        rpo,
        unarchived_segments,
        unarchived_bytes,
        detail,
    }
}

/// A power of two between 1 MiB and 1 GiB, as `initdb --wal-segsize` allows.
fn is_valid_segment_size(size: u64) -> bool {
    size.is_power_of_two() && (1 << 20..=1 << 30).contains(&size)
}

/// `12 s`, `4 min 5 s`, `2 h 3 min`.
fn seconds(duration: Duration) -> String {
    let s = duration.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// The alert conditions a judgement of `node` (the primary) implies: `archiving_off`,
/// `archiving_failing` or `archiving_behind` (one at most), with the judgement's detail.
///
/// Values: `archiving_failing` counts the failures PostgreSQL reports (threshold 0);
/// `archiving_behind` is the RPO in seconds against `max_rpo` (0 when unknown);
/// `archiving_off` is 0.
pub fn conditions(
    judgement: &ArchiveJudgement,
    stats: &ArchiverStats,
    node: NodeId,
    max_rpo: Duration,
) -> Vec<Condition> {
    let (kind, value, threshold) = match judgement.state {
        ArchiveState::Healthy => return Vec::new(),
        ArchiveState::Off => (AlertKind::ArchivingOff, 0.0, 0.0),
        ArchiveState::Failing => (AlertKind::ArchivingFailing, stats.failed_count as f64, 0.0),
        ArchiveState::Behind => (
            AlertKind::ArchivingBehind,
            judgement.rpo.map_or(0.0, |rpo| rpo.as_secs_f64()),
            max_rpo.as_secs_f64(),
        ),
    };
    vec![Condition {
        kind,
        node: Some(node),
        severity: kind.failover_severity().unwrap_or(Severity::High),
        value,
        threshold,
        message: judgement.detail.clone(),
    }]
}

/// The archiving kinds, in [`AlertKind`] order.
pub const ALERT_KINDS: [AlertKind; 3] = [
    AlertKind::ArchivingOff,
    AlertKind::ArchivingFailing,
    AlertKind::ArchivingBehind,
];

/// A change of the archiving alerts, for the alert book.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertChange {
    /// Raise this condition, or update the active alert of its kind and node.
    Raise(Condition),
    /// Resolve the active alert of this kind and node.
    Resolve(AlertKind, Option<NodeId>),
}

/// The archiving alerts raised so far, so that a condition holding for hours is one raise, a
/// few updates and one resolve: like the alert book, an active alert is updated only when its
/// severity or threshold changes or its value moves by 10 % or more, so an RPO creeping up
/// does not make one update per check.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArchiveAlerts {
    raised: BTreeMap<(AlertKind, Option<NodeId>), (Severity, f64, f64)>,
}

impl ArchiveAlerts {
    /// Tracker with nothing raised.
    pub fn new() -> Self {
        ArchiveAlerts::default()
    }

    /// Takes an alert already active (restored from the store at a restart) as raised, so
    /// that it is resolved once its condition no longer holds. Other kinds are ignored.
    pub fn adopt(&mut self, condition: &Condition) {
        if ALERT_KINDS.contains(&condition.kind) {
            self.raised.insert(
                (condition.kind, condition.node),
                (condition.severity, condition.value, condition.threshold),
            );
        }
    }

    /// The changes that make the raised alerts match `conditions` (every archiving condition
    /// that holds now; other kinds are ignored): raises for new ones, updates for significant
    /// changes, resolutions for those that no longer hold (the old primary's after a change
    /// of primary included). Resolutions come first, then raises, each in kind order.
    pub fn reconcile(&mut self, conditions: &[Condition]) -> Vec<AlertChange> {
        let wanted: BTreeMap<_, _> = conditions
            .iter()
            .filter(|c| ALERT_KINDS.contains(&c.kind))
            .map(|c| ((c.kind, c.node), c))
            .collect();
        let mut changes = Vec::new();
        self.raised.retain(|key, _| {
            let keep = wanted.contains_key(key);
            if !keep {
                changes.push(AlertChange::Resolve(key.0, key.1));
            }
            keep
        });
        for (key, condition) in wanted {
            let now = (condition.severity, condition.value, condition.threshold);
            let significant = match self.raised.get(&key) {
                None => true,
                Some(&(severity, value, threshold)) => {
                    severity != now.0
                        || threshold != now.2
                        || (now.1 != value && (now.1 - value).abs() >= 0.1 * value.abs())
                }
            };
            if significant {
                self.raised.insert(key, now);
                changes.push(AlertChange::Raise(condition.clone()));
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB16: u64 = DEFAULT_SEGMENT_SIZE;
    const MAX_RPO: Duration = Duration::from_secs(300);

    fn at(s: u64) -> Timestamp {
        Timestamp(1_700_000_000_000 + s * 1_000)
    }

    fn lsn(text: &str) -> Lsn {
        text.parse().unwrap()
    }

    /// A primary archiving into segment 3 of timeline 1, last archived `...02` at second 100,
    /// now at `position`.
    fn archiving(position: &str) -> ArchiverStats {
        let current = lsn(position);
        let segment = (current.0.saturating_sub(1)) / MB16;
        ArchiverStats {
            archive_mode: ArchiveMode::On,
            archive_mode_pending_restart: false,
            archive_command_set: true,
            in_recovery: false,
            archived_count: 2,
            last_archived_wal: Some("000000010000000000000002".into()),
            last_archived_time: Some(at(100)),
            failed_count: 0,
            last_failed_wal: None,
            last_failed_time: None,
            current_wal: Some(format!(
                "00000001{:08X}{:08X}",
                segment >> 8,
                segment & 0xFF
            )),
            current_lsn: Some(current),
            segment_size: MB16,
            stats_reset: Some(at(0)),
        }
    }

    #[test]
    fn file_names_parse_to_positions() {
        assert_eq!(
            WalFile::parse("000000010000000000000002", MB16),
            Some(WalFile::Segment {
                timeline: 1,
                start: lsn("0/2000000")
            })
        );
        assert_eq!(
            WalFile::parse("0000000300000016000000B3", MB16),
            Some(WalFile::Segment {
                timeline: 3,
                start: lsn("16/B3000000")
            })
        );
        assert_eq!(
            WalFile::parse("000000010000000000000005.partial", MB16),
            Some(WalFile::Partial {
                timeline: 1,
                start: lsn("0/5000000")
            })
        );
        assert_eq!(
            WalFile::parse("000000010000000000000002.00000028.backup", MB16),
            Some(WalFile::Backup {
                timeline: 1,
                start: lsn("0/2000000")
            })
        );
        assert_eq!(
            WalFile::parse("0000000A.history", MB16),
            Some(WalFile::History { timeline: 10 })
        );
        // With 64 MiB segments a log holds 64 of them.
        assert_eq!(
            WalFile::parse("00000001000000020000003F", 64 << 20),
            Some(WalFile::Segment {
                timeline: 1,
                start: lsn("2/FC000000")
            })
        );
        for bad in [
            "",
            "00000001000000000000000",
            "0000000100000000000000020",
            "00000001000000000000000G",
            "000000010000000000000002.part",
            "000000010000000000000002.0000002.backup",
            "1.history",
            "../00000001000000000000002",
            "00000001000000000000000\u{e9}",
            "0000000100000002000000FF.partial\n",
        ] {
            assert_eq!(WalFile::parse(bad, MB16), None, "{bad:?}");
        }
        // Segment 0x40 does not exist with 64 MiB segments.
        assert_eq!(WalFile::parse("000000010000000200000040", 64 << 20), None);
    }

    #[test]
    fn right_after_a_switch_everything_is_archived() {
        // pg_switch_wal() leaves the write position on the boundary; segment 2 archived.
        let stats = archiving("0/3000000");
        let judged = judge(&stats, at(5_000), MAX_RPO);
        assert_eq!(judged.state, ArchiveState::Healthy, "{judged:?}");
        assert_eq!(judged.rpo, Some(Duration::ZERO));
        assert_eq!(
            (judged.unarchived_segments, judged.unarchived_bytes),
            (0, Some(0))
        );
    }

    #[test]
    fn an_idle_server_has_no_rpo_however_old_its_last_archiving() {
        // One running-transactions record after the page header (seen on 15.18: 0/3000060),
        // an hour after the last archiving.
        let stats = archiving("0/3000060");
        let judged = judge(&stats, at(3_700), MAX_RPO);
        assert_eq!(judged.state, ArchiveState::Healthy, "{judged:?}");
        assert_eq!(judged.rpo, Some(Duration::ZERO));
        assert!(judged.detail.starts_with("idle"), "{}", judged.detail);
    }

    #[test]
    fn a_write_after_the_last_archiving_is_as_old_as_that_at_most() {
        let stats = archiving("0/3016040");
        let judged = judge(&stats, at(130), MAX_RPO);
        assert_eq!(judged.state, ArchiveState::Healthy, "{judged:?}");
        assert_eq!(judged.rpo, Some(Duration::from_secs(30)));
        assert_eq!(judged.unarchived_segments, 0);
        assert_eq!(judged.unarchived_bytes, Some(0x16040));
    }

    #[test]
    fn a_history_measures_when_the_write_came() {
        let stats = archiving("0/3016040");
        let mut history = LagTracker::new(16);
        history.record_primary(at(100), lsn("0/3000000"));
        // The idle tail is not a write.
        history.record_primary(at(115), lsn("0/3000060"));
        history.record_primary(at(3_000), lsn("0/3016040"));
        let judged = judge_tracked(&stats, at(3_010), MAX_RPO, &history);
        assert_eq!(judged.state, ArchiveState::Healthy, "{judged:?}");
        assert_eq!(judged.rpo, Some(Duration::from_secs(10)));
        // A history that begins after the write knows less than the last archiving's time.
        let mut late = LagTracker::new(16);
        late.record_primary(at(3_000), lsn("0/3016040"));
        let judged = judge_tracked(&stats, at(3_010), MAX_RPO, &late);
        assert_eq!(judged.rpo, Some(Duration::from_secs(2_910)));
        // Without the history, the estimate is the age of the last archiving.
        let estimated = judge(&stats, at(3_010), MAX_RPO);
        assert_eq!(estimated.state, ArchiveState::Behind);
        assert_eq!(estimated.rpo, Some(Duration::from_secs(2_910)));
    }

    #[test]
    fn behind_when_the_rpo_exceeds_the_ceiling() {
        // Segments 3, 4 and 5 complete, none archived: the archiver does not keep up.
        let stats = archiving("0/6000100");
        let judged = judge(&stats, at(100 + 301), MAX_RPO);
        assert_eq!(judged.state, ArchiveState::Behind, "{judged:?}");
        assert_eq!(judged.rpo, Some(Duration::from_secs(301)));
        assert_eq!(judged.unarchived_segments, 3);
        assert!(
            judged.detail.contains("3 whole segment(s)"),
            "{}",
            judged.detail
        );
        // At the ceiling exactly, still healthy.
        let judged = judge(&stats, at(400), MAX_RPO);
        assert_eq!(judged.state, ArchiveState::Healthy, "{judged:?}");
        assert_eq!(judged.unarchived_segments, 3);
    }

    #[test]
    fn failing_when_the_last_failure_is_newer_than_the_last_success() {
        let mut stats = archiving("0/4000100");
        stats.failed_count = 7;
        stats.last_failed_wal = Some("000000010000000000000003".into());
        stats.last_failed_time = Some(at(160));
        let judged = judge(&stats, at(170), MAX_RPO);
        assert_eq!(judged.state, ArchiveState::Failing, "{judged:?}");
        assert!(
            judged.detail.contains("000000010000000000000003")
                && judged.detail.contains("7 failure(s)"),
            "{}",
            judged.detail
        );
        assert_eq!(judged.unarchived_segments, 1);
        assert_eq!(judged.rpo, Some(Duration::from_secs(70)));

        // An old failure followed by successes is history.
        stats.last_failed_time = Some(at(90));
        assert_eq!(judge(&stats, at(170), MAX_RPO).state, ArchiveState::Healthy);
    }

    #[test]
    fn never_archived_is_behind_with_no_rpo_unless_measured() {
        let mut stats = archiving("0/1500790");
        stats.archived_count = 0;
        stats.last_archived_wal = None;
        stats.last_archived_time = None;
        let judged = judge(&stats, at(50), MAX_RPO);
        assert_eq!(judged.state, ArchiveState::Behind, "{judged:?}");
        assert_eq!(judged.rpo, None);
        assert!(
            judged.detail.contains("statistics were reset 50 s ago")
                && judged.detail.contains("pg_switch_wal()"),
            "{}",
            judged.detail
        );

        // Failing from the first segment on.
        stats.failed_count = 3;
        stats.last_failed_wal = Some("000000010000000000000001".into());
        stats.last_failed_time = Some(at(40));
        assert_eq!(judge(&stats, at(50), MAX_RPO).state, ArchiveState::Failing);

        // A running Meridian measures from its first sample: healthy until the ceiling.
        stats.failed_count = 0;
        stats.last_failed_wal = None;
        stats.last_failed_time = None;
        let mut history = LagTracker::new(16);
        history.record_primary(at(10), lsn("0/1500790"));
        let judged = judge_tracked(&stats, at(50), MAX_RPO, &history);
        assert_eq!(
            (judged.state, judged.rpo),
            (ArchiveState::Healthy, Some(Duration::from_secs(40)))
        );
        assert!(
            judged
                .detail
                .contains("no segment of its WAL is in the archive yet"),
            "{}",
            judged.detail
        );
        // Even when the watch has only just begun.
        let judged = judge_tracked(&stats, at(10), MAX_RPO, &history);
        assert_eq!(judged.rpo, Some(Duration::ZERO));
        assert!(!judged.detail.contains("every write is archived"));
        let judged = judge_tracked(&stats, at(400), MAX_RPO, &history);
        assert_eq!(judged.state, ArchiveState::Behind);
    }

    #[test]
    fn archiving_off_in_its_forms() {
        let mut stats = archiving("0/3000060");
        stats.archive_mode = ArchiveMode::Off;
        let judged = judge(&stats, at(200), MAX_RPO);
        assert_eq!((judged.state, judged.rpo), (ArchiveState::Off, None));
        assert!(
            judged.detail.contains("setup-archiving"),
            "{}",
            judged.detail
        );

        stats.archive_mode_pending_restart = true;
        let judged = judge(&stats, at(200), MAX_RPO);
        assert_eq!(judged.state, ArchiveState::Off);
        assert!(judged.detail.contains("restart"), "{}", judged.detail);

        let mut stats = archiving("0/3000060");
        stats.archive_command_set = false;
        let judged = judge(&stats, at(200), MAX_RPO);
        assert_eq!(judged.state, ArchiveState::Off);
        assert!(judged.detail.contains("archive_command is empty"));

        let mut replica = archiving("0/3000060");
        replica.in_recovery = true;
        replica.current_lsn = None;
        replica.current_wal = None;
        let judged = judge(&replica, at(200), MAX_RPO);
        assert_eq!(judged.state, ArchiveState::Off);
        assert!(judged.detail.contains("once promoted"), "{}", judged.detail);
        // A replica with archive_mode = always archives what it receives.
        replica.archive_mode = ArchiveMode::Always;
        let judged = judge(&replica, at(200), MAX_RPO);
        assert_eq!((judged.state, judged.rpo), (ArchiveState::Healthy, None));
    }

    #[test]
    fn after_a_promotion_the_partial_segment_and_history_file_count_for_what_they_are() {
        // Promoted to timeline 2 in segment 5; the new primary archived the history file first.
        let mut stats = archiving("0/5001000");
        stats.current_wal = Some("000000020000000000000005".into());
        stats.last_archived_wal = Some("00000002.history".into());
        let judged = judge(&stats, at(110), MAX_RPO);
        assert_eq!((judged.state, judged.rpo), (ArchiveState::Behind, None));

        // Then the old timeline's partial segment: its segment is not wholly archived.
        stats.last_archived_wal = Some("000000010000000000000005.partial".into());
        let judged = judge(&stats, at(110), MAX_RPO);
        assert_eq!(judged.state, ArchiveState::Healthy, "{judged:?}");
        assert_eq!(judged.rpo, Some(Duration::from_secs(10)));
        assert_eq!(judged.unarchived_bytes, Some(0x1000));

        // Then the new timeline's segments: positions continue across timelines.
        stats.current_lsn = Some(lsn("0/6000000"));
        stats.last_archived_wal = Some("000000020000000000000005".into());
        let judged = judge(&stats, at(110), MAX_RPO);
        assert_eq!(judged.rpo, Some(Duration::ZERO));

        // An archived file from a later timeline than the server's says nothing about it.
        stats.last_archived_wal = Some("000000030000000000000005".into());
        assert_eq!(judge(&stats, at(110), MAX_RPO).rpo, None);
    }

    #[test]
    fn bad_input_is_judged_without_panicking() {
        let mut stats = archiving("0/3000000");
        stats.segment_size = 0;
        stats.last_archived_wal = Some("garbage".into());
        stats.last_archived_time = Some(at(9_999_999));
        let judged = judge(&stats, at(0), MAX_RPO);
        assert_eq!(judged.state, ArchiveState::Behind);
        // A position before the archived one (a rewound node): nothing unarchived.
        let mut stats = archiving("0/1000000");
        stats.segment_size = 3;
        let judged = judge(&stats, at(200), MAX_RPO);
        assert_eq!(judged.rpo, Some(Duration::ZERO));
        let judged = judge(&ArchiverStats::default(), Timestamp(0), Duration::ZERO);
        assert_eq!(judged.state, ArchiveState::Off);
    }

    #[test]
    fn conditions_follow_the_state() {
        let node = NodeId(2);
        let stats = archiving("0/6000100");
        let behind = judge(&stats, at(500), MAX_RPO);
        let [condition] = conditions(&behind, &stats, node, MAX_RPO)
            .try_into()
            .unwrap();
        assert_eq!(
            (
                condition.kind,
                condition.node,
                condition.value,
                condition.threshold
            ),
            (AlertKind::ArchivingBehind, Some(node), 400.0, 300.0)
        );
        let healthy = judge(&stats, at(150), MAX_RPO);
        assert!(conditions(&healthy, &stats, node, MAX_RPO).is_empty());
    }

    #[test]
    fn alerts_are_raised_once_updated_on_change_and_resolved_on_a_change_of_primary() {
        let condition = |node: u16, kind, value| Condition {
            kind,
            node: Some(NodeId(node)),
            severity: Severity::High,
            value,
            threshold: 300.0,
            message: String::new(),
        };
        let mut alerts = ArchiveAlerts::new();
        let behind = condition(0, AlertKind::ArchivingBehind, 400.0);
        assert_eq!(
            alerts.reconcile(std::slice::from_ref(&behind)),
            [AlertChange::Raise(behind.clone())]
        );
        // Creeping: nothing; a 10 % move: an update.
        assert_eq!(
            alerts.reconcile(&[condition(0, AlertKind::ArchivingBehind, 420.0)]),
            []
        );
        let moved = condition(0, AlertKind::ArchivingBehind, 440.0);
        assert_eq!(
            alerts.reconcile(std::slice::from_ref(&moved)),
            [AlertChange::Raise(moved)]
        );
        // The primary changed and fails to archive: the old one's alert goes.
        let failing = condition(1, AlertKind::ArchivingFailing, 3.0);
        assert_eq!(
            alerts.reconcile(std::slice::from_ref(&failing)),
            [
                AlertChange::Resolve(AlertKind::ArchivingBehind, Some(NodeId(0))),
                AlertChange::Raise(failing)
            ]
        );
        // Other kinds are not ours.
        let down = condition(1, AlertKind::EndpointDown, 3.0);
        assert_eq!(
            alerts.reconcile(&[down]),
            [AlertChange::Resolve(
                AlertKind::ArchivingFailing,
                Some(NodeId(1))
            )]
        );
        assert_eq!(alerts.reconcile(&[]), []);

        // A restored alert is resolved when its condition is gone.
        let mut restored = ArchiveAlerts::new();
        restored.adopt(&condition(3, AlertKind::ArchivingOff, 0.0));
        assert_eq!(
            restored.reconcile(&[]),
            [AlertChange::Resolve(
                AlertKind::ArchivingOff,
                Some(NodeId(3))
            )]
        );
    }
}
