//! A TCP connection, encrypted or not, as one type for the relay to read and write.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// A client connection (TLS accepted by the proxy) or a server connection (TLS initiated).
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS accepted from a client.
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// TLS towards a PostgreSQL server.
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::ServerTls(tls) => tls.get_ref().0,
            Stream::ClientTls(tls) => tls.get_ref().0,
        }
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        !matches!(self, Stream::Plain(_))
    }

    /// Whether the peer has closed the connection or sent something unsolicited, checked
    /// without blocking: for an idle pooled connection, any of these means it is unusable
    /// (a server that shuts down sends an ErrorResponse and closes).
    pub fn is_broken(&self) -> bool {
        let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        match socket2::SockRef::from(self.tcp()).peek(&mut byte) {
            Ok(_) => true,
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
        }
    }
}

impl Stream {
    /// Writes all of `buf`. A plain socket is first written without the write future: when
    /// the socket has room (nearly always in a relay) that is one system call and a few
    /// dozen instructions, where `write_all`'s future machinery costs a few hundred more.
    pub async fn send(&mut self, buf: &[u8]) -> io::Result<()> {
        let written = match self {
            Stream::Plain(tcp) => match tcp.try_write(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            },
            _ => 0,
        };
        if written == buf.len() {
            return Ok(());
        }
        tokio::io::AsyncWriteExt::write_all(self, &buf[written..]).await
    }

    /// Reads what the connection holds into the spare capacity of `buf` (the caller keeps
    /// some), waiting until there is something; `Ok(0)` is the end of the stream. The relay's
    /// read path, polled for the client and the server on every turn.
    ///
    /// A plain socket is read through `try_io` once the runtime knows it is readable, which
    /// skips the layers of tokio's read future (under 100 instructions per read, counted by
    /// `bench/proxy-profile.sh`). Like that future, a read that does not fill the buffer
    /// clears the readiness it consumed (the socket is drained: epoll reports it again when
    /// more arrives), so the next turn waits instead of paying a system call to find the
    /// socket empty; `try_io` clears readiness only on `WouldBlock`, which is what the
    /// closure reports then, keeping the bytes it read. TLS streams read through their own
    /// buffered state.
    pub async fn fill(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        let Stream::Plain(tcp) = self else {
            return self.read_buf(buf).await;
        };
        loop {
            let mut short = None;
            let read = tcp.try_io(Interest::READABLE, || {
                let spare = buf.capacity() - buf.len();
                let n = tcp.try_read_buf(buf)?;
                if n > 0 && n < spare {
                    short = Some(n);
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            });
            match (read, short) {
                (_, Some(n)) => return Ok(n),
                (Err(e), None) if e.kind() == io::ErrorKind::WouldBlock => {}
                (read, None) => return read,
            }
            // The reader's waker slot, not `readable()`, whose waiter list costs a lock to
            // join and another to leave whenever the select drops this future.
            std::future::poll_fn(|cx| tcp.poll_read_ready(cx)).await?;
        }
    }

    /// Whether the peer's FIN (or an error) has already been seen by the runtime's reactor:
    /// the socket's read readiness is polled once, with a waker that does nothing (an idle
    /// pooled connection has no reader to displace). Readiness for "read closed" is never
    /// cleared once set, so a server that exited while the connection sat idle is always
    /// noticed. Not ready is the common answer and costs no system call; ready may also be a
    /// "readable" bit left by the last read, which a peek then tells apart.
    pub fn closed_by_peer(&self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.tcp().poll_read_ready(&mut cx) {
            Poll::Pending => false,
            Poll::Ready(Ok(())) => self.is_broken(),
            // The runtime is shutting down: the connection cannot be used anyway.
            Poll::Ready(Err(_)) => true,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::ServerTls(s) => Pin::new(s).poll_read(cx, buf),
            Stream::ClientTls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::ServerTls(s) => Pin::new(s).poll_write(cx, buf),
            Stream::ClientTls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::ServerTls(s) => Pin::new(s).poll_flush(cx),
            Stream::ClientTls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::ServerTls(s) => Pin::new(s).poll_shutdown(cx),
            Stream::ClientTls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
