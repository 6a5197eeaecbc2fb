//! A client that writes the protocol by hand, for what real drivers never send: malformed
//! packets, and extended-protocol batches spelled out message by message (PostgreSQL docs,
//! 55.7 "Message Formats").
//!
//! Written independently of `meridian-wire`, so that a mistake shared by the proxy's encoder
//! and decoder cannot hide here.

use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::STEP;

/// One backend message.
#[derive(Clone)]
pub struct Message {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}{:?}",
            char::from(self.tag),
            String::from_utf8_lossy(&self.body)
        )
    }
}

impl Message {
    /// A field of an ErrorResponse or NoticeResponse (`C` SQLSTATE, `V` severity, `M` ...).
    pub fn field(&self, code: u8) -> Option<String> {
        let mut rest = &self.body[..];
        while let Some((&kind, after)) = rest.split_first() {
            if kind == 0 {
                break;
            }
            let end = after.iter().position(|&b| b == 0)?;
            if kind == code {
                return Some(String::from_utf8_lossy(&after[..end]).into_owned());
            }
            rest = &after[end + 1..];
        }
        None
    }

    /// The SQLSTATE of an ErrorResponse; panics on any other message.
    pub fn sqlstate(&self) -> String {
        assert_eq!(self.tag, b'E', "expected an ErrorResponse, got {self:?}");
        self.field(b'C').expect("an ErrorResponse has a SQLSTATE")
    }

    /// The non-localized severity of an ErrorResponse (`ERROR`, `FATAL`, ...).
    pub fn severity(&self) -> String {
        assert_eq!(self.tag, b'E', "expected an ErrorResponse, got {self:?}");
        self.field(b'V')
            .or_else(|| self.field(b'S'))
            .expect("an ErrorResponse has a severity")
    }

    /// The columns of a DataRow, as text.
    pub fn data_row(&self) -> Vec<Option<String>> {
        assert_eq!(self.tag, b'D', "expected a DataRow, got {self:?}");
        let mut body = &self.body[..];
        let count = body.get_i16();
        (0..count)
            .map(|_| {
                let len = body.get_i32();
                (len >= 0).then(|| {
                    let value = String::from_utf8_lossy(&body[..len as usize]).into_owned();
                    body.advance(len as usize);
                    value
                })
            })
            .collect()
    }
}

/// The message tags of `messages` as a string, e.g. `"12DCZ"`.
pub fn tags(messages: &[Message]) -> String {
    messages.iter().map(|m| char::from(m.tag)).collect()
}

/// A connection to the proxy driven byte by byte.
#[derive(Debug)]
pub struct RawClient {
    stream: TcpStream,
    buf: BytesMut,
}

impl RawClient {
    /// Opens a TCP connection and sends nothing yet.
    pub async fn connect(addr: SocketAddr) -> RawClient {
        RawClient {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
        }
    }

    /// Logs in as `user` (an `auth = "trust"` user) to database `postgres`, up to the first
    /// ReadyForQuery.
    pub async fn login_trust(addr: SocketAddr, user: &str) -> RawClient {
        let mut client = RawClient::connect(addr).await;
        client
            .send(&startup(&[("user", user), ("database", "postgres")]))
            .await;
        let replies = client.until_ready().await;
        assert_eq!(
            replies.first().map(|m| (m.tag, m.body.clone())),
            Some((b'R', 0i32.to_be_bytes().to_vec())),
            "a trust login starts with AuthenticationOk: {replies:?}"
        );
        assert!(
            replies.iter().any(|m| m.tag == b'K'),
            "no BackendKeyData in {replies:?}"
        );
        client
    }

    /// Writes `bytes` as they are.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads one byte outside any message (the answer to an SSLRequest).
    pub async fn read_byte(&mut self) -> u8 {
        if let Some(byte) = self.buf.first().copied() {
            self.buf.advance(1);
            return byte;
        }
        tokio::time::timeout(STEP, self.stream.read_u8())
            .await
            .expect("no answer within the step timeout")
            .unwrap()
    }

    /// The next message, or `None` once the proxy has closed the connection (an orderly
    /// close, or a reset because the proxy left bytes of ours unread). Panics if nothing
    /// comes within [`STEP`].
    pub async fn read(&mut self) -> Option<Message> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                assert!(len >= 4, "the proxy sent a message length of {len}");
                let total = 1 + len as usize;
                if self.buf.len() >= total {
                    let mut frame = self.buf.split_to(total);
                    let tag = frame[0];
                    frame.advance(5);
                    return Some(Message {
                        tag,
                        body: frame.to_vec(),
                    });
                }
            }
            let read = tokio::time::timeout(STEP, self.stream.read_buf(&mut self.buf))
                .await
                .expect("the proxy neither answered nor closed within the step timeout");
            match read {
                Ok(0) => {
                    assert!(
                        self.buf.is_empty(),
                        "closed inside a message: {:?}",
                        &self.buf[..]
                    );
                    return None;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("reading from the proxy: {e}"),
            }
        }
    }

    /// Messages up to and including the next ReadyForQuery.
    pub async fn until_ready(&mut self) -> Vec<Message> {
        let mut messages = Vec::new();
        loop {
            let message = self
                .read()
                .await
                .unwrap_or_else(|| panic!("closed before ReadyForQuery, after {messages:?}"));
            let ready = message.tag == b'Z';
            messages.push(message);
            if ready {
                return messages;
            }
        }
    }

    /// The proxy's answer to something it must refuse: exactly one ErrorResponse, then the
    /// connection closes. Returns the error.
    pub async fn expect_error_then_close(&mut self) -> Message {
        let error = self
            .read()
            .await
            .expect("the proxy closed without an ErrorResponse");
        assert_eq!(error.tag, b'E', "expected an ErrorResponse, got {error:?}");
        if let Some(next) = self.read().await {
            panic!("expected the connection to close after {error:?}, got {next:?}");
        }
        error
    }
}

/// A StartupMessage, protocol 3.0.
pub fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = 196_608i32.to_be_bytes().to_vec();
    for (name, value) in params {
        cstr(&mut body, name.as_bytes());
        cstr(&mut body, value.as_bytes());
    }
    body.push(0);
    untagged(&body)
}

/// An SSLRequest.
pub fn ssl_request() -> Vec<u8> {
    untagged(&80_877_103i32.to_be_bytes())
}

/// A startup-phase packet: its length (itself included), then `body`.
pub fn untagged(body: &[u8]) -> Vec<u8> {
    let mut out = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// A message: `tag`, its length, `body`.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Query.
pub fn query(sql: &str) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, sql.as_bytes());
    message(b'Q', &body)
}

/// Parse of `sql` as statement `name`, parameter types left to the server.
pub fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, name.as_bytes());
    cstr(&mut body, sql.as_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    message(b'P', &body)
}

/// Bind of statement `statement` to the unnamed portal, with no parameters, text results.
pub fn bind(statement: &str) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, b"");
    cstr(&mut body, statement.as_bytes());
    body.extend_from_slice(&0i16.to_be_bytes()); // parameter format codes
    body.extend_from_slice(&0i16.to_be_bytes()); // parameter values
    body.extend_from_slice(&0i16.to_be_bytes()); // result format codes
    message(b'B', &body)
}

/// Execute of the unnamed portal, all rows.
pub fn execute() -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, b"");
    body.extend_from_slice(&0i32.to_be_bytes());
    message(b'E', &body)
}

/// Describe of statement `name`.
pub fn describe_statement(name: &str) -> Vec<u8> {
    let mut body = vec![b'S'];
    cstr(&mut body, name.as_bytes());
    message(b'D', &body)
}

/// Close of statement `name`.
pub fn close_statement(name: &str) -> Vec<u8> {
    let mut body = vec![b'S'];
    cstr(&mut body, name.as_bytes());
    message(b'C', &body)
}

/// Sync.
pub fn sync() -> Vec<u8> {
    message(b'S', &[])
}

/// Several messages sent as one write.
pub fn batch(messages: &[Vec<u8>]) -> Vec<u8> {
    messages.concat()
}

fn cstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(s);
    out.push(0);
}
