//! The Session actor of a bound stream: reads the client's stanzas and routes them, writes
//! what other actors deliver to its mailbox, and keeps the connection honest (idle timeout,
//! XEP-0199 pings). It lives on the core that accepted the connection.

use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use jid::{FullJid, Jid};
use minidom::Element;
use shards::mailbox;

use super::conn::{Conn, ConnEnd};
use super::negotiate::resource_of;
use super::stream_error::StreamError;
use crate::modules::{self, IqAnswer};
use crate::router::{CoreState, SessionAddr, SessionMsg, UserMsg};
use crate::stanza::{build, may_answer_with_error, Kind, Stanza, StanzaError};
use crate::xml::{ns, stream_parser::StreamEvent};

/// Stanzas written in one go when several are queued: fewer syscalls and TLS records under
/// load, bounded so one busy session cannot hold its core for long.
const WRITE_BATCH_BYTES_MAX: usize = 64 * 1024;

/// Quiet time after which a session gives back its busy-time buffers.
const IDLE_RELEASE_AFTER: Duration = Duration::from_secs(2);

/// Directed presences remembered per session (RFC 6121 §4.6), to send `unavailable` to
/// when the session ends; more are still routed but not remembered.
const DIRECTED_PRESENCES_MAX: usize = 1000;

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
    directed: HashSet<Jid>,
    ping_sent: bool,
    /// Buffers were given back since the last read.
    released: bool,
}

enum Wake {
    Read(Result<(), ConnEnd>),
    Mail(Option<SessionMsg>),
    Timer,
}

impl BoundSession {
    pub fn new(core: Rc<CoreState>, mut conn: Conn, jid: FullJid) -> Self {
        conn.deadline = None; // the handshake is over; idle and ping timers take over
        let bare: Arc<str> = jid.to_bare().to_string().into();
        let resource = resource_of(&jid);
        let (addr, rx) = core.register_session();
        BoundSession {
            owner: core.owner_of(&bare),
            core,
            conn,
            jid,
            bare,
            addr,
            mailbox: Some(rx),
            resource,
            presence: None,
            roster_interested: false,
            directed: HashSet::new(),
            ping_sent: false,
            released: false,
        }
    }

    /// Runs until the stream ends, then tells the user's owner and the contacts.
    pub async fn run(mut self) {
        let (addr, rx) = (self.addr, self.mailbox.take().expect("run once"));
        let bind = UserMsg::Bind { resource: self.resource.clone(), session: addr };
        Box::pin(self.core.send_to_user(self.bare.clone(), bind)).await;
        let end = self.serve(&rx).await;
        Box::pin(self.finish(addr, end)).await;
    }

    async fn serve(&mut self, rx: &mailbox::Receiver<SessionMsg>) -> ConnEnd {
        loop {
            while let Some(ev) = self.conn.pending_event() {
                match ev {
                    StreamEvent::Element(el) => {
                        // Boxed: the routing path's futures are large, and an idle session
                        // should not carry their space while it waits for the next read.
                        if let Err(e) = Box::pin(self.on_element(el)).await {
                            return e;
                        }
                    }
                    StreamEvent::End => return ConnEnd::StreamClosed,
                    StreamEvent::Header(_) => return ConnEnd::Error(StreamError::BadFormat, "unexpected stream header".into()),
                }
            }
            let wait = self.next_check();
            let wake = future::or(
                future::or(async { Wake::Read(self.conn.read_more().await) }, async { Wake::Mail(rx.recv().await) }),
                async {
                    glommio::timer::sleep(wait).await;
                    Wake::Timer
                },
            )
            .await;
            let step = match wake {
                Wake::Read(r) => {
                    self.released = false;
                    r
                }
                Wake::Mail(Some(msg)) => Box::pin(self.on_mail(msg, rx)).await,
                Wake::Mail(None) => Err(ConnEnd::Error(StreamError::ResourceConstraint, "the client does not read fast enough".into())),
                Wake::Timer => Box::pin(self.on_timer()).await,
            };
            if let Err(e) = step {
                return e;
            }
        }
    }

    /// Time until the next check is due: buffer release, ping, or idle timeout.
    fn next_check(&self) -> Duration {
        let limits = &self.core.cfg.limits;
        let since = self.conn.last_rx.elapsed();
        let due_secs = if self.ping_sent { limits.idle_timeout_secs } else { limits.ping_interval_secs.min(limits.idle_timeout_secs) };
        let mut due = Duration::from_secs(due_secs);
        if !self.released {
            due = due.min(IDLE_RELEASE_AFTER);
        }
        due.saturating_sub(since).max(Duration::from_millis(10))
    }

    async fn on_timer(&mut self) -> Result<(), ConnEnd> {
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
            self.conn.send_el(&ping).await?;
            self.ping_sent = true;
        }
        Ok(())
    }

    async fn on_mail(&mut self, first: SessionMsg, rx: &mailbox::Receiver<SessionMsg>) -> Result<(), ConnEnd> {
        let mut batch = String::new();
        let mut next = Some(first);
        while let Some(msg) = next {
            match msg {
                SessionMsg::Deliver(xml) => batch.push_str(&xml),
                SessionMsg::Replaced => {
                    self.conn.send(batch.as_bytes()).await?;
                    return Err(ConnEnd::Error(StreamError::Conflict, "replaced by a new session with the same resource".into()));
                }
                SessionMsg::Shutdown => {
                    self.conn.send(batch.as_bytes()).await?;
                    return Err(ConnEnd::Error(StreamError::SystemShutdown, "the server is restarting".into()));
                }
                SessionMsg::RingChanged => self.follow_owner().await,
            }
            next = if batch.len() < WRITE_BATCH_BYTES_MAX { rx.try_recv() } else { None };
        }
        self.conn.send(batch.as_bytes()).await?;
        Ok(())
    }

    async fn on_element(&mut self, el: Element) -> Result<(), ConnEnd> {
        self.ping_sent = false;
        let Some(kind) = Kind::of(&el) else {
            if matches!(el.name(), "message" | "presence" | "iq") {
                return Err(ConnEnd::Error(StreamError::InvalidNamespace, "stanzas are in the jabber:client namespace".into()));
            }
            return Err(ConnEnd::Error(StreamError::UnsupportedStanzaType, format!("<{}/> is not a stanza", el.name())));
        };
        let to = match el.attr("to").map(Jid::new) {
            None => None,
            Some(Ok(j)) => Some(j),
            Some(Err(_)) => return self.reply_error(&el, StanzaError::JidMalformed).await,
        };
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

    /// Is `to` a user of this server? Other domains would need server-to-server links.
    fn local_user(&self, to: &Jid) -> Result<(), StanzaError> {
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
        if let Err(e) = self.local_user(&to) {
            return self.reply_error(&el, e).await;
        }
        let stanza = Stanza::seal(Kind::Message, el, self.from(), to);
        self.core.send_to_user(stanza.to_bare().to_string().into(), UserMsg::Inbound(stanza)).await;
        Ok(())
    }

    async fn on_presence(&mut self, el: Element, to: Option<Jid>) -> Result<(), ConnEnd> {
        let type_ = el.attr("type").unwrap_or("").to_owned();
        let Some(to) = to else {
            // Broadcast presence: the UserChannel fans it out (RFC 6121 §4.2, §4.5).
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
            self.core.send_to_user(self.bare.clone(), msg).await;
            return Ok(());
        };
        if let Err(e) = self.local_user(&to) {
            return self.reply_error(&el, e).await;
        }
        if crate::modules::subscription::SubType::parse(&type_).is_some() {
            let stanza = Stanza::seal(Kind::Presence, el, self.from(), Jid::from(to.to_bare()));
            self.core.send_to_user(self.bare.clone(), UserMsg::OutboundSubscription(stanza)).await;
            return Ok(());
        }
        // Directed presence (RFC 6121 §4.6).
        match type_.as_str() {
            "" if self.directed.len() < DIRECTED_PRESENCES_MAX => {
                self.directed.insert(to.clone());
            }
            "unavailable" => {
                self.directed.remove(&to);
            }
            _ => {}
        }
        let stanza = Stanza::seal(Kind::Presence, el, self.from(), to);
        self.core.send_to_user(stanza.to_bare().to_string().into(), UserMsg::Inbound(stanza)).await;
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
            if let Err(e) = self.local_user(&to) {
                return self.reply_error(&el, e).await;
            }
            let stanza = Stanza::seal(Kind::Iq, el, self.from(), to);
            self.core.send_to_user(stanza.to_bare().to_string().into(), UserMsg::Inbound(stanza)).await;
            return Ok(());
        }
        if !request {
            return Ok(()); // an answer to the server's own ping, say
        }
        let payload = el.children().next().expect("one child, checked above");
        if payload.ns() == ns::ROSTER && to.as_ref().is_none_or(|t| *t == self.own_bare()) {
            let stanza = Stanza::seal(Kind::Iq, el, self.from(), self.own_bare());
            self.roster_interested |= &*stanza.type_ == "get";
            let msg = UserMsg::RosterIq { resource: self.resource.clone(), stanza };
            self.core.send_to_user(self.bare.clone(), msg).await;
            return Ok(());
        }
        let user = self.jid.clone();
        let answer = modules::handle_server_iq(&self.core, &user, &el, payload).await;
        let reply = match answer {
            IqAnswer::Result(payload) => {
                let id = el.attr("id").unwrap_or("");
                let from = to.map(|t| t.to_string()).unwrap_or_else(|| self.core.cfg.domain.clone());
                build("iq", ns::CLIENT, &[("type", "result"), ("id", id), ("from", &from), ("to", &user.to_string())], payload.into_iter().collect())
            }
            IqAnswer::Error(e) => {
                let mut reply = e.reply_to(&el);
                crate::stanza::set_attr(&mut reply, "to", Some(user.to_string()));
                reply
            }
        };
        self.conn.send_el(&reply).await?;
        Ok(())
    }

    /// Answers the client itself with a stanza error.
    async fn reply_error(&mut self, el: &Element, e: StanzaError) -> Result<(), ConnEnd> {
        if may_answer_with_error(el) {
            let mut reply = e.reply_to(el);
            crate::stanza::set_attr(&mut reply, "to", Some(self.jid.to_string()));
            self.conn.send_el(&reply).await?;
        }
        Ok(())
    }

    /// After a ring change: if the user's owner moved, register with the new one, carrying
    /// what it needs to route to this session as the old one did.
    async fn follow_owner(&mut self) {
        let owner = self.core.owner_of(&self.bare);
        if owner == self.owner {
            return;
        }
        self.owner = owner;
        let msg = UserMsg::Rebind {
            resource: self.resource.clone(),
            session: self.addr,
            presence: self.presence.as_deref().cloned(),
            roster_interested: self.roster_interested,
        };
        self.core.send_to_user(self.bare.clone(), msg).await;
    }

    async fn send_unavailable_to_directed(&mut self) {
        for to in std::mem::take(&mut self.directed) {
            let el = build("presence", ns::CLIENT, &[("type", "unavailable")], vec![]);
            let stanza = Stanza::seal(Kind::Presence, el, self.from(), to);
            self.core.send_to_user(stanza.to_bare().to_string().into(), UserMsg::Inbound(stanza)).await;
        }
    }

    /// The stream is over: close it properly, then tell directed-presence recipients and the
    /// UserChannel (which tells the contacts) — also when the TCP connection just died.
    async fn finish(mut self, addr: SessionAddr, end: ConnEnd) {
        match &end {
            ConnEnd::Error(err, text) => self.conn.fail(&self.core.cfg.domain, *err, text).await,
            ConnEnd::StreamClosed => self.conn.close().await,
            ConnEnd::Io(_) => {}
        }
        self.core.unregister_session(addr);
        if self.presence.is_some() {
            self.send_unavailable_to_directed().await;
        }
        let unbind = UserMsg::Unbind { resource: self.resource.clone(), session: addr };
        self.core.send_to_user(self.bare.clone(), unbind).await;
    }
}
