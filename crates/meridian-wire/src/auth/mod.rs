//! Password authentication as sans-IO state machines: SCRAM-SHA-256 (RFC 5802 / RFC 7677, as
//! PostgreSQL speaks it) and md5, each from both sides: the proxy authenticating its clients
//! and the proxy authenticating itself to servers.
