//! Meridian's decisions, in pure code: no tokio, no sockets, no clock.
//!
//! Everything here is a function of its inputs (state, observation, `now`) so that it can be
//! tested exhaustively without servers. The async crates gather inputs and carry out the
//! decisions.

pub mod alerts;
pub mod archiving;
pub mod backoff;
pub mod backups;
pub mod balance;
pub mod breaker;
pub mod candidates;
pub mod classify;
pub mod coordination;
pub mod failover;
pub mod health;
pub mod lag;
pub mod lsn;
pub mod migrations;
pub mod observation;
pub mod retry;
pub mod routing;
pub mod status;
pub mod topology;

pub use lsn::Lsn;
