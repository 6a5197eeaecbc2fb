//! The common cases decided from their bytes: a plain `SELECT`, `UPDATE`, `DELETE` or
//! `INSERT`, and a lone `BEGIN`, `COMMIT`, `END` or `ROLLBACK`, the statements a proxy relays
//! most.
//!
//! [`plain`] recognises only texts that the full classifier would call a plain read (class
//! `Read`, reason `Query`) or a plain write of their command (class `Write`, reason `UPDATE`,
//! `DELETE` or `INSERT`), with no flags, no pin and one statement, or one of the four
//! transaction control words alone (whose classifications the classifier holds ready). It
//! answers in one pass over the bytes, without tokens: no string, quoted identifier, dollar
//! quote or comment (so every word is SQL), no call (a word before a parenthesis), and, for a
//! `SELECT`, no parenthesis at all (no subquery or CTE) and none of the words that can make a
//! query write (`FOR` of a locking clause, `INTO`, and `INSERT`, `UPDATE`, `DELETE`, `MERGE`,
//! which the scan takes as commands; in a write only calls count). An `INSERT` may have the
//! parentheses of its column list, rows and expressions, which are not calls. Anything it is
//! not sure of, it leaves to the full classifier: `None` costs one partial pass, never a wrong
//! answer. A test holds it to the full classifier's verdict over random texts built from the
//! characters and words that matter, and over the statement corpus.

use super::classification::Command;
use super::lexer::is_space;

/// A statement [`plain`] recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plain {
    /// A `SELECT` that reads.
    Read,
    /// An `UPDATE`, `DELETE` or `INSERT` that calls nothing.
    Write(Command),
    /// The transaction control statement `TRANSACTION_WORDS[i]`, alone.
    Transaction(usize),
}

/// The transaction control statements of one word that [`plain`] recognises.
pub(super) const TRANSACTION_WORDS: [&[u8]; 4] = [b"begin", b"commit", b"end", b"rollback"];

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
/// statement), parentheses (allowed in an `INSERT` unless they make a call); the others
/// (quotes, backslash, control and non-ASCII bytes) send the text to the full classifier.
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
/// it is not or when telling needs the full classifier. `inserts`: whether `INSERT`s may be
/// decided (not when the side-effecting functions include one named `values`).
pub(super) fn plain(sql: &[u8], inserts: bool) -> Option<Plain> {
    let start = skip_space(sql, 0);
    let i = word_end(sql, start);
    let word = &sql[start..i];
    let plain = match word.len() {
        6 if word.eq_ignore_ascii_case(b"select") => Plain::Read,
        6 if word.eq_ignore_ascii_case(b"update") => Plain::Write(Command::Update),
        6 if word.eq_ignore_ascii_case(b"delete") => Plain::Write(Command::Delete),
        6 if inserts && word.eq_ignore_ascii_case(b"insert") => Plain::Write(Command::Insert),
        3..=8 => {
            let k = TRANSACTION_WORDS
                .iter()
                .position(|known| word.eq_ignore_ascii_case(known))?;
            // Alone: nothing but a final `;` may follow.
            let rest = skip_space(sql, i);
            return (rest == sql.len() || end_of_statement(sql, rest))
                .then_some(Plain::Transaction(k));
        }
        _ => return None,
    };
    // The command must be a word of its own (`select$1` is an identifier).
    if sql.get(i) == Some(&b'$') {
        return None;
    }
    match plain {
        Plain::Write(Command::Insert) => insert(sql, i),
        Plain::Write(command) => write(sql, i, command),
        _ => select(sql, i),
    }
}

/// The rest of a `SELECT` from `i`: no parenthesis, and none of the key words that make a
/// query write.
fn select(sql: &[u8], mut i: usize) -> Option<Plain> {
    let n = sql.len();
    loop {
        let word = i;
        i = word_end(sql, i);
        if !harmless(&sql[word..i]) {
            return None;
        }
        while i < n && is(sql[i], NEUTRAL) {
            i += 1;
        }
        let Some(&b) = sql.get(i) else {
            return Some(Plain::Read);
        };
        if is(b, WORD) {
            continue;
        }
        if !other_byte_is_harmless(sql, i) {
            return end_of_statement(sql, i).then_some(Plain::Read);
        }
        i += 1;
    }
}

/// The rest of an `UPDATE`, `DELETE` or `INSERT` from `i`: only calls count in a write, so the
/// words pass with the bytes that mean nothing here. A parenthesis (only in an `INSERT`, whose
/// column list [`insert`] has passed) is allowed unless a word other than `VALUES` stands
/// before it: the full classifier's scan takes `name (` for a call, and `VALUES (` for a call
/// of a function named `values`, which [`plain`] is told does not pin or write.
fn write(sql: &[u8], mut i: usize, command: Command) -> Option<Plain> {
    let parens = command == Command::Insert;
    loop {
        while i < sql.len() && BYTES[sql[i] as usize] != 0 {
            i += 1;
        }
        let Some(&b) = sql.get(i) else {
            return Some(Plain::Write(command));
        };
        let allowed = match b {
            b'(' => parens && !follows_name(sql, i),
            b')' => parens,
            _ => other_byte_is_harmless(sql, i),
        };
        if !allowed {
            return end_of_statement(sql, i).then_some(Plain::Write(command));
        }
        i += 1;
    }
}

/// Whether the byte at `i`, of none of the classes, is part of the SQL and nothing more: a
/// parameter's `$`, a `-` or `/` that does not open a comment.
fn other_byte_is_harmless(sql: &[u8], i: usize) -> bool {
    let next = sql.get(i + 1).copied();
    match sql[i] {
        b'$' => next.is_some_and(|n| n.is_ascii_digit()),
        b'-' => next != Some(b'-'),
        b'/' => next != Some(b'*'),
        _ => false,
    }
}

/// Whether the byte at `i` is a `;` followed by nothing but whitespace.
fn end_of_statement(sql: &[u8], i: usize) -> bool {
    sql[i] == b';' && sql[i + 1..].iter().all(|&b| is(b, SPACE))
}

/// Whether the `(` at `i` follows a word other than `VALUES` (whitespace between).
fn follows_name(sql: &[u8], i: usize) -> bool {
    let end = sql[..i]
        .iter()
        .rposition(|&b| !is(b, SPACE))
        .map_or(0, |p| p + 1);
    let start = sql[..end]
        .iter()
        .rposition(|&b| !is(b, WORD))
        .map_or(0, |p| p + 1);
    start < end && !sql[start..end].eq_ignore_ascii_case(b"values")
}

/// The rest of an `INSERT` from `i`, after its key word: `INTO`, the table's name (possibly
/// qualified) and its column list (which the full classifier's scan does not take for a
/// call's arguments), then the rest as [`write`] reads it.
fn insert(sql: &[u8], i: usize) -> Option<Plain> {
    let mut i = skip_space(sql, i);
    let into = word_end(sql, i);
    if i == into || !sql[i..into].eq_ignore_ascii_case(b"into") {
        return None;
    }
    i = skip_space(sql, into);
    // The table: words joined by dots.
    loop {
        let end = word_end(sql, i);
        if end == i {
            return None;
        }
        i = end;
        if sql.get(i) != Some(&b'.') {
            break;
        }
        i += 1;
    }
    i = skip_space(sql, i);
    if sql.get(i) == Some(&b'(') {
        // The column list: names and commas.
        i += 1;
        loop {
            match sql.get(i) {
                Some(b')') => break,
                Some(&b) if is(b, WORD) || is(b, SPACE) || b == b',' || b == b'.' => i += 1,
                _ => return None,
            }
        }
        i += 1;
    }
    write(sql, i, Command::Insert)
}

/// The first byte at or after `i` that is not whitespace (or the end).
fn skip_space(sql: &[u8], mut i: usize) -> usize {
    while i < sql.len() && is(sql[i], SPACE) {
        i += 1;
    }
    i
}

/// The end of the run of word bytes starting at `i`.
fn word_end(sql: &[u8], mut i: usize) -> usize {
    while i < sql.len() && is(sql[i], WORD) {
        i += 1;
    }
    i
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
        plain(sql.as_bytes(), true) == Some(Plain::Read)
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
            assert!(plain(sql.as_bytes(), true).is_none(), "{sql}");
        }
    }

    #[test]
    fn plain_updates_and_deletes_are_writes_of_their_command() {
        let update = b"UPDATE pgbench_accounts SET abalance = abalance + -4381 WHERE aid = 60;";
        assert_eq!(plain(update, true), Some(Plain::Write(Command::Update)));
        let delete = b"delete from t where id = $1 returning id, for_x, into_y";
        assert_eq!(plain(delete, true), Some(Plain::Write(Command::Delete)));
        for sql in [
            "UPDATE t SET a = nextval('s')",
            "UPDATE t SET a = 1; SELECT pg_advisory_lock(1)",
            "DELETE FROM t WHERE a = 'x'",
            "updated",
        ] {
            assert_eq!(plain(sql.as_bytes(), true), None, "{sql}");
        }
    }

    #[test]
    fn lone_transaction_control_words_are_recognised() {
        for (sql, k) in [
            ("BEGIN;", 0),
            ("  commit", 1),
            ("END ;  \n", 2),
            ("Rollback", 3),
        ] {
            assert_eq!(plain(sql.as_bytes(), true), Some(Plain::Transaction(k)));
        }
        for sql in [
            "BEGIN ISOLATION LEVEL SERIALIZABLE",
            "BEGIN; SELECT 1",
            "COMMIT AND CHAIN",
            "END$1",
            "ENDX",
            "ROLLBACK TO SAVEPOINT a",
            "BEGIN -- comment",
        ] {
            assert_eq!(plain(sql.as_bytes(), true), None, "{sql}");
        }
    }

    #[test]
    fn inserts_of_values_without_calls_are_writes() {
        let insert = Some(Plain::Write(Command::Insert));
        for sql in [
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) \
             VALUES (37, 4, 604211, -4381, CURRENT_TIMESTAMP);",
            "insert into s.t values ($1, $2), ($3, (4 + 5) * 6) returning id",
            "INSERT INTO t(a) VALUES(1)",
            "INSERT INTO t DEFAULT VALUES",
            "INSERT INTO t SELECT a FROM u",
            "INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING ;\n",
        ] {
            assert_eq!(plain(sql.as_bytes(), true), insert, "{sql}");
        }
        for sql in [
            "INSERT INTO t VALUES (nextval('s'))",
            "INSERT INTO t VALUES (now())",
            "INSERT INTO t VALUES (1) ON CONFLICT (a) DO NOTHING",
            "INSERT INTO t AS x (a) VALUES (1)",
            "INSERT INTO t (a(1)) VALUES (1)",
            "INSERT INTO \"t\" VALUES (1)",
            "INSERT INTO t VALUES ('x')",
            "INSERT INTO t VALUES (1); SELECT 1",
            "INSERT t VALUES (1)",
            "INSERTX INTO t VALUES (1)",
        ] {
            assert_eq!(plain(sql.as_bytes(), true), None, "{sql}");
        }
        // With a side-effecting function named `values`, `VALUES (` is a call to it.
        assert_eq!(plain(b"INSERT INTO t VALUES (1)", false), None);
    }
}
