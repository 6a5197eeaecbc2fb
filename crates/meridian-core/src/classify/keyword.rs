//! The key words the classifier and the shape scan look at, recognised in one step.
//!
//! An unquoted word of up to 16 bytes is loaded into a `u128` (little-endian, zero-padded),
//! folded to ASCII lower case eight bytes at a time with a carry-free bit trick, and looked up in
//! a 512-slot open-addressing table built at compile time: a multiply, a shift and one or two
//! comparisons per word, no allocation. Words never contain a NUL byte, so the padded value is
//! one-to-one with the word. Quoted identifiers are never key words (PostgreSQL docs, section
//! 4.1.1), so only unquoted words are looked up, on demand. The scan of a query's body, where
//! most words are names, uses [`query_keyword`] instead: a length switch and a comparison for
//! the nine key words it acts on.

/// The folded, packed form of `word`, or `None` if it is empty or longer than 16 bytes.
#[inline]
pub(crate) fn pack(word: &[u8]) -> Option<u128> {
    if word.is_empty() || word.len() > 16 {
        return None;
    }
    // Built in registers, not through a stack buffer: a byte-wise store followed by a wide load
    // defeats the processor's store forwarding and costs more than the whole lookup.
    let (mut low, mut high) = (0u64, 0u64);
    for (i, &byte) in word.iter().enumerate() {
        if i < 8 {
            low |= u64::from(byte) << (8 * i);
        } else {
            high |= u64::from(byte) << (8 * (i - 8));
        }
    }
    Some(fold_ascii(u128::from(low) | (u128::from(high) << 64)))
}

/// ASCII `A`-`Z` to `a`-`z` in every byte of `value` at once; other bytes unchanged. Adding to
/// the low seven bits of each byte cannot carry into the next byte (at most 0x7F + 0x3F).
const fn fold_ascii(value: u128) -> u128 {
    const LOW7: u128 = u128::from_le_bytes([0x7F; 16]);
    const HIGH: u128 = u128::from_le_bytes([0x80; 16]);
    const TO_A: u128 = u128::from_le_bytes([0x80 - b'A'; 16]);
    const PAST_Z: u128 = u128::from_le_bytes([0x80 - b'Z' - 1; 16]);
    let low = value & LOW7;
    let at_least_a = (low + TO_A) & HIGH;
    let past_z = (low + PAST_Z) & HIGH;
    let upper = at_least_a & !past_z & !value & HIGH;
    value | (upper >> 2)
}

const fn pack_const(word: &str) -> u128 {
    let word = word.as_bytes();
    assert!(
        !word.is_empty() && word.len() <= 16,
        "key words are 1 to 16 bytes"
    );
    let mut bytes = [0u8; 16];
    let mut i = 0;
    while i < word.len() {
        bytes[i] = word[i].to_ascii_lowercase();
        i += 1;
    }
    u128::from_le_bytes(bytes)
}

const SLOTS: usize = 512;

/// A multiply-xorshift mix of the packed word into a slot number.
const fn slot(key: u128) -> usize {
    let mut x = (key as u64) ^ ((key >> 64) as u64).rotate_left(29);
    x = (x ^ (x >> 31)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (x >> (64 - 9)) as usize
}

macro_rules! keywords {
    ($($variant:ident = $text:literal,)*) => {
        /// A key word of interest, or `None` for any other word.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(u8)]
        pub(crate) enum Kw {
            None,
            $($variant,)*
        }

        const KEYWORDS: &[(&str, Kw)] = &[$(($text, Kw::$variant),)*];
    };
}

/// The open-addressing table: `(packed word, key word)`, a zero key marks an empty slot.
static TABLE: [(u128, Kw); SLOTS] = {
    let mut table = [(0u128, Kw::None); SLOTS];
    let mut k = 0;
    while k < KEYWORDS.len() {
        let key = pack_const(KEYWORDS[k].0);
        let mut i = slot(key);
        while table[i].0 != 0 {
            i = (i + 1) % SLOTS;
        }
        table[i] = (key, KEYWORDS[k].1);
        k += 1;
    }
    table
};

/// The key word with packed form `key` (see [`pack`]), or [`Kw::None`].
#[inline]
pub(crate) fn lookup(key: u128) -> Kw {
    let mut i = slot(key);
    loop {
        let (candidate, kw) = TABLE[i];
        if candidate == key {
            return kw;
        }
        if candidate == 0 {
            return Kw::None;
        }
        i = (i + 1) % SLOTS;
    }
}

/// The key words a query's body is scanned for, recognised by length and a direct
/// comparison: cheaper than [`keyword`] on the hot path, where most words are names.
/// Any other word, key word or not, is [`Kw::None`].
#[inline]
pub(crate) fn query_keyword(word: &[u8]) -> Kw {
    let is = |text: &str| word.eq_ignore_ascii_case(text.as_bytes());
    match word.len() {
        2 if is("as") => Kw::As,
        3 if is("for") => Kw::For,
        4 if is("into") => Kw::Into,
        4 if is("with") => Kw::With,
        5 if is("merge") => Kw::Merge,
        6 if is("insert") => Kw::Insert,
        6 if is("update") => Kw::Update,
        6 if is("delete") => Kw::Delete,
        9 if is("recursive") => Kw::Recursive,
        _ => Kw::None,
    }
}

/// The key word `word` spells (any case), or [`Kw::None`].
#[inline]
pub(crate) fn keyword(word: &[u8]) -> Kw {
    pack(word).map_or(Kw::None, lookup)
}

keywords! {
    Abort = "abort",
    All = "all",
    Alter = "alter",
    Analyse = "analyse",
    Analyze = "analyze",
    And = "and",
    As = "as",
    Atomic = "atomic",
    Begin = "begin",
    By = "by",
    Call = "call",
    Case = "case",
    Chain = "chain",
    Characteristics = "characteristics",
    Checkpoint = "checkpoint",
    Close = "close",
    Cluster = "cluster",
    Comment = "comment",
    Commit = "commit",
    Committed = "committed",
    Constraints = "constraints",
    Copy = "copy",
    Create = "create",
    Deallocate = "deallocate",
    Declare = "declare",
    Delete = "delete",
    Discard = "discard",
    Distinct = "distinct",
    Do = "do",
    Drop = "drop",
    End = "end",
    Except = "except",
    Execute = "execute",
    Exists = "exists",
    Explain = "explain",
    False = "false",
    Fetch = "fetch",
    First = "first",
    For = "for",
    From = "from",
    Function = "function",
    Global = "global",
    Grant = "grant",
    Group = "group",
    Having = "having",
    Hold = "hold",
    Ilike = "ilike",
    Import = "import",
    Insert = "insert",
    Intersect = "intersect",
    Into = "into",
    Is = "is",
    Isolation = "isolation",
    Join = "join",
    Key = "key",
    Level = "level",
    Like = "like",
    Limit = "limit",
    Listen = "listen",
    Load = "load",
    Local = "local",
    Lock = "lock",
    Materialized = "materialized",
    Merge = "merge",
    Move = "move",
    Next = "next",
    No = "no",
    Not = "not",
    Notify = "notify",
    Off = "off",
    Offset = "offset",
    On = "on",
    Only = "only",
    Or = "or",
    Order = "order",
    Over = "over",
    Prepare = "prepare",
    Prepared = "prepared",
    Procedure = "procedure",
    Read = "read",
    Reassign = "reassign",
    Recursive = "recursive",
    Refresh = "refresh",
    Reindex = "reindex",
    Release = "release",
    Repeatable = "repeatable",
    Replace = "replace",
    Reset = "reset",
    Returning = "returning",
    Revoke = "revoke",
    Rollback = "rollback",
    Savepoint = "savepoint",
    Security = "security",
    Select = "select",
    Serializable = "serializable",
    Session = "session",
    Set = "set",
    Share = "share",
    Show = "show",
    Start = "start",
    Stdout = "stdout",
    Table = "table",
    Temp = "temp",
    Temporary = "temporary",
    To = "to",
    Transaction = "transaction",
    True = "true",
    Truncate = "truncate",
    Uescape = "uescape",
    Uncommitted = "uncommitted",
    Union = "union",
    Unlisten = "unlisten",
    Unlogged = "unlogged",
    Update = "update",
    Vacuum = "vacuum",
    Values = "values",
    Verbose = "verbose",
    Where = "where",
    Window = "window",
    With = "with",
    Within = "within",
    Write = "write",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_case_matches_and_near_misses_do_not() {
        assert_eq!(keyword(b"SELECT"), Kw::Select);
        assert_eq!(keyword(b"sElEcT"), Kw::Select);
        assert_eq!(keyword(b"characteristics"), Kw::Characteristics);
        assert_eq!(keyword(b"selects"), Kw::None);
        assert_eq!(keyword(b"selec"), Kw::None);
        assert_eq!(keyword(b""), Kw::None);
        assert_eq!(keyword(b"a_very_long_identifier_name"), Kw::None);
        // Non-ASCII bytes never fold into a key word.
        assert_eq!(keyword("sélect".as_bytes()), Kw::None);
        // The bytes just outside A-Z are not folded: '@' (0x40) and '[' (0x5B).
        assert_eq!(
            pack(b"@["),
            Some(u128::from_le_bytes(*b"@[\0\0\0\0\0\0\0\0\0\0\0\0\0\0"))
        );
    }

    #[test]
    fn every_key_word_is_found_in_every_case() {
        for &(text, kw) in KEYWORDS {
            assert_eq!(keyword(text.as_bytes()), kw, "{text}");
            assert_eq!(keyword(text.to_ascii_uppercase().as_bytes()), kw, "{text}");
        }
    }

    #[test]
    fn the_query_matcher_agrees_with_the_table() {
        let scanned = [
            Kw::As,
            Kw::For,
            Kw::Into,
            Kw::With,
            Kw::Merge,
            Kw::Insert,
            Kw::Update,
            Kw::Delete,
            Kw::Recursive,
        ];
        for &(text, kw) in KEYWORDS {
            let expected = if scanned.contains(&kw) { kw } else { Kw::None };
            assert_eq!(query_keyword(text.as_bytes()), expected, "{text}");
            assert_eq!(
                query_keyword(text.to_ascii_uppercase().as_bytes()),
                expected,
                "{text}"
            );
        }
        assert_eq!(query_keyword(b"intO"), Kw::Into);
        assert_eq!(query_keyword(b"inta"), Kw::None);
    }

    #[test]
    fn folding_matches_the_standard_library_for_every_byte() {
        for byte in 0..=255u8 {
            let folded = fold_ascii(u128::from(byte)) as u8;
            assert_eq!(folded, byte.to_ascii_lowercase(), "{byte:#x}");
        }
    }
}
