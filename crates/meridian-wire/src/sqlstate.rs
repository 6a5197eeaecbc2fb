//! SQLSTATE codes Meridian sends or acts on (PostgreSQL docs, appendix A "PostgreSQL Error
//! Codes"). Branch on these, never on message text.

/// `08000` connection_exception.
pub const CONNECTION_EXCEPTION: &str = "08000";
/// `08001` sqlclient_unable_to_establish_sqlconnection.
pub const UNABLE_TO_CONNECT: &str = "08001";
/// `08004` sqlserver_rejected_establishment_of_sqlconnection.
pub const CONNECTION_REJECTED: &str = "08004";
/// `08006` connection_failure: the server connection was lost.
pub const CONNECTION_FAILURE: &str = "08006";
/// `08P01` protocol_violation.
pub const PROTOCOL_VIOLATION: &str = "08P01";
/// `08007` transaction_resolution_unknown: the connection was lost while a commit may have
/// taken effect.
pub const TRANSACTION_RESOLUTION_UNKNOWN: &str = "08007";
/// `0A000` feature_not_supported.
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
/// `25006` read_only_sql_transaction.
pub const READ_ONLY_SQL_TRANSACTION: &str = "25006";
/// `26000` invalid_sql_statement_name: an unknown prepared statement.
pub const INVALID_SQL_STATEMENT_NAME: &str = "26000";
/// `28000` invalid_authorization_specification.
pub const INVALID_AUTHORIZATION_SPECIFICATION: &str = "28000";
/// `28P01` invalid_password.
pub const INVALID_PASSWORD: &str = "28P01";
/// `3D000` invalid_catalog_name: no such database.
pub const INVALID_CATALOG_NAME: &str = "3D000";
/// `42P05` duplicate_prepared_statement.
pub const DUPLICATE_PREPARED_STATEMENT: &str = "42P05";
/// `53300` too_many_connections.
pub const TOO_MANY_CONNECTIONS: &str = "53300";
/// `57014` query_canceled.
pub const QUERY_CANCELED: &str = "57014";
/// `57P01` admin_shutdown.
pub const ADMIN_SHUTDOWN: &str = "57P01";
/// `57P02` crash_shutdown.
pub const CRASH_SHUTDOWN: &str = "57P02";
/// `57P03` cannot_connect_now.
pub const CANNOT_CONNECT_NOW: &str = "57P03";
/// `58000` system_error.
pub const SYSTEM_ERROR: &str = "58000";
/// `XX000` internal_error.
pub const INTERNAL_ERROR: &str = "XX000";
