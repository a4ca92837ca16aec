//! Accepting connections on one core: per-address limits, the handshake deadline, then the
//! phases of [`super::negotiate`] and the bound session.

use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::net::{TcpListener, TcpStream};
use shards::contain::contained;
use shards::listener::{tune_stream, StreamOptions};

use super::conn::{Conn, ConnEnd, ConnectionSlot};
use super::negotiate::{LoggedIn, Unauthenticated};
use super::stream_error::StreamError;
use super::tls_stream::TlsStream;
use super::transport::Transport;
use crate::router::CoreState;

/// Pause after a failed accept (out of file descriptors, say) so the loop does not spin.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(50);

/// How a listener's connections start: the transport under the XMPP stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// RFC 6120: plain TCP, STARTTLS offered.
    Starttls,
    /// XEP-0368: TLS from the first byte.
    DirectTls,
    /// The HTTP listener: an upgrade to RFC 7395 WebSocket, or a BOSH, discovery or upload
    /// request answered on the way ([`super::websocket::upgrade`]).
    WebSocket,
    /// The same after a TLS handshake (`[http] tls_listen`).
    Https,
}

impl Entry {
    fn is_http(self) -> bool {
        matches!(self, Entry::WebSocket | Entry::Https)
    }
}

pub async fn accept_loop(core: Rc<CoreState>, listener: TcpListener, entry: Entry) {
    let opts = StreamOptions::default();
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                log::warn!("core {}: accept failed: {e}", core.id);
                glommio::timer::sleep(ACCEPT_RETRY_DELAY).await;
                continue;
            }
        };
        let Ok(peer) = stream.peer_addr() else { continue };
        if let Err(e) = tune_stream(&stream, &opts) {
            log::debug!("{peer}: socket options not set: {e}");
        }
        let core = core.clone();
        glommio::spawn_local(async move {
            // A bound session contains its own panics and ends properly; this catches one
            // before binding (negotiation), where dropping the connection is all there is to do.
            if let Err(p) = contained(connection(core.clone(), stream, peer, entry)).await {
                negotiation_panicked(&core, peer, p);
            }
        })
        .detach();
    }
}

async fn connection(core: Rc<CoreState>, stream: TcpStream, peer: SocketAddr, entry: Entry) {
    // Through a trusted reverse proxy, the client's address is known only from the
    // request's X-Forwarded-For: its slot is taken after the upgrade.
    let proxied = entry.is_http() && core.cfg.http.trusted_proxies.contains(&peer.ip());
    let slot = if proxied {
        None
    } else {
        let Some(slot) = ConnectionSlot::open(&core, peer.ip()) else {
            core.counters.connections_refused.inc();
            if entry == Entry::Starttls {
                Box::pin(refuse(&core, Transport::Plain(stream), peer)).await;
            }
            return;
        };
        Some(slot)
    };
    if let Some(session) = Box::pin(negotiate(&core, stream, peer, entry, slot)).await {
        start(&core, session);
    }
}

/// The session's long life gets a task of its own, sized for it alone; the one that
/// negotiated, sized for negotiation, ends. Its steps contain their own panics.
fn start(core: &CoreState, session: impl Future<Output = ()> + 'static) {
    core.counters.session_task_bytes.set(std::mem::size_of_val(&session) as i64);
    glommio::spawn_local(session).detach();
}

async fn refuse(core: &CoreState, transport: Transport, peer: SocketAddr) {
    let mut conn = Conn::new(transport, peer, &core.cfg.limits, core.stopping.clone());
    conn.fail(&core.cfg.domain, StreamError::PolicyViolation, "too many connections from this address").await;
}

fn describe_end(end: &ConnEnd) -> String {
    match end {
        ConnEnd::Error(_, text) => text.clone(),
        other => format!("{other:?}"),
    }
}

/// Negotiates a stream up to a bound session; `None` when it ended before (the error, if
/// any, already sent). Separate from the session's run so that its large state is freed
/// before the session's long life starts.
async fn negotiate(
    core: &Rc<CoreState>,
    stream: TcpStream,
    peer: SocketAddr,
    entry: Entry,
    mut slot: Option<ConnectionSlot>,
) -> Option<impl Future<Output = ()>> {
    let deadline = Instant::now() + Duration::from_secs(core.cfg.limits.handshake_timeout_secs);
    let mut peer = peer;
    let transport = if entry.is_http() {
        let http = if entry == Entry::Https {
            Transport::Tls(Box::new(tls_handshake(core, stream, peer, deadline, entry).await?))
        } else {
            Transport::Plain(stream)
        };
        match super::websocket::upgrade(http, core, deadline, peer.ip()).await.map_err(ConnEnd::Io) {
            Ok((ws, client)) => {
                let transport = Transport::WebSocket(Box::new(ws));
                peer = SocketAddr::new(client, peer.port());
                if slot.is_none() {
                    slot = ConnectionSlot::open(core, client);
                    if slot.is_none() {
                        core.counters.connections_refused.inc();
                        Box::pin(refuse(core, transport, peer)).await;
                        return None;
                    }
                }
                transport
            }
            Err(e) => {
                log::debug!("{peer}: WebSocket upgrade failed: {}", describe_end(&e));
                return None;
            }
        }
    } else if entry == Entry::DirectTls {
        Transport::Tls(Box::new(tls_handshake(core, stream, peer, deadline, entry).await?))
    } else {
        Transport::Plain(stream)
    };
    Box::pin(phases(core, transport, peer, slot?, deadline)).await
}

/// TLS from the first byte (XEP-0368, or HTTPS) with the `[tls]` certificate, by the
/// handshake deadline; `None` when it failed (logged: there is no stream to carry an error).
async fn tls_handshake(core: &CoreState, stream: TcpStream, peer: SocketAddr, deadline: Instant, entry: Entry) -> Option<TlsStream> {
    let (config, what) = match entry {
        Entry::Https => (core.tls.http.clone(), "HTTPS"),
        _ => (core.tls.xmpp.clone(), "Direct TLS"),
    };
    match super::conn::until(deadline, async { TlsStream::accept(stream, config).await.map_err(ConnEnd::Io) }).await {
        Ok(tls) => Some(tls),
        // A port probe (a health check, a scan) connects and closes: not worth a line.
        Err(ConnEnd::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => None,
        Err(e) => {
            crate::security_log::event(log::Level::Info, format_args!("{peer}: {what} handshake failed: {}", describe_end(&e)));
            None
        }
    }
}

/// A stream on a transport made elsewhere (a XEP-0206 BOSH session, `super::bosh`):
/// negotiated in a task of its own, then run as a session like any other.
pub fn spawn_stream(core: Rc<CoreState>, transport: Transport, peer: SocketAddr, slot: ConnectionSlot) {
    glommio::spawn_local(async move {
        let deadline = Instant::now() + Duration::from_secs(core.cfg.limits.handshake_timeout_secs);
        match contained(phases(&core, transport, peer, slot, deadline)).await {
            Ok(Some(session)) => start(&core, session),
            Ok(None) => {}
            Err(p) => negotiation_panicked(&core, peer, p),
        }
    })
    .detach();
}

fn negotiation_panicked(core: &CoreState, peer: SocketAddr, p: shards::contain::Panicked) {
    core.counters.actor_panics.inc();
    log::error!("{peer}: stream negotiation ended by a panic, contained: {}", p.0);
}

/// The phases of [`super::negotiate`] on a connected transport, up to a bound session.
async fn phases(
    core: &Rc<CoreState>,
    transport: Transport,
    peer: SocketAddr,
    slot: ConnectionSlot,
    deadline: Instant,
) -> Option<impl Future<Output = ()>> {
    let mut conn = Conn::new(transport, peer, &core.cfg.limits, core.stopping.clone());
    conn.hold(slot);
    conn.deadline = Some(deadline);
    let phases = async {
        match Unauthenticated::new(core.clone(), conn).authenticate().await? {
            LoggedIn::Unbound(authenticated) => authenticated.bind().await,
            LoggedIn::Bound(session) => Ok(session),
        }
    };
    match phases.await {
        Ok(session) => Some(session.run()),
        Err((mut conn, end)) => {
            // Before a session exists nothing else records why a login went nowhere.
            log::debug!("{peer}: stream ended before a session was bound: {end:?}");
            conn.end_with(&core.cfg.domain, &end).await;
            None
        }
    }
}
