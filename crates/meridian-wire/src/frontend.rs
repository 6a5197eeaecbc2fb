//! Messages a client sends after startup (PostgreSQL docs, 55.7 "Message Formats").
//!
//! Decoded only when the proxy must look inside: names of prepared statements and portals it
//! rewrites, SQL it classifies. SQL text, statement names and parameter values are kept as
//! bytes: they are in the client's encoding, which need not be UTF-8.

use bytes::{BufMut, Bytes, BytesMut};

use crate::WireError;
use crate::frame::{Frame, Reader, put_cstr, write};

/// What Describe and Close refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `'S'`: a prepared statement.
    Statement,
    /// `'P'`: a portal.
    Portal,
}

impl Target {
    fn decode(byte: u8, message: &'static str) -> Result<Target, WireError> {
        match byte {
            b'S' => Ok(Target::Statement),
            b'P' => Ok(Target::Portal),
            _ => Err(WireError::malformed(
                message,
                "target is neither 'S' nor 'P'",
            )),
        }
    }

    fn byte(self) -> u8 {
        match self {
            Target::Statement => b'S',
            Target::Portal => b'P',
        }
    }
}

/// A message from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrontendMessage {
    /// `Q`: simple query, one or more statements.
    Query {
        /// The SQL text.
        sql: Bytes,
    },
    /// `P`: create a prepared statement (named, or the unnamed one when `name` is empty).
    Parse {
        /// Statement name.
        name: Bytes,
        /// The SQL text.
        sql: Bytes,
        /// Parameter type OIDs (0 = unspecified).
        param_types: Vec<u32>,
    },
    /// `B`: bind parameters to a statement, creating a portal.
    Bind {
        /// Portal name.
        portal: Bytes,
        /// Statement name.
        statement: Bytes,
        /// Formats, values and result formats, relayed untouched.
        rest: Bytes,
    },
    /// `D`: describe a statement or portal.
    Describe {
        /// Statement or portal.
        target: Target,
        /// Its name.
        name: Bytes,
    },
    /// `E`: execute a portal.
    Execute {
        /// Portal name.
        portal: Bytes,
        /// Row limit, 0 for all.
        max_rows: i32,
    },
    /// `C`: close a statement or portal.
    Close {
        /// Statement or portal.
        target: Target,
        /// Its name.
        name: Bytes,
    },
    /// `S`: end of an extended-protocol batch.
    Sync,
    /// `H`: send what is pending without ending the batch.
    Flush,
    /// `X`: the client is leaving.
    Terminate,
    /// `d`: COPY data.
    CopyData(Bytes),
    /// `c`: end of COPY data.
    CopyDone,
    /// `f`: COPY failed on the client side.
    CopyFail {
        /// The client's reason.
        message: Bytes,
    },
    /// `F`: the legacy function-call protocol, relayed untouched.
    FunctionCall(Bytes),
    /// `p`: PasswordMessage, SASLInitialResponse or SASLResponse; which one depends on the
    /// authentication request that preceded it.
    Password(Bytes),
}

impl FrontendMessage {
    /// Decodes a frame from a client.
    pub fn decode(frame: Frame) -> Result<FrontendMessage, WireError> {
        let Frame { tag, body } = frame;
        let message = match tag {
            b'Q' => {
                let mut r = Reader::new(body, "Query");
                let sql = r.cstr()?;
                r.finish()?;
                FrontendMessage::Query { sql }
            }
            b'P' => {
                let mut r = Reader::new(body, "Parse");
                let name = r.cstr()?;
                let sql = r.cstr()?;
                let count = r.i16()?;
                if count < 0 {
                    return Err(WireError::malformed("Parse", "negative parameter count"));
                }
                let mut param_types = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    param_types.push(r.i32()? as u32);
                }
                r.finish()?;
                FrontendMessage::Parse {
                    name,
                    sql,
                    param_types,
                }
            }
            b'B' => {
                let mut r = Reader::new(body, "Bind");
                let portal = r.cstr()?;
                let statement = r.cstr()?;
                FrontendMessage::Bind {
                    portal,
                    statement,
                    rest: r.rest(),
                }
            }
            b'D' | b'C' => {
                let kind = if tag == b'D' { "Describe" } else { "Close" };
                let mut r = Reader::new(body, kind);
                let target = Target::decode(r.u8()?, kind)?;
                let name = r.cstr()?;
                r.finish()?;
                if tag == b'D' {
                    FrontendMessage::Describe { target, name }
                } else {
                    FrontendMessage::Close { target, name }
                }
            }
            b'E' => {
                let mut r = Reader::new(body, "Execute");
                let portal = r.cstr()?;
                let max_rows = r.i32()?;
                r.finish()?;
                FrontendMessage::Execute { portal, max_rows }
            }
            b'S' | b'H' | b'X' | b'c' => {
                if !body.is_empty() {
                    return Err(WireError::malformed(
                        "Sync/Flush/Terminate/CopyDone",
                        "has a body",
                    ));
                }
                match tag {
                    b'S' => FrontendMessage::Sync,
                    b'H' => FrontendMessage::Flush,
                    b'X' => FrontendMessage::Terminate,
                    _ => FrontendMessage::CopyDone,
                }
            }
            b'd' => FrontendMessage::CopyData(body),
            b'f' => {
                let mut r = Reader::new(body, "CopyFail");
                let message = r.cstr()?;
                r.finish()?;
                FrontendMessage::CopyFail { message }
            }
            b'F' => FrontendMessage::FunctionCall(body),
            b'p' => FrontendMessage::Password(body),
            other => return Err(WireError::UnexpectedTag(other)),
        };
        Ok(message)
    }
}

/// Writes a Query.
pub fn encode_query(buf: &mut BytesMut, sql: &[u8]) {
    write(buf, b'Q', |b| put_cstr(b, sql));
}

/// Writes a Parse.
pub fn encode_parse(buf: &mut BytesMut, name: &[u8], sql: &[u8], param_types: &[u32]) {
    write(buf, b'P', |b| {
        put_cstr(b, name);
        put_cstr(b, sql);
        b.put_i16(param_types.len() as i16);
        for &oid in param_types {
            b.put_u32(oid);
        }
    });
}

/// Writes a Bind whose formats and values (`rest`) come from a client's Bind.
pub fn encode_bind(buf: &mut BytesMut, portal: &[u8], statement: &[u8], rest: &[u8]) {
    write(buf, b'B', |b| {
        put_cstr(b, portal);
        put_cstr(b, statement);
        b.put_slice(rest);
    });
}

/// Writes a Describe.
pub fn encode_describe(buf: &mut BytesMut, target: Target, name: &[u8]) {
    write(buf, b'D', |b| {
        b.put_u8(target.byte());
        put_cstr(b, name);
    });
}

/// Writes an Execute.
pub fn encode_execute(buf: &mut BytesMut, portal: &[u8], max_rows: i32) {
    write(buf, b'E', |b| {
        put_cstr(b, portal);
        b.put_i32(max_rows);
    });
}

/// Writes a Close.
pub fn encode_close(buf: &mut BytesMut, target: Target, name: &[u8]) {
    write(buf, b'C', |b| {
        b.put_u8(target.byte());
        put_cstr(b, name);
    });
}

/// Writes a Sync.
pub fn encode_sync(buf: &mut BytesMut) {
    write(buf, b'S', |_| {});
}

/// Writes a Terminate.
pub fn encode_terminate(buf: &mut BytesMut) {
    write(buf, b'X', |_| {});
}

/// Writes a PasswordMessage carrying a password or md5 response (NUL-terminated).
pub fn encode_password(buf: &mut BytesMut, password: &[u8]) {
    write(buf, b'p', |b| put_cstr(b, password));
}

/// Writes a SASLInitialResponse.
pub fn encode_sasl_initial_response(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    write(buf, b'p', |b| {
        put_cstr(b, mechanism.as_bytes());
        b.put_i32(data.len() as i32);
        b.put_slice(data);
    });
}

/// Writes a SASLResponse.
pub fn encode_sasl_response(buf: &mut BytesMut, data: &[u8]) {
    write(buf, b'p', |b| b.put_slice(data));
}

/// Reads the mechanism and data of a SASLInitialResponse body (`FrontendMessage::Password`).
pub fn decode_sasl_initial_response(body: Bytes) -> Result<(String, Bytes), WireError> {
    let mut r = Reader::new(body, "SASLInitialResponse");
    let mechanism = r.utf8()?;
    let len = r.i32()?;
    let data = if len < 0 {
        Bytes::new()
    } else {
        r.bytes(len as usize)?
    };
    r.finish()?;
    Ok((mechanism, data))
}

/// Reads the password of a PasswordMessage body, without its terminating NUL.
pub fn decode_password(body: Bytes) -> Result<Bytes, WireError> {
    let mut r = Reader::new(body, "PasswordMessage");
    let password = r.cstr()?;
    r.finish()?;
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame;

    fn decode_all(mut bytes: BytesMut) -> Vec<FrontendMessage> {
        let mut out = Vec::new();
        while let Some(f) = frame::decode(&mut bytes, 1 << 20).unwrap() {
            out.push(FrontendMessage::decode(f).unwrap());
        }
        assert!(bytes.is_empty());
        out
    }

    /// The two batches pgbench 15 sent for `pgbench -M prepared -S -t 1` (recorded through a
    /// capturing relay to PostgreSQL 15.18, 2026-11-24; the whole conversation is
    /// `tests/fixtures/pgbench-prepared-select.bin`): Parse + Sync, then Bind, Describe
    /// portal, Execute, Sync.
    #[test]
    fn decodes_recorded_pgbench_prepared_batches() {
        let parse: &[u8] =
            b"P\0\0\0@P_0\0SELECT abalance FROM pgbench_accounts WHERE aid = $1;\0\0\0S\0\0\0\x04";
        let execute: &[u8] = b"B\0\0\0\x1a\0P_0\0\0\0\0\x01\0\0\0\x0587754\0\x01\0\0\
D\0\0\0\x06P\0E\0\0\0\t\0\0\0\0\0S\0\0\0\x04";
        assert_eq!(
            decode_all(BytesMut::from(parse)),
            vec![
                FrontendMessage::Parse {
                    name: Bytes::from_static(b"P_0"),
                    sql: Bytes::from_static(
                        b"SELECT abalance FROM pgbench_accounts WHERE aid = $1;"
                    ),
                    param_types: vec![],
                },
                FrontendMessage::Sync,
            ]
        );
        assert_eq!(
            decode_all(BytesMut::from(execute)),
            vec![
                FrontendMessage::Bind {
                    portal: Bytes::new(),
                    statement: Bytes::from_static(b"P_0"),
                    rest: Bytes::from_static(b"\0\0\0\x01\0\0\0\x0587754\0\x01\0\0"),
                },
                FrontendMessage::Describe {
                    target: Target::Portal,
                    name: Bytes::new()
                },
                FrontendMessage::Execute {
                    portal: Bytes::new(),
                    max_rows: 0
                },
                FrontendMessage::Sync,
            ]
        );
    }

    #[test]
    fn encoders_round_trip_through_the_decoder() {
        let mut buf = BytesMut::new();
        encode_query(&mut buf, b"SELECT 1");
        encode_parse(&mut buf, b"s1", b"SELECT $1", &[23]);
        encode_bind(&mut buf, b"", b"s1", b"\0\0\0\x01\0\0\0\x011\0\0");
        encode_describe(&mut buf, Target::Statement, b"s1");
        encode_execute(&mut buf, b"", 10);
        encode_close(&mut buf, Target::Statement, b"s1");
        encode_sync(&mut buf);
        encode_terminate(&mut buf);
        let messages = decode_all(buf);
        assert_eq!(messages.len(), 8);
        assert_eq!(
            messages[1],
            FrontendMessage::Parse {
                name: Bytes::from_static(b"s1"),
                sql: Bytes::from_static(b"SELECT $1"),
                param_types: vec![23]
            }
        );
        assert_eq!(
            messages[4],
            FrontendMessage::Execute {
                portal: Bytes::new(),
                max_rows: 10
            }
        );
        assert_eq!(
            messages[5],
            FrontendMessage::Close {
                target: Target::Statement,
                name: Bytes::from_static(b"s1")
            }
        );
        assert_eq!(messages[7], FrontendMessage::Terminate);
    }

    #[test]
    fn sasl_initial_response_round_trips() {
        let mut buf = BytesMut::new();
        encode_sasl_initial_response(&mut buf, "SCRAM-SHA-256", b"n,,n=,r=abc");
        let frame = frame::decode(&mut buf, 1024).unwrap().unwrap();
        let FrontendMessage::Password(body) = FrontendMessage::decode(frame).unwrap() else {
            panic!("not a password message");
        };
        let (mechanism, data) = decode_sasl_initial_response(body).unwrap();
        assert_eq!(mechanism, "SCRAM-SHA-256");
        assert_eq!(&data[..], b"n,,n=,r=abc");
    }

    #[test]
    fn malformed_messages_are_errors() {
        let cases: &[(u8, &[u8])] = &[
            (b'Q', b"no terminator"),
            (b'Q', b"SELECT 1\0trailing"),
            (b'P', b"s\0SELECT\0\xff\xff"),
            (b'P', b"s\0SELECT\0\0\x02\0\0\0\x17"),
            (b'D', b"Xname\0"),
            (b'E', b"\0\0\0"),
            (b'S', b"x"),
            (b'Z', b""),
        ];
        for &(tag, body) in cases {
            let frame = Frame {
                tag,
                body: Bytes::copy_from_slice(body),
            };
            let error = FrontendMessage::decode(frame).unwrap_err();
            assert_eq!(error.sqlstate(), "08P01", "{tag:?} {body:?}");
        }
    }
}
