//! Secrets and the classification of password text.
//!
//! A [`Secret`] is a string that must never be printed: its `Debug`, `Display` and `Serialize`
//! say `<redacted>`, and the only way to read it is [`Secret::expose`], so every place that uses
//! the value is visible in the code. [`PasswordSpec`] says what a user's `password` text holds; the
//! proxy parses SCRAM verifiers fully, this module only recognises their shape.

use std::fmt;

/// A string that is never printed: passwords, SCRAM verifiers, md5 hashes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret text, for the code that has to use it (authentication, server login).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Serializes as `"<redacted>"`: the configuration export must not carry the value.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

/// What a secret prints and serializes as.
pub(crate) const REDACTED: &str = "<redacted>";

/// What a user's `password` text holds, recognised by its shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSpec {
    /// The password itself: can answer SCRAM-SHA-256 and md5, and log in to the servers.
    Plain(Secret),
    /// A SCRAM-SHA-256 verifier (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`), as
    /// stored in `pg_authid.rolpassword`: can check a SCRAM-SHA-256 login only.
    ScramVerifier(Secret),
    /// An md5 hash (`"md5"` followed by 32 lower-case hex digits of md5(password + user)): can
    /// check an md5 login only.
    Md5Hash(Secret),
}

/// Serializes as `"<redacted>"` whatever it holds: an md5 hash logs in as well as the password
/// does, and a SCRAM verifier lets its reader pose as the server and guess the password offline
/// (see "Password Authentication" in the PostgreSQL docs).
impl serde::Serialize for PasswordSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl PasswordSpec {
    /// Classifies `text`: a `SCRAM-SHA-256$` prefix is a verifier, `md5` plus exactly 32
    /// lower-case hex digits is an md5 hash, anything else is a plaintext password. These are the
    /// rules PostgreSQL itself applies to `CREATE ROLE ... PASSWORD` (see "Password
    /// Authentication" in the PostgreSQL docs).
    pub fn classify(text: Secret) -> PasswordSpec {
        let value = text.expose();
        if value.starts_with("SCRAM-SHA-256$") {
            PasswordSpec::ScramVerifier(text)
        } else if is_md5_hash(value) {
            PasswordSpec::Md5Hash(text)
        } else {
            PasswordSpec::Plain(text)
        }
    }

    /// The plaintext password, when that is what this holds.
    pub fn plaintext(&self) -> Option<&Secret> {
        match self {
            PasswordSpec::Plain(secret) => Some(secret),
            PasswordSpec::ScramVerifier(_) | PasswordSpec::Md5Hash(_) => None,
        }
    }
}

fn is_md5_hash(value: &str) -> bool {
    value.strip_prefix("md5").is_some_and(|hex| {
        hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_never_printed() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(format!("{secret}"), "<redacted>");
        assert_eq!(secret.expose(), "hunter2");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"<redacted>\"");
        let spec = PasswordSpec::classify(secret);
        assert!(!format!("{spec:?}").contains("hunter2"));
        assert_eq!(serde_json::to_string(&spec).unwrap(), "\"<redacted>\"");
        let verifier = PasswordSpec::classify(Secret::new("SCRAM-SHA-256$4096:c2FsdA==$a:b"));
        assert_eq!(serde_json::to_string(&verifier).unwrap(), "\"<redacted>\"");
    }

    #[test]
    fn classify_by_shape() {
        let scram = "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy";
        assert!(matches!(
            PasswordSpec::classify(Secret::new(scram)),
            PasswordSpec::ScramVerifier(_)
        ));
        let md5 = format!("md5{}", "0123456789abcdef".repeat(2));
        assert!(matches!(
            PasswordSpec::classify(Secret::new(md5.clone())),
            PasswordSpec::Md5Hash(_)
        ));
        for plain in [
            "hunter2",
            "md5",
            &md5.to_uppercase(),
            &format!("md5{}", "0123456789ABCDEF".repeat(2)),
            &format!("{md5}0"),
            "scram-sha-256$lowercase",
            "",
        ] {
            let spec = PasswordSpec::classify(Secret::new(plain));
            assert_eq!(spec.plaintext().map(Secret::expose), Some(plain), "{plain}");
        }
    }
}
