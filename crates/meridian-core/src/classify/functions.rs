//! The set of side-effecting functions: calls that make a query a write.
//!
//! A pattern is a function name without schema or argument list, matched against the called
//! name case-insensitively for unquoted calls (which PostgreSQL folds to lower case) and exactly
//! for quoted ones. `*` matches any run of characters, including none: `lo_*` matches `lo_import`
//! and `lo_unlink`; `pg_advisory_*lock*` matches `pg_advisory_lock`, `pg_advisory_unlock_all`
//! and `pg_advisory_xact_lock_shared`. No other character is special. The schema is ignored on
//! purpose: `search_path` decides which schema an unqualified call reaches, so
//! `pg_catalog.nextval(...)` and `nextval(...)` are treated alike.
//!
//! What cannot be seen: a user-defined function that writes is not detected by its name; the
//! proxy's safety net (SQLSTATE 25006 from a replica, retried on the primary before any row was
//! sent) catches those, and operators can list them as extra patterns.

use thiserror::Error;

use super::classification::NAME_MAX_BYTES;

/// The built-in side-effecting functions, as patterns: a function name without schema, `*`
/// matching any run of characters (see [`Classifier::new`](super::Classifier::new)).
///
/// Included: functions that write data or WAL, take locks that writers on the primary must see,
/// or raise an error on a hot standby (PostgreSQL docs, section 26.4.1 and chapter 9.27 "System
/// Administration Functions"). Deliberately left out: `currval` and `lastval` (they only read,
/// but read this session's state: the classifier reports them as
/// [`SessionState`](super::StatementClass::SessionState) instead), `txid_current_if_assigned`
/// and `pg_current_xact_id_if_assigned` (never assign an ID), `pg_sequence_last_value` and
/// `pg_sequence_parameters` (read-only catalog lookups), `pg_backup_start`/`pg_backup_stop`
/// (valid on a standby, where base backups are often taken), and the standby-only
/// `pg_wal_replay_pause`/`pg_wal_replay_resume` (they address one particular replica, not
/// something a router can choose).
pub const DEFAULT_WRITE_FUNCTIONS: &[&str] = &[
    // Sequences: "nextval() and setval()" are refused on a standby (26.4.1).
    "nextval",
    "setval",
    // Advisory locks (9.27.10), session and transaction level, lock, try-lock and unlock: a lock
    // only excludes other sessions of the same server, and the writers are on the primary.
    "pg_advisory_*lock*",
    "pg_try_advisory_*lock*",
    // Settings: set_config changes the session (or transaction) configuration that later
    // statements depend on; it stays with the primary-bound work (9.27.1).
    "set_config",
    // Assign a transaction ID: "cannot assign TransactionIds during recovery" on a standby.
    "txid_current",
    "pg_current_xact_id",
    // Large objects (35.4, 35.5): create, import, export (a file on the server), write,
    // truncate, unlink. `lo_*` also covers the read-only lo_get and lo_open(..., INV_READ);
    // sending those to the primary costs a little load and is never wrong.
    "lo_*",
    "lowrite",
    // Notifications: NOTIFY is refused on a standby (26.4.1); pg_notify is its function form.
    "pg_notify",
    // WAL control and positions (9.27.3): all raise "recovery is in progress" on a standby.
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_current_wal_lsn",
    "pg_current_wal_insert_lsn",
    "pg_current_wal_flush_lsn",
    "pg_walfile_name",
    "pg_walfile_name_offset",
    "pg_logical_emit_message",
    // The same before PostgreSQL 10 renamed xlog to wal.
    "pg_switch_xlog",
    "pg_current_xlog_*location",
    "pg_xlogfile_name*",
    // Server signalling (9.27.2): they act on the server they run on; the operator means the
    // primary. pg_promote (9.27.5) is meant for a standby, but never for one picked by a load
    // balancer: the primary answers it with a clear error instead.
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
    // Replication slots and origins (9.27.6): create, copy, drop, advance, consume, and peek:
    // a slot lives on one server (slots are not replicated before PostgreSQL 17's failover
    // slots, and decoding on a standby needs 16), and that server is the primary.
    "pg_create_*_replication_slot",
    "pg_copy_*_replication_slot",
    "pg_drop_replication_slot",
    "pg_replication_slot_advance",
    "pg_logical_slot_*",
    "pg_replication_origin_*",
    // dblink_exec runs a command, normally a write, through a connection of this server.
    "dblink_exec",
    // Statistics resets (28.2.25) change the server's counters.
    "pg_stat_reset*",
    "pg_stat_statements_reset",
];

/// Why a function pattern was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PatternError {
    /// The pattern is empty.
    #[error("empty function pattern")]
    Empty,
    /// The pattern has a character that cannot be in a function name.
    #[error(
        "function pattern {pattern:?} has {found:?} at byte {at}: write a function name without \
         schema, quotes or arguments; `*` is the only wildcard"
    )]
    InvalidCharacter {
        /// The pattern as given.
        pattern: String,
        /// The offending character.
        found: char,
        /// Its byte offset.
        at: usize,
    },
    /// The pattern's fixed characters exceed PostgreSQL's 63-byte name limit, so it can never
    /// match.
    #[error("function pattern {pattern:?} is longer than PostgreSQL's 63-byte limit for names")]
    TooLong {
        /// The pattern as given.
        pattern: String,
    },
}

/// One compiled pattern: lower-cased bytes.
#[derive(Debug, Clone)]
struct Pattern {
    bytes: Box<[u8]>,
}

/// A set of function patterns, checked at every call site of a query.
#[derive(Debug, Clone)]
pub(crate) struct FunctionSet {
    patterns: Vec<Pattern>,
    /// First bytes (lower case) of the patterns that do not start with `*`: most called names
    /// (`count`, `coalesce`, `now`) are rejected by this table alone.
    first_bytes: [bool; 256],
    /// Some pattern starts with `*`, so the table cannot reject anything.
    leading_wildcard: bool,
}

impl FunctionSet {
    /// Compiles `patterns`, validating each.
    pub(crate) fn new<'p>(
        patterns: impl IntoIterator<Item = &'p str>,
    ) -> Result<FunctionSet, PatternError> {
        let mut set = FunctionSet {
            patterns: Vec::new(),
            first_bytes: [false; 256],
            leading_wildcard: false,
        };
        for pattern in patterns {
            validate(pattern)?;
            let bytes: Box<[u8]> = pattern.to_ascii_lowercase().into_bytes().into();
            match bytes[0] {
                b'*' => set.leading_wildcard = true,
                first => set.first_bytes[first as usize] = true,
            }
            set.patterns.push(Pattern { bytes });
        }
        Ok(set)
    }

    /// True if `name` (as called; `folded` for an unquoted name) matches a pattern.
    pub(crate) fn matches(&self, name: &[u8], folded: bool) -> bool {
        let Some(&first) = name.first() else {
            return false;
        };
        let first = if folded {
            first.to_ascii_lowercase()
        } else {
            first
        };
        if !self.leading_wildcard && !self.first_bytes[first as usize] {
            return false;
        }
        self.patterns
            .iter()
            .any(|pattern| glob(&pattern.bytes, name, folded))
    }
}

fn validate(pattern: &str) -> Result<(), PatternError> {
    if pattern.is_empty() {
        return Err(PatternError::Empty);
    }
    for (at, found) in pattern.char_indices() {
        let allowed = found == '*'
            || found == '_'
            || found.is_ascii_alphabetic()
            || !found.is_ascii()
            || (at > 0 && (found.is_ascii_digit() || found == '$'));
        if !allowed {
            return Err(PatternError::InvalidCharacter {
                pattern: pattern.to_owned(),
                found,
                at,
            });
        }
    }
    if pattern.bytes().filter(|&b| b != b'*').count() > NAME_MAX_BYTES {
        return Err(PatternError::TooLong {
            pattern: pattern.to_owned(),
        });
    }
    Ok(())
}

/// Wildcard match of `name` against `pattern` (lower case; `*` any run). Iterative, with
/// backtracking to the last `*` only: linear for the short names PostgreSQL allows.
fn glob(pattern: &[u8], name: &[u8], folded: bool) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while n < name.len() {
        let byte = if folded {
            name[n].to_ascii_lowercase()
        } else {
            name[n]
        };
        match pattern.get(p) {
            Some(b'*') => {
                backtrack = Some((p, n));
                p += 1;
            }
            Some(&expected) if expected == byte => {
                p += 1;
                n += 1;
            }
            _ => match backtrack {
                Some((star, from)) => {
                    p = star + 1;
                    n = from + 1;
                    backtrack = Some((star, from + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_set() -> FunctionSet {
        FunctionSet::new(DEFAULT_WRITE_FUNCTIONS.iter().copied()).unwrap()
    }

    #[test]
    fn wildcards_match_any_run_including_none() {
        assert!(glob(b"lo_*", b"lo_import", false));
        assert!(glob(b"lo_*", b"lo_", false));
        assert!(!glob(b"lo_*", b"log", false));
        assert!(glob(b"pg_advisory_*lock*", b"pg_advisory_lock", false));
        assert!(glob(
            b"pg_advisory_*lock*",
            b"pg_advisory_unlock_all",
            false
        ));
        assert!(glob(
            b"pg_advisory_*lock*",
            b"pg_advisory_xact_lock_shared",
            false
        ));
        assert!(!glob(b"pg_advisory_*lock*", b"pg_advisory_xact", false));
        assert!(glob(b"*", b"anything", false));
        assert!(glob(b"a*b*c", b"aXbYbZc", false));
        assert!(!glob(b"a*b*c", b"aXbYbZ", false));
        assert!(glob(b"nextval", b"NEXTVAL", true));
        assert!(!glob(b"nextval", b"NEXTVAL", false));
    }

    #[test]
    fn the_default_set_covers_what_it_documents() {
        let set = default_set();
        for name in [
            "nextval",
            "setval",
            "pg_advisory_lock",
            "pg_advisory_xact_lock",
            "pg_try_advisory_lock_shared",
            "pg_advisory_unlock_all",
            "lo_unlink",
            "lowrite",
            "pg_create_logical_replication_slot",
            "pg_create_physical_replication_slot",
            "pg_stat_reset_shared",
            "pg_current_wal_lsn",
            "pg_current_xlog_insert_location",
            "pg_logical_slot_get_binary_changes",
            "pg_logical_slot_peek_changes",
        ] {
            assert!(set.matches(name.as_bytes(), true), "{name}");
        }
        for name in [
            "currval",
            "lastval",
            "txid_current_if_assigned",
            "pg_sequence_last_value",
            "count",
            "now",
            "pg_is_in_recovery",
        ] {
            assert!(!set.matches(name.as_bytes(), true), "{name}");
        }
    }

    #[test]
    fn invalid_patterns_are_rejected_with_the_reason() {
        assert_eq!(FunctionSet::new([""]).unwrap_err(), PatternError::Empty);
        assert!(matches!(
            FunctionSet::new(["audit.log_event"]).unwrap_err(),
            PatternError::InvalidCharacter {
                found: '.',
                at: 5,
                ..
            }
        ));
        assert!(matches!(
            FunctionSet::new(["f()"]).unwrap_err(),
            PatternError::InvalidCharacter { found: '(', .. }
        ));
        assert!(matches!(
            FunctionSet::new(["1abc"]).unwrap_err(),
            PatternError::InvalidCharacter {
                found: '1',
                at: 0,
                ..
            }
        ));
        let long = "x".repeat(64);
        assert!(matches!(
            FunctionSet::new([long.as_str()]).unwrap_err(),
            PatternError::TooLong { .. }
        ));
        assert!(FunctionSet::new(["Audit_*", "f$1", "*_write"]).is_ok());
    }
}
