//! Whether a transaction left state on its server connection that must not reach the next
//! client of that connection.
//!
//! In transaction pooling a server connection serves many clients. A client's `SET`,
//! `LISTEN`, temporary table, cursor `WITH HOLD` or session advisory lock outlives its
//! transaction on the server; the proxy notices it from the command tags the server returns
//! and from a few function names in the SQL, and resets the connection (`server_reset_query`,
//! `DISCARD ALL` by default) before anyone else uses it. Changes of reported parameters are
//! also carried by ParameterStatus, which the session tracks separately.

/// Command tags (CommandComplete) of statements that change session state.
pub fn tag_changes_session(tag: &[u8]) -> bool {
    const PREFIXES: &[&[u8]] = &[
        b"SET",
        b"RESET",
        b"DISCARD",
        b"PREPARE",
        b"DEALLOCATE",
        b"LISTEN",
        b"UNLISTEN",
        b"DECLARE CURSOR",
        b"LOAD",
        // Possibly temporary objects: the tag does not tell a TEMP table from another.
        b"CREATE TABLE",
        b"CREATE SEQUENCE",
        b"CREATE VIEW",
        b"CREATE FUNCTION",
    ];
    PREFIXES.iter().any(|p| tag.starts_with(p))
}

/// Command tags of statements that write rows: what makes a committed transaction a write.
pub fn tag_writes_rows(tag: &[u8]) -> bool {
    const PREFIXES: &[&[u8]] = &[b"INSERT ", b"UPDATE ", b"DELETE ", b"MERGE "];
    PREFIXES.iter().any(|p| tag.starts_with(p))
}

/// Command tags after which the server holds none of the statements the proxy prepared.
pub fn tag_clears_prepared(tag: &[u8]) -> bool {
    tag == b"DISCARD ALL" || tag == b"DEALLOCATE ALL"
}

/// Functions whose call changes session state without a telling command tag:
/// `set_config(..., false)` and the session-level advisory locks (the `_xact_` variants end
/// with the transaction and are not matched).
///
/// Runs on every simple query, so it gives up at once on a text without a parenthesis (no
/// call), then looks only around underscores (each name has one at a known offset) instead of
/// comparing every position.
pub fn sql_changes_session(sql: &[u8]) -> bool {
    if memchr::memchr(b'(', sql).is_none() {
        return false;
    }
    const NEEDLES: &[(usize, &[u8])] = &[
        (3, b"set_config"),
        (2, b"pg_advisory_lock"),
        (2, b"pg_try_advisory_lock"),
    ];
    let matches_at = |underscore: usize| {
        NEEDLES.iter().any(|&(offset, needle)| {
            underscore >= offset
                && sql
                    .get(underscore - offset..underscore - offset + needle.len())
                    .is_some_and(|window| window.eq_ignore_ascii_case(needle))
        })
    };
    memchr::memchr_iter(b'_', sql).any(matches_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_core::classify::Classifier;

    #[test]
    fn session_changing_tags() {
        for tag in [
            "SET",
            "RESET",
            "DISCARD ALL",
            "PREPARE",
            "LISTEN",
            "DECLARE CURSOR",
            "CREATE TABLE",
        ] {
            assert!(tag_changes_session(tag.as_bytes()), "{tag}");
        }
        for tag in [
            "SELECT 1",
            "INSERT 0 1",
            "BEGIN",
            "COMMIT",
            "UPDATE 3",
            "FETCH 1",
            "VACUUM",
        ] {
            assert!(!tag_changes_session(tag.as_bytes()), "{tag}");
        }
    }

    #[test]
    fn session_changing_functions() {
        assert!(sql_changes_session(
            b"SELECT SET_CONFIG('work_mem', '1MB', false)"
        ));
        assert!(sql_changes_session(b"select pg_advisory_lock(1)"));
        assert!(sql_changes_session(
            b"select pg_try_advisory_lock_shared(1)"
        ));
        assert!(!sql_changes_session(b"select pg_advisory_xact_lock(1)"));
        assert!(!sql_changes_session(
            b"SELECT abalance FROM pgbench_accounts WHERE aid = $1"
        ));
        assert!(!sql_changes_session(b""));
        assert!(!sql_changes_session(b"_"));
        assert!(!sql_changes_session(b"et_config"));
        assert!(sql_changes_session(b"x.set_config('a','b',false)"));
        assert!(!sql_changes_session(
            b"SELECT set_config FROM pg_advisory_lock"
        ));
    }

    /// The session forwards a simple query to [`sql_changes_session`] only when the
    /// classifier found a pin: every call it looks for must pin, whatever the side-effecting
    /// function set.
    #[test]
    fn every_session_changing_call_pins() {
        let no_write_functions = Classifier::with_write_functions::<&str>(&[]).unwrap();
        for sql in [
            "SELECT SET_CONFIG('work_mem', '1MB', false)",
            "select pg_advisory_lock(1)",
            "select pg_advisory_lock_shared(1)",
            "select pg_try_advisory_lock(1, 2)",
            "select pg_try_advisory_lock_shared(1)",
            "SELECT 1; select x.set_config('a', 'b', false)",
        ] {
            assert!(sql_changes_session(sql.as_bytes()), "{sql}");
            for classifier in [&Classifier::default(), &no_write_functions] {
                assert!(classifier.classify(sql.as_bytes()).pin.is_some(), "{sql}");
            }
        }
    }

    #[test]
    fn prepared_statements_cleared() {
        assert!(tag_clears_prepared(b"DISCARD ALL"));
        assert!(tag_clears_prepared(b"DEALLOCATE ALL"));
        assert!(!tag_clears_prepared(b"DEALLOCATE"));
    }
}
