//! Several Meridian instances on one cluster, coordinated through etcd.
//!
//! Every instance probes the nodes and runs a proxy; exactly one — the leader, elected through
//! etcd's election API on the instance's lease — may fail over. The keys, under the
//! cluster's prefix `P`:
//!
//! | key | written by | holds |
//! |---|---|---|
//! | `P/instances/<id>` | each instance, on its lease | its addresses (registration) |
//! | `P/election/…` | etcd's election API | the leader's id |
//! | `P/view` | the leader only, in a transaction conditioned on its election key | who takes writes: generation, primary, paused |
//! | `P/acks/<id>` | each instance, on its lease | the revision of the view its proxy applied |
//!
//! The leader publishes every view its failover machine decides; every proxy (the leader's
//! too) routes writes by the published view only ([`meridian_core::coordination::routed_view`]).
//! Before any failover step, the leader waits for the barrier: every instance registered when
//! the paused view was published acknowledged it or lost its lease ([`gate`]). An instance
//! that loses its session fences its proxy's writes before its lease can have expired
//! ([`meridian_core::coordination::Fence`]).

pub mod coordinator;
pub mod gate;

pub use coordinator::{Coordination, CoordinationSettings, CoordinationState, Registration, spawn};
pub use gate::{Gate, GateKeeper, Ticket};
