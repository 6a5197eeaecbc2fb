//! Statement shape: what a query string's text shows about the work it asks for (joins,
//! subqueries, CTEs, set operations, aggregation, windows, sorting, limits), the patterns worth
//! a warning, and a complexity grade computed from the counts. It backs the "complexity
//! estimate and recommendation" of `POST /api/database/analyze-query`, next to the statement's
//! class and route.
//!
//! ```
//! use meridian_core::classify::{Complexity, Finding, shape};
//!
//! let point = shape(b"SELECT * FROM users WHERE id = $1", true);
//! assert_eq!(point.complexity(), Complexity::Simple);
//! assert_eq!(point.findings(), [Finding::SelectStar]);
//!
//! let wipe = shape(b"/* WHERE */ DELETE FROM sessions -- WHERE id = 1", true);
//! assert!(wipe.unbounded_write);
//! ```
//!
//! # How it reads the text
//! One pass over the tokens of the hand-written lexer (submodule `lexer`, PostgreSQL docs section
//! 4.1): comments are skipped and string constants, quoted identifiers and dollar-quoted bodies
//! are single tokens, so a key word inside them never counts. Statements are cut at `;` as the
//! classifier cuts them (a `BEGIN ATOMIC ... END` routine body keeps its semicolons), and the
//! counts of all statements of a batch are added up. The scan keeps a few bits of clause state
//! for each parenthesis level (in a select list, in a `FROM` list, in a `WITH` list, an
//! `UPDATE`/`DELETE` still waiting for its `WHERE`...) in `u64` masks: no allocation, constant
//! work per token, never a panic. Clause state is kept for the first 64 levels of parentheses;
//! deeper text is still counted by its key words.
//!
//! What counts:
//! - **joins**: each `JOIN` key word (any kind: `LEFT`, `CROSS`, `NATURAL`...) plus each comma
//!   between the items of a `FROM` list (also `UPDATE ... FROM a, b`) at that list's level.
//! - **subqueries**: each parenthesized `SELECT` or `WITH` query used as an expression or a
//!   `FROM` item (`IN (SELECT`, `EXISTS (SELECT`, `FROM (SELECT ...) x`). A CTE body, an
//!   operand of a set operation and a parenthesized statement are not subqueries: they are
//!   counted as CTEs, set operations, or not at all.
//! - **ctes**: each `name AS [[NOT] MATERIALIZED] (...)` entry of a `WITH` list; `recursive`
//!   when the list is `WITH RECURSIVE`.
//! - **set_operations**: each `UNION`, `INTERSECT` and `EXCEPT`.
//! - **aggregates**: `GROUP BY`, `HAVING`, `WITHIN GROUP`, or a call of a built-in aggregate
//!   (PostgreSQL docs section 9.21) that is not followed by `OVER` (that is a window function).
//! - **order_by**: an `ORDER BY` anywhere: a query's, a window's or an aggregate's all sort.
//! - **limit**: `LIMIT n` (not `LIMIT ALL`) or `FETCH FIRST|NEXT` in a query.
//! - **unbounded_write**: an `UPDATE` or `DELETE` statement (also one in a CTE, after
//!   `EXPLAIN ANALYZE` or `PREPARE ... AS`) with no `WHERE` at its own level. `INSERT ... ON
//!   CONFLICT DO UPDATE` and `MERGE`'s actions only touch the rows they match.
//! - **unbounded_read**: a statement that is a plain `SELECT` (or `TABLE t`) reading a table, with
//!   no `WHERE`, no limit, no aggregation and no set operation at its top level. A `WHERE` may
//!   bound the rows (a key lookup returns one) and the text cannot tell, so it silences the
//!   finding rather than warn on every point query.
//!
//! # Complexity
//! A score adds weights: 1 per join, 2 per subquery, 2 per CTE, 2 per set operation, 1 for any
//! aggregation, 3 for any window function, 6 for `WITH RECURSIVE`. A score up to
//! [`SIMPLE_MAX_SCORE`] (2) is [`Complexity::Simple`], up to [`MODERATE_MAX_SCORE`] (7)
//! [`Complexity::Moderate`], above it [`Complexity::Complex`]. So a single-table point query
//! (0), a `count(*)` (1) or a three-way join (2) is simple; a three-way join with aggregation
//! (3), a window function (3) or three subqueries (6) is moderate; a recursive CTE (at least 8)
//! or a query with several joins, subqueries and a window is complex. A batch is graded on the
//! sum of its statements.
//!
//! # What it cannot see
//! This is the text, not a plan: the size of a table, a view's body, a function's body and the
//! indexes that exist are invisible. A grade says how much the statement asks of the planner,
//! not how long it runs; `EXPLAIN` answers that.

use std::fmt;

use super::keyword::{Kw, keyword};
use super::lexer::{Kind, Lexer};

/// A score up to this is [`Complexity::Simple`].
pub const SIMPLE_MAX_SCORE: usize = 2;
/// A score above [`SIMPLE_MAX_SCORE`] and up to this is [`Complexity::Moderate`]; above it,
/// [`Complexity::Complex`].
pub const MODERATE_MAX_SCORE: usize = 7;

const JOIN_WEIGHT: usize = 1;
const SUBQUERY_WEIGHT: usize = 2;
const CTE_WEIGHT: usize = 2;
const SET_OPERATION_WEIGHT: usize = 2;
const AGGREGATE_WEIGHT: usize = 1;
const WINDOW_WEIGHT: usize = 3;
const RECURSIVE_WEIGHT: usize = 6;

/// What the text of a query string shows, counted over every statement of a batch (see the
/// module documentation for what each field counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Shape {
    /// Statements in the text (empty ones between semicolons do not count).
    pub statements: usize,
    /// `JOIN` key words plus commas between `FROM` items.
    pub joins: usize,
    /// Parenthesized queries used as an expression or a `FROM` item.
    pub subqueries: usize,
    /// Entries of `WITH` lists.
    pub ctes: usize,
    /// A `WITH RECURSIVE` list.
    pub recursive: bool,
    /// `UNION`, `INTERSECT` and `EXCEPT`.
    pub set_operations: usize,
    /// `GROUP BY`, `HAVING`, `WITHIN GROUP` or a call of a built-in aggregate (not as a window).
    pub aggregates: bool,
    /// A function call with `OVER`.
    pub window_functions: bool,
    /// `ORDER BY` anywhere.
    pub order_by: bool,
    /// `DISTINCT` (not `IS [NOT] DISTINCT FROM`).
    pub distinct: bool,
    /// `LIMIT n` or `FETCH FIRST|NEXT`.
    pub limit: bool,
    /// `*` or `t.*` in a select list (not under `EXISTS`, where it reads nothing).
    pub select_star: bool,
    /// An `UPDATE` or `DELETE` statement without `WHERE`.
    pub unbounded_write: bool,
    /// A plain `SELECT` from a table with no `WHERE`, limit or aggregation at its top level.
    pub unbounded_read: bool,
    /// `FOR UPDATE`, `FOR NO KEY UPDATE`, `FOR SHARE` or `FOR KEY SHARE` in a query.
    pub for_update: bool,
    /// `LIKE`/`ILIKE` (or `~~`, `~~*`) with a pattern constant starting with `%` or `_`.
    pub leading_wildcard_like: bool,
}

/// The grade of a [`Shape`]'s score; ordered from simple to complex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Complexity {
    /// Score up to [`SIMPLE_MAX_SCORE`].
    Simple,
    /// Score up to [`MODERATE_MAX_SCORE`].
    Moderate,
    /// Score above [`MODERATE_MAX_SCORE`].
    Complex,
}

impl Complexity {
    /// The grade of a score.
    pub fn from_score(score: usize) -> Complexity {
        if score <= SIMPLE_MAX_SCORE {
            Complexity::Simple
        } else if score <= MODERATE_MAX_SCORE {
            Complexity::Moderate
        } else {
            Complexity::Complex
        }
    }

    /// `"simple"`, `"moderate"` or `"complex"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Complexity::Simple => "simple",
            Complexity::Moderate => "moderate",
            Complexity::Complex => "complex",
        }
    }
}

impl fmt::Display for Complexity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pattern in the text worth a recommendation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Finding {
    /// [`Shape::unbounded_write`].
    UnboundedWrite,
    /// [`Shape::unbounded_read`].
    UnboundedRead,
    /// [`Shape::select_star`].
    SelectStar,
    /// [`Shape::leading_wildcard_like`].
    LeadingWildcardLike,
    /// [`Shape::recursive`].
    RecursiveCte,
    /// [`Shape::for_update`].
    LockingRead,
}

impl Finding {
    /// A stable identifier, for JSON and tests.
    pub fn code(self) -> &'static str {
        match self {
            Finding::UnboundedWrite => "unbounded_write",
            Finding::UnboundedRead => "unbounded_read",
            Finding::SelectStar => "select_star",
            Finding::LeadingWildcardLike => "leading_wildcard_like",
            Finding::RecursiveCte => "recursive_cte",
            Finding::LockingRead => "locking_read",
        }
    }

    /// The advice, for people.
    pub fn message(self) -> &'static str {
        match self {
            Finding::UnboundedWrite => "UPDATE or DELETE without WHERE changes every row",
            Finding::UnboundedRead => "a read without LIMIT may return an unbounded number of rows",
            Finding::SelectStar => "SELECT * reads every column; name the columns you need",
            Finding::LeadingWildcardLike => {
                "LIKE with a leading wildcard (% or _) cannot use a b-tree index"
            }
            Finding::RecursiveCte => {
                "recursive CTE: bound its depth (a level counter in WHERE, or a CYCLE clause)"
            }
            Finding::LockingRead => {
                "FOR UPDATE/SHARE locks the rows it reads until the transaction ends; keep that transaction short"
            }
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl Shape {
    /// The complexity score (see the module documentation); saturates instead of overflowing.
    pub fn score(&self) -> usize {
        let weigh = |count: usize, weight: usize| count.saturating_mul(weight);
        let flag = |set: bool, weight: usize| if set { weight } else { 0 };
        [
            weigh(self.joins, JOIN_WEIGHT),
            weigh(self.subqueries, SUBQUERY_WEIGHT),
            weigh(self.ctes, CTE_WEIGHT),
            weigh(self.set_operations, SET_OPERATION_WEIGHT),
            flag(self.aggregates, AGGREGATE_WEIGHT),
            flag(self.window_functions, WINDOW_WEIGHT),
            flag(self.recursive, RECURSIVE_WEIGHT),
        ]
        .into_iter()
        .fold(0, usize::saturating_add)
    }

    /// The grade of [`Shape::score`].
    pub fn complexity(&self) -> Complexity {
        Complexity::from_score(self.score())
    }

    /// The recommendations the shape calls for, most serious first.
    pub fn findings(&self) -> Vec<Finding> {
        [
            (self.unbounded_write, Finding::UnboundedWrite),
            (self.unbounded_read, Finding::UnboundedRead),
            (self.select_star, Finding::SelectStar),
            (self.leading_wildcard_like, Finding::LeadingWildcardLike),
            (self.recursive, Finding::RecursiveCte),
            (self.for_update, Finding::LockingRead),
        ]
        .into_iter()
        .filter_map(|(found, finding)| found.then_some(finding))
        .collect()
    }
}

/// The shape of a query string: one statement or a batch. Any bytes are accepted (text in the
/// client's encoding); `standard_conforming_strings` as the server reports it (on by default
/// since PostgreSQL 9.1: off, a backslash escapes a quote in `'...'`).
pub fn shape(sql: &[u8], standard_conforming_strings: bool) -> Shape {
    let mut lexer = Lexer::new(sql, standard_conforming_strings);
    let mut shape = Shape::default();
    let mut scan = Scan::new();
    while let Some(token) = lexer.next_token() {
        if token.kind == Kind::Semicolon && scan.atomic_depth == 0 {
            scan.finish(&mut shape);
            scan = Scan::new();
        } else {
            scan.token(&lexer, token.kind, lexer.text(token), &mut shape);
        }
    }
    scan.finish(&mut shape);
    shape
}

/// What the scan asks of a key word.
impl Kw {
    /// Key words that still act right after `AS`; after `AS` any other word is a column label
    /// (`SELECT 1 AS limit` is valid SQL).
    fn acts_after_as(self) -> bool {
        matches!(
            self,
            Kw::Materialized
                | Kw::Not
                | Kw::Select
                | Kw::With
                | Kw::Values
                | Kw::Table
                | Kw::Insert
                | Kw::Update
                | Kw::Delete
                | Kw::Merge
        )
    }

    /// Key words that start the main statement after a `WITH` list.
    fn starts_statement_after_with(self) -> bool {
        matches!(
            self,
            Kw::Select | Kw::Values | Kw::Table | Kw::Insert | Kw::Update | Kw::Delete | Kw::Merge
        )
    }

    /// Key words that end a select list or a `FROM` list at their level.
    fn ends_lists(self) -> bool {
        matches!(
            self,
            Kw::Where
                | Kw::Group
                | Kw::Having
                | Kw::Window
                | Kw::Order
                | Kw::Limit
                | Kw::Offset
                | Kw::Fetch
                | Kw::For
                | Kw::Union
                | Kw::Intersect
                | Kw::Except
                | Kw::Returning
                | Kw::Set
                | Kw::Into
        )
    }

    fn is_set_operation(self) -> bool {
        matches!(self, Kw::Union | Kw::Intersect | Kw::Except)
    }
}

/// Words after `WITH` that show it is not a CTE list: `WITH TIME ZONE`, `WITH ORDINALITY`,
/// `WITH [LOCAL | CASCADED] CHECK OPTION`, `WITH HOLD`, `WITH [NO] DATA`, `WITH TIES`,
/// `WITH GRANT OPTION`, `WITH ADMIN OPTION`. (`WITH (option, ...)` is told by its `(`.)
const NOT_A_CTE_LIST: [&str; 11] = [
    "time",
    "ordinality",
    "local",
    "cascaded",
    "check",
    "hold",
    "no",
    "data",
    "ties",
    "grant",
    "admin",
];

/// The built-in aggregate functions (PostgreSQL docs section 9.21), plus every `regr_*`.
const AGGREGATES: [&str; 35] = [
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "array_agg",
    "string_agg",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
    "jsonb_object_agg",
    "json_arrayagg",
    "json_objectagg",
    "xmlagg",
    "bool_and",
    "bool_or",
    "every",
    "bit_and",
    "bit_or",
    "bit_xor",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "corr",
    "covar_pop",
    "covar_samp",
    "percentile_cont",
    "percentile_disc",
    "mode",
    "range_agg",
    "range_intersect_agg",
    "any_value",
];

fn is_aggregate(name: &[u8]) -> bool {
    name.len() <= 19
        && (AGGREGATES
            .iter()
            .any(|known| name.eq_ignore_ascii_case(known.as_bytes()))
            || name
                .get(..5)
                .is_some_and(|prefix| prefix.eq_ignore_ascii_case(b"regr_")))
}

/// True if the string constant `text` (a whole token, prefix and quotes included) starts with a
/// `LIKE` wildcard.
fn leading_wildcard(text: &[u8]) -> bool {
    let content = if text.first() == Some(&b'$') {
        // `$tag$body$tag$`: the body starts after the tag's second `$`.
        text.iter()
            .skip(1)
            .position(|&b| b == b'$')
            .and_then(|at| text.get(at + 2))
    } else {
        // `'...'`, `E'...'`, `N'...'`, `U&'...'`: after the first quote.
        text.iter()
            .position(|&b| b == b'\'')
            .and_then(|at| text.get(at + 1))
    };
    matches!(content, Some(b'%' | b'_'))
}

/// A token as the scan remembers it, for the key words that depend on what came before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Key(Kw),
    /// An unquoted or quoted name.
    Name,
    /// A name of a built-in aggregate, followed by `(`.
    Aggregate,
    LParen,
    RParen,
    Comma,
    Dot,
    /// A `LIKE` operator: `~~`, `~~*`, `!~~`, `!~~*`.
    LikeOperator,
    Other,
}

/// What the statement is, from its first command word (after `EXPLAIN`/`PREPARE ... AS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lead {
    Select,
    Table,
    /// `GRANT`/`REVOKE`: `SELECT` is a privilege and `FROM` lists roles.
    Privileges,
    /// The cursor `FETCH` statement: `FETCH FIRST` is not a limit.
    Fetch,
    Create,
    Other,
}

impl Lead {
    fn of(key: Kw) -> Lead {
        match key {
            Kw::Select => Lead::Select,
            Kw::Table => Lead::Table,
            Kw::Grant | Kw::Revoke => Lead::Privileges,
            Kw::Fetch => Lead::Fetch,
            Kw::Create => Lead::Create,
            _ => Lead::Other,
        }
    }
}

/// A statement prefix that the real statement follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prefix {
    None,
    /// `EXPLAIN [ANALYZE] [VERBOSE] [(options)]`.
    Explain,
    /// `PREPARE name [(types)] AS`.
    Prepare,
}

/// Where a call of a built-in aggregate stands; the depth is that of its `(`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Idle,
    /// Inside the argument list.
    Open(u32),
    /// Just closed: the next token tells an aggregate from a window function (`OVER`).
    Closed(u32),
    /// After `FILTER`, before its `(`.
    FilterNext(u32),
    /// Inside `FILTER (...)`.
    Filter(u32),
}

/// Clause state per parenthesis level: bit `d` describes the group at depth `d` (0 is the
/// statement itself). Levels from 64 on are not tracked (their bits are always clear).
#[derive(Debug, Clone, Copy, Default)]
struct Levels {
    /// The next token at this level starts a statement (first token, after `EXPLAIN`...).
    command_next: u64,
    /// A parenthesized query that is not a subquery: a CTE body, a set-operation operand, a
    /// parenthesized statement.
    query_group: u64,
    /// Opened by `EXISTS (`: its select list is never read.
    exists_group: u64,
    /// Inside a `WITH` list, before the main statement.
    with_list: u64,
    /// Inside a select list.
    select_list: u64,
    /// Inside a `FROM` list.
    from_list: u64,
    /// A `SELECT`, `UPDATE` or `DELETE` stands at this level: `FROM` starts a `FROM` list,
    /// `FOR UPDATE` is a locking clause.
    query: u64,
    /// An `UPDATE` or `DELETE` that has not met its `WHERE`.
    write_without_where: u64,
}

impl Levels {
    /// Forgets the state of every level deeper than `depth`.
    fn keep_through(&mut self, depth: u32) {
        let keep = if depth >= 63 {
            u64::MAX
        } else {
            (1u64 << (depth + 1)) - 1
        };
        for mask in [
            &mut self.command_next,
            &mut self.query_group,
            &mut self.exists_group,
            &mut self.with_list,
            &mut self.select_list,
            &mut self.from_list,
            &mut self.query,
            &mut self.write_without_where,
        ] {
            *mask &= keep;
        }
    }
}

/// The bit of level `depth` in a [`Levels`] mask, 0 past the tracked levels.
fn bit(depth: u32) -> u64 {
    1u64.checked_shl(depth).unwrap_or(0)
}

/// The scan of one statement.
#[derive(Debug)]
struct Scan {
    started: bool,
    /// Parentheses open before the next token.
    depth: u32,
    /// The last three tokens, latest first.
    history: [Tok; 3],
    levels: Levels,
    lead: Option<Lead>,
    /// Depth of the lead command word: its level and the ones outside it are the statement's
    /// top level (`(SELECT ...) LIMIT 1`).
    lead_depth: u32,
    prefix: Prefix,
    /// A `WITH` at this depth, waiting for the next token to tell whether it opens a CTE list.
    with_next: Option<u32>,
    /// A `LIMIT` at this depth, waiting for the next token (`LIMIT ALL` is no limit).
    limit_next: Option<u32>,
    /// A `FROM` at the top level, waiting for the next token: a table or a subquery/function.
    from_next: bool,
    call: Call,
    /// `CREATE FUNCTION`/`CREATE PROCEDURE`: track `BEGIN ATOMIC ... END`.
    routine: bool,
    /// Open `BEGIN ATOMIC` bodies and `CASE`s inside them; semicolons do not end the statement.
    atomic_depth: u32,
    top_from: bool,
    top_where: bool,
    top_limit: bool,
    top_aggregate: bool,
    set_operations: usize,
}

impl Scan {
    fn new() -> Scan {
        Scan {
            started: false,
            depth: 0,
            history: [Tok::Other; 3],
            levels: Levels {
                command_next: 1,
                ..Levels::default()
            },
            lead: None,
            lead_depth: 0,
            prefix: Prefix::None,
            with_next: None,
            limit_next: None,
            from_next: false,
            call: Call::Idle,
            routine: false,
            atomic_depth: 0,
            top_from: false,
            top_where: false,
            top_limit: false,
            top_aggregate: false,
            set_operations: 0,
        }
    }

    /// True for the statement's top level: the lead command's level and any outside it.
    fn is_top(&self, depth: u32) -> bool {
        depth <= self.lead_depth
    }

    fn aggregate(&mut self, depth: u32, shape: &mut Shape) {
        shape.aggregates = true;
        if self.is_top(depth) {
            self.top_aggregate = true;
        }
    }

    fn token(&mut self, lexer: &Lexer<'_>, kind: Kind, text: &[u8], shape: &mut Shape) {
        self.started = true;
        self.resolve_pending(lexer, kind, text, shape);
        let tok = match kind {
            Kind::Word => self.word(lexer, text, shape),
            Kind::LParen => self.open(shape),
            Kind::RParen => self.close(shape),
            _ => {
                self.levels.command_next &= !bit(self.depth);
                self.other(kind, text, shape)
            }
        };
        self.history = [tok, self.history[0], self.history[1]];
    }

    /// Decisions that waited for this token.
    fn resolve_pending(&mut self, lexer: &Lexer<'_>, kind: Kind, text: &[u8], shape: &mut Shape) {
        let is_word = |word: &str| kind == Kind::Word && text.eq_ignore_ascii_case(word.as_bytes());
        if let Some(depth) = self.with_next.take() {
            let opens = match kind {
                Kind::Word if is_word("recursive") => {
                    shape.recursive = true;
                    true
                }
                Kind::Word => !NOT_A_CTE_LIST
                    .iter()
                    .any(|word| text.eq_ignore_ascii_case(word.as_bytes())),
                Kind::QuotedIdent | Kind::UnicodeIdent => true,
                _ => false,
            };
            if opens {
                self.levels.with_list |= bit(depth);
            }
        }
        if let Some(depth) = self.limit_next.take()
            && !is_word("all")
        {
            shape.limit = true;
            if self.is_top(depth) {
                self.top_limit = true;
            }
        }
        if self.from_next {
            self.from_next = false;
            // A table name, not `(subquery)`, `(VALUES ...)` or `function(...)`.
            let name = matches!(kind, Kind::Word | Kind::QuotedIdent | Kind::UnicodeIdent);
            if name && !lexer.next_starts_with(b'(') {
                self.top_from = true;
            }
        }
        match self.call {
            Call::Closed(_) if is_word("over") => self.call = Call::Idle,
            Call::Closed(depth) if is_word("filter") => self.call = Call::FilterNext(depth),
            Call::FilterNext(depth) if kind == Kind::LParen => self.call = Call::Filter(depth),
            Call::Closed(depth) | Call::FilterNext(depth) => {
                self.aggregate(depth, shape);
                self.call = Call::Idle;
            }
            Call::Idle | Call::Open(_) | Call::Filter(_) => {}
        }
    }

    fn word(&mut self, lexer: &Lexer<'_>, text: &[u8], shape: &mut Shape) -> Tok {
        let depth = self.depth;
        let here = bit(depth);
        let [prev, before, earlier] = self.history;
        let mut key = keyword(text);
        if prev == Tok::Dot || (prev == Tok::Key(Kw::As) && !key.acts_after_as()) {
            key = Kw::None;
        }
        let at_command = self.levels.command_next & here != 0;
        self.levels.command_next &= !here;
        // The first word of the statement (of a parenthesized one, of a CTE body), as opposed
        // to the first word of any group, such as a call's first argument.
        let at_statement = at_command && (depth == 0 || self.levels.query_group & here != 0);
        if key == Kw::None {
            if at_statement && self.lead.is_none() {
                self.lead = Some(Lead::Other);
                self.lead_depth = depth;
            }
            return if lexer.next_starts_with(b'(') && is_aggregate(text) {
                Tok::Aggregate
            } else {
                Tok::Name
            };
        }
        if at_statement && self.lead.is_none() {
            match key {
                Kw::Explain if self.prefix == Prefix::None => {
                    self.prefix = Prefix::Explain;
                    self.levels.command_next |= here;
                    return Tok::Key(key);
                }
                Kw::Analyze | Kw::Analyse | Kw::Verbose if self.prefix == Prefix::Explain => {
                    self.levels.command_next |= here;
                    return Tok::Key(key);
                }
                Kw::Prepare if self.prefix == Prefix::None => {
                    self.prefix = Prefix::Prepare;
                    return Tok::Key(key);
                }
                _ => {
                    self.lead = Some(Lead::of(key));
                    self.lead_depth = depth;
                }
            }
        }
        let after_with_list =
            self.levels.with_list & here != 0 && key.starts_statement_after_with();
        if after_with_list {
            self.levels.with_list &= !here;
        }
        // A command, as opposed to `FOR UPDATE`, `ON DELETE`, `DO UPDATE`, a column named
        // `delete` as the first argument of a call...
        let command = after_with_list || at_statement;
        let first_in_group = prev == Tok::LParen && depth > 0;
        let levels = &mut self.levels;
        match key {
            Kw::Select => {
                if first_in_group && levels.query_group & here == 0 {
                    shape.subqueries += 1;
                }
                if self.lead != Some(Lead::Privileges) {
                    if levels.exists_group & here == 0 {
                        levels.select_list |= here;
                    }
                    levels.query |= here;
                    levels.from_list &= !here;
                }
            }
            Kw::With => {
                if first_in_group && levels.query_group & here == 0 {
                    shape.subqueries += 1;
                }
                self.with_next = Some(depth);
            }
            Kw::Table if command && depth <= self.lead_depth => self.top_from = true,
            Kw::Update | Kw::Delete if command => {
                levels.write_without_where |= here;
                levels.query |= here;
            }
            Kw::Update | Kw::Share if levels.query & here != 0 => {
                // FOR UPDATE, FOR SHARE, FOR NO KEY UPDATE, FOR KEY SHARE.
                let locking = matches!(
                    (key, prev, before, earlier),
                    (_, Tok::Key(Kw::For), _, _)
                        | (Kw::Share, Tok::Key(Kw::Key), Tok::Key(Kw::For), _)
                        | (
                            Kw::Update,
                            Tok::Key(Kw::Key),
                            Tok::Key(Kw::No),
                            Tok::Key(Kw::For)
                        )
                );
                shape.for_update |= locking;
            }
            Kw::From
                if prev != Tok::Key(Kw::Distinct)
                    && levels.query & here != 0
                    && self.lead != Some(Lead::Privileges) =>
            {
                levels.from_list |= here;
                levels.select_list &= !here;
                if depth <= self.lead_depth {
                    self.from_next = true;
                }
            }
            Kw::Where => {
                levels.write_without_where &= !here;
                if depth <= self.lead_depth {
                    self.top_where = true;
                }
            }
            Kw::Group if prev == Tok::Key(Kw::Within) => {
                self.aggregate(depth, shape);
                // Inside an aggregate call: the select list goes on.
                return Tok::Key(key);
            }
            Kw::Having => self.aggregate(depth, shape),
            Kw::By if prev == Tok::Key(Kw::Group) => self.aggregate(depth, shape),
            Kw::By if prev == Tok::Key(Kw::Order) => shape.order_by = true,
            Kw::Union | Kw::Intersect | Kw::Except => {
                shape.set_operations += 1;
                self.set_operations += 1;
            }
            Kw::Limit => self.limit_next = Some(depth),
            Kw::First | Kw::Next
                if prev == Tok::Key(Kw::Fetch) && self.lead != Some(Lead::Fetch) =>
            {
                shape.limit = true;
                if depth <= self.lead_depth {
                    self.top_limit = true;
                }
            }
            Kw::Join => shape.joins += 1,
            Kw::Distinct if !matches!(prev, Tok::Key(Kw::Is | Kw::Not)) => {
                shape.distinct = true;
            }
            Kw::Over if prev == Tok::RParen => shape.window_functions = true,
            Kw::As if self.prefix == Prefix::Prepare && self.lead.is_none() && depth == 0 => {
                levels.command_next |= here;
            }
            Kw::Function | Kw::Procedure if self.lead == Some(Lead::Create) && depth == 0 => {
                self.routine = true;
            }
            Kw::Begin if self.routine && depth == 0 => {
                let mut ahead = lexer.clone();
                if ahead.next_token().is_some_and(|next| {
                    next.kind == Kind::Word && lexer.text(next).eq_ignore_ascii_case(b"atomic")
                }) {
                    self.atomic_depth += 1;
                }
            }
            Kw::Case if self.atomic_depth > 0 && depth == 0 => self.atomic_depth += 1,
            Kw::End if self.atomic_depth > 0 && depth == 0 => self.atomic_depth -= 1,
            _ => {}
        }
        if key.ends_lists() {
            self.levels.select_list &= !here;
            self.levels.from_list &= !here;
        }
        Tok::Key(key)
    }

    fn open(&mut self, shape: &mut Shape) -> Tok {
        let depth = self.depth;
        let (here, inner) = (bit(depth), bit(depth.saturating_add(1)));
        let [prev, before, _] = self.history;
        let levels = &mut self.levels;
        levels.keep_through(depth);
        if levels.command_next & here != 0 {
            if self.prefix == Prefix::Explain && self.lead.is_none() {
                // EXPLAIN's option list; the statement follows it.
            } else {
                // A parenthesized statement, or a group whose first token is `(`: the inner
                // group plays the outer one's part.
                levels.command_next &= !here;
                levels.command_next |= inner;
                if depth == 0 || levels.query_group & here != 0 {
                    levels.query_group |= inner;
                }
            }
        } else {
            levels.command_next |= inner;
            let set_operand = match (prev, before) {
                (Tok::Key(key), _) if key.is_set_operation() => true,
                (Tok::Key(Kw::All | Kw::Distinct), Tok::Key(key)) => key.is_set_operation(),
                _ => false,
            };
            if levels.with_list & here != 0 && matches!(prev, Tok::Key(Kw::As | Kw::Materialized)) {
                shape.ctes += 1;
                levels.query_group |= inner;
            } else if set_operand {
                levels.query_group |= inner;
            }
            if prev == Tok::Key(Kw::Exists) {
                levels.exists_group |= inner;
            }
        }
        if prev == Tok::Aggregate && self.call == Call::Idle {
            self.call = Call::Open(depth);
        }
        self.depth = depth.saturating_add(1);
        Tok::LParen
    }

    fn close(&mut self, shape: &mut Shape) -> Tok {
        let inner = self.depth;
        let depth = inner.saturating_sub(1);
        if inner > 0 {
            if self.levels.write_without_where & bit(inner) != 0 {
                shape.unbounded_write = true;
            }
            self.levels.keep_through(depth);
        }
        self.depth = depth;
        if let Call::Open(at) | Call::Filter(at) = self.call
            && at == depth
        {
            self.call = Call::Closed(at);
        }
        Tok::RParen
    }

    fn other(&mut self, kind: Kind, text: &[u8], shape: &mut Shape) -> Tok {
        let here = bit(self.depth);
        let prev = self.history[0];
        match kind {
            Kind::Comma => {
                if self.levels.from_list & here != 0 {
                    shape.joins += 1;
                }
                Tok::Comma
            }
            Kind::Dot => Tok::Dot,
            Kind::QuotedIdent | Kind::UnicodeIdent => Tok::Name,
            Kind::Operator if text == b"*" => {
                if self.levels.select_list & here != 0
                    && matches!(
                        prev,
                        Tok::Key(Kw::Select | Kw::Distinct | Kw::All) | Tok::Comma | Tok::Dot
                    )
                {
                    shape.select_star = true;
                }
                Tok::Other
            }
            Kind::Operator if matches!(text, b"~~" | b"~~*" | b"!~~" | b"!~~*") => {
                Tok::LikeOperator
            }
            Kind::String => {
                if matches!(prev, Tok::Key(Kw::Like | Kw::Ilike) | Tok::LikeOperator)
                    && leading_wildcard(text)
                {
                    shape.leading_wildcard_like = true;
                }
                Tok::Other
            }
            _ => Tok::Other,
        }
    }

    fn finish(mut self, shape: &mut Shape) {
        if !self.started {
            return;
        }
        shape.statements += 1;
        if let Call::Closed(depth) | Call::FilterNext(depth) = self.call {
            self.aggregate(depth, shape);
        }
        if self.levels.write_without_where != 0 {
            shape.unbounded_write = true;
        }
        if matches!(self.lead, Some(Lead::Select | Lead::Table))
            && self.top_from
            && !self.top_where
            && !self.top_limit
            && !self.top_aggregate
            && self.set_operations == 0
        {
            shape.unbounded_read = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use Complexity::{Complex, Moderate, Simple};
    use Finding::{
        LeadingWildcardLike, LockingRead, RecursiveCte, SelectStar, UnboundedRead, UnboundedWrite,
    };

    fn of(sql: &str) -> Shape {
        shape(sql.as_bytes(), true)
    }

    /// One statement and nothing else: the base every row below changes.
    fn one() -> Shape {
        Shape {
            statements: 1,
            ..Shape::default()
        }
    }

    /// Statement, the whole shape expected, its grade and its findings.
    fn table() -> Vec<(&'static str, Shape, Complexity, Vec<Finding>)> {
        vec![
            // pgbench's TPC-B-like transaction, statement by statement and as one batch.
            (
                "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
                one(),
                Simple,
                vec![],
            ),
            (
                "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;",
                one(),
                Simple,
                vec![],
            ),
            (
                "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) \
                 VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP);",
                one(),
                Simple,
                vec![],
            ),
            (
                "BEGIN; \
                 UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 7; \
                 SELECT abalance FROM pgbench_accounts WHERE aid = 7; \
                 UPDATE pgbench_tellers SET tbalance = tbalance + 1 WHERE tid = 3; \
                 UPDATE pgbench_branches SET bbalance = bbalance + 1 WHERE bid = 1; \
                 INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) \
                 VALUES (3, 1, 7, 1, CURRENT_TIMESTAMP); \
                 END;",
                Shape {
                    statements: 7,
                    ..one()
                },
                Simple,
                vec![],
            ),
            // Point query, full scans, counting.
            (
                "SELECT * FROM users WHERE id = $1",
                Shape {
                    select_star: true,
                    ..one()
                },
                Simple,
                vec![SelectStar],
            ),
            (
                "select * from events",
                Shape {
                    select_star: true,
                    unbounded_read: true,
                    ..one()
                },
                Simple,
                vec![UnboundedRead, SelectStar],
            ),
            (
                "SELECT count(*) FROM t",
                Shape {
                    aggregates: true,
                    ..one()
                },
                Simple,
                vec![],
            ),
            (
                "SELECT id, name FROM users ORDER BY name",
                Shape {
                    order_by: true,
                    unbounded_read: true,
                    ..one()
                },
                Simple,
                vec![UnboundedRead],
            ),
            (
                "SELECT id FROM users ORDER BY id LIMIT 10",
                Shape {
                    order_by: true,
                    limit: true,
                    ..one()
                },
                Simple,
                vec![],
            ),
            (
                "SELECT id FROM users OFFSET 20 ROWS FETCH FIRST 10 ROWS ONLY",
                Shape {
                    limit: true,
                    ..one()
                },
                Simple,
                vec![],
            ),
            (
                "SELECT id FROM users LIMIT ALL",
                Shape {
                    unbounded_read: true,
                    ..one()
                },
                Simple,
                vec![UnboundedRead],
            ),
            (
                "SELECT DISTINCT x FROM generate_series(1, 10) AS g(x)",
                Shape {
                    distinct: true,
                    ..one()
                },
                Simple,
                vec![],
            ),
            (
                "SELECT a IS DISTINCT FROM b, c FROM t WHERE a IS NOT DISTINCT FROM c",
                one(),
                Simple,
                vec![],
            ),
            // Writes.
            (
                "UPDATE accounts SET balance = 0, note = 'reset'",
                Shape {
                    unbounded_write: true,
                    ..one()
                },
                Simple,
                vec![UnboundedWrite],
            ),
            (
                "DELETE FROM sessions WHERE expires_at < now()",
                one(),
                Simple,
                vec![],
            ),
            (
                "EXPLAIN (ANALYZE, BUFFERS) DELETE FROM sessions",
                Shape {
                    unbounded_write: true,
                    ..one()
                },
                Simple,
                vec![UnboundedWrite],
            ),
            (
                "INSERT INTO counters (k, n) VALUES ($1, 1) \
                 ON CONFLICT (k) DO UPDATE SET n = counters.n + 1, seen = now()",
                one(),
                Simple,
                vec![],
            ),
            (
                "UPDATE t SET a = 1, b = 2 FROM u, v WHERE t.id = u.id AND u.id = v.id",
                Shape { joins: 1, ..one() },
                Simple,
                vec![],
            ),
            // Joins.
            (
                "SELECT a.x, b.y, c.z FROM a, b, c \
                 WHERE a.id = b.id AND b.id = c.id AND a.k IN (1, 2, 3)",
                Shape { joins: 2, ..one() },
                Simple,
                vec![],
            ),
            (
                "SELECT c.name, count(o.id), sum(i.price) FROM customers c \
                 JOIN orders o ON o.customer_id = c.id \
                 LEFT OUTER JOIN order_items i ON i.order_id = o.id \
                 WHERE c.region = $1 GROUP BY c.name",
                Shape {
                    joins: 2,
                    aggregates: true,
                    ..one()
                },
                Moderate,
                vec![],
            ),
            (
                "SELECT t.*, u.name FROM t NATURAL JOIN u CROSS JOIN v WHERE t.a = 1",
                Shape {
                    joins: 2,
                    select_star: true,
                    ..one()
                },
                Simple,
                vec![SelectStar],
            ),
            // Subqueries, set operations.
            (
                "SELECT name FROM users u \
                 WHERE EXISTS (SELECT * FROM orders o WHERE o.user_id = u.id) \
                 AND u.id IN (SELECT user_id FROM bans) \
                 AND u.score > (SELECT avg(score) FROM users)",
                Shape {
                    subqueries: 3,
                    aggregates: true,
                    ..one()
                },
                Moderate,
                vec![],
            ),
            (
                "(SELECT id FROM a) UNION ALL (SELECT id FROM b) ORDER BY id",
                Shape {
                    set_operations: 1,
                    order_by: true,
                    ..one()
                },
                Simple,
                vec![],
            ),
            (
                "SELECT * FROM ((SELECT 1 AS x) INTERSECT (SELECT 2)) AS u",
                Shape {
                    subqueries: 1,
                    set_operations: 1,
                    select_star: true,
                    ..one()
                },
                Moderate,
                vec![SelectStar],
            ),
            // Window functions.
            (
                "SELECT id, row_number() OVER (PARTITION BY dept ORDER BY salary DESC) AS rank, \
                 sum(salary) OVER w, count(*) FILTER (WHERE bonus) OVER w \
                 FROM emp WINDOW w AS (PARTITION BY dept)",
                Shape {
                    window_functions: true,
                    order_by: true,
                    unbounded_read: true,
                    ..one()
                },
                Moderate,
                vec![UnboundedRead],
            ),
            (
                "SELECT dept, percentile_cont(0.5) WITHIN GROUP (ORDER BY salary) FROM emp",
                Shape {
                    aggregates: true,
                    order_by: true,
                    ..one()
                },
                Simple,
                vec![],
            ),
            // CTEs.
            (
                "WITH RECURSIVE tree (id, parent_id, depth) AS ( \
                   SELECT id, parent_id, 0 FROM nodes WHERE parent_id IS NULL \
                   UNION ALL \
                   SELECT n.id, n.parent_id, t.depth + 1 FROM nodes n JOIN tree t ON n.parent_id = t.id \
                 ) SELECT * FROM tree",
                Shape {
                    ctes: 1,
                    recursive: true,
                    set_operations: 1,
                    joins: 1,
                    select_star: true,
                    ..one()
                },
                Complex,
                vec![SelectStar, RecursiveCte],
            ),
            (
                "WITH a AS MATERIALIZED (SELECT k, v FROM kv WHERE v > 0), \
                 b AS NOT MATERIALIZED (SELECT k FROM a WHERE k < 10) \
                 SELECT k FROM b LIMIT 5",
                Shape {
                    ctes: 2,
                    limit: true,
                    ..one()
                },
                Moderate,
                vec![],
            ),
            (
                "WITH gone AS (DELETE FROM queue RETURNING id) SELECT count(*) FROM gone",
                Shape {
                    ctes: 1,
                    aggregates: true,
                    unbounded_write: true,
                    ..one()
                },
                Moderate,
                vec![UnboundedWrite],
            ),
            (
                "SELECT x::timestamp with time zone FROM f() AS (a int, b text)",
                one(),
                Simple,
                vec![],
            ),
            // Locking reads.
            (
                "SELECT id FROM jobs WHERE state = 'ready' ORDER BY id LIMIT 1 \
                 FOR NO KEY UPDATE SKIP LOCKED",
                Shape {
                    order_by: true,
                    limit: true,
                    for_update: true,
                    ..one()
                },
                Simple,
                vec![LockingRead],
            ),
            (
                "SELECT a.id FROM a, b WHERE a.id = b.id FOR KEY SHARE OF a, b",
                Shape {
                    joins: 1,
                    for_update: true,
                    ..one()
                },
                Simple,
                vec![LockingRead],
            ),
            // LIKE patterns.
            (
                "SELECT id FROM users WHERE email LIKE '%@example.com'",
                Shape {
                    leading_wildcard_like: true,
                    ..one()
                },
                Simple,
                vec![LeadingWildcardLike],
            ),
            (
                "SELECT id FROM users WHERE name ILIKE 'bob%' AND note NOT LIKE E'\\\\_x'",
                one(),
                Simple,
                vec![],
            ),
            (
                "SELECT id FROM users WHERE name ~~* $$_ob$$",
                Shape {
                    leading_wildcard_like: true,
                    ..one()
                },
                Simple,
                vec![LeadingWildcardLike],
            ),
            // Key words inside strings, quoted identifiers, comments and dollar quotes.
            (
                "SELECT 'a JOIN b UNION SELECT * FROM c, d' AS \"join\", \"limit\", \
                 $x$ WITH RECURSIVE r AS (SELECT 1) DELETE FROM t $x$ \
                 /* JOIN c, d /* nested UNION */ ORDER BY 1 */ -- UNION ALL SELECT * FROM e\n\
                 FROM t WHERE \"where\" = 'LIKE ''%x'''",
                one(),
                Simple,
                vec![],
            ),
            // A batch adds up its statements.
            (
                "SELECT * FROM a JOIN b ON a.id = b.id; UPDATE c SET x = 1;; \
                 SELECT e, count(*) FROM d GROUP BY e",
                Shape {
                    statements: 3,
                    joins: 1,
                    select_star: true,
                    unbounded_read: true,
                    unbounded_write: true,
                    aggregates: true,
                    ..one()
                },
                Simple,
                vec![UnboundedWrite, UnboundedRead, SelectStar],
            ),
            // A cursor's FETCH is not a limit; a routine body keeps its semicolons.
            ("FETCH NEXT 3 FROM c", one(), Simple, vec![]),
            (
                "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC \
                 SELECT CASE WHEN true THEN 1 END; SELECT 2; END; SELECT 3",
                Shape {
                    statements: 2,
                    ..one()
                },
                Simple,
                vec![],
            ),
            // Many joins, subqueries and a window.
            (
                "SELECT d.name, e.name, rank() OVER (PARTITION BY d.id ORDER BY s.amount DESC) \
                 FROM departments d \
                 JOIN employees e ON e.department_id = d.id \
                 JOIN salaries s ON s.employee_id = e.id \
                 LEFT JOIN titles t ON t.employee_id = e.id \
                 WHERE s.amount > (SELECT avg(amount) FROM salaries) \
                 AND e.id NOT IN (SELECT employee_id FROM terminations WHERE reason LIKE '%fraud%') \
                 ORDER BY d.name LIMIT 100",
                Shape {
                    joins: 3,
                    subqueries: 2,
                    window_functions: true,
                    aggregates: true,
                    order_by: true,
                    limit: true,
                    leading_wildcard_like: true,
                    ..one()
                },
                Complex,
                vec![LeadingWildcardLike],
            ),
        ]
    }

    #[test]
    fn decision_table() {
        for (sql, expected, complexity, findings) in table() {
            let actual = of(sql);
            assert_eq!(actual, expected, "{sql}");
            assert_eq!(
                actual.complexity(),
                complexity,
                "{sql} (score {})",
                actual.score()
            );
            assert_eq!(actual.findings(), findings, "{sql}");
        }
    }

    #[test]
    fn standard_conforming_strings_off_moves_string_ends() {
        // On: 'a\' is a whole string and JOIN is SQL. Off: the string runs to the comment.
        let sql = b"SELECT 'a\\' FROM a JOIN b --'\nFROM t WHERE x = 1";
        assert_eq!(shape(sql, true).joins, 1);
        assert_eq!(shape(sql, false).joins, 0);
        assert_eq!(shape(sql, false), one());
    }

    #[test]
    fn empty_and_comment_only_text_has_no_statements() {
        assert_eq!(of(""), Shape::default());
        assert_eq!(
            of(" ;; -- SELECT * FROM t\n/* DELETE FROM t */ ;"),
            Shape::default()
        );
        assert_eq!(of("SELECT 1;").statements, 1);
    }

    #[test]
    fn grades_follow_the_score_thresholds() {
        let joins = |joins| Shape { joins, ..one() };
        assert_eq!(joins(SIMPLE_MAX_SCORE).complexity(), Simple);
        assert_eq!(joins(SIMPLE_MAX_SCORE + 1).complexity(), Moderate);
        assert_eq!(joins(MODERATE_MAX_SCORE).complexity(), Moderate);
        assert_eq!(joins(MODERATE_MAX_SCORE + 1).complexity(), Complex);
        assert_eq!(joins(usize::MAX).complexity(), Complex);
        let recursive_cte = Shape {
            ctes: 1,
            recursive: true,
            ..one()
        };
        assert_eq!(recursive_cte.score(), 8);
        assert_eq!(recursive_cte.complexity(), Complex);
        let everything = Shape {
            subqueries: usize::MAX,
            ctes: usize::MAX,
            set_operations: 1,
            aggregates: true,
            window_functions: true,
            ..joins(usize::MAX)
        };
        assert_eq!(everything.score(), usize::MAX);
        let window = Shape {
            window_functions: true,
            aggregates: true,
            ..one()
        };
        assert_eq!(window.score(), 4);
        assert_eq!(
            [Simple, Moderate, Complex].map(Complexity::as_str),
            ["simple", "moderate", "complex"]
        );
        assert_eq!(Complex.to_string(), "complex");
    }

    #[test]
    fn every_flag_has_its_finding_in_order() {
        let all = Shape {
            unbounded_write: true,
            unbounded_read: true,
            select_star: true,
            leading_wildcard_like: true,
            recursive: true,
            for_update: true,
            ..one()
        };
        let findings = all.findings();
        assert_eq!(
            findings,
            [
                UnboundedWrite,
                UnboundedRead,
                SelectStar,
                LeadingWildcardLike,
                RecursiveCte,
                LockingRead
            ]
        );
        let codes: Vec<_> = findings.iter().map(|f| f.code()).collect();
        assert_eq!(
            codes,
            [
                "unbounded_write",
                "unbounded_read",
                "select_star",
                "leading_wildcard_like",
                "recursive_cte",
                "locking_read"
            ]
        );
        assert_eq!(
            UnboundedWrite.to_string(),
            "UPDATE or DELETE without WHERE changes every row"
        );
        assert!(one().findings().is_empty());
    }

    #[test]
    fn leading_wildcards_in_every_string_form() {
        for text in ["'%a'", "'_'", "E'%'", "N'%x'", "U&'%'", "$$%$$", "$t$_x$t$"] {
            assert!(leading_wildcard(text.as_bytes()), "{text}");
        }
        for text in ["''", "'a%'", "'\\%'", "$$$$", "$t$a%$t$", "'", "$"] {
            assert!(!leading_wildcard(text.as_bytes()), "{text}");
        }
    }

    #[test]
    fn every_key_word_is_recognised_in_any_case() {
        let words = [
            ("all", Kw::All),
            ("analyse", Kw::Analyse),
            ("analyze", Kw::Analyze),
            ("as", Kw::As),
            ("begin", Kw::Begin),
            ("by", Kw::By),
            ("case", Kw::Case),
            ("create", Kw::Create),
            ("delete", Kw::Delete),
            ("distinct", Kw::Distinct),
            ("end", Kw::End),
            ("except", Kw::Except),
            ("exists", Kw::Exists),
            ("explain", Kw::Explain),
            ("fetch", Kw::Fetch),
            ("first", Kw::First),
            ("for", Kw::For),
            ("from", Kw::From),
            ("function", Kw::Function),
            ("grant", Kw::Grant),
            ("group", Kw::Group),
            ("having", Kw::Having),
            ("ilike", Kw::Ilike),
            ("insert", Kw::Insert),
            ("intersect", Kw::Intersect),
            ("into", Kw::Into),
            ("is", Kw::Is),
            ("join", Kw::Join),
            ("key", Kw::Key),
            ("like", Kw::Like),
            ("limit", Kw::Limit),
            ("materialized", Kw::Materialized),
            ("merge", Kw::Merge),
            ("next", Kw::Next),
            ("no", Kw::No),
            ("not", Kw::Not),
            ("offset", Kw::Offset),
            ("order", Kw::Order),
            ("over", Kw::Over),
            ("prepare", Kw::Prepare),
            ("procedure", Kw::Procedure),
            ("returning", Kw::Returning),
            ("revoke", Kw::Revoke),
            ("select", Kw::Select),
            ("set", Kw::Set),
            ("share", Kw::Share),
            ("table", Kw::Table),
            ("union", Kw::Union),
            ("update", Kw::Update),
            ("values", Kw::Values),
            ("verbose", Kw::Verbose),
            ("where", Kw::Where),
            ("window", Kw::Window),
            ("with", Kw::With),
            ("within", Kw::Within),
        ];
        for (word, key) in words {
            assert_eq!(keyword(word.as_bytes()), key, "{word}");
            assert_eq!(keyword(word.to_uppercase().as_bytes()), key, "{word}");
        }
        for word in ["joins", "selec", "", "materialize", "unions", "sélect"] {
            assert_eq!(keyword(word.as_bytes()), Kw::None, "{word}");
        }
        assert!(is_aggregate(b"COUNT") && is_aggregate(b"regr_slope"));
        assert!(!is_aggregate(b"counter") && !is_aggregate(b"regr"));
    }

    #[test]
    fn grant_and_revoke_lists_are_not_joins() {
        assert_eq!(of("REVOKE SELECT, UPDATE ON t FROM alice, bob"), one());
        assert_eq!(of("GRANT SELECT ON t TO alice, bob"), one());
    }

    #[test]
    fn prepared_writes_and_deep_nesting() {
        let prepared = of("PREPARE wipe (int) AS DELETE FROM t");
        assert!(prepared.unbounded_write);
        assert!(!of("PREPARE wipe (int) AS DELETE FROM t WHERE id = $1").unbounded_write);
        // Beyond the tracked levels nothing breaks; the statement is still one.
        let deep = "(".repeat(100_000) + "SELECT * FROM t JOIN u ON true" + &")".repeat(100_000);
        let deep = of(&deep);
        assert_eq!(deep.statements, 1);
        assert_eq!(deep.joins, 1);
        let closers = ")".repeat(1_000) + "SELECT 1";
        assert_eq!(of(&closers).statements, 1);
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// Whole tokens (no unterminated quote), lower case, so that the text can be
        /// recased and commented between tokens without changing what it says.
        const VOCABULARY: &[&str] = &[
            "select",
            "*",
            "from",
            "t",
            "u",
            ",",
            "join",
            "(",
            ")",
            ";",
            "with",
            "recursive",
            "as",
            "materialized",
            "not",
            "union",
            "all",
            "where",
            "limit",
            "fetch",
            "first",
            "update",
            "delete",
            "for",
            "no",
            "key",
            "share",
            "like",
            "'%a'",
            "$$x$$",
            "\"q\"",
            "count",
            "over",
            "filter",
            "group",
            "by",
            "order",
            "distinct",
            "is",
            "exists",
            "explain",
            "analyze",
            "prepare",
            "create",
            "function",
            "begin",
            "atomic",
            "end",
            "case",
            "1",
            "$1",
            ".",
            "=",
            "table",
            "time",
            "returning",
            "within",
            "grant",
        ];

        fn soup() -> impl Strategy<Value = Vec<&'static str>> {
            proptest::collection::vec(proptest::sample::select(VOCABULARY), 0..80)
        }

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(
                bytes in proptest::collection::vec(any::<u8>(), 0..600),
                standard in any::<bool>(),
            ) {
                let found = shape(&bytes, standard);
                let semicolons = bytes.iter().filter(|&&b| b == b';').count();
                prop_assert!(found.statements <= semicolons + 1);
                prop_assert!(found.joins <= bytes.len());
                let _ = (found.complexity(), found.findings());
            }

            #[test]
            fn comments_and_case_never_change_the_shape(tokens in soup()) {
                let plain = tokens.join(" ");
                let commented = tokens.join(" /* join ( select */ ");
                let lined = tokens.join(" -- union ) ;\n");
                let upper = plain.to_uppercase().replace("$$X$$", "$$x$$");
                let expected = of(&plain);
                prop_assert_eq!(of(&commented), expected);
                prop_assert_eq!(of(&lined), expected);
                prop_assert_eq!(of(&upper), expected);
            }
        }
    }
}
