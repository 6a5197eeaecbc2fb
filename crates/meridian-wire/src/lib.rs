//! The PostgreSQL frontend/backend protocol (version 3) as bytes, with no runtime.
//!
//! This crate knows bytes; the proxy knows sockets. Decoding returns `Ok(None)` when more
//! bytes are needed, checks every length against a maximum before allocating, and turns
//! malformed input into an error, never a panic.

pub mod auth;
