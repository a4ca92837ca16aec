//! SO_REUSEPORT listeners: each core binds its own socket on the same address and the kernel
//! spreads incoming connections over them, so no core hands accepted sockets to another.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd};
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};

/// Socket options every accepted connection gets.
#[derive(Clone, Copy, Debug)]
pub struct StreamOptions {
    /// TCP keepalive idle time: finds peers that vanished without a FIN (a phone that lost
    /// its radio) even when the application protocol is quiet.
    pub keepalive_idle: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_retries: u32,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            keepalive_idle: Duration::from_secs(120),
            keepalive_interval: Duration::from_secs(20),
            keepalive_retries: 4,
        }
    }
}

/// Binds a listening socket with SO_REUSEPORT on `addr`; call once per core.
pub fn bind_reuseport(addr: SocketAddr, backlog: i32) -> std::io::Result<glommio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    // SAFETY: the descriptor is a bound, listening TCP socket we own and hand over whole.
    Ok(unsafe { glommio::net::TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

/// Applies [`StreamOptions`] and TCP_NODELAY (XMPP stanzas are small and latency-bound).
pub fn tune_stream(stream: &glommio::net::TcpStream, opts: &StreamOptions) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let keepalive = TcpKeepalive::new()
        .with_time(opts.keepalive_idle)
        .with_interval(opts.keepalive_interval)
        .with_retries(opts.keepalive_retries);
    // SAFETY: the descriptor stays open for the borrow: `stream` outlives this call.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    SockRef::from(&fd).set_tcp_keepalive(&keepalive)
}
