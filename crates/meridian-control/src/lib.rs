//! The control plane driver: probes every node, feeds `meridian-core`'s health and failover
//! decisions, carries out their actions and keeps the store.

pub mod archiving;
pub mod coordination;
pub mod credentials;
pub mod executor;
pub mod locate;
pub mod monitor;
pub mod probe;
pub mod store;
