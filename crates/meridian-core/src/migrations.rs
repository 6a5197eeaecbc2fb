//! Schema migrations as decisions: which SQL files make a valid migration set, and what
//! `meridian migrate up|down|status` does given the files found and the versions applied.
//!
//! A migration is `<version>_<name>.up.sql` with an optional `<version>_<name>.down.sql`.
//! Versions are decimal digits compared as numbers (`0001` and `1` are the same version) and
//! stored as PostgreSQL `bigint`, so they range over `0..=i64::MAX`; names are `[a-z0-9_]+`.
//! A file whose first line is [`NO_TRANSACTION_MARKER`] runs outside a transaction, statement by
//! statement (PostgreSQL refuses `CREATE INDEX CONCURRENTLY` in any transaction block, the
//! implicit one of a multi-statement query string included); every other file runs in one
//! transaction with the insert or delete of its version row.
//!
//! Invariants the planners keep, whatever the input:
//! - An applied migration whose up file changed (checksum or name), or whose file is gone, is
//!   never silently skipped: [`plan_up`] refuses, and [`plan_down`] refuses to roll it back.
//! - Migrations apply in version order only: a pending version below the highest applied one
//!   is refused (it would run after the migrations numbered above it, which were written
//!   without it), never slipped in.
//! - Every problem is reported at once, each naming its file and the fix, before anything runs.
//!
//! No I/O here: the binary reads the directory, computes checksums (SHA-256 of the up file's
//! bytes), reads the versions table under an advisory lock and carries out the plan.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;

use crate::classify::{Classifier, Reason, StatementClass, TransactionControl};

/// The first line that makes a file run outside a transaction.
pub const NO_TRANSACTION_MARKER: &str = "-- meridian:no-transaction";

/// A migration's version: what the versions table's `bigint` primary key holds.
pub type Version = i64;

/// Which way a file migrates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// `.up.sql`: applies the change.
    Up,
    /// `.down.sql`: reverts it.
    Down,
}

impl Direction {
    /// The file name's ending.
    pub fn suffix(self) -> &'static str {
        match self {
            Direction::Up => ".up.sql",
            Direction::Down => ".down.sql",
        }
    }
}

/// What a migration file's name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName {
    /// The version, as a number.
    pub version: Version,
    /// The name after the version.
    pub name: String,
    /// Up or down.
    pub direction: Direction,
}

/// A version as written on the command line or in a file name: decimal digits that fit a
/// `bigint`. `None` for anything else (signs, spaces and empty text included).
pub fn parse_version(text: &str) -> Option<Version> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Only digits: the one way `parse` can fail is overflow.
    text.parse().ok()
}

/// Reads a file name found in the migrations directory.
///
/// `Ok(None)` for files that are not SQL (a README, `.gitkeep`) and hidden files (editors'
/// temporary files), which are ignored; an error for a `.sql` file that is not a well-formed
/// migration name, since a migration silently skipped is worse than a refusal.
pub fn parse_file_name(file: &str) -> Result<Option<FileName>, LayoutError> {
    if file.starts_with('.') || !file.ends_with(".sql") {
        return Ok(None);
    }
    let (stem, direction) = if let Some(stem) = file.strip_suffix(Direction::Up.suffix()) {
        (stem, Direction::Up)
    } else if let Some(stem) = file.strip_suffix(Direction::Down.suffix()) {
        (stem, Direction::Down)
    } else {
        return Err(LayoutError::NotUpOrDown { file: file.into() });
    };
    let digits = stem.bytes().take_while(u8::is_ascii_digit).count();
    let (version, rest) = stem.split_at(digits);
    let Some(name) = rest.strip_prefix('_').filter(|_| digits > 0) else {
        return Err(LayoutError::BadVersion { file: file.into() });
    };
    let Some(version) = parse_version(version) else {
        return Err(LayoutError::VersionTooLarge { file: file.into() });
    };
    let valid_name = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid_name {
        return Err(LayoutError::BadName { file: file.into() });
    }
    Ok(Some(FileName {
        version,
        name: name.into(),
        direction,
    }))
}

/// One SQL file, read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// Its file name (no directory).
    pub file: String,
    /// Its text.
    pub sql: String,
    /// Whether its first line is [`NO_TRANSACTION_MARKER`].
    pub no_transaction: bool,
    /// The byte ranges of its statements, in order (without the `;`, leading comments or
    /// trailing blanks). A no-transaction file is sent one statement at a time.
    pub statements: Vec<Range<usize>>,
}

impl Script {
    /// Checks the text of `file` and cuts it into statements.
    ///
    /// Refused: a [`NO_TRANSACTION_MARKER`] below the first line (it would do nothing, and
    /// the author meant something); text ending inside a quote, dollar quote or comment (the
    /// server would reject it, or a statement cut at the wrong place would run); in a file run
    /// in a transaction, `BEGIN`, `COMMIT` or `ROLLBACK`, which would end Meridian's
    /// transaction early and record the version apart from the change.
    pub fn inspect(file: &str, sql: String) -> Result<Script, LayoutError> {
        let mut lines = sql.lines();
        let no_transaction = lines
            .next()
            .is_some_and(|first| first.trim_end() == NO_TRANSACTION_MARKER);
        if let Some(index) = lines.position(|line| line.trim() == NO_TRANSACTION_MARKER) {
            return Err(LayoutError::MisplacedMarker {
                file: file.into(),
                line: index + 2,
            });
        }
        let mut statements = Vec::new();
        for statement in Classifier::default().statements(sql.as_bytes()) {
            let classification = statement.classification;
            if classification.class == StatementClass::Unknown
                && classification.reason == Reason::Unterminated
            {
                return Err(LayoutError::Unterminated { file: file.into() });
            }
            let ends_transaction = matches!(
                classification.transaction(),
                Some(
                    TransactionControl::Begin { .. }
                        | TransactionControl::Commit { .. }
                        | TransactionControl::Rollback { .. }
                )
            );
            if ends_transaction && !no_transaction {
                let text = sql.get(statement.span.clone()).unwrap_or_default();
                return Err(LayoutError::TransactionControl {
                    file: file.into(),
                    line: line_of(&sql, statement.span.start),
                    statement: text.split_whitespace().collect::<Vec<_>>().join(" "),
                });
            }
            statements.push(statement.span);
        }
        Ok(Script {
            file: file.into(),
            sql,
            no_transaction,
            statements,
        })
    }
}

/// The 1-based line of byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Where a server error's position falls in a file: PostgreSQL reports a 1-based character
/// position in the query string sent, which began at byte `sent_from` of `text`. Returns the
/// 1-based line and column in the file, or `None` when the position is outside it.
pub fn line_and_column(text: &str, sent_from: usize, position: u32) -> Option<(usize, usize)> {
    let sent = text.get(sent_from..)?;
    let index = usize::try_from(position).ok()?.checked_sub(1)?;
    let (offset, _) = sent.char_indices().nth(index)?;
    let absolute = sent_from + offset;
    let line_start = text[..absolute].rfind('\n').map_or(0, |i| i + 1);
    Some((
        line_of(text, absolute),
        text[line_start..absolute].chars().count() + 1,
    ))
}

/// A file of the directory, read, with its checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundFile {
    /// What its name says.
    pub name: FileName,
    /// Its text, checked.
    pub script: Script,
    /// SHA-256 of its bytes, lower-case hexadecimal (only an up file's is recorded).
    pub checksum: String,
}

/// One migration: an up file and, optionally, its down file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// Its version.
    pub version: Version,
    /// Its name.
    pub name: String,
    /// SHA-256 of the up file's bytes, lower-case hexadecimal.
    pub checksum: String,
    /// The up file.
    pub up: Script,
    /// The down file, if there is one.
    pub down: Option<Script>,
}

/// Pairs the files found into migrations, in version order. Every problem is reported:
/// duplicate versions, a down file without its up file, a down file named differently from
/// its up file.
pub fn assemble(files: Vec<FoundFile>) -> Result<Vec<Migration>, Vec<LayoutError>> {
    let mut errors = Vec::new();
    let mut ups: BTreeMap<Version, FoundFile> = BTreeMap::new();
    let mut downs: BTreeMap<Version, FoundFile> = BTreeMap::new();
    let mut files = files;
    // Deterministic messages whatever order the directory listed them in.
    files.sort_by(|a, b| a.script.file.cmp(&b.script.file));
    for file in files {
        let slot = match file.name.direction {
            Direction::Up => &mut ups,
            Direction::Down => &mut downs,
        };
        match slot.get(&file.name.version) {
            Some(first) => errors.push(LayoutError::DuplicateVersion {
                version: file.name.version,
                first: first.script.file.clone(),
                second: file.script.file,
            }),
            None => {
                slot.insert(file.name.version, file);
            }
        }
    }
    for (version, down) in &downs {
        match ups.get(version) {
            None => errors.push(LayoutError::DownWithoutUp {
                file: down.script.file.clone(),
                expected: sibling(&down.script.file, Direction::Down, Direction::Up),
            }),
            Some(up) if up.name.name != down.name.name => errors.push(LayoutError::NameMismatch {
                up: up.script.file.clone(),
                down: down.script.file.clone(),
            }),
            Some(_) => {}
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(ups
        .into_iter()
        .map(|(version, up)| Migration {
            version,
            name: up.name.name,
            checksum: up.checksum,
            up: up.script,
            down: downs.remove(&version).map(|down| down.script),
        })
        .collect())
}

/// The name of the file of the other direction beside `file`: `0003_c.down.sql` for
/// `0003_c.up.sql`.
fn sibling(file: &str, from: Direction, to: Direction) -> String {
    let stem = file.strip_suffix(from.suffix()).unwrap_or(file);
    format!("{stem}{}", to.suffix())
}

/// Why the files do not make a migration set; each names the file and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// A `.sql` file that is neither an up nor a down file.
    #[error(
        "{file}: a migration file is named <version>_<name>.up.sql or <version>_<name>.down.sql \
         (e.g. 0001_create_users.up.sql): rename it, or move it out of the directory"
    )]
    NotUpOrDown {
        /// The file.
        file: String,
    },
    /// No version (decimal digits followed by `_`) at the start.
    #[error(
        "{file}: the name must start with the version, decimal digits, then `_` and the name \
         (e.g. 0001_create_users.up.sql)"
    )]
    BadVersion {
        /// The file.
        file: String,
    },
    /// A version beyond `bigint`.
    #[error("{file}: the version is larger than 9223372036854775807, the largest bigint")]
    VersionTooLarge {
        /// The file.
        file: String,
    },
    /// The name part is empty or has characters other than `[a-z0-9_]`.
    #[error(
        "{file}: the name after the version must be lower-case letters, digits and `_` \
         (e.g. 0001_create_users.up.sql)"
    )]
    BadName {
        /// The file.
        file: String,
    },
    /// Two up (or two down) files with one version.
    #[error(
        "{first} and {second} have the same version {version} (versions compare as numbers): \
         renumber one of them"
    )]
    DuplicateVersion {
        /// The version.
        version: Version,
        /// The first file, in name order.
        first: String,
        /// The other.
        second: String,
    },
    /// A down file with no up file of its version.
    #[error("{file} has no up file (such as {expected}): add it, or remove the down file")]
    DownWithoutUp {
        /// The down file.
        file: String,
        /// A name the up file could have.
        expected: String,
    },
    /// An up and a down file of one version with different names.
    #[error(
        "{down} does not match {up}: the up and down files of a version carry the same name; \
         rename one of them"
    )]
    NameMismatch {
        /// The up file.
        up: String,
        /// The down file.
        down: String,
    },
    /// The no-transaction marker below the first line.
    #[error(
        "{file}: line {line}: `{marker}` counts only as the file's first line: move it there, \
         or remove it",
        marker = NO_TRANSACTION_MARKER
    )]
    MisplacedMarker {
        /// The file.
        file: String,
        /// Where it is.
        line: usize,
    },
    /// `BEGIN`/`COMMIT`/`ROLLBACK` in a file run in a transaction.
    #[error(
        "{file}: line {line}: `{statement}` would end the transaction the file runs in, apart \
         from its version row: remove it (Meridian begins and commits), or make the first line \
         `{marker}`",
        marker = NO_TRANSACTION_MARKER
    )]
    TransactionControl {
        /// The file.
        file: String,
        /// Where the statement starts.
        line: usize,
        /// The statement.
        statement: String,
    },
    /// The text ends inside a quote, dollar quote or block comment.
    #[error(
        "{file}: the text ends inside a quoted string, dollar quote or /* comment */: close it"
    )]
    Unterminated {
        /// The file.
        file: String,
    },
    /// A file that is not UTF-8 (found by the binary; PostgreSQL takes text).
    #[error("{file}: not UTF-8 text (invalid byte at offset {offset}): save it as UTF-8")]
    NotUtf8 {
        /// The file.
        file: String,
        /// The first invalid byte.
        offset: usize,
    },
}

/// A row of the versions table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The version.
    pub version: Version,
    /// The name it was applied under.
    pub name: String,
    /// SHA-256 of the up file as applied.
    pub checksum: String,
}

/// Why a plan cannot be carried out; each names the file and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// An applied migration's up file has other bytes now.
    #[error(
        "{file} was changed after it was applied (sha256 {applied}… when applied, {now}… now): \
         restore the applied text (e.g. from version control) and put the change in a new \
         migration"
    )]
    Changed {
        /// The version.
        version: Version,
        /// The up file.
        file: String,
        /// The first 12 hexadecimal digits of the recorded checksum.
        applied: String,
        /// The same of the file's checksum.
        now: String,
    },
    /// An applied version's up file carries another name.
    #[error(
        "{file}: version {version} was applied as `{applied_name}`: restore the file's name \
         (a rename is a change to an applied migration)"
    )]
    Renamed {
        /// The version.
        version: Version,
        /// The up file.
        file: String,
        /// The name recorded.
        applied_name: String,
    },
    /// An applied version has no up file.
    #[error(
        "version {version} ({name}) is applied but has no up file in the directory: restore it \
         (e.g. from version control); the versions table records every applied migration"
    )]
    Missing {
        /// The version.
        version: Version,
        /// The name recorded.
        name: String,
    },
    /// A pending version below the highest applied one.
    #[error(
        "{file} is pending but version {latest} ({latest_name}) is already applied: migrations \
         apply in version order, so give it a version above {latest}"
    )]
    OutOfOrder {
        /// The pending version.
        version: Version,
        /// Its up file.
        file: String,
        /// The highest applied version.
        latest: Version,
        /// Its name.
        latest_name: String,
    },
    /// A migration to roll back has no down file.
    #[error("{file} has no down file, so version {version} cannot be rolled back: add {expected}")]
    NoDown {
        /// The version.
        version: Version,
        /// Its up file.
        file: String,
        /// The down file it needs.
        expected: String,
    },
    /// `--steps` beyond what is applied.
    #[error("--steps {steps}: only {applied} migration(s) are applied")]
    TooManySteps {
        /// Asked.
        steps: u32,
        /// Applied.
        applied: usize,
    },
    /// `--to` a version that is not applied.
    #[error(
        "--to {to}: version {to} is not applied; give an applied version (it stays applied), \
         or 0 to roll back every migration"
    )]
    NotApplied {
        /// The version asked.
        to: Version,
    },
}

/// Every problem that stops a plan, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub Vec<Problem>);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Refusal {}

/// How far `down` goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownTarget {
    /// The newest `n` applied migrations.
    Steps(u32),
    /// Every applied migration above this version (which stays applied); 0 for all of them.
    To(Version),
}

/// How an applied migration compares with its file.
fn check_applied(record: &Applied, migration: Option<&Migration>) -> Option<Problem> {
    let Some(migration) = migration else {
        return Some(Problem::Missing {
            version: record.version,
            name: record.name.clone(),
        });
    };
    if migration.name != record.name {
        return Some(Problem::Renamed {
            version: record.version,
            file: migration.up.file.clone(),
            applied_name: record.name.clone(),
        });
    }
    if migration.checksum != record.checksum {
        return Some(Problem::Changed {
            version: record.version,
            file: migration.up.file.clone(),
            applied: short(&record.checksum),
            now: short(&migration.checksum),
        });
    }
    None
}

fn short(checksum: &str) -> String {
    checksum.chars().take(12).collect()
}

fn by_version(found: &[Migration]) -> BTreeMap<Version, &Migration> {
    found.iter().map(|m| (m.version, m)).collect()
}

/// What `up` runs: the pending migrations in version order. Refused when an applied migration
/// changed or lost its file, or a pending one is numbered below the highest applied version.
pub fn plan_up<'m>(
    found: &'m [Migration],
    applied: &[Applied],
) -> Result<Vec<&'m Migration>, Refusal> {
    let files = by_version(found);
    let mut problems: Vec<Problem> = applied
        .iter()
        .filter_map(|record| check_applied(record, files.get(&record.version).copied()))
        .collect();
    let applied_versions: BTreeSet<Version> = applied.iter().map(|a| a.version).collect();
    let latest = applied.iter().max_by_key(|a| a.version);
    let pending: Vec<&Migration> = files
        .values()
        .copied()
        .filter(|m| !applied_versions.contains(&m.version))
        .collect();
    if let Some(latest) = latest {
        problems.extend(
            pending
                .iter()
                .filter(|m| m.version < latest.version)
                .map(|m| Problem::OutOfOrder {
                    version: m.version,
                    file: m.up.file.clone(),
                    latest: latest.version,
                    latest_name: latest.name.clone(),
                }),
        );
    }
    if problems.is_empty() {
        Ok(pending)
    } else {
        Err(Refusal(problems))
    }
}

/// One migration to roll back, and the file that does it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollback<'m> {
    /// The migration.
    pub migration: &'m Migration,
    /// Its down file.
    pub script: &'m Script,
}

/// What `down` runs: the applied migrations `target` selects, newest first. Refused when one
/// of them changed, lost its file or has no down file, or `target` asks for what is not
/// applied. Nothing applied (or nothing above `--to`) is an empty plan.
pub fn plan_down<'m>(
    found: &'m [Migration],
    applied: &[Applied],
    target: DownTarget,
) -> Result<Vec<Rollback<'m>>, Refusal> {
    let files = by_version(found);
    let mut newest_first: Vec<&Applied> = applied.iter().collect();
    newest_first.sort_by_key(|a| std::cmp::Reverse(a.version));
    let selected: Vec<&Applied> = match target {
        DownTarget::Steps(steps) => {
            let count = usize::try_from(steps).unwrap_or(usize::MAX);
            if count > newest_first.len() {
                return Err(Refusal(vec![Problem::TooManySteps {
                    steps,
                    applied: newest_first.len(),
                }]));
            }
            newest_first[..count].to_vec()
        }
        DownTarget::To(to) => {
            if to != 0 && !newest_first.iter().any(|a| a.version == to) {
                return Err(Refusal(vec![Problem::NotApplied { to }]));
            }
            newest_first
                .into_iter()
                .take_while(|a| a.version > to)
                .collect()
        }
    };
    let mut problems = Vec::new();
    let mut plan = Vec::new();
    for record in selected {
        let migration = files.get(&record.version).copied();
        if let Some(problem) = check_applied(record, migration) {
            problems.push(problem);
            continue;
        }
        let Some(migration) = migration else { continue };
        match &migration.down {
            Some(script) => plan.push(Rollback { migration, script }),
            None => problems.push(Problem::NoDown {
                version: migration.version,
                file: migration.up.file.clone(),
                expected: sibling(&migration.up.file, Direction::Up, Direction::Down),
            }),
        }
    }
    if problems.is_empty() {
        Ok(plan)
    } else {
        Err(Refusal(problems))
    }
}

/// A migration's state, as `status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Applied, and its file is as it was.
    Applied,
    /// Not applied yet.
    Pending,
    /// Applied, but its up file changed since (content or name).
    Changed,
    /// Applied, but its up file is gone.
    Missing,
}

impl State {
    /// The word shown.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Applied => "applied",
            State::Pending => "pending",
            State::Changed => "changed",
            State::Missing => "missing",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRow {
    /// The version.
    pub version: Version,
    /// The name (as applied, for an applied migration).
    pub name: String,
    /// Its state.
    pub state: State,
    /// Its up file, when there is one.
    pub file: Option<String>,
}

/// Every version found or applied, in version order, with its state.
pub fn status(found: &[Migration], applied: &[Applied]) -> Vec<StatusRow> {
    let files = by_version(found);
    let records: BTreeMap<Version, &Applied> = applied.iter().map(|a| (a.version, a)).collect();
    let versions: BTreeSet<Version> = files.keys().chain(records.keys()).copied().collect();
    versions
        .into_iter()
        .map(|version| {
            let migration = files.get(&version).copied();
            let record = records.get(&version).copied();
            let state = match record {
                None => State::Pending,
                Some(record) => match check_applied(record, migration) {
                    None => State::Applied,
                    Some(Problem::Missing { .. }) => State::Missing,
                    Some(_) => State::Changed,
                },
            };
            StatusRow {
                version,
                name: record
                    .map(|r| r.name.clone())
                    .or_else(|| migration.map(|m| m.name.clone()))
                    .unwrap_or_default(),
                state,
                file: migration.map(|m| m.up.file.clone()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn script(file: &str, sql: &str) -> Script {
        Script::inspect(file, sql.into()).unwrap()
    }

    fn found(file: &str, sql: &str, checksum: &str) -> FoundFile {
        FoundFile {
            name: parse_file_name(file).unwrap().unwrap(),
            script: script(file, sql),
            checksum: checksum.into(),
        }
    }

    /// Migration `version` named `m<version>`, checksum `c<version>`, with a down file.
    fn migration(version: Version) -> Migration {
        let up = format!("{version:04}_m{version}.up.sql");
        let down = format!("{version:04}_m{version}.down.sql");
        Migration {
            version,
            name: format!("m{version}"),
            checksum: format!("c{version}"),
            up: script(&up, "SELECT 1"),
            down: Some(script(&down, "SELECT 1")),
        }
    }

    fn applied(version: Version) -> Applied {
        Applied {
            version,
            name: format!("m{version}"),
            checksum: format!("c{version}"),
        }
    }

    fn versions<'a>(plan: impl IntoIterator<Item = &'a Migration>) -> Vec<Version> {
        plan.into_iter().map(|m| m.version).collect()
    }

    fn rolled_back(plan: &[Rollback<'_>]) -> Vec<Version> {
        plan.iter().map(|r| r.migration.version).collect()
    }

    #[test]
    fn file_names_give_version_name_and_direction() {
        assert_eq!(
            parse_file_name("0001_create_users.up.sql"),
            Ok(Some(FileName {
                version: 1,
                name: "create_users".into(),
                direction: Direction::Up,
            }))
        );
        assert_eq!(
            parse_file_name("20261207120000_add_index_2.down.sql"),
            Ok(Some(FileName {
                version: 20_261_207_120_000,
                name: "add_index_2".into(),
                direction: Direction::Down,
            }))
        );
        // The name may itself hold digits and underscores after the first `_`.
        assert_eq!(
            parse_file_name("7_2024_backfill.up.sql")
                .unwrap()
                .unwrap()
                .name,
            "2024_backfill"
        );
    }

    #[test]
    fn files_that_are_not_sql_or_hidden_are_ignored() {
        for file in [
            "README.md",
            ".gitkeep",
            ".0001_x.up.sql",
            "0001_x.up.sql.swp",
            "notes",
        ] {
            assert_eq!(parse_file_name(file), Ok(None), "{file}");
        }
    }

    #[test]
    fn malformed_sql_file_names_are_refused_naming_the_file() {
        let cases = [
            ("0001_init.sql", "NotUpOrDown"),
            ("0001_init.UP.sql", "NotUpOrDown"),
            ("init.up.sql", "BadVersion"),
            ("0001.up.sql", "BadVersion"),
            ("_x.up.sql", "BadVersion"),
            ("0001-init.up.sql", "BadVersion"),
            ("v1_init.up.sql", "BadVersion"),
            ("0001_.up.sql", "BadName"),
            ("0001_Init.up.sql", "BadName"),
            ("0001_add-users.down.sql", "BadName"),
            ("0001_a b.up.sql", "BadName"),
            ("0001_é.up.sql", "BadName"),
            ("99999999999999999999_big.up.sql", "VersionTooLarge"),
        ];
        for (file, kind) in cases {
            let error = parse_file_name(file).unwrap_err();
            assert!(format!("{error:?}").starts_with(kind), "{file}: {error:?}");
            assert!(error.to_string().starts_with(file), "{file}: {error}");
        }
        // The largest bigint is still a version.
        assert_eq!(
            parse_file_name("9223372036854775807_last.up.sql")
                .unwrap()
                .unwrap()
                .version,
            i64::MAX
        );
    }

    #[test]
    fn versions_from_the_command_line_are_digits_only() {
        assert_eq!(parse_version("0042"), Some(42));
        assert_eq!(parse_version("0"), Some(0));
        for text in ["", "-1", "+1", " 1", "1e3", "9223372036854775808"] {
            assert_eq!(parse_version(text), None, "{text:?}");
        }
    }

    #[test]
    fn the_marker_on_the_first_line_runs_a_file_outside_a_transaction() {
        let marked = script(
            "0002_index.up.sql",
            "-- meridian:no-transaction\r\nCREATE INDEX CONCURRENTLY a ON t (a);\nCREATE INDEX CONCURRENTLY b ON t (b);\n",
        );
        assert!(marked.no_transaction);
        let statements: Vec<&str> = marked
            .statements
            .iter()
            .map(|s| &marked.sql[s.clone()])
            .collect();
        assert_eq!(
            statements,
            [
                "CREATE INDEX CONCURRENTLY a ON t (a)",
                "CREATE INDEX CONCURRENTLY b ON t (b)"
            ]
        );
        assert!(!script("0001_a.up.sql", "CREATE TABLE t (a int);").no_transaction);
        // Anything else on the first line is an ordinary comment.
        assert!(
            !script(
                "0001_a.up.sql",
                "-- meridian:no-transaction please\nSELECT 1"
            )
            .no_transaction
        );
    }

    #[test]
    fn the_marker_below_the_first_line_is_refused() {
        let error = Script::inspect(
            "0002_i.up.sql",
            "-- index\n-- meridian:no-transaction\n".into(),
        )
        .unwrap_err();
        assert_eq!(
            error,
            LayoutError::MisplacedMarker {
                file: "0002_i.up.sql".into(),
                line: 2
            }
        );
        assert!(error.to_string().contains("move it there"), "{error}");
    }

    #[test]
    fn statements_are_cut_outside_quotes_comments_and_routine_bodies() {
        let sql = "/* a; b */ INSERT INTO t VALUES (';');\n\
                   CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END;\n\
                   DO $$ BEGIN PERFORM 1; END $$;;\n";
        let parsed = script("0001_a.up.sql", sql);
        assert_eq!(parsed.statements.len(), 3, "{:?}", parsed.statements);
        assert!(sql[parsed.statements[1].clone()].ends_with("END"));
    }

    #[test]
    fn transaction_control_in_a_transactional_file_is_refused() {
        for (sql, line, statement) in [
            ("CREATE TABLE t (a int);\nCOMMIT;\n", 2, "COMMIT"),
            ("BEGIN;\nCREATE TABLE t (a int);\n", 1, "BEGIN"),
            ("SELECT 1;\n\n  rollback ;", 3, "rollback"),
        ] {
            let error = Script::inspect("0001_t.up.sql", sql.into()).unwrap_err();
            assert_eq!(
                error,
                LayoutError::TransactionControl {
                    file: "0001_t.up.sql".into(),
                    line,
                    statement: statement.into(),
                },
                "{sql}"
            );
        }
        // Savepoints stay inside the transaction; a no-transaction file manages its own.
        script("0001_t.up.sql", "SAVEPOINT a; SELECT 1; RELEASE a;");
        script(
            "0001_t.up.sql",
            "-- meridian:no-transaction\nBEGIN; SELECT 1; COMMIT;",
        );
    }

    #[test]
    fn text_ending_inside_a_quote_is_refused() {
        for sql in ["SELECT 'open", "SELECT $x$ body", "SELECT 1 /* comment"] {
            assert_eq!(
                Script::inspect("0001_q.up.sql", sql.into()),
                Err(LayoutError::Unterminated {
                    file: "0001_q.up.sql".into()
                }),
                "{sql}"
            );
        }
    }

    #[test]
    fn server_positions_map_to_lines_and_columns_of_the_file() {
        let text = "CREATE TABLE t (a int);\nSELECT é, 1/0;\n";
        // The whole file was sent: position 35 is `1/0`'s `1` (characters, not bytes).
        assert_eq!(line_and_column(text, 0, 35), Some((2, 11)));
        // One statement sent from byte 24: its 1st character is line 2, column 1.
        assert_eq!(line_and_column(text, 24, 1), Some((2, 1)));
        assert_eq!(line_and_column(text, 0, 0), None);
        assert_eq!(line_and_column(text, 0, 1000), None);
        assert_eq!(line_and_column(text, 1000, 1), None);
    }

    #[test]
    fn files_pair_into_migrations_in_version_order() {
        let migrations = assemble(vec![
            found("0002_b.up.sql", "SELECT 2", "c2"),
            found("0001_a.down.sql", "SELECT -1", "d1"),
            found("0001_a.up.sql", "SELECT 1", "c1"),
        ])
        .unwrap();
        assert_eq!(versions(&migrations), [1, 2]);
        assert_eq!(migrations[0].checksum, "c1");
        assert_eq!(
            migrations[0].down.as_ref().map(|d| d.file.as_str()),
            Some("0001_a.down.sql")
        );
        assert_eq!(migrations[1].down, None);
    }

    #[test]
    fn layout_problems_are_all_reported() {
        let errors = assemble(vec![
            found("0001_a.up.sql", "SELECT 1", "c"),
            found("1_b.up.sql", "SELECT 1", "c"),
            found("0003_c.down.sql", "SELECT 1", "c"),
            found("0004_d.up.sql", "SELECT 1", "c"),
            found("0004_e.down.sql", "SELECT 1", "c"),
        ])
        .unwrap_err();
        assert_eq!(
            errors,
            [
                LayoutError::DuplicateVersion {
                    version: 1,
                    first: "0001_a.up.sql".into(),
                    second: "1_b.up.sql".into(),
                },
                LayoutError::DownWithoutUp {
                    file: "0003_c.down.sql".into(),
                    expected: "0003_c.up.sql".into(),
                },
                LayoutError::NameMismatch {
                    up: "0004_d.up.sql".into(),
                    down: "0004_e.down.sql".into(),
                },
            ]
        );
    }

    #[test]
    fn up_runs_the_pending_migrations_in_order() {
        let found: Vec<Migration> = [3, 1, 2].into_iter().map(migration).collect();
        let mut found = found;
        found.sort_by_key(|m| m.version);
        assert_eq!(versions(plan_up(&found, &[]).unwrap()), [1, 2, 3]);
        assert_eq!(versions(plan_up(&found, &[applied(1)]).unwrap()), [2, 3]);
        assert!(
            plan_up(&found, &[applied(1), applied(2), applied(3)])
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn up_refuses_a_changed_renamed_or_missing_applied_migration() {
        let found = vec![migration(1), migration(2), migration(4)];
        let mut changed = applied(1);
        changed.checksum = "0123456789abcdef".into();
        let mut renamed = applied(2);
        renamed.name = "old_name".into();
        let refusal = plan_up(&found, &[changed, renamed, applied(3)]).unwrap_err();
        assert_eq!(
            refusal.0,
            [
                Problem::Changed {
                    version: 1,
                    file: "0001_m1.up.sql".into(),
                    applied: "0123456789ab".into(),
                    now: "c1".into(),
                },
                Problem::Renamed {
                    version: 2,
                    file: "0002_m2.up.sql".into(),
                    applied_name: "old_name".into(),
                },
                Problem::Missing {
                    version: 3,
                    name: "m3".into(),
                },
            ]
        );
        let text = refusal.to_string();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.starts_with("0001_m1.up.sql was changed"), "{text}");
    }

    #[test]
    fn up_refuses_a_pending_version_below_the_highest_applied_naming_both() {
        let found = vec![migration(1), migration(2), migration(3)];
        let refusal = plan_up(&found, &[applied(1), applied(3)]).unwrap_err();
        assert_eq!(
            refusal.0,
            [Problem::OutOfOrder {
                version: 2,
                file: "0002_m2.up.sql".into(),
                latest: 3,
                latest_name: "m3".into(),
            }]
        );
        let text = refusal.to_string();
        assert!(text.contains("0002_m2.up.sql") && text.contains("version 3 (m3)"));
    }

    #[test]
    fn down_rolls_back_the_newest_first() {
        let found: Vec<Migration> = (1..=4).map(migration).collect();
        let all: Vec<Applied> = (1..=4).map(applied).collect();
        let plan = |target| rolled_back(&plan_down(&found, &all, target).unwrap());
        assert_eq!(plan(DownTarget::Steps(1)), [4]);
        assert_eq!(plan(DownTarget::Steps(3)), [4, 3, 2]);
        assert_eq!(plan(DownTarget::To(2)), [4, 3]);
        assert_eq!(plan(DownTarget::To(4)), Vec::<Version>::new());
        assert_eq!(plan(DownTarget::To(0)), [4, 3, 2, 1]);
        let first = plan_down(&found, &all, DownTarget::Steps(1)).unwrap();
        assert_eq!(first[0].script.file, "0004_m4.down.sql");
        // Nothing applied: nothing to do.
        assert!(
            plan_down(&found, &[], DownTarget::To(0))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn down_refuses_what_it_cannot_roll_back() {
        let mut found: Vec<Migration> = (1..=3).map(migration).collect();
        found[2].down = None;
        let all: Vec<Applied> = (1..=3).map(applied).collect();
        assert_eq!(
            plan_down(&found, &all, DownTarget::Steps(1)).unwrap_err().0,
            [Problem::NoDown {
                version: 3,
                file: "0003_m3.up.sql".into(),
                expected: "0003_m3.down.sql".into(),
            }]
        );
        assert_eq!(
            plan_down(&found, &all, DownTarget::Steps(4)).unwrap_err().0,
            [Problem::TooManySteps {
                steps: 4,
                applied: 3
            }]
        );
        // A typo in --to must not roll back everything below it.
        assert_eq!(
            plan_down(&found, &all, DownTarget::To(20)).unwrap_err().0,
            [Problem::NotApplied { to: 20 }]
        );
        // The migration rolled back must be the one applied.
        let mut changed = all.clone();
        changed[1].checksum = "other".into();
        let refusal = plan_down(&found[..2], &changed[..2], DownTarget::Steps(1)).unwrap_err();
        assert!(matches!(
            refusal.0[..],
            [Problem::Changed { version: 2, .. }]
        ));
        // Only what is rolled back is checked.
        assert_eq!(
            rolled_back(&plan_down(&found[..2], &changed[..2], DownTarget::To(2)).unwrap()),
            Vec::<Version>::new()
        );
        let missing = plan_down(&found[..1], &all[..2], DownTarget::Steps(1)).unwrap_err();
        assert!(matches!(
            missing.0[..],
            [Problem::Missing { version: 2, .. }]
        ));
    }

    #[test]
    fn status_lists_every_version_with_its_state() {
        let mut found = vec![migration(1), migration(2), migration(4)];
        found[1].checksum = "edited".into();
        let rows = status(&found, &[applied(1), applied(2), applied(3)]);
        let summary: Vec<(Version, &str, State, Option<&str>)> = rows
            .iter()
            .map(|r| (r.version, r.name.as_str(), r.state, r.file.as_deref()))
            .collect();
        assert_eq!(
            summary,
            [
                (1, "m1", State::Applied, Some("0001_m1.up.sql")),
                (2, "m2", State::Changed, Some("0002_m2.up.sql")),
                (3, "m3", State::Missing, None),
                (4, "m4", State::Pending, Some("0004_m4.up.sql")),
            ]
        );
    }

    proptest! {
        /// With any applied prefix, `up` runs exactly the rest, in order; after it nothing is
        /// pending; `down` of k steps takes back exactly the newest k.
        #[test]
        fn up_then_down_walks_the_versions(
            versions_found in proptest::collection::btree_set(0..1_000i64, 1..20),
            applied_count in 0usize..20,
            steps in 1u32..20,
        ) {
            let found: Vec<Migration> = versions_found.iter().copied().map(migration).collect();
            let applied_count = applied_count.min(found.len());
            let done: Vec<Applied> =
                found[..applied_count].iter().map(|m| applied(m.version)).collect();
            let plan = plan_up(&found, &done).unwrap();
            prop_assert_eq!(versions(plan.iter().copied()), versions(&found[applied_count..]));
            let all: Vec<Applied> = found.iter().map(|m| applied(m.version)).collect();
            prop_assert!(plan_up(&found, &all).unwrap().is_empty());
            let rows = status(&found, &done);
            prop_assert_eq!(rows.len(), found.len());
            prop_assert_eq!(
                rows.iter().filter(|r| r.state == State::Applied).count(),
                applied_count
            );
            match plan_down(&found, &all, DownTarget::Steps(steps)) {
                Ok(back) => {
                    let mut expected: Vec<Version> = versions(&found);
                    expected.reverse();
                    expected.truncate(steps as usize);
                    prop_assert_eq!(rolled_back(&back), expected);
                }
                Err(refusal) => prop_assert!(steps as usize > found.len(), "{}", refusal),
            }
        }

        /// Any file name is either ignored, refused with its name in the message, or read back
        /// into the name it came from.
        #[test]
        fn file_names_never_panic_and_round_trip(file in "[a-z0-9_.A-Z-]{0,30}(\\.up\\.sql|\\.down\\.sql|\\.sql)?") {
            match parse_file_name(&file) {
                Ok(None) => prop_assert!(file.starts_with('.') || !file.ends_with(".sql")),
                Ok(Some(name)) => {
                    prop_assert!(file.ends_with(name.direction.suffix()));
                    let tail = format!("_{}{}", name.name, name.direction.suffix());
                    prop_assert!(file.contains(&tail));
                }
                Err(error) => prop_assert!(error.to_string().contains(&file)),
            }
        }
    }
}
