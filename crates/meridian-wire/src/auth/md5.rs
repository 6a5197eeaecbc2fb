//! PostgreSQL's md5 password method (PostgreSQL docs, "53.2 Message Flow": AuthenticationMD5Password
//! carries a 4-byte salt; the client answers in a PasswordMessage).
//!
//! The stored form is `"md5" + hex(md5(password || user))`; the client's answer to a salt is
//! `"md5" + hex(md5(hex(md5(password || user)) || salt))`. The stored hash is therefore
//! password-equivalent: whoever holds it can answer any salt without knowing the password, which
//! is how the proxy logs in to a server with only `pg_authid`'s md5 hash
//! ([`md5_response_from_hash`]). That is also why [`Md5Server`] redacts it in `Debug`.
//!
//! Invariants: responses are compared in constant time; malformed input is an error, never a
//! panic; no error carries the hash or the response.

use std::fmt;

use ::md5::{Digest, Md5};

use super::error::AuthError;
use super::secret::constant_time_eq;

const PREFIX: &str = "md5";

/// `"md5"` + hex(md5(password || user)): the form PostgreSQL stores in `pg_authid.rolpassword`.
pub fn md5_hash(user: &str, password: &str) -> String {
    let mut hasher = Md5::new();
    hasher.update(password.as_bytes());
    hasher.update(user.as_bytes());
    prefixed_hex(&hasher.finalize())
}

/// The client's response to AuthenticationMD5Password with `salt`, from the plaintext password.
pub fn md5_response(user: &str, password: &str, salt: [u8; 4]) -> String {
    md5_response_from_hash(&md5_hash(user, password), salt)
}

/// The client's response to AuthenticationMD5Password with `salt`, from the stored
/// `md5…` hash: `"md5"` + hex(md5(hex digits of the hash || salt)).
///
/// When `md5_hash` is not an md5 hash (see [`is_md5_hash`]) the result is still a well-formed
/// response, but one no server will accept.
pub fn md5_response_from_hash(md5_hash: &str, salt: [u8; 4]) -> String {
    // PostgreSQL hashes the 32 hex digits without the "md5" prefix (`pg_md5_encrypt` on
    // `shadow_pass + strlen("md5")`).
    let hex_digits = md5_hash.strip_prefix(PREFIX).unwrap_or(md5_hash);
    let mut hasher = Md5::new();
    hasher.update(hex_digits.as_bytes());
    hasher.update(salt);
    prefixed_hex(&hasher.finalize())
}

/// Whether `text` is `"md5"` followed by 32 lowercase hex digits, the only form PostgreSQL
/// writes (and the only one it accepts as a response, since it compares strings).
pub fn is_md5_hash(text: &str) -> bool {
    text.strip_prefix(PREFIX).is_some_and(|digits| {
        digits.len() == 32
            && digits
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// 4 random bytes for AuthenticationMD5Password, from rand's thread CSPRNG: a predictable salt
/// would let a captured response be replayed.
pub fn random_md5_salt() -> [u8; 4] {
    rand::random()
}

/// Server side of the md5 method: checks a client's PasswordMessage against the stored hash.
pub struct Md5Server {
    stored_md5_hash: String,
    salt: [u8; 4],
}

impl Md5Server {
    /// `stored_md5_hash`: the user's `md5…` hash (derive it with [`md5_hash`] when holding the
    /// plaintext password). `salt`: [`random_md5_salt`] in production, fixed in tests.
    pub fn new(stored_md5_hash: String, salt: [u8; 4]) -> Md5Server {
        Md5Server {
            stored_md5_hash,
            salt,
        }
    }

    /// The salt to send in AuthenticationMD5Password.
    pub fn salt(&self) -> [u8; 4] {
        self.salt
    }

    /// Checks the PasswordMessage payload. PasswordMessage carries a C string; the trailing NUL
    /// is accepted whether or not the caller stripped it.
    ///
    /// # Errors
    /// [`AuthError::Malformed`] (`08P01`) when the response is not `md5` + 32 lowercase hex
    /// digits; [`AuthError::InvalidVerifier`] (`28000`) when the stored hash is not an md5 hash
    /// (e.g. a SCRAM verifier, which cannot answer md5); [`AuthError::WrongPassword`] (`28P01`)
    /// when the response does not match.
    pub fn verify(&self, response: &[u8]) -> Result<(), AuthError> {
        const MESSAGE: &str = "md5 password response";
        let response = response.strip_suffix(b"\0").unwrap_or(response);
        let response = std::str::from_utf8(response)
            .ok()
            .filter(|text| is_md5_hash(text))
            .ok_or(AuthError::malformed(
                MESSAGE,
                "expected md5 followed by 32 lowercase hex digits",
            ))?;
        if !is_md5_hash(&self.stored_md5_hash) {
            return Err(AuthError::InvalidVerifier {
                reason: "stored password is not an md5 hash",
            });
        }
        let expected = md5_response_from_hash(&self.stored_md5_hash, self.salt);
        if !constant_time_eq(response.as_bytes(), expected.as_bytes()) {
            return Err(AuthError::WrongPassword);
        }
        Ok(())
    }
}

impl fmt::Debug for Md5Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The salt is public (it goes to the client); the hash is password-equivalent.
        f.debug_struct("Md5Server")
            .field("salt", &self.salt)
            .finish_non_exhaustive()
    }
}

fn prefixed_hex(digest: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(PREFIX.len() + 2 * digest.len());
    text.push_str(PREFIX);
    for byte in digest {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Computed with Python's hashlib:
    // 'md5' + md5(b'secretpostgres').hexdigest()
    const SECRET_POSTGRES: &str = "md553f48b7c4b76a86ce72276c5755f217d";
    // 'md5' + md5(md5(b'secretpostgres').hexdigest().encode() + bytes([1, 2, 3, 4])).hexdigest()
    const SALT: [u8; 4] = [1, 2, 3, 4];
    const RESPONSE: &str = "md5bb41a296aab6baccb36ff243a562abff";

    #[test]
    fn known_hash_and_response() {
        assert_eq!(md5_hash("postgres", "secret"), SECRET_POSTGRES);
        assert_eq!(md5_response("postgres", "secret", SALT), RESPONSE);
        assert_eq!(md5_response_from_hash(SECRET_POSTGRES, SALT), RESPONSE);
    }

    #[test]
    fn recognises_md5_hashes() {
        assert!(is_md5_hash(SECRET_POSTGRES));
        for text in [
            "",
            "md5",
            "53f48b7c4b76a86ce72276c5755f217d",
            "md553F48B7C4B76A86CE72276C5755F217D",
            "md553f48b7c4b76a86ce72276c5755f217",
            "md553f48b7c4b76a86ce72276c5755f217dd",
            "md553f48b7c4b76a86ce72276c5755f217g",
            "MD553f48b7c4b76a86ce72276c5755f217d",
            "SCRAM-SHA-256$4096:AAAA$AAAA:AAAA",
        ] {
            assert!(!is_md5_hash(text), "{text}");
        }
    }

    #[test]
    fn server_accepts_right_response() {
        let server = Md5Server::new(md5_hash("postgres", "secret"), SALT);
        assert_eq!(server.salt(), SALT);
        server.verify(RESPONSE.as_bytes()).unwrap();
        server.verify(format!("{RESPONSE}\0").as_bytes()).unwrap();
    }

    #[test]
    fn server_rejects_wrong_response() {
        let server = Md5Server::new(SECRET_POSTGRES.to_owned(), SALT);
        for response in [
            md5_response("postgres", "wrong", SALT),
            md5_response("other", "secret", SALT),
            md5_response("postgres", "secret", [4, 3, 2, 1]),
            // The stored hash itself is not a response.
            SECRET_POSTGRES.to_owned(),
        ] {
            let error = server.verify(response.as_bytes()).unwrap_err();
            assert_eq!(error, AuthError::WrongPassword);
            assert_eq!(error.sqlstate(), "28P01");
            assert!(error.is_wrong_password());
        }
    }

    #[test]
    fn server_rejects_malformed_response() {
        let server = Md5Server::new(SECRET_POSTGRES.to_owned(), SALT);
        let upper = RESPONSE.to_uppercase();
        let two_nuls = format!("{RESPONSE}\0\0");
        let too_long = format!("{RESPONSE}0");
        let leading_nul = format!("\0{RESPONSE}");
        let cases: &[&[u8]] = &[
            b"",
            b"\0",
            b"secret",
            b"md5",
            &RESPONSE.as_bytes()[..34],
            two_nuls.as_bytes(),
            too_long.as_bytes(),
            leading_nul.as_bytes(),
            upper.as_bytes(),
            b"md5\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        ];
        for response in cases {
            let error = server.verify(response).unwrap_err();
            assert!(
                matches!(error, AuthError::Malformed { .. }),
                "{:?}: {error:?}",
                String::from_utf8_lossy(response)
            );
            assert_eq!(error.sqlstate(), "08P01");
        }
    }

    #[test]
    fn server_with_unusable_stored_hash() {
        let server = Md5Server::new("SCRAM-SHA-256$4096:AAAA$AAAA:AAAA".to_owned(), SALT);
        let error = server.verify(RESPONSE.as_bytes()).unwrap_err();
        assert!(matches!(error, AuthError::InvalidVerifier { .. }));
        assert_eq!(error.sqlstate(), "28000");
    }

    #[test]
    fn random_salts_differ() {
        // 2^-32 chance of a spurious failure per pair; three draws make it negligible.
        let salts = [random_md5_salt(), random_md5_salt(), random_md5_salt()];
        assert!(salts[0] != salts[1] || salts[1] != salts[2]);
    }

    #[test]
    fn debug_output_is_redacted() {
        let server = Md5Server::new(SECRET_POSTGRES.to_owned(), SALT);
        let output = format!("{server:?}");
        assert_eq!(output, "Md5Server { salt: [1, 2, 3, 4], .. }");
        assert!(!output.contains(&SECRET_POSTGRES[3..]));
        let error = server
            .verify(b"md5ffffffffffffffffffffffffffffffff")
            .unwrap_err();
        assert!(!error.to_string().contains(&SECRET_POSTGRES[3..]));
    }

    proptest! {
        #[test]
        fn verify_never_panics(response in proptest::collection::vec(any::<u8>(), 0..64)) {
            let server = Md5Server::new(SECRET_POSTGRES.to_owned(), SALT);
            let _ = server.verify(&response);
        }

        #[test]
        fn verify_near_misses_never_panic(tail in "[0-9a-fA-F\\x00]{0,40}") {
            let server = Md5Server::new(SECRET_POSTGRES.to_owned(), SALT);
            let _ = server.verify(format!("md5{tail}").as_bytes());
        }

        #[test]
        fn response_is_always_well_formed(user in "\\PC{0,16}", password in "\\PC{0,16}", salt in any::<[u8; 4]>()) {
            prop_assert!(is_md5_hash(&md5_hash(&user, &password)));
            let response = md5_response(&user, &password, salt);
            prop_assert!(is_md5_hash(&response));
            prop_assert!(Md5Server::new(md5_hash(&user, &password), salt).verify(response.as_bytes()).is_ok());
        }
    }
}
