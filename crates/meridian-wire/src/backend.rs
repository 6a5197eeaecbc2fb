//! Messages a server sends (PostgreSQL docs, 55.7 "Message Formats"), decoded where the proxy
//! must look inside, and the encoders for the ones the proxy speaks itself.

use bytes::{BufMut, Bytes, BytesMut};

use crate::WireError;
use crate::frame::{Frame, Reader, put_cstr, write};

/// The transaction status carried by ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransactionStatus {
    /// `I`: not in a transaction block.
    Idle,
    /// `T`: in a transaction block.
    InTransaction,
    /// `E`: in a failed transaction block (queries rejected until it ends).
    Failed,
}

impl TransactionStatus {
    /// The status byte.
    pub fn byte(self) -> u8 {
        match self {
            TransactionStatus::Idle => b'I',
            TransactionStatus::InTransaction => b'T',
            TransactionStatus::Failed => b'E',
        }
    }

    /// Parses the status byte.
    pub fn from_byte(byte: u8) -> Result<TransactionStatus, WireError> {
        match byte {
            b'I' => Ok(TransactionStatus::Idle),
            b'T' => Ok(TransactionStatus::InTransaction),
            b'E' => Ok(TransactionStatus::Failed),
            _ => Err(WireError::malformed(
                "ReadyForQuery",
                "unknown transaction status",
            )),
        }
    }
}

/// An authentication request (`R`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Authentication {
    /// Authentication succeeded.
    Ok,
    /// Send the password in clear text.
    CleartextPassword,
    /// Send an md5 response for this salt.
    Md5Password {
        /// The salt.
        salt: [u8; 4],
    },
    /// Start SASL with one of these mechanisms.
    Sasl {
        /// Mechanism names, e.g. `SCRAM-SHA-256`.
        mechanisms: Vec<String>,
    },
    /// SASL challenge data.
    SaslContinue(Bytes),
    /// SASL outcome data.
    SaslFinal(Bytes),
    /// A method Meridian does not speak (Kerberos, GSSAPI, SSPI).
    Unsupported(i32),
}

/// The fields of an ErrorResponse or NoticeResponse, in the order sent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorFields {
    fields: Vec<(u8, String)>,
}

impl ErrorFields {
    /// An error with severity, SQLSTATE and message: the three fields always present.
    pub fn new(severity: Severity, code: &str, message: impl Into<String>) -> ErrorFields {
        let severity = severity.as_str().to_owned();
        ErrorFields {
            fields: vec![
                (b'S', severity.clone()),
                (b'V', severity),
                (b'C', code.to_owned()),
                (b'M', message.into()),
            ],
        }
    }

    /// Adds a detail line (`D`).
    pub fn detail(mut self, text: impl Into<String>) -> ErrorFields {
        self.fields.push((b'D', text.into()));
        self
    }

    /// Adds a hint (`H`).
    pub fn hint(mut self, text: impl Into<String>) -> ErrorFields {
        self.fields.push((b'H', text.into()));
        self
    }

    /// The value of a field by its code byte.
    pub fn get(&self, code: u8) -> Option<&str> {
        self.fields
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_str())
    }

    /// The SQLSTATE (`C`).
    pub fn code(&self) -> &str {
        self.get(b'C').unwrap_or("")
    }

    /// The primary message (`M`).
    pub fn message(&self) -> &str {
        self.get(b'M').unwrap_or("")
    }

    /// The severity, not localized when the server sent `V` (PostgreSQL 9.6+).
    pub fn severity(&self) -> &str {
        self.get(b'V').or_else(|| self.get(b'S')).unwrap_or("")
    }

    fn decode(body: Bytes, message: &'static str) -> Result<ErrorFields, WireError> {
        let mut r = Reader::new(body, message);
        let mut fields = Vec::new();
        loop {
            let code = r.u8()?;
            if code == 0 {
                break;
            }
            // Field values are in the server's encoding; lossy is fine for what we inspect.
            let value = String::from_utf8_lossy(&r.cstr()?).into_owned();
            fields.push((code, value));
        }
        r.finish()?;
        Ok(ErrorFields { fields })
    }

    fn encode(&self, buf: &mut BytesMut) {
        for (code, value) in &self.fields {
            buf.put_u8(*code);
            put_cstr(buf, value.as_bytes());
        }
        buf.put_u8(0);
    }
}

/// Severity of an error or notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session goes on.
    Error,
    /// The session ends.
    Fatal,
    /// Informational.
    Notice,
    /// A warning.
    Warning,
}

impl Severity {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Notice => "NOTICE",
            Severity::Warning => "WARNING",
        }
    }
}

/// A message from a server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendMessage {
    /// `R`.
    Authentication(Authentication),
    /// `K`: the key that cancels this session.
    BackendKeyData {
        /// Server process ID.
        process_id: i32,
        /// Secret key (4 bytes in protocol 3.0).
        secret_key: Bytes,
    },
    /// `S`: a run-time parameter's current value.
    ParameterStatus {
        /// Parameter name.
        name: String,
        /// Its value.
        value: String,
    },
    /// `Z`: ready for a new query.
    ReadyForQuery(TransactionStatus),
    /// `E`.
    ErrorResponse(ErrorFields),
    /// `N`.
    NoticeResponse(ErrorFields),
    /// `C`: a statement completed, with its tag (`INSERT 0 1`, `SET`, ...).
    CommandComplete {
        /// The command tag.
        tag: Bytes,
    },
    /// `v`: the server speaks an older minor version or ignored some `_pq_.` options.
    NegotiateProtocolVersion {
        /// Newest minor version supported.
        newest_minor: i32,
        /// Options not recognized.
        unrecognized: Vec<String>,
    },
    /// `1`.
    ParseComplete,
    /// `2`.
    BindComplete,
    /// `3`.
    CloseComplete,
    /// Any other message, relayed untouched.
    Other(Frame),
}

impl BackendMessage {
    /// Decodes a frame from a server.
    pub fn decode(frame: Frame) -> Result<BackendMessage, WireError> {
        let Frame { tag, body } = frame;
        Ok(match tag {
            b'R' => BackendMessage::Authentication(decode_authentication(body)?),
            b'K' => {
                let mut r = Reader::new(body, "BackendKeyData");
                let process_id = r.i32()?;
                let secret_key = r.rest();
                if secret_key.len() < 4 {
                    return Err(WireError::malformed(
                        "BackendKeyData",
                        "secret key too short",
                    ));
                }
                BackendMessage::BackendKeyData {
                    process_id,
                    secret_key,
                }
            }
            b'S' => {
                let mut r = Reader::new(body, "ParameterStatus");
                let name = r.utf8()?;
                let value = String::from_utf8_lossy(&r.cstr()?).into_owned();
                r.finish()?;
                BackendMessage::ParameterStatus { name, value }
            }
            b'Z' => {
                let mut r = Reader::new(body, "ReadyForQuery");
                let status = TransactionStatus::from_byte(r.u8()?)?;
                r.finish()?;
                BackendMessage::ReadyForQuery(status)
            }
            b'E' => BackendMessage::ErrorResponse(ErrorFields::decode(body, "ErrorResponse")?),
            b'N' => BackendMessage::NoticeResponse(ErrorFields::decode(body, "NoticeResponse")?),
            b'C' => {
                let mut r = Reader::new(body, "CommandComplete");
                let tag = r.cstr()?;
                r.finish()?;
                BackendMessage::CommandComplete { tag }
            }
            b'v' => {
                let mut r = Reader::new(body, "NegotiateProtocolVersion");
                let newest_minor = r.i32()?;
                let count = r.i32()?;
                let mut unrecognized = Vec::new();
                for _ in 0..count.max(0) {
                    unrecognized.push(r.utf8()?);
                }
                r.finish()?;
                BackendMessage::NegotiateProtocolVersion {
                    newest_minor,
                    unrecognized,
                }
            }
            b'1' | b'2' | b'3' => {
                if !body.is_empty() {
                    return Err(WireError::malformed(
                        "ParseComplete/BindComplete/CloseComplete",
                        "has a body",
                    ));
                }
                match tag {
                    b'1' => BackendMessage::ParseComplete,
                    b'2' => BackendMessage::BindComplete,
                    _ => BackendMessage::CloseComplete,
                }
            }
            _ => BackendMessage::Other(Frame { tag, body }),
        })
    }
}

fn decode_authentication(body: Bytes) -> Result<Authentication, WireError> {
    let mut r = Reader::new(body, "Authentication");
    let kind = r.i32()?;
    let auth = match kind {
        0 => Authentication::Ok,
        3 => Authentication::CleartextPassword,
        5 => {
            let salt = r.bytes(4)?;
            Authentication::Md5Password {
                salt: [salt[0], salt[1], salt[2], salt[3]],
            }
        }
        10 => {
            let mut mechanisms = Vec::new();
            loop {
                let name = r.utf8()?;
                if name.is_empty() {
                    break;
                }
                mechanisms.push(name);
            }
            Authentication::Sasl { mechanisms }
        }
        11 => Authentication::SaslContinue(r.rest()),
        12 => Authentication::SaslFinal(r.rest()),
        other => {
            r.rest();
            Authentication::Unsupported(other)
        }
    };
    r.finish()?;
    Ok(auth)
}

/// Writes AuthenticationOk.
pub fn encode_authentication_ok(buf: &mut BytesMut) {
    write(buf, b'R', |b| b.put_i32(0));
}

/// Writes AuthenticationMD5Password.
pub fn encode_authentication_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    write(buf, b'R', |b| {
        b.put_i32(5);
        b.put_slice(&salt);
    });
}

/// Writes AuthenticationSASL offering these mechanisms.
pub fn encode_authentication_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    write(buf, b'R', |b| {
        b.put_i32(10);
        for mechanism in mechanisms {
            put_cstr(b, mechanism.as_bytes());
        }
        b.put_u8(0);
    });
}

/// Writes AuthenticationSASLContinue.
pub fn encode_authentication_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    write(buf, b'R', |b| {
        b.put_i32(11);
        b.put_slice(data);
    });
}

/// Writes AuthenticationSASLFinal.
pub fn encode_authentication_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    write(buf, b'R', |b| {
        b.put_i32(12);
        b.put_slice(data);
    });
}

/// Writes BackendKeyData.
pub fn encode_backend_key_data(buf: &mut BytesMut, process_id: i32, secret_key: &[u8]) {
    write(buf, b'K', |b| {
        b.put_i32(process_id);
        b.put_slice(secret_key);
    });
}

/// Writes ParameterStatus.
pub fn encode_parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    write(buf, b'S', |b| {
        put_cstr(b, name.as_bytes());
        put_cstr(b, value.as_bytes());
    });
}

/// Writes ReadyForQuery.
pub fn encode_ready_for_query(buf: &mut BytesMut, status: TransactionStatus) {
    write(buf, b'Z', |b| b.put_u8(status.byte()));
}

/// Writes an ErrorResponse.
pub fn encode_error_response(buf: &mut BytesMut, fields: &ErrorFields) {
    write(buf, b'E', |b| fields.encode(b));
}

/// Writes a NoticeResponse.
pub fn encode_notice_response(buf: &mut BytesMut, fields: &ErrorFields) {
    write(buf, b'N', |b| fields.encode(b));
}

/// Writes CommandComplete.
pub fn encode_command_complete(buf: &mut BytesMut, tag: &[u8]) {
    write(buf, b'C', |b| put_cstr(b, tag));
}

/// The type OID of `text` (PostgreSQL's `pg_type`).
pub const TEXT_OID: u32 = 25;

/// Writes a RowDescription of text columns in text format, named `names` (what `SHOW`
/// answers with).
pub fn encode_text_row_description(buf: &mut BytesMut, names: &[&str]) {
    write(buf, b'T', |b| {
        b.put_i16(i16::try_from(names.len()).unwrap_or(i16::MAX));
        for name in names {
            put_cstr(b, name.as_bytes());
            b.put_u32(0); // no table
            b.put_i16(0); // no column number
            b.put_u32(TEXT_OID);
            b.put_i16(-1); // variable length
            b.put_i32(-1); // no type modifier
            b.put_i16(0); // text format
        }
    });
}

/// Writes a DataRow; `None` is SQL NULL.
pub fn encode_data_row(buf: &mut BytesMut, values: &[Option<&[u8]>]) {
    write(buf, b'D', |b| {
        b.put_i16(i16::try_from(values.len()).unwrap_or(i16::MAX));
        for value in values {
            match value {
                Some(v) => {
                    b.put_i32(i32::try_from(v.len()).unwrap_or(i32::MAX));
                    b.put_slice(v);
                }
                None => b.put_i32(-1),
            }
        }
    });
}

/// Writes BindComplete.
pub fn encode_bind_complete(buf: &mut BytesMut) {
    write(buf, b'2', |_| {});
}

/// Writes NoData.
pub fn encode_no_data(buf: &mut BytesMut) {
    write(buf, b'n', |_| {});
}

/// Writes ParameterDescription with these parameter type OIDs.
pub fn encode_parameter_description(buf: &mut BytesMut, types: &[u32]) {
    write(buf, b't', |b| {
        b.put_i16(i16::try_from(types.len()).unwrap_or(i16::MAX));
        for oid in types {
            b.put_u32(*oid);
        }
    });
}

/// Writes ParseComplete.
pub fn encode_parse_complete(buf: &mut BytesMut) {
    write(buf, b'1', |_| {});
}

/// Writes CloseComplete.
pub fn encode_close_complete(buf: &mut BytesMut) {
    write(buf, b'3', |_| {});
}

/// Writes NegotiateProtocolVersion.
pub fn encode_negotiate_protocol_version(
    buf: &mut BytesMut,
    newest_minor: i32,
    unrecognized: &[&str],
) {
    write(buf, b'v', |b| {
        b.put_i32(newest_minor);
        b.put_i32(unrecognized.len() as i32);
        for option in unrecognized {
            put_cstr(b, option.as_bytes());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame;

    fn decode_all(bytes: &[u8]) -> Vec<BackendMessage> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(f) = frame::decode(&mut buf, 1 << 20).unwrap() {
            out.push(BackendMessage::decode(f).unwrap());
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        out
    }

    /// PostgreSQL 15.18's reply to pgbench's Bind/Describe/Execute/Sync (recorded; see
    /// `tests/fixtures/pgbench-prepared-select.bin`).
    #[test]
    fn decodes_a_recorded_extended_query_reply() {
        let recorded: &[u8] = b"2\0\0\0\x04T\0\0\0!\0\x01abalance\0\0\0@\x06\0\x03\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0\
D\0\0\0\x0b\0\x01\0\0\0\x010C\0\0\0\rSELECT 1\0Z\0\0\0\x05I";
        let messages = decode_all(recorded);
        assert_eq!(messages[0], BackendMessage::BindComplete);
        assert!(matches!(
            &messages[1],
            BackendMessage::Other(Frame { tag: b'T', .. })
        ));
        assert!(matches!(
            &messages[2],
            BackendMessage::Other(Frame { tag: b'D', .. })
        ));
        assert_eq!(
            messages[3],
            BackendMessage::CommandComplete {
                tag: Bytes::from_static(b"SELECT 1")
            }
        );
        assert_eq!(
            messages[4],
            BackendMessage::ReadyForQuery(TransactionStatus::Idle)
        );
    }

    #[test]
    fn decodes_a_login_reply() {
        let recorded: &[u8] = b"R\0\0\0\x08\0\0\0\0S\0\0\0\x17in_hot_standby\0off\0\
S\0\0\0\x15TimeZone\0Etc/UTC\0K\0\0\0\x0c\0\0\x12\x34\xde\xad\xbe\xefZ\0\0\0\x05I";
        let messages = decode_all(recorded);
        assert_eq!(
            messages[0],
            BackendMessage::Authentication(Authentication::Ok)
        );
        assert_eq!(
            messages[1],
            BackendMessage::ParameterStatus {
                name: "in_hot_standby".into(),
                value: "off".into()
            }
        );
        assert_eq!(
            messages[3],
            BackendMessage::BackendKeyData {
                process_id: 0x1234,
                secret_key: Bytes::from_static(b"\xde\xad\xbe\xef")
            }
        );
    }

    #[test]
    fn encoders_round_trip_through_the_decoder() {
        let mut buf = BytesMut::new();
        encode_authentication_sasl(&mut buf, &["SCRAM-SHA-256"]);
        encode_authentication_md5(&mut buf, [1, 2, 3, 4]);
        encode_authentication_sasl_continue(&mut buf, b"r=abc");
        encode_authentication_sasl_final(&mut buf, b"v=xyz");
        encode_authentication_ok(&mut buf);
        encode_parameter_status(&mut buf, "server_version", "15.18");
        encode_backend_key_data(&mut buf, 7, &[9, 9, 9, 9]);
        let error = ErrorFields::new(
            Severity::Fatal,
            "28P01",
            "password authentication failed for user \"app\"",
        )
        .detail("details")
        .hint("a hint");
        encode_error_response(&mut buf, &error);
        encode_command_complete(&mut buf, b"SET");
        encode_parse_complete(&mut buf);
        encode_close_complete(&mut buf);
        encode_negotiate_protocol_version(&mut buf, 0, &["_pq_.compression"]);
        encode_ready_for_query(&mut buf, TransactionStatus::InTransaction);
        let messages = decode_all(&buf);
        assert_eq!(
            messages[0],
            BackendMessage::Authentication(Authentication::Sasl {
                mechanisms: vec!["SCRAM-SHA-256".into()]
            })
        );
        assert_eq!(
            messages[1],
            BackendMessage::Authentication(Authentication::Md5Password { salt: [1, 2, 3, 4] })
        );
        assert_eq!(
            messages[2],
            BackendMessage::Authentication(Authentication::SaslContinue(Bytes::from_static(
                b"r=abc"
            )))
        );
        let BackendMessage::ErrorResponse(decoded) = &messages[7] else {
            panic!("{:?}", messages[7])
        };
        assert_eq!(decoded, &error);
        assert_eq!(decoded.code(), "28P01");
        assert_eq!(decoded.severity(), "FATAL");
        assert_eq!(decoded.get(b'H'), Some("a hint"));
        assert_eq!(
            messages[11],
            BackendMessage::NegotiateProtocolVersion {
                newest_minor: 0,
                unrecognized: vec!["_pq_.compression".into()]
            }
        );
        assert_eq!(
            messages[12],
            BackendMessage::ReadyForQuery(TransactionStatus::InTransaction)
        );
    }

    #[test]
    fn malformed_messages_are_errors() {
        let cases: &[(u8, &[u8])] = &[
            (b'Z', b"X"),
            (b'Z', b"II"),
            (b'R', b"\0\0"),
            (b'R', b"\0\0\0\x05\x01"),
            (b'K', b"\0\0\0\x01\x02"),
            (b'E', b"Cno terminator"),
            (b'1', b"x"),
        ];
        for &(tag, body) in cases {
            let frame = Frame {
                tag,
                body: Bytes::copy_from_slice(body),
            };
            assert!(BackendMessage::decode(frame).is_err(), "{tag:?} {body:?}");
        }
    }
}
