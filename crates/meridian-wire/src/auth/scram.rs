//! SCRAM-SHA-256 (RFC 5802 with the SHA-256 profile of RFC 7677) as PostgreSQL speaks it, from
//! both sides, as state machines that take message bytes and return message bytes.
//!
//! The messages are the SASL payloads: the data inside SASLInitialResponse and SASLResponse
//! (client to server) and inside AuthenticationSASLContinue and AuthenticationSASLFinal (server
//! to client), never whole protocol frames (PostgreSQL docs, "53.3 SASL Authentication").
//!
//! What PostgreSQL does differently from a generic RFC 5802 peer, and so do we:
//! - No channel binding. We advertise only `SCRAM-SHA-256`, never `SCRAM-SHA-256-PLUS`, so a
//!   client's GS2 header is `n,,` or `y,,` ("I could bind, but I think you cannot"), and `p=` is
//!   a protocol violation. Because no `-PLUS` is offered, `y` is not a sign of a downgrade.
//! - The user name in `n=` is ignored: the user is the one from the startup packet. Our client
//!   sends `n=` with an empty name, as libpq does.
//! - The password is normalised with SASLprep (RFC 4013) when that succeeds and used as raw bytes
//!   when it does not, so that any password PostgreSQL accepts can be used.
//!
//! Invariants: no message from the peer makes these machines panic; a machine that returned an
//! error stays failed and rejects every later message; the password, the salted password and the
//! keys never appear in an error or in `Debug` output; proofs and signatures are compared in
//! constant time (module `secret`). The nonces are injected, so a test replays a recorded
//! exchange byte for byte; production code passes [`random_nonce`].

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::error::AuthError;
use super::secret::constant_time_eq;

/// The SASL mechanism name, as listed in AuthenticationSASL and chosen in SASLInitialResponse.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// The iteration count for new verifiers: PostgreSQL's default (`scram_iterations`), and the
/// minimum RFC 7677 section 4 asks for.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// The prefix of a SCRAM verifier in `pg_authid.rolpassword`.
const VERIFIER_PREFIX: &str = "SCRAM-SHA-256$";

/// Length of SHA-256 output, hence of every key, proof and signature.
const KEY_LENGTH: usize = 32;

/// Random bytes in a nonce: PostgreSQL's `SCRAM_RAW_NONCE_LEN`.
const NONCE_RANDOM_BYTES: usize = 18;

/// Bytes of a new verifier's salt: PostgreSQL's `SCRAM_DEFAULT_SALT_LEN`.
const SALT_LENGTH: usize = 16;

type Key = [u8; KEY_LENGTH];

/// The stored form of a SCRAM password (RFC 5802 section 3): what PostgreSQL keeps in
/// `pg_authid.rolpassword` as
/// `SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>`.
///
/// It does not hold the password, but StoredKey and ServerKey let whoever holds them impersonate
/// the server, and let an attacker test password guesses offline, so `Debug` shows the iteration
/// count only.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: Key,
    server_key: Key,
}

impl ScramVerifier {
    /// Parses the `pg_authid.rolpassword` form.
    ///
    /// # Errors
    /// [`AuthError::InvalidVerifier`] when the text is not a SCRAM-SHA-256 verifier: wrong
    /// prefix, an iteration count that is not a positive integer, an empty salt, keys that are not
    /// base64 of 32 bytes.
    pub fn parse(text: &str) -> Result<ScramVerifier, AuthError> {
        let invalid = |reason| AuthError::InvalidVerifier { reason };
        let rest = text
            .strip_prefix(VERIFIER_PREFIX)
            .ok_or(invalid("does not start with SCRAM-SHA-256$"))?;
        let (parameters, keys) = rest
            .split_once('$')
            .ok_or(invalid("missing '$' before the keys"))?;
        let (iterations, salt) = parameters
            .split_once(':')
            .ok_or(invalid("missing ':' between iteration count and salt"))?;
        let (stored_key, server_key) = keys
            .split_once(':')
            .ok_or(invalid("missing ':' between StoredKey and ServerKey"))?;
        let iterations = parse_iterations(iterations)
            .ok_or(invalid("iteration count is not a positive integer"))?;
        let salt = BASE64
            .decode(salt)
            .ok()
            .filter(|salt| !salt.is_empty())
            .ok_or(invalid("salt is not non-empty base64"))?;
        let stored_key =
            decode_key(stored_key).ok_or(invalid("StoredKey is not base64 of 32 bytes"))?;
        let server_key =
            decode_key(server_key).ok_or(invalid("ServerKey is not base64 of 32 bytes"))?;
        Ok(ScramVerifier {
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }

    /// Whether `text` is a SCRAM-SHA-256 verifier (rather than an md5 hash or a plaintext
    /// password).
    pub fn is_verifier(text: &str) -> bool {
        text.starts_with(VERIFIER_PREFIX) && ScramVerifier::parse(text).is_ok()
    }

    /// Derives the verifier for a plaintext password, as PostgreSQL does for `ALTER ROLE …
    /// PASSWORD` with `password_encryption = 'scram-sha-256'`.
    ///
    /// SaltedPassword := Hi(Normalize(password), salt, i), ClientKey := HMAC(SaltedPassword,
    /// "Client Key"), StoredKey := H(ClientKey), ServerKey := HMAC(SaltedPassword, "Server Key")
    /// (RFC 5802 section 3; Hi is PBKDF2 with HMAC-SHA-256, RFC 7677 section 3).
    ///
    /// # Panics
    /// If `iterations` is 0, which no verifier may have. Costs `iterations` HMAC computations;
    /// an async caller should run it off the reactor.
    pub fn derive(password: &str, salt: &[u8], iterations: u32) -> ScramVerifier {
        assert!(iterations >= 1, "SCRAM iteration count must be at least 1");
        let keys = ClientKeys::derive(password, salt, iterations);
        ScramVerifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: keys.stored_key,
            server_key: keys.server_key,
        }
    }

    /// The iteration count of Hi().
    pub fn iterations(&self) -> u32 {
        self.iterations
    }
}

impl fmt::Display for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{VERIFIER_PREFIX}{}:{}${}:{}",
            self.iterations,
            BASE64.encode(&self.salt),
            BASE64.encode(self.stored_key),
            BASE64.encode(self.server_key),
        )
    }
}

impl FromStr for ScramVerifier {
    type Err = AuthError;

    fn from_str(text: &str) -> Result<ScramVerifier, AuthError> {
        ScramVerifier::parse(text)
    }
}

impl fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// Server side of the exchange: authenticates a client against a [`ScramVerifier`].
///
/// Drive it with the client-first-message ([`ScramServer::client_first`]) and then the
/// client-final-message ([`ScramServer::client_final`]); each returns the bytes to send back
/// (in AuthenticationSASLContinue, then AuthenticationSASLFinal).
pub struct ScramServer {
    verifier: ScramVerifier,
    /// False for the mock exchange of an unknown user: the proof is checked all the same, so the
    /// work and the shape of the reply do not depend on it, and then rejected.
    user_exists: bool,
    server_nonce: String,
    state: ServerState,
}

enum ServerState {
    AwaitingClientFirst,
    AwaitingClientFinal {
        /// The GS2 header the client sent, which `c=` must repeat (RFC 5802 section 5.1).
        gs2_header: &'static str,
        /// Client nonce followed by server nonce.
        nonce: String,
        client_first_bare: String,
        server_first: String,
    },
    Finished,
    Failed,
}

impl ServerState {
    fn name(&self) -> &'static str {
        match self {
            ServerState::AwaitingClientFirst => "awaiting client-first-message",
            ServerState::AwaitingClientFinal { .. } => "awaiting client-final-message",
            ServerState::Finished => "finished",
            ServerState::Failed => "failed",
        }
    }
}

impl ScramServer {
    /// A server exchange for a user whose verifier is known.
    ///
    /// `server_nonce` is the random part the server appends to the client's nonce.
    ///
    /// # Panics
    /// If `server_nonce` is empty or not printable ASCII without `,` (RFC 5802 section 7,
    /// `printable`); [`random_nonce`] always returns a valid one.
    pub fn new(verifier: ScramVerifier, server_nonce: String) -> ScramServer {
        assert!(
            is_valid_nonce(&server_nonce),
            "SCRAM server nonce must be non-empty printable ASCII without ','"
        );
        ScramServer {
            verifier,
            user_exists: true,
            server_nonce,
            state: ServerState::AwaitingClientFirst,
        }
    }

    /// A mock exchange for a user that does not exist, so that neither the shape nor the timing
    /// of the replies reveals which users exist: the server-first-message carries a random salt
    /// and [`DEFAULT_ITERATIONS`], and [`ScramServer::client_final`] fails with
    /// [`AuthError::WrongPassword`], exactly as for a wrong password.
    ///
    /// The salt is new each time, so a client that asks twice for the same unknown user sees two
    /// salts, where a real user's salt stays the same. To close that gap, use
    /// [`ScramServer::for_unknown_user_with_salt`] with [`mock_salt`], as PostgreSQL does
    /// (`scram_mock_salt`).
    ///
    /// # Panics
    /// As [`ScramServer::new`], for an invalid `server_nonce`.
    pub fn for_unknown_user(server_nonce: String) -> ScramServer {
        ScramServer::for_unknown_user_with_salt(server_nonce, &random_salt())
    }

    /// A mock exchange for a user that does not exist, as [`ScramServer::for_unknown_user`], with
    /// the salt chosen by the caller, normally [`mock_salt`] so that it is the same on every
    /// attempt for the same user name.
    ///
    /// # Panics
    /// As [`ScramServer::new`], for an invalid `server_nonce`; and if `salt` is empty.
    pub fn for_unknown_user_with_salt(server_nonce: String, salt: &[u8]) -> ScramServer {
        assert!(!salt.is_empty(), "SCRAM salt must not be empty");
        // Random keys: no password can match them (short of breaking SHA-256), and the flag
        // below makes sure of it.
        let verifier = ScramVerifier {
            iterations: DEFAULT_ITERATIONS,
            salt: salt.to_vec(),
            stored_key: rand::random(),
            server_key: rand::random(),
        };
        let mut server = ScramServer::new(verifier, server_nonce);
        server.user_exists = false;
        server
    }

    /// Takes the client-first-message (the data of SASLInitialResponse, whose mechanism the
    /// caller has checked is [`SCRAM_SHA_256`]) and returns the server-first-message.
    ///
    /// # Errors
    /// `08P01` errors: [`AuthError::Malformed`] for anything outside RFC 5802 section 7's
    /// grammar (including text that is not UTF-8), [`AuthError::ChannelBindingNotOffered`] for a
    /// `p=` GS2 header, [`AuthError::AuthorizationIdentityUnsupported`] for `a=`,
    /// [`AuthError::UnsupportedExtension`] for `m=`, [`AuthError::UnexpectedMessage`] when the
    /// exchange is not at its start.
    pub fn client_first(&mut self, message: &[u8]) -> Result<Vec<u8>, AuthError> {
        const MESSAGE: &str = "client-first-message";
        if !matches!(self.state, ServerState::AwaitingClientFirst) {
            return Err(self.unexpected(MESSAGE));
        }
        let result = self.read_client_first(message);
        self.fail_on_error(result)
    }

    fn read_client_first(&mut self, message: &[u8]) -> Result<Vec<u8>, AuthError> {
        const MESSAGE: &str = "client-first-message";
        let text = message_text(message, MESSAGE)?;

        // gs2-header = gs2-cbind-flag "," [ authzid ] "," (RFC 5802 section 7).
        let (gs2_header, after_flag) = if let Some(rest) = text.strip_prefix("n,") {
            ("n,,", rest)
        } else if let Some(rest) = text.strip_prefix("y,") {
            ("y,,", rest)
        } else if text.starts_with("p=") {
            return Err(AuthError::ChannelBindingNotOffered);
        } else {
            return Err(AuthError::malformed(
                MESSAGE,
                "GS2 header does not start with n, y or p=",
            ));
        };
        let client_first_bare = if let Some(bare) = after_flag.strip_prefix(',') {
            bare
        } else if after_flag.starts_with("a=") {
            // PostgreSQL rejects an authorization identity: the user is the startup packet's.
            return Err(AuthError::AuthorizationIdentityUnsupported);
        } else {
            return Err(AuthError::malformed(
                MESSAGE,
                "GS2 header is not terminated",
            ));
        };

        // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
        let mut attributes = client_first_bare.split(',');
        let username = attributes.next().unwrap_or_default();
        if username.starts_with("m=") {
            return Err(AuthError::UnsupportedExtension);
        }
        // The user name is ignored: PostgreSQL authenticates the user of the startup packet
        // (53.3 SASL Authentication), and clients such as libpq send an empty one.
        attribute(
            Some(username),
            'n',
            MESSAGE,
            "missing username attribute n=",
        )?;
        let client_nonce = attribute(
            attributes.next(),
            'r',
            MESSAGE,
            "missing nonce attribute r=",
        )?;
        if !is_valid_nonce(client_nonce) {
            return Err(AuthError::malformed(
                MESSAGE,
                "nonce is not printable ASCII without ','",
            ));
        }
        // Optional extensions may be ignored (RFC 5802 section 5.1); they must still parse.
        for extension in attributes {
            check_extension(extension, MESSAGE)?;
        }

        let nonce = format!("{client_nonce}{}", self.server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&self.verifier.salt),
            self.verifier.iterations
        );
        let reply = server_first.clone().into_bytes();
        self.state = ServerState::AwaitingClientFinal {
            gs2_header,
            nonce,
            client_first_bare: client_first_bare.to_owned(),
            server_first,
        };
        Ok(reply)
    }

    /// Takes the client-final-message (the data of SASLResponse) and, when the proof is right,
    /// returns the server-final-message `v=<ServerSignature>`.
    ///
    /// # Errors
    /// [`AuthError::WrongPassword`] (`28P01`) when the proof does not match the verifier, and
    /// always for the mock exchange of an unknown user. `08P01` errors:
    /// [`AuthError::Malformed`], [`AuthError::ChannelBindingMismatch`] when `c=` is not the GS2
    /// header of the client-first-message, [`AuthError::NonceMismatch`],
    /// [`AuthError::UnexpectedMessage`].
    pub fn client_final(&mut self, message: &[u8]) -> Result<Vec<u8>, AuthError> {
        const MESSAGE: &str = "client-final-message";
        if !matches!(self.state, ServerState::AwaitingClientFinal { .. }) {
            return Err(self.unexpected(MESSAGE));
        }
        let result = self.read_client_final(message);
        if result.is_ok() {
            self.state = ServerState::Finished;
        }
        self.fail_on_error(result)
    }

    fn read_client_final(&self, message: &[u8]) -> Result<Vec<u8>, AuthError> {
        const MESSAGE: &str = "client-final-message";
        let ServerState::AwaitingClientFinal {
            gs2_header,
            nonce,
            client_first_bare,
            server_first,
        } = &self.state
        else {
            return Err(self.unexpected(MESSAGE));
        };
        let text = message_text(message, MESSAGE)?;

        // client-final-message = client-final-message-without-proof "," proof
        // No attribute value may contain ',', so the proof is what follows the last one.
        let (without_proof, proof) = text
            .rsplit_once(',')
            .ok_or(AuthError::malformed(MESSAGE, "missing proof attribute p="))?;
        let proof = attribute(
            Some(proof),
            'p',
            MESSAGE,
            "last attribute is not the proof p=",
        )?;

        // client-final-message-without-proof = channel-binding "," nonce ["," extensions]
        let mut attributes = without_proof.split(',');
        let binding = attribute(
            attributes.next(),
            'c',
            MESSAGE,
            "missing channel binding attribute c=",
        )?;
        let binding = BASE64
            .decode(binding)
            .map_err(|_| AuthError::malformed(MESSAGE, "channel binding c= is not base64"))?;
        // Without channel binding, c= is the base64 of the GS2 header alone: "biws" for "n,,",
        // "eSws" for "y,," (RFC 5802 section 7, cbind-input).
        if binding != gs2_header.as_bytes() {
            return Err(AuthError::ChannelBindingMismatch);
        }
        let final_nonce = attribute(
            attributes.next(),
            'r',
            MESSAGE,
            "missing nonce attribute r=",
        )?;
        if final_nonce != nonce {
            return Err(AuthError::NonceMismatch);
        }
        for extension in attributes {
            check_extension(extension, MESSAGE)?;
        }
        let proof = decode_key(proof).ok_or(AuthError::malformed(
            MESSAGE,
            "proof p= is not base64 of 32 bytes",
        ))?;

        // RFC 5802 section 3: AuthMessage := client-first-message-bare + "," +
        // server-first-message + "," + client-final-message-without-proof. The server recovers
        // ClientKey := ClientProof XOR HMAC(StoredKey, AuthMessage) and checks
        // H(ClientKey) == StoredKey.
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        let client_key = xor(&proof, &client_signature);
        let proof_matches = constant_time_eq(&sha256(&client_key), &self.verifier.stored_key);
        // `&`, not `&&`: the same work whether or not the user exists.
        if !(proof_matches & self.user_exists) {
            return Err(AuthError::WrongPassword);
        }
        let server_signature = hmac(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", BASE64.encode(server_signature)).into_bytes())
    }

    fn unexpected(&self, message: &'static str) -> AuthError {
        AuthError::UnexpectedMessage {
            message,
            state: self.state.name(),
        }
    }

    fn fail_on_error<T>(&mut self, result: Result<T, AuthError>) -> Result<T, AuthError> {
        if result.is_err() {
            self.state = ServerState::Failed;
        }
        result
    }
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Neither the verifier's keys nor whether the user exists.
        f.debug_struct("ScramServer")
            .field("state", &self.state.name())
            .finish_non_exhaustive()
    }
}

/// Client side of the exchange: authenticates to a PostgreSQL server with a plaintext password.
///
/// Send [`ScramClient::client_first`] in SASLInitialResponse with mechanism [`SCRAM_SHA_256`],
/// pass the data of AuthenticationSASLContinue to [`ScramClient::server_first`] and send the
/// result in SASLResponse, then pass the data of AuthenticationSASLFinal to
/// [`ScramClient::server_final`]. Only after that succeeds has the server proved it knows the
/// verifier.
pub struct ScramClient {
    client_nonce: String,
    state: ClientState,
}

enum ClientState {
    AwaitingServerFirst { password: String },
    AwaitingServerFinal { server_signature: Key },
    Finished,
    Failed,
}

impl ClientState {
    fn name(&self) -> &'static str {
        match self {
            ClientState::AwaitingServerFirst { .. } => "awaiting server-first-message",
            ClientState::AwaitingServerFinal { .. } => "awaiting server-final-message",
            ClientState::Finished => "finished",
            ClientState::Failed => "failed",
        }
    }
}

impl ScramClient {
    /// A client exchange for `password`.
    ///
    /// # Panics
    /// If `client_nonce` is empty or not printable ASCII without `,`; [`random_nonce`] always
    /// returns a valid one.
    pub fn new(password: &str, client_nonce: String) -> ScramClient {
        assert!(
            is_valid_nonce(&client_nonce),
            "SCRAM client nonce must be non-empty printable ASCII without ','"
        );
        ScramClient {
            client_nonce,
            state: ClientState::AwaitingServerFirst {
                password: password.to_owned(),
            },
        }
    }

    /// The client-first-message: `n,,n=,r=<nonce>`. No channel binding, no authorization
    /// identity, and an empty user name, which PostgreSQL ignores in favour of the startup
    /// packet's user.
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare()).into_bytes()
    }

    fn client_first_bare(&self) -> String {
        format!("n=,r={}", self.client_nonce)
    }

    /// Takes the server-first-message and returns the client-final-message with the proof.
    ///
    /// Costs the server's iteration count in HMAC computations (Hi()); an async caller should
    /// run it off the reactor. The count is the server's choice: only servers the proxy is
    /// configured to trust are ever asked.
    ///
    /// # Errors
    /// `08P01` errors: [`AuthError::Malformed`] (not UTF-8, missing `r=`/`s=`/`i=`, salt not
    /// base64, iteration count not a positive integer), [`AuthError::UnsupportedExtension`] for
    /// `m=`, [`AuthError::NonceMismatch`] when the nonce does not extend ours,
    /// [`AuthError::UnexpectedMessage`] out of order.
    pub fn server_first(&mut self, message: &[u8]) -> Result<Vec<u8>, AuthError> {
        const MESSAGE: &str = "server-first-message";
        let result = match std::mem::replace(&mut self.state, ClientState::Failed) {
            ClientState::AwaitingServerFirst { password } => {
                self.read_server_first(&password, message)
            }
            other => {
                self.state = other;
                return Err(AuthError::UnexpectedMessage {
                    message: MESSAGE,
                    state: self.state.name(),
                });
            }
        };
        // On error the state stays Failed and the password is dropped with it.
        result.map(|(client_final, server_signature)| {
            self.state = ClientState::AwaitingServerFinal { server_signature };
            client_final
        })
    }

    fn read_server_first(
        &self,
        password: &str,
        message: &[u8],
    ) -> Result<(Vec<u8>, Key), AuthError> {
        const MESSAGE: &str = "server-first-message";
        let server_first = message_text(message, MESSAGE)?;

        // server-first-message = [reserved-mext ","] nonce "," salt "," iteration-count
        //                        ["," extensions]
        let mut attributes = server_first.split(',');
        let nonce = attributes.next().unwrap_or_default();
        if nonce.starts_with("m=") {
            return Err(AuthError::UnsupportedExtension);
        }
        let nonce = attribute(Some(nonce), 'r', MESSAGE, "missing nonce attribute r=")?;
        if !is_valid_nonce(nonce) {
            return Err(AuthError::malformed(
                MESSAGE,
                "nonce is not printable ASCII without ','",
            ));
        }
        // The server must extend our nonce with its own (RFC 5802 section 5.1); a nonce that
        // does not start with ours belongs to another exchange.
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err(AuthError::NonceMismatch);
        }
        let salt = attribute(attributes.next(), 's', MESSAGE, "missing salt attribute s=")?;
        let salt = BASE64
            .decode(salt)
            .ok()
            .filter(|salt| !salt.is_empty())
            .ok_or(AuthError::malformed(
                MESSAGE,
                "salt s= is not non-empty base64",
            ))?;
        let iterations = attribute(
            attributes.next(),
            'i',
            MESSAGE,
            "missing iteration count attribute i=",
        )?;
        let iterations = parse_iterations(iterations).ok_or(AuthError::malformed(
            MESSAGE,
            "iteration count i= is not a positive integer",
        ))?;
        for extension in attributes {
            check_extension(extension, MESSAGE)?;
        }

        let keys = ClientKeys::derive(password, &salt, iterations);
        // "biws" is base64 of the GS2 header "n,," we sent: no channel binding.
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!(
            "{},{server_first},{without_proof}",
            self.client_first_bare()
        );
        // RFC 5802 section 3: ClientProof := ClientKey XOR HMAC(StoredKey, AuthMessage).
        let client_signature = hmac(&keys.stored_key, auth_message.as_bytes());
        let proof = xor(&keys.client_key, &client_signature);
        let server_signature = hmac(&keys.server_key, auth_message.as_bytes());
        let client_final = format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes();
        Ok((client_final, server_signature))
    }

    /// Takes the server-final-message and checks the server's signature.
    ///
    /// # Errors
    /// [`AuthError::ServerSignatureMismatch`] (`08P01`, see there for why not `28P01`) when `v=`
    /// is not the signature a server holding our verifier computes; [`AuthError::ServerError`]
    /// for `e=` (classified by its value); [`AuthError::Malformed`],
    /// [`AuthError::UnexpectedMessage`].
    pub fn server_final(&mut self, message: &[u8]) -> Result<(), AuthError> {
        const MESSAGE: &str = "server-final-message";
        let ClientState::AwaitingServerFinal { server_signature } = &self.state else {
            return Err(AuthError::UnexpectedMessage {
                message: MESSAGE,
                state: self.state.name(),
            });
        };
        let result = read_server_final(message, server_signature);
        self.state = match result {
            Ok(()) => ClientState::Finished,
            Err(_) => ClientState::Failed,
        };
        result
    }
}

fn read_server_final(message: &[u8], expected: &Key) -> Result<(), AuthError> {
    const MESSAGE: &str = "server-final-message";
    let text = message_text(message, MESSAGE)?;
    // server-final-message = (server-error / verifier) ["," extensions]
    let mut attributes = text.split(',');
    let first = attributes.next().unwrap_or_default();
    if let Some(value) = first.strip_prefix("e=") {
        if value.is_empty() {
            return Err(AuthError::malformed(MESSAGE, "empty server-error e="));
        }
        return Err(AuthError::ServerError {
            value: value.to_owned(),
        });
    }
    let signature = attribute(Some(first), 'v', MESSAGE, "missing verifier attribute v=")?;
    for extension in attributes {
        check_extension(extension, MESSAGE)?;
    }
    let signature = decode_key(signature).ok_or(AuthError::malformed(
        MESSAGE,
        "verifier v= is not base64 of 32 bytes",
    ))?;
    if !constant_time_eq(&signature, expected) {
        return Err(AuthError::ServerSignatureMismatch);
    }
    Ok(())
}

impl fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramClient")
            .field("state", &self.state.name())
            .finish_non_exhaustive()
    }
}

/// A nonce as PostgreSQL makes one: 18 random bytes, base64. The alphabet has no `,` and 18
/// bytes need no padding.
pub fn random_nonce() -> String {
    // rand's thread RNG is a CSPRNG seeded from the operating system, as nonces require
    // (RFC 5802 section 9).
    let bytes: [u8; NONCE_RANDOM_BYTES] = rand::random();
    BASE64.encode(bytes)
}

/// A salt for a new verifier: 16 random bytes, as PostgreSQL uses.
pub fn random_salt() -> [u8; SALT_LENGTH] {
    rand::random()
}

/// A salt for the mock exchange of an unknown user that is the same on every attempt for the
/// same name, so that comparing salts across attempts does not tell real users from unknown ones:
/// the first 16 bytes of HMAC-SHA-256(secret, user). `secret` must be random, kept for the
/// process's life (or longer) and never shown; PostgreSQL uses its cluster's mock
/// authentication nonce the same way (`scram_mock_salt`).
pub fn mock_salt(secret: &[u8], user: &str) -> [u8; SALT_LENGTH] {
    let digest = hmac(secret, user.as_bytes());
    let mut salt = [0; SALT_LENGTH];
    salt.copy_from_slice(&digest[..SALT_LENGTH]);
    salt
}

/// The keys a client derives from its password (RFC 5802 section 3).
struct ClientKeys {
    client_key: Key,
    stored_key: Key,
    server_key: Key,
}

impl ClientKeys {
    fn derive(password: &str, salt: &[u8], iterations: u32) -> ClientKeys {
        // Normalize(password) is SASLprep (RFC 4013, RFC 5802 section 2.2). PostgreSQL uses the
        // password as it is when SASLprep fails (prohibited characters, bidi rules), so that
        // such passwords still work; we must derive the same keys.
        let normalized = stringprep::saslprep(password);
        let normalized = match &normalized {
            Ok(prepared) => prepared.as_bytes(),
            Err(_) => password.as_bytes(),
        };
        // Hi(str, salt, i) is PBKDF2 (RFC 2898) with HMAC-SHA-256 and one block of output.
        let salted_password =
            pbkdf2::pbkdf2_hmac_array::<Sha256, KEY_LENGTH>(normalized, salt, iterations);
        let client_key = hmac(&salted_password, b"Client Key");
        ClientKeys {
            client_key,
            stored_key: sha256(&client_key),
            server_key: hmac(&salted_password, b"Server Key"),
        }
    }
}

fn hmac(key: &[u8], message: &[u8]) -> Key {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> Key {
    Sha256::digest(data).into()
}

fn xor(a: &Key, b: &Key) -> Key {
    std::array::from_fn(|i| a[i] ^ b[i])
}

fn decode_key(text: &str) -> Option<Key> {
    BASE64.decode(text).ok()?.try_into().ok()
}

/// An iteration count: decimal digits only (no sign, no spaces), at least 1, fitting in `u32`.
fn parse_iterations(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|&iterations| iterations >= 1)
}

/// RFC 5802 section 7: `printable = %x21-2B / %x2D-7E` ("printable ASCII except ','").
fn is_valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| matches!(b, 0x21..=0x2B | 0x2D..=0x7E))
}

/// A SCRAM message as text. The messages are UTF-8 (RFC 5802 section 7) and PostgreSQL reads
/// them as C strings, so NUL is never part of a valid one.
fn message_text<'a>(message: &'a [u8], name: &'static str) -> Result<&'a str, AuthError> {
    let text = std::str::from_utf8(message).map_err(|_| AuthError::malformed(name, "not UTF-8"))?;
    if text.contains('\0') {
        return Err(AuthError::malformed(name, "contains NUL"));
    }
    Ok(text)
}

/// The value of attribute `key` (`key=value`), or a [`AuthError::Malformed`] with `reason`.
fn attribute<'a>(
    part: Option<&'a str>,
    key: char,
    message: &'static str,
    reason: &'static str,
) -> Result<&'a str, AuthError> {
    part.and_then(|part| part.strip_prefix(key))
        .and_then(|rest| rest.strip_prefix('='))
        .ok_or(AuthError::malformed(message, reason))
}

/// An optional extension: `attr-val = ALPHA "=" value` (RFC 5802 section 7). Its meaning is
/// ignored, but a part that is not even an attribute is malformed.
fn check_extension(part: &str, message: &'static str) -> Result<(), AuthError> {
    let bytes = part.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b'=' {
        Ok(())
    } else {
        Err(AuthError::malformed(
            message,
            "attribute is not of the form x=value",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // RFC 7677 section 3: the SCRAM-SHA-256 exchange for user "user", password "pencil".
    const RFC_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                    p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    // A recorded exchange between ScramClient and a server for password "secret", salt
    // 00 01 … 0f, 4096 iterations, computed once with Python's hashlib/hmac (not with this
    // module) and pinned here, so a regression changes bytes.
    const PINNED_CLIENT_NONCE: &str = "Meridian0client0nonce0AA";
    const PINNED_SERVER_NONCE: &str = "server+nonce/xyz0123456789";
    const PINNED_VERIFIER: &str = "SCRAM-SHA-256$4096:AAECAwQFBgcICQoLDA0ODw==$\
                                   THoPhoTAuqyoQsK4dUHncUzgfD8fdmhsgKZhWVqNP5U=:\
                                   7YiHMMi2OcXGRogub03Ek06JRZ9bkhTOdCzHa5iPLiQ=";
    const PINNED_CLIENT_FIRST: &str = "n,,n=,r=Meridian0client0nonce0AA";
    const PINNED_SERVER_FIRST: &str = "r=Meridian0client0nonce0AAserver+nonce/xyz0123456789,\
                                       s=AAECAwQFBgcICQoLDA0ODw==,i=4096";
    const PINNED_CLIENT_FINAL: &str = "c=biws,r=Meridian0client0nonce0AAserver+nonce/xyz0123456789,\
                                       p=oDdzQHjcU8YqybIwXJwz5II/iGpH7CXdC1CmK+caESw=";
    const PINNED_SERVER_FINAL: &str = "v=UGNNSA8NDbkk7lE/9OWo9ANpsEdtqcryzvj+waFy8lk=";

    // What PostgreSQL 15 stored in pg_authid.rolpassword after
    // `SET password_encryption = 'scram-sha-256'; ALTER ROLE postgres PASSWORD 'secret'`.
    const POSTGRES_VERIFIER: &str = "SCRAM-SHA-256$4096:Mzg+/cAoc/2nzYdF0zTpmQ==$\
                                     40dgSlDNtFr0RQhkrXGu+sn5seJRfG40+wLXhVFtq0w=:\
                                     IsNmv+A0f6Xhg5jYA+n4OAe1rXDz5944SmVHIJ3moWg=";

    const SERVER_NONCE: &str = "fixed-server-nonce";
    const CLIENT_NONCE: &str = "fixed-client-nonce";
    /// Few iterations keep the many tests below fast in debug builds; the RFC and pinned tests
    /// use 4096.
    const TEST_ITERATIONS: u32 = 8;

    fn salt() -> Vec<u8> {
        (0u8..16).collect()
    }

    fn rfc_verifier() -> ScramVerifier {
        ScramVerifier::derive("pencil", &BASE64.decode(RFC_SALT).unwrap(), 4096)
    }

    fn test_verifier() -> ScramVerifier {
        ScramVerifier::derive("secret", &salt(), TEST_ITERATIONS)
    }

    fn server() -> ScramServer {
        ScramServer::new(test_verifier(), SERVER_NONCE.to_owned())
    }

    /// A server that has answered a valid client-first-message with gs2 header "n,,".
    fn server_awaiting_final() -> ScramServer {
        let mut server = server();
        server
            .client_first(format!("n,,n=,r={CLIENT_NONCE}").as_bytes())
            .unwrap();
        server
    }

    fn client(password: &str) -> ScramClient {
        ScramClient::new(password, CLIENT_NONCE.to_owned())
    }

    /// The server-final-message or the server's error, and, when there was a server-final-message,
    /// the client's verdict on it.
    type Outcome = (Result<Vec<u8>, AuthError>, Option<Result<(), AuthError>>);

    /// Runs a whole exchange, returning the outcome of each side.
    fn exchange(password: &str, mut server: ScramServer) -> Outcome {
        let mut client = client(password);
        let server_first = server.client_first(&client.client_first()).unwrap();
        let client_final = client.server_first(&server_first).unwrap();
        let server_final = server.client_final(&client_final);
        let client_result = server_final
            .as_ref()
            .ok()
            .map(|message| client.server_final(message));
        (server_final, client_result)
    }

    #[test]
    fn rfc_7677_exchange_replayed_by_the_server() {
        let mut server = ScramServer::new(rfc_verifier(), RFC_SERVER_NONCE.to_owned());
        let server_first = server.client_first(RFC_CLIENT_FIRST.as_bytes()).unwrap();
        assert_eq!(server_first, RFC_SERVER_FIRST.as_bytes());
        let server_final = server.client_final(RFC_CLIENT_FINAL.as_bytes()).unwrap();
        assert_eq!(server_final, RFC_SERVER_FINAL.as_bytes());
    }

    #[test]
    fn rfc_7677_verifier_matches_independent_computation() {
        assert_eq!(
            rfc_verifier().to_string(),
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
             WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:\
             wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
        );
    }

    #[test]
    fn client_and_server_agree() {
        let (server_final, client_result) = exchange("secret", server());
        assert!(server_final.is_ok());
        assert_eq!(client_result, Some(Ok(())));
    }

    #[test]
    fn client_and_server_agree_with_non_ascii_password() {
        // "I\u{AD}X" SASLpreps to "IX" (U+00AD SOFT HYPHEN maps to nothing, RFC 4013 section 2.2)
        // and U+2168 ROMAN NUMERAL NINE normalises to "IX" under NFKC: the same keys.
        let verifier = ScramVerifier::derive("I\u{AD}X", &salt(), TEST_ITERATIONS);
        assert_eq!(
            verifier,
            ScramVerifier::derive("\u{2168}", &salt(), TEST_ITERATIONS)
        );
        assert_eq!(
            verifier,
            ScramVerifier::derive("IX", &salt(), TEST_ITERATIONS)
        );
        let (server_final, client_result) = exchange(
            "\u{2168}",
            ScramServer::new(verifier, SERVER_NONCE.to_owned()),
        );
        assert!(server_final.is_ok());
        assert_eq!(client_result, Some(Ok(())));
    }

    #[test]
    fn password_failing_saslprep_is_used_raw() {
        // U+0007 BELL is prohibited (RFC 4013 section 2.3, C.2.1) and U+0627 ARABIC LETTER ALEF
        // next to "a" breaks the bidi rule: SASLprep fails, the raw bytes are used.
        for password in ["bell\u{7}\u{e9}", "a\u{627}"] {
            assert!(stringprep::saslprep(password).is_err());
            let raw = pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password.as_bytes(), &salt(), 2);
            let expected = sha256(&hmac(&raw, b"Client Key"));
            assert_eq!(
                ScramVerifier::derive(password, &salt(), 2).stored_key,
                expected
            );
            let (server_final, _) = exchange(
                password,
                ScramServer::new(ScramVerifier::derive(password, &salt(), 2), "n".into()),
            );
            assert!(server_final.is_ok());
        }
    }

    #[test]
    fn pinned_client_exchange() {
        let mut client = ScramClient::new("secret", PINNED_CLIENT_NONCE.to_owned());
        assert_eq!(client.client_first(), PINNED_CLIENT_FIRST.as_bytes());
        let client_final = client.server_first(PINNED_SERVER_FIRST.as_bytes()).unwrap();
        assert_eq!(client_final, PINNED_CLIENT_FINAL.as_bytes());
        client.server_final(PINNED_SERVER_FINAL.as_bytes()).unwrap();

        // The same exchange from the server's side.
        let verifier = ScramVerifier::parse(PINNED_VERIFIER).unwrap();
        assert_eq!(verifier, ScramVerifier::derive("secret", &salt(), 4096));
        let mut server = ScramServer::new(verifier, PINNED_SERVER_NONCE.to_owned());
        let server_first = server.client_first(PINNED_CLIENT_FIRST.as_bytes()).unwrap();
        assert_eq!(server_first, PINNED_SERVER_FIRST.as_bytes());
        let server_final = server.client_final(PINNED_CLIENT_FINAL.as_bytes()).unwrap();
        assert_eq!(server_final, PINNED_SERVER_FINAL.as_bytes());
    }

    #[test]
    fn gs2_header_y_is_accepted_with_matching_binding() {
        let mut server = server();
        let server_first = server
            .client_first(format!("y,,n=,r={CLIENT_NONCE}").as_bytes())
            .unwrap();
        let mut client = client("secret");
        // Our client always sends "n,,"; compute its proof, then rewrite the message as a "y,,"
        // client would have sent it and check only the binding is judged.
        let client_final = client.server_first(&server_first).unwrap();
        let client_final = String::from_utf8(client_final).unwrap();
        let rewritten = client_final.replacen("c=biws", "c=eSws", 1);
        // The proof covers c=, so the rewritten message passes the binding check and fails the
        // proof; "c=biws" fails the binding check first.
        assert_eq!(
            server_awaiting_y().client_final(rewritten.as_bytes()),
            Err(AuthError::WrongPassword)
        );
        assert_eq!(
            server_awaiting_y().client_final(client_final.as_bytes()),
            Err(AuthError::ChannelBindingMismatch)
        );
    }

    fn server_awaiting_y() -> ScramServer {
        let mut server = server();
        server
            .client_first(format!("y,,n=,r={CLIENT_NONCE}").as_bytes())
            .unwrap();
        server
    }

    #[test]
    fn gs2_header_y_full_exchange() {
        // A hand-built client that sends "y,,": the proof must be accepted when c=eSws.
        let mut server = server_awaiting_y();
        let nonce = format!("{CLIENT_NONCE}{SERVER_NONCE}");
        let keys = ClientKeys::derive("secret", &salt(), TEST_ITERATIONS);
        let server_first = format!("r={nonce},s={},i={TEST_ITERATIONS}", BASE64.encode(salt()));
        let without_proof = format!("c=eSws,r={nonce}");
        let auth_message = format!("n=,r={CLIENT_NONCE},{server_first},{without_proof}");
        let proof = xor(
            &keys.client_key,
            &hmac(&keys.stored_key, auth_message.as_bytes()),
        );
        let message = format!("{without_proof},p={}", BASE64.encode(proof));
        let server_final = server.client_final(message.as_bytes()).unwrap();
        let expected = hmac(&keys.server_key, auth_message.as_bytes());
        assert_eq!(
            server_final,
            format!("v={}", BASE64.encode(expected)).into_bytes()
        );
    }

    #[test]
    fn wrong_password_is_28p01() {
        let (server_final, _) = exchange("wrong", server());
        let error = server_final.unwrap_err();
        assert_eq!(error, AuthError::WrongPassword);
        assert_eq!(error.sqlstate(), "28P01");
        assert!(error.is_wrong_password());
    }

    #[test]
    fn unknown_user_fails_like_a_wrong_password() {
        for mut server in [
            ScramServer::for_unknown_user(SERVER_NONCE.to_owned()),
            ScramServer::for_unknown_user_with_salt(
                SERVER_NONCE.to_owned(),
                &mock_salt(b"process secret", "nobody"),
            ),
        ] {
            let mut client = client("secret");
            let server_first = server.client_first(&client.client_first()).unwrap();
            // Plausible: same shape as a real user's, default iterations, 16-byte salt.
            let text = String::from_utf8(server_first.clone()).unwrap();
            let parts: Vec<&str> = text.split(',').collect();
            assert_eq!(parts.len(), 3);
            assert_eq!(parts[0], format!("r={CLIENT_NONCE}{SERVER_NONCE}"));
            assert_eq!(
                BASE64
                    .decode(parts[1].strip_prefix("s=").unwrap())
                    .unwrap()
                    .len(),
                16
            );
            assert_eq!(parts[2], "i=4096");
            let client_final = client.server_first(&server_first).unwrap();
            let error = server.client_final(&client_final).unwrap_err();
            assert_eq!(error, AuthError::WrongPassword);
            assert_eq!(error.sqlstate(), "28P01");
        }
    }

    #[test]
    fn mock_salt_is_stable_per_user() {
        assert_eq!(mock_salt(b"k", "alice"), mock_salt(b"k", "alice"));
        assert_ne!(mock_salt(b"k", "alice"), mock_salt(b"k", "bob"));
        assert_ne!(mock_salt(b"k", "alice"), mock_salt(b"other", "alice"));
    }

    #[test]
    fn server_rejects_malformed_client_first() {
        let cases: &[(&[u8], AuthError)] = &[
            (
                b"p=tls-server-end-point,,n=,r=abc",
                AuthError::ChannelBindingNotOffered,
            ),
            (
                b"n,a=admin,n=,r=abc",
                AuthError::AuthorizationIdentityUnsupported,
            ),
            (b"n,,m=ext,n=,r=abc", AuthError::UnsupportedExtension),
        ];
        for (message, expected) in cases {
            assert_eq!(server().client_first(message).as_ref(), Err(expected));
            assert_eq!(expected.sqlstate(), "08P01");
        }
        let malformed: &[&[u8]] = &[
            b"",
            b"n",
            b"n,",
            b"n,,",
            b"x,,n=,r=abc",
            b"n,x,n=,r=abc",
            b"n,,r=abc",
            b"n,,n=",
            b"n,,n=,",
            b"n,,n=,r=",
            b"n,,n=,x=abc",
            b"n,,n=,r=a\x7fb",
            b"n,,n=,r=abc,",
            b"n,,n=,r=abc,1=x",
            b"n,,n=,r=abc\0",
            b"n,,n=\xff,r=abc",
            b"\xc3",
        ];
        for message in malformed {
            let error = server().client_first(message).unwrap_err();
            assert!(
                matches!(error, AuthError::Malformed { .. }),
                "{:?}: {error:?}",
                String::from_utf8_lossy(message)
            );
            assert_eq!(error.sqlstate(), "08P01");
        }
        // The user name is ignored and extensions after the nonce are allowed.
        server().client_first(b"n,,n=someone,r=abc").unwrap();
        server().client_first(b"n,,n=,r=abc,x=ext").unwrap();
    }

    #[test]
    fn server_rejects_malformed_client_final() {
        let nonce = format!("{CLIENT_NONCE}{SERVER_NONCE}");
        let proof = BASE64.encode([0u8; 32]);
        let cases = [
            (
                format!("c=eSws,r={nonce},p={proof}"),
                AuthError::ChannelBindingMismatch,
            ),
            (
                format!("c=cCws,r={nonce},p={proof}"),
                AuthError::ChannelBindingMismatch,
            ),
            (
                format!("c=biws,r={nonce}x,p={proof}"),
                AuthError::NonceMismatch,
            ),
            (
                format!("c=biws,r={CLIENT_NONCE},p={proof}"),
                AuthError::NonceMismatch,
            ),
            (
                format!("c=biws,r={nonce},p={proof}"),
                AuthError::WrongPassword,
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(
                server_awaiting_final().client_final(message.as_bytes()),
                Err(expected),
                "{message}"
            );
        }
        let malformed = [
            String::new(),
            "c=biws".to_owned(),
            format!("c=biws,r={nonce}"),
            format!("r={nonce},p={proof}"),
            format!("c=biws,p={proof}"),
            format!("c=biws,r={nonce},p="),
            format!("c=biws,r={nonce},p=!!!!"),
            format!("c=biws,r={nonce},p={}", BASE64.encode([0u8; 31])),
            format!("c=biws,r={nonce},p={}", &proof[..proof.len() - 1]),
            format!("c=bi!s,r={nonce},p={proof}"),
            format!("c=biws,r={nonce},,p={proof}"),
            format!("c=biws,r={nonce},p={proof},x=ext"),
            format!("c=biws,r={nonce},p={proof}\0"),
        ];
        for message in malformed {
            let error = server_awaiting_final()
                .client_final(message.as_bytes())
                .unwrap_err();
            assert!(
                matches!(error, AuthError::Malformed { .. }),
                "{message}: {error:?}"
            );
            assert_eq!(error.sqlstate(), "08P01");
        }
        let error = server_awaiting_final()
            .client_final(b"c=biws,r=\xff")
            .unwrap_err();
        assert_eq!(error.sqlstate(), "08P01");
    }

    #[test]
    fn tampered_proof_is_wrong_password() {
        let mut server = server();
        let mut client = client("secret");
        let server_first = server.client_first(&client.client_first()).unwrap();
        let client_final = String::from_utf8(client.server_first(&server_first).unwrap()).unwrap();
        let (without_proof, proof) = client_final.rsplit_once(",p=").unwrap();
        let mut proof = BASE64.decode(proof).unwrap();
        proof[0] ^= 1;
        let tampered = format!("{without_proof},p={}", BASE64.encode(proof));
        assert_eq!(
            server.client_final(tampered.as_bytes()),
            Err(AuthError::WrongPassword)
        );
    }

    #[test]
    fn server_messages_out_of_order() {
        let mut server = server();
        let error = server.client_final(b"c=biws,r=x,p=x").unwrap_err();
        assert!(matches!(error, AuthError::UnexpectedMessage { .. }));
        assert_eq!(error.sqlstate(), "08P01");

        let mut server = server_awaiting_final();
        let error = server.client_first(b"n,,n=,r=abc").unwrap_err();
        assert!(matches!(error, AuthError::UnexpectedMessage { .. }));

        // A failed exchange stays failed, even when a correct message follows.
        let mut server = self::server();
        let mut client = client("secret");
        assert!(server.client_first(b"garbage").is_err());
        assert!(matches!(
            server.client_first(&client.client_first()),
            Err(AuthError::UnexpectedMessage { .. })
        ));

        // A finished exchange accepts nothing more.
        let mut server = self::server();
        let server_first = server.client_first(&client.client_first()).unwrap();
        let client_final = client.server_first(&server_first).unwrap();
        server.client_final(&client_final).unwrap();
        assert!(matches!(
            server.client_final(&client_final),
            Err(AuthError::UnexpectedMessage { .. })
        ));
    }

    #[test]
    fn client_rejects_malformed_server_first() {
        let salt = BASE64.encode(salt());
        let cases: Vec<(String, AuthError)> = vec![
            (
                format!("r=other{SERVER_NONCE},s={salt},i=8"),
                AuthError::NonceMismatch,
            ),
            // The server added nothing to our nonce.
            (
                format!("r={CLIENT_NONCE},s={salt},i=8"),
                AuthError::NonceMismatch,
            ),
            (
                format!("m=ext,r={CLIENT_NONCE}x,s={salt},i=8"),
                AuthError::UnsupportedExtension,
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(
                client("secret").server_first(message.as_bytes()),
                Err(expected),
                "{message}"
            );
        }
        let n = format!("{CLIENT_NONCE}{SERVER_NONCE}");
        let malformed: Vec<Vec<u8>> = [
            String::new(),
            format!("r={n}"),
            format!("r={n},s={salt}"),
            format!("r={n},i=8"),
            format!("r={n},s={salt},i=0"),
            format!("r={n},s={salt},i=-1"),
            format!("r={n},s={salt},i=+8"),
            format!("r={n},s={salt},i= 8"),
            format!("r={n},s={salt},i=4294967296"),
            format!("r={n},s={salt},i=x"),
            format!("r={n},s=,i=8"),
            format!("r={n},s=not base64!,i=8"),
            format!("r={n},s={},i=8", &salt[..salt.len() - 2]),
            format!("r={n},i=8,s={salt}"),
            format!("s={salt},r={n},i=8"),
            format!("r={n},s={salt},i=8,"),
            format!("r={n}\u{e9},s={salt},i=8"),
        ]
        .into_iter()
        .map(String::into_bytes)
        .chain([b"r=\xff".to_vec(), b"\0".to_vec()])
        .collect();
        for message in malformed {
            let error = client("secret").server_first(&message).unwrap_err();
            assert!(
                matches!(error, AuthError::Malformed { .. }),
                "{:?}: {error:?}",
                String::from_utf8_lossy(&message)
            );
            assert_eq!(error.sqlstate(), "08P01");
        }
        // Extensions after the iteration count are ignored.
        client("secret")
            .server_first(format!("r={n},s={salt},i=8,x=ext").as_bytes())
            .unwrap();
    }

    #[test]
    fn client_checks_server_final() {
        let ready = || {
            let mut client = client("secret");
            let mut server = server();
            let server_first = server.client_first(&client.client_first()).unwrap();
            let client_final = client.server_first(&server_first).unwrap();
            let server_final = server.client_final(&client_final).unwrap();
            (client, String::from_utf8(server_final).unwrap())
        };

        let (mut client, server_final) = ready();
        let mut signature = BASE64
            .decode(server_final.strip_prefix("v=").unwrap())
            .unwrap();
        signature[31] ^= 0x80;
        let error = client
            .server_final(format!("v={}", BASE64.encode(signature)).as_bytes())
            .unwrap_err();
        assert_eq!(error, AuthError::ServerSignatureMismatch);
        assert_eq!(error.sqlstate(), "08P01");
        assert!(!error.is_wrong_password());

        let (mut client, _) = ready();
        let error = client.server_final(b"e=invalid-proof").unwrap_err();
        assert_eq!(
            error,
            AuthError::ServerError {
                value: "invalid-proof".into()
            }
        );
        assert!(error.is_wrong_password());

        let (mut client, _) = ready();
        let error = client.server_final(b"e=other-error").unwrap_err();
        assert_eq!(error.sqlstate(), "08P01");

        for malformed in [
            &b""[..],
            b"e=",
            b"v=",
            b"v=AAAA",
            b"v=!!",
            b"x=abc",
            b"\xff",
        ] {
            let (mut client, _) = ready();
            let error = client.server_final(malformed).unwrap_err();
            assert!(
                matches!(error, AuthError::Malformed { .. }),
                "{:?}: {error:?}",
                String::from_utf8_lossy(malformed)
            );
        }

        // Extensions after v= are ignored; the exchange is then finished.
        let (mut client, server_final) = ready();
        client
            .server_final(format!("{server_final},x=ext").as_bytes())
            .unwrap();
        assert!(matches!(
            client.server_final(server_final.as_bytes()),
            Err(AuthError::UnexpectedMessage { .. })
        ));
    }

    #[test]
    fn client_messages_out_of_order() {
        let mut client = client("secret");
        assert!(matches!(
            client.server_final(b"v=x"),
            Err(AuthError::UnexpectedMessage { .. })
        ));
        // After a failed server-first the client is failed for good.
        assert!(client.server_first(b"garbage").is_err());
        assert!(matches!(
            client.server_first(PINNED_SERVER_FIRST.as_bytes()),
            Err(AuthError::UnexpectedMessage { .. })
        ));
    }

    /// Hi() written out from RFC 5802 section 2.2, independent of the pbkdf2 crate:
    /// U1 := HMAC(str, salt + INT(1)), Ui := HMAC(str, Ui-1), Hi := U1 XOR … XOR Ui.
    fn hi_by_hand(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
        let mac = |message: &[u8]| -> [u8; 32] {
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(password).unwrap();
            mac.update(message);
            mac.finalize().into_bytes().into()
        };
        let mut block = salt.to_vec();
        block.extend_from_slice(&1u32.to_be_bytes());
        let mut u = mac(&block);
        let mut result = u;
        for _ in 1..iterations {
            u = mac(&u);
            for (r, x) in result.iter_mut().zip(u) {
                *r ^= x;
            }
        }
        result
    }

    #[test]
    fn derive_matches_independent_computation() {
        let salt = b"meridian-salt-16";
        let salted = hi_by_hand(b"secret", salt, 4096);
        let mac = |key: &[u8], message: &[u8]| -> [u8; 32] {
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
            mac.update(message);
            mac.finalize().into_bytes().into()
        };
        let client_key = mac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let server_key = mac(&salted, b"Server Key");

        let verifier = ScramVerifier::derive("secret", salt, 4096);
        assert_eq!(verifier.stored_key, stored_key);
        assert_eq!(verifier.server_key, server_key);
        assert_eq!(verifier.iterations(), 4096);
        assert_eq!(
            verifier.to_string(),
            format!(
                "SCRAM-SHA-256$4096:{}${}:{}",
                BASE64.encode(salt),
                BASE64.encode(stored_key),
                BASE64.encode(server_key)
            )
        );
    }

    #[test]
    fn verifier_stored_by_postgres() {
        let stored = ScramVerifier::parse(POSTGRES_VERIFIER).unwrap();
        let derived = ScramVerifier::derive("secret", &stored.salt, stored.iterations());
        assert_eq!(derived, stored);
        assert_eq!(derived.to_string(), POSTGRES_VERIFIER);
    }

    #[test]
    fn verifier_round_trip() {
        let verifier = ScramVerifier::parse(PINNED_VERIFIER).unwrap();
        assert_eq!(verifier.to_string(), PINNED_VERIFIER);
        assert_eq!(PINNED_VERIFIER.parse::<ScramVerifier>(), Ok(verifier));
        assert!(ScramVerifier::is_verifier(PINNED_VERIFIER));
    }

    #[test]
    fn verifier_parse_errors() {
        let key = BASE64.encode([7u8; 32]);
        let short = BASE64.encode([7u8; 31]);
        let cases = [
            String::new(),
            "md553f48b7c4b76a86ce72276c5755f217d".to_owned(),
            "secret".to_owned(),
            format!("SCRAM-SHA-1$4096:AAAA${key}:{key}"),
            format!("scram-sha-256$4096:AAAA${key}:{key}"),
            format!("SCRAM-SHA-256$4096:AAAA${key}"),
            "SCRAM-SHA-256$4096:AAAA".to_owned(),
            format!("SCRAM-SHA-256$4096${key}:{key}"),
            format!("SCRAM-SHA-256$0:AAAA${key}:{key}"),
            format!("SCRAM-SHA-256$-1:AAAA${key}:{key}"),
            format!("SCRAM-SHA-256$x:AAAA${key}:{key}"),
            format!("SCRAM-SHA-256$:AAAA${key}:{key}"),
            format!("SCRAM-SHA-256$4096:${key}:{key}"),
            format!("SCRAM-SHA-256$4096:AA!A${key}:{key}"),
            format!("SCRAM-SHA-256$4096:AAAA${short}:{key}"),
            format!("SCRAM-SHA-256$4096:AAAA${key}:{short}"),
            format!("SCRAM-SHA-256$4096:AAAA${key}:{key}$"),
            format!("SCRAM-SHA-256$4096:AAAA${key}:{key}:"),
            format!("SCRAM-SHA-256$4096:AAAA${key}:{key} "),
        ];
        for text in cases {
            let error = ScramVerifier::parse(&text).unwrap_err();
            assert!(
                matches!(error, AuthError::InvalidVerifier { .. }),
                "{text}: {error:?}"
            );
            assert_eq!(error.sqlstate(), "28000");
            assert!(!ScramVerifier::is_verifier(&text));
        }
        ScramVerifier::parse(&format!("SCRAM-SHA-256$1:AAAA${key}:{key}")).unwrap();
    }

    #[test]
    fn random_nonce_and_salt() {
        let nonce = random_nonce();
        assert_eq!(nonce.len(), 24);
        assert!(is_valid_nonce(&nonce));
        assert_ne!(nonce, random_nonce());
        assert_ne!(random_salt(), random_salt());
        // Production wiring: random nonces on both sides.
        let (server_final, client_result) = {
            let mut client = ScramClient::new("secret", random_nonce());
            let mut server = ScramServer::new(test_verifier(), random_nonce());
            let server_first = server.client_first(&client.client_first()).unwrap();
            let client_final = client.server_first(&server_first).unwrap();
            let server_final = server.client_final(&client_final).unwrap();
            (server_final.clone(), client.server_final(&server_final))
        };
        assert!(server_final.starts_with(b"v="));
        assert_eq!(client_result, Ok(()));
    }

    #[test]
    #[should_panic(expected = "nonce")]
    fn invalid_injected_nonce_panics() {
        let _ = ScramClient::new("secret", "has,comma".to_owned());
    }

    #[test]
    fn debug_output_is_redacted() {
        let verifier = ScramVerifier::derive("hunter2-password", &salt(), TEST_ITERATIONS);
        let keys = [
            BASE64.encode(verifier.stored_key),
            BASE64.encode(verifier.server_key),
            BASE64.encode(&verifier.salt),
        ];
        let mut client = ScramClient::new("hunter2-password", PINNED_CLIENT_NONCE.to_owned());
        let mut server = ScramServer::new(verifier.clone(), PINNED_SERVER_NONCE.to_owned());
        let mut outputs = vec![
            format!("{verifier:?}"),
            format!("{client:?}"),
            format!("{server:?}"),
            format!("{:?}", ScramServer::for_unknown_user("n".into())),
        ];
        let server_first = server.client_first(&client.client_first()).unwrap();
        let client_final = client.server_first(&server_first).unwrap();
        outputs.push(format!("{client:?}"));
        outputs.push(format!("{server:?}"));
        server.client_final(&client_final).unwrap();
        outputs.push(format!("{server:?}"));
        assert_eq!(outputs[0], "ScramVerifier { iterations: 8, .. }");
        for output in outputs {
            assert!(!output.contains("hunter2"), "{output}");
            for key in &keys {
                assert!(!output.contains(key.as_str()), "{output}");
            }
        }
    }

    #[test]
    fn errors_do_not_contain_secrets() {
        let (server_final, _) = exchange("hunter2-password", server());
        let message = server_final.unwrap_err().to_string();
        assert!(!message.contains("hunter2"));
        let error = ScramVerifier::parse("SCRAM-SHA-256$4096:c2VjcmV0$bad:bad").unwrap_err();
        assert!(!error.to_string().contains("c2VjcmV0"));
    }

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..200),
            // Near misses: valid prefixes with arbitrary tails reach the deeper branches.
            (
                prop_oneof![
                    Just("n,,n=,r=".to_owned()),
                    Just("y,,n=,r=".to_owned()),
                    Just(format!("c=biws,r={CLIENT_NONCE}{SERVER_NONCE},")),
                    Just(format!("c=biws,r={CLIENT_NONCE}{SERVER_NONCE},p=")),
                    Just(format!("r={CLIENT_NONCE}{SERVER_NONCE},s=AAAA,i=")),
                    Just(format!("r={CLIENT_NONCE}x,")),
                    Just("v=".to_owned()),
                    Just("e=".to_owned()),
                ],
                "[ -~]{0,60}|\\PC{0,20}"
            )
                .prop_map(|(prefix, tail)| format!("{prefix}{tail}").into_bytes()),
        ]
    }

    proptest! {
        #[test]
        fn server_client_first_never_panics(message in bytes()) {
            let _ = server().client_first(&message);
        }

        #[test]
        fn server_client_final_never_panics(message in bytes()) {
            let _ = server_awaiting_final().client_final(&message);
        }

        #[test]
        fn client_server_first_never_panics(message in bytes()) {
            // Keep a valid-looking iteration count small: the count is the server's to choose.
            let text = String::from_utf8_lossy(&message);
            prop_assume!(parse_iterations_in(&text).is_none_or(|i| i <= 64));
            let _ = client("secret").server_first(&message);
        }

        #[test]
        fn client_server_final_never_panics(message in bytes()) {
            let mut client = client("secret");
            let server_first = format!(
                "r={CLIENT_NONCE}{SERVER_NONCE},s={},i={TEST_ITERATIONS}",
                BASE64.encode(salt())
            );
            client.server_first(server_first.as_bytes()).unwrap();
            let _ = client.server_final(&message);
        }

        #[test]
        fn verifier_display_parse_round_trip(
            iterations in 1u32..,
            salt in proptest::collection::vec(any::<u8>(), 1..64),
            stored_key in any::<[u8; 32]>(),
            server_key in any::<[u8; 32]>(),
        ) {
            let verifier = ScramVerifier { iterations, salt, stored_key, server_key };
            prop_assert_eq!(ScramVerifier::parse(&verifier.to_string()), Ok(verifier.clone()));
            prop_assert!(ScramVerifier::is_verifier(&verifier.to_string()));
        }

        #[test]
        fn verifier_parse_never_panics(text in "\\PC{0,120}|SCRAM-SHA-256\\$[0-9:$A-Za-z+/=]{0,120}") {
            let _ = ScramVerifier::parse(&text);
        }
    }

    /// The largest number following an "i=" in `text`, if any.
    fn parse_iterations_in(text: &str) -> Option<u32> {
        text.split(',')
            .filter_map(|part| part.strip_prefix("i="))
            .map(|value| {
                value
                    .trim_start_matches('+')
                    .parse::<u64>()
                    .map_or(0, |i| u32::try_from(i).unwrap_or(u32::MAX))
            })
            .max()
    }
}
