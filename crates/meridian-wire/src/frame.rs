//! Frames: the `tag + length + body` envelope of every message after startup.
//!
//! A frame is one type byte, then an `Int32` length that counts itself and the body but not
//! the type byte (PostgreSQL docs, 55.7 "Message Formats"). The proxy relays most frames
//! without looking inside; [`check`] tells it where a frame ends before the whole frame has
//! arrived, and refuses a length above the configured maximum before any allocation.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::WireError;

/// The default largest message body accepted: 64 MiB. PostgreSQL's own limit is 1 GiB
/// (`PQ_LARGE_MESSAGE_LIMIT`), far above anything a client should send through a pool.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// The type byte and total size of a frame whose header has arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The message type byte, e.g. `b'Q'`.
    pub tag: u8,
    /// Bytes of the whole frame: type byte, length field and body.
    pub frame_len: usize,
}

impl FrameHeader {
    /// Bytes of the body alone.
    pub fn body_len(&self) -> usize {
        self.frame_len - 5
    }
}

/// Reads the header at the start of `buf`: `Ok(None)` until five bytes are there.
///
/// The whole frame may not have arrived yet; compare `frame_len` with `buf.len()`.
pub fn check(buf: &[u8], max_body: usize) -> Result<Option<FrameHeader>, WireError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(WireError::BadLength(len.into()));
    }
    let body = len as usize - 4;
    if body > max_body {
        return Err(WireError::TooLarge {
            len: body,
            max: max_body,
        });
    }
    Ok(Some(FrameHeader {
        tag: buf[0],
        frame_len: body + 5,
    }))
}

/// A whole frame, split off the read buffer without copying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The message type byte.
    pub tag: u8,
    /// The body, without type byte and length.
    pub body: Bytes,
}

/// Splits the next whole frame off `buf`: `Ok(None)` when more bytes are needed.
pub fn decode(buf: &mut BytesMut, max_body: usize) -> Result<Option<Frame>, WireError> {
    let Some(header) = check(buf, max_body)? else {
        return Ok(None);
    };
    if buf.len() < header.frame_len {
        buf.reserve(header.frame_len - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(header.frame_len);
    frame.advance(5);
    Ok(Some(Frame {
        tag: header.tag,
        body: frame.freeze(),
    }))
}

/// Writes one message: the type byte, a length back-patched after `body` has written.
pub fn write(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    write_untagged(buf, body);
}

/// Writes a length-prefixed message without a type byte (startup-phase packets).
pub fn write_untagged(buf: &mut BytesMut, body: impl FnOnce(&mut BytesMut)) {
    let start = buf.len();
    buf.put_i32(0);
    body(buf);
    let len = (buf.len() - start) as i32;
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Writes a NUL-terminated string.
pub fn put_cstr(buf: &mut BytesMut, text: &[u8]) {
    buf.put_slice(text);
    buf.put_u8(0);
}

/// Reads the fields of a message body, every read checked against the remaining length.
#[derive(Debug, Clone)]
pub struct Reader {
    body: Bytes,
    message: &'static str,
}

impl Reader {
    /// A reader over `body` of the message named `message` (for error texts).
    pub fn new(body: Bytes, message: &'static str) -> Reader {
        Reader { body, message }
    }

    fn short(&self) -> WireError {
        WireError::malformed(self.message, "shorter than its fields")
    }

    /// A NUL-terminated string, without its NUL.
    pub fn cstr(&mut self) -> Result<Bytes, WireError> {
        let end = memchr::memchr(0, &self.body).ok_or(WireError::malformed(
            self.message,
            "string without terminator",
        ))?;
        let text = self.body.split_to(end);
        self.body.advance(1);
        Ok(text)
    }

    /// A NUL-terminated string that must be UTF-8 (names and parameters, not SQL text).
    pub fn utf8(&mut self) -> Result<String, WireError> {
        let bytes = self.cstr()?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| WireError::malformed(self.message, "string is not UTF-8"))
    }

    /// A byte.
    pub fn u8(&mut self) -> Result<u8, WireError> {
        if self.body.is_empty() {
            return Err(self.short());
        }
        Ok(self.body.get_u8())
    }

    /// A big-endian `Int16`.
    pub fn i16(&mut self) -> Result<i16, WireError> {
        if self.body.len() < 2 {
            return Err(self.short());
        }
        Ok(self.body.get_i16())
    }

    /// A big-endian `Int32`.
    pub fn i32(&mut self) -> Result<i32, WireError> {
        if self.body.len() < 4 {
            return Err(self.short());
        }
        Ok(self.body.get_i32())
    }

    /// `n` raw bytes.
    pub fn bytes(&mut self, n: usize) -> Result<Bytes, WireError> {
        if self.body.len() < n {
            return Err(self.short());
        }
        Ok(self.body.split_to(n))
    }

    /// Everything left.
    pub fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.body)
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }

    /// Fails unless every byte was read: trailing garbage is a malformed message.
    pub fn finish(&self) -> Result<(), WireError> {
        if self.body.is_empty() {
            Ok(())
        } else {
            Err(WireError::malformed(
                self.message,
                "trailing bytes after its fields",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_waits_for_the_header_then_reports_the_frame_size() {
        assert_eq!(check(b"Q\0\0", 100), Ok(None));
        let header = check(b"Q\0\0\0\x0dSELECT", 100).unwrap().unwrap();
        assert_eq!(
            header,
            FrameHeader {
                tag: b'Q',
                frame_len: 14
            }
        );
        assert_eq!(header.body_len(), 9);
    }

    #[test]
    fn check_refuses_bad_and_oversized_lengths_before_allocating() {
        assert_eq!(check(b"Q\0\0\0\x03", 100), Err(WireError::BadLength(3)));
        assert_eq!(
            check(b"Q\xff\xff\xff\xff", 100),
            Err(WireError::BadLength(-1))
        );
        assert_eq!(
            check(b"D\x7f\xff\xff\xff", 1 << 20),
            Err(WireError::TooLarge {
                len: 0x7fff_fffb,
                max: 1 << 20
            })
        );
    }

    #[test]
    fn decode_splits_whole_frames_only() {
        let mut buf = BytesMut::from(&b"Z\0\0\0\x05IQ\0\0\0\x0bSEL"[..]);
        let frame = decode(&mut buf, 100).unwrap().unwrap();
        assert_eq!(
            frame,
            Frame {
                tag: b'Z',
                body: Bytes::from_static(b"I")
            }
        );
        assert_eq!(decode(&mut buf, 100), Ok(None));
        buf.extend_from_slice(b"ECT\0");
        let frame = decode(&mut buf, 100).unwrap().unwrap();
        assert_eq!(frame.body, Bytes::from_static(b"SELECT\0"));
        assert!(buf.is_empty());
    }

    #[test]
    fn write_back_patches_the_length() {
        let mut buf = BytesMut::new();
        write(&mut buf, b'Q', |b| put_cstr(b, b"SELECT 1"));
        assert_eq!(&buf[..], b"Q\0\0\0\x0dSELECT 1\0");
    }

    #[test]
    fn reader_checks_every_field() {
        let mut r = Reader::new(Bytes::from_static(b"ab\0\0\x01\x02"), "Test");
        assert_eq!(r.cstr().unwrap(), Bytes::from_static(b"ab"));
        assert_eq!(r.i16().unwrap(), 1);
        assert!(r.i32().is_err());
        let mut r = Reader::new(Bytes::from_static(b"no terminator"), "Test");
        assert!(matches!(r.cstr(), Err(WireError::Malformed { .. })));
    }
}
