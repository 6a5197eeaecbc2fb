//! A client's first moments: TLS negotiation, the startup packet, cancel requests and
//! authentication (PostgreSQL docs, 55.2.1 "Start-up" and 55.2.10 "SSL Session Encryption").
//!
//! Authentication is the proxy's own, against its configured users; the servers never see
//! the client's password. An unknown user goes through the same SCRAM exchange as a known one
//! (with a salt fixed per name, as PostgreSQL's mock authentication does) and fails with the
//! same error, so probing does not reveal which users exist.

use std::collections::BTreeMap;

use bytes::BytesMut;
use meridian_wire::auth::{
    AuthError, Md5Server, SCRAM_SHA_256, ScramServer, mock_salt, random_md5_salt, random_nonce,
};
use meridian_wire::backend::{self, ErrorFields};
use meridian_wire::frontend::{self, FrontendMessage};
use meridian_wire::startup::{self, PROTOCOL_3_0, StartupPacket};
use meridian_wire::{WireError, frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Shared;
use crate::cancel::send_cancel;
use crate::failure::Failure;
use crate::settings::{ClientAuth, User};
use crate::stream::Stream;

/// Password messages are small; anything bigger is not a password.
const MAX_AUTH_MESSAGE: usize = 8 * 1024;

/// A client that proved who it is.
#[derive(Debug)]
pub(crate) struct Authenticated {
    pub stream: Stream,
    /// Bytes the client sent after its last authentication message (pipelined queries).
    pub buffered: BytesMut,
    pub user: User,
    pub database: String,
    /// Run-time parameters from the startup packet, lower-case names.
    pub params: BTreeMap<String, String>,
}

/// What the first packet led to.
#[derive(Debug)]
pub(crate) enum Opening {
    /// A logged-in client.
    Session(Box<Authenticated>),
    /// A cancel request, handled; the connection is done.
    Cancel,
}

/// Reads the startup sequence and authenticates. On failure, the error has been sent (when
/// the connection was still usable) and the connection is to be closed.
pub(crate) async fn open(shared: &Shared, tcp: TcpStream) -> Result<Opening, Failure> {
    let mut stream = Stream::Plain(tcp);
    let mut buf = BytesMut::with_capacity(1024);
    let mut tls_done = false;
    let mut gss_refused = false;
    let packet = loop {
        let packet = match read_startup(&mut stream, &mut buf).await {
            Ok(packet) => packet,
            Err(failure) => return Err(report(&mut stream, failure).await),
        };
        match packet {
            StartupPacket::SslRequest if !tls_done => {
                tls_done = true;
                let Some(acceptor) = &shared.settings.client_tls else {
                    write_or_close(&mut stream, b"N").await?;
                    continue;
                };
                if !buf.is_empty() {
                    // Bytes after an SSLRequest, before the handshake, could only have been
                    // injected by a man in the middle (CVE-2021-23214).
                    let failure = Failure::Protocol(WireError::malformed(
                        "SSLRequest",
                        "followed by unencrypted data",
                    ));
                    return Err(report(&mut stream, failure).await);
                }
                write_or_close(&mut stream, b"S").await?;
                let Stream::Plain(tcp) = stream else {
                    unreachable!("TLS is negotiated once")
                };
                let tls = acceptor.0.accept(tcp).await.map_err(|_| {
                    Failure::Protocol(WireError::malformed("TLS handshake", "failed"))
                })?;
                stream = Stream::ServerTls(Box::new(tls));
            }
            StartupPacket::GssEncRequest if !gss_refused => {
                gss_refused = true;
                write_or_close(&mut stream, b"N").await?;
            }
            StartupPacket::CancelRequest {
                process_id,
                secret_key,
            } => {
                if let Some(target) = shared.cancels.lookup(process_id, &secret_key) {
                    let _ = send_cancel(&target).await;
                }
                return Ok(Opening::Cancel);
            }
            StartupPacket::Startup { version, params } => break (version, params),
            _ => {
                let failure = Failure::Protocol(WireError::malformed(
                    "startup",
                    "negotiation requested twice",
                ));
                return Err(report(&mut stream, failure).await);
            }
        }
    };
    let (version, params) = packet;
    match authenticate(shared, &mut stream, &mut buf, version, params).await {
        Ok((user, database, params)) => Ok(Opening::Session(Box::new(Authenticated {
            stream,
            buffered: buf,
            user,
            database,
            params,
        }))),
        Err(failure) => Err(report(&mut stream, failure).await),
    }
}

async fn authenticate(
    shared: &Shared,
    stream: &mut Stream,
    buf: &mut BytesMut,
    version: u32,
    startup_params: Vec<(String, String)>,
) -> Result<(User, String, BTreeMap<String, String>), Failure> {
    let mut user_name = None;
    let mut database = None;
    let mut params = BTreeMap::new();
    let mut unrecognized = Vec::new();
    for (name, value) in startup_params {
        match name.as_str() {
            "user" => user_name = Some(value),
            "database" => database = Some(value),
            "replication" => {
                if !matches!(
                    value.to_ascii_lowercase().as_str(),
                    "false" | "off" | "no" | "0"
                ) {
                    return Err(Failure::Replication);
                }
            }
            "options" => params.extend(parse_options(&value)),
            _ if name.starts_with("_pq_.") => unrecognized.push(name),
            _ => {
                params.insert(name.to_ascii_lowercase(), value);
            }
        }
    }
    let user_name = user_name.filter(|u| !u.is_empty()).ok_or(Failure::NoUser)?;
    let database = database
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| user_name.clone());
    let mut out = BytesMut::new();
    if version != PROTOCOL_3_0 || !unrecognized.is_empty() {
        // A newer minor version or protocol options: say what we speak (55.2.1).
        let names: Vec<&str> = unrecognized.iter().map(String::as_str).collect();
        backend::encode_negotiate_protocol_version(&mut out, 0, &names);
    }

    let auth_failed = |source: AuthError| Failure::Auth {
        user: user_name.clone(),
        source,
    };
    let user = shared.settings.users.get(&user_name);
    match user.map(|u| &u.auth) {
        Some(ClientAuth::Trust) => {}
        Some(ClientAuth::Md5(hash)) => {
            let server = Md5Server::new(hash.expose().to_owned(), random_md5_salt());
            backend::encode_authentication_md5(&mut out, server.salt());
            send(stream, &mut out).await?;
            let body = read_password(stream, buf).await?;
            let response = frontend::decode_password(body)?;
            server.verify(&response).map_err(auth_failed)?;
        }
        Some(ClientAuth::Scram(_)) | None => {
            let mut server = match user.map(|u| &u.auth) {
                Some(ClientAuth::Scram(verifier)) => {
                    ScramServer::new(verifier.clone(), random_nonce())
                }
                _ => ScramServer::for_unknown_user_with_salt(
                    random_nonce(),
                    &mock_salt(&shared.mock_secret, &user_name),
                ),
            };
            backend::encode_authentication_sasl(&mut out, &[SCRAM_SHA_256]);
            send(stream, &mut out).await?;
            let (mechanism, first) =
                frontend::decode_sasl_initial_response(read_password(stream, buf).await?)?;
            if mechanism != SCRAM_SHA_256 {
                return Err(Failure::Protocol(WireError::malformed(
                    "SASLInitialResponse",
                    "mechanism is not SCRAM-SHA-256",
                )));
            }
            let server_first = server.client_first(&first).map_err(auth_failed)?;
            backend::encode_authentication_sasl_continue(&mut out, &server_first);
            send(stream, &mut out).await?;
            let client_final = read_password(stream, buf).await?;
            let server_final = server.client_final(&client_final).map_err(auth_failed)?;
            backend::encode_authentication_sasl_final(&mut out, &server_final);
        }
    }
    let user = user
        .cloned()
        .ok_or_else(|| auth_failed(AuthError::UnknownUser))?;
    backend::encode_authentication_ok(&mut out);
    send(stream, &mut out).await?;
    Ok((user, database, params))
}

/// Splits libpq's `options` (`-c name=value` or `--name=value`, backslash escapes a space;
/// PostgreSQL docs, 20.1.4 "Parameter Interaction via the Shell").
pub(crate) fn parse_options(options: &str) -> Vec<(String, String)> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut params = Vec::new();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let setting = if word == "-c" {
            words.next()
        } else if let Some(rest) = word.strip_prefix("--") {
            Some(rest.to_owned())
        } else {
            word.strip_prefix("-c").map(str::to_owned)
        };
        if let Some((name, value)) = setting.as_deref().and_then(|s| s.split_once('=')) {
            params.push((
                name.replace('-', "_").to_ascii_lowercase(),
                value.to_owned(),
            ));
        }
    }
    params
}

async fn read_startup(stream: &mut Stream, buf: &mut BytesMut) -> Result<StartupPacket, Failure> {
    loop {
        if let Some(packet) = startup::decode(buf)? {
            return Ok(packet);
        }
        if stream.read_buf(buf).await.unwrap_or(0) == 0 {
            return Err(Failure::Protocol(WireError::malformed(
                "startup",
                "connection closed",
            )));
        }
    }
}

/// Reads the client's next message, which must be a `p` (password or SASL response).
async fn read_password(stream: &mut Stream, buf: &mut BytesMut) -> Result<bytes::Bytes, Failure> {
    loop {
        if let Some(f) = frame::decode(buf, MAX_AUTH_MESSAGE)? {
            return match FrontendMessage::decode(f)? {
                FrontendMessage::Password(body) => Ok(body),
                // A client giving up on authentication closes with Terminate; nothing to say.
                FrontendMessage::Terminate => Err(Failure::Protocol(WireError::malformed(
                    "authentication",
                    "client terminated during authentication",
                ))),
                _ => Err(Failure::Protocol(WireError::malformed(
                    "authentication",
                    "expected a password message",
                ))),
            };
        }
        if stream.read_buf(buf).await.unwrap_or(0) == 0 {
            return Err(Failure::Protocol(WireError::malformed(
                "authentication",
                "connection closed",
            )));
        }
    }
}

async fn send(stream: &mut Stream, out: &mut BytesMut) -> Result<(), Failure> {
    let result = stream.write_all(out).await;
    out.clear();
    result
        .map_err(|_| Failure::Protocol(WireError::malformed("authentication", "connection closed")))
}

async fn write_or_close(stream: &mut Stream, bytes: &[u8]) -> Result<(), Failure> {
    stream
        .write_all(bytes)
        .await
        .map_err(|_| Failure::Protocol(WireError::malformed("startup", "connection closed")))
}

/// Sends the failure as an ErrorResponse (best effort) and hands it back.
pub(crate) async fn report(stream: &mut Stream, failure: Failure) -> Failure {
    send_error(stream, &failure.to_fields()).await;
    failure
}

/// Writes an ErrorResponse, ignoring a client that is already gone.
pub(crate) async fn send_error(stream: &mut Stream, fields: &ErrorFields) {
    let mut out = BytesMut::new();
    backend::encode_error_response(&mut out, fields);
    let _ = stream.write_all(&out).await;
    let _ = stream.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_split_as_postgres_does() {
        assert_eq!(
            parse_options(
                "-c search_path=app -c statement_timeout=5s --work-mem=64MB -cDateStyle=ISO"
            ),
            vec![
                ("search_path".into(), "app".into()),
                ("statement_timeout".into(), "5s".into()),
                ("work_mem".into(), "64MB".into()),
                ("datestyle".into(), "ISO".into()),
            ]
        );
        assert_eq!(
            parse_options(r"-c application_name=my\ app"),
            vec![("application_name".into(), "my app".into())]
        );
        assert!(parse_options("-c novalue -x").is_empty());
    }
}
