//! PostgreSQL connection URLs (`postgres://user:password@host:port/database?sslmode=...`), as
//! found in `DATABASE_URL` and `DB_<REGION>_URL`, and their redaction for printing.
//!
//! Only what Meridian can honour is accepted: one host, and of the query parameters only
//! `sslmode`. Anything else is an error rather than a silently ignored setting. Problems are
//! described without quoting the URL, which may hold a password.

use ::url::{Host, Url};

use crate::config::ServerTlsMode;
use crate::secret::Secret;

/// `url` with its password (in the user-info part or a `password=` query parameter) replaced by
/// `***`, for logs and messages. Text that does not parse as a URL with a host is reduced to its
/// scheme, since where a password would sit in it cannot be known.
pub fn redact_url(url: &str) -> String {
    // Without a host there is no user-info part, and `user:password@host` without a scheme
    // parses as a URL with scheme "user": treat both as unparsed.
    let Some(mut parsed) = Url::parse(url)
        .ok()
        .filter(|parsed| parsed.host().is_some())
    else {
        return match url.split_once("://") {
            Some((scheme, _)) if scheme.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                format!("{scheme}://***")
            }
            _ => "***".to_owned(),
        };
    };
    if parsed.password().is_some() {
        // Cannot fail: the URL has a host, since it has a password.
        let _ = parsed.set_password(Some("***"));
    }
    if parsed.query_pairs().any(|(key, _)| key == "password") {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(key, value)| {
                let value = if key == "password" {
                    "***".into()
                } else {
                    value
                };
                (key.into_owned(), value.into_owned())
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// The parts of a connection URL that Meridian uses.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PostgresUrl {
    pub(crate) user: String,
    pub(crate) password: Option<Secret>,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Only compared between URLs: clients choose the database when they connect.
    pub(crate) database: Option<String>,
    pub(crate) sslmode: Option<ServerTlsMode>,
}

const EXAMPLE: &str = "write it as postgres://USER:PASSWORD@HOST:PORT/DATABASE";

/// Parses `text`; the error describes the problem without quoting `text`.
pub(crate) fn parse(text: &str) -> Result<PostgresUrl, String> {
    let url = Url::parse(text).map_err(|error| format!("not a valid URL ({error}): {EXAMPLE}"))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(format!(
            "scheme {:?} is not postgres:// or postgresql://: {EXAMPLE}",
            url.scheme()
        ));
    }
    let host = match url.host() {
        None => return Err(format!("has no host: {EXAMPLE}")),
        Some(Host::Domain("")) => {
            return Err(format!("has no host: {EXAMPLE}"));
        }
        Some(Host::Domain(domain)) if domain.contains(',') => {
            return Err("names several hosts: give each node its own variable".to_owned());
        }
        Some(Host::Domain(domain)) => decode(domain, "host")?,
        Some(Host::Ipv4(address)) => address.to_string(),
        Some(Host::Ipv6(address)) => address.to_string(),
    };
    let user = decode(url.username(), "user name")?;
    if user.is_empty() {
        return Err(format!("has no user name: {EXAMPLE}"));
    }
    let password = match url.password() {
        Some(password) if !password.is_empty() => Some(Secret::new(decode(password, "password")?)),
        _ => None,
    };
    let database = match url.path().trim_start_matches('/') {
        "" => None,
        path => Some(decode(path, "database name")?),
    };
    if url.fragment().is_some() {
        return Err("has a #fragment, which means nothing to PostgreSQL: remove it".to_owned());
    }
    let mut sslmode = None;
    let mut unknown = Vec::new();
    for (key, value) in url.query_pairs() {
        if key == "sslmode" {
            sslmode = Some(parse_sslmode(&value)?);
        } else {
            unknown.push(format!("{key:?}"));
        }
    }
    if !unknown.is_empty() {
        return Err(format!(
            "has query parameter(s) {} that Meridian does not support: only sslmode is \
             accepted; remove the others",
            unknown.join(", ")
        ));
    }
    Ok(PostgresUrl {
        user,
        password,
        host,
        port: url.port().unwrap_or(5432),
        database,
        sslmode,
    })
}

/// libpq's `sslmode` values, mapped onto the modes Meridian implements.
fn parse_sslmode(value: &str) -> Result<ServerTlsMode, String> {
    match value {
        // "allow" tries plaintext first; Meridian's nearest is to try TLS first.
        "allow" => Ok(ServerTlsMode::Prefer),
        "verify-ca" => Err(
            "sslmode=verify-ca is not supported: use sslmode=verify-full, which \
             also checks the host name, or sslmode=require"
                .to_owned(),
        ),
        other => other
            .parse()
            .map_err(|error| format!("sslmode={other:?}: {error}")),
    }
}

/// Percent-decodes one URL component.
fn decode(text: &str, what: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("the {what} is not UTF-8 once percent-decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_parts() {
        let url = parse("postgresql://app:p%40ss%3Aw@db.example.com:6543/orders?sslmode=require")
            .unwrap();
        assert_eq!(url.user, "app");
        assert_eq!(url.password.as_ref().map(Secret::expose), Some("p@ss:w"));
        assert_eq!(url.host, "db.example.com");
        assert_eq!(url.port, 6543);
        assert_eq!(url.database.as_deref(), Some("orders"));
        assert_eq!(url.sslmode, Some(ServerTlsMode::Require));

        let url = parse("postgres://app@[::1]").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("::1", 5432));
        assert_eq!((url.password, url.database), (None, None));
        assert_eq!(parse("postgres://a@10.0.0.1/x").unwrap().host, "10.0.0.1");
        assert_eq!(
            parse("postgres://a@h?sslmode=allow").unwrap().sslmode,
            Some(ServerTlsMode::Prefer)
        );
    }

    #[test]
    fn rejects_what_meridian_cannot_honour() {
        for (text, expected) in [
            ("mysql://a:hunter2@h/db", "scheme \"mysql\""),
            ("postgres://:hunter2@h/db", "no user name"),
            ("postgres://a:hunter2@h1,h2/db", "several hosts"),
            (
                "postgres://a:hunter2@h/db?sslmode=verify-ca",
                "verify-ca is not supported",
            ),
            (
                "postgres://a:hunter2@h/db?sslmode=yes",
                "sslmode=\"yes\": must be one of",
            ),
            (
                "postgres://a:hunter2@h/db?application_name=x&password=hunter2",
                "\"application_name\", \"password\"",
            ),
            ("postgres://a:hunter2@h:99999/db", "not a valid URL"),
            ("not a url hunter2", "not a valid URL"),
            ("postgres://a:hunter2@h/db#frag", "#fragment"),
        ] {
            let problem = parse(text).unwrap_err();
            assert!(problem.contains(expected), "{text}: {problem}");
            assert!(!problem.contains("hunter2"), "{problem}");
        }
    }

    #[test]
    fn redaction_hides_passwords_only() {
        assert_eq!(
            redact_url("postgres://app:hunter2@db:5432/orders?sslmode=require"),
            "postgres://app:***@db:5432/orders?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://app@db/orders"),
            "postgres://app@db/orders"
        );
        assert_eq!(
            redact_url("postgres://app@db/orders?password=hunter2&sslmode=disable"),
            "postgres://app@db/orders?password=***&sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://app:hunter2@db:99999/x"),
            "postgres://***"
        );
        assert_eq!(redact_url("app:hunter2@db"), "***");
    }
}
