//! The PostgreSQL frontend/backend protocol (version 3) as bytes, with no runtime.
//!
//! This crate knows bytes; the proxy knows sockets. Decoding returns `Ok(None)` when more
//! bytes are needed, checks every length against a maximum before allocating, and turns
//! malformed input into an error, never a panic. Message enums are named as in the
//! PostgreSQL docs (55.7 "Message Formats"), one per direction.

pub mod auth;
pub mod backend;
mod error;
pub mod frame;
pub mod frontend;
pub mod sqlstate;
pub mod startup;

pub use error::WireError;
pub use frame::{DEFAULT_MAX_MESSAGE_SIZE, Frame, FrameHeader};
