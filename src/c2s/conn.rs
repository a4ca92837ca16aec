//! One XMPP connection's byte-level half: the transport, the incremental parser, the stream
//! header, and sending. Negotiation and the bound session drive it; neither touches bytes.

use std::io;
use std::time::Instant;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use minidom::Element;

use super::stream_error::{escape, StreamError};
use super::transport::Transport;
use crate::stanza::to_xml;
use crate::xml::stream_parser::{ParserLimits, StreamEvent, StreamParser};

/// Bytes read per read call while a connection is busy.
const READ_CHUNK_BYTES: usize = 4096;
/// Read buffer after a quiet spell. An idle connection holds none: it waits for readiness
/// (`Transport::poll_readable`), then reads into this much; a full read grows it back to
/// the busy size.
const IDLE_READ_BYTES: usize = 128;

/// Why a connection stops.
#[derive(Debug)]
pub enum ConnEnd {
    /// The peer closed the TCP connection or the transport failed.
    Io(io::Error),
    /// The peer closed the stream with `</stream:stream>`.
    StreamClosed,
    /// We close the stream with this error.
    Error(StreamError, String),
    /// XEP-0198: another stream resumed this session; it ends without a word to anyone.
    HandedOver,
}

impl From<io::Error> for ConnEnd {
    fn from(e: io::Error) -> Self {
        ConnEnd::Io(e)
    }
}

pub struct Conn {
    pub transport: Transport,
    parser: StreamParser,
    read_buf: Vec<u8>,
    header_sent: bool,
    /// When bytes last arrived: whitespace pings count (RFC 6120 §4.6.1).
    pub last_rx: Instant,
    /// Reads past this instant end the stream with `<connection-timeout/>`: the handshake
    /// deadline, so a client that opens a stream and stalls (slowloris) is dropped.
    pub deadline: Option<Instant>,
    pub peer: std::net::SocketAddr,
    /// `send_stall_secs`; seconds, not a `Duration`: 4 bytes of every idle session, not 16.
    send_stall_secs: u32,
    /// The core's stop flag (`CoreState::stopping`): once set, a write or close that cannot
    /// complete gives up at once, so shutdown is not held by a client that does not read.
    stopping: std::rc::Rc<std::cell::Cell<bool>>,
    /// This connection's place in the per-address and per-core counts, given back when
    /// the connection goes (a session outliving it for XEP-0198 holds none).
    slot: Option<ConnectionSlot>,
}

/// One open connection, counted against its address's limit and in the core's gauge until
/// dropped.
pub struct ConnectionSlot {
    core: std::rc::Rc<crate::router::CoreState>,
    ip: std::net::IpAddr,
}

impl ConnectionSlot {
    /// `None` when `ip` is at its `connections_per_ip_max`.
    pub fn open(core: &std::rc::Rc<crate::router::CoreState>, ip: std::net::IpAddr) -> Option<ConnectionSlot> {
        if !core.peers.try_open(ip) {
            return None;
        }
        core.counters.connections.add(1);
        Some(ConnectionSlot { core: core.clone(), ip })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.core.counters.connections.add(-1);
        self.core.peers.close(self.ip);
    }
}

impl Conn {
    pub fn new(
        transport: Transport,
        peer: std::net::SocketAddr,
        limits: &crate::config::Limits,
        stopping: std::rc::Rc<std::cell::Cell<bool>>,
    ) -> Self {
        Conn {
            transport,
            parser: StreamParser::new(parser_limits(limits)),
            read_buf: vec![0; READ_CHUNK_BYTES],
            header_sent: false,
            last_rx: Instant::now(),
            deadline: None,
            peer,
            send_stall_secs: u32::try_from(limits.send_stall_secs).unwrap_or(u32::MAX),
            stopping,
            slot: None,
        }
    }

    pub fn hold(&mut self, slot: ConnectionSlot) {
        self.slot = Some(slot);
    }

    /// Closes the transport at once and gives the connection's slot back; later writes fail.
    pub async fn drop_transport(&mut self) {
        self.close_transport().await;
        self.transport = Transport::Closed;
        self.slot = None;
    }

    /// A stream restart (RFC 6120 §4.3.3, after TLS and after SASL): a fresh parser.
    pub fn restart(&mut self) {
        self.parser = StreamParser::new(self.parser.limits());
        self.header_sent = false;
    }

    /// Takes the transport out for a TLS handshake (STARTTLS); put the result back with
    /// `conn.transport = ...` and restart the stream.
    pub fn take_transport(&mut self) -> Transport {
        std::mem::replace(&mut self.transport, Transport::Closed)
    }

    /// The next stream event, reading as needed.
    pub async fn next_event(&mut self) -> Result<StreamEvent, ConnEnd> {
        loop {
            if let Some(ev) = self.parser.next_event() {
                return Ok(ev);
            }
            self.read_more().await?;
        }
    }

    /// A parsed event if one is complete; never reads.
    pub fn pending_event(&mut self) -> Option<StreamEvent> {
        self.parser.next_event()
    }

    /// Reads once (within the deadline, if one is set) and feeds the parser.
    pub async fn read_more(&mut self) -> Result<(), ConnEnd> {
        match self.deadline {
            Some(deadline) => Box::pin(until(deadline, self.read_some())).await,
            None => self.read_some().await,
        }
    }

    /// Reads once and feeds the parser. Cancel-safe: a read dropped before completion loses
    /// nothing (glommio's non-buffered TCP stream reads only when polled to completion).
    async fn read_some(&mut self) -> Result<(), ConnEnd> {
        if self.read_buf.is_empty() {
            std::future::poll_fn(|cx| self.transport.poll_readable(cx)).await?;
            self.read_buf.resize(IDLE_READ_BYTES, 0);
        }
        let n = self.transport.read(&mut self.read_buf).await?;
        if n == 0 {
            return Err(ConnEnd::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        self.last_rx = Instant::now();
        if n == self.read_buf.len() && n < READ_CHUNK_BYTES {
            self.read_buf.resize(READ_CHUNK_BYTES, 0); // busy again
        }
        self.parser
            .feed(&self.read_buf[..n])
            .map_err(|e| ConnEnd::Error(StreamError::from(&e), describe(&e)))
    }

    /// Writes and flushes. A client that stops reading would otherwise hold this write, and
    /// its session, forever: past `send_stall` without progress the connection is dropped.
    /// The stall timer is only armed when the write does not complete at once (the common
    /// case costs no timer).
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let stall = self.send_stall();
        let transport = &mut self.transport;
        let write = async move {
            transport.write_all(bytes).await?;
            transport.flush().await
        };
        stall_bounded(stall, &self.stopping, write).await
    }

    /// Closes the transport (for TLS, its close_notify is a write like any other) within
    /// the same bound as a write: `send_stall_secs`, or at once while the server stops.
    async fn close_transport(&mut self) {
        let _ = stall_bounded(self.send_stall(), &self.stopping, self.transport.close()).await;
    }

    fn send_stall(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.send_stall_secs.into())
    }

    pub async fn send_el(&mut self, el: &Element) -> io::Result<()> {
        self.send(to_xml(el).as_bytes()).await
    }

    /// Our stream header, answering the client's (RFC 6120 §4.7), for the caller to write
    /// before anything else; from now on a stream error needs no header of its own.
    pub fn header(&mut self, domain: &str, stream_id: &str, lang: &str) -> String {
        let header = format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' from='{}' id='{}' version='1.0' xml:lang='{}'>",
            escape(domain),
            stream_id,
            escape(lang)
        );
        self.header_sent = true;
        header
    }

    /// Sends a stream error and closes (RFC 6120 §4.9.1.1); a header goes first if the
    /// error comes before we sent ours (§4.9.1.2).
    pub async fn fail(&mut self, domain: &str, err: StreamError, text: &str) {
        // Shutdown closes every stream at once; it is logged once, by the server.
        if err != StreamError::SystemShutdown {
            let (peer, condition, text) = (self.peer, err.condition(), text.escape_debug());
            crate::security_log::event(log::Level::Info, format_args!("{peer}: stream closed with <{condition}/>: {text}"));
        }
        if !self.header_sent {
            let header = self.header(domain, &new_stream_id(), "en");
            let _ = self.send(header.as_bytes()).await;
        }
        let moved = match &mut self.transport {
            Transport::WebSocket(ws) if err == StreamError::SystemShutdown => ws.send_see_other(),
            _ => false,
        };
        if !moved {
            let _ = self.send(err.to_xml(text).as_bytes()).await;
        }
        self.close_transport().await;
    }

    /// Ends the stream as `end` says: with the stream error, with our closing tag, or (the
    /// transport already gone) without a word.
    pub async fn end_with(&mut self, domain: &str, end: &ConnEnd) {
        match end {
            ConnEnd::Error(err, text) => self.fail(domain, *err, text).await,
            ConnEnd::StreamClosed => self.close().await,
            ConnEnd::Io(_) | ConnEnd::HandedOver => {}
        }
    }

    /// Closes our side cleanly after the peer's `</stream:stream>` or at shutdown.
    pub async fn close(&mut self) {
        let _ = self.send(b"</stream:stream>").await;
        self.close_transport().await;
    }

    /// Gives back what only a busy connection needs: the parser's scratch space (rxml
    /// reserves a whole token's worth) and the read buffer (the next read waits for
    /// readiness without one).
    pub fn release_idle_memory(&mut self) {
        self.parser.release_temporaries();
        self.read_buf = Vec::new();
    }
}

/// What one stream may send, from `[limits]` (also what one BOSH body may hold, `super::bosh`).
pub fn parser_limits(limits: &crate::config::Limits) -> ParserLimits {
    ParserLimits {
        stream_header_bytes_max: limits.stream_header_bytes_max,
        stanza_bytes_max: limits.stanza_bytes_max,
        stanza_depth_max: limits.stanza_depth_max,
    }
}

/// How often a stalled write looks at the core's stop flag.
const STOP_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// Runs a write unless the peer takes no bytes for `stall`, or the server is stopping
/// while it waits: a client that does not read holds neither its session nor shutdown.
async fn stall_bounded(
    stall: std::time::Duration,
    stopping: &std::cell::Cell<bool>,
    write: impl std::future::Future<Output = io::Result<()>>,
) -> io::Result<()> {
    let mut write = std::pin::pin!(write);
    if let Some(done) = futures_lite::future::poll_once(&mut write).await {
        return done;
    }
    let give_up = Instant::now() + stall;
    let timeout = async move {
        while !stopping.get() && Instant::now() < give_up {
            glommio::timer::sleep(STOP_POLL.min(give_up.saturating_duration_since(Instant::now()))).await;
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading"))
    };
    futures_lite::future::or(write, timeout).await
}

/// Runs `fut` unless `deadline` passes first, which ends the stream with a timeout.
pub async fn until<T>(deadline: Instant, fut: impl std::future::Future<Output = Result<T, ConnEnd>>) -> Result<T, ConnEnd> {
    let timeout = async {
        glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
        Err(ConnEnd::Error(StreamError::ConnectionTimeout, "the stream was not set up in time".into()))
    };
    futures_lite::future::or(fut, timeout).await
}

fn describe(e: &crate::xml::stream_parser::ParseError) -> String {
    use crate::xml::stream_parser::ParseError::*;
    match e {
        NotWellFormed(t) => format!("not well-formed: {t}"),
        Restricted(t) => format!("XML that XMPP forbids: {t}"),
        TooLarge { stanza_bytes_max } => format!("stanza larger than {stanza_bytes_max} bytes"),
        TooDeep { stanza_depth_max } => format!("elements nested deeper than {stanza_depth_max} levels"),
        HeaderTooLarge { stream_header_bytes_max } => format!("stream header larger than {stream_header_bytes_max} bytes"),
    }
}

/// A fresh random stream id (RFC 6120 §4.7.3: unpredictable).
pub fn new_stream_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}
