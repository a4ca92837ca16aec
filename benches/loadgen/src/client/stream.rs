//! The two halves of a session's connection, over plain TCP or TLS. Enums rather than boxed
//! trait objects: a plain session then holds its socket halves as it did before TLS came
//! in, with no heap allocation per half, which counts at tens of thousands of sessions.
//! Every byte read or written through them is counted for the process (after TLS, if any:
//! with plain TCP, the bytes of the wire above TCP).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

pub enum Reader {
    Tcp(OwnedReadHalf),
    Tls(ReadHalf<TlsStream<TcpStream>>),
}

pub enum Writer {
    Tcp(OwnedWriteHalf),
    Tls(WriteHalf<TlsStream<TcpStream>>),
}

static READ: AtomicU64 = AtomicU64::new(0);
static WRITTEN: AtomicU64 = AtomicU64::new(0);

/// Bytes read and written so far by every session of this process, in that order.
pub fn bytes_so_far() -> (u64, u64) {
    (READ.load(Ordering::Relaxed), WRITTEN.load(Ordering::Relaxed))
}

pub fn split_tcp(tcp: TcpStream) -> (Reader, Writer) {
    let (r, w) = tcp.into_split();
    (Reader::Tcp(r), Writer::Tcp(w))
}

pub fn split_tls(tls: TlsStream<TcpStream>) -> (Reader, Writer) {
    let (r, w) = tokio::io::split(tls);
    (Reader::Tls(r), Writer::Tls(w))
}

impl AsyncRead for Reader {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = match self.get_mut() {
            Reader::Tcp(r) => Pin::new(r).poll_read(cx, buf),
            Reader::Tls(r) => Pin::new(r).poll_read(cx, buf),
        };
        READ.fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
        polled
    }
}

impl AsyncWrite for Writer {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = match self.get_mut() {
            Writer::Tcp(w) => Pin::new(w).poll_write(cx, buf),
            Writer::Tls(w) => Pin::new(w).poll_write(cx, buf),
        };
        if let Poll::Ready(Ok(n)) = polled {
            WRITTEN.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Writer::Tcp(w) => Pin::new(w).poll_flush(cx),
            Writer::Tls(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Writer::Tcp(w) => Pin::new(w).poll_shutdown(cx),
            Writer::Tls(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}
