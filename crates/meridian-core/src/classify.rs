//! Statement classification: is this SQL a read, a write, DDL, transaction control or session
//! state, decided from its text alone, fast enough to run on every query a proxy relays.
//!
//! A [`Classifier`] holds the set of side-effecting functions (the built-in
//! [`DEFAULT_WRITE_FUNCTIONS`] plus patterns from configuration);
//! [`Classifier::classify`] turns a query string into a [`Classification`]:
//!
//! ```
//! use meridian_core::classify::{Classifier, PinReason, Reason, StatementClass};
//!
//! let classifier = Classifier::default();
//! let read = classifier.classify(b"SELECT abalance FROM pgbench_accounts WHERE aid = $1");
//! assert!(read.is_read_only());
//!
//! let locking = classifier.classify(b"SELECT * FROM jobs FOR NO KEY UPDATE SKIP LOCKED");
//! assert_eq!(locking.class, StatementClass::Write);
//! assert_eq!(locking.reason.to_string(), "locking read: FOR NO KEY UPDATE");
//!
//! let lock = classifier.classify(b"SELECT pg_advisory_lock(42)");
//! assert_eq!(lock.class, StatementClass::Write);
//! assert_eq!(lock.pins_session(), Some(PinReason::SessionAdvisoryLock));
//!
//! // Comments, strings and dollar quotes never count.
//! let tricky = classifier.classify(b"/* DELETE */ SELECT ';DELETE FROM t', $x$ INSERT $x$");
//! assert_eq!(tricky.reason, Reason::Query);
//! ```
//!
//! For `analyze-query`, [`shape()`] reads the same tokens for what a query asks of the
//! planner (joins, subqueries, CTEs, aggregation, windows, limits) and grades it as a
//! [`Complexity`] with [`Finding`]s such as `UPDATE` without `WHERE`.
//!
//! # How it decides
//! A hand-written lexer (submodule `lexer`, PostgreSQL docs section 4.1) splits the text
//! into tokens without allocating, skipping comments and keeping string constants, quoted
//! identifiers and dollar-quoted bodies whole, so nothing inside them is ever read as SQL. The
//! text is cut into statements at semicolons (a plain `SELECT`, `UPDATE` or `DELETE` without
//! parentheses, quotes or comments is recognised from its bytes first, submodule `plain`).
//! Each statement is decided by its leading key words; queries (`SELECT`, `WITH`, `VALUES`,
//! `TABLE`) are scanned once more for what makes them write: a data-modifying `WITH`,
//! `SELECT ... INTO`, a locking clause, a call to a side-effecting function. A batch takes the
//! strongest class of its statements, in the order
//! `Empty < Read < Transaction < SessionState < Write < Ddl < Unknown`.
//!
//! There is no full parser behind it, not even for rare cases: PostgreSQL's grammar
//! (`pg_query`) costs 55–117 µs a parse here and a clang toolchain to build. The few texts a
//! parse would settle (an unquoted column named `update` in a query, a table alias with a
//! column list that matches a function pattern) are decided towards the primary instead, and
//! what the classifier does not recognise is [`StatementClass::Unknown`], also routed to the
//! primary (submodule `statement` lists these choices). A [`Classification`] is `Copy` and owns
//! its data, so the proxy can cache it per prepared statement (extended protocol `Parse`).
//!
//! # What it cannot see
//! A user-defined function that writes, called from a `SELECT`, looks like a read: no lexical
//! check can know what a function body does. Operators can list such functions as extra
//! patterns; the proxy's safety net retries on the primary a read that a replica refuses with
//! SQLSTATE 25006 before any row was sent. Likewise a view with rules, or `query_to_xml` and
//! `dblink` running SQL held in a string.
//!
//! The classifier assumes `standard_conforming_strings = on` (the default since PostgreSQL
//! 9.1), under which a backslash in `'...'` is an ordinary character. With it off, backslashes
//! escape quotes and string ends move: tell the classifier with
//! [`Classifier::standard_conforming_strings`] (the server reports the setting in a
//! `ParameterStatus` message).
//!
//! # Cost
//! Measured with `cargo bench -p meridian-core --bench classify` (release build, median over
//! 1,000 samples of about 50 µs of calls each; the benchmark also prints the 99th percentile
//! and the minimum) on this project's 2-core machine, run after the same benchmark built
//! without the byte-level shortcut for plain statements (submodule `plain`) and before it
//! again, 2026-12-07 (the medians of those two runs on the left):
//!
//! | statement | bytes | without the shortcut | median |
//! |---|---|---|---|
//! | pgbench select `SELECT abalance FROM pgbench_accounts WHERE aid = $1;` | 53 | 0.22 µs | 0.05–0.10 µs |
//! | pgbench update `UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;` | 68 | 0.15–0.27 µs | 0.05 µs |
//! | ORM `INSERT INTO "orders" (5 columns) VALUES ($1, ..., $5) RETURNING "id"` | 120 | 0.25 µs | 0.24 µs |
//! | ORM `SELECT "users"."id", ... WHERE "users"."email" = $1 LIMIT $2` | 101 | 0.20 µs | 0.19 µs |
//! | `SELECT` of 5 columns over two joins, `WHERE`, `ORDER BY`, `LIMIT` | 242 | 0.65 µs | 0.28 µs |
//! | job queue `SELECT ... FOR UPDATE SKIP LOCKED` | 129 | 0.37 µs | 0.40 µs |
//! | `BEGIN` | 5 | 0.04 µs | 0.05 µs |
//! | long tricky statement: nested comments, strings and dollar quotes holding write key words, recursive and materialized CTEs, `FOR UPDATE OF ... SKIP LOCKED` | 1,531 | 3.2 µs | 3.1 µs |
//!
//! An earlier session measured 2–3 times these figures on a busier machine (load average 6
//! to 8). The token path costs about 2–3 ns a byte, the shortcut about 1 ns; neither
//! allocates. A full `pg_query` parse costs 55–117 µs on the same machines. In the proxy,
//! under `pgbench -S`, the classifier went from about 2,000 to about 700 instructions per
//! transaction (callgrind).

mod classification;
mod functions;
mod keyword;
mod lexer;
mod plain;
mod shape;
mod statement;

use std::ops::Range;

pub use classification::{
    Classification, Command, Flags, IsolationLevel, LockStrength, NAME_MAX_BYTES, Name, PinReason,
    Reason, StatementClass, TransactionControl,
};
pub use functions::{DEFAULT_WRITE_FUNCTIONS, PatternError};
pub use shape::{Complexity, Finding, MODERATE_MAX_SCORE, SIMPLE_MAX_SCORE, Shape, shape};

use functions::FunctionSet;
use lexer::Lexer;
use plain::Plain;
use statement::{Cursor, MAX_NESTING};

/// Classifies SQL text. Holds the side-effecting function set; cheap to share (`&self`), no
/// interior state.
#[derive(Debug, Clone)]
pub struct Classifier {
    functions: FunctionSet,
    standard_conforming_strings: bool,
    /// Whether the byte-level shortcut may decide an `INSERT ... VALUES (...)`: the scan takes
    /// `VALUES (` for a call of `values`, so not when a pattern matches that name.
    plain_inserts: bool,
    /// The classifications of [`plain::TRANSACTION_WORDS`], for the shortcut.
    transactions: [Classification; 4],
}

impl Classifier {
    /// A classifier with the built-in side-effecting functions ([`DEFAULT_WRITE_FUNCTIONS`])
    /// plus `extra_write_functions`: function names without schema, matched case-insensitively
    /// against unquoted calls and exactly against quoted ones, `*` matching any run of
    /// characters (`audit_*`). The schema of a call is ignored, since `search_path` decides it.
    ///
    /// ```
    /// use meridian_core::classify::{Classifier, StatementClass};
    ///
    /// let classifier = Classifier::new(&["audit_*", "refresh_totals"]).unwrap();
    /// let call = classifier.classify(b"SELECT audit_log_event($1, $2)");
    /// assert_eq!(call.class, StatementClass::Write);
    /// assert!(Classifier::new(&["billing.charge"]).is_err());
    /// ```
    pub fn new<S: AsRef<str>>(extra_write_functions: &[S]) -> Result<Classifier, PatternError> {
        let patterns = DEFAULT_WRITE_FUNCTIONS
            .iter()
            .copied()
            .chain(extra_write_functions.iter().map(AsRef::as_ref));
        Ok(Classifier::with_functions(FunctionSet::new(patterns)?))
    }

    /// A classifier whose side-effecting functions are exactly `patterns`, for operators who
    /// want to drop a built-in one (start from [`DEFAULT_WRITE_FUNCTIONS`]).
    pub fn with_write_functions<S: AsRef<str>>(patterns: &[S]) -> Result<Classifier, PatternError> {
        Ok(Classifier::with_functions(FunctionSet::new(
            patterns.iter().map(AsRef::as_ref),
        )?))
    }

    fn with_functions(functions: FunctionSet) -> Classifier {
        let mut classifier = Classifier {
            plain_inserts: !functions.matches(b"values", true),
            functions,
            standard_conforming_strings: true,
            transactions: [Classification::empty(); 4],
        };
        classifier.transactions =
            plain::TRANSACTION_WORDS.map(|sql| classifier.classify_tokens(sql));
        classifier
    }

    /// Sets whether the server has `standard_conforming_strings` on (the default). Off, a
    /// backslash escapes the next character in `'...'` strings as it does in `E'...'`.
    pub fn standard_conforming_strings(mut self, on: bool) -> Classifier {
        self.standard_conforming_strings = on;
        self
    }

    /// Classifies a query string: one statement, or a batch of statements separated by
    /// semicolons (combined into the strongest class, flagged
    /// [`Flags::MULTIPLE_STATEMENTS`]). The text is bytes in the client's encoding; any bytes
    /// are accepted.
    pub fn classify(&self, sql: &[u8]) -> Classification {
        match plain::plain(sql, self.plain_inserts) {
            Some(Plain::Read) => combine([statement::plain_read()]),
            Some(Plain::Write(command)) => combine([statement::plain_write(command)]),
            Some(Plain::Transaction(k)) => self.transactions[k],
            None => self.classify_tokens(sql),
        }
    }

    /// [`classify`](Self::classify) by the tokens alone, without the byte-level shortcut for
    /// plain statements (which the tests hold to this).
    fn classify_tokens(&self, sql: &[u8]) -> Classification {
        combine(
            self.statements(sql)
                .map(|statement| statement.classification),
        )
    }

    /// The statements of a query string one by one, each with its byte range and its own
    /// classification (for `meridian analyze-query`, or a router that looks at each).
    pub fn statements<'c, 's>(&'c self, sql: &'s [u8]) -> Statements<'c, 's> {
        Statements {
            classifier: self,
            lexer: Lexer::new(sql, self.standard_conforming_strings),
            len: sql.len(),
            finished: false,
        }
    }
}

impl Default for Classifier {
    /// The built-in side-effecting functions, `standard_conforming_strings` on.
    fn default() -> Classifier {
        Classifier::new::<&str>(&[]).expect("the built-in function patterns are valid")
    }
}

/// One statement of a query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassifiedStatement {
    /// Byte range of the statement in the text, from its first token to its last (without the
    /// `;`, leading comments or trailing whitespace).
    pub span: Range<usize>,
    /// The statement's classification.
    pub classification: Classification,
}

/// Iterator over the statements of a query string; see [`Classifier::statements`].
///
/// Empty statements (`;;`) are skipped. If the text ends inside a quote, dollar quote or block
/// comment, the last item is [`StatementClass::Unknown`] with [`Reason::Unterminated`]: the
/// server rejects the whole string, so no statement of it runs (a trailing unterminated comment
/// yields such an item with `statements: 0`).
#[derive(Debug)]
pub struct Statements<'c, 's> {
    classifier: &'c Classifier,
    lexer: Lexer<'s>,
    len: usize,
    finished: bool,
}

impl Iterator for Statements<'_, '_> {
    type Item = ClassifiedStatement;

    fn next(&mut self) -> Option<ClassifiedStatement> {
        if self.finished {
            return None;
        }
        if self.len > Lexer::MAX_LEN {
            // PostgreSQL's own limit for a query string is 1 GB; this is far beyond it.
            self.finished = true;
            return Some(ClassifiedStatement {
                span: 0..self.len,
                classification: Classification::new(StatementClass::Unknown, Reason::TooLong),
            });
        }
        loop {
            let mut cur = Cursor::new(&mut self.lexer);
            let Some(first) = cur.next() else {
                if !cur.at_eof() {
                    continue; // an empty statement between semicolons
                }
                self.finished = true;
                if !self.lexer.unterminated() {
                    return None;
                }
                let mut unterminated = unterminated();
                unterminated.statements = 0;
                return Some(ClassifiedStatement {
                    span: self.len..self.len,
                    classification: unterminated,
                });
            };
            let mut classification =
                statement::statement(&mut cur, &self.classifier.functions, first, MAX_NESTING);
            cur.drain();
            let span = first.start as usize..cur.last_end();
            if self.lexer.unterminated() {
                self.finished = true;
                let flags = classification.flags;
                classification = unterminated();
                classification.flags |= flags;
            }
            return Some(ClassifiedStatement {
                span,
                classification,
            });
        }
    }
}

/// The classification of a batch: the strongest class of its statements, flagged when there
/// are several.
fn combine(statements: impl IntoIterator<Item = Classification>) -> Classification {
    let mut combined = Classification::empty();
    for classification in statements {
        let statements = combined.statements + classification.statements;
        combined.absorb(classification);
        combined.statements = statements;
    }
    if combined.statements > 1 {
        combined.flags |= Flags::MULTIPLE_STATEMENTS;
    }
    combined
}

fn unterminated() -> Classification {
    let mut classification = Classification::new(StatementClass::Unknown, Reason::Unterminated);
    classification.flags |= Flags::UNTERMINATED;
    classification
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(sql: &str) -> Classification {
        Classifier::default().classify(sql.as_bytes())
    }

    #[test]
    fn batches_take_the_strongest_class_and_count_statements() {
        let batch = classify("SELECT 1; UPDATE t SET a = 1; SELECT 2");
        assert_eq!(batch.class, StatementClass::Write);
        assert_eq!(batch.reason, Reason::Command(Command::Update));
        assert_eq!(batch.statements, 3);
        assert!(batch.flags.contains(Flags::MULTIPLE_STATEMENTS));
        let empty = classify(" ;; -- nothing\n/* at all */ ;");
        assert_eq!(empty.class, StatementClass::Empty);
        assert_eq!(empty.statements, 0);
    }

    #[test]
    fn statements_have_spans() {
        let classifier = Classifier::default();
        let sql = "SELECT 1; /* c */ DELETE FROM t ;";
        let spans: Vec<_> = classifier
            .statements(sql.as_bytes())
            .map(|s| &sql[s.span])
            .collect();
        assert_eq!(spans, ["SELECT 1", "DELETE FROM t"]);
    }

    #[test]
    fn unterminated_text_is_unknown() {
        for sql in ["SELECT 'abc", "SELECT 1; /* open", "DO $$ BEGIN"] {
            let c = classify(sql);
            assert_eq!(c.class, StatementClass::Unknown, "{sql}");
            assert_eq!(c.reason, Reason::Unterminated, "{sql}");
            assert!(c.flags.contains(Flags::UNTERMINATED), "{sql}");
        }
    }

    #[test]
    fn standard_conforming_strings_off_moves_string_ends() {
        // On: 'a\' is a whole string and DELETE is a statement. Off: it is all one string.
        let sql = br"SELECT 'a\'; DELETE FROM t; --'";
        assert_eq!(
            Classifier::default().classify(sql).class,
            StatementClass::Write
        );
        let off = Classifier::default().standard_conforming_strings(false);
        assert_eq!(off.classify(sql).class, StatementClass::Read);
        // And the reverse: off, \' hides a quote, so the DELETE is real.
        let hidden = br"SELECT 'a\''; DELETE FROM t; --'";
        assert_eq!(off.classify(hidden).class, StatementClass::Write);
    }

    #[test]
    fn extra_patterns_add_to_the_defaults_and_replacing_drops_them() {
        let extra = Classifier::new(&["refresh_*"]).unwrap();
        assert_eq!(
            extra.classify(b"SELECT refresh_totals()").class,
            StatementClass::Write
        );
        assert_eq!(
            extra.classify(b"SELECT nextval('s')").class,
            StatementClass::Write
        );
        let only = Classifier::with_write_functions(&["refresh_*"]).unwrap();
        assert_eq!(
            only.classify(b"SELECT nextval('s')").class,
            StatementClass::Read
        );
        // Pins do not depend on the configured set: a session lock is session state.
        assert_eq!(
            only.classify(b"SELECT pg_advisory_lock(1)").pin,
            Some(PinReason::SessionAdvisoryLock)
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "EXPLAIN ANALYZE ".repeat(10_000) + "SELECT 1";
        let c = classify(&deep);
        assert_eq!(c.class, StatementClass::Unknown);
        assert_eq!(c.reason, Reason::TooDeep);
        let parens = "(".repeat(100_000) + "SELECT nextval('s')" + &")".repeat(100_000);
        assert_eq!(classify(&parens).class, StatementClass::Write);
    }

    #[test]
    fn display_reads_like_a_sentence() {
        assert_eq!(
            classify("SELECT nextval('orders_id_seq')").to_string(),
            "write: calls nextval()"
        );
        assert_eq!(
            classify("CREATE TEMP TABLE t (a int)").to_string(),
            "DDL: CREATE; pins the session (temporary table)"
        );
        assert_eq!(
            classify("FOO BAR").to_string(),
            "unknown: unknown statement FOO: treated as a write"
        );
        assert_eq!(
            classify("BEGIN READ ONLY").to_string(),
            "transaction control (BEGIN READ ONLY): BEGIN"
        );
    }

    /// The byte-level shortcut for plain statements never changes an answer: over random
    /// `SELECT`s, `UPDATE`s, `DELETE`s, `INSERT`s and transaction control words made of the
    /// words and characters that decide a statement (key words of every case, numbers glued
    /// to letters, quotes, comments, dollar quotes, parentheses, semicolons, non-ASCII),
    /// `classify` equals the full classifier's verdict, also for a classifier that counts
    /// `VALUES (` as a call, and the shortcut takes a good share of each kind of statement (a
    /// shortcut that takes nothing would pass the first check too).
    #[test]
    fn the_plain_statement_shortcut_agrees_with_the_full_classifier() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};

        const HEADS: &[&str] = &[
            "SELECT ",
            "UPDATE t SET ",
            "DELETE FROM t ",
            "INSERT INTO t VALUES (",
            "insert into s.t (a, b) values ",
            "INSERT INTO t ",
            "BEGIN",
            "end ",
            "Commit;",
            "ROLLBACK",
        ];
        const PIECES: &[&str] = &[
            "SELECT",
            "select",
            "a",
            "t.b",
            "FROM",
            "WHERE",
            "for",
            "For",
            "FOR UPDATE",
            "FOR SHARE",
            "for key share",
            "into",
            "INTO",
            "update",
            "Delete",
            "insert",
            "merge",
            "forx",
            "xfor",
            "_for",
            "1",
            "$1",
            "$",
            "$a$",
            "1for",
            "1e5",
            "0x1F",
            ".5",
            "=",
            "<>",
            "-",
            "--",
            "/",
            "/*",
            "*/",
            "*",
            ",",
            ";",
            "'",
            "''",
            "\"",
            "(",
            ")",
            "::int",
            "é",
            "\\",
            "E",
            "U&",
            "&",
            "nextval",
            "pg_advisory_lock",
            "as",
            "with",
            "temp",
            "values",
            "VALUES (",
            "DEFAULT",
            "returning",
            "on conflict",
            "set_config",
            "currval",
        ];
        const GLUE: &[&str] = &[" ", "", "\n", "\t"];
        let text = (
            prop::sample::select(HEADS),
            prop::collection::vec(
                (prop::sample::select(PIECES), prop::sample::select(GLUE)),
                0..12,
            ),
        )
            .prop_map(|(head, parts)| {
                let mut text = String::from(head);
                for (piece, glue) in parts {
                    text.push_str(piece);
                    text.push_str(glue);
                }
                text
            });
        let classifier = Classifier::default();
        // One whose side-effecting functions include `values`: `VALUES (` calls it.
        let values = Classifier::new(&["v*"]).unwrap();
        let taken = std::cell::RefCell::new([0u32; 4]);
        let mut runner = TestRunner::new(Config {
            cases: 30_000,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&text, |text| {
                let sql = text.as_bytes();
                prop_assert_eq!(classifier.classify(sql), classifier.classify_tokens(sql));
                prop_assert_eq!(values.classify(sql), values.classify_tokens(sql));
                let kind = match plain::plain(sql, true) {
                    Some(Plain::Read) => 0,
                    Some(Plain::Write(Command::Update)) => 1,
                    Some(Plain::Write(Command::Delete)) => 2,
                    Some(Plain::Write(_)) => 3,
                    Some(Plain::Transaction(_)) | None => return Ok(()),
                };
                taken.borrow_mut()[kind] += 1;
                Ok(())
            })
            .unwrap();
        let taken = taken.into_inner();
        assert!(
            taken.iter().all(|&n| n > 500),
            "taken by the shortcut: {taken:?}"
        );
    }
}
