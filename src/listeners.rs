//! The TCP addresses `martlet serve` listens on, claimed before any core binds them (see
//! [`shards::listener::Claim`]): a second server on the same port refuses to start and names
//! the address, instead of silently taking a share of the clients through SO_REUSEPORT.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use shards::listener::Claim;

use crate::config::Config;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// RFC 6120 client port: plain TCP, then STARTTLS.
    Starttls,
    /// XEP-0368: TLS from the first byte.
    DirectTls,
    /// The HTTP listener: RFC 7395 WebSocket (`/xmpp-websocket`), XEP-0206 BOSH, XEP-0156
    /// discovery, XEP-0363 files.
    WebSocket,
    /// The same over TLS.
    Https,
    /// The Prometheus endpoint; served by core 0 alone.
    Metrics,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Starttls => "XMPP clients, STARTTLS",
            Kind::DirectTls => "XMPP clients, Direct TLS",
            Kind::WebSocket => "XMPP clients, WebSocket (RFC 7395, /xmpp-websocket) and BOSH (XEP-0206, /http-bind)",
            Kind::Https => "the same over TLS: wss:// and https://",
            Kind::Metrics => "metrics (GET /metrics)",
        })
    }
}

/// The addresses to listen on, each held by this process while it lives.
pub struct Claimed {
    pub listeners: Vec<(SocketAddr, Kind)>,
    _claims: Vec<Claim>,
}

/// Claims every configured address. An IPv6 wildcard on a host without IPv6 is left out
/// with a warning when another address serves the same clients (the default pairs `[::]`
/// with `0.0.0.0`); anything else that cannot be claimed stops the start, naming the key
/// and the address.
pub fn claim(cfg: &Config) -> Result<Claimed, String> {
    let configured = [
        ("c2s.listen", Kind::Starttls, cfg.c2s.listen.addrs()),
        ("c2s_direct_tls.listen", Kind::DirectTls, cfg.c2s_direct_tls.listen.addrs()),
        ("http.listen", Kind::WebSocket, cfg.http.listen.addrs()),
        ("http.tls_listen", Kind::Https, cfg.http.tls_listen.addrs()),
        ("metrics.listen", Kind::Metrics, cfg.metrics_addr().into_iter().collect()),
    ];
    let mut claimed = Claimed { listeners: Vec::new(), _claims: Vec::new() };
    for (key, kind, addrs) in configured {
        let alone = addrs.len() == 1;
        for addr in addrs {
            match Claim::take(addr) {
                Ok(claim) => {
                    claimed._claims.push(claim);
                    claimed.listeners.push((addr, kind));
                }
                Err(e) if !alone && no_ipv6(addr, &e) => log::warn!("{key} {addr}: skipped, this host has no IPv6 ({e})"),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                    return Err(format!("{key} {addr}: address already in use: another process (another martlet?) listens there"));
                }
                Err(e) => return Err(format!("{key} {addr}: {e}")),
            }
        }
    }
    Ok(claimed)
}

fn no_ipv6(addr: SocketAddr, e: &io::Error) -> bool {
    addr.is_ipv6() && (e.kind() == io::ErrorKind::AddrNotAvailable || e.raw_os_error() == Some(libc::EAFNOSUPPORT))
}
