//! The bearer token that operator commands need.

use axum::http::{HeaderMap, StatusCode, header};

use crate::error::ApiError;

/// The configured token, if any. `Debug` never shows it.
#[derive(Clone, Default)]
pub struct AdminAuth {
    token: Option<String>,
    protect_reads: bool,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("protect_reads", &self.protect_reads)
            .finish()
    }
}

impl AdminAuth {
    /// Commands need `token`; `None` refuses every command.
    pub fn new(token: Option<String>) -> AdminAuth {
        AdminAuth {
            token: token.filter(|t| !t.is_empty()),
            protect_reads: false,
        }
    }

    /// Reads (metrics, status, alerts, history, ...) need the token too.
    pub fn protect_reads(mut self, protect: bool) -> AdminAuth {
        self.protect_reads = protect;
        self
    }

    /// Whether a read may go ahead: always when reads are open, else as [`AdminAuth::check`].
    pub fn check_read(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.protect_reads {
            self.check(headers)
        } else {
            Ok(())
        }
    }

    /// Whether `headers` carry the token.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(token) = &self.token else {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "no_token_configured",
                "operator commands are disabled: set admin_token in the configuration file or \
                 MERIDIAN_ADMIN_TOKEN, then send it as Authorization: Bearer <token>",
            ));
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim);
        match given {
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this request needs Authorization: Bearer <admin token>",
            )),
            Some(given) if equal_in_constant_time(given.as_bytes(), token.as_bytes()) => Ok(()),
            Some(_) => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the admin token is wrong",
            )),
        }
    }
}

/// Compares without returning early at the first difference, so that the time taken does not
/// tell how much of a guess was right. Written here: a dozen lines do not need a crate.
fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    let mut difference = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        difference |= usize::from(x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0));
    }
    difference == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_equality_is_equality() {
        assert!(equal_in_constant_time(b"secret", b"secret"));
        assert!(!equal_in_constant_time(b"secret", b"secreT"));
        assert!(!equal_in_constant_time(b"secret", b"secret2"));
        assert!(!equal_in_constant_time(b"", b"x"));
        assert!(equal_in_constant_time(b"", b""));
    }

    #[test]
    fn debug_hides_the_token() {
        let debug = format!("{:?}", AdminAuth::new(Some("hunter2".into())));
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
