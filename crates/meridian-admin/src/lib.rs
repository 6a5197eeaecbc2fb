//! The operator interface: REST API, Prometheus exposition and the web dashboard.
