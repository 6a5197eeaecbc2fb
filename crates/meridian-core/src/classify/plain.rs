//! The common cases decided from their bytes: a plain `SELECT`, `UPDATE` or `DELETE`, the
//! statements a proxy relays most.
//!
//! [`plain`] recognises only texts that the full classifier would call a plain read (class
//! `Read`, reason `Query`) or a plain write of their command (class `Write`, reason `UPDATE` or
//! `DELETE`), with no flags, no pin and one statement, and it answers in one pass over the
//! bytes, without tokens: no parenthesis (so no call, subquery or CTE), no string, quoted
//! identifier, dollar quote or comment (so every word is SQL), and, for a `SELECT`, none of the
//! words that can make a query write (`FOR` of a locking clause, `INTO`, and `INSERT`,
//! `UPDATE`, `DELETE`, `MERGE`, which the scan takes as commands; in an `UPDATE` or `DELETE`
//! only calls count). Anything it is not sure of, it leaves to the full classifier: `None`
//! costs one partial pass, never a wrong answer. A test holds it to the full classifier's
//! verdict over random texts built from the characters and words that matter, and over the
//! statement corpus.

use super::classification::Command;
use super::lexer::is_space;

/// A statement [`plain`] recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plain {
    /// A `SELECT` that reads.
    Read,
    /// An `UPDATE` or `DELETE` that calls nothing.
    Write(Command),
}

/// `[A-Za-z0-9_]`: a byte of a word or a number.
const WORD: u8 = 1;
/// Bytes that end a word and mean nothing here: whitespace (as PostgreSQL's scanner:
/// [`is_space`]), operators and punctuation that can open neither a quote, a comment
/// nor a group.
const NEUTRAL: u8 = 2;
/// Whitespace, the part of [`NEUTRAL`] that may follow the final `;`.
const SPACE: u8 = 4;

/// The class of every byte. Those of none (0) need a closer look: `$` (a parameter `$1`, or a
/// dollar quote), `-` (`--` starts a comment), `/` (`/*` does), `;` (the end of the
/// statement); the others (quotes, parentheses, backslash, control and non-ASCII bytes) send
/// the text to the full classifier.
const BYTES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = match b {
            _ if is_space(b) => NEUTRAL | SPACE,
            b'a'..=b'z' | b'A'..=b'Z' | b'_' | b'0'..=b'9' => WORD,
            b'.' | b',' | b'=' | b'<' | b'>' | b'*' | b'+' | b':' | b'[' | b']' | b'%' | b'^'
            | b'|' | b'~' | b'!' | b'@' | b'#' | b'?' | b'&' => NEUTRAL,
            _ => 0,
        };
        i += 1;
    }
    table
};

fn is(b: u8, class: u8) -> bool {
    BYTES[b as usize] & class != 0
}

/// What `sql` is, if it is one plain statement by the rules of this module's note; `None` when
/// it is not or when telling needs the full classifier.
pub(super) fn plain(sql: &[u8]) -> Option<Plain> {
    let n = sql.len();
    let mut i = 0;
    while i < n && is(sql[i], SPACE) {
        i += 1;
    }
    let plain = match sql.get(i..i + 6) {
        Some(word) if word.eq_ignore_ascii_case(b"select") => Plain::Read,
        Some(word) if word.eq_ignore_ascii_case(b"update") => Plain::Write(Command::Update),
        Some(word) if word.eq_ignore_ascii_case(b"delete") => Plain::Write(Command::Delete),
        _ => return None,
    };
    i += 6;
    // The command must be a word of its own (`selectx`, `select1`, `select$1` are identifiers).
    if matches!(sql.get(i), Some(&b) if is(b, WORD) || b == b'$') {
        return None;
    }
    // Key words make a query write; in a write, only calls count.
    let check_words = plain == Plain::Read;
    loop {
        let word = i;
        while i < n && is(sql[i], WORD) {
            i += 1;
        }
        if check_words && !harmless(&sql[word..i]) {
            return None;
        }
        while i < n && is(sql[i], NEUTRAL) {
            i += 1;
        }
        let Some(&b) = sql.get(i) else {
            return Some(plain);
        };
        if is(b, WORD) {
            continue;
        }
        let next = sql.get(i + 1).copied();
        match b {
            b'$' if next.is_some_and(|n| n.is_ascii_digit()) => {}
            b'-' if next != Some(b'-') => {}
            b'/' if next != Some(b'*') => {}
            b';' if sql[i + 1..].iter().all(|&b| is(b, SPACE)) => return Some(plain),
            _ => return None,
        }
        i += 1;
    }
}

/// Whether a run of letters, digits and underscores is neither a word that can make a query
/// write nor a number glued to letters (`1for`, `1e5`, `0x1F`: where the scanner splits
/// those, a word could hide inside; such texts are left to the full classifier).
fn harmless(run: &[u8]) -> bool {
    let Some(&first) = run.first() else {
        return true;
    };
    if first.is_ascii_digit() {
        return run.iter().all(u8::is_ascii_digit);
    }
    let spells = |word: &[u8]| run.eq_ignore_ascii_case(word);
    !match run.len() {
        3 => spells(b"for"),
        4 => spells(b"into"),
        5 => spells(b"merge"),
        6 => spells(b"insert") || spells(b"update") || spells(b"delete"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::{Plain, plain};
    use crate::classify::Command;

    fn is_plain_select(sql: &str) -> bool {
        plain(sql.as_bytes()) == Some(Plain::Read)
    }

    #[test]
    fn plain_selects_are_recognised() {
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
            "  select * from t where a >= $1 and b <> $2 order by c desc limit 10 ;  \n",
            "SELECT",
            "SELECT 1",
            "SELECT t.a, u.b FROM t JOIN u ON t.id = u.id WHERE t.x::int8 = 3 - 1",
            "SELECT*FROM t",
            "SELECT a/b FROM t",
            "SELECT forecast, intoxicated, updated_at, deleted FROM t",
        ] {
            assert!(is_plain_select(sql), "{sql}");
        }
    }

    #[test]
    fn anything_else_is_left_to_the_full_classifier() {
        for sql in [
            "",
            "   ",
            "INSERT INTO t VALUES (1)",
            "SELECTED",
            "select1",
            "SELECT$1",
            "SELECT count(*) FROM t",
            "SELECT a FROM t FOR UPDATE",
            "SELECT a INTO b FROM t",
            "SELECT update FROM t",
            "SELECT * FROM t WHERE a = 'x'",
            "SELECT \"for\" FROM t",
            "SELECT 1 -- comment",
            "SELECT 1 /* comment */",
            "SELECT $x$ text $x$",
            "SELECT 1; SELECT 2",
            "SELECT 1; DELETE FROM t",
            "SELECT 1for",
            "SELECT 1e5",
            "SELECT é FROM t",
            "SELECT a FROM t\\",
        ] {
            assert!(plain(sql.as_bytes()).is_none(), "{sql}");
        }
    }

    #[test]
    fn plain_updates_and_deletes_are_writes_of_their_command() {
        let update = b"UPDATE pgbench_accounts SET abalance = abalance + -4381 WHERE aid = 60;";
        assert_eq!(plain(update), Some(Plain::Write(Command::Update)));
        let delete = b"delete from t where id = $1 returning id, for_x, into_y";
        assert_eq!(plain(delete), Some(Plain::Write(Command::Delete)));
        for sql in [
            "UPDATE t SET a = nextval('s')",
            "UPDATE t SET a = 1; SELECT pg_advisory_lock(1)",
            "DELETE FROM t WHERE a = 'x'",
            "updated",
        ] {
            assert_eq!(plain(sql.as_bytes()), None, "{sql}");
        }
    }
}
