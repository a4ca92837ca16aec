//! SO_REUSEPORT listeners: each core binds its own socket on the same address and the kernel
//! spreads incoming connections over them, so no core hands accepted sockets to another.
//!
//! SO_REUSEPORT also lets any other socket of the same user join the group, so a second
//! server on the same port would start without a word and take half the clients. A
//! [`Claim`] taken first, without SO_REUSEPORT, makes that an EADDRINUSE at start.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd};
use std::time::{Duration, Instant};

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

/// Holds an address for this process, so only its own per-core listeners can bind it.
/// Bound without SO_REUSEPORT, it fails with EADDRINUSE when any other socket holds the
/// address, whatever that socket's options; SO_REUSEPORT, set once bound, lets this
/// process's listeners join. It never listens, so it takes no connections, and while it
/// lives a second server racing this one to start fails too. Keep it for the process's
/// life.
pub struct Claim {
    _socket: Socket,
}

/// How long a claim waits for a listener to go before calling it another server's. A
/// server killed a moment ago still listens for a while: its io_uring instance, torn down
/// after the process exits, holds the sockets until then (seen: listeners with no process
/// after `kill -9` and `wait`).
const PREVIOUS_RUN_GONE_WAIT: Duration = Duration::from_secs(3);
const CLAIM_RETRY_DELAY: Duration = Duration::from_millis(50);

impl Claim {
    pub fn take(addr: SocketAddr) -> std::io::Result<Claim> {
        let deadline = Instant::now() + PREVIOUS_RUN_GONE_WAIT;
        loop {
            match Claim::try_take(addr) {
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                    std::thread::sleep(CLAIM_RETRY_DELAY);
                }
                claimed => return claimed,
            }
        }
    }

    fn try_take(addr: SocketAddr) -> std::io::Result<Claim> {
        // SO_REUSEADDR without SO_REUSEPORT: a restart is not refused by the previous run's
        // connections in TIME_WAIT, but a listening socket anywhere on the address refuses it.
        let socket = tcp_socket(addr)?;
        match socket.bind(&addr.into()) {
            Ok(()) => {}
            // Connections the previous run left closing on the port refuse it as well; a
            // restart goes on when no listener is there, joining them with SO_REUSEPORT.
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && !crate::listening::someone_listens(addr)? => {
                socket.set_reuse_port(true)?;
                socket.bind(&addr.into())?;
                return Ok(Claim { _socket: socket });
            }
            Err(e) => return Err(e),
        }
        socket.set_reuse_port(true)?;
        Ok(Claim { _socket: socket })
    }
}

/// A TCP socket with SO_REUSEADDR; an IPv6 one is IPv6-only, so that `[::]` and `0.0.0.0`
/// on the same port are two listeners side by side (as Prosody binds `*` and `::`), not a
/// dual-stack one clashing with the IPv4 one.
fn tcp_socket(addr: SocketAddr) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}

/// Binds a listening socket with SO_REUSEPORT on `addr`; call once per core, after taking
/// the address's [`Claim`].
pub fn bind_reuseport(addr: SocketAddr, backlog: i32) -> std::io::Result<glommio::net::TcpListener> {
    let socket = tcp_socket(addr)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn reuseport_listener(addr: SocketAddr) -> std::io::Result<Socket> {
        let s = tcp_socket(addr)?;
        s.set_reuse_port(true)?;
        s.bind(&addr.into())?;
        s.listen(16)?;
        Ok(s)
    }

    #[test]
    fn a_claim_lets_only_this_process_join_and_refuses_a_second_claim() {
        let claim = Claim::take("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = claim._socket.local_addr().unwrap().as_socket().unwrap();
        let _core = reuseport_listener(addr).expect("our own listeners join the claimed address");
        let err = Claim::take(addr).err().expect("a second server's claim fails");
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        drop(claim);
        assert!(Claim::take(addr).is_err(), "a listening socket keeps refusing claims");
    }

    #[test]
    fn a_claim_fails_where_another_reuseport_socket_listens() {
        let outsider = reuseport_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = outsider.local_addr().unwrap().as_socket().unwrap();
        assert_eq!(Claim::take(addr).err().map(|e| e.kind()), Some(std::io::ErrorKind::AddrInUse));
    }

    #[test]
    fn ipv6_and_ipv4_wildcards_share_a_port() {
        let v4 = reuseport_listener("0.0.0.0:0".parse().unwrap()).unwrap();
        let port = v4.local_addr().unwrap().as_socket().unwrap().port();
        match Claim::take(SocketAddr::from(([0u16; 8], port))) {
            Ok(_) => {}
            // A host without IPv6 cannot show it.
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {}
            Err(e) => panic!("[::]:{port} next to 0.0.0.0:{port}: {e}"),
        }
    }
}
