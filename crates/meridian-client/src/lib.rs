//! In-process routing and resilience for Rust services: a `PoolManager` over one sqlx pool per
//! node, for services that want Meridian's guarantees without a proxy in the path.
