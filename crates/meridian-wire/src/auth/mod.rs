//! Password authentication as sans-IO state machines: SCRAM-SHA-256 (RFC 5802 / RFC 7677, as
//! PostgreSQL speaks it) and md5, each from both sides: the proxy authenticating its clients
//! and the proxy authenticating itself to servers.
//!
//! Each exchange is a state machine that takes the bytes of one message and returns the bytes of
//! the reply, or an [`AuthError`] classified by SQLSTATE. Nonces and salts are parameters, so tests
//! replay recorded exchanges byte for byte; `random_*` functions supply them in production. There
//! is no I/O, no clock and no async here. PostgreSQL documentation sections are cited with the
//! numbers of the PostgreSQL 17 manual's Frontend/Backend Protocol chapter ("53.2 Message Flow",
//! "53.3 SASL Authentication"); the titles are stable, the numbers move between versions (55.x
//! in PostgreSQL 15).

mod error;
pub mod md5;
pub mod scram;
mod secret;

pub use self::md5::{
    Md5Server, is_md5_hash, md5_hash, md5_response, md5_response_from_hash, random_md5_salt,
};
pub use error::AuthError;
pub use scram::{
    DEFAULT_ITERATIONS, SCRAM_SHA_256, ScramClient, ScramServer, ScramVerifier, mock_salt,
    random_nonce, random_salt,
};
