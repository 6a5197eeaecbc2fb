//! Decisions about stored backups: which one a restore starts from, which ones a retention
//! policy keeps, and which archived WAL files the kept ones can do without.
//!
//! A restore to a point in time starts from the newest physical backup that ended at or
//! before that point: recovery replays forward from a backup's end, never backwards, so a
//! backup that ended later cannot reach an earlier point.
//!
//! A policy keeps the newest `keep` backups of each kind and every backup younger than
//! `keep_for`; with neither set it keeps everything, and it always keeps the newest backup of
//! each kind, whatever the settings say. Physical and logical backups are counted apart: a
//! nightly `pg_dump` must not push the only base backup out.
//!
//! The WAL horizon is the start of the oldest kept physical backup: restoring it, to its end
//! or to any later point, needs every archived segment from there on, on any timeline. A
//! segment wholly before that position serves no kept backup and may go. Timeline history
//! files are tiny and needed to follow any timeline switch, so they are never deletable; with
//! no physical backup kept nothing in the archive is, since there would be nothing left to
//! restore from but the archive itself.

use std::time::Duration;

use crate::lsn::Lsn;
use crate::observation::Timestamp;

/// A physical backup as a restore sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restorable {
    /// Its id in the catalog.
    pub id: String,
    /// When `pg_basebackup` returned: the backup is consistent from a moment before this.
    pub stopped_at: Timestamp,
    /// The WAL position it is consistent from.
    pub stop_lsn: Lsn,
}

/// Where a restore should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// As far as the archive goes.
    Latest,
    /// Just before the first commit after this time.
    Time(Timestamp),
    /// At this WAL position.
    Lsn(Lsn),
}

/// Why no backup fits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoBackup {
    /// The catalog holds no physical backup.
    Empty,
    /// Every backup ended after the target; the earliest ends here.
    TooEarly {
        /// The backup that ends first.
        earliest: Restorable,
    },
}

/// The newest backup that can reach `target`.
pub fn choose(backups: &[Restorable], target: Target) -> Result<&Restorable, NoBackup> {
    let fits = |b: &&Restorable| match target {
        Target::Latest => true,
        Target::Time(at) => b.stopped_at <= at,
        Target::Lsn(lsn) => b.stop_lsn <= lsn,
    };
    if let Some(best) = backups.iter().filter(fits).max_by(|a, b| {
        a.stop_lsn
            .cmp(&b.stop_lsn)
            .then(a.stopped_at.cmp(&b.stopped_at))
    }) {
        return Ok(best);
    }
    match backups.iter().min_by_key(|b| b.stop_lsn) {
        None => Err(NoBackup::Empty),
        Some(earliest) => Err(NoBackup::TooEarly {
            earliest: earliest.clone(),
        }),
    }
}

/// A backup as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBackup {
    /// Its id in the catalog.
    pub id: String,
    /// When it finished.
    pub finished_at: Timestamp,
    /// The WAL file its restore starts from (`backup_label`'s START WAL LOCATION); `None` for
    /// a logical backup, which needs no WAL.
    pub start_wal: Option<String>,
}

impl StoredBackup {
    fn is_physical(&self) -> bool {
        self.start_wal.is_some()
    }
}

/// How long backups are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep the newest this many of each kind.
    pub keep: Option<u32>,
    /// Keep every backup younger than this.
    pub keep_for: Option<Duration>,
}

/// What a retention policy decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Ids kept, newest first.
    pub keep: Vec<String>,
    /// Ids to delete, newest first.
    pub delete: Vec<String>,
    /// Archived WAL before this position (a `(log, segment)` pair, see [`wal_position`]) is
    /// needed by no kept backup; `None`: keep the whole archive.
    pub wal_horizon: Option<(u32, u32)>,
}

/// Applies `retention` to `backups` at `now`.
pub fn plan(backups: &[StoredBackup], retention: Retention, now: Timestamp) -> Plan {
    let mut sorted: Vec<&StoredBackup> = backups.iter().collect();
    sorted.sort_by(|a, b| b.finished_at.cmp(&a.finished_at).then(b.id.cmp(&a.id)));
    let unlimited = retention.keep.is_none() && retention.keep_for.is_none();
    let mut keep = Vec::new();
    let mut delete = Vec::new();
    let (mut physical_seen, mut logical_seen) = (0u32, 0u32);
    let mut wal_horizon: Option<(u32, u32)> = None;
    for backup in sorted {
        let seen = if backup.is_physical() {
            &mut physical_seen
        } else {
            &mut logical_seen
        };
        *seen += 1;
        let newest = *seen == 1;
        let by_count = retention.keep.is_some_and(|n| *seen <= n);
        let by_age = retention
            .keep_for
            .is_some_and(|age| now.since(backup.finished_at) < age);
        if unlimited || newest || by_count || by_age {
            if let Some(position) = backup.start_wal.as_deref().and_then(wal_position) {
                wal_horizon = Some(wal_horizon.map_or(position, |h| h.min(position)));
            }
            keep.push(backup.id.clone());
        } else {
            delete.push(backup.id.clone());
        }
    }
    Plan {
        keep,
        delete,
        wal_horizon,
    }
}

/// The `(log, segment)` position of a WAL segment, partial segment or backup-history file
/// name (`TTTTTTTTXXXXXXXXYYYYYYYY[.partial|.OOOOOOOO.backup]`): the order of positions is
/// the order of the WAL, whatever the segment size. `None` for other names (history files).
pub fn wal_position(name: &str) -> Option<(u32, u32)> {
    let stem = name.get(..24)?;
    let rest = &name[24..];
    let suffix_ok = rest.is_empty()
        || rest == ".partial"
        || (rest.len() == 16
            && rest.ends_with(".backup")
            && rest[1..9].bytes().all(|b| b.is_ascii_hexdigit())
            && rest.starts_with('.'));
    if !suffix_ok || !stem.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let log = u32::from_str_radix(&stem[8..16], 16).ok()?;
    let segment = u32::from_str_radix(&stem[16..24], 16).ok()?;
    Some((log, segment))
}

/// Whether the archived file `name` may be deleted under `horizon`.
pub fn wal_deletable(name: &str, horizon: Option<(u32, u32)>) -> bool {
    match (horizon, wal_position(name)) {
        (Some(horizon), Some(position)) => position < horizon,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 24 * 60 * 60 * 1000;

    fn physical(id: &str, day: u64, start: &str) -> StoredBackup {
        StoredBackup {
            id: id.into(),
            finished_at: Timestamp(day * DAY),
            start_wal: Some(start.into()),
        }
    }

    fn logical(id: &str, day: u64) -> StoredBackup {
        StoredBackup {
            id: id.into(),
            finished_at: Timestamp(day * DAY),
            start_wal: None,
        }
    }

    fn backups() -> Vec<StoredBackup> {
        vec![
            physical("p1", 1, "000000010000000000000002"),
            physical("p2", 2, "000000010000000000000009"),
            logical("l2", 2),
            physical("p3", 3, "000000020000000100000003"),
            logical("l3", 3),
        ]
    }

    #[test]
    fn no_limit_keeps_everything_and_the_whole_wal_after_the_oldest() {
        let plan = plan(&backups(), Retention::default(), Timestamp(10 * DAY));
        assert_eq!(plan.keep, ["p3", "l3", "p2", "l2", "p1"]);
        assert!(plan.delete.is_empty());
        assert_eq!(plan.wal_horizon, Some((0, 2)));
    }

    #[test]
    fn a_count_is_per_kind_and_the_horizon_follows_the_oldest_kept_physical() {
        let retention = Retention {
            keep: Some(2),
            keep_for: None,
        };
        let plan = plan(&backups(), retention, Timestamp(10 * DAY));
        assert_eq!(plan.keep, ["p3", "l3", "p2", "l2"]);
        assert_eq!(plan.delete, ["p1"]);
        assert_eq!(plan.wal_horizon, Some((0, 9)));
        // p2 starts at 0/9: what it needs stays, on every timeline; only what precedes goes.
        assert!(wal_deletable("000000010000000000000008", plan.wal_horizon));
        assert!(wal_deletable(
            "000000010000000000000002.00000028.backup",
            plan.wal_horizon
        ));
        assert!(!wal_deletable("000000010000000000000009", plan.wal_horizon));
        assert!(!wal_deletable("00000002000000000000000A", plan.wal_horizon));
        assert!(!wal_deletable(
            "000000020000000000000009.partial",
            plan.wal_horizon
        ));
        assert!(!wal_deletable("00000002.history", plan.wal_horizon));
    }

    #[test]
    fn age_keeps_the_young_ones_and_count_or_age_is_enough() {
        let retention = Retention {
            keep: Some(1),
            keep_for: Some(Duration::from_millis(DAY + DAY / 2)),
        };
        // At day 3.5: p3 and l3 are younger than 1.5 days; p2 and l2 are older and beyond 1.
        let plan = plan(&backups(), retention, Timestamp(3 * DAY + DAY / 2));
        assert_eq!(plan.keep, ["p3", "l3"]);
        assert_eq!(plan.delete, ["p2", "l2", "p1"]);
        assert_eq!(plan.wal_horizon, Some((1, 3)));
    }

    #[test]
    fn the_newest_of_each_kind_is_kept_even_when_everything_is_old() {
        let retention = Retention {
            keep: None,
            keep_for: Some(Duration::from_secs(1)),
        };
        let plan = plan(&backups(), retention, Timestamp(100 * DAY));
        assert_eq!(plan.keep, ["p3", "l3"]);
    }

    #[test]
    fn with_only_logical_backups_no_wal_is_deletable() {
        let only_logical = vec![logical("l1", 1), logical("l2", 2)];
        let retention = Retention {
            keep: Some(1),
            keep_for: None,
        };
        let plan = plan(&only_logical, retention, Timestamp(3 * DAY));
        assert_eq!(
            (plan.keep.as_slice(), plan.wal_horizon),
            (&["l2".to_owned()][..], None)
        );
        assert!(!wal_deletable("000000010000000000000001", plan.wal_horizon));
    }

    fn restorable(id: &str, at: u64, lsn: u64) -> Restorable {
        Restorable {
            id: id.into(),
            stopped_at: Timestamp(at),
            stop_lsn: Lsn(lsn),
        }
    }

    #[test]
    fn a_restore_starts_from_the_newest_backup_that_ended_before_its_target() {
        let all = [
            restorable("a", 100, 1000),
            restorable("c", 300, 3000),
            restorable("b", 200, 2000),
        ];
        assert_eq!(choose(&all, Target::Latest).unwrap().id, "c");
        assert_eq!(choose(&all, Target::Time(Timestamp(299))).unwrap().id, "b");
        assert_eq!(choose(&all, Target::Time(Timestamp(300))).unwrap().id, "c");
        assert_eq!(choose(&all, Target::Lsn(Lsn(1999))).unwrap().id, "a");
        assert_eq!(
            choose(&all, Target::Time(Timestamp(99))),
            Err(NoBackup::TooEarly {
                earliest: all[0].clone()
            })
        );
        assert_eq!(choose(&[], Target::Latest), Err(NoBackup::Empty));
    }

    #[test]
    fn names_that_are_not_segments_have_no_position() {
        for name in [
            "00000001.history",
            "00000001000000000000000",
            "0000000100000000000000GG",
            "000000010000000000000002.backup",
            "000000010000000000000002.0000002X.backup",
            "000000010000000000000002.tmp",
        ] {
            assert_eq!(wal_position(name), None, "{name}");
        }
        assert_eq!(
            wal_position("0000000300000002000000FF.partial"),
            Some((2, 0xFF))
        );
    }
}
