//! The classifier against its decision table (`classify_corpus.txt`) and against properties that
//! must hold for any input: no panic on arbitrary bytes, comments and whitespace around a
//! statement change nothing, a batch takes the strongest class of its statements.

use std::fmt::Write as _;
use std::sync::OnceLock;

use meridian_core::classify::{
    Classification, Classifier, Flags, IsolationLevel, Reason, StatementClass, TransactionControl,
};
use proptest::prelude::*;

/// One case of the decision table.
#[derive(Debug, Clone)]
struct Case {
    /// Line of the `==` header.
    line: usize,
    header: String,
    sql: String,
}

/// Parses the corpus (format documented at the top of the file).
fn parse_corpus(text: &str) -> Vec<Case> {
    let mut cases: Vec<Case> = Vec::new();
    let mut sql_lines: Vec<&str> = Vec::new();
    let finish = |cases: &mut Vec<Case>, sql_lines: &mut Vec<&str>| {
        while sql_lines.last().is_some_and(|line| line.trim().is_empty()) {
            sql_lines.pop();
        }
        if let Some(case) = cases.last_mut() {
            case.sql = sql_lines.join("\n");
        }
        sql_lines.clear();
    };
    for (index, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(header) = line.strip_prefix("==") {
            finish(&mut cases, &mut sql_lines);
            cases.push(Case {
                line: index + 1,
                header: header.trim().to_owned(),
                sql: String::new(),
            });
        } else if !cases.is_empty() {
            sql_lines.push(line);
        } else {
            assert!(
                line.trim().is_empty(),
                "line {}: text before the first case",
                index + 1
            );
        }
    }
    finish(&mut cases, &mut sql_lines);
    cases
}

fn corpus() -> &'static [Case] {
    static CORPUS: OnceLock<Vec<Case>> = OnceLock::new();
    CORPUS.get_or_init(|| parse_corpus(include_str!("classify_corpus.txt")))
}

fn classifier() -> &'static Classifier {
    static CLASSIFIER: OnceLock<Classifier> = OnceLock::new();
    CLASSIFIER.get_or_init(Classifier::default)
}

/// The corpus's spelling of a reason.
fn reason_code(reason: &Reason) -> String {
    match reason {
        Reason::Empty => "empty".to_owned(),
        Reason::Query => "query".to_owned(),
        Reason::Command(command) => format!("{command:?}"),
        Reason::LockingRead(strength) => format!("lock:{strength:?}"),
        Reason::DataModifyingCte(command) => format!("cte:{command:?}"),
        Reason::SelectInto => "into".to_owned(),
        Reason::WriteFunction(name) => format!("fn:{name}"),
        Reason::SessionFunction(name) => format!("session-fn:{name}"),
        Reason::UnknownStatement(word) => format!("unknown:{word}"),
        Reason::Unterminated => "unterminated".to_owned(),
        Reason::TooDeep => "too-deep".to_owned(),
        Reason::TooLong => "too-long".to_owned(),
    }
}

fn class_code(class: &StatementClass) -> &'static str {
    match class {
        StatementClass::Empty => "empty",
        StatementClass::Read => "read",
        StatementClass::Transaction(_) => "transaction",
        StatementClass::SessionState => "session",
        StatementClass::Write => "write",
        StatementClass::Ddl => "ddl",
        StatementClass::Unknown => "unknown",
    }
}

fn transaction_code(control: &TransactionControl) -> &'static str {
    match control {
        TransactionControl::Begin { .. } => "begin",
        TransactionControl::Commit { .. } => "commit",
        TransactionControl::Rollback { .. } => "rollback",
        TransactionControl::Savepoint => "savepoint",
        TransactionControl::ReleaseSavepoint => "release",
        TransactionControl::RollbackToSavepoint => "rollback-to",
        TransactionControl::SetTransaction { .. } => "set-transaction",
        TransactionControl::PrepareTransaction => "prepare-transaction",
        TransactionControl::CommitPrepared => "commit-prepared",
        TransactionControl::RollbackPrepared => "rollback-prepared",
    }
}

fn isolation_code(level: IsolationLevel) -> &'static str {
    match level {
        IsolationLevel::ReadUncommitted => "read-uncommitted",
        IsolationLevel::ReadCommitted => "read-committed",
        IsolationLevel::RepeatableRead => "repeatable-read",
        IsolationLevel::Serializable => "serializable",
    }
}

fn yes_no(value: Option<bool>) -> Option<&'static str> {
    value.map(|v| if v { "yes" } else { "no" })
}

/// Every difference between a case's expectations and the classification, as messages.
fn check(case: &Case, got: &Classification) -> Vec<String> {
    let mut errors = Vec::new();
    let mut words = case.header.split_whitespace();
    let Some(class) = words.next() else {
        return vec!["header has no class".to_owned()];
    };
    let mut keys = std::collections::BTreeMap::new();
    for word in words {
        match word.split_once('=') {
            Some((key, value)) => {
                keys.insert(key, value);
            }
            None => errors.push(format!("malformed header word {word:?}")),
        }
    }
    let mut expect = |what: &str, expected: Option<&str>, actual: Option<String>| {
        if expected.map(str::to_owned) != actual {
            errors.push(format!(
                "{what}: expected {}, got {}",
                expected.unwrap_or("none"),
                actual.as_deref().unwrap_or("none")
            ));
        }
    };
    expect(
        "class",
        Some(class),
        Some(class_code(&got.class).to_owned()),
    );
    if let Some(&why) = keys.get("why") {
        expect("why", Some(why), Some(reason_code(&got.reason)));
    }
    expect(
        "pin",
        keys.get("pin").copied(),
        got.pin.map(|pin| format!("{pin:?}")),
    );
    let default_count = if class == "empty" { "0" } else { "1" };
    expect(
        "n",
        Some(keys.get("n").copied().unwrap_or(default_count)),
        Some(got.statements.to_string()),
    );
    if let Some(&flags) = keys.get("flags") {
        // Compared as sets, in a canonical order.
        let canonical = |names: &mut Vec<&str>| {
            names.sort_unstable();
            if names.is_empty() {
                "NONE".to_owned()
            } else {
                names.join(",")
            }
        };
        let mut expected: Vec<&str> = flags.split(',').filter(|f| *f != "NONE").collect();
        let mut actual: Vec<&str> = got.flags.names().collect();
        expect(
            "flags",
            Some(&canonical(&mut expected)),
            Some(canonical(&mut actual)),
        );
    }
    match got.class {
        StatementClass::Transaction(control) => {
            expect(
                "tx",
                keys.get("tx").copied(),
                Some(transaction_code(&control).to_owned()),
            );
            let (read_only, isolation, chain) = match control {
                TransactionControl::Begin {
                    read_only,
                    isolation,
                }
                | TransactionControl::SetTransaction {
                    read_only,
                    isolation,
                } => (read_only, isolation, false),
                TransactionControl::Commit { chain } | TransactionControl::Rollback { chain } => {
                    (None, None, chain)
                }
                _ => (None, None, false),
            };
            expect(
                "ro",
                keys.get("ro").copied(),
                yes_no(read_only).map(str::to_owned),
            );
            expect(
                "iso",
                keys.get("iso").copied(),
                isolation.map(|level| isolation_code(level).to_owned()),
            );
            expect(
                "chain",
                keys.get("chain").copied(),
                chain.then(|| "yes".to_owned()),
            );
        }
        _ => {
            for key in ["tx", "ro", "iso", "chain"] {
                if keys.contains_key(key) {
                    errors.push(format!("{key}= given but the class is not transaction"));
                }
            }
        }
    }
    errors
}

#[test]
fn the_corpus_is_large_and_varied() {
    let cases = corpus();
    assert!(cases.len() >= 150, "only {} cases", cases.len());
    for class in [
        "empty",
        "read",
        "write",
        "ddl",
        "session",
        "transaction",
        "unknown",
    ] {
        let count = cases
            .iter()
            .filter(|case| case.header.split_whitespace().next() == Some(class))
            .count();
        assert!(count >= 4, "only {count} cases of class {class}");
    }
}

#[test]
fn every_corpus_case_is_classified_as_expected() {
    let mut report = String::new();
    let mut failures = 0;
    for case in corpus() {
        let got = classifier().classify(case.sql.as_bytes());
        let errors = check(case, &got);
        if !errors.is_empty() {
            failures += 1;
            let _ = writeln!(
                report,
                "classify_corpus.txt:{}: == {}\n    sql: {:?}\n    got: {got}  ({got:?})",
                case.line, case.header, case.sql
            );
            for error in errors {
                let _ = writeln!(report, "    {error}");
            }
        }
    }
    assert!(
        failures == 0,
        "{failures} of {} corpus cases failed:\n{report}",
        corpus().len()
    );
}

#[test]
fn the_corpus_checker_detects_mismatches() {
    // Guard against a checker that accepts anything.
    let case = Case {
        line: 0,
        header: "read why=query".to_owned(),
        sql: String::new(),
    };
    let got = classifier().classify(b"DELETE FROM t");
    assert_eq!(check(&case, &got).len(), 2);
    let pinned = classifier().classify(b"LISTEN ch");
    let case = Case {
        header: "write why=Listen".to_owned(),
        ..case
    };
    assert_eq!(
        check(&case, &pinned),
        vec!["pin: expected none, got Listen"]
    );
}

/// Whitespace and comments that can stand before or after any statement.
fn padding() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            " ",
            "\n",
            "\t",
            "\r\n",
            "/* c */",
            "/* INSERT INTO t VALUES (1); */",
            "/* /* nested DELETE */ FROM t */",
            "-- DROP TABLE t;\n",
            "--\n",
        ]),
        0..4,
    )
    .prop_map(|parts| parts.concat())
}

fn corpus_index() -> impl Strategy<Value = usize> {
    0..corpus().len()
}

/// Fragments that exercise the lexer's corners when glued together at random.
fn sql_soup() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop::sample::select(vec![
            "SELECT",
            " ",
            "'",
            "''",
            "\"",
            "E'",
            "\\",
            "$$",
            "$a$",
            "$1",
            "/*",
            "*/",
            "--",
            "\n",
            ";",
            "(",
            ")",
            "INSERT",
            "INTO",
            "FOR",
            "UPDATE",
            "WITH",
            "AS",
            "nextval",
            "U&\"",
            "UESCAPE",
            "BEGIN",
            "ATOMIC",
            "END",
            "CREATE FUNCTION",
            "EXPLAIN ANALYZE",
            "COPY",
            "TO",
            "STDOUT",
            "é",
            "\u{0}",
            "x",
            "1",
            ".",
            ",",
        ]),
        0..40,
    )
    .prop_map(|parts| parts.concat().into_bytes())
}

/// Properties that hold for any text: per-statement classifications fold into the batch's,
/// spans are ordered and inside the text.
fn assert_consistent(sql: &[u8]) {
    let classifier = classifier();
    let whole = classifier.classify(sql);
    let mut folded_statements = 0;
    let mut previous_end = 0;
    let mut strongest = StatementClass::Empty;
    for statement in classifier.statements(sql) {
        assert!(statement.span.start >= previous_end && statement.span.end <= sql.len());
        assert!(statement.span.start <= statement.span.end);
        previous_end = statement.span.end;
        folded_statements += statement.classification.statements;
        if statement.classification.class.is_stronger_than(strongest) {
            strongest = statement.classification.class;
        }
    }
    assert_eq!(whole.statements, folded_statements);
    assert_eq!(whole.class, strongest);
    assert_eq!(
        whole.flags.contains(Flags::MULTIPLE_STATEMENTS),
        whole.statements > 1
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(sql in prop::collection::vec(any::<u8>(), 0..512)) {
        assert_consistent(&sql);
    }

    #[test]
    fn sql_like_soup_never_panics(sql in sql_soup()) {
        assert_consistent(&sql);
    }

    #[test]
    fn comments_and_whitespace_around_a_statement_change_nothing(
        index in corpus_index(),
        before in padding(),
        after in padding(),
    ) {
        let sql = &corpus()[index].sql;
        // A statement may end inside a `--` comment: start the padding on a new line.
        let wrapped = format!("{before}{sql}\n{after}");
        prop_assert_eq!(
            classifier().classify(wrapped.as_bytes()),
            classifier().classify(sql.as_bytes()),
            "{:?}", wrapped
        );
    }

    #[test]
    fn a_comment_naming_a_write_changes_nothing(index in corpus_index()) {
        let sql = &corpus()[index].sql;
        let expected = classifier().classify(sql.as_bytes());
        let prefixed = format!("/* INSERT */{sql}");
        prop_assert_eq!(classifier().classify(prefixed.as_bytes()), expected);
        let suffixed = format!("{sql}-- DELETE");
        prop_assert_eq!(classifier().classify(suffixed.as_bytes()), expected);
    }

    #[test]
    fn a_batch_takes_the_strongest_class(first in corpus_index(), second in corpus_index()) {
        let (a, b) = (&corpus()[first].sql, &corpus()[second].sql);
        let classify = |sql: &str| classifier().classify(sql.as_bytes());
        let (ca, cb) = (classify(a), classify(b));
        // An unterminated first statement swallows the second: nothing to combine.
        prop_assume!(!ca.flags.contains(Flags::UNTERMINATED));
        let batch = classify(&format!("{a}\n;\n{b}"));
        let winner = if cb.class.is_stronger_than(ca.class) { cb } else { ca };
        prop_assert_eq!(batch.class, winner.class);
        prop_assert_eq!(batch.reason, winner.reason);
        prop_assert_eq!(batch.pin, ca.pin.or(cb.pin));
        prop_assert_eq!(batch.statements, ca.statements + cb.statements);
    }
}
