//! Startup-phase packets: the untagged first message of a connection.
//!
//! A connection opens with `Int32 length, Int32 code`: a StartupMessage (code = protocol
//! version), an SSLRequest, a GSSENCRequest or a CancelRequest (PostgreSQL docs, 55.2.1 and
//! 55.7). PostgreSQL caps these at 10 000 bytes (`MAX_STARTUP_PACKET_LENGTH`); so do we.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::WireError;
use crate::frame::{Reader, put_cstr, write_untagged};

/// Largest startup packet accepted, as in PostgreSQL.
pub const MAX_STARTUP_PACKET: usize = 10_000;

/// Protocol 3.0.
pub const PROTOCOL_3_0: u32 = 3 << 16;
const SSL_REQUEST_CODE: u32 = 80_877_103;
const GSSENC_REQUEST_CODE: u32 = 80_877_104;
const CANCEL_REQUEST_CODE: u32 = 80_877_102;

/// The first packet of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartupPacket {
    /// StartupMessage: protocol version and parameters (`user`, `database`, `options`, GUCs).
    Startup {
        /// Major version in the high 16 bits, minor in the low.
        version: u32,
        /// Parameter name/value pairs in the order sent.
        params: Vec<(String, String)>,
    },
    /// SSLRequest: the client asks for TLS.
    SslRequest,
    /// GSSENCRequest: the client asks for GSSAPI encryption.
    GssEncRequest,
    /// CancelRequest: cancel what the session with this key is running.
    CancelRequest {
        /// The session's process ID from BackendKeyData.
        process_id: i32,
        /// The session's secret key (4 bytes in protocol 3.0; longer from 3.2).
        secret_key: Bytes,
    },
}

impl StartupPacket {
    /// The value of a startup parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        match self {
            StartupPacket::Startup { params, .. } => params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str()),
            _ => None,
        }
    }
}

/// Splits the next startup packet off `buf`: `Ok(None)` when more bytes are needed.
pub fn decode(buf: &mut BytesMut) -> Result<Option<StartupPacket>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len < 8 {
        return Err(WireError::BadLength(len.into()));
    }
    let len = len as usize;
    if len > MAX_STARTUP_PACKET {
        return Err(WireError::TooLarge {
            len,
            max: MAX_STARTUP_PACKET,
        });
    }
    if buf.len() < len {
        return Ok(None);
    }
    let mut packet = buf.split_to(len).freeze();
    packet.advance(4);
    let code = packet.get_u32();
    let mut reader = Reader::new(packet, "StartupMessage");
    let decoded = match code {
        SSL_REQUEST_CODE => StartupPacket::SslRequest,
        GSSENC_REQUEST_CODE => StartupPacket::GssEncRequest,
        CANCEL_REQUEST_CODE => {
            let mut reader = Reader::new(reader.rest(), "CancelRequest");
            let process_id = reader.i32()?;
            let secret_key = reader.rest();
            if !(4..=256).contains(&secret_key.len()) {
                return Err(WireError::malformed(
                    "CancelRequest",
                    "secret key of a wrong length",
                ));
            }
            return Ok(Some(StartupPacket::CancelRequest {
                process_id,
                secret_key,
            }));
        }
        version if version >> 16 == 3 => {
            let mut params = Vec::new();
            loop {
                let name = reader.utf8()?;
                if name.is_empty() {
                    break;
                }
                let value = reader.utf8()?;
                params.push((name, value));
            }
            return reader
                .finish()
                .map(|()| Some(StartupPacket::Startup { version, params }));
        }
        version => return Err(WireError::UnsupportedProtocol(version)),
    };
    reader.finish()?;
    Ok(Some(decoded))
}

/// A StartupMessage for protocol 3.0 with these parameters.
pub fn encode_startup(buf: &mut BytesMut, params: &[(&str, &str)]) {
    write_untagged(buf, |buf| {
        buf.put_u32(PROTOCOL_3_0);
        for (name, value) in params {
            put_cstr(buf, name.as_bytes());
            put_cstr(buf, value.as_bytes());
        }
        buf.put_u8(0);
    });
}

/// An SSLRequest.
pub fn encode_ssl_request(buf: &mut BytesMut) {
    write_untagged(buf, |buf| buf.put_u32(SSL_REQUEST_CODE));
}

/// A CancelRequest for the session with this key.
pub fn encode_cancel_request(buf: &mut BytesMut, process_id: i32, secret_key: &[u8]) {
    write_untagged(buf, |buf| {
        buf.put_u32(CANCEL_REQUEST_CODE);
        buf.put_i32(process_id);
        buf.put_slice(secret_key);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What psql 15 sent to a listening socket for `psql "host=127.0.0.1 user=app
    /// dbname=shop sslmode=prefer gssencmode=disable"` after its SSLRequest was refused
    /// (recorded 2026-11-24).
    const PSQL_STARTUP: &[u8] =
        b"\0\0\0\x36\0\x03\0\0user\0app\0database\0shop\0application_name\0psql\0\0";
    /// The SSLRequest psql sent before it, recorded the same way.
    const PSQL_SSL_REQUEST: &[u8] = b"\0\0\0\x08\x04\xd2\x16/";

    #[test]
    fn decodes_a_recorded_startup_message() {
        let mut buf = BytesMut::from(PSQL_STARTUP);
        let packet = decode(&mut buf).unwrap().unwrap();
        assert_eq!(packet.param("user"), Some("app"));
        assert_eq!(packet.param("database"), Some("shop"));
        assert_eq!(packet.param("application_name"), Some("psql"));
        assert!(matches!(
            packet,
            StartupPacket::Startup {
                version: PROTOCOL_3_0,
                ..
            }
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn encode_and_decode_agree() {
        let mut buf = BytesMut::new();
        encode_startup(
            &mut buf,
            &[
                ("user", "app"),
                ("database", "shop"),
                ("application_name", "psql"),
            ],
        );
        assert_eq!(&buf[..], PSQL_STARTUP);
        let mut buf = BytesMut::new();
        encode_ssl_request(&mut buf);
        assert_eq!(&buf[..], PSQL_SSL_REQUEST);
        assert_eq!(decode(&mut buf).unwrap(), Some(StartupPacket::SslRequest));
        encode_cancel_request(&mut buf, 4242, &[1, 2, 3, 4]);
        assert_eq!(
            decode(&mut buf).unwrap(),
            Some(StartupPacket::CancelRequest {
                process_id: 4242,
                secret_key: Bytes::from_static(&[1, 2, 3, 4])
            })
        );
    }

    #[test]
    fn gssenc_request_is_recognised() {
        let mut buf = BytesMut::from(&b"\0\0\0\x08\x04\xd2\x16\x30"[..]);
        assert_eq!(
            decode(&mut buf).unwrap(),
            Some(StartupPacket::GssEncRequest)
        );
    }

    #[test]
    fn incomplete_packets_wait() {
        for cut in 0..PSQL_STARTUP.len() {
            let mut buf = BytesMut::from(&PSQL_STARTUP[..cut]);
            assert_eq!(decode(&mut buf), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn refuses_what_postgres_refuses() {
        let mut too_long = BytesMut::from(&b"\0\x01\0\0\0\x03\0\0"[..]);
        assert!(matches!(
            decode(&mut too_long),
            Err(WireError::TooLarge { .. })
        ));
        let mut too_short = BytesMut::from(&b"\0\0\0\x04\0\x03\0\0"[..]);
        assert_eq!(decode(&mut too_short), Err(WireError::BadLength(4)));
        let mut protocol_2 = BytesMut::from(&b"\0\0\0\x09\0\x02\0\0\0"[..]);
        let error = decode(&mut protocol_2).unwrap_err();
        assert_eq!(error, WireError::UnsupportedProtocol(2 << 16));
        assert_eq!(error.sqlstate(), "0A000");
        let mut unterminated = BytesMut::from(&b"\0\0\0\x0d\0\x03\0\0user\0"[..]);
        assert!(matches!(
            decode(&mut unterminated),
            Err(WireError::Malformed { .. })
        ));
        let mut trailing = BytesMut::from(&b"\0\0\0\x0d\x04\xd2\x16\x2fxxxxx"[..]);
        assert!(matches!(
            decode(&mut trailing),
            Err(WireError::Malformed { .. })
        ));
    }
}
