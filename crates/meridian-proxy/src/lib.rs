//! The data plane: a PostgreSQL wire-protocol proxy that pools server connections and routes
//! each transaction by a decision from `meridian-core`.
