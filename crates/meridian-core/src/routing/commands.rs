//! What a client says to Meridian itself, inside its SQL: routing hints and `meridian.*`
//! settings.
//!
//! - A leading comment `/* meridian:primary */`, `/* meridian:replica */` (or
//!   `-- meridian:replica` on its own line) routes that statement ([`leading_hint`]). Only the
//!   first comment counts, and only before the statement's first word.
//! - `SET meridian.route = primary | replica | auto` routes the session's later statements;
//!   `SHOW meridian.route` tells the current value.
//! - `SHOW meridian.lsn` returns the session's read-your-writes position (its last write's WAL
//!   position, or the one it was handed); `SET meridian.min_lsn = '0/3000148'` hands a session
//!   a position from elsewhere (the web request before, on another connection), so its reads
//!   see at least that much. `RESET` undoes either setting.
//!
//! [`session_command`] recognises these in a simple query without a full parse: keywords are
//! matched case-insensitively, `=` or `TO`, values bare or single-quoted, an optional `;`.
//! Anything else in the `meridian.` namespace is an error with PostgreSQL's SQLSTATE for an
//! unknown setting; any other statement is left to the server.

use crate::lsn::Lsn;
use crate::routing::Target;

/// The routing hint in a statement's leading comment, or [`Target::Auto`].
pub fn leading_hint(sql: &[u8]) -> Target {
    let rest = trim_start(sql);
    let body = if let Some(after) = rest.strip_prefix(b"/*") {
        match find(after, b"*/") {
            Some(end) => &after[..end],
            None => return Target::Auto,
        }
    } else if let Some(after) = rest.strip_prefix(b"--") {
        let end = after
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(after.len());
        &after[..end]
    } else {
        return Target::Auto;
    };
    let body = trim(body);
    match strip_prefix_ignore_case(body, b"meridian:") {
        Some(value) => match Target::parse(trim(value)) {
            Some(target) => target,
            None => Target::Auto,
        },
        None => Target::Auto,
    }
}

/// A `meridian.*` setting a session can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// `meridian.route`.
    Route,
    /// `meridian.lsn`: the session's read-your-writes position (read only).
    Lsn,
    /// `meridian.min_lsn`: the position handed to the session.
    MinLsn,
}

impl Setting {
    /// The setting's full name.
    pub fn name(self) -> &'static str {
        match self {
            Setting::Route => "meridian.route",
            Setting::Lsn => "meridian.lsn",
            Setting::MinLsn => "meridian.min_lsn",
        }
    }

    fn parse(name: &[u8]) -> Option<Setting> {
        [Setting::Route, Setting::Lsn, Setting::MinLsn]
            .into_iter()
            .find(|s| name.eq_ignore_ascii_case(s.name().as_bytes()))
    }
}

/// A command for Meridian, answered by the proxy without a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionCommand {
    /// `SET meridian.route = ...` (`RESET` sets [`Target::Auto`]).
    SetRoute(Target),
    /// `SET meridian.min_lsn = '...'`, or `None` for `RESET meridian.min_lsn`.
    SetMinLsn(Option<Lsn>),
    /// `SHOW meridian....`.
    Show(Setting),
}

impl SessionCommand {
    /// The command tag PostgreSQL would answer with.
    pub fn tag(&self) -> &'static str {
        match self {
            SessionCommand::SetRoute(_) | SessionCommand::SetMinLsn(_) => "SET",
            SessionCommand::Show(_) => "SHOW",
        }
    }
}

/// A malformed command in the `meridian.` namespace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CommandError {
    /// The SQLSTATE to answer with.
    pub sqlstate: &'static str,
    /// What is wrong.
    pub message: String,
}

/// SQLSTATE `42704` undefined_object: PostgreSQL's code for an unknown setting.
const UNDEFINED_OBJECT: &str = "42704";
/// SQLSTATE `22023` invalid_parameter_value.
const INVALID_PARAMETER_VALUE: &str = "22023";
/// SQLSTATE `55P02` cant_change_runtime_param: a read-only setting.
const CANT_CHANGE: &str = "55P02";

/// The Meridian command in a simple query, if it is one: `None` for any other SQL.
pub fn session_command(sql: &[u8]) -> Option<Result<SessionCommand, CommandError>> {
    // Cheap rejection first, without allocating: this runs on every simple query.
    let head = trim_start(sql);
    // A leading comment hides the first word: tokenize those (rare) texts.
    let commented = head.starts_with(b"/*") || head.starts_with(b"--");
    if !commented {
        let verb = |word: &[u8]| {
            strip_prefix_ignore_case(head, word)
                .is_some_and(|rest| rest.first().is_none_or(|next| !next.is_ascii_alphabetic()))
        };
        if !(verb(b"set") || verb(b"reset") || verb(b"show"))
            || !contains_ignore_case(head, b"meridian.")
        {
            return None;
        }
    }
    let tokens = tokenize(sql)?;
    let mut words = tokens.iter();
    let verb = words.next()?;
    let verb = match verb {
        Token::Word(w) => w.to_ascii_lowercase(),
        _ => return None,
    };
    let mut next = words.next()?;
    if verb == b"set" {
        if let Token::Word(w) = next
            && w.eq_ignore_ascii_case(b"session")
        {
            next = words.next()?;
        }
    } else if verb != b"reset" && verb != b"show" {
        return None;
    }
    let Token::Word(name) = next else { return None };
    if !starts_with_ignore_case(name, b"meridian.") {
        return None;
    }
    let Some(setting) = Setting::parse(name) else {
        return Some(Err(CommandError {
            sqlstate: UNDEFINED_OBJECT,
            message: format!(
                "unrecognized configuration parameter \"{}\" (Meridian knows meridian.route, meridian.lsn and meridian.min_lsn)",
                String::from_utf8_lossy(name)
            ),
        }));
    };
    let rest: Vec<&Token> = words.collect();
    let trailing_ok = |rest: &[&Token]| rest.is_empty();
    match verb.as_slice() {
        b"show" => {
            if !trailing_ok(&rest) {
                return Some(Err(syntax(sql)));
            }
            Some(Ok(SessionCommand::Show(setting)))
        }
        b"reset" => {
            if !trailing_ok(&rest) {
                return Some(Err(syntax(sql)));
            }
            match setting {
                Setting::Route => Some(Ok(SessionCommand::SetRoute(Target::Auto))),
                Setting::MinLsn => Some(Ok(SessionCommand::SetMinLsn(None))),
                Setting::Lsn => Some(Err(read_only(setting))),
            }
        }
        _ => {
            let value = match rest.as_slice() {
                [Token::Equals | Token::Word(_), value] if is_to_or_equals(rest[0]) => *value,
                _ => return Some(Err(syntax(sql))),
            };
            let value: &[u8] = match value {
                Token::Word(w) => w,
                Token::Quoted(q) => q,
                Token::Equals => return Some(Err(syntax(sql))),
            };
            Some(match setting {
                Setting::Route => match Target::parse(value) {
                    Some(target) => Ok(SessionCommand::SetRoute(target)),
                    None => Err(CommandError {
                        sqlstate: INVALID_PARAMETER_VALUE,
                        message: format!(
                            "invalid value for parameter \"meridian.route\": \"{}\" (use primary, replica or auto)",
                            String::from_utf8_lossy(value)
                        ),
                    }),
                },
                Setting::MinLsn => match std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<Lsn>().ok())
                {
                    Some(lsn) => Ok(SessionCommand::SetMinLsn(Some(lsn))),
                    None => Err(CommandError {
                        sqlstate: INVALID_PARAMETER_VALUE,
                        message: format!(
                            "invalid value for parameter \"meridian.min_lsn\": \"{}\" (a WAL position such as '16/B374D848', as SHOW meridian.lsn returns)",
                            String::from_utf8_lossy(value)
                        ),
                    }),
                },
                Setting::Lsn => Err(read_only(setting)),
            })
        }
    }
}

fn is_to_or_equals(token: &Token) -> bool {
    match token {
        Token::Equals => true,
        Token::Word(w) => w.eq_ignore_ascii_case(b"to"),
        Token::Quoted(_) => false,
    }
}

fn syntax(sql: &[u8]) -> CommandError {
    CommandError {
        sqlstate: "42601",
        message: format!(
            "cannot read Meridian command {:?}: expected SET meridian.<name> = <value>, RESET meridian.<name> or SHOW meridian.<name>",
            String::from_utf8_lossy(sql).trim()
        ),
    }
}

fn read_only(setting: Setting) -> CommandError {
    CommandError {
        sqlstate: CANT_CHANGE,
        message: format!(
            "parameter \"{}\" cannot be changed: set meridian.min_lsn instead",
            setting.name()
        ),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Token {
    Word(Vec<u8>),
    Quoted(Vec<u8>),
    Equals,
}

/// Words (letters, digits, `_`, `.`, `$`, `:`, `/`, `-`), single-quoted strings (`''` for a
/// quote) and `=`, skipping whitespace and comments, up to an optional final `;`. `None` when
/// the text holds anything else (another statement, an operator): not a Meridian command.
fn tokenize(sql: &[u8]) -> Option<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut i = 0;
    let mut ended = false;
    while i < sql.len() {
        let b = sql[i];
        if b.is_ascii_whitespace() {
            i += 1;
        } else if sql[i..].starts_with(b"--") {
            i += sql[i..]
                .iter()
                .position(|&b| b == b'\n')
                .unwrap_or(sql.len() - i);
        } else if sql[i..].starts_with(b"/*") {
            i += comment_len(&sql[i..])?;
        } else if ended {
            return None;
        } else if b == b';' {
            ended = true;
            i += 1;
        } else if b == b'=' {
            tokens.push(Token::Equals);
            i += 1;
        } else if b == b'\'' {
            let mut value = Vec::new();
            i += 1;
            loop {
                match sql.get(i) {
                    None => return None,
                    Some(b'\'') if sql.get(i + 1) == Some(&b'\'') => {
                        value.push(b'\'');
                        i += 2;
                    }
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(&c) => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
            tokens.push(Token::Quoted(value));
        } else if is_word_byte(b) {
            let start = i;
            while i < sql.len() && is_word_byte(sql[i]) {
                i += 1;
            }
            tokens.push(Token::Word(sql[start..i].to_vec()));
        } else {
            return None;
        }
    }
    Some(tokens)
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'$' | b':' | b'/' | b'-')
}

/// Length of a (nested) block comment at the start of `text`, `None` if unterminated.
fn comment_len(text: &[u8]) -> Option<usize> {
    let mut depth = 0;
    let mut i = 0;
    while i + 1 < text.len() {
        match &text[i..i + 2] {
            b"/*" => {
                depth += 1;
                i += 2;
            }
            b"*/" => {
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

fn trim_start(text: &[u8]) -> &[u8] {
    let start = text
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(text.len());
    &text[start..]
}

fn trim(text: &[u8]) -> &[u8] {
    let text = trim_start(text);
    let end = text
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |p| p + 1);
    &text[..end]
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn starts_with_ignore_case(text: &[u8], prefix: &[u8]) -> bool {
    text.len() >= prefix.len() && text[..prefix.len()].eq_ignore_ascii_case(prefix)
}

fn strip_prefix_ignore_case<'a>(text: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    starts_with_ignore_case(text, prefix).then(|| &text[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_lead_the_statement() {
        for (sql, target) in [
            ("/* meridian:primary */ SELECT 1", Target::Primary),
            ("  /*meridian:replica*/SELECT 1", Target::Replica),
            ("/* MERIDIAN:Replica */ SELECT 1", Target::Replica),
            ("-- meridian:primary\nSELECT 1", Target::Primary),
            ("/* meridian:auto */ SELECT 1", Target::Auto),
            ("SELECT 1 /* meridian:primary */", Target::Auto),
            (
                "/* just a comment */ /* meridian:primary */ SELECT 1",
                Target::Auto,
            ),
            ("/* meridian:nowhere */ SELECT 1", Target::Auto),
            ("/* meridian:primary", Target::Auto),
            ("", Target::Auto),
        ] {
            assert_eq!(leading_hint(sql.as_bytes()), target, "{sql}");
        }
    }

    fn command(sql: &str) -> Option<Result<SessionCommand, CommandError>> {
        session_command(sql.as_bytes())
    }

    #[test]
    fn settings_are_set_reset_and_shown() {
        for (sql, expected) in [
            (
                "SET meridian.route = replica",
                SessionCommand::SetRoute(Target::Replica),
            ),
            (
                "set session MERIDIAN.ROUTE to 'primary';",
                SessionCommand::SetRoute(Target::Primary),
            ),
            (
                "RESET meridian.route",
                SessionCommand::SetRoute(Target::Auto),
            ),
            (
                "SET meridian.min_lsn = '16/B374D848'",
                SessionCommand::SetMinLsn(Some(Lsn(0x16_B374_D848))),
            ),
            (
                "SET meridian.min_lsn TO 0/3000148 ; -- handed over",
                SessionCommand::SetMinLsn(Some(Lsn(0x300_0148))),
            ),
            ("reset meridian.min_lsn", SessionCommand::SetMinLsn(None)),
            ("SHOW meridian.lsn", SessionCommand::Show(Setting::Lsn)),
            (
                "SET\tmeridian.route = auto",
                SessionCommand::SetRoute(Target::Auto),
            ),
            (
                " /* c */ show meridian.route;",
                SessionCommand::Show(Setting::Route),
            ),
        ] {
            assert_eq!(command(sql), Some(Ok(expected)), "{sql}");
        }
    }

    #[test]
    fn other_sql_is_left_to_the_server() {
        for sql in [
            "SELECT 1",
            "SET search_path = app",
            "SHOW work_mem",
            "SET LOCAL meridian.route = replica",
            "SET meridian.route = replica; SELECT 1",
            "RESET ALL",
            "show",
            "",
            "SELECT meridian.route FROM settings",
            "SETmeridian.route = replica",
            "resetting meridian.route",
        ] {
            assert_eq!(command(sql), None, "{sql}");
        }
    }

    #[test]
    fn mistakes_in_the_namespace_get_precise_errors() {
        let error = |sql: &str| command(sql).unwrap().unwrap_err();
        let unknown = error("SHOW meridian.routing");
        assert_eq!(unknown.sqlstate, "42704");
        assert!(unknown.message.contains("\"meridian.routing\""));
        let bad_route = error("SET meridian.route = sideways");
        assert_eq!(bad_route.sqlstate, "22023");
        assert!(bad_route.message.contains("primary, replica or auto"));
        let bad_lsn = error("SET meridian.min_lsn = 'yesterday'");
        assert_eq!(bad_lsn.sqlstate, "22023");
        assert_eq!(error("SET meridian.lsn = '0/1'").sqlstate, "55P02");
        assert_eq!(error("RESET meridian.lsn").sqlstate, "55P02");
        assert_eq!(error("SET meridian.route replica").sqlstate, "42601");
        assert_eq!(error("SHOW meridian.route now").sqlstate, "42601");
    }
}
