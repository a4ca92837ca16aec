//! The Session actor of a bound stream: reads the client's stanzas and routes them, writes
//! what other actors deliver to its mailbox, and keeps the connection honest (idle timeout,
//! XEP-0199 pings). It lives on the core that accepted the connection.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_lite::future;
use jid::{FullJid, Jid};
use minidom::Element;
use shards::contain::{contained, Panicked};
use shards::mailbox;

use super::conn::{Conn, ConnEnd};
use super::directed::Directed;
use super::stream_error::{self, StreamError};
use crate::modules::blocking::BlockList;
use crate::modules::csi::{self, Held, Verdict};
use crate::modules::delivery::{self, Route};
use crate::modules::entity_caps::{Interests, Lookup, Pending};
use crate::modules::stream_mgmt::{self as sm, ClientSm, SmState, Unacked};
use crate::modules::{self, offline, IqAnswer};
use crate::router::credit::Credit;
use crate::router::{CoreState, Handover, RoomMsg, SessionAddr, SessionMsg, UserMsg};
use crate::stanza::{build, may_answer_with_error, resource_of, to_xml, Kind, Stanza, StanzaError};
use crate::xml::{ns, stream_parser::StreamEvent};

/// Stanzas written in one go when several are queued: fewer syscalls and TLS records under
/// load, bounded so one busy session cannot hold its core for long.
const WRITE_BATCH_BYTES_MAX: usize = 64 * 1024;

/// Quiet time after which a session gives back its busy-time buffers.
const IDLE_RELEASE_AFTER: Duration = Duration::from_secs(2);

pub struct BoundSession {
    core: Rc<CoreState>,
    conn: Conn,
    jid: FullJid,
    bare: Arc<str>,
    resource: Arc<str>,
    /// The last available presence broadcast; `None` while unavailable. Kept for a ring
    /// change, when this session registers with its user's new owner (`UserMsg::Rebind`).
    presence: Option<Box<Stanza>>,
    /// It asked for the roster, so a new owner must keep pushing roster changes to it.
    roster_interested: bool,
    /// Where the user's UserChannel was when this session last registered.
    owner: shards::ring::Owner,
    /// This session's address in the core's session table.
    addr: SessionAddr,
    /// Taken by `run`, which reads it while `self` is borrowed mutably.
    mailbox: Option<mailbox::Receiver<SessionMsg>>,
    directed: Directed,
    ping_sent: bool,
    /// Buffers were given back since the last read.
    released: bool,
    /// XEP-0198, once the client enabled it.
    sm: Option<Box<SmState>>,
    /// XEP-0280: this session enabled carbons (carried to a new owner or a resumed stream).
    carbons: bool,
    /// XEP-0186: the client went invisible (carried to a new owner).
    invisible: bool,
    /// XEP-0280: a sibling wants copies of what this session sends.
    carbon_peers: bool,
    /// XEP-0191: the user's blocklist, as its UserChannel last sent it.
    blocked: Arc<BlockList>,
    /// XEP-0352: the client said it is inactive; `held` waits for an urgent stanza.
    inactive: bool,
    held: Held,
    /// A resumed session's first writes: `<resumed/>` (or SASL2's `<success/>`), then what
    /// the old session had not seen acknowledged, then what arrived for it meanwhile.
    replay: Option<Box<Replay>>,
    /// XEP-0163: the PEP nodes the client wants events from, by its XEP-0115 caps, and the
    /// caps query it has yet to answer.
    pep_interest: Interests,
    caps_query: Option<Box<Pending>>,
    /// This session's alarm on the core's wheel, for [`Self::on_timer`].
    alarm: shards::wheel::Alarm,
    /// Its requests in flight to its UserChannel; out of credit, it reads no more.
    credit: Credit,
    /// XEP-0198: the connection is lost and the session waits to be resumed.
    hibernating: bool,
    /// XEP-0357: what the UserChannel was last told of whether the client sees messages now.
    told_dormant: bool,
}

/// A stream's successful XEP-0198 resumption: its new address (already the resource's in
/// the UserChannel), the client's `h`, what the old session handed over, and what arrived
/// for the new address while it waited.
pub struct Resumption {
    pub registered: (SessionAddr, mailbox::Receiver<SessionMsg>),
    pub resume_id: Arc<str>,
    pub h_client: u32,
    pub handover: Handover,
    pub meanwhile: Vec<Arc<str>>,
    /// What the UserChannel told the new address meanwhile of the user's state.
    pub updates: Vec<SessionMsg>,
}

/// What a resumed session writes first.
struct Replay {
    /// XML that announces the resumption; not a stanza, so not counted.
    greeting: String,
    stanzas: Vec<Arc<str>>,
}

/// What a XEP-0386 Bind 2 request turned on along with the binding.
pub struct Inline {
    /// XEP-0198, enabled (its `<enabled/>` went out in the SASL2 success).
    pub sm: Option<SmState>,
    /// XEP-0280 carbons.
    pub carbons: bool,
    /// XEP-0352: the client starts inactive.
    pub inactive: bool,
}

/// One step of a session's loop, boxed (`BoundSession::serve`).
type Step<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ConnEnd>> + 'a>>;

enum Wake {
    Read(Result<(), ConnEnd>),
    Mail(Option<SessionMsg>),
    Timer,
}

impl BoundSession {
    pub fn new(core: Rc<CoreState>, conn: Conn, jid: FullJid) -> Self {
        // One bare JID for the session and its table entry: an allocation less per session.
        let bare: Arc<str> = jid.to_bare().to_string().into();
        let registered = core.register_session(bare.clone());
        Self::at(core, conn, jid, bare, registered)
    }

    /// A session at an address already registered on this core.
    fn at(
        core: Rc<CoreState>,
        mut conn: Conn,
        jid: FullJid,
        bare: Arc<str>,
        (addr, rx): (SessionAddr, mailbox::Receiver<SessionMsg>),
    ) -> Self {
        conn.deadline = None; // the handshake is over; idle and ping timers take over
        conn.release_idle_memory();
        BoundSession {
            alarm: core.wheel.alarm(),
            credit: Credit::new(addr),
            owner: core.owner_of(&bare),
            resource: resource_of(&jid),
            core,
            conn,
            jid,
            bare,
            addr,
            mailbox: Some(rx),
            presence: None,
            roster_interested: false,
            directed: Directed::default(),
            ping_sent: false,
            released: true,
            sm: None,
            carbons: false,
            carbon_peers: false,
            invisible: false,
            blocked: Arc::default(),
            inactive: false,
            held: Held::default(),
            replay: None,
            pep_interest: Interests::default(),
            caps_query: None,
            hibernating: false,
            told_dormant: false,
        }
    }

    /// Turns on what a Bind 2 request asked for; its UserChannel hears of it in `run`.
    pub fn with_inline(mut self, inline: Inline) -> Self {
        self.sm = inline.sm.map(Box::new);
        self.carbons = inline.carbons;
        self.inactive = inline.inactive;
        self
    }

    /// A session resumed under XEP-0198: its address is already the resource's session in
    /// its UserChannel, and the hand-over is what the old session passed on. `greeting`
    /// replaces the `<resumed/>` when the resumption answered a SASL2 `<authenticate/>`.
    pub fn resumed(core: Rc<CoreState>, conn: Conn, jid: FullJid, r: Resumption, greeting: Option<String>) -> Self {
        let Resumption { registered, resume_id, h_client, handover, meanwhile, updates } = r;
        let bare = jid.to_bare().to_string().into();
        let mut session = Self::at(core, conn, jid, bare, registered);
        session.presence = handover.presence.map(Box::new);
        session.roster_interested = handover.roster_interested;
        session.carbons = handover.carbons;
        session.pep_interest = handover.pep_interest;
        updates.into_iter().for_each(|u| session.update(u));
        session.directed = handover.directed.iter().filter_map(|j| Jid::new(j).ok()).collect();
        let greeting = greeting.unwrap_or_else(|| to_xml(&sm::resumed(&resume_id, handover.handled)));
        let sm_cfg = &session.core.cfg.stream_management;
        session.sm = Some(Box::new(SmState::resumed(resume_id, handover.handled, h_client, sm_cfg)));
        let mut stanzas = handover.unacked;
        stanzas.extend(meanwhile);
        session.replay = Some(Box::new(Replay { greeting, stanzas }));
        session
    }

    /// Runs until the session ends, then tells the user's owner and the contacts. A
    /// resumable session (XEP-0198) whose connection is lost waits for its client to resume
    /// it first.
    ///
    /// Not an `async fn`: one taking `self` by value keeps the argument and its binding as
    /// two copies in its future (rust-lang/rust#62958), and this future is most of an idle
    /// session's memory.
    pub fn run(mut self) -> impl std::future::Future<Output = ()> {
        async move {
            let (addr, rx) = (self.addr, self.mailbox.take().expect("run once"));
            let mut end = match self.replay.take() {
                Some(replay) => {
                    // XEP-0045: its rooms send to the old session's address until told.
                    Box::pin(self.rejoin_rooms()).await;
                    Box::pin(self.send_replay(*replay)).await.err()
                }
                None => {
                    Box::pin(self.announce()).await;
                    None
                }
            };
            if end.is_none() {
                end = Some(self.serve(&rx).await);
            }
            let mut end = end.expect("set above");
            // The teardown is boxed: its futures would otherwise be space in every idle
            // session's task, used once at the end.
            Box::pin(self.release_held()).await;
            if self.may_hibernate(&end) {
                Box::pin(self.conn.end_with(&self.core.cfg.domain, &end)).await;
                Box::pin(self.conn.drop_transport()).await;
                end = Box::pin(self.hibernate(&rx)).await;
                self.core.peers.woke(self.conn.peer.ip(), &self.bare, addr);
            }
            match end {
                ConnEnd::HandedOver => {
                    Box::pin(self.conn.drop_transport()).await;
                    self.core.unregister_session(addr);
                }
                end => Box::pin(self.finish(addr, &rx, end)).await,
            }
        }
    }

    /// Asks the user's UserChannel on one of this session's credits (`router::credit`).
    async fn request(&self, msg: UserMsg) {
        self.core.request_user(self.bare.clone(), &self.credit, msg).await;
    }

    /// Registers with the user's UserChannel, with what Bind 2 turned on already; all in
    /// one actor's order, so the UserChannel knows the resource before anything else.
    async fn announce(&mut self) {
        let bind = UserMsg::Bind { resource: self.resource.clone(), session: self.addr };
        self.core.send_to_user(self.bare.clone(), bind).await;
        self.tell_resumable().await;
        if self.carbons {
            let msg = UserMsg::Carbons { resource: self.resource.clone(), enabled: true };
            self.request(msg).await;
        }
        self.tell_dormant().await;
    }

    /// XEP-0198: tells the UserChannel this session may be resumed, under which id.
    async fn tell_resumable(&mut self) {
        if let Some(resume_id) = self.sm.as_ref().and_then(|s| s.resume_id.clone()) {
            let msg = UserMsg::Resumable { session: self.addr, resume_id };
            self.core.send_to_user(self.bare.clone(), msg).await;
        }
    }

    /// XEP-0198 §5: a lost connection (not a closed stream, nor one we ended for cause)
    /// keeps a resumable session alive.
    fn may_hibernate(&self, end: &ConnEnd) -> bool {
        let resumable = self.sm.as_ref().is_some_and(|s| s.resume_id.is_some());
        resumable && matches!(end, ConnEnd::Io(_) | ConnEnd::Error(StreamError::ConnectionTimeout, _))
    }

    /// The connection is gone; the session keeps what is routed to it until the client
    /// resumes it, or the timeout or a limit ends it for good.
    async fn hibernate(&mut self, rx: &mailbox::Receiver<SessionMsg>) -> ConnEnd {
        let timeout = Duration::from_secs(self.core.cfg.stream_management.resume_timeout_secs);
        let deadline = Instant::now() + timeout;
        self.hibernating = true;
        self.tell_dormant().await;
        for evicted in self.core.peers.hibernate(self.conn.peer.ip(), &self.bare, self.addr) {
            self.core.counters.hibernation_evictions.inc();
            self.core.send_to_session(evicted, SessionMsg::Evicted).await;
        }
        loop {
            let mail = future::or(async { Some(rx.recv().await) }, async {
                glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
                None
            })
            .await;
            let Some(mail) = mail else {
                let (bare, resource, secs) = (&self.bare, &self.resource, timeout.as_secs());
                crate::security_log::event(
                    log::Level::Info,
                    format_args!("{bare}/{resource}: not resumed within {secs} s (XEP-0198); the session ends, unacknowledged stanzas are routed again"),
                );
                return ConnEnd::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "not resumed in time"));
            };
            match mail {
                Some(SessionMsg::Deliver(xml)) => {
                    if self.track_sent(xml).is_err() {
                        return too_many_unacked();
                    }
                }
                Some(SessionMsg::FromRoom(xml)) => {
                    let Some(xml) = self.admit_room_copy(xml).await else { continue };
                    if self.track_sent(xml).is_err() {
                        return too_many_unacked();
                    }
                }
                Some(SessionMsg::DeliverBacklog(backlog)) => {
                    let tracked: Vec<_> = backlog.into_iter().map(|xml| self.track_sent(xml)).collect();
                    if tracked.iter().any(Result::is_err) {
                        return too_many_unacked();
                    }
                }
                Some(SessionMsg::TakeOver { by, h }) => {
                    self.hand_over(by, h).await;
                    return ConnEnd::HandedOver;
                }
                Some(SessionMsg::RingChanged(down)) => {
                    self.credit.forgive();
                    self.follow_owner(&down).await;
                }
                // A hibernating session asks nothing more; a resumed one starts afresh.
                Some(SessionMsg::Credit) => self.credit.returned(),
                Some(SessionMsg::TooManyResources) => return too_many_resources(),
                Some(m @ (SessionMsg::CarbonPeers(_) | SessionMsg::Blocklist(_))) => self.update(m),
                Some(SessionMsg::Replaced) => return ConnEnd::Error(StreamError::Conflict, String::new()),
                Some(SessionMsg::Shutdown) => return ConnEnd::Error(StreamError::SystemShutdown, String::new()),
                Some(SessionMsg::Evicted) => return ConnEnd::Error(StreamError::ResourceConstraint, "too many sessions await resumption".into()),
                Some(SessionMsg::Revoked(why)) => {
                    self.core.counters.sessions_revoked.inc();
                    return stream_error::revoked(why);
                }
                Some(SessionMsg::Resumed(_) | SessionMsg::ResumeFailed) => {}
                None => return ConnEnd::Error(StreamError::ResourceConstraint, "session queue full".into()),
            }
        }
    }

    /// XEP-0198 §5: pass what the resuming stream needs to `by`; this session then ends
    /// without telling anyone, since for everyone else nothing changed.
    async fn hand_over(&mut self, by: SessionAddr, h: u32) {
        self.release_held().await; // into the queue: SM is on
        let sm = self.sm.as_mut().expect("only resumable sessions are taken over");
        // A client claiming more than was sent has, at least, everything.
        // The resumed stream sends them now, so it stamps them with its own time.
        let unacked = if sm.on_ack(h).is_ok() { sm.take_unacked().into_iter().map(|u| u.xml).collect() } else { Vec::new() };
        let handover = Handover {
            resource: self.resource.clone(),
            handled: sm.handled,
            unacked,
            presence: self.presence.take().map(|p| *p),
            roster_interested: self.roster_interested,
            carbons: self.carbons,
            directed: self.directed.take().map(|j| j.to_string()).collect(),
            pep_interest: self.pep_interest.clone(),
        };
        self.core.send_to_session(by, SessionMsg::Resumed(Box::new(handover))).await;
    }

    /// A resumed session's first words: its greeting, then the stanzas to send again.
    async fn send_replay(&mut self, replay: Replay) -> Result<(), ConnEnd> {
        let mut out = replay.greeting;
        let outcome = self.append_tracked(&mut out, replay.stanzas);
        self.request_ack(&mut out, false);
        self.conn.send(out.as_bytes()).await?;
        outcome
    }

    /// Appends each of `items` to `out` and tracks it, even past the unacked limit, so none
    /// drops out of the queue that would re-route it; the limit's error comes after.
    fn append_tracked(&mut self, out: &mut String, items: impl IntoIterator<Item = Arc<str>>) -> Result<(), ConnEnd> {
        let mut outcome = Ok(());
        for xml in items {
            out.push_str(&xml);
            let tracked = self.track_sent(xml);
            if outcome.is_ok() {
                outcome = tracked;
            }
        }
        outcome
    }

    /// What the UserChannel tells a session of its user's state.
    fn update(&mut self, msg: SessionMsg) {
        match msg {
            SessionMsg::CarbonPeers(peers) => self.carbon_peers = peers,
            SessionMsg::Blocklist(list) => self.blocked = list,
            _ => unreachable!("only state updates"),
        }
    }

    /// Adds a delivered stanza to the batch being written, unless the client is inactive
    /// and it can wait (XEP-0352); an urgent one takes what was held along, first.
    fn queue_out(&mut self, batch: &mut String, xml: Arc<str>) -> Result<(), ConnEnd> {
        if self.inactive {
            if self.held.offer(&xml, self.core.cfg.limits.csi_held_stanzas_max) == Verdict::Held {
                return Ok(());
            }
            let held = self.held.take();
            return self.append_tracked(batch, held.into_iter().chain([xml]));
        }
        batch.push_str(&xml);
        self.track_sent(xml)
    }

    /// XEP-0352 `<active/>` or `<inactive/>`; becoming active sends what was held.
    async fn on_csi(&mut self, active: bool) -> Result<(), ConnEnd> {
        self.inactive = !active;
        self.tell_dormant().await;
        if active && !self.held.is_empty() {
            let mut batch = String::new();
            let held = self.held.take();
            let outcome = self.append_tracked(&mut batch, held);
            self.request_ack(&mut batch, false);
            self.conn.send(batch.as_bytes()).await?;
            outcome?;
        }
        Ok(())
    }

    /// The connection is going: what was held for an inactive client joins the XEP-0198
    /// queue (sent again on resumption, or re-routed), or, without SM, is written now.
    async fn release_held(&mut self) {
        let held = self.held.take();
        if self.sm.is_some() {
            for xml in held {
                let _ = self.track_sent(xml);
            }
        } else if !held.is_empty() {
            let _ = self.conn.send(held.concat().as_bytes()).await;
        }
    }

    /// Appends `<r/>` when enough stanzas, or one for long enough, wait for an
    /// acknowledgement and none was asked for; at once when `riding` on a write the client
    /// is awake for anyway (`SmState::take_ack_request`).
    fn request_ack(&mut self, out: &mut String, riding: bool) {
        if self.sm.as_mut().is_some_and(|sm| sm.take_ack_request(Instant::now(), riding)) {
            out.push_str(&to_xml(&sm::request()));
        }
    }

    /// Writes one stanza of the server's own (an IQ answer, a ping), counted for XEP-0198;
    /// the client is awake for it, so an `<r/>` that waits rides along.
    async fn send_stanza(&mut self, el: &Element) -> Result<(), ConnEnd> {
        let xml: Arc<str> = to_xml(el).into();
        self.track_sent(xml.clone())?;
        let mut out = String::from(&*xml);
        self.request_ack(&mut out, true);
        self.conn.send(out.as_bytes()).await?;
        Ok(())
    }

    fn track_sent(&mut self, xml: Arc<str>) -> Result<(), ConnEnd> {
        let within_limit = self.sm.as_mut().is_none_or(|sm| sm.on_sent(xml, Instant::now()));
        if within_limit {
            Ok(())
        } else {
            Err(too_many_unacked())
        }
    }

    /// XEP-0198 elements from the client.
    async fn on_sm(&mut self, el: ClientSm) -> Result<(), ConnEnd> {
        match el {
            ClientSm::Enable { resume } if self.sm.is_none() && self.conn.transport.offers_sm() => {
                let (state, reply) = sm::enable(&self.core.cfg.stream_management, resume);
                self.sm = Some(Box::new(state));
                self.tell_resumable().await;
                self.conn.send_el(&reply).await?;
            }
            ClientSm::Request => match &self.sm {
                Some(state) => {
                    let reply = sm::ack(state.handled);
                    self.conn.send_el(&reply).await?;
                }
                None => self.conn.send_el(&sm::failed("unexpected-request")).await?,
            },
            ClientSm::Ack(h) => {
                if let Some(state) = &mut self.sm {
                    if let Err(e) = state.on_ack(h) {
                        let text = format!("handled-count-too-high: h={} but {} were sent", e.h, e.sent);
                        return Err(ConnEnd::Error(StreamError::UndefinedCondition, text));
                    }
                }
            }
            // Enabled twice, on a transport without it, or resumption asked on a bound
            // stream (XEP-0198 §5: before binding).
            ClientSm::Enable { .. } | ClientSm::Resume { .. } => self.conn.send_el(&sm::failed("unexpected-request")).await?,
            ClientSm::Invalid => return Err(ConnEnd::Error(StreamError::BadFormat, "not an XEP-0198 element".into())),
        }
        Ok(())
    }

    async fn serve(&mut self, rx: &mailbox::Receiver<SessionMsg>) -> ConnEnd {
        let credit_max = self.core.cfg.limits.session_inflight_requests_max;
        loop {
            // Out of credit, neither what is parsed already nor the socket is read: the
            // mailbox brings the credit back (`router::credit`).
            while !self.credit.exhausted(credit_max) {
                // Boxed: the routing path's futures are large, and an idle session should not
                // carry their space while it waits for the next read. The event is matched
                // as a temporary, so no binding of it outlives the step in this future.
                let step = match self.conn.pending_event() {
                    None => break,
                    Some(StreamEvent::Element(el)) => Box::pin(self.on_element(el)),
                    Some(StreamEvent::End) => return ConnEnd::StreamClosed,
                    Some(StreamEvent::Header(_)) => return ConnEnd::Error(StreamError::BadFormat, "unexpected stream header".into()),
                };
                if let Err(e) = contained(step).await.unwrap_or_else(|p| Err(self.panicked(p))) {
                    return e;
                }
            }
            // Re-arming is a no-op unless the check moved earlier (`shards::wheel`).
            self.alarm.arm_at(Instant::now() + self.next_check());
            let paused = self.credit.exhausted(credit_max);
            if paused {
                self.core.counters.session_reads_paused.inc();
            }
            let alarm = &self.alarm;
            let conn = &mut self.conn;
            let read = async move {
                if paused {
                    future::pending::<()>().await;
                }
                Wake::Read(conn.read_more().await)
            };
            let wake = future::or(
                future::or(read, async { Wake::Mail(rx.recv().await) }),
                async {
                    alarm.fired().await;
                    Wake::Timer
                },
            );
            // As above: what woke the session is matched as a temporary, and its handling
            // is a boxed step.
            let step: Step<'_> = match wake.await {
                Wake::Read(Ok(())) => {
                    self.released = false;
                    continue;
                }
                Wake::Read(Err(e)) => return e,
                Wake::Mail(Some(msg)) => Box::pin(self.on_mail(msg, rx)),
                Wake::Mail(None) => return ConnEnd::Error(StreamError::ResourceConstraint, "the client does not read fast enough".into()),
                Wake::Timer => Box::pin(self.on_timer()),
            };
            if let Err(e) = contained(step).await.unwrap_or_else(|p| Err(self.panicked(p))) {
                return e;
            }
        }
    }

    /// A step of this session panicked (a bug its input reached): the session ends as after
    /// any stream error, unbinding and re-routing what it held, and the core goes on.
    fn panicked(&self, p: Panicked) -> ConnEnd {
        self.core.counters.actor_panics.inc();
        log::error!("{}: session ended by a panic, contained: {}", self.jid, p.0);
        ConnEnd::Error(StreamError::InternalServerError, "internal error".into())
    }

    /// Time until the next check is due: buffer release, ping, idle timeout, or an
    /// XEP-0198 ack request.
    fn next_check(&self) -> Duration {
        let limits = &self.core.cfg.limits;
        let since = self.conn.last_rx.elapsed();
        let due_secs = if self.ping_sent { limits.idle_timeout_secs } else { limits.ping_interval_secs.min(limits.idle_timeout_secs) };
        let mut due = Duration::from_secs(due_secs);
        if !self.released {
            due = due.min(IDLE_RELEASE_AFTER);
        }
        let mut wait = due.saturating_sub(since);
        if let Some(ack_due) = self.sm.as_deref().and_then(SmState::ack_request_due) {
            wait = wait.min(ack_due.saturating_duration_since(Instant::now()));
        }
        wait.max(Duration::from_millis(10))
    }

    async fn on_timer(&mut self) -> Result<(), ConnEnd> {
        let mut ack_request = String::new();
        self.request_ack(&mut ack_request, false);
        if !ack_request.is_empty() {
            self.conn.send(ack_request.as_bytes()).await?;
        }
        let limits = &self.core.cfg.limits;
        let silent = self.conn.last_rx.elapsed();
        if silent >= IDLE_RELEASE_AFTER && !self.released {
            self.conn.release_idle_memory();
            self.released = true;
        }
        if silent >= Duration::from_secs(limits.idle_timeout_secs) {
            return Err(ConnEnd::Error(StreamError::ConnectionTimeout, "idle for too long".into()));
        }
        if silent >= Duration::from_secs(limits.ping_interval_secs) && !self.ping_sent {
            // XEP-0199 §4.2: any answer, even an error, shows the client is there.
            let ping = build(
                "iq",
                ns::CLIENT,
                &[("type", "get"), ("id", "martlet-ping"), ("from", &self.core.cfg.domain), ("to", &self.jid.to_string())],
                vec![Element::bare("ping", ns::PING)],
            );
            self.send_stanza(&ping).await?;
            self.ping_sent = true;
        }
        Ok(())
    }

    async fn on_mail(&mut self, first: SessionMsg, rx: &mailbox::Receiver<SessionMsg>) -> Result<(), ConnEnd> {
        let mut batch = String::new();
        let mut next = Some(first);
        let mut outcome = Ok(());
        while let Some(msg) = next {
            match msg {
                SessionMsg::Deliver(xml) => outcome = self.queue_out(&mut batch, xml),
                SessionMsg::FromRoom(xml) => {
                    if let Some(xml) = self.admit_room_copy(xml).await {
                        outcome = self.queue_out(&mut batch, xml);
                    }
                }
                SessionMsg::DeliverBacklog(backlog) => {
                    for xml in backlog {
                        let queued = self.queue_out(&mut batch, xml);
                        if outcome.is_ok() {
                            outcome = queued;
                        }
                    }
                }
                SessionMsg::Replaced => {
                    outcome = Err(ConnEnd::Error(StreamError::Conflict, "replaced by a new session with the same resource".into()));
                }
                SessionMsg::Shutdown => {
                    outcome = Err(ConnEnd::Error(StreamError::SystemShutdown, "the server is restarting".into()));
                }
                SessionMsg::Revoked(why) => {
                    self.core.counters.sessions_revoked.inc();
                    outcome = Err(stream_error::revoked(why));
                }
                SessionMsg::TakeOver { by, h } => {
                    // The client came back on a new connection before this one was seen to
                    // die. What this batch holds is tracked, so the new stream sends it.
                    self.hand_over(by, h).await;
                    return Err(ConnEnd::HandedOver);
                }
                SessionMsg::RingChanged(down) => {
                    self.credit.forgive();
                    self.follow_owner(&down).await;
                }
                SessionMsg::Credit => self.credit.returned(),
                SessionMsg::TooManyResources => outcome = Err(too_many_resources()),
                m @ (SessionMsg::CarbonPeers(_) | SessionMsg::Blocklist(_)) => self.update(m),
                // Evicted: meant for this session while it hibernated, and it was resumed since.
                SessionMsg::Resumed(_) | SessionMsg::ResumeFailed | SessionMsg::Evicted => {}
            }
            next = if batch.len() < WRITE_BATCH_BYTES_MAX && outcome.is_ok() { rx.try_recv() } else { None };
        }
        if outcome.is_ok() {
            self.request_ack(&mut batch, false);
        }
        self.conn.send(batch.as_bytes()).await?;
        outcome
    }

    async fn on_element(&mut self, el: Element) -> Result<(), ConnEnd> {
        #[cfg(feature = "test-hooks")]
        crate::test_hooks::panic_if_asked(&to_xml(&el), "session");
        self.ping_sent = false;
        if let Some(sm_el) = ClientSm::parse(&el) {
            return self.on_sm(sm_el).await;
        }
        if let Some(active) = csi::parse(&el) {
            return self.on_csi(active).await;
        }
        let Some(kind) = Kind::of(&el) else {
            if matches!(el.name(), "message" | "presence" | "iq") {
                return Err(ConnEnd::Error(StreamError::InvalidNamespace, "stanzas are in the jabber:client namespace".into()));
            }
            return Err(ConnEnd::Error(StreamError::UnsupportedStanzaType, format!("<{}/> is not a stanza", el.name())));
        };
        if let Some(state) = &mut self.sm {
            state.on_handled();
        }
        let to = match el.attr("to").map(crate::stanza::stable_jid) {
            None => None,
            Some(Some(j)) => Some(j),
            Some(None) => return self.reply_error(&el, StanzaError::JidMalformed).await,
        };
        // XEP-0191 §3.6: nothing goes to a JID the user blocked (the server and the user's
        // own account stay reachable).
        if let Some(t) = to.as_ref().filter(|t| t.node().is_some() && t.to_bare() != self.jid.to_bare()) {
            if self.blocked.blocks(t) {
                return self.reply_error(&el, StanzaError::Blocked).await;
            }
        }
        match kind {
            Kind::Message => self.on_message(el, to).await,
            Kind::Presence => self.on_presence(el, to).await,
            Kind::Iq => self.on_iq(el, to).await,
        }
    }

    fn from(&self) -> Jid {
        Jid::from(self.jid.clone())
    }

    fn own_bare(&self) -> Jid {
        Jid::from(self.jid.to_bare())
    }

    /// Is `to` a user of this server, or a room of its XEP-0045 service? Other domains
    /// would need server-to-server links.
    fn routable(&self, to: &Jid) -> Result<(), StanzaError> {
        if self.core.is_room(to) {
            return Ok(());
        }
        let domain = Some(to.domain().as_str());
        if self.core.cfg.muc_domain() == domain || self.core.cfg.upload_domain() == domain {
            return Err(StanzaError::ServiceUnavailable); // the services themselves take IQs only
        }
        if to.domain().as_str() != self.core.cfg.domain {
            return Err(StanzaError::RemoteServerNotFound);
        }
        if to.node().is_none() {
            return Err(StanzaError::ServiceUnavailable);
        }
        Ok(())
    }

    async fn on_message(&mut self, el: Element, to: Option<Jid>) -> Result<(), ConnEnd> {
        let to = to.unwrap_or_else(|| self.own_bare()); // RFC 6121 §8.1.1.1
        if let Err(e) = self.routable(&to) {
            return self.reply_error(&el, e).await;
        }
        let stanza = Stanza::seal(Kind::Message, el, self.from(), to);
        if self.carbon_peers && modules::carbons::eligible(&stanza) {
            self.core.send_to_user(self.bare.clone(), UserMsg::Sent(stanza.clone())).await;
        }
        self.core.route(stanza).await;
        Ok(())
    }

    async fn on_presence(&mut self, el: Element, to: Option<Jid>) -> Result<(), ConnEnd> {
        let type_ = el.attr("type").unwrap_or("").to_owned();
        let Some(to) = to else {
            // Broadcast presence: the UserChannel fans it out (RFC 6121 §4.2, §4.5).
            let caps = type_.is_empty().then(|| self.core.client_caps.lookup(&el, &self.core.cfg.domain, &self.jid.to_string())).flatten();
            let stanza = Stanza::seal(Kind::Presence, el, self.from(), self.own_bare());
            match type_.as_str() {
                "" => self.presence = Some(Box::new(stanza.clone())),
                "unavailable" => {
                    self.presence = None;
                    self.send_unavailable_to_directed().await;
                }
                _ => {}
            }
            let msg = UserMsg::OwnPresence { resource: self.resource.clone(), stanza };
            self.request(msg).await;
            return self.learn_caps(caps).await;
        };
        if let Err(e) = self.routable(&to) {
            return self.reply_error(&el, e).await;
        }
        if crate::modules::subscription::SubType::parse(&type_).is_some() {
            let stanza = Stanza::seal(Kind::Presence, el, self.from(), Jid::from(to.to_bare()));
            self.request(UserMsg::OutboundSubscription(stanza)).await;
            return Ok(());
        }
        // Directed presence (RFC 6121 §4.6).
        match type_.as_str() {
            // RFC 6121 §4.6: remembered to send `unavailable` to when the session ends;
            // past the limit still routed, not remembered.
            "" if self.directed.len() < self.core.cfg.limits.directed_presences_max => {
                self.directed.insert(to.clone());
            }
            "unavailable" => {
                self.directed.remove(&to);
            }
            _ => {}
        }
        let stanza = Stanza::seal(Kind::Presence, el, self.from(), to);
        if self.core.is_room(&stanza.to) {
            // XEP-0045: the room learns where this occupant's copies go.
            let room = stanza.to.to_bare().to_string().into();
            self.core.send_to_room(room, RoomMsg::Stanza(stanza, Some(self.addr))).await;
        } else {
            self.core.route(stanza).await;
        }
        Ok(())
    }

    async fn on_iq(&mut self, el: Element, to: Option<Jid>) -> Result<(), ConnEnd> {
        let type_ = el.attr("type").unwrap_or("");
        let request = matches!(type_, "get" | "set");
        if request && el.children().count() != 1 {
            return self.reply_error(&el, StanzaError::BadRequest).await; // RFC 6120 §8.2.3
        }
        if !request && !matches!(type_, "result" | "error") {
            return self.reply_error(&el, StanzaError::BadRequest).await;
        }
        let domain = Jid::new(&self.core.cfg.domain).expect("the configured domain is a valid JID");
        let for_server = match &to {
            None => true,
            Some(t) => *t == domain || *t == self.own_bare(),
        };
        if !for_server {
            let to = to.expect("checked above");
            let service = Some(to.domain().as_str()).filter(|_| to.node().is_none());
            let muc = service.is_some() && self.core.cfg.muc_domain() == service;
            let upload = service.is_some() && self.core.cfg.upload_domain() == service;
            if muc || upload {
                let payload = el.children().next().filter(|_| request);
                let answer = match payload {
                    None => None,
                    Some(p) if muc => Some(crate::muc::service::answer_iq(&self.core.muc_directory, p, type_)),
                    Some(p) => Some(modules::upload::answer_iq(&self.core, &self.jid, p, type_).await),
                };
                return match answer {
                    None => Ok(()),
                    Some(Ok(payload)) => {
                        let id = el.attr("id").unwrap_or("");
                        let from = to.to_string();
                        let user = self.jid.to_string();
                        let reply = build("iq", ns::CLIENT, &[("type", "result"), ("id", id), ("from", &from), ("to", &user)], payload.into_iter().collect());
                        self.send_stanza(&reply).await
                    }
                    Some(Err(e)) => self.reply_error(&el, e).await,
                };
            }
            if let Err(e) = self.routable(&to) {
                return self.reply_error(&el, e).await;
            }
            let stanza = Stanza::seal(Kind::Iq, el, self.from(), to);
            self.core.route(stanza).await;
            return Ok(());
        }
        if !request {
            // The answer to our XEP-0115 caps query, or to the server's own ping, say.
            if let Some(pending) = self.caps_query.take_if(|p| el.attr("id") == Some(p.id.as_str())) {
                if let Some(nodes) = self.core.client_caps.answer(&pending, &el) {
                    self.set_pep_interest(nodes).await;
                }
            }
            return Ok(());
        }
        let payload = el.children().next().expect("one child, checked above");
        let payload_ns = payload.ns();
        if modules::is_account_iq(&payload_ns) && to.as_ref().is_none_or(|t| *t == self.own_bare()) {
            if payload_ns == ns::INVISIBLE && type_ == "set" && matches!(payload.name(), "invisible" | "visible") {
                self.invisible = payload.name() == "invisible";
            }
            let stanza = Stanza::seal(Kind::Iq, el, self.from(), self.own_bare());
            self.roster_interested |= payload_ns == ns::ROSTER && &*stanza.type_ == "get";
            let msg = UserMsg::AccountIq { resource: self.resource.clone(), stanza };
            self.request(msg).await;
            return Ok(());
        }
        let user = self.jid.clone();
        if payload.ns() == ns::CARBONS && type_ == "set" {
            self.carbons = payload.name() == "enable";
        }
        let answer = modules::handle_server_iq(&self.core, &self.credit, &user, &el, payload).await;
        let (first, outcome) = match answer {
            IqAnswer::Result(payload) => (Vec::new(), Ok(payload)),
            IqAnswer::ResultAfter(first, payload) => (first, Ok(payload)),
            IqAnswer::Error(e) => (Vec::new(), Err(e)),
        };
        for stanza in &first {
            self.send_stanza(stanza).await?;
        }
        let reply = match outcome {
            Ok(payload) => {
                let id = el.attr("id").unwrap_or("");
                let from = to.map(|t| t.to_string()).unwrap_or_else(|| self.core.cfg.domain.clone());
                build("iq", ns::CLIENT, &[("type", "result"), ("id", id), ("from", &from), ("to", &user.to_string())], payload.into_iter().collect())
            }
            Err(e) => {
                let mut reply = e.reply_to(&el);
                crate::stanza::set_attr(&mut reply, "to", Some(user.to_string()));
                reply
            }
        };
        self.send_stanza(&reply).await
    }

    /// XEP-0115: what the caps of a presence the client broadcast stand for, known on this
    /// core or asked of the client (whose answer comes back through `on_iq`).
    async fn learn_caps(&mut self, caps: Option<Lookup>) -> Result<(), ConnEnd> {
        match caps {
            None => Ok(()),
            Some(Lookup::Known(nodes)) => {
                self.set_pep_interest(nodes).await;
                Ok(())
            }
            Some(Lookup::Ask(pending, query)) => {
                self.caps_query = Some(Box::new(pending));
                self.send_stanza(&query).await
            }
        }
    }

    /// XEP-0163: tells the UserChannel when the nodes the client wants events from change.
    async fn set_pep_interest(&mut self, nodes: Interests) {
        if nodes != self.pep_interest {
            self.pep_interest = nodes.clone();
            let msg = UserMsg::PepInterest { resource: self.resource.clone(), nodes };
            self.request(msg).await;
        }
    }

    /// Answers the client itself with a stanza error.
    async fn reply_error(&mut self, el: &Element, e: StanzaError) -> Result<(), ConnEnd> {
        if may_answer_with_error(el) {
            let mut reply = e.reply_to(el);
            crate::stanza::set_attr(&mut reply, "to", Some(self.jid.to_string()));
            self.send_stanza(&reply).await?;
        }
        Ok(())
    }

    /// After a ring change: if the user's owner moved, register with the new one, carrying
    /// what it needs to route to this session as the old one did.
    async fn follow_owner(&mut self, nodes_down: &[u32]) {
        self.rejoin_rooms().await;
        let owner = self.core.owner_of(&self.bare);
        // An owner that restarted keeps its place on the ring but lost its record of us.
        if owner == self.owner && !nodes_down.contains(&owner.node) {
            return;
        }
        self.owner = owner;
        let msg = UserMsg::Rebind {
            resource: self.resource.clone(),
            session: self.addr,
            presence: self.presence.as_deref().cloned(),
            roster_interested: self.roster_interested,
            resume_id: self.sm.as_ref().and_then(|s| s.resume_id.clone()),
            carbons: self.carbons,
            pep_interest: self.pep_interest.clone(),
            invisible: self.invisible,
        };
        self.core.send_to_user(self.bare.clone(), msg).await;
        self.told_dormant = false; // the new owner knows nothing of it yet
        self.tell_dormant().await;
    }

    /// XEP-0045: the rooms this session is in (its directed presences to occupant JIDs) may
    /// have new owners, which know nothing of it: it registers again with each, silently
    /// (a room whose owner did not change already has it, and ignores this).
    async fn rejoin_rooms(&mut self) {
        let rooms: Vec<Jid> = self.directed.iter().filter(|j| self.core.is_room(j) && j.resource().is_some()).cloned().collect();
        for occupant in rooms {
            let children = self.presence.as_ref().map(|p| p.element().children().cloned().collect()).unwrap_or_default();
            let el = build("presence", ns::CLIENT, &[], children);
            let stanza = Stanza::seal(Kind::Presence, el, self.from(), occupant);
            self.core.send_to_room(stanza.to_bare().to_string().into(), RoomMsg::Rejoin(stanza, self.addr)).await;
        }
    }

    /// XEP-0045: a room's copy, sent here without passing the UserChannel, which would
    /// have checked it against the blocklist (XEP-0191 §3.5: the user may have blocked the
    /// room since joining) and, with this client dormant, sent a push (XEP-0357): both done
    /// here. `None`: not for the client.
    async fn admit_room_copy(&mut self, xml: Arc<str>) -> Option<Arc<str>> {
        let dormant = self.inactive || self.hibernating;
        if self.blocked.is_empty() && !dormant {
            return Some(xml);
        }
        let Some(stanza) = Stanza::from_sealed(xml.clone()) else { return Some(xml) };
        if self.blocked.blocks(&stanza.from) {
            return None;
        }
        if dormant && stanza.kind == Kind::Message {
            // Boxed: rare, and its future would otherwise be space in every session's.
            Box::pin(self.core.send_to_user(self.bare.clone(), UserMsg::RoomNotice(stanza))).await;
        }
        Some(xml)
    }

    /// XEP-0357: tells the UserChannel whether this client sees messages now, so it knows
    /// when a message should wake the phone instead.
    async fn tell_dormant(&mut self) {
        let dormant = self.inactive || self.hibernating;
        if dormant != self.told_dormant {
            self.told_dormant = dormant;
            let msg = UserMsg::Dormant { session: self.addr, dormant };
            self.core.send_to_user(self.bare.clone(), msg).await;
        }
    }

    async fn send_unavailable_to_directed(&mut self) {
        for to in self.directed.take() {
            let el = build("presence", ns::CLIENT, &[("type", "unavailable")], vec![]);
            let stanza = Stanza::seal(Kind::Presence, el, self.from(), to);
            self.core.route(stanza).await;
        }
    }

    /// The session ends for good. What the client may not have seen (unacknowledged under
    /// XEP-0198, or still in the mailbox) goes back to the UserChannel as undelivered,
    /// after the `Unbind`, so it is routed to the user's other resources or offline storage
    /// and never to this session again; anything routed here later is sent back by the
    /// core (`CoreState::session_local`), also behind the `Unbind`. At shutdown it is
    /// stored offline here, before this core may stop. The goodbye to the client comes
    /// last, bounded like any write (`Conn::send`), so a client that does not read delays
    /// neither its messages nor shutdown; the session leaves the core's table after it.
    async fn finish(mut self, addr: SessionAddr, rx: &mailbox::Receiver<SessionMsg>, end: ConnEnd) {
        rx.close();
        let unbind = UserMsg::Unbind { session: addr };
        self.core.send_to_user(self.bare.clone(), unbind).await;
        let mut left = self.sm.as_mut().map(|s| s.take_unacked()).unwrap_or_default();
        let now = SystemTime::now();
        while let Some(mail) = rx.try_recv() {
            match mail {
                SessionMsg::Deliver(xml) | SessionMsg::FromRoom(xml) => left.push(Unacked { xml, sent_at: now }),
                SessionMsg::DeliverBacklog(backlog) => left.extend(backlog.into_iter().map(|xml| Unacked { xml, sent_at: now })),
                _ => {}
            }
        }
        // Each goes back with the time it reached this session, which the user's actor
        // stamps on it (XEP-0203) wherever it goes next.
        let left: Vec<Stanza> = left
            .into_iter()
            .filter_map(|u| Stanza::reroutable(u.xml).map(|s| Stanza { received: Some(u.sent_at), ..s }))
            .collect();
        if self.core.stopping.get() {
            self.store_offline(left).await;
        } else {
            for stanza in left {
                self.core.counters.undelivered_rerouted.inc();
                self.core.send_to_user(self.bare.clone(), UserMsg::Undelivered(stanza)).await;
            }
        }
        // RFC 6121 §4.6.3: whether or not it ever broadcast presence.
        self.send_unavailable_to_directed().await;
        self.conn.end_with(&self.core.cfg.domain, &end).await;
        self.core.unregister_session(addr);
    }

    /// XEP-0160 storage of unacknowledged messages, for the shutdown path.
    async fn store_offline(&self, messages: Vec<Stanza>) {
        let max = self.core.cfg.limits.offline_messages_max;
        for m in messages.into_iter().filter(|m| delivery::message(&[], None, &m.type_) == Route::Offline) {
            let stored = offline::row(&m, &self.core.cfg.domain);
            match self.core.storage.offline_push(self.bare.to_string(), stored, max).await {
                Ok(true) => self.core.counters.offline_stored.inc(),
                Ok(false) => log::warn!("{}: offline store full at shutdown; an unacknowledged message is lost", self.bare),
                Err(e) => log::error!("{}: unacknowledged message not stored at shutdown: {e}", self.bare),
            }
        }
    }
}

/// XEP-0198: the client stopped acknowledging; the session ends and what it holds is re-routed.
fn too_many_unacked() -> ConnEnd {
    ConnEnd::Error(StreamError::ResourceConstraint, "too many unacknowledged stanzas".into())
}


fn too_many_resources() -> ConnEnd {
    ConnEnd::Error(StreamError::PolicyViolation, "too many sessions for this account: the oldest gives way".into())
}

/// An idle session is mostly this state, inline in its task's future (`run`): the sizes
/// are budgets, checked here as xmpp-rs checks its types', so growth is a decision and not
/// an accident. The whole future is checked at run time (`martlet_session_task_bytes`,
/// tests/integration/test_session_engine.py). x86_64 figures.
#[cfg(all(test, target_pointer_width = "64"))]
mod sizes {
    use std::mem::size_of;

    #[test]
    fn idle_session_state_stays_within_its_budget() {
        // The stream parser: rxml's lexer and parser state (296 B) and what is kept between stanzas.
        assert!(size_of::<crate::xml::stream_parser::StreamParser>() <= 400, "{}", size_of::<crate::xml::stream_parser::StreamParser>());
        // The connection: the parser, the transport (glommio's TcpStream, 120 B), the clocks.
        assert!(size_of::<super::Conn>() <= 664, "{}", size_of::<super::Conn>());
        // The session: the connection, its JIDs, and state most sessions never use, boxed
        // or empty (XEP-0198, directed presences, a resumption's replay, a caps query).
        assert!(size_of::<super::BoundSession>() <= 912, "{}", size_of::<super::BoundSession>());
        // glommio's source for the armed read, one per connection (vendored patch): 256 B is
        // an allocator size class of its own, one byte more takes the next (320 B).
        assert!(glommio::source_allocation_bytes() <= 256, "{}", glommio::source_allocation_bytes());
    }
}
