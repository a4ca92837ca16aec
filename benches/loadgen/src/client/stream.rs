//! The two halves of a session's connection, over plain TCP, TLS or WebSocket. Enums rather
//! than boxed trait objects: a plain session then holds its socket halves as it did before
//! TLS came in, with no heap allocation per half, which counts at tens of thousands of
//! sessions (the WebSocket halves, with their buffers, are boxed so as not to grow the
//! others). Every byte read or written through them is counted for the process (after TLS,
//! if any: with plain TCP or WebSocket, the bytes of the wire above TCP).
//!
//! A plain TCP reader may have the kernel stamp what it receives (`stamp_arrivals`): one
//! thread reading thousands of sockets gets to the last of them long after its bytes
//! arrived, and a latency to the last of many receivers must not include that queue.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, Interest, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::ws_stream::{self, WsReader, WsWriter};

pub enum Reader {
    Tcp(OwnedReadHalf),
    Tls(ReadHalf<TlsStream<TcpStream>>),
    Ws(Box<WsReader>),
}

pub enum Writer {
    Tcp(OwnedWriteHalf),
    Tls(WriteHalf<TlsStream<TcpStream>>),
    Ws(Box<WsWriter>),
}

/// Counted here for TCP and TLS, in client/ws_stream.rs for WebSocket (its wire bytes).
pub(super) static READ: AtomicU64 = AtomicU64::new(0);
pub(super) static WRITTEN: AtomicU64 = AtomicU64::new(0);

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

/// After the upgrade: `first_bytes` are what came after the server's answer head.
pub fn split_ws(tcp: TcpStream, first_bytes: Vec<u8>) -> (Reader, Writer) {
    let (r, w) = ws_stream::halves(tcp, first_bytes);
    (Reader::Ws(Box::new(r)), Writer::Ws(Box::new(w)))
}

impl Reader {
    /// Has the kernel stamp every segment this plain TCP socket receives (SO_TIMESTAMPNS),
    /// for `read_stamped`; a TLS or WebSocket reader is left as it is (its reads are stamped
    /// on return).
    pub fn stamp_arrivals(&self) -> io::Result<()> {
        let Reader::Tcp(r) = self else { return Ok(()) };
        let on: libc::c_int = 1;
        // SAFETY: a valid socket and an int option of the size given.
        let rc = unsafe {
            libc::setsockopt(
                r.as_ref().as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    }

    /// Reads into `buf`; with the bytes, when they arrived in Unix nanoseconds: the kernel's
    /// stamp of the last segment read where `stamp_arrivals` asked for it (so no earlier than
    /// any of the bytes arrived), else the time of this read.
    pub async fn read_stamped(&mut self, buf: &mut [u8]) -> io::Result<(usize, u128)> {
        let Reader::Tcp(r) = self else {
            let n = self.read(buf).await?;
            return Ok((n, crate::stats::unix_nanos()));
        };
        let tcp: &TcpStream = r.as_ref();
        loop {
            tcp.readable().await?;
            match tcp.try_io(Interest::READABLE, || recv_stamped(tcp.as_raw_fd(), buf)) {
                Ok((n, stamp)) => {
                    READ.fetch_add(n as u64, Ordering::Relaxed);
                    return Ok((n, stamp.unwrap_or_else(crate::stats::unix_nanos)));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// One recvmsg(2): the bytes read and the kernel's SCM_TIMESTAMPNS, if it sent one.
fn recv_stamped(fd: std::os::fd::RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<u128>)> {
    // Room for one control message holding a timespec, aligned as cmsghdr wants.
    let mut control = [0u64; 8];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: zeroed msghdr is valid; its pointers are set to live buffers below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: msg points at buf and control, both alive and of the lengths given.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut stamp = None;
    // SAFETY: the CMSG_* walk stays within msg_controllen, as the kernel filled it.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                stamp = Some(ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, stamp))
}

impl AsyncRead for Reader {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = match self.get_mut() {
            Reader::Tcp(r) => Pin::new(r).poll_read(cx, buf),
            Reader::Tls(r) => Pin::new(r).poll_read(cx, buf),
            Reader::Ws(r) => return Pin::new(r.as_mut()).poll_read(cx, buf),
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
            Writer::Ws(w) => return Pin::new(w.as_mut()).poll_write(cx, buf),
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
            Writer::Ws(w) => Pin::new(w.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Writer::Tcp(w) => Pin::new(w).poll_shutdown(cx),
            Writer::Tls(w) => Pin::new(w).poll_shutdown(cx),
            Writer::Ws(w) => Pin::new(w.as_mut()).poll_shutdown(cx),
        }
    }
}
