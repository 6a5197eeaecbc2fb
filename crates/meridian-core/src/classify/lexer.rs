//! A tokenizer for PostgreSQL's lexical structure (PostgreSQL docs, section 4.1 "Lexical
//! Structure"), written by hand.
//!
//! Why by hand: no well-kept Rust crate tokenizes PostgreSQL without a full parse. `pg_query`
//! wraps the server's own scanner but needs clang, minutes of build and tens of microseconds per
//! call; `sqlparser` is a generic SQL parser that rejects valid PostgreSQL. Classification only
//! needs to know where words, strings, comments and statement boundaries are.
//!
//! Invariants:
//! - Never panics and never allocates: a token is a 16-byte value holding offsets into the
//!   input, passed by value (taking its address made the hot loop stall on store forwarding).
//! - Any byte sequence is accepted. Bytes PostgreSQL's scanner would reject become
//!   [`Kind::Other`]; an unterminated string, quoted identifier, dollar quote or block comment
//!   runs to the end of the input and sets [`Lexer::unterminated`] (the server rejects such a
//!   query string whole, so nothing in it runs).
//! - Bytes `>= 0x80` are identifier characters, as in PostgreSQL's scanner, so text in any
//!   ASCII-compatible client encoding (normally UTF-8) tokenizes correctly.
//! - `standard_conforming_strings` is a parameter (on by default since PostgreSQL 9.1): when it is
//!   off, backslashes escape quotes in plain `'...'` strings too, which moves string ends.

/// What a token is. Keywords are not told apart from identifiers here (see `keyword`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An unquoted identifier or key word (4.1.1); case-insensitive.
    Word,
    /// A `"quoted identifier"` (4.1.1), text including the quotes; never a key word.
    QuotedIdent,
    /// A `U&"..."` identifier with Unicode escapes (4.1.1), text including `U&` and quotes.
    UnicodeIdent,
    /// Any string constant: `'...'`, `E'...'`, `B'...'`, `X'...'`, `N'...'`, `U&'...'` (4.1.2.1
    /// to 4.1.2.5) and dollar-quoted `$tag$...$tag$` (4.1.2.4).
    String,
    /// A numeric constant (4.1.2.6).
    Number,
    /// A positional parameter `$1` (4.1.4).
    Param,
    /// A run of operator characters (4.1.3).
    Operator,
    /// `(`.
    LParen,
    /// `)`.
    RParen,
    /// `,`.
    Comma,
    /// `;`: ends a statement.
    Semicolon,
    /// `.`.
    Dot,
    /// `[`, `]` or `:` (4.1.4).
    Punct,
    /// A byte the PostgreSQL scanner does not accept here (a lone `$`, a control character).
    Other,
}

/// One token: 16 bytes, copied freely. Its text is `source[start..end]`
/// ([`Lexer::text`]); offsets are `u32` because PostgreSQL never accepts a query string over
/// 1 GB (the lexer reads at most 4 GiB, and the classifier refuses longer text outright).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) kind: Kind,
    /// Parenthesis depth, filled in by the statement cursor (0 from the lexer).
    pub(crate) depth: u32,
    /// Byte offset of the token in the input.
    pub(crate) start: u32,
    /// Byte offset just past the token.
    pub(crate) end: u32,
}

const SPACE: u8 = 1;
const IDENT_START: u8 = 2;
const IDENT_CONT: u8 = 4;
const OPERATOR: u8 = 8;

/// Whether `b` is whitespace to PostgreSQL's scanner: `[ \t\n\r\f\v]`.
pub(super) const fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Character classes of every byte, after the definitions in PostgreSQL's scanner: `space` is
/// [`is_space`], `ident_start` is `[A-Za-z\200-\377_]`, `ident_cont` adds digits and `$`,
/// operator characters are `+ - * / < > = ~ ! @ # % ^ & | ` ?` (4.1.3).
const CLASSES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut class = 0;
        if is_space(b) {
            class |= SPACE;
        }
        if b.is_ascii_alphabetic() || b == b'_' || b >= 0x80 {
            class |= IDENT_START | IDENT_CONT;
        }
        if b.is_ascii_digit() {
            class |= IDENT_CONT;
        }
        if b == b'$' {
            class |= IDENT_CONT;
        }
        if matches!(
            b,
            b'+' | b'-'
                | b'*'
                | b'/'
                | b'<'
                | b'>'
                | b'='
                | b'~'
                | b'!'
                | b'@'
                | b'#'
                | b'%'
                | b'^'
                | b'&'
                | b'|'
                | b'`'
                | b'?'
        ) {
            class |= OPERATOR;
        }
        table[i] = class;
        i += 1;
    }
    table
};

fn is(b: u8, class: u8) -> bool {
    CLASSES[b as usize] & class != 0
}

/// The end of the block comment starting at `start` (which is at `/*`); comments nest in
/// PostgreSQL, unlike the SQL standard's (4.1.5). `None` if it never ends.
fn block_comment_end(src: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i + 1 < src.len() {
        match (src[i], src[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// The tokenizer: an iterator over the tokens of `src`, skipping whitespace and comments.
/// Cloning it is cheap (a slice and an offset), which is how callers look ahead.
#[derive(Debug, Clone)]
pub(crate) struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    standard_strings: bool,
    unterminated: bool,
}

impl<'a> Lexer<'a> {
    /// The longest input the lexer reads: token offsets are `u32`.
    pub(crate) const MAX_LEN: usize = u32::MAX as usize;

    /// A lexer over `src` (at most [`MAX_LEN`](Self::MAX_LEN) bytes are read);
    /// `standard_conforming_strings` as the server has it.
    pub(crate) fn new(src: &'a [u8], standard_conforming_strings: bool) -> Lexer<'a> {
        Lexer {
            src: &src[..src.len().min(Self::MAX_LEN)],
            pos: 0,
            standard_strings: standard_conforming_strings,
            unterminated: false,
        }
    }

    /// True once a string, quoted identifier, dollar quote or block comment ran to the end of
    /// the input without its closing delimiter.
    pub(crate) fn unterminated(&self) -> bool {
        self.unterminated
    }

    /// The text of a token of this lexer's input.
    pub(crate) fn text(&self, token: Token) -> &'a [u8] {
        &self.src[token.start as usize..token.end as usize]
    }

    /// The next token, or `None` at the end of the input.
    #[inline(always)]
    pub(crate) fn next_token(&mut self) -> Option<Token> {
        self.skip_space_and_comments();
        let start = self.pos;
        let &first = self.src.get(start)?;
        // Words are most tokens: take them first, unless a quote or `&` after the first
        // letter makes a prefixed constant (E'', B'', X'', N'', U&'', U&"").
        if is(first, IDENT_START) && !matches!(self.src.get(start + 1), Some(b'\'' | b'&')) {
            self.pos = self.identifier_end(start + 1);
            return Some(Token {
                kind: Kind::Word,
                depth: 0,
                start: start as u32,
                end: self.pos as u32,
            });
        }
        let kind = match first {
            b'\'' => {
                self.string(start, !self.standard_strings);
                Kind::String
            }
            b'"' => {
                self.quoted_identifier(start);
                Kind::QuotedIdent
            }
            b'$' => self.dollar(start),
            b'0'..=b'9' => {
                self.number(start);
                Kind::Number
            }
            b'.' if self.src.get(start + 1).is_some_and(u8::is_ascii_digit) => {
                self.number(start);
                Kind::Number
            }
            b'.' => self.single(Kind::Dot),
            b'(' => self.single(Kind::LParen),
            b')' => self.single(Kind::RParen),
            b',' => self.single(Kind::Comma),
            b';' => self.single(Kind::Semicolon),
            b'[' | b']' | b':' => self.single(Kind::Punct),
            b if is(b, IDENT_START) => self.word_or_prefixed(start, b),
            b if is(b, OPERATOR) => {
                self.operator(start);
                Kind::Operator
            }
            _ => self.single(Kind::Other),
        };
        Some(Token {
            kind,
            depth: 0,
            start: start as u32,
            end: self.pos as u32,
        })
    }

    fn single(&mut self, kind: Kind) -> Kind {
        self.pos += 1;
        kind
    }

    /// Whitespace, `-- line comments` and nested `/* block comments */` (4.1.5).
    #[inline(always)]
    fn skip_space_and_comments(&mut self) {
        let (pos, unterminated) = self.skip_from(self.pos);
        self.pos = pos;
        self.unterminated |= unterminated;
    }

    /// True if the next token starts with `byte`, looking past whitespace and comments without
    /// consuming anything: the cheap test for "is this name followed by `(`".
    #[inline(always)]
    pub(crate) fn next_starts_with(&self, byte: u8) -> bool {
        // Fast path: the byte itself, or one space before it, or anything that cannot start
        // whitespace or a comment.
        let src = self.src;
        let pos = match src.get(self.pos) {
            Some(&b) if b == byte => return true,
            Some(b' ') => self.pos + 1,
            Some(b) if !is(*b, SPACE) && *b != b'-' && *b != b'/' => return false,
            None => return false,
            Some(_) => self.pos,
        };
        match src.get(pos) {
            Some(&b) if b == byte => true,
            Some(b) if !is(*b, SPACE) && *b != b'-' && *b != b'/' => false,
            _ => {
                let (pos, _) = self.skip_from(pos);
                src.get(pos) == Some(&byte)
            }
        }
    }

    /// The position after the whitespace and comments at `pos`, and whether a block comment
    /// ran to the end of the input.
    #[inline(always)]
    fn skip_from(&self, mut pos: usize) -> (usize, bool) {
        let src = self.src;
        loop {
            while pos < src.len() && is(src[pos], SPACE) {
                pos += 1;
            }
            // Most tokens start with neither `-` nor `/`: decide on one byte.
            if !matches!(src.get(pos), Some(b'-' | b'/')) {
                return (pos, false);
            }
            match src.get(pos..pos + 2) {
                Some(b"--") => {
                    // A line comment ends at a newline, which the scanner takes as \n or \r.
                    pos += 2;
                    while pos < src.len() && !matches!(src[pos], b'\n' | b'\r') {
                        pos += 1;
                    }
                }
                Some(b"/*") => match block_comment_end(src, pos) {
                    Some(end) => pos = end,
                    None => return (src.len(), true),
                },
                _ => return (pos, false),
            }
        }
    }

    /// A string body starting at the quote at `quote`: `''` is an escaped quote (4.1.2.1) and,
    /// with `backslashes`, a backslash escapes the next byte (`E'...'`, 4.1.2.2).
    fn string(&mut self, quote: usize, backslashes: bool) {
        let src = self.src;
        let mut i = quote + 1;
        while i < src.len() {
            match src[i] {
                b'\\' if backslashes => i += 2,
                b'\'' => {
                    if src.get(i + 1) == Some(&b'\'') {
                        i += 2;
                    } else {
                        self.pos = i + 1;
                        return;
                    }
                }
                _ => i += 1,
            }
        }
        self.pos = src.len();
        self.unterminated = true;
    }

    /// A quoted identifier starting at the quote at `quote`: `""` is an escaped quote (4.1.1).
    fn quoted_identifier(&mut self, quote: usize) {
        let src = self.src;
        let mut i = quote + 1;
        while i < src.len() {
            if src[i] == b'"' {
                if src.get(i + 1) == Some(&b'"') {
                    i += 2;
                    continue;
                }
                self.pos = i + 1;
                return;
            }
            i += 1;
        }
        self.pos = src.len();
        self.unterminated = true;
    }

    /// `$1` (a parameter), `$tag$...$tag$` or `$$...$$` (a dollar-quoted string, 4.1.2.4), or a
    /// lone `$`. A tag follows the rules of an unquoted identifier but cannot contain `$`.
    fn dollar(&mut self, start: usize) -> Kind {
        let src = self.src;
        let mut i = start + 1;
        match src.get(i) {
            Some(b) if b.is_ascii_digit() => {
                while i < src.len() && src[i].is_ascii_digit() {
                    i += 1;
                }
                self.pos = i;
                return Kind::Param;
            }
            Some(b'$') => {}
            Some(&b) if is(b, IDENT_START) => {
                while i < src.len() && src[i] != b'$' && is(src[i], IDENT_CONT) {
                    i += 1;
                }
                if src.get(i) != Some(&b'$') {
                    self.pos = start + 1;
                    return Kind::Other;
                }
            }
            _ => {
                self.pos = start + 1;
                return Kind::Other;
            }
        }
        let tag = &src[start..=i];
        let mut j = i + 1;
        while let Some(offset) = src[j..].iter().position(|&b| b == b'$') {
            let at = j + offset;
            if src[at..].starts_with(tag) {
                self.pos = at + tag.len();
                return Kind::String;
            }
            j = at + 1;
        }
        self.pos = src.len();
        self.unterminated = true;
        Kind::String
    }

    /// Numeric constants (4.1.2.6): decimal with optional fraction and exponent, `0x`/`0o`/`0b`
    /// integers, `_` between digits. Letters right after a number start a new token, as in
    /// PostgreSQL 14 and older (15 and newer reject such "trailing junk" outright).
    fn number(&mut self, start: usize) {
        let src = self.src;
        let digits = |mut i: usize, radix: u32| {
            while i < src.len()
                && ((src[i] as char).is_digit(radix)
                    || (src[i] == b'_'
                        && src.get(i + 1).is_some_and(|&b| (b as char).is_digit(radix))))
            {
                i += 1;
            }
            i
        };
        if src[start] == b'0' {
            let radix = match src.get(start + 1) {
                Some(b'x' | b'X') => 16,
                Some(b'o' | b'O') => 8,
                Some(b'b' | b'B') => 2,
                _ => 10,
            };
            if radix != 10 {
                let after = digits(start + 2, radix);
                if after > start + 2 {
                    self.pos = after;
                    return;
                }
            }
        }
        let mut i = digits(start, 10);
        // A fraction, unless this is the `..` of a range (which the server also splits off).
        if src.get(i) == Some(&b'.') && src.get(i + 1) != Some(&b'.') {
            i = digits(i + 1, 10);
        }
        if matches!(src.get(i), Some(b'e' | b'E')) {
            let sign = usize::from(matches!(src.get(i + 1), Some(b'+' | b'-')));
            if src.get(i + 1 + sign).is_some_and(u8::is_ascii_digit) {
                i = digits(i + 1 + sign, 10);
            }
        }
        self.pos = i;
    }

    /// A run of operator characters; `--` and `/*` inside it start a comment and end the
    /// operator (4.1.3).
    fn operator(&mut self, start: usize) {
        let src = self.src;
        let mut i = start + 1;
        while i < src.len()
            && is(src[i], OPERATOR)
            && !matches!(&src[i..], [b'-', b'-', ..] | [b'/', b'*', ..])
        {
            i += 1;
        }
        self.pos = i;
    }

    /// An identifier or key word, or a string/identifier with a one-letter prefix: `E'`, `B'`,
    /// `X'`, `N'`, `U&'` and `U&"` (4.1.2.2, 4.1.2.3, 4.1.2.5, 4.1.1).
    fn word_or_prefixed(&mut self, start: usize, first: u8) -> Kind {
        let src = self.src;
        let next = src.get(start + 1).copied();
        match (first.to_ascii_lowercase(), next) {
            (b'e', Some(b'\'')) => {
                self.string(start + 1, true);
                return Kind::String;
            }
            (b'n', Some(b'\'')) => {
                self.string(start + 1, !self.standard_strings);
                return Kind::String;
            }
            (b'b' | b'x', Some(b'\'')) => {
                self.string(start + 1, false);
                return Kind::String;
            }
            (b'u', Some(b'&')) => match src.get(start + 2) {
                // Unicode escapes never hide a quote: only '' and "" do (same rules as '...').
                Some(b'\'') => {
                    self.string(start + 2, false);
                    return Kind::String;
                }
                Some(b'"') => {
                    self.quoted_identifier(start + 2);
                    return Kind::UnicodeIdent;
                }
                _ => {}
            },
            _ => {}
        }
        self.pos = self.identifier_end(start + 1);
        Kind::Word
    }

    /// The end of the identifier characters from `i` on.
    #[inline(always)]
    fn identifier_end(&self, i: usize) -> usize {
        let rest = &self.src[i..];
        i + rest
            .iter()
            .position(|&b| !is(b, IDENT_CONT))
            .unwrap_or(rest.len())
    }
}

impl Iterator for Lexer<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        self.next_token()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(sql: &str) -> Vec<(Kind, &str)> {
        let lexer = Lexer::new(sql.as_bytes(), true);
        lexer
            .clone()
            .map(|t| (t.kind, std::str::from_utf8(lexer.text(t)).unwrap()))
            .collect()
    }

    #[test]
    fn words_strings_and_punctuation() {
        assert_eq!(
            tokens("SELECT a, \"B\"\"c\" FROM t WHERE x = 'it''s';"),
            vec![
                (Kind::Word, "SELECT"),
                (Kind::Word, "a"),
                (Kind::Comma, ","),
                (Kind::QuotedIdent, "\"B\"\"c\""),
                (Kind::Word, "FROM"),
                (Kind::Word, "t"),
                (Kind::Word, "WHERE"),
                (Kind::Word, "x"),
                (Kind::Operator, "="),
                (Kind::String, "'it''s'"),
                (Kind::Semicolon, ";"),
            ]
        );
    }

    #[test]
    fn comments_nest_and_end_operators() {
        assert_eq!(
            tokens("a /* x /* y */ ; */ b -- c ; d\n e"),
            vec![(Kind::Word, "a"), (Kind::Word, "b"), (Kind::Word, "e")]
        );
        // `*/*` inside an operator run starts a comment (4.1.3).
        assert_eq!(
            tokens("2*/*c*/3 +-- x\n4"),
            vec![
                (Kind::Number, "2"),
                (Kind::Operator, "*"),
                (Kind::Number, "3"),
                (Kind::Operator, "+"),
                (Kind::Number, "4"),
            ]
        );
        // A line comment also ends at a carriage return.
        assert_eq!(
            tokens("a -- x\rb"),
            vec![(Kind::Word, "a"), (Kind::Word, "b")]
        );
    }

    #[test]
    fn escape_strings_and_standard_conforming_strings() {
        assert_eq!(
            tokens(r"E'a\'b' c"),
            vec![(Kind::String, r"E'a\'b'"), (Kind::Word, "c")]
        );
        // With standard_conforming_strings on, a backslash is an ordinary character.
        assert_eq!(
            tokens(r"'a\' b"),
            vec![(Kind::String, r"'a\'"), (Kind::Word, "b")]
        );
        let off: Vec<Kind> = Lexer::new(br"'a\' b' c", false).map(|t| t.kind).collect();
        assert_eq!(off, vec![Kind::String, Kind::Word]);
    }

    #[test]
    fn dollar_quotes_parameters_and_identifiers_with_dollars() {
        assert_eq!(
            tokens("$fn$ a $$ ; $x$ b $fn$ $1 a$$b $$$$"),
            vec![
                (Kind::String, "$fn$ a $$ ; $x$ b $fn$"),
                (Kind::Param, "$1"),
                (Kind::Word, "a$$b"),
                (Kind::String, "$$$$"),
            ]
        );
        assert_eq!(tokens("$ x"), vec![(Kind::Other, "$"), (Kind::Word, "x")]);
    }

    #[test]
    fn prefixed_constants_and_unicode_identifiers() {
        assert_eq!(
            tokens(r#"B'01' x'FF' n'a' U&'\0041' U&"d\0061t" u&x"#),
            vec![
                (Kind::String, "B'01'"),
                (Kind::String, "x'FF'"),
                (Kind::String, "n'a'"),
                (Kind::String, r"U&'\0041'"),
                (Kind::UnicodeIdent, r#"U&"d\0061t""#),
                (Kind::Word, "u"),
                (Kind::Operator, "&"),
                (Kind::Word, "x"),
            ]
        );
    }

    #[test]
    fn numbers_stop_before_letters() {
        assert_eq!(
            tokens("1.5e-3 .5 0x1F 1_000 1into"),
            vec![
                (Kind::Number, "1.5e-3"),
                (Kind::Number, ".5"),
                (Kind::Number, "0x1F"),
                (Kind::Number, "1_000"),
                (Kind::Number, "1"),
                (Kind::Word, "into"),
            ]
        );
    }

    #[test]
    fn unterminated_constructs_run_to_the_end() {
        for sql in ["'abc", "\"abc", "$$ abc", "/* abc /* */", "E'abc\\'"] {
            let mut lexer = Lexer::new(sql.as_bytes(), true);
            while lexer.next_token().is_some() {}
            assert!(lexer.unterminated(), "{sql}");
        }
        let mut lexer = Lexer::new(b"-- only a comment", true);
        assert_eq!(lexer.next_token(), None);
        assert!(!lexer.unterminated());
    }
}
