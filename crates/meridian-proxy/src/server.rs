//! One connection to a PostgreSQL server: login, and what the proxy knows of its state.
//!
//! The proxy tracks, per server connection, the run-time parameters the server reported
//! (ParameterStatus), the parameters it set there on a client's behalf, the prepared
//! statements it created there, and whose unnamed statement is current. A server connection
//! is used by one session at a time and owned by whoever holds it (a session or the pool).
//!
//! It also carries what decides whether it may take writes: the generation of the cluster
//! view it was opened under (set by its pool), and whether the server says it is a hot
//! standby (`in_hot_standby`, reported by PostgreSQL 14+ at login and again whenever it
//! changes, e.g. at a promotion: PostgreSQL docs, 55.2.7 "Asynchronous Operations"). A
//! connection whose server changed that parameter under it is marked to be closed instead of
//! pooled.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use meridian_config::Secret;
use meridian_core::topology::NodeId;
use meridian_wire::auth::{AuthError, ScramClient, md5_response, random_nonce};
use meridian_wire::backend::{Authentication, BackendMessage, ErrorFields};
use meridian_wire::{WireError, frame, frontend, startup};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::statements::StatementId;
use crate::stream::Stream;
use meridian_tls::ServerTls;

/// The parameter PostgreSQL 14+ reports when a server enters or leaves hot standby.
pub const IN_HOT_STANDBY: &str = "in_hot_standby";

/// For a ParameterStatus received after login: `Some(standby)` when it reports
/// `in_hot_standby`, which the server sends after login only when it changes (the node was
/// promoted, or is a replica now). The connection must then be retired.
pub fn hot_standby_change(name: &str, value: &str) -> Option<bool> {
    (name == IN_HOT_STANDBY).then(|| value == "on")
}

/// Where and as whom to log in.
#[derive(Debug, Clone)]
pub struct ServerLogin {
    /// The node.
    pub node: NodeId,
    /// Its host.
    pub host: Arc<str>,
    /// Its port.
    pub port: u16,
    /// The role on the server.
    pub user: Arc<str>,
    /// The database.
    pub database: Arc<str>,
    /// The role's password, if the server asks for one.
    pub password: Option<Secret>,
    /// Transport security.
    pub tls: ServerTls,
    /// How long connecting and logging in may take.
    pub connect_timeout: Duration,
    /// Largest message accepted from the server.
    pub max_message_size: usize,
}

/// Why a server connection could not be made or was lost.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// TCP connect, TLS or I/O failed.
    #[error("cannot reach {addr}: {source}")]
    Unreachable {
        /// host:port.
        addr: String,
        /// The cause.
        source: io::Error,
    },
    /// Connecting and logging in took longer than the connect timeout.
    #[error("connecting to {addr} timed out after {timeout:?}")]
    Timeout {
        /// host:port.
        addr: String,
        /// The configured timeout.
        timeout: Duration,
    },
    /// The server refused the login with this error (bad database, role, password, ...).
    #[error("server refused the login: {}", .0.message())]
    Refused(ErrorFields),
    /// TLS was required but the server does not offer it.
    #[error("{addr} does not accept TLS but server_tls.mode requires it")]
    TlsRefused {
        /// host:port.
        addr: String,
    },
    /// The server asked for a password and none is configured.
    #[error("{addr} asks for a password for role {user:?}; set users[].server_password")]
    NoPassword {
        /// host:port.
        addr: String,
        /// The server role.
        user: String,
    },
    /// Authentication towards the server failed on our side (a bad server signature, ...).
    #[error("authenticating to {addr}: {source}")]
    Auth {
        /// host:port.
        addr: String,
        /// The cause.
        source: AuthError,
    },
    /// The server asked for an authentication method Meridian does not speak.
    #[error("{addr} asks for an unsupported authentication method ({method})")]
    UnsupportedAuth {
        /// host:port.
        addr: String,
        /// The method code or SASL mechanisms.
        method: String,
    },
    /// The server sent bytes that are not the protocol.
    #[error("protocol error from the server: {0}")]
    Protocol(#[from] WireError),
}

/// A logged-in server connection.
#[derive(Debug)]
pub struct ServerConnection {
    /// The socket.
    pub stream: Stream,
    /// Bytes read from the server and not yet handled.
    pub read_buf: BytesMut,
    /// The node it belongs to.
    pub node: NodeId,
    /// Address for cancel requests.
    pub addr: SocketAddr,
    /// The key that cancels what this connection runs (protocol 3.0 keys are 4 bytes).
    pub cancel_key: (i32, [u8; 4]),
    /// Reported run-time parameters, as the server last reported them.
    pub params: HashMap<String, String>,
    /// Parameters the proxy set on a client's behalf since the last reset (lower-case name
    /// -> value). Shared with the session whose parameters they are, so that the common
    /// check "already applied?" is a pointer comparison.
    pub overrides: Arc<BTreeMap<String, String>>,
    /// Prepared statements the proxy created here.
    pub prepared: HashSet<StatementId>,
    /// Whose unnamed statement is current: (session, that session's Parse count).
    pub unnamed: Option<(u64, u64)>,
    /// The generation of the cluster view it was opened under (see [`crate::pool`]).
    pub generation: u64,
    /// Its pool's recycle epoch when its login started (see [`crate::pool`]).
    pub recycle_epoch: u64,
    /// The server reported `in_hot_standby = on`: it is a replica, not a primary.
    pub standby: bool,
    /// Close it instead of pooling it when it is given back.
    pub retire: bool,
    /// When it logged in, on its pool's clock (see [`crate::pool`]).
    pub created_tick: u64,
    /// When it was last given back to the pool, on the pool's clock.
    pub idle_tick: u64,
}

impl ServerConnection {
    /// Connects to the server and logs in.
    pub async fn connect(login: &ServerLogin) -> Result<ServerConnection, ServerError> {
        let addr = format!("{}:{}", login.host, login.port);
        match tokio::time::timeout(login.connect_timeout, Self::connect_inner(login, &addr)).await {
            Ok(result) => result,
            Err(_) => Err(ServerError::Timeout {
                addr,
                timeout: login.connect_timeout,
            }),
        }
    }

    async fn connect_inner(
        login: &ServerLogin,
        addr: &str,
    ) -> Result<ServerConnection, ServerError> {
        let unreachable = |source: io::Error| ServerError::Unreachable {
            addr: addr.to_owned(),
            source,
        };
        let tcp = TcpStream::connect((&*login.host, login.port))
            .await
            .map_err(unreachable)?;
        let peer = tcp.peer_addr().map_err(unreachable)?;
        tcp.set_nodelay(true).map_err(unreachable)?;
        let _ = socket2::SockRef::from(&tcp).set_keepalive(true);
        let mut stream = negotiate_tls(tcp, login, addr).await?;

        let mut out = BytesMut::new();
        startup::encode_startup(
            &mut out,
            &[("user", &login.user), ("database", &login.database)],
        );
        stream.write_all(&out).await.map_err(unreachable)?;

        let mut read_buf = BytesMut::with_capacity(8192);
        let mut scram: Option<ScramClient> = None;
        let mut params = HashMap::new();
        let mut cancel_key = (0, [0; 4]);
        loop {
            let message = read_message(&mut stream, &mut read_buf, login.max_message_size)
                .await
                .map_err(|e| match e {
                    ReadError::Io(e) => unreachable(e),
                    ReadError::Wire(e) => ServerError::Protocol(e),
                })?;
            out.clear();
            match message {
                BackendMessage::Authentication(auth) => match auth {
                    Authentication::Ok => {}
                    Authentication::CleartextPassword => {
                        let password = password(login, addr)?;
                        frontend::encode_password(&mut out, password.expose().as_bytes());
                    }
                    Authentication::Md5Password { salt } => {
                        let password = password(login, addr)?;
                        let response = md5_response(&login.user, password.expose(), salt);
                        frontend::encode_password(&mut out, response.as_bytes());
                    }
                    Authentication::Sasl { mechanisms } => {
                        if !mechanisms
                            .iter()
                            .any(|m| m == meridian_wire::auth::SCRAM_SHA_256)
                        {
                            return Err(ServerError::UnsupportedAuth {
                                addr: addr.to_owned(),
                                method: mechanisms.join(", "),
                            });
                        }
                        let client =
                            ScramClient::new(password(login, addr)?.expose(), random_nonce());
                        frontend::encode_sasl_initial_response(
                            &mut out,
                            meridian_wire::auth::SCRAM_SHA_256,
                            &client.client_first(),
                        );
                        scram = Some(client);
                    }
                    Authentication::SaslContinue(data) => {
                        let client = scram.as_mut().ok_or(WireError::UnexpectedTag(b'R'))?;
                        let reply =
                            client
                                .server_first(&data)
                                .map_err(|source| ServerError::Auth {
                                    addr: addr.to_owned(),
                                    source,
                                })?;
                        frontend::encode_sasl_response(&mut out, &reply);
                    }
                    Authentication::SaslFinal(data) => {
                        let client = scram.as_mut().ok_or(WireError::UnexpectedTag(b'R'))?;
                        client
                            .server_final(&data)
                            .map_err(|source| ServerError::Auth {
                                addr: addr.to_owned(),
                                source,
                            })?;
                    }
                    other => {
                        return Err(ServerError::UnsupportedAuth {
                            addr: addr.to_owned(),
                            method: format!("{other:?}"),
                        });
                    }
                },
                BackendMessage::ParameterStatus { name, value } => {
                    params.insert(name, value);
                }
                BackendMessage::BackendKeyData {
                    process_id,
                    secret_key,
                } => {
                    // We speak protocol 3.0 to servers, whose keys are exactly 4 bytes.
                    let key: [u8; 4] = secret_key[..].try_into().map_err(|_| {
                        WireError::malformed("BackendKeyData", "secret key is not 4 bytes")
                    })?;
                    cancel_key = (process_id, key);
                }
                BackendMessage::ErrorResponse(fields) => return Err(ServerError::Refused(fields)),
                BackendMessage::ReadyForQuery(_) => break,
                BackendMessage::NoticeResponse(_)
                | BackendMessage::NegotiateProtocolVersion { .. } => {}
                BackendMessage::Other(f) => return Err(WireError::UnexpectedTag(f.tag).into()),
                _ => return Err(WireError::UnexpectedTag(b'?').into()),
            }
            if !out.is_empty() {
                stream.write_all(&out).await.map_err(unreachable)?;
            }
        }
        let standby = params.get(IN_HOT_STANDBY).is_some_and(|v| v == "on");
        Ok(ServerConnection {
            stream,
            read_buf,
            node: login.node,
            addr: peer,
            cancel_key,
            params,
            overrides: Arc::default(),
            prepared: HashSet::new(),
            unnamed: None,
            generation: 0,
            recycle_epoch: 0,
            standby,
            retire: false,
            created_tick: 0,
            idle_tick: 0,
        })
    }

    /// Sends Terminate and closes, ignoring errors: the connection is being discarded.
    pub async fn terminate(mut self: Box<Self>) {
        let mut out = BytesMut::new();
        frontend::encode_terminate(&mut out);
        let _ = tokio::time::timeout(Duration::from_millis(100), async {
            let _ = self.stream.write_all(&out).await;
            let _ = self.stream.shutdown().await;
        })
        .await;
    }

    /// Runs `sql` (simple protocol) for the proxy's own purposes and returns the command
    /// tags; the connection must be idle.
    pub async fn run_internal(
        &mut self,
        sql: &str,
        max_message_size: usize,
    ) -> Result<Vec<String>, ServerError> {
        self.run(sql, max_message_size).await.map(|(tags, _)| tags)
    }

    /// Runs `sql` and returns the first column of its first row, as text (`None` for no row
    /// or NULL); the connection must be idle.
    pub async fn query_one(
        &mut self,
        sql: &str,
        max_message_size: usize,
    ) -> Result<Option<String>, ServerError> {
        self.run(sql, max_message_size)
            .await
            .map(|(_, value)| value)
    }

    async fn run(
        &mut self,
        sql: &str,
        max_message_size: usize,
    ) -> Result<(Vec<String>, Option<String>), ServerError> {
        let mut out = BytesMut::new();
        frontend::encode_query(&mut out, sql.as_bytes());
        let io = |source: io::Error| ServerError::Unreachable {
            addr: self_addr(self.addr),
            source,
        };
        self.stream.write_all(&out).await.map_err(io)?;
        let mut failure = None;
        let mut tags = Vec::new();
        let mut first = None;
        loop {
            let message = read_message(&mut self.stream, &mut self.read_buf, max_message_size)
                .await
                .map_err(|e| match e {
                    ReadError::Io(e) => ServerError::Unreachable {
                        addr: self_addr(self.addr),
                        source: e,
                    },
                    ReadError::Wire(e) => ServerError::Protocol(e),
                })?;
            match message {
                BackendMessage::ParameterStatus { name, value } => {
                    if let Some(standby) = hot_standby_change(&name, &value) {
                        self.standby = standby;
                        self.retire = true;
                    }
                    self.params.insert(name, value);
                }
                BackendMessage::ErrorResponse(fields) => failure = Some(fields),
                BackendMessage::CommandComplete { tag } => {
                    tags.push(String::from_utf8_lossy(&tag).into_owned())
                }
                BackendMessage::Other(frame) if frame.tag == b'D' && first.is_none() => {
                    first = Some(first_column(&frame.body));
                }
                BackendMessage::ReadyForQuery(_) => break,
                _ => {}
            }
        }
        match failure {
            Some(fields) => Err(ServerError::Refused(fields)),
            None => Ok((tags, first.flatten())),
        }
    }
}

/// The first column of a DataRow body, as text; `None` for NULL or a malformed row.
pub fn first_column(row: &[u8]) -> Option<String> {
    let count = i16::from_be_bytes(row.get(..2)?.try_into().ok()?);
    if count < 1 {
        return None;
    }
    let len = i32::from_be_bytes(row.get(2..6)?.try_into().ok()?);
    let len = usize::try_from(len).ok()?;
    let value = row.get(6..6 + len)?;
    Some(String::from_utf8_lossy(value).into_owned())
}

impl ServerError {
    /// Whether the node itself seems down or going away (unreachable, too slow, shutting
    /// down, starting up or in recovery: SQLSTATE class 57, "operator intervention"), as
    /// opposed to a refusal that will not change (a bad role, database or password, TLS).
    pub fn is_node_unavailable(&self) -> bool {
        match self {
            ServerError::Unreachable { .. } | ServerError::Timeout { .. } => true,
            ServerError::Refused(fields) => fields.code().starts_with("57"),
            _ => false,
        }
    }
}

fn self_addr(addr: SocketAddr) -> String {
    addr.to_string()
}

fn password<'a>(login: &'a ServerLogin, addr: &str) -> Result<&'a Secret, ServerError> {
    login
        .password
        .as_ref()
        .ok_or_else(|| ServerError::NoPassword {
            addr: addr.to_owned(),
            user: login.user.to_string(),
        })
}

/// SSLRequest and handshake per `server_tls.mode` (PostgreSQL docs, 55.2.10 "SSL Session
/// Encryption"): the server answers one byte, `S` or `N`.
async fn negotiate_tls(
    mut tcp: TcpStream,
    login: &ServerLogin,
    addr: &str,
) -> Result<Stream, ServerError> {
    let Some(connector) = login.tls.connector() else {
        return Ok(Stream::Plain(tcp));
    };
    let required = login.tls.is_required();
    let unreachable = |source: io::Error| ServerError::Unreachable {
        addr: addr.to_owned(),
        source,
    };
    let mut request = BytesMut::new();
    startup::encode_ssl_request(&mut request);
    tcp.write_all(&request).await.map_err(unreachable)?;
    let answer = tcp.read_u8().await.map_err(unreachable)?;
    match answer {
        b'S' => {
            let name = ServerTls::server_name(&login.host).map_err(|e| {
                unreachable(io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
            })?;
            let tls = connector.connect(name, tcp).await.map_err(unreachable)?;
            Ok(Stream::ClientTls(Box::new(tls)))
        }
        b'N' if !required => Ok(Stream::Plain(tcp)),
        b'N' => Err(ServerError::TlsRefused {
            addr: addr.to_owned(),
        }),
        other => Err(WireError::UnexpectedTag(other).into()),
    }
}

/// Why a message could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    Io(io::Error),
    Wire(WireError),
}

/// Reads one whole message (used during login and internal queries, not on the relay path).
pub(crate) async fn read_message(
    stream: &mut Stream,
    buf: &mut BytesMut,
    max_message_size: usize,
) -> Result<BackendMessage, ReadError> {
    loop {
        if let Some(f) = frame::decode(buf, max_message_size).map_err(ReadError::Wire)? {
            return BackendMessage::decode(f).map_err(ReadError::Wire);
        }
        if stream.read_buf(buf).await.map_err(ReadError::Io)? == 0 {
            return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_column_of_a_row_is_read_and_bad_rows_are_none() {
        let mut row = BytesMut::new();
        meridian_wire::backend::encode_data_row(&mut row, &[Some(b"0/3000148"), None]);
        assert_eq!(first_column(&row[5..]).as_deref(), Some("0/3000148"));
        let mut null = BytesMut::new();
        meridian_wire::backend::encode_data_row(&mut null, &[None]);
        assert_eq!(first_column(&null[5..]), None);
        assert_eq!(first_column(&[0, 1, 0, 0, 0, 9, b'x']), None, "truncated");
        assert_eq!(first_column(&[0, 0]), None, "no column");
        assert_eq!(first_column(&[]), None);
    }
}
