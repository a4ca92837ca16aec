//! XEP-0206 XMPP over BOSH (XEP-0124) at `/http-bind` on the HTTP listener: each BOSH
//! session is a [`BoshStream`], one more side of the `Transport` seam, whose bytes are
//! those of an ordinary XMPP stream: the payloads of request `<body/>`s in, the server's
//! writes cut into whole elements (`super::ws_framing::Units`) out in response bodies.
//! Session start and `xmpp:restart` stand for the client's stream header, so negotiation,
//! SASL, binding and the session run unchanged.
//!
//! Cores: a session lives on the core whose listener took its first request, and its `sid`
//! names that core. SO_REUSEPORT spreads a client's later HTTP connections over every
//! core; a request arriving elsewhere is parsed there and forwarded over the core mesh
//! (`CoreState::forward_bosh`), the answer coming back the same way. Nodes do not
//! forward: a client keeps talking to the node (the address) it started with, so a sid of
//! another node's is unknown here, as it should be.
//!
//! Bounds: a request body (`stanza_bytes_max` + [`BODY_SLACK_BYTES`], larger -> HTTP 413),
//! its XML (the stream parser's limits: `<body/>` as the stream header, each payload
//! element as a stanza), requests held ([`HOLD_MAX`]) and outstanding (`hold` + 1, the rid
//! window), payload bytes the session has not read yet (one body's worth: later requests
//! wait), bytes the client has not fetched ([`OUTBOUND_BYTES_MAX`]: the session's writes
//! then wait, as on TCP, until `send_stall_secs` ends it), `[http] bosh_wait_secs_max`,
//! `bosh_inactivity_secs` and `bosh_pause_secs_max`. Each session holds a connection slot
//! (`connections_per_ip_max`), as a TCP stream does; an HTTP connection kept alive
//! between requests waits at most `websocket::KEEP_ALIVE_IDLE` for the next. `key`/`newkey`
//! (§15) are not supported and not advertised; `polling` binds `hold` 0 sessions (§12).

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite};
use serde::{Deserialize, Serialize};

use super::conn::{ConnEnd, ConnectionSlot};
use super::transport::Transport;
use super::ws_framing::{stream_header, Units};
use crate::router::admin_query::Tickets;
use crate::router::CoreState;
use crate::xml::ns;
use crate::xml::stream_parser::{ParserLimits, StreamEvent, StreamParser};

/// The path clients post to (XEP-0156 lists it).
pub const PATH: &str = "/http-bind";
const NS: &str = "http://jabber.org/protocol/httpbind";
const XBOSH: &str = "urn:xmpp:xbosh";
/// The XEP-0124 version spoken.
const VERSION: &str = "1.11";
/// Requests the server holds at once per session (`hold`): one is what every client asks.
const HOLD_MAX: u64 = 1;
/// Room for the `<body/>` wrapper around the largest stanza, in bytes.
const BODY_SLACK_BYTES: usize = 1024;
/// Response payload the client has not fetched yet, in bytes; past it the session's
/// writes wait.
const OUTBOUND_BYTES_MAX: usize = 256 * 1024;
/// The shortest interval between polls (`polling`), in seconds: a session with `hold`
/// 0 whose empty requests come closer than this is ended (XEP-0124 §12).
const POLLING_SECS: u64 = 2;
/// The largest rid (XEP-0124 §14: 2^53 - 1, what every client's arithmetic holds).
const RID_MAX: u64 = (1 << 53) - 1;
/// How long a forwarded request's answer may take beyond the waits it may go through
/// (its turn in the rid window, then `wait` held): the hop itself is microseconds.
const FORWARD_SLACK: Duration = Duration::from_secs(5);

/// One request's `<body/>`, parsed where it arrived and forwarded as is to the session's core.
#[derive(Default, Serialize, Deserialize)]
pub struct Body {
    pub sid: Option<String>,
    pub rid: u64,
    pub to: Option<String>,
    pub wait: Option<u64>,
    pub hold: Option<u64>,
    pub lang: Option<String>,
    /// `xmpp:restart='true'` (XEP-0206 §5): a new stream header, after SASL.
    pub restart: bool,
    /// `type='terminate'` (XEP-0124 §12).
    pub terminate: bool,
    /// `pause` (XEP-0124 §10), in seconds.
    pub pause: Option<u64>,
    /// The wrapped elements, serialised again for the stream.
    pub payload: String,
}

/// Without the payload, which may hold credentials (SASL PLAIN): `CoreMsg` is `Debug`.
impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Body {{ sid: {:?}, rid: {}, payload: {} bytes }}", self.sid, self.rid, self.payload.len())
    }
}

/// Parses a request body; `Err` for anything XEP-0124 §17 answers `bad-request`.
pub fn parse(bytes: &[u8], limits: ParserLimits) -> Result<Body, String> {
    let mut parser = StreamParser::new(limits);
    parser.feed(bytes).map_err(|e| format!("{e:?}"))?;
    let Some(StreamEvent::Header(el)) = parser.next_event() else { return Err("no <body/>".into()) };
    if el.name() != "body" || el.ns() != NS {
        return Err("the wrapper is <body/> in http://jabber.org/protocol/httpbind".into());
    }
    let mut body = Body {
        sid: el.attr("sid").map(str::to_owned),
        rid: el.attr("rid").and_then(|r| r.parse().ok()).filter(|r| *r <= RID_MAX).ok_or("no valid rid")?,
        to: el.attr("to").map(str::to_owned),
        wait: el.attr("wait").and_then(|w| w.parse().ok()),
        hold: el.attr("hold").and_then(|h| h.parse().ok()),
        lang: el.attr_ns(rxml::Namespace::xml(), "lang").map(str::to_owned),
        restart: el.attr_ns(XBOSH, "restart").is_some_and(|r| r == "true" || r == "1"),
        terminate: el.attr("type") == Some("terminate"),
        pause: el.attr("pause").and_then(|p| p.parse().ok()),
        payload: String::new(),
    };
    let mut closed = false;
    while let Some(event) = parser.next_event() {
        match event {
            StreamEvent::Element(child) if !closed => body.payload.push_str(&crate::xml::write::to_xml(&child)),
            StreamEvent::End if !closed => closed = true,
            _ => return Err("content after </body>".into()),
        }
    }
    if !closed {
        return Err("an unfinished <body>".into());
    }
    Ok(body)
}

/// A response `<body/>`: the stream prefix is declared for `stream:features` and
/// `stream:error`, which martlet writes with it.
fn wrap(attrs: &str, payload: &str) -> String {
    format!("<body xmlns='{NS}' xmlns:stream='{}'{attrs}>{payload}</body>", ns::STREAM)
}

/// A terminal answer (XEP-0124 §17: HTTP 200 with a condition), counted as an error when
/// it has one.
fn terminate(core: &CoreState, condition: Option<&str>, payload: &str) -> String {
    let condition = condition.map_or(String::new(), |c| {
        core.counters.bosh_errors.inc();
        format!(" condition='{c}'")
    });
    wrap(&format!(" type='terminate'{condition}"), payload)
}

/// Whether `path` is the BOSH endpoint.
pub fn handles(path: &str) -> bool {
    path.split('?').next() == Some(PATH)
}

/// The BOSH sessions of one core, and its requests forwarded to other cores.
#[derive(Default)]
pub struct Sessions {
    by_sid: RefCell<HashMap<Rc<str>, Rc<Session>>>,
    /// Requests forwarded to the core of their session, waiting for its answer.
    pub forwarded: Tickets<String>,
}

/// Answers one HTTP request for `/http-bind` (its head parsed, `bytes` what came after it).
/// HTTP/1.1 keeps the connection unless the client says `Connection: close`: then the
/// bytes after this request are returned, the start of the next one; `None` when the
/// connection is to close (asked, or after an error). A session's requests may still come
/// on several connections, each on any core. `secure`: the request came over TLS, here
/// or at a proxy; a session it starts counts as encrypted.
pub async fn serve(
    core: &Rc<CoreState>,
    tcp: &mut Transport,
    req: &httparse::Request<'_, '_>,
    mut bytes: Vec<u8>,
    deadline: Instant,
    client: SocketAddr,
    secure: bool,
) -> Option<Vec<u8>> {
    use futures_lite::AsyncWriteExt;
    let close_asked = super::websocket::header_of(req, "connection").is_some_and(|v| v.to_ascii_lowercase().contains("close"));
    let keep_alive = req.version == Some(1) && !close_asked;
    let (answer, kept) = match req.method {
        // CORS preflight: browsers ask before posting text/xml from a page of another origin.
        Some("OPTIONS") => (
            super::websocket::http_response_kept(
                "200 OK",
                "text/plain",
                "Access-Control-Allow-Methods: POST, OPTIONS\r\nAccess-Control-Allow-Headers: Content-Type\r\nAccess-Control-Max-Age: 86400\r\n",
                "",
                keep_alive,
            ),
            keep_alive,
        ),
        Some("POST") => {
            core.counters.bosh_requests.inc();
            match Box::pin(post(core, tcp, req, &mut bytes, deadline, client, secure)).await {
                Ok(xml) => (
                    super::websocket::http_response_kept("200 OK", "text/xml; charset=utf-8", "Cache-Control: no-store\r\n", &xml, keep_alive),
                    keep_alive,
                ),
                Err(None) => return None, // the client went, or took too long to send its body
                Err(Some((status, why))) => {
                    core.counters.bosh_errors.inc();
                    (super::websocket::http_response(status, "text/plain", "", &format!("{why}\n")), false)
                }
            }
        }
        _ => (super::websocket::http_response("405 Method Not Allowed", "text/plain", "Allow: POST, OPTIONS\r\n", "BOSH takes POST\n"), false),
    };
    let written = tcp.write_all(answer.as_bytes()).await;
    (kept && written.is_ok()).then_some(bytes)
}

type HttpRefusal = Option<(&'static str, &'static str)>;

/// Reads the body, then answers it: a new session, or one of this core's sessions, or
/// one forwarded to the core whose session it is. `bytes` holds what came after the head;
/// it is left holding what came after the body.
async fn post(
    core: &Rc<CoreState>,
    tcp: &mut Transport,
    req: &httparse::Request<'_, '_>,
    bytes: &mut Vec<u8>,
    deadline: Instant,
    client: SocketAddr,
    secure: bool,
) -> Result<String, HttpRefusal> {
    let Some(length) = super::websocket::header_of(req, "content-length").and_then(|v| v.trim().parse::<usize>().ok()) else {
        return Err(Some(("411 Length Required", "a BOSH request states its Content-Length")));
    };
    if length > body_bytes_max(core) {
        return Err(Some(("413 Payload Too Large", "a BOSH body is at most stanza_bytes_max and a little")));
    }
    let mut chunk = [0u8; 4096];
    while bytes.len() < length {
        let read = super::conn::until(deadline, async { tcp.read(&mut chunk).await.map_err(ConnEnd::Io) }).await;
        match read {
            Ok(n) if n > 0 => bytes.extend_from_slice(&chunk[..n]),
            _ => return Err(None),
        }
    }
    let rest = bytes.split_off(length);
    let body = std::mem::replace(bytes, rest);
    let body = match parse(&body, super::conn::parser_limits(&core.cfg.limits)) {
        Ok(body) => body,
        Err(why) => {
            log::debug!("{client}: BOSH body refused: {why}");
            return Ok(terminate(core, Some("bad-request"), ""));
        }
    };
    let Some(sid) = body.sid.as_deref() else { return Ok(create(core, body, client, secure).await) };
    let owner = sid.split_once('.').and_then(|(c, _)| usize::from_str_radix(c, 16).ok());
    let answer = match owner {
        Some(owner) if owner == core.id => Some(answer(core, body).await),
        Some(owner) => {
            let wait = Duration::from_secs(core.cfg.http.bosh_wait_secs_max) * 2 + FORWARD_SLACK;
            core.forward_bosh(owner, body, wait).await
        }
        None => None,
    };
    Ok(answer.unwrap_or_else(|| terminate(core, Some("item-not-found"), "")))
}

fn body_bytes_max(core: &CoreState) -> usize {
    core.cfg.limits.stanza_bytes_max + BODY_SLACK_BYTES
}

/// A request forwarded from core `from` (`CoreMsg::BoshRequest`): answered here, where its
/// session lives, and the answer sent back.
pub async fn answer_forwarded(core: Rc<CoreState>, from: usize, ticket: u64, body: Body) {
    let xml = answer(&core, body).await;
    core.answer_bosh(from, ticket, xml).await;
}

/// A request for a session of this core's.
async fn answer(core: &Rc<CoreState>, body: Body) -> String {
    let sid = body.sid.clone().unwrap_or_default();
    let session = core.bosh.by_sid.borrow().get(sid.as_str()).cloned();
    let Some(session) = session else { return terminate(core, Some("item-not-found"), "") };
    let terminating = body.terminate;
    let xml = session.request(core, body, "").await;
    if terminating {
        // New requests find nothing; the stream ends once the session reads the close.
        core.bosh.by_sid.borrow_mut().remove(sid.as_str());
    }
    xml
}

/// XEP-0124 §7: a new session, here; its stream negotiation starts at once, and this
/// request is answered like any other, with the session's parameters and what the server
/// sent first (its stream features).
async fn create(core: &Rc<CoreState>, mut body: Body, client: SocketAddr, secure: bool) -> String {
    let (cfg, http) = (&core.cfg, &core.cfg.http);
    match body.to.as_deref() {
        None | Some("") => return terminate(core, Some("improper-addressing"), ""),
        Some(to) if to != cfg.domain => return terminate(core, Some("host-unknown"), ""),
        Some(_) => {}
    }
    let Some(slot) = ConnectionSlot::open(core, client.ip()) else {
        core.counters.connections_refused.inc();
        return terminate(core, Some("policy-violation"), "");
    };
    let wait = body.wait.unwrap_or(http.bosh_wait_secs_max).min(http.bosh_wait_secs_max);
    let hold = body.hold.unwrap_or(1).min(HOLD_MAX);
    let sid: Rc<str> = format!("{:x}.{:032x}", core.id, rand::random::<u128>()).into();
    let session = Rc::new(Session {
        sid: sid.clone(),
        wait: Duration::from_secs(wait),
        hold: hold as usize,
        requests: hold + 1,
        inactivity: Duration::from_secs(http.bosh_inactivity_secs),
        pause_max: http.bosh_pause_secs_max,
        readable_max: body_bytes_max(core),
        state: RefCell::new(State { next_rid: body.rid, ..State::default() }),
    });
    core.bosh.by_sid.borrow_mut().insert(sid.clone(), session.clone());
    core.counters.bosh_sessions.add(1);
    let stream = BoshStream { session: session.clone(), core: core.clone(), secure };
    super::accept::spawn_stream(core.clone(), Transport::Bosh(stream), client, slot);
    glommio::spawn_local(session.clone().watch()).detach();
    let attrs = format!(
        " sid='{sid}' wait='{wait}' hold='{hold}' requests='{}' polling='{POLLING_SECS}' inactivity='{}' maxpause='{}' ver='{VERSION}' \
         from='{}' xmlns:xmpp='{XBOSH}' xmpp:version='1.0' xmpp:restartlogic='true'",
        hold + 1,
        http.bosh_inactivity_secs,
        http.bosh_pause_secs_max,
        crate::xml::write::escape_attr(&cfg.domain),
    );
    body.restart = true; // the session's start is the stream's
    session.request(core, body, &attrs).await
}

/// One BOSH session: what its HTTP requests and its XMPP stream share.
pub struct Session {
    sid: Rc<str>,
    wait: Duration,
    hold: usize,
    /// Requests the client may have outstanding (`requests`): the width of the rid window.
    requests: u64,
    inactivity: Duration,
    pause_max: u64,
    /// Payload the session has not read yet, in bytes, past which requests wait their turn.
    readable_max: usize,
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    /// Request payloads, as stream bytes, for the session to read.
    readable: Vec<u8>,
    reader: Option<Waker>,
    /// The session's writes, cut into whole elements.
    units: Units,
    /// Whole elements for the next response.
    outbound: String,
    writer: Option<Waker>,
    /// The session wrote a stream error: the terminate that follows says so.
    stream_error: bool,
    ended: Option<Ended>,
    /// The rid the next request must carry.
    next_rid: u64,
    /// Rids of the requests held, oldest first.
    held: VecDeque<u64>,
    /// Held requests up to this rid are answered at once (a pause).
    released_up_to: Option<u64>,
    /// The last responses, by rid, for a client that repeats a request (XEP-0124 §14.3).
    answered: VecDeque<(u64, Rc<str>)>,
    /// Requests waiting for anything to change.
    waiters: Vec<Waker>,
    /// Since when no request is held; `None` while one is.
    idle_since: Option<Instant>,
    /// The inactivity a pause asked for, until the next request.
    paused: Option<Duration>,
    /// When the last request came, if it was empty: with `hold` 0 every request is
    /// answered at once, so empty ones are polls, and `polling` apart at least.
    last_poll: Option<Instant>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    /// The session closed the stream, or its transport went.
    ByServer,
    /// A request ended the session: terminate, or a rid out of the window.
    ByClient,
    /// No request for `inactivity`.
    Inactive,
}

impl State {
    fn changed(&mut self) {
        self.waiters.drain(..).for_each(Waker::wake);
    }

    fn end(&mut self, how: Ended) {
        self.ended.get_or_insert(how);
        self.changed();
        self.reader.take().into_iter().chain(self.writer.take()).for_each(Waker::wake);
    }
}

impl Session {
    /// Waits until `ready` gives something, or `deadline`.
    async fn until<T>(&self, deadline: Instant, mut ready: impl FnMut(&mut State) -> Option<T>) -> Option<T> {
        let wait = std::future::poll_fn(|cx| {
            let mut st = self.state.borrow_mut();
            match ready(&mut st) {
                Some(v) => Poll::Ready(Some(v)),
                None => {
                    st.waiters.push(cx.waker().clone());
                    Poll::Pending
                }
            }
        });
        futures_lite::future::or(wait, async {
            glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
            None
        })
        .await
    }

    /// One request, in rid order (XEP-0124 §14): its payload goes to the stream, then it is
    /// held until there is something to answer, `wait` passes, or a newer request needs its
    /// place. `attrs` go on its response (the session's parameters, on the first).
    async fn request(&self, core: &CoreState, body: Body, attrs: &str) -> String {
        let rid = body.rid;
        let repeated = {
            let st = self.state.borrow();
            if let Some((_, cached)) = st.answered.iter().find(|(r, _)| *r == rid) {
                return cached.to_string();
            }
            if st.ended.is_some() || rid < st.next_rid && !st.held.contains(&rid) || rid - st.next_rid.min(rid) >= self.requests {
                None
            } else {
                Some(rid < st.next_rid)
            }
        };
        match repeated {
            None => {
                // Out of the window, or too old to have kept its answer: the session ends.
                self.state.borrow_mut().end(Ended::ByClient);
                return terminate(core, Some("item-not-found"), "");
            }
            Some(true) => {
                // Sent again while its first copy is still held: the same answer, when it comes.
                let deadline = Instant::now() + self.wait + FORWARD_SLACK;
                let cached = self.until(deadline, |st| st.answered.iter().find(|(r, _)| *r == rid).map(|(_, a)| a.clone())).await;
                return cached.map_or_else(|| wrap("", ""), |a| a.to_string());
            }
            Some(false) => {}
        }
        // Its turn: earlier rids first, and the session has read what came before.
        let deadline = Instant::now() + self.wait;
        let turn = self.until(deadline, |st| (st.ended.is_some() || st.next_rid == rid && st.readable.len() <= self.readable_max).then_some(())).await;
        let mut st = self.state.borrow_mut();
        if turn.is_none() || st.ended.is_some() {
            st.end(Ended::ByClient);
            return terminate(core, Some("item-not-found"), "");
        }
        st.next_rid = rid + 1;
        st.paused = None;
        let poll = self.hold == 0 && body.payload.is_empty() && !body.restart && !body.terminate && body.pause.is_none();
        let now = Instant::now();
        if poll && st.last_poll.is_some_and(|at| now.duration_since(at) < Duration::from_secs(POLLING_SECS)) {
            st.end(Ended::ByClient);
            return terminate(core, Some("policy-violation"), "");
        }
        st.last_poll = poll.then_some(now);
        if body.restart {
            let lang = body.lang.as_deref().unwrap_or("en");
            let header = stream_header([("to", core.cfg.domain.as_str()), ("version", "1.0"), ("xml:lang", lang)].into_iter());
            st.readable.extend_from_slice(header.as_bytes());
        }
        st.readable.extend_from_slice(body.payload.as_bytes());
        // An empty request adds nothing, not even whitespace (which a parser just restarted
        // after SASL would refuse before the header): the session's XEP-0199 pings tell a
        // live client from a gone one, as on TCP, and `inactivity` ends one that stops asking.
        if body.terminate {
            st.readable.extend_from_slice(b"</stream:stream>");
        }
        if let Some(reader) = st.reader.take() {
            reader.wake();
        }
        if body.terminate {
            let xml: Rc<str> = terminate(core, None, "").into();
            self.remember(&mut st, rid, xml.clone());
            st.changed();
            return xml.to_string();
        }
        if let Some(pause) = body.pause {
            st.paused = Some(Duration::from_secs(pause.min(self.pause_max)));
            st.released_up_to = Some(rid);
        }
        st.held.push_back(rid);
        st.idle_since = None;
        st.changed();
        drop(st);
        let deadline = Instant::now() + self.wait;
        let answer = self
            .until(deadline, |st| {
                if st.ended.is_some() {
                    return Some(self.ended_body(core, st, attrs));
                }
                let oldest = st.held.front() == Some(&rid);
                let released = st.released_up_to.is_some_and(|r| rid <= r);
                (released || oldest && (!st.outbound.is_empty() || st.held.len() > self.hold)).then(|| wrap(attrs, &std::mem::take(&mut st.outbound)))
            })
            .await;
        let mut st = self.state.borrow_mut();
        let answer: Rc<str> = answer
            .unwrap_or_else(|| {
                let oldest = st.held.front() == Some(&rid);
                wrap(attrs, &if oldest { std::mem::take(&mut st.outbound) } else { String::new() })
            })
            .into();
        st.held.retain(|r| *r != rid);
        if st.held.is_empty() {
            st.idle_since = Some(Instant::now());
        }
        self.remember(&mut st, rid, answer.clone());
        if let Some(writer) = st.writer.take() {
            writer.wake();
        }
        st.changed();
        answer.to_string()
    }

    fn remember(&self, st: &mut State, rid: u64, answer: Rc<str>) {
        st.answered.push_back((rid, answer));
        while st.answered.len() as u64 > self.requests {
            st.answered.pop_front();
        }
    }

    /// The answer of a request held when the session ended: the last of what the server
    /// wrote (a stream error among it, then so named), or nothing.
    fn ended_body(&self, core: &CoreState, st: &mut State, attrs: &str) -> String {
        let payload = std::mem::take(&mut st.outbound);
        let condition = (st.ended == Some(Ended::ByServer) && st.stream_error).then_some("remote-stream-error");
        let mut xml = terminate(core, condition, &payload);
        if !attrs.is_empty() {
            xml = xml.replacen("<body ", &format!("<body{attrs} "), 1);
        }
        xml
    }

    /// Ends the session once no request was held for `inactivity` (or the pause asked):
    /// the stream then reads its end, and the session ends as if its TCP connection dropped.
    async fn watch(self: Rc<Self>) {
        loop {
            let due = {
                let st = self.state.borrow();
                if st.ended.is_some() {
                    return;
                }
                st.idle_since.map(|since| since + st.paused.unwrap_or(self.inactivity))
            };
            let now = Instant::now();
            match due {
                Some(due) if due <= now => {
                    log::debug!("BOSH session {} inactive, ended", self.sid);
                    self.state.borrow_mut().end(Ended::Inactive);
                    return;
                }
                Some(due) => glommio::timer::sleep(due - now).await,
                None => glommio::timer::sleep(self.inactivity).await,
            }
        }
    }
}

/// The XMPP stream of a BOSH session, for `Conn`: reads what requests brought, writes what
/// responses will carry.
pub struct BoshStream {
    session: Rc<Session>,
    core: Rc<CoreState>,
    /// Started over TLS (`[http] tls_listen`), or behind a reverse proxy that terminates
    /// it (`[http] behind_tls_proxy`).
    pub secure: bool,
}

impl AsyncRead for BoshStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut st = self.session.state.borrow_mut();
        if !st.readable.is_empty() {
            let n = buf.len().min(st.readable.len());
            buf[..n].copy_from_slice(&st.readable[..n]);
            st.readable.drain(..n);
            st.changed(); // requests waiting for room
            return Poll::Ready(Ok(n));
        }
        if st.ended.is_some() {
            return Poll::Ready(Ok(0));
        }
        st.reader = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for BoshStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut st = self.session.state.borrow_mut();
        if st.ended.is_some() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if st.outbound.len() >= OUTBOUND_BYTES_MAX {
            st.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        for unit in st.units.push(buf) {
            // The stream's header and declaration have no place in a body; its end is the
            // session's.
            if unit.starts_with("<?") || unit.starts_with("<stream:stream") {
                continue;
            }
            if unit.starts_with("</stream:stream") {
                st.end(Ended::ByServer);
                break;
            }
            st.stream_error |= unit.starts_with("<stream:error");
            st.outbound.push_str(&unit);
        }
        st.changed();
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.session.state.borrow_mut().end(Ended::ByServer);
        Poll::Ready(Ok(()))
    }
}

impl Drop for BoshStream {
    /// The stream is gone: so is the session, for later requests; one still held gets
    /// what the server wrote last.
    fn drop(&mut self) {
        self.session.state.borrow_mut().end(Ended::ByServer);
        self.core.bosh.by_sid.borrow_mut().remove(&self.session.sid);
        self.core.counters.bosh_sessions.add(-1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ParserLimits {
        ParserLimits { stream_header_bytes_max: 8192, stanza_bytes_max: 4096, stanza_depth_max: 8 }
    }

    #[test]
    fn a_body_gives_its_attributes_and_payload() {
        let xml = "<body xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh' rid='42' sid='1.ab' \
                   xmpp:restart='true' xml:lang='de'><message xmlns='jabber:client' to='a@b'><body>hi</body></message></body>";
        let body = parse(xml.as_bytes(), limits()).unwrap();
        assert_eq!((body.rid, body.sid.as_deref(), body.restart, body.lang.as_deref()), (42, Some("1.ab"), true, Some("de")));
        assert!(body.payload.starts_with("<message") && body.payload.contains("hi"), "{}", body.payload);
        let empty = parse(b"<body xmlns='http://jabber.org/protocol/httpbind' rid='7' type='terminate'/>", limits()).unwrap();
        assert!(empty.terminate && empty.payload.is_empty() && !empty.restart);
    }

    #[test]
    fn bad_bodies_are_refused() {
        for bad in [
            "<body rid='1'/>",                                                    // not in the namespace
            "<body xmlns='http://jabber.org/protocol/httpbind'/>",                // no rid
            "<body xmlns='http://jabber.org/protocol/httpbind' rid='x'/>",        // rid not a number
            "<body xmlns='http://jabber.org/protocol/httpbind' rid='9007199254740992'/>", // rid past 2^53 - 1
            "<body xmlns='http://jabber.org/protocol/httpbind' rid='1'><a>",      // unfinished
            "<body xmlns='http://jabber.org/protocol/httpbind' rid='1'><a></b>",  // not well-formed
            "not xml at all",
        ] {
            assert!(parse(bad.as_bytes(), limits()).is_err(), "{bad}");
        }
        let deep = format!("<body xmlns='http://jabber.org/protocol/httpbind' rid='1'>{}{}</body>", "<a>".repeat(20), "</a>".repeat(20));
        assert!(parse(deep.as_bytes(), limits()).is_err(), "deeper than the stanza depth limit");
    }
}
