//! Classification of one statement from its tokens.
//!
//! The leading key words decide the statement kind (PostgreSQL docs, part VI "SQL Commands");
//! for queries (`SELECT`, `WITH`, `VALUES`, `TABLE`, a parenthesized query) a single scan of the
//! remaining tokens then looks for what makes a query write: a data-modifying `WITH`, `INTO`, a
//! locking clause, a call to a side-effecting function. Other statements are decided by their
//! key words plus, where it matters, a few following ones (transaction modes, `TEMP`, `WITH HOLD`,
//! `COPY`'s direction, `EXPLAIN`'s `ANALYZE`).
//!
//! Invariants:
//! - One pass over the tokens of a statement, with a bounded look-ahead at a few places; no heap
//!   allocation.
//! - A statement ends at a `;` outside quotes and comments, except inside the `BEGIN ATOMIC ...
//!   END` body of `CREATE FUNCTION`/`CREATE PROCEDURE` (PostgreSQL 14+), whose inner semicolons
//!   belong to the statement; `CASE ... END` inside such a body is counted so that its `END`
//!   does not close the body. The rule mirrors the one psql uses to split its input.
//! - Nested statements (`EXPLAIN ANALYZE`, `PREPARE ... AS`, `DECLARE ... FOR`, `COPY (...)`) are
//!   followed at most [`MAX_NESTING`] deep, so no input can exhaust the stack; deeper is
//!   [`Reason::TooDeep`], treated as unknown.
//! - Where the text is ambiguous the answer errs towards the primary: an unquoted column named
//!   `update` in a `WITH` query, or a table alias followed by a column list that happens to
//!   match a function pattern, makes a read look like a write, never the reverse.

use super::classification::{
    Classification, Command, Flags, IsolationLevel, LockStrength, NAME_MAX_BYTES, Name, PinReason,
    Reason, StatementClass, TransactionControl, truncate_name,
};
use super::functions::FunctionSet;
use super::keyword::{Kw, keyword, query_keyword};
use super::lexer::{Kind, Lexer, Token};

/// How deep statements inside statements are followed.
pub(crate) const MAX_NESTING: u8 = 8;

/// The session-level advisory lock functions (PostgreSQL docs, section 9.27.10): held until
/// released or the session ends, so they pin. The `_xact_` variants end with the transaction.
const SESSION_ADVISORY_LOCKS: [&str; 4] = [
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];

/// Functions that read the calling session's own state (9.17): `currval` and `lastval` fail
/// with "not yet defined in this session" on any backend but the one that ran `nextval`.
const SESSION_READ_FUNCTIONS: [&str; 2] = ["currval", "lastval"];

/// The tokens of one statement, with parenthesis depth, statement end and group tracking.
pub(crate) struct Cursor<'l, 'a> {
    lexer: &'l mut Lexer<'a>,
    /// A token read ahead, valid when `has_peeked`. Kept apart from the flag (not an
    /// `Option<Token>`) so that the common path tests one byte instead of reloading a token
    /// that was just stored field by field, which stalls store forwarding.
    peeked: Token,
    has_peeked: bool,
    /// Parentheses open before the next token.
    depth: u32,
    /// When non-zero, the depth of the innermost group entered with [`Cursor::group`]: the `)`
    /// that closes it ends the token stream of the group.
    floor: u32,
    /// The group's closing `)` was consumed: no more tokens until [`Cursor::group`] returns.
    group_closed: bool,
    /// The statement's `;` (or the end of the input) was consumed.
    ended: bool,
    /// `ended || group_closed`, the one flag the per-token path tests.
    stopped: bool,
    eof: bool,
    /// The statement is `CREATE FUNCTION`/`PROCEDURE`: track `BEGIN ATOMIC ... END`.
    routine: bool,
    begin_depth: u32,
    last_end: usize,
}

impl<'l, 'a> Cursor<'l, 'a> {
    /// A cursor at the start of the next statement of `lexer`.
    pub(crate) fn new(lexer: &'l mut Lexer<'a>) -> Cursor<'l, 'a> {
        Cursor {
            lexer,
            peeked: Token {
                kind: Kind::Other,
                depth: 0,
                start: 0,
                end: 0,
            },
            has_peeked: false,
            depth: 0,
            floor: 0,
            group_closed: false,
            ended: false,
            stopped: false,
            eof: false,
            routine: false,
            begin_depth: 0,
            last_end: 0,
        }
    }

    /// True once the input is exhausted (as opposed to a `;` ending the statement).
    pub(crate) fn at_eof(&self) -> bool {
        self.eof
    }

    /// Byte offset just past the last token returned.
    pub(crate) fn last_end(&self) -> usize {
        self.last_end
    }

    #[inline(always)]
    fn raw_peek(&mut self) -> Option<Token> {
        if !self.has_peeked {
            self.peeked = self.lexer.next_token()?;
            self.has_peeked = true;
        }
        Some(self.peeked)
    }

    /// The next token of the statement (or group) without consuming it.
    #[inline(always)]
    fn peek(&mut self) -> Option<Token> {
        if self.stopped {
            return None;
        }
        let token = self.raw_peek()?;
        let boundary = match token.kind {
            Kind::Semicolon => self.begin_depth == 0,
            Kind::RParen => self.floor > 0 && self.depth == self.floor,
            _ => false,
        };
        (!boundary).then_some(token)
    }

    #[inline(always)]
    fn peek_kind(&mut self) -> Option<Kind> {
        self.peek().map(|token| token.kind)
    }

    #[inline(always)]
    fn peek_kw(&mut self) -> Kw {
        match self.peek() {
            Some(token) => self.kw(token),
            None => Kw::None,
        }
    }

    /// The tokens after the current position, for a bounded look-ahead. They are not checked
    /// for statement or group ends: callers only look for words and punctuation.
    fn lookahead(&self) -> std::iter::Chain<std::option::IntoIter<Token>, Lexer<'a>> {
        self.has_peeked
            .then_some(self.peeked)
            .into_iter()
            .chain(self.lexer.clone())
    }

    /// True if the next token is `(`, without reading it (a `(` never ends a statement or
    /// group).
    #[inline(always)]
    fn next_is_lparen(&self) -> bool {
        if self.stopped {
            return false;
        }
        if self.has_peeked {
            self.peeked.kind == Kind::LParen
        } else {
            self.lexer.next_starts_with(b'(')
        }
    }

    /// The text of a token of this statement.
    pub(crate) fn text(&self, token: Token) -> &'a [u8] {
        self.lexer.text(token)
    }

    /// The key word a token spells, if it is an unquoted word. Looked up on demand: the scan
    /// of a query's body uses the cheaper [`query_keyword`] instead.
    fn kw(&self, token: Token) -> Kw {
        if token.kind == Kind::Word {
            keyword(self.text(token))
        } else {
            Kw::None
        }
    }

    /// The next token of the statement (or group), with its depth; `None` at the end.
    #[inline(always)]
    pub(crate) fn next(&mut self) -> Option<Token> {
        if self.stopped {
            return None;
        }
        let mut token = if self.has_peeked {
            self.has_peeked = false;
            self.peeked
        } else {
            match self.lexer.next_token() {
                Some(token) => token,
                None => {
                    self.ended = true;
                    self.stopped = true;
                    self.eof = true;
                    return None;
                }
            }
        };
        match token.kind {
            Kind::Semicolon if self.begin_depth == 0 => {
                self.ended = true;
                self.stopped = true;
                return None;
            }
            Kind::RParen if self.floor > 0 && self.depth == self.floor => {
                self.depth -= 1;
                self.group_closed = true;
                self.stopped = true;
                return None;
            }
            Kind::LParen => {
                token.depth = self.depth;
                self.depth += 1;
            }
            Kind::RParen => {
                self.depth = self.depth.saturating_sub(1);
                token.depth = self.depth;
            }
            _ => token.depth = self.depth,
        }
        if self.routine && token.depth == 0 && token.kind == Kind::Word {
            self.track_routine_body(token);
        }
        self.last_end = token.end as usize;
        Some(token)
    }

    /// `BEGIN ATOMIC` opens a body in which `;` does not end the statement; `CASE` inside it
    /// also ends with `END`, so it is counted too.
    fn track_routine_body(&mut self, token: Token) {
        match self.kw(token) {
            Kw::Begin
                if self
                    .raw_peek()
                    .is_some_and(|next| self.kw(next) == Kw::Atomic) =>
            {
                self.begin_depth += 1;
            }
            Kw::Case if self.begin_depth > 0 => self.begin_depth += 1,
            Kw::End if self.begin_depth > 0 => self.begin_depth -= 1,
            _ => {}
        }
    }

    /// Runs `inside` over the tokens of the group whose `(` was just consumed, then skips what
    /// `inside` left of it, including the closing `)`.
    fn group<R>(&mut self, inside: impl FnOnce(&mut Self) -> R) -> R {
        let saved = self.floor;
        self.floor = self.depth;
        let result = inside(self);
        self.drain();
        self.group_closed = false;
        self.stopped = self.ended;
        self.floor = saved;
        result
    }

    /// Skips the rest of the statement (or group).
    pub(crate) fn drain(&mut self) {
        while self.next().is_some() {}
    }
}

/// Classifies the statement whose first token is `first`, consuming (some of) the rest; the
/// caller drains what is left.
pub(crate) fn statement(
    cur: &mut Cursor<'_, '_>,
    functions: &FunctionSet,
    first: Token,
    budget: u8,
) -> Classification {
    use StatementClass::{Ddl, Read, SessionState, Write};
    if budget == 0 {
        return Classification::new(StatementClass::Unknown, Reason::TooDeep);
    }
    if first.kind == Kind::LParen {
        return query(cur, functions, first);
    }
    let simple = |class, command| Classification::new(class, Reason::Command(command));
    match cur.kw(first) {
        Kw::Select | Kw::Values | Kw::Table | Kw::With => query(cur, functions, first),
        Kw::Show => simple(Read, Command::Show),
        Kw::Explain => explain(cur, functions, budget),
        Kw::Insert => data_modifying(cur, functions, first, Command::Insert),
        Kw::Update => data_modifying(cur, functions, first, Command::Update),
        Kw::Delete => data_modifying(cur, functions, first, Command::Delete),
        Kw::Merge => data_modifying(cur, functions, first, Command::Merge),
        Kw::Call => data_modifying(cur, functions, first, Command::Call),
        Kw::Copy => copy(cur, functions, budget),
        Kw::Do => simple(Write, Command::Do),
        Kw::Notify => simple(Write, Command::Notify),
        Kw::Listen => pinned(simple(Write, Command::Listen), PinReason::Listen),
        // VACUUM and ANALYZE are refused during recovery; LOCK is accepted on a standby in its
        // weaker modes, but a lock only excludes sessions of the same server and the writers
        // it is meant to exclude are on the primary.
        Kw::Vacuum => simple(Write, Command::Vacuum),
        Kw::Analyze | Kw::Analyse => simple(Write, Command::Analyze),
        Kw::Checkpoint => simple(Write, Command::Checkpoint),
        Kw::Lock => simple(Write, Command::Lock),
        Kw::Create => create(cur),
        Kw::Alter => simple(Ddl, Command::Alter),
        Kw::Drop => simple(Ddl, Command::Drop),
        Kw::Truncate => simple(Ddl, Command::Truncate),
        Kw::Grant => simple(Ddl, Command::Grant),
        Kw::Revoke => simple(Ddl, Command::Revoke),
        Kw::Comment => simple(Ddl, Command::Comment),
        Kw::Security => simple(Ddl, Command::SecurityLabel),
        Kw::Reindex => simple(Ddl, Command::Reindex),
        Kw::Cluster => simple(Ddl, Command::Cluster),
        Kw::Refresh => simple(Ddl, Command::Refresh),
        Kw::Import => simple(Ddl, Command::ImportForeignSchema),
        Kw::Reassign => simple(Ddl, Command::ReassignOwned),
        Kw::Begin => begin(cur),
        Kw::Start if cur.peek_kw() == Kw::Transaction => {
            cur.next();
            begin(cur)
        }
        Kw::Commit if cur.peek_kw() == Kw::Prepared => {
            transaction(TransactionControl::CommitPrepared, Command::CommitPrepared)
        }
        Kw::Commit | Kw::End => {
            let chain = and_chain(cur);
            transaction(TransactionControl::Commit { chain }, Command::Commit)
        }
        Kw::Rollback => rollback(cur),
        Kw::Abort => {
            let chain = and_chain(cur);
            transaction(TransactionControl::Rollback { chain }, Command::Rollback)
        }
        Kw::Savepoint => transaction(TransactionControl::Savepoint, Command::Savepoint),
        Kw::Release => transaction(TransactionControl::ReleaseSavepoint, Command::Release),
        Kw::Prepare if cur.peek_kw() == Kw::Transaction => transaction(
            TransactionControl::PrepareTransaction,
            Command::PrepareTransaction,
        ),
        Kw::Prepare => prepare(cur, functions, budget),
        Kw::Declare => declare(cur, functions, budget),
        Kw::Set => set(cur),
        Kw::Reset => simple(SessionState, Command::Reset),
        Kw::Discard => {
            let mut discard = simple(SessionState, Command::Discard);
            if cur.peek_kw() == Kw::All {
                discard.flags |= Flags::RESETS_SESSION;
            }
            discard
        }
        Kw::Execute => simple(SessionState, Command::Execute),
        Kw::Deallocate => simple(SessionState, Command::Deallocate),
        Kw::Unlisten => simple(SessionState, Command::Unlisten),
        Kw::Load => pinned(
            simple(SessionState, Command::Load),
            PinReason::LoadedLibrary,
        ),
        Kw::Fetch => simple(SessionState, Command::Fetch),
        Kw::Move => simple(SessionState, Command::Move),
        Kw::Close => simple(SessionState, Command::Close),
        _ => unknown(cur.text(first)),
    }
}

fn pinned(mut classification: Classification, pin: PinReason) -> Classification {
    classification.pin = Some(pin);
    classification
}

fn transaction(control: TransactionControl, command: Command) -> Classification {
    Classification::new(
        StatementClass::Transaction(control),
        Reason::Command(command),
    )
}

fn unknown(first_text: &[u8]) -> Classification {
    Classification::new(
        StatementClass::Unknown,
        Reason::UnknownStatement(Name::exact(first_text)),
    )
}

/// What a scan has found so far.
#[derive(Default)]
struct Evidence {
    /// The strongest finding, the first one on a tie.
    verdict: Option<(StatementClass, Reason)>,
    flags: Flags,
    pin: Option<PinReason>,
}

impl Evidence {
    fn note(&mut self, class: StatementClass, reason: Reason) {
        if self
            .verdict
            .is_none_or(|(found, _)| class.is_stronger_than(found))
        {
            self.verdict = Some((class, reason));
        }
    }

    fn pin(&mut self, pin: PinReason) {
        self.pin.get_or_insert(pin);
    }

    /// The classification: `class` and `reason` unless the evidence is stronger.
    fn conclude(self, class: StatementClass, reason: Reason) -> Classification {
        let mut classification = Classification::new(class, reason);
        if let Some((found, why)) = self.verdict
            && found.is_stronger_than(class)
        {
            classification.class = found;
            classification.reason = why;
        }
        classification.flags |= self.flags;
        classification.pin = self.pin;
        classification
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// A query: everything that can make it write.
    Query,
    /// A statement already known to write: only calls, for their flags and pins.
    Calls,
}

/// The previous token, as far as the scan needs it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Prev {
    Dot,
    Word(Kw),
    Other,
}

/// A query (`SELECT`, `VALUES`, `TABLE`, `WITH`, `(`): reads unless the scan finds otherwise.
fn query(cur: &mut Cursor<'_, '_>, functions: &FunctionSet, first: Token) -> Classification {
    let mut evidence = Evidence::default();
    scan(cur, functions, Scan::Query, first, &mut evidence);
    evidence.conclude(StatementClass::Read, Reason::Query)
}

/// What [`query`] concludes for a query in which the scan finds nothing: a plain read.
pub(crate) fn plain_read() -> Classification {
    Evidence::default().conclude(StatementClass::Read, Reason::Query)
}

/// What [`data_modifying`] concludes for `command` when the scan finds nothing.
pub(crate) fn plain_write(command: Command) -> Classification {
    Evidence::default().conclude(StatementClass::Write, Reason::Command(command))
}

/// `INSERT`, `UPDATE`, `DELETE`, `MERGE`, `CALL`: writes; calls are noted for flags and pins.
fn data_modifying(
    cur: &mut Cursor<'_, '_>,
    functions: &FunctionSet,
    first: Token,
    command: Command,
) -> Classification {
    let mut evidence = Evidence::default();
    scan(cur, functions, Scan::Calls, first, &mut evidence);
    evidence.conclude(StatementClass::Write, Reason::Command(command))
}

/// The scan of a statement's tokens after `first`. A data-modifying command deeper than
/// `first` is inside `WITH ... AS (...)`.
fn scan(
    cur: &mut Cursor<'_, '_>,
    functions: &FunctionSet,
    mode: Scan,
    first: Token,
    evidence: &mut Evidence,
) {
    let base = first.depth;
    let mut prev = match first.kind {
        Kind::Word => Prev::Word(query_keyword(cur.text(first))),
        _ => Prev::Other,
    };
    // The token before the current (possibly dotted) name.
    let mut before_name = Prev::Other;
    while let Some(token) = cur.next() {
        let kw = match token.kind {
            Kind::Word => {
                // Only the key words the scan acts on are recognised (by length first, without
                // touching the text); any other word is `Kw::None`.
                let kw = if matches!(token.end - token.start, 2..=6 | 9) {
                    query_keyword(cur.text(token))
                } else {
                    Kw::None
                };
                if mode == Scan::Query && kw != Kw::None {
                    query_key_word(cur, kw, token, base, prev, evidence);
                }
                kw
            }
            Kind::QuotedIdent | Kind::UnicodeIdent => Kw::None,
            Kind::Dot => {
                prev = Prev::Dot;
                continue;
            }
            _ => {
                prev = Prev::Other;
                continue;
            }
        };
        // A name: the token before a dotted chain tells a column list (`INTO t (`, `AS x (`,
        // `WITH x (`, `RECURSIVE x (`) from a call's arguments.
        if prev != Prev::Dot {
            before_name = prev;
        }
        if !matches!(
            before_name,
            Prev::Word(Kw::Into | Kw::As | Kw::With | Kw::Recursive)
        ) {
            call(cur, functions, token, evidence);
        }
        prev = if token.kind == Kind::Word {
            Prev::Word(kw)
        } else {
            Prev::Other
        };
    }
}

/// A key word met by the scan of a query: a data-modifying command (`WITH ... AS (DELETE ...)`
/// or the main statement of a `WITH`), `INTO`, or `FOR` starting a locking clause.
fn query_key_word(
    cur: &mut Cursor<'_, '_>,
    kw: Kw,
    token: Token,
    base: u32,
    prev: Prev,
    evidence: &mut Evidence,
) {
    match kw {
        // `t.update` and `AS delete` are names, not commands (all four are unreserved key
        // words in PostgreSQL).
        Kw::Insert | Kw::Update | Kw::Delete | Kw::Merge
            if !matches!(prev, Prev::Dot | Prev::Word(Kw::As)) =>
        {
            let command = match kw {
                Kw::Insert => Command::Insert,
                Kw::Update => Command::Update,
                Kw::Delete => Command::Delete,
                _ => Command::Merge,
            };
            if token.depth > base {
                evidence.flags |= Flags::DATA_MODIFYING_CTE;
                evidence.note(StatementClass::Write, Reason::DataModifyingCte(command));
            } else {
                // `WITH ... INSERT/UPDATE/DELETE/MERGE`: the main statement writes.
                evidence.note(StatementClass::Write, Reason::Command(command));
            }
        }
        // INTO is reserved: outside `INSERT INTO` and `MERGE INTO` it can only be
        // `SELECT ... INTO new_table`, wherever it stands.
        Kw::Into if !matches!(prev, Prev::Word(Kw::Insert | Kw::Merge)) => {
            select_into(cur, evidence);
        }
        Kw::For => {
            if let Some(strength) = locking_clause(cur) {
                evidence.flags |= Flags::LOCKING_READ;
                evidence.note(StatementClass::Write, Reason::LockingRead(strength));
            }
        }
        _ => {}
    }
}

/// After `INTO` in a query: `SELECT ... INTO [TEMP|TEMPORARY|LOCAL TEMP|...] new_table`.
fn select_into(cur: &mut Cursor<'_, '_>, evidence: &mut Evidence) {
    evidence.flags |= Flags::SELECT_INTO;
    evidence.note(StatementClass::Write, Reason::SelectInto);
    let temporary = match cur.peek_kw() {
        Kw::Temp | Kw::Temporary => true,
        // LOCAL and GLOBAL are noise words before TEMP (`CREATE TABLE`, "Compatibility").
        Kw::Local | Kw::Global => cur
            .lookahead()
            .nth(1)
            .is_some_and(|next| matches!(cur.kw(next), Kw::Temp | Kw::Temporary)),
        _ => false,
    };
    if temporary {
        evidence.pin(PinReason::TemporaryTable);
    }
}

/// After `FOR` in a query: a locking clause, consumed, or `None` (`FOR READ ONLY`,
/// `substring(x FOR 2)`), nothing consumed.
fn locking_clause(cur: &mut Cursor<'_, '_>) -> Option<LockStrength> {
    let strength = match cur.peek_kw() {
        Kw::Update => LockStrength::Update,
        Kw::Share => LockStrength::Share,
        Kw::No => {
            let mut ahead = cur.lookahead().skip(1);
            let key = ahead.next().is_some_and(|t| cur.kw(t) == Kw::Key);
            if !(key && ahead.next().is_some_and(|t| cur.kw(t) == Kw::Update)) {
                return None;
            }
            cur.next();
            cur.next();
            LockStrength::NoKeyUpdate
        }
        Kw::Key => {
            if !cur
                .lookahead()
                .nth(1)
                .is_some_and(|t| cur.kw(t) == Kw::Share)
            {
                return None;
            }
            cur.next();
            LockStrength::KeyShare
        }
        _ => return None,
    };
    cur.next();
    Some(strength)
}

/// A name token: if it is called (followed by `(`), checks the function against the session
/// tables and the side-effecting set.
fn call(cur: &mut Cursor<'_, '_>, functions: &FunctionSet, token: Token, evidence: &mut Evidence) {
    match token.kind {
        Kind::Word if cur.next_is_lparen() => {
            let text = cur.text(token);
            check_function(cur, functions, truncate_name(text), true, evidence);
        }
        Kind::QuotedIdent if cur.next_is_lparen() => {
            let name = decode_quoted(cur.text(token));
            check_function(cur, functions, name.as_bytes(), false, evidence);
        }
        Kind::UnicodeIdent => {
            // `U&"..." [UESCAPE 'c'] (`: decode with the escape character in force.
            let escape: &[u8] = match cur.peek() {
                Some(next) if next.kind == Kind::LParen => b"\\",
                Some(next) if cur.kw(next) == Kw::Uescape => {
                    let mut ahead = cur.lookahead().skip(1);
                    match (ahead.next(), ahead.next()) {
                        (Some(escape), Some(paren))
                            if escape.kind == Kind::String && paren.kind == Kind::LParen =>
                        {
                            match simple_string_content(cur.text(escape)) {
                                Some(content) => content,
                                None => return,
                            }
                        }
                        _ => return,
                    }
                }
                _ => return,
            };
            // An invalid escape is a syntax error for the server: nothing runs.
            if let Some(name) = decode_unicode(cur.text(token), escape) {
                check_function(cur, functions, name.as_bytes(), false, evidence);
            }
        }
        _ => {}
    }
}

fn check_function(
    cur: &mut Cursor<'_, '_>,
    functions: &FunctionSet,
    name: &[u8],
    folded: bool,
    evidence: &mut Evidence,
) {
    let is = |known: &str| {
        if folded {
            name.eq_ignore_ascii_case(known.as_bytes())
        } else {
            name == known.as_bytes()
        }
    };
    let as_name = || {
        if folded {
            Name::folded(name)
        } else {
            Name::exact(name)
        }
    };
    if SESSION_ADVISORY_LOCKS.iter().any(|known| is(known)) {
        evidence.pin(PinReason::SessionAdvisoryLock);
    } else if is("set_config") && !set_config_is_local(cur) {
        evidence.pin(PinReason::SessionSetting);
    }
    if SESSION_READ_FUNCTIONS.iter().any(|known| is(known)) {
        evidence.flags |= Flags::SESSION_FUNCTION;
        evidence.note(
            StatementClass::SessionState,
            Reason::SessionFunction(as_name()),
        );
    }
    if functions.matches(name, folded) {
        evidence.flags |= Flags::WRITE_FUNCTION;
        evidence.note(StatementClass::Write, Reason::WriteFunction(as_name()));
    }
}

/// True if the call `set_config(name, value, is_local)` about to be read has a literal true
/// `is_local`: the setting ends with the transaction and does not pin. Anything else (false, a
/// parameter, an expression) counts as session-level.
fn set_config_is_local(cur: &Cursor<'_, '_>) -> bool {
    let mut ahead = cur.lookahead();
    if ahead.next().map(|t| t.kind) != Some(Kind::LParen) {
        return false;
    }
    let mut depth = 1u32;
    let mut argument = 0;
    let mut third = None;
    let mut third_tokens = 0;
    for token in ahead {
        match token.kind {
            Kind::LParen => depth += 1,
            Kind::RParen => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            Kind::Semicolon => return false,
            Kind::Comma if depth == 1 => {
                argument += 1;
                continue;
            }
            _ => {}
        }
        if argument == 2 {
            third_tokens += 1;
            third = Some(token);
        }
    }
    third_tokens == 1 && third.is_some_and(|token| is_true_literal(token, cur.text(token)))
}

/// `true`, or a string the boolean input function reads as true (section 8.6).
fn is_true_literal(token: Token, text: &[u8]) -> bool {
    match token.kind {
        Kind::Word => keyword(text) == Kw::True,
        Kind::String => simple_string_content(text).is_some_and(|content| {
            ["t", "tr", "tru", "true", "y", "ye", "yes", "on", "1"]
                .iter()
                .any(|spelling| content.eq_ignore_ascii_case(spelling.as_bytes()))
        }),
        _ => false,
    }
}

/// `false`/`off` or `0`: what `EXPLAIN (ANALYZE false)` accepts as false (`defGetBoolean`).
fn is_false_literal(token: Token, text: &[u8]) -> bool {
    match token.kind {
        Kind::Word => matches!(keyword(text), Kw::False | Kw::Off),
        Kind::Number => text == b"0",
        Kind::String => simple_string_content(text).is_some_and(|content| {
            content.eq_ignore_ascii_case(b"false") || content.eq_ignore_ascii_case(b"off")
        }),
        _ => false,
    }
}

/// The content of a plain `'...'` string without `''` escapes, or `None`.
fn simple_string_content(text: &[u8]) -> Option<&[u8]> {
    let content = text.strip_prefix(b"'")?.strip_suffix(b"'")?;
    (!content.contains(&b'\'')).then_some(content)
}

/// Bytes of a name being decoded, a little past the limit so truncation can find a character
/// boundary.
struct NameBuffer {
    bytes: [u8; NAME_MAX_BYTES + 4],
    len: usize,
}

impl NameBuffer {
    fn new() -> NameBuffer {
        NameBuffer {
            bytes: [0; NAME_MAX_BYTES + 4],
            len: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if self.len < self.bytes.len() {
                self.bytes[self.len] = byte;
                self.len += 1;
            }
        }
    }

    fn name(&self) -> Name {
        Name::exact(&self.bytes[..self.len])
    }
}

/// The name a `"quoted identifier"` stands for: `""` is one quote (4.1.1).
fn decode_quoted(text: &[u8]) -> Name {
    let inner = &text[1..];
    let inner = inner.strip_suffix(b"\"").unwrap_or(inner);
    let mut buffer = NameBuffer::new();
    let mut i = 0;
    while i < inner.len() {
        buffer.push(&inner[i..=i]);
        i += if inner[i] == b'"' { 2 } else { 1 };
    }
    buffer.name()
}

/// The name a `U&"..."` identifier stands for, with `escape` as the escape character: `\XXXX`
/// and `\+XXXXXX` code points (surrogate pairs combined), a doubled escape for itself, `""` for
/// a quote (4.1.1 "Unicode escapes"). `None` if an escape is invalid (a syntax error).
fn decode_unicode(text: &[u8], escape: &[u8]) -> Option<Name> {
    let inner = text.get(3..)?;
    let inner = inner.strip_suffix(b"\"").unwrap_or(inner);
    if escape.is_empty() {
        return None;
    }
    let hex = |digits: &[u8]| -> Option<u32> {
        digits.iter().try_fold(0u32, |value, &digit| {
            Some(value * 16 + (digit as char).to_digit(16)?)
        })
    };
    let mut buffer = NameBuffer::new();
    let mut pending_high: Option<u32> = None;
    let mut i = 0;
    while i < inner.len() {
        let rest = &inner[i..];
        if !rest.starts_with(escape) {
            if pending_high.is_some() {
                return None;
            }
            buffer.push(&rest[..1]);
            i += if rest[0] == b'"' { 2 } else { 1 };
            continue;
        }
        let after = &rest[escape.len()..];
        if after.starts_with(escape) {
            buffer.push(escape);
            i += 2 * escape.len();
            continue;
        }
        let (code, used) = if let Some(digits) = after.strip_prefix(b"+") {
            (hex(digits.get(..6)?)?, 7)
        } else {
            (hex(after.get(..4)?)?, 4)
        };
        i += escape.len() + used;
        let code = match (pending_high.take(), code) {
            (None, 0xD800..=0xDBFF) => {
                pending_high = Some(code);
                continue;
            }
            (Some(high), 0xDC00..=0xDFFF) => 0x10000 + ((high - 0xD800) << 10) + (code - 0xDC00),
            (Some(_), _) => return None,
            (None, code) => code,
        };
        let mut utf8 = [0; 4];
        buffer.push(char::from_u32(code)?.encode_utf8(&mut utf8).as_bytes());
    }
    if pending_high.is_some() {
        return None;
    }
    Some(buffer.name())
}

/// `EXPLAIN`: reads (it only plans) unless `ANALYZE` executes the statement, which is then
/// classified as if it stood alone.
fn explain(cur: &mut Cursor<'_, '_>, functions: &FunctionSet, budget: u8) -> Classification {
    let plain = Classification::new(StatementClass::Read, Reason::Command(Command::Explain));
    let analyze = match cur.peek() {
        // `EXPLAIN (SELECT ...)` is a parenthesized query; `EXPLAIN (ANALYZE, ...)` options.
        Some(next) if next.kind == Kind::LParen => {
            let after = cur.lookahead().nth(1);
            let query = after.is_some_and(|t| {
                t.kind == Kind::LParen
                    || matches!(cur.kw(t), Kw::Select | Kw::Values | Kw::With | Kw::Table)
            });
            if query {
                false
            } else {
                cur.next();
                cur.group(explain_options)
            }
        }
        Some(next) if matches!(cur.kw(next), Kw::Analyze | Kw::Analyse) => {
            cur.next();
            if cur.peek_kw() == Kw::Verbose {
                cur.next();
            }
            true
        }
        Some(next) if cur.kw(next) == Kw::Verbose => {
            cur.next();
            false
        }
        _ => false,
    };
    if !analyze {
        return plain;
    }
    match cur.next() {
        Some(first) => {
            let mut explained = statement(cur, functions, first, budget - 1);
            explained.flags |= Flags::EXPLAIN_ANALYZE;
            explained
        }
        None => plain,
    }
}

/// `EXPLAIN (option [value], ...)`: true if `ANALYZE` is on. A value other than `false`, `off`
/// or `0` counts as on (an invalid one is an error, so nothing runs).
fn explain_options(cur: &mut Cursor<'_, '_>) -> bool {
    let level = cur.depth;
    let mut at_option = true;
    let mut analyze = false;
    while let Some(token) = cur.next() {
        if token.kind == Kind::Comma && token.depth == level {
            at_option = true;
            continue;
        }
        if at_option && matches!(cur.kw(token), Kw::Analyze | Kw::Analyse) {
            analyze |= match cur.peek() {
                None => true,
                Some(value) if value.kind == Kind::Comma => true,
                Some(value) => !is_false_literal(value, cur.text(value)),
            };
        }
        at_option = false;
    }
    analyze
}

/// `COPY`: `FROM` loads rows (write); `TO STDOUT` reads; `TO 'file'` and `TO PROGRAM` write on
/// the server's host. `COPY (query) TO` also takes the class of the query
/// (`COPY (DELETE ... RETURNING ...) TO STDOUT` writes).
fn copy(cur: &mut Cursor<'_, '_>, functions: &FunctionSet, budget: u8) -> Classification {
    let mut inner = None;
    if cur.peek_kind() == Some(Kind::LParen) {
        cur.next();
        inner = cur.group(|group| {
            group
                .next()
                .map(|first| statement(group, functions, first, budget - 1))
        });
    }
    // The first FROM or TO outside parentheses: neither can be a table name (both reserved).
    let level = cur.depth;
    let mut direction = Kw::None;
    while let Some(token) = cur.next() {
        let kw = cur.kw(token);
        if token.depth == level && matches!(kw, Kw::From | Kw::To) {
            direction = kw;
            break;
        }
    }
    let mut copy = match direction {
        Kw::From => Classification::new(StatementClass::Write, Reason::Command(Command::CopyFrom)),
        Kw::To if cur.peek_kw() == Kw::Stdout => {
            Classification::new(StatementClass::Read, Reason::Command(Command::CopyTo))
        }
        Kw::To => Classification::new(StatementClass::Write, Reason::Command(Command::CopyToFile)),
        _ => Classification::new(
            StatementClass::Unknown,
            Reason::UnknownStatement(Name::exact(b"COPY")),
        ),
    };
    if let Some(inner) = inner {
        copy.absorb(inner);
    }
    copy
}

/// `CREATE ...`: DDL. Temporary tables, views and sequences pin the session unless they are
/// `ON COMMIT DROP`; `FUNCTION`/`PROCEDURE` bodies may be `BEGIN ATOMIC ... END`.
fn create(cur: &mut Cursor<'_, '_>) -> Classification {
    let mut temporary = false;
    loop {
        match cur.peek_kw() {
            Kw::Or => {
                cur.next();
                if cur.peek_kw() == Kw::Replace {
                    cur.next();
                }
            }
            Kw::Temp | Kw::Temporary => {
                cur.next();
                temporary = true;
            }
            Kw::Local | Kw::Global | Kw::Unlogged | Kw::Recursive => {
                cur.next();
            }
            Kw::Function | Kw::Procedure => {
                cur.routine = true;
                break;
            }
            _ => break,
        }
    }
    // An object created in the `pg_temp` schema is temporary too (5.9.6 "The Schema Search
    // Path"); only a name before the first parenthesis or `AS` is the created object's.
    let level = cur.depth;
    let mut in_name = true;
    let mut on_commit_drop = false;
    let mut last = [Kw::None; 2];
    while let Some(token) = cur.next() {
        let kw = cur.kw(token);
        if token.kind == Kind::LParen || kw == Kw::As {
            in_name = false;
        }
        if in_name
            && token.kind == Kind::Word
            && is_temporary_schema(cur.text(token))
            && cur.peek_kind() == Some(Kind::Dot)
        {
            temporary = true;
        }
        if kw == Kw::Drop && token.depth == level && last == [Kw::On, Kw::Commit] {
            on_commit_drop = true;
        }
        last = [last[1], kw];
    }
    let mut create = Classification::new(StatementClass::Ddl, Reason::Command(Command::Create));
    if temporary && !on_commit_drop {
        create.pin = Some(PinReason::TemporaryTable);
    }
    create
}

/// `pg_temp`, or a session's own `pg_temp_N`.
fn is_temporary_schema(text: &[u8]) -> bool {
    text.eq_ignore_ascii_case(b"pg_temp")
        || (text.len() > 8 && text[..8].eq_ignore_ascii_case(b"pg_temp_"))
}

/// `BEGIN`/`START TRANSACTION` with its modes.
fn begin(cur: &mut Cursor<'_, '_>) -> Classification {
    let (read_only, isolation) = transaction_modes(cur);
    transaction(
        TransactionControl::Begin {
            read_only,
            isolation,
        },
        Command::Begin,
    )
}

/// `ROLLBACK [WORK|TRANSACTION] [AND [NO] CHAIN]`, `ROLLBACK ... TO [SAVEPOINT] name`,
/// `ROLLBACK PREPARED 'id'`.
fn rollback(cur: &mut Cursor<'_, '_>) -> Classification {
    if cur.peek_kw() == Kw::Prepared {
        return transaction(
            TransactionControl::RollbackPrepared,
            Command::RollbackPrepared,
        );
    }
    let (mut to, mut no, mut chain) = (false, false, false);
    while let Some(token) = cur.next() {
        match cur.kw(token) {
            Kw::To => to = true,
            Kw::No => no = true,
            Kw::Chain => chain = true,
            _ => {}
        }
    }
    if to {
        transaction(
            TransactionControl::RollbackToSavepoint,
            Command::RollbackToSavepoint,
        )
    } else {
        transaction(
            TransactionControl::Rollback {
                chain: chain && !no,
            },
            Command::Rollback,
        )
    }
}

/// `AND CHAIN` (true) versus nothing or `AND NO CHAIN`.
fn and_chain(cur: &mut Cursor<'_, '_>) -> bool {
    let (mut no, mut chain) = (false, false);
    while let Some(token) = cur.next() {
        match cur.kw(token) {
            Kw::No => no = true,
            Kw::Chain => chain = true,
            _ => {}
        }
    }
    chain && !no
}

/// Transaction modes (`BEGIN`, `START TRANSACTION`, `SET TRANSACTION`): `ISOLATION LEVEL ...`,
/// `READ ONLY`/`READ WRITE`, `[NOT] DEFERRABLE`, optionally separated by commas. Writing both
/// `READ ONLY` and `READ WRITE` counts as read-write.
fn transaction_modes(cur: &mut Cursor<'_, '_>) -> (Option<bool>, Option<IsolationLevel>) {
    let mut read_only = None;
    let mut isolation = None;
    while let Some(token) = cur.next() {
        match cur.kw(token) {
            Kw::Isolation => {
                if cur.peek_kw() == Kw::Level {
                    cur.next();
                }
                let level = match cur.peek_kw() {
                    Kw::Serializable => Some(IsolationLevel::Serializable),
                    Kw::Repeatable => Some(IsolationLevel::RepeatableRead),
                    Kw::Read => match cur.lookahead().nth(1).map(|t| cur.kw(t)) {
                        Some(Kw::Committed) => Some(IsolationLevel::ReadCommitted),
                        Some(Kw::Uncommitted) => Some(IsolationLevel::ReadUncommitted),
                        _ => None,
                    },
                    _ => None,
                };
                if let Some(level) = level {
                    isolation = Some(level);
                    // Consume the level's words so that its READ is not taken for a mode.
                    cur.next();
                    if level != IsolationLevel::Serializable {
                        cur.next();
                    }
                }
            }
            Kw::Read => match cur.peek_kw() {
                Kw::Only => {
                    cur.next();
                    if read_only != Some(false) {
                        read_only = Some(true);
                    }
                }
                Kw::Write => {
                    cur.next();
                    read_only = Some(false);
                }
                _ => {}
            },
            _ => {}
        }
    }
    (read_only, isolation)
}

/// `SET ...`: session state, pinning unless it ends with the transaction; `SET TRANSACTION` is
/// transaction control.
fn set(cur: &mut Cursor<'_, '_>) -> Classification {
    let session = |command| {
        pinned(
            Classification::new(StatementClass::SessionState, Reason::Command(command)),
            PinReason::SessionSetting,
        )
    };
    match cur.peek_kw() {
        Kw::Transaction => {
            cur.next();
            let (read_only, isolation) = transaction_modes(cur);
            transaction(
                TransactionControl::SetTransaction {
                    read_only,
                    isolation,
                },
                Command::SetTransaction,
            )
        }
        Kw::Session => {
            cur.next();
            if cur.peek_kw() == Kw::Characteristics {
                session(Command::SetSessionCharacteristics)
            } else {
                session(Command::Set)
            }
        }
        Kw::Local => Classification::new(
            StatementClass::SessionState,
            Reason::Command(Command::SetLocal),
        ),
        Kw::Constraints => Classification::new(
            StatementClass::SessionState,
            Reason::Command(Command::SetConstraints),
        ),
        _ => session(Command::Set),
    }
}

/// `PREPARE name [(types)] AS statement`: session state that pins, and at least as strong as
/// the prepared statement (a prepared write must be prepared where it can execute).
fn prepare(cur: &mut Cursor<'_, '_>, functions: &FunctionSet, budget: u8) -> Classification {
    let level = cur.depth;
    let mut prepared = None;
    while let Some(token) = cur.next() {
        if token.depth == level && cur.kw(token) == Kw::As {
            prepared = cur
                .next()
                .map(|first| statement(cur, functions, first, budget - 1));
            break;
        }
    }
    let mut prepare = pinned(
        Classification::new(
            StatementClass::SessionState,
            Reason::Command(Command::Prepare),
        ),
        PinReason::PreparedStatement,
    );
    if let Some(prepared) = prepared {
        prepare.absorb(prepared);
    }
    prepare
}

/// `DECLARE name ... CURSOR [WITH HOLD] FOR query`: session state (a `WITH HOLD` cursor outlives
/// its transaction and pins), at least as strong as the query (`FOR UPDATE` cursors lock).
fn declare(cur: &mut Cursor<'_, '_>, functions: &FunctionSet, budget: u8) -> Classification {
    let level = cur.depth;
    let mut hold = false;
    let mut query = None;
    while let Some(token) = cur.next() {
        if token.depth != level {
            continue;
        }
        match cur.kw(token) {
            Kw::With if cur.peek_kw() == Kw::Hold => {
                cur.next();
                hold = true;
            }
            Kw::For => {
                query = cur
                    .next()
                    .map(|first| statement(cur, functions, first, budget - 1));
                break;
            }
            _ => {}
        }
    }
    let mut declare = Classification::new(
        StatementClass::SessionState,
        Reason::Command(Command::Declare),
    );
    if hold {
        declare.pin = Some(PinReason::HoldCursor);
    }
    if let Some(query) = query {
        declare.absorb(query);
    }
    declare
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_names_are_decoded() {
        assert_eq!(decode_quoted(br#""nextval""#).as_bytes(), b"nextval");
        assert_eq!(decode_quoted(br#""a""b""#).as_bytes(), b"a\"b");
        assert_eq!(
            decode_unicode(br#"U&"n\0065xtval""#, b"\\")
                .unwrap()
                .as_bytes(),
            b"nextval"
        );
        assert_eq!(
            decode_unicode(br#"U&"n!+000065xtval""#, b"!")
                .unwrap()
                .as_bytes(),
            b"nextval"
        );
        assert_eq!(
            decode_unicode(br#"U&"\D83D\DE00""#, b"\\")
                .unwrap()
                .as_bytes(),
            "\u{1F600}".as_bytes()
        );
        assert_eq!(decode_unicode(br#"U&"\D83D""#, b"\\"), None);
        assert_eq!(decode_unicode(br#"U&"\00zz""#, b"\\"), None);
    }

    #[test]
    fn literals() {
        fn literal(sql: &str) -> (Token, &[u8]) {
            let mut lexer = Lexer::new(sql.as_bytes(), true);
            let token = lexer.next_token().unwrap();
            (token, lexer.text(token))
        }
        let is_true = |sql| {
            let (token, text) = literal(sql);
            is_true_literal(token, text)
        };
        let is_false = |sql| {
            let (token, text) = literal(sql);
            is_false_literal(token, text)
        };
        assert!(is_true("TRUE"));
        assert!(is_true("'on'"));
        assert!(!is_true("'off'"));
        assert!(!is_true("$3"));
        assert!(is_false("0"));
        assert!(is_false("off"));
        assert!(!is_false("on"));
    }
}
