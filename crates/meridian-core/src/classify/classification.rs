//! What the classifier says about a statement or a batch: its class, the evidence that decided
//! it, the session pin it creates and the transaction control it performs.
//!
//! Every type here is `Copy` and owns its data (names are copied into a fixed 63-byte buffer,
//! PostgreSQL's own limit for names), so a [`Classification`] can be cached per prepared
//! statement or fingerprint without lifetimes and returned without a heap allocation.

use std::borrow::Cow;
use std::fmt;
use std::ops::{BitOr, BitOrAssign};

/// The longest name PostgreSQL keeps: `NAMEDATALEN - 1` bytes. Longer identifiers are truncated
/// (PostgreSQL docs, section 4.1.1 "Identifiers and Key Words").
pub const NAME_MAX_BYTES: usize = 63;

/// An SQL name as PostgreSQL would see it: unquoted identifiers folded to lower case (ASCII
/// letters only, as the server does for multibyte encodings), quoted identifiers kept exactly,
/// both truncated to [`NAME_MAX_BYTES`] at a UTF-8 character boundary.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Name {
    len: u8,
    bytes: [u8; NAME_MAX_BYTES],
}

impl Name {
    /// A name from an unquoted identifier: ASCII letters folded to lower case.
    pub(crate) fn folded(text: &[u8]) -> Name {
        let mut name = Name::exact(text);
        name.bytes[..name.len as usize].make_ascii_lowercase();
        name
    }

    /// A name taken byte for byte (a decoded quoted identifier, or a token shown in a reason).
    pub fn exact(text: &[u8]) -> Name {
        let text = truncate_name(text);
        let mut bytes = [0; NAME_MAX_BYTES];
        bytes[..text.len()].copy_from_slice(text);
        Name {
            len: text.len() as u8,
            bytes,
        }
    }

    /// The name's bytes (in the client's encoding, normally UTF-8).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// The name as text; bytes that are not UTF-8 are shown as U+FFFD.
    pub fn to_str_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(self.as_bytes())
    }
}

/// Cuts `text` to at most [`NAME_MAX_BYTES`] bytes without splitting a UTF-8 character, as
/// PostgreSQL's `truncate_identifier` does with `pg_mbcliplen`.
pub(crate) fn truncate_name(text: &[u8]) -> &[u8] {
    if text.len() <= NAME_MAX_BYTES {
        return text;
    }
    let mut end = NAME_MAX_BYTES;
    // A continuation byte (0b10xx_xxxx) at the cut means a character straddles it.
    while end > 0 && text[end] & 0xC0 == 0x80 {
        end -= 1;
    }
    &text[..end]
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_str_lossy())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({:?})", self.to_str_lossy())
    }
}

/// The class of a statement, or of a batch (the strongest class among its statements).
///
/// The variants are listed from weakest to strongest; a batch of several statements takes the
/// strongest class of any of them, so one write makes the whole batch a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatementClass {
    /// No statement at all: only whitespace, comments or semicolons. PostgreSQL answers it with
    /// `EmptyQueryResponse` and touches nothing, so it may run anywhere.
    Empty,
    /// Reads only and changes nothing: may run on a replica.
    Read,
    /// Transaction control (`BEGIN`, `COMMIT`, `SAVEPOINT`, ...), with its details.
    Transaction(TransactionControl),
    /// Sets or uses per-backend session state (`SET`, `PREPARE`, `DECLARE`, `FETCH`, `currval()`,
    /// ...). It must run on the backend that holds that state; see
    /// [`Classification::pins_session`] for the statements that create state worth pinning.
    SessionState,
    /// Writes, locks rows or tables, or has a side effect: runs on the primary.
    Write,
    /// Data definition (`CREATE`, `ALTER`, `DROP`, `TRUNCATE`, `GRANT`, ...): runs on the primary.
    Ddl,
    /// Not recognised. Treated as a write: runs on the primary, which also gives the client
    /// PostgreSQL's own error if the text is not valid SQL.
    Unknown,
}

impl StatementClass {
    /// Position in the weakest-to-strongest order used to combine statements.
    pub(crate) fn rank(self) -> u8 {
        match self {
            StatementClass::Empty => 0,
            StatementClass::Read => 1,
            StatementClass::Transaction(_) => 2,
            StatementClass::SessionState => 3,
            StatementClass::Write => 4,
            StatementClass::Ddl => 5,
            StatementClass::Unknown => 6,
        }
    }

    /// True if `self` ranks strictly above `other` in the combination order.
    pub fn is_stronger_than(self, other: StatementClass) -> bool {
        self.rank() > other.rank()
    }
}

impl fmt::Display for StatementClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatementClass::Empty => f.write_str("empty"),
            StatementClass::Read => f.write_str("read"),
            StatementClass::Transaction(control) => write!(f, "transaction control ({control})"),
            StatementClass::SessionState => f.write_str("session state"),
            StatementClass::Write => f.write_str("write"),
            StatementClass::Ddl => f.write_str("DDL"),
            StatementClass::Unknown => f.write_str("unknown"),
        }
    }
}

/// A transaction isolation level (PostgreSQL docs, section 13.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IsolationLevel {
    /// `READ UNCOMMITTED` (behaves as `READ COMMITTED` in PostgreSQL).
    ReadUncommitted,
    /// `READ COMMITTED`.
    ReadCommitted,
    /// `REPEATABLE READ`.
    RepeatableRead,
    /// `SERIALIZABLE`: not available on a hot standby (PostgreSQL docs, section 26.4.1).
    Serializable,
}

impl fmt::Display for IsolationLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IsolationLevel::ReadUncommitted => "READ UNCOMMITTED",
            IsolationLevel::ReadCommitted => "READ COMMITTED",
            IsolationLevel::RepeatableRead => "REPEATABLE READ",
            IsolationLevel::Serializable => "SERIALIZABLE",
        })
    }
}

/// What a transaction-control statement does.
///
/// `read_only` is `Some(true)` for an explicit `READ ONLY`, `Some(false)` for an explicit
/// `READ WRITE` (or both written, which PostgreSQL does not make read-only), and `None` when
/// the statement leaves it to `default_transaction_read_only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransactionControl {
    /// `BEGIN` or `START TRANSACTION`, with its transaction modes.
    Begin {
        /// `READ ONLY` / `READ WRITE`, if written.
        read_only: Option<bool>,
        /// `ISOLATION LEVEL ...`, if written.
        isolation: Option<IsolationLevel>,
    },
    /// `COMMIT` or `END`; `chain` for `AND CHAIN`, which opens a new transaction at once.
    Commit {
        /// `AND CHAIN`.
        chain: bool,
    },
    /// `ROLLBACK` or `ABORT`; `chain` for `AND CHAIN`.
    Rollback {
        /// `AND CHAIN`.
        chain: bool,
    },
    /// `SAVEPOINT name`.
    Savepoint,
    /// `RELEASE [SAVEPOINT] name`.
    ReleaseSavepoint,
    /// `ROLLBACK TO [SAVEPOINT] name`.
    RollbackToSavepoint,
    /// `SET TRANSACTION ...`: changes the current transaction's modes.
    SetTransaction {
        /// `READ ONLY` / `READ WRITE`, if written.
        read_only: Option<bool>,
        /// `ISOLATION LEVEL ...`, if written.
        isolation: Option<IsolationLevel>,
    },
    /// `PREPARE TRANSACTION 'id'` (two-phase commit, first phase).
    PrepareTransaction,
    /// `COMMIT PREPARED 'id'`.
    CommitPrepared,
    /// `ROLLBACK PREPARED 'id'`.
    RollbackPrepared,
}

impl TransactionControl {
    /// True for `BEGIN ... READ ONLY` and `SET TRANSACTION ... READ ONLY`: a transaction that
    /// declares it will not write (it may still be refused on a replica, see
    /// [`needs_primary`](Self::needs_primary)).
    pub fn is_read_only(&self) -> bool {
        matches!(
            self,
            TransactionControl::Begin {
                read_only: Some(true),
                ..
            } | TransactionControl::SetTransaction {
                read_only: Some(true),
                ..
            }
        )
    }

    /// True for the transaction control that a hot standby refuses (PostgreSQL docs, section
    /// 26.4.1): two-phase commit commands, an explicit `READ WRITE`, and `SERIALIZABLE`
    /// isolation ("cannot use serializable mode in a hot standby").
    pub fn needs_primary(&self) -> bool {
        match self {
            TransactionControl::Begin {
                read_only,
                isolation,
            }
            | TransactionControl::SetTransaction {
                read_only,
                isolation,
            } => *read_only == Some(false) || *isolation == Some(IsolationLevel::Serializable),
            TransactionControl::PrepareTransaction
            | TransactionControl::CommitPrepared
            | TransactionControl::RollbackPrepared => true,
            TransactionControl::Commit { .. }
            | TransactionControl::Rollback { .. }
            | TransactionControl::Savepoint
            | TransactionControl::ReleaseSavepoint
            | TransactionControl::RollbackToSavepoint => false,
        }
    }
}

fn write_modes(
    f: &mut fmt::Formatter<'_>,
    head: &str,
    read_only: Option<bool>,
    isolation: Option<IsolationLevel>,
) -> fmt::Result {
    f.write_str(head)?;
    if let Some(level) = isolation {
        write!(f, " ISOLATION LEVEL {level}")?;
    }
    match read_only {
        Some(true) => f.write_str(" READ ONLY"),
        Some(false) => f.write_str(" READ WRITE"),
        None => Ok(()),
    }
}

impl fmt::Display for TransactionControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TransactionControl::Begin {
                read_only,
                isolation,
            } => write_modes(f, "BEGIN", read_only, isolation),
            TransactionControl::SetTransaction {
                read_only,
                isolation,
            } => write_modes(f, "SET TRANSACTION", read_only, isolation),
            TransactionControl::Commit { chain } => {
                f.write_str(if chain { "COMMIT AND CHAIN" } else { "COMMIT" })
            }
            TransactionControl::Rollback { chain } => f.write_str(if chain {
                "ROLLBACK AND CHAIN"
            } else {
                "ROLLBACK"
            }),
            TransactionControl::Savepoint => f.write_str("SAVEPOINT"),
            TransactionControl::ReleaseSavepoint => f.write_str("RELEASE SAVEPOINT"),
            TransactionControl::RollbackToSavepoint => f.write_str("ROLLBACK TO SAVEPOINT"),
            TransactionControl::PrepareTransaction => f.write_str("PREPARE TRANSACTION"),
            TransactionControl::CommitPrepared => f.write_str("COMMIT PREPARED"),
            TransactionControl::RollbackPrepared => f.write_str("ROLLBACK PREPARED"),
        }
    }
}

/// Why a statement ties a client session to the server backend that ran it: state that lives
/// in that backend only and that later statements may rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PinReason {
    /// A temporary table, view or sequence: `CREATE TEMP TABLE`, `SELECT ... INTO TEMP`, an
    /// object created in `pg_temp` (not for `ON COMMIT DROP`, which ends with the transaction).
    TemporaryTable,
    /// A session-level advisory lock: `pg_advisory_lock`, `pg_advisory_lock_shared`,
    /// `pg_try_advisory_lock`, `pg_try_advisory_lock_shared` (held until unlocked or the
    /// session ends; the `_xact_` variants end with the transaction and do not pin).
    SessionAdvisoryLock,
    /// `LISTEN`: notifications are delivered to the listening backend.
    Listen,
    /// `DECLARE ... WITH HOLD`: the cursor outlives its transaction.
    HoldCursor,
    /// `PREPARE name AS ...`: later `EXECUTE name` needs the same backend.
    PreparedStatement,
    /// A session-level setting: `SET` (not `SET LOCAL`), `SET SESSION CHARACTERISTICS`,
    /// `SET ROLE`, `SET SESSION AUTHORIZATION`, `set_config(..., false)`. The router decides
    /// by policy whether settings pin.
    SessionSetting,
    /// `LOAD 'library'`: the library stays loaded in that backend.
    LoadedLibrary,
}

impl fmt::Display for PinReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PinReason::TemporaryTable => "temporary table",
            PinReason::SessionAdvisoryLock => "session advisory lock",
            PinReason::Listen => "LISTEN",
            PinReason::HoldCursor => "cursor WITH HOLD",
            PinReason::PreparedStatement => "prepared statement",
            PinReason::SessionSetting => "session setting",
            PinReason::LoadedLibrary => "loaded library",
        })
    }
}

/// The statement (by its leading keywords) that decided a classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Command {
    /// `SHOW`.
    Show,
    /// `EXPLAIN` without `ANALYZE`: plans, never executes.
    Explain,
    /// `INSERT`.
    Insert,
    /// `UPDATE`.
    Update,
    /// `DELETE`.
    Delete,
    /// `MERGE`.
    Merge,
    /// `COPY ... FROM` (loads rows).
    CopyFrom,
    /// `COPY ... TO STDOUT`.
    CopyTo,
    /// `COPY ... TO 'file'` or `TO PROGRAM`: writes on the server's host.
    CopyToFile,
    /// `CALL`.
    Call,
    /// `DO`.
    Do,
    /// `LISTEN`.
    Listen,
    /// `NOTIFY`.
    Notify,
    /// `UNLISTEN`.
    Unlisten,
    /// `VACUUM`.
    Vacuum,
    /// `ANALYZE` / `ANALYSE`.
    Analyze,
    /// `CHECKPOINT`.
    Checkpoint,
    /// `LOCK [TABLE]`.
    Lock,
    /// `CREATE ...`.
    Create,
    /// `ALTER ...`.
    Alter,
    /// `DROP ...`.
    Drop,
    /// `TRUNCATE`.
    Truncate,
    /// `GRANT`.
    Grant,
    /// `REVOKE`.
    Revoke,
    /// `COMMENT ON`.
    Comment,
    /// `SECURITY LABEL`.
    SecurityLabel,
    /// `REINDEX`.
    Reindex,
    /// `CLUSTER`.
    Cluster,
    /// `REFRESH MATERIALIZED VIEW`.
    Refresh,
    /// `IMPORT FOREIGN SCHEMA`.
    ImportForeignSchema,
    /// `REASSIGN OWNED`.
    ReassignOwned,
    /// `BEGIN` / `START TRANSACTION`.
    Begin,
    /// `COMMIT` / `END`.
    Commit,
    /// `COMMIT PREPARED`.
    CommitPrepared,
    /// `ROLLBACK` / `ABORT`.
    Rollback,
    /// `ROLLBACK PREPARED`.
    RollbackPrepared,
    /// `ROLLBACK TO SAVEPOINT`.
    RollbackToSavepoint,
    /// `SAVEPOINT`.
    Savepoint,
    /// `RELEASE SAVEPOINT`.
    Release,
    /// `PREPARE TRANSACTION`.
    PrepareTransaction,
    /// `SET TRANSACTION`.
    SetTransaction,
    /// `SET SESSION CHARACTERISTICS AS TRANSACTION`.
    SetSessionCharacteristics,
    /// `SET` / `SET SESSION` (also `SET ROLE`, `SET SESSION AUTHORIZATION`, `SET TIME ZONE`).
    Set,
    /// `SET LOCAL`: ends with the transaction.
    SetLocal,
    /// `SET CONSTRAINTS`: ends with the transaction.
    SetConstraints,
    /// `RESET`.
    Reset,
    /// `DISCARD`.
    Discard,
    /// `PREPARE name AS ...`.
    Prepare,
    /// `EXECUTE name`: runs whatever was prepared, on the backend that prepared it.
    Execute,
    /// `DEALLOCATE`.
    Deallocate,
    /// `LOAD`.
    Load,
    /// `DECLARE ... CURSOR`.
    Declare,
    /// `FETCH`.
    Fetch,
    /// `MOVE`.
    Move,
    /// `CLOSE`.
    Close,
}

impl Command {
    /// The command's keywords as PostgreSQL spells them.
    pub fn keywords(self) -> &'static str {
        match self {
            Command::Show => "SHOW",
            Command::Explain => "EXPLAIN",
            Command::Insert => "INSERT",
            Command::Update => "UPDATE",
            Command::Delete => "DELETE",
            Command::Merge => "MERGE",
            Command::CopyFrom => "COPY ... FROM",
            Command::CopyTo => "COPY ... TO STDOUT",
            Command::CopyToFile => "COPY ... TO a server file or program",
            Command::Call => "CALL",
            Command::Do => "DO",
            Command::Listen => "LISTEN",
            Command::Notify => "NOTIFY",
            Command::Unlisten => "UNLISTEN",
            Command::Vacuum => "VACUUM",
            Command::Analyze => "ANALYZE",
            Command::Checkpoint => "CHECKPOINT",
            Command::Lock => "LOCK",
            Command::Create => "CREATE",
            Command::Alter => "ALTER",
            Command::Drop => "DROP",
            Command::Truncate => "TRUNCATE",
            Command::Grant => "GRANT",
            Command::Revoke => "REVOKE",
            Command::Comment => "COMMENT",
            Command::SecurityLabel => "SECURITY LABEL",
            Command::Reindex => "REINDEX",
            Command::Cluster => "CLUSTER",
            Command::Refresh => "REFRESH MATERIALIZED VIEW",
            Command::ImportForeignSchema => "IMPORT FOREIGN SCHEMA",
            Command::ReassignOwned => "REASSIGN OWNED",
            Command::Begin => "BEGIN",
            Command::Commit => "COMMIT",
            Command::CommitPrepared => "COMMIT PREPARED",
            Command::Rollback => "ROLLBACK",
            Command::RollbackPrepared => "ROLLBACK PREPARED",
            Command::RollbackToSavepoint => "ROLLBACK TO SAVEPOINT",
            Command::Savepoint => "SAVEPOINT",
            Command::Release => "RELEASE SAVEPOINT",
            Command::PrepareTransaction => "PREPARE TRANSACTION",
            Command::SetTransaction => "SET TRANSACTION",
            Command::SetSessionCharacteristics => "SET SESSION CHARACTERISTICS",
            Command::Set => "SET",
            Command::SetLocal => "SET LOCAL",
            Command::SetConstraints => "SET CONSTRAINTS",
            Command::Reset => "RESET",
            Command::Discard => "DISCARD",
            Command::Prepare => "PREPARE",
            Command::Execute => "EXECUTE",
            Command::Deallocate => "DEALLOCATE",
            Command::Load => "LOAD",
            Command::Declare => "DECLARE",
            Command::Fetch => "FETCH",
            Command::Move => "MOVE",
            Command::Close => "CLOSE",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.keywords())
    }
}

/// The row-locking clause of a locking read (PostgreSQL docs, `SELECT`, "The Locking Clause").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockStrength {
    /// `FOR UPDATE`.
    Update,
    /// `FOR NO KEY UPDATE`.
    NoKeyUpdate,
    /// `FOR SHARE`.
    Share,
    /// `FOR KEY SHARE`.
    KeyShare,
}

impl fmt::Display for LockStrength {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockStrength::Update => "FOR UPDATE",
            LockStrength::NoKeyUpdate => "FOR NO KEY UPDATE",
            LockStrength::Share => "FOR SHARE",
            LockStrength::KeyShare => "FOR KEY SHARE",
        })
    }
}

/// The evidence that decided a classification, printable for `meridian analyze-query`.
///
/// For a batch it is the reason of the first statement that reached the batch's class; for a
/// statement with several kinds of evidence it is the strongest, the first in the text on a tie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Only whitespace, comments or semicolons.
    Empty,
    /// A query (`SELECT`, `VALUES`, `TABLE`, `WITH`) with nothing that writes.
    Query,
    /// The statement's leading keywords.
    Command(Command),
    /// A locking clause in a query.
    LockingRead(LockStrength),
    /// `INSERT`/`UPDATE`/`DELETE`/`MERGE` inside `WITH ... AS (...)`; the command is one of those.
    DataModifyingCte(Command),
    /// `SELECT ... INTO new_table` creates and fills a table.
    SelectInto,
    /// A call to a function of the classifier's side-effecting set (name as called).
    WriteFunction(Name),
    /// A call to a function that reads this session's state (`currval`, `lastval`), which
    /// fails or differs on any other backend.
    SessionFunction(Name),
    /// The leading word is not a statement the classifier knows (shown as written, truncated).
    UnknownStatement(Name),
    /// Unterminated quoted string, quoted identifier, dollar quote or block comment:
    /// PostgreSQL rejects the whole query string with a syntax error.
    Unterminated,
    /// Statements nested (`EXPLAIN ANALYZE`, `PREPARE ... AS`, `DECLARE ... FOR`, `COPY (...)`)
    /// deeper than the classifier follows.
    TooDeep,
    /// A text of 4 GiB or more, beyond anything PostgreSQL accepts (1 GB).
    TooLong,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Empty => f.write_str("no statement: only whitespace or comments"),
            Reason::Query => f.write_str("query that only reads"),
            Reason::Command(command) => f.write_str(command.keywords()),
            Reason::LockingRead(strength) => write!(f, "locking read: {strength}"),
            Reason::DataModifyingCte(command) => write!(f, "data-modifying CTE ({command})"),
            Reason::SelectInto => f.write_str("SELECT ... INTO creates a table"),
            Reason::WriteFunction(name) => write!(f, "calls {name}()"),
            Reason::SessionFunction(name) => {
                write!(f, "calls {name}(), which reads this session's state")
            }
            Reason::UnknownStatement(word) => {
                write!(f, "unknown statement {word}: treated as a write")
            }
            Reason::Unterminated => f.write_str(
                "unterminated quote, dollar quote or comment: PostgreSQL rejects the query",
            ),
            Reason::TooDeep => f.write_str("statements nested too deeply: treated as a write"),
            Reason::TooLong => f.write_str("text too long for PostgreSQL: treated as a write"),
        }
    }
}

/// Evidence found while classifying, beyond the deciding [`Reason`]. A small bit set; combine
/// with `|`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u16);

impl Flags {
    /// No flag.
    pub const NONE: Flags = Flags(0);
    /// A locking clause (`FOR UPDATE`, `FOR NO KEY UPDATE`, `FOR SHARE`, `FOR KEY SHARE`).
    pub const LOCKING_READ: Flags = Flags(1 << 0);
    /// A data-modifying statement inside `WITH`.
    pub const DATA_MODIFYING_CTE: Flags = Flags(1 << 1);
    /// `SELECT ... INTO`.
    pub const SELECT_INTO: Flags = Flags(1 << 2);
    /// A call to a function of the side-effecting set.
    pub const WRITE_FUNCTION: Flags = Flags(1 << 3);
    /// A call to `currval` or `lastval`.
    pub const SESSION_FUNCTION: Flags = Flags(1 << 4);
    /// `EXPLAIN ANALYZE`: the explained statement is executed and classified as such.
    pub const EXPLAIN_ANALYZE: Flags = Flags(1 << 5);
    /// A transaction-control statement (in a batch the class may be stronger).
    pub const TRANSACTION_CONTROL: Flags = Flags(1 << 6);
    /// `DISCARD ALL`: the session's state is reset, which ends every pin.
    pub const RESETS_SESSION: Flags = Flags(1 << 7);
    /// More than one statement in the text.
    pub const MULTIPLE_STATEMENTS: Flags = Flags(1 << 8);
    /// The text ends inside a quote, dollar quote or comment.
    pub const UNTERMINATED: Flags = Flags(1 << 9);

    const NAMES: [(Flags, &'static str); 10] = [
        (Flags::LOCKING_READ, "LOCKING_READ"),
        (Flags::DATA_MODIFYING_CTE, "DATA_MODIFYING_CTE"),
        (Flags::SELECT_INTO, "SELECT_INTO"),
        (Flags::WRITE_FUNCTION, "WRITE_FUNCTION"),
        (Flags::SESSION_FUNCTION, "SESSION_FUNCTION"),
        (Flags::EXPLAIN_ANALYZE, "EXPLAIN_ANALYZE"),
        (Flags::TRANSACTION_CONTROL, "TRANSACTION_CONTROL"),
        (Flags::RESETS_SESSION, "RESETS_SESSION"),
        (Flags::MULTIPLE_STATEMENTS, "MULTIPLE_STATEMENTS"),
        (Flags::UNTERMINATED, "UNTERMINATED"),
    ];

    /// True if every flag of `other` is set in `self`.
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// True if no flag is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The names of the flags that are set, in declaration order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Flags::NAMES
            .into_iter()
            .filter(move |(flag, _)| self.contains(*flag))
            .map(|(_, name)| name)
    }
}

impl BitOr for Flags {
    type Output = Flags;
    fn bitor(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
}

impl BitOrAssign for Flags {
    fn bitor_assign(&mut self, other: Flags) {
        self.0 |= other.0;
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Flags(")?;
        for (i, name) in self.names().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            f.write_str(name)?;
        }
        f.write_str(")")
    }
}

/// The classifier's verdict on one statement or a whole query string.
///
/// Routing reads it in this order: [`pins_session`](Self::pins_session) (keep the session on
/// its backend), [`transaction`](Self::transaction) (transaction tracking; `BEGIN READ ONLY`
/// may use a replica), then [`class`](Self::class): only [`is_read_only`](Self::is_read_only)
/// statements may go to a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Classification {
    /// The class; for a batch, the strongest class of its statements.
    pub class: StatementClass,
    /// The evidence that decided `class`.
    pub reason: Reason,
    /// All evidence found, including what did not decide the class.
    pub flags: Flags,
    /// The first session pin found, if any.
    pub pin: Option<PinReason>,
    /// Number of statements (empty statements between semicolons are not counted).
    pub statements: u32,
}

impl Classification {
    /// A classification of one statement with this class and reason, and no other evidence
    /// (for requests the proxy cannot look into, such as a function call by OID).
    pub fn new(class: StatementClass, reason: Reason) -> Classification {
        let flags = if matches!(class, StatementClass::Transaction(_)) {
            Flags::TRANSACTION_CONTROL
        } else {
            Flags::NONE
        };
        Classification {
            class,
            reason,
            flags,
            pin: None,
            statements: 1,
        }
    }

    /// The classification of a text with no statement.
    pub(crate) fn empty() -> Classification {
        Classification {
            class: StatementClass::Empty,
            reason: Reason::Empty,
            flags: Flags::NONE,
            pin: None,
            statements: 0,
        }
    }

    /// True if the statement only reads (or is empty): it may run on a replica.
    pub fn is_read_only(&self) -> bool {
        matches!(self.class, StatementClass::Read | StatementClass::Empty)
    }

    /// True for writes, DDL and unknown statements: they run on the primary.
    pub fn is_write(&self) -> bool {
        matches!(
            self.class,
            StatementClass::Write | StatementClass::Ddl | StatementClass::Unknown
        )
    }

    /// The session pin this statement creates, if any.
    pub fn pins_session(&self) -> Option<PinReason> {
        self.pin
    }

    /// The transaction control, if the class is [`StatementClass::Transaction`].
    pub fn transaction(&self) -> Option<TransactionControl> {
        match self.class {
            StatementClass::Transaction(control) => Some(control),
            _ => None,
        }
    }

    /// Folds `inner` (a nested statement, or the next statement of a batch) into `self`: the
    /// stronger class wins with its reason (the earlier one on a tie), flags are united, the
    /// first pin is kept.
    pub fn absorb(&mut self, inner: Classification) {
        if inner.class.is_stronger_than(self.class) {
            self.class = inner.class;
            self.reason = inner.reason;
        }
        self.flags |= inner.flags;
        self.pin = self.pin.or(inner.pin);
    }
}

impl fmt::Display for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class, self.reason)?;
        if let Some(pin) = self.pin {
            write!(f, "; pins the session ({pin})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_truncated_at_a_character_boundary() {
        let long = "a".repeat(70);
        assert_eq!(
            Name::exact(long.as_bytes()).as_bytes().len(),
            NAME_MAX_BYTES
        );
        // 62 ASCII bytes then a 2-byte character straddling byte 63: the character goes.
        let straddling = format!("{}é", "b".repeat(62));
        assert_eq!(
            Name::exact(straddling.as_bytes()).as_bytes(),
            "b".repeat(62).as_bytes()
        );
        assert_eq!(Name::folded(b"NextVal").as_bytes(), b"nextval");
    }

    #[test]
    fn the_stronger_class_wins_and_ties_keep_the_first_reason() {
        let mut batch = Classification::new(StatementClass::Read, Reason::Query);
        batch.absorb(Classification::new(
            StatementClass::Write,
            Reason::Command(Command::Insert),
        ));
        batch.absorb(Classification::new(
            StatementClass::Write,
            Reason::Command(Command::Delete),
        ));
        assert_eq!(batch.class, StatementClass::Write);
        assert_eq!(batch.reason, Reason::Command(Command::Insert));
    }

    #[test]
    fn transaction_modes_that_a_standby_refuses() {
        let serializable = TransactionControl::Begin {
            read_only: Some(true),
            isolation: Some(IsolationLevel::Serializable),
        };
        assert!(serializable.is_read_only());
        assert!(serializable.needs_primary());
        let plain = TransactionControl::Begin {
            read_only: None,
            isolation: None,
        };
        assert!(!plain.is_read_only());
        assert!(!plain.needs_primary());
        assert!(TransactionControl::CommitPrepared.needs_primary());
        assert_eq!(
            serializable.to_string(),
            "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY"
        );
    }

    #[test]
    fn flags_print_their_names() {
        let flags = Flags::LOCKING_READ | Flags::WRITE_FUNCTION;
        assert_eq!(format!("{flags:?}"), "Flags(LOCKING_READ | WRITE_FUNCTION)");
        assert!(flags.contains(Flags::LOCKING_READ));
        assert!(!flags.contains(Flags::SELECT_INTO));
    }
}
