//! The PostgreSQL frontend/backend protocol (version 3) as bytes, with no runtime.
//!
//! This crate knows bytes; the proxy knows sockets. It is filled in by the proxy-core work
//! (startup packets, typed frontend and backend messages, SCRAM and md5 as sans-IO state
//! machines).
