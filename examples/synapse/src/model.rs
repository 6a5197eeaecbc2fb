//! The service's documents and their rules, as pure functions: a stored [`Transaction`], a
//! [`NewTransaction`] validated from a request's JSON, a [`Page`] of the list from its query
//! parameters, and the read intent a request's `x-wal-token` headers ask for.
//!
//! Every rejection is an [`Invalid`] naming the field, parameter or header at fault; the HTTP
//! layer decides its status (422 for a body's field, 400 for the request's shape).

use meridian_client::{QueryIntent, WalToken};
use serde::Serialize;
use serde_json::Value;

/// Longest account name, in characters (the table's constraint says the same).
pub const MAX_ACCOUNT_CHARS: usize = 100;
/// Longest description, in characters (the table's constraint says the same).
pub const MAX_DESCRIPTION_CHARS: usize = 1000;
/// Rows in a page when `limit` is not given.
pub const DEFAULT_LIMIT: i64 = 50;
/// Most rows in a page.
pub const MAX_LIMIT: i64 = 500;

/// One stored transaction, as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Transaction {
    /// Assigned by the database, increasing.
    pub id: i64,
    /// The account it belongs to.
    pub account: String,
    /// Signed amount in the currency's minor unit; never zero.
    pub amount_cents: i64,
    /// ISO 4217 code, three uppercase letters.
    pub currency: String,
    /// Free text, if any.
    pub description: Option<String>,
    /// When the primary committed it, RFC 3339 in UTC with microseconds
    /// (`2026-01-31T09:15:02.123456Z`).
    pub created_at: String,
}

/// A transaction to create: a request body that passed [`NewTransaction::from_json`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTransaction {
    /// Non-empty, at most [`MAX_ACCOUNT_CHARS`] characters.
    pub account: String,
    /// Not zero.
    pub amount_cents: i64,
    /// Three uppercase ASCII letters.
    pub currency: String,
    /// At most [`MAX_DESCRIPTION_CHARS`] characters.
    pub description: Option<String>,
}

/// What is wrong with one part of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The field, query parameter or header at fault (`body` for the body as a whole).
    pub field: String,
    /// What is wrong, for people.
    pub message: String,
}

impl Invalid {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Invalid {
        Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The fields a body may have, in the order they are checked.
const FIELDS: [&str; 4] = ["account", "amount_cents", "currency", "description"];

impl NewTransaction {
    /// Validates a request body: an object with `account`, `amount_cents`, `currency` and,
    /// optionally, `description` (a string or `null`), and nothing else. The first rule broken
    /// is reported, fields in the order above, unknown fields last.
    pub fn from_json(body: &Value) -> Result<NewTransaction, Invalid> {
        let Some(object) = body.as_object() else {
            return Err(Invalid::new("body", "must be a JSON object"));
        };
        let account = match object.get("account") {
            Some(Value::String(s)) if s.trim().is_empty() => {
                return Err(Invalid::new("account", "must not be empty"));
            }
            Some(Value::String(s)) if s.chars().count() > MAX_ACCOUNT_CHARS => {
                return Err(Invalid::new(
                    "account",
                    format!("must be at most {MAX_ACCOUNT_CHARS} characters"),
                ));
            }
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(Invalid::new("account", "must be a string")),
            None => return Err(Invalid::new("account", "is required")),
        };
        let amount_cents = match object.get("amount_cents") {
            // `as_i64` is `None` for fractions and for integers beyond i64.
            Some(Value::Number(n)) => match n.as_i64() {
                Some(0) => return Err(Invalid::new("amount_cents", "must not be zero")),
                Some(cents) => cents,
                None => {
                    return Err(Invalid::new(
                        "amount_cents",
                        "must be a whole number of cents that fits in 64 bits",
                    ));
                }
            },
            Some(_) => return Err(Invalid::new("amount_cents", "must be a number")),
            None => return Err(Invalid::new("amount_cents", "is required")),
        };
        let currency = match object.get("currency") {
            Some(Value::String(s)) if s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase()) => {
                s.clone()
            }
            Some(_) => {
                return Err(Invalid::new(
                    "currency",
                    "must be an ISO 4217 code: three uppercase letters such as EUR",
                ));
            }
            None => return Err(Invalid::new("currency", "is required")),
        };
        let description = match object.get("description") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.chars().count() > MAX_DESCRIPTION_CHARS => {
                return Err(Invalid::new(
                    "description",
                    format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
                ));
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(Invalid::new("description", "must be a string or null")),
        };
        if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(Invalid::new(
                unknown.as_str(),
                format!(
                    "is not a field of a transaction (fields: {})",
                    FIELDS.join(", ")
                ),
            ));
        }
        Ok(NewTransaction {
            account,
            amount_cents,
            currency,
            description,
        })
    }
}

/// A slice of the list, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Rows at most: 1 to [`MAX_LIMIT`].
    pub limit: i64,
    /// Rows skipped: 0 or more.
    pub offset: i64,
}

impl Default for Page {
    fn default() -> Self {
        Page {
            limit: DEFAULT_LIMIT,
            offset: 0,
        }
    }
}

impl Page {
    /// From the decoded query parameters: `limit` (default [`DEFAULT_LIMIT`], at most
    /// [`MAX_LIMIT`]) and `offset` (default 0), each at most once, and nothing else.
    pub fn from_query(pairs: &[(String, String)]) -> Result<Page, Invalid> {
        let mut page = Page::default();
        let mut seen = Vec::new();
        for (name, value) in pairs {
            if seen.contains(&name) {
                return Err(Invalid::new(name.as_str(), "is given more than once"));
            }
            seen.push(name);
            match name.as_str() {
                "limit" => {
                    page.limit = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            Invalid::new(
                                "limit",
                                format!("must be a whole number from 1 to {MAX_LIMIT}"),
                            )
                        })?;
                }
                "offset" => {
                    page.offset = value.parse().ok().filter(|n| *n >= 0).ok_or_else(|| {
                        Invalid::new("offset", "must be a whole number, 0 or more")
                    })?;
                }
                _ => {
                    return Err(Invalid::new(
                        name.as_str(),
                        "is not a parameter of the list (parameters: limit, offset)",
                    ));
                }
            }
        }
        Ok(page)
    }
}

/// The path segment of `/transactions/{id}` as an id.
pub fn parse_id(segment: &str) -> Result<i64, Invalid> {
    segment
        .parse()
        .map_err(|_| Invalid::new("id", "must be a whole number"))
}

/// The header that carries a write's [`WalToken`] to the client and back.
pub const WAL_TOKEN_HEADER: &str = "x-wal-token";

/// The intent of a read given the request's `x-wal-token` header values: none gives
/// [`QueryIntent::Read`]; otherwise a read after the newest of them (read-your-writes).
pub fn read_intent<'a>(tokens: impl IntoIterator<Item = &'a [u8]>) -> Result<QueryIntent, Invalid> {
    let mut newest: Option<WalToken> = None;
    for raw in tokens {
        let token = std::str::from_utf8(raw)
            .ok()
            .and_then(|text| text.trim().parse::<WalToken>().ok())
            .ok_or_else(|| {
                Invalid::new(
                    WAL_TOKEN_HEADER,
                    "must be a WAL position as a write returned it, such as 0/3000148",
                )
            })?;
        newest = newest.max(Some(token));
    }
    Ok(newest.map_or(QueryIntent::Read, QueryIntent::ReadAfter))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn field_of(body: Value) -> String {
        NewTransaction::from_json(&body).unwrap_err().field
    }

    #[test]
    fn a_valid_body_becomes_a_new_transaction() {
        let new = NewTransaction::from_json(&json!({
            "account": "acc-1", "amount_cents": -1250, "currency": "EUR", "description": "rent"
        }))
        .unwrap();
        assert_eq!(
            new,
            NewTransaction {
                account: "acc-1".into(),
                amount_cents: -1250,
                currency: "EUR".into(),
                description: Some("rent".into()),
            }
        );
        let bare =
            json!({"account": "a", "amount_cents": 1, "currency": "USD", "description": null});
        assert_eq!(NewTransaction::from_json(&bare).unwrap().description, None);
    }

    #[test]
    fn each_broken_rule_names_its_field() {
        let cases = [
            (json!([1]), "body"),
            (json!({"amount_cents": 1, "currency": "EUR"}), "account"),
            (
                json!({"account": " ", "amount_cents": 1, "currency": "EUR"}),
                "account",
            ),
            (
                json!({"account": 7, "amount_cents": 1, "currency": "EUR"}),
                "account",
            ),
            (
                json!({"account": "a".repeat(MAX_ACCOUNT_CHARS + 1), "amount_cents": 1, "currency": "EUR"}),
                "account",
            ),
            (json!({"account": "a", "currency": "EUR"}), "amount_cents"),
            (
                json!({"account": "a", "amount_cents": 0, "currency": "EUR"}),
                "amount_cents",
            ),
            (
                json!({"account": "a", "amount_cents": 12.5, "currency": "EUR"}),
                "amount_cents",
            ),
            (
                json!({"account": "a", "amount_cents": "12", "currency": "EUR"}),
                "amount_cents",
            ),
            (
                json!({"account": "a", "amount_cents": u64::MAX, "currency": "EUR"}),
                "amount_cents",
            ),
            (json!({"account": "a", "amount_cents": 1}), "currency"),
            (
                json!({"account": "a", "amount_cents": 1, "currency": "eur"}),
                "currency",
            ),
            (
                json!({"account": "a", "amount_cents": 1, "currency": "EURO"}),
                "currency",
            ),
            (
                json!({"account": "a", "amount_cents": 1, "currency": "ÉUR"}),
                "currency",
            ),
            (
                json!({"account": "a", "amount_cents": 1, "currency": "EUR", "description": 3}),
                "description",
            ),
            (
                json!({"account": "a", "amount_cents": 1, "currency": "EUR",
                       "description": "x".repeat(MAX_DESCRIPTION_CHARS + 1)}),
                "description",
            ),
            (
                json!({"account": "a", "amount_cents": 1, "currency": "EUR", "amount": 1}),
                "amount",
            ),
        ];
        for (body, field) in cases {
            assert_eq!(field_of(body.clone()), field, "{body}");
        }
    }

    fn pairs(query: &[(&str, &str)]) -> Vec<(String, String)> {
        query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_page_defaults_and_bounds_its_parameters() {
        assert_eq!(Page::from_query(&[]).unwrap(), Page::default());
        assert_eq!(
            Page::from_query(&pairs(&[("offset", "10"), ("limit", "500")])).unwrap(),
            Page {
                limit: 500,
                offset: 10
            }
        );
        for (query, field) in [
            (&[("limit", "0")][..], "limit"),
            (&[("limit", "501")], "limit"),
            (&[("limit", "ten")], "limit"),
            (&[("limit", "")], "limit"),
            (&[("offset", "-1")], "offset"),
            (&[("offset", "1e3")], "offset"),
            (&[("limit", "1"), ("limit", "2")], "limit"),
            (&[("page", "2")], "page"),
        ] {
            assert_eq!(
                Page::from_query(&pairs(query)).unwrap_err().field,
                field,
                "{query:?}"
            );
        }
    }

    #[test]
    fn ids_are_whole_numbers() {
        assert_eq!(parse_id("42"), Ok(42));
        assert_eq!(parse_id("4.2").unwrap_err().field, "id");
        assert_eq!(parse_id("abc").unwrap_err().field, "id");
    }

    #[test]
    fn wal_tokens_choose_the_read_intent() {
        assert_eq!(read_intent([]), Ok(QueryIntent::Read));
        let older: WalToken = "0/3000148".parse().unwrap();
        let newer: WalToken = "1/0".parse().unwrap();
        assert_eq!(
            read_intent([&b"0/3000148"[..]]),
            Ok(QueryIntent::ReadAfter(older))
        );
        assert_eq!(
            read_intent([&b"1/0"[..], b" 0/3000148 "]),
            Ok(QueryIntent::ReadAfter(newer)),
            "the newest of several"
        );
        assert_eq!(
            read_intent([&b"0/3000148"[..], b"yesterday"])
                .unwrap_err()
                .field,
            WAL_TOKEN_HEADER
        );
        assert!(read_intent([&b"\xff"[..]]).is_err());
    }
}
