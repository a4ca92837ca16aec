//! Stream negotiation (RFC 6120 §4-7) as typed phases: an [`Unauthenticated`] stream can only
//! become an [`Authenticated`] one through SASL, and only an authenticated stream can bind a
//! resource and become a [`BoundSession`] — the one type that can route stanzas. SASL2
//! (XEP-0388, `sasl2`) may bind or resume in the same step, going straight to a session.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jid::{BareJid, FullJid};
use minidom::Element;

use super::conn::{new_stream_id, until, Conn, ConnEnd};
use super::sasl::{self, Mechanism, Outcome, Profile};
use super::sasl2;
use super::session::{BoundSession, Resumption};
use super::stream_error::StreamError;
use super::tls_stream::TlsStream;
use super::transport::Transport;
use crate::modules::stream_mgmt::{self as sm, ClientSm};
use crate::modules::{csi, register, roster, session_iq};
use crate::router::{CoreState, Revocation, SessionAddr, SessionMsg, UserMsg};
use crate::stanza::{build, text_el, StanzaError};
use crate::storage::Credentials;
use crate::xml::{ns, stream_parser::StreamEvent};

/// Longest resource a client may ask for, in bytes (RFC 7622 allows 1023).
const RESOURCE_BYTES_MAX: usize = 1023;

/// Longest mechanism name the log repeats; real ones are at most 20 (RFC 4422 §3.1).
const MECHANISM_LOGGED_CHARS_MAX: usize = 32;

/// How long a resuming stream waits for the old session to hand over (XEP-0198 §5), beyond
/// `send_stall_secs`: the hand-over is a few messages between actors, even across nodes,
/// but an old session still connected may be stuck in a write to its dead peer until the
/// stall limit ends it. Past this the old session is taken to be gone and resumption fails.
const RESUME_HANDOVER_SLACK: Duration = Duration::from_secs(10);

/// A connected stream before authentication.
pub struct Unauthenticated {
    core: Rc<CoreState>,
    conn: Conn,
    auth_failures: usize,
}

/// A stream whose client proved who it is; it may bind a resource and nothing else.
pub struct Authenticated {
    pub(super) core: Rc<CoreState>,
    pub(super) conn: Conn,
    pub(super) user: BareJid,
    /// RFC 6120 SASL restarts the stream; SASL2 does not, so no new header comes.
    restarted: bool,
    /// What the password was checked against: a bind after the password changed (or the
    /// account went) is refused, since revocation reaches only bound sessions.
    credentials: Option<Credentials>,
}

/// Where authentication leaves a stream: to bind a resource, or bound by SASL2 already.
pub enum LoggedIn {
    Unbound(Authenticated),
    Bound(BoundSession),
}

/// How the client authenticated.
enum Negotiated {
    Rfc6120 { user: BareJid, credentials: Option<Credentials> },
    Sasl2 { user: BareJid, req: Box<sasl2::Authenticate>, additional: Option<Vec<u8>>, rotate: bool },
}

fn end(err: StreamError, text: &str) -> ConnEnd {
    ConnEnd::Error(err, text.to_owned())
}

/// Reads the client's stream header and answers with ours (RFC 6120 §4.7) and `features`,
/// in one write: a login is several stream opens, each one segment less this way.
async fn open_stream(core: &CoreState, conn: &mut Conn, features: &[Element]) -> Result<(), ConnEnd> {
    let header = match conn.next_event().await? {
        StreamEvent::Header(h) => h,
        _ => return Err(end(StreamError::NotWellFormed, "expected a stream header")),
    };
    if header.name() != "stream" || header.ns() != ns::STREAM {
        return Err(end(StreamError::InvalidNamespace, "the stream element is <stream:stream/> in http://etherx.jabber.org/streams"));
    }
    let to = header.attr("to").unwrap_or(&core.cfg.domain);
    let served = jid::BareJid::new(to).is_ok_and(|j| j.node().is_none() && j.domain().as_str() == core.cfg.domain);
    if !served {
        return Err(end(StreamError::HostUnknown, "this server does not serve that domain"));
    }
    if header.attr("version").is_some_and(|v| !v.starts_with("1.")) {
        return Err(end(StreamError::UnsupportedVersion, "XMPP 1.x only"));
    }
    let lang = header.attr_ns(rxml::Namespace::xml(), "lang").unwrap_or("en").to_owned();
    let mut out = conn.header(&core.cfg.domain, &new_stream_id(), &lang);
    out.push_str(&super::features::to_wire(features));
    conn.send(out.as_bytes()).await?;
    Ok(())
}

/// The next top-level element during negotiation. A stanza-shaped element in the wrong
/// namespace is a stream-level namespace error.
async fn next_element(conn: &mut Conn) -> Result<Element, ConnEnd> {
    let el = match conn.next_event().await? {
        StreamEvent::Element(el) => el,
        StreamEvent::End => return Err(ConnEnd::StreamClosed),
        StreamEvent::Header(_) => return Err(end(StreamError::BadFormat, "unexpected stream header")),
    };
    if matches!(el.name(), "message" | "presence" | "iq") && el.ns() != ns::CLIENT {
        return Err(end(StreamError::InvalidNamespace, "stanzas are in the jabber:client namespace"));
    }
    Ok(el)
}

impl Unauthenticated {
    pub fn new(core: Rc<CoreState>, conn: Conn) -> Self {
        Unauthenticated { core, conn, auth_failures: 0 }
    }

    /// Runs STARTTLS, in-band registration and SASL until the client authenticates.
    /// On an error the stream error is returned for the caller to send.
    pub async fn authenticate(mut self) -> Result<LoggedIn, (Conn, ConnEnd)> {
        match self.negotiate().await {
            Ok(Negotiated::Rfc6120 { user, credentials }) => {
                Ok(LoggedIn::Unbound(Authenticated { core: self.core, conn: self.conn, user, restarted: true, credentials }))
            }
            Ok(Negotiated::Sasl2 { user, req, additional, rotate }) => {
                // SASL2 binds in the same step (Bind 2): nothing can change in between.
                let auth = Authenticated { core: self.core, conn: self.conn, user, restarted: false, credentials: None };
                sasl2::complete(auth, *req, additional, rotate).await
            }
            Err(e) => Err((self.conn, e)),
        }
    }

    async fn negotiate(&mut self) -> Result<Negotiated, ConnEnd> {
        let cfg = self.core.cfg.clone();
        loop {
            let tls = self.conn.transport.is_tls();
            let mechanisms = Mechanism::offered(tls, cfg.c2s.require_tls, cfg.c2s.plain_without_tls);
            let may_auth = tls || !cfg.c2s.require_tls;
            let features = self.features(tls, may_auth, &mechanisms);
            open_stream(&self.core, &mut self.conn, &features).await?;
            loop {
                let el = next_element(&mut self.conn).await?;
                if el.is("starttls", ns::TLS) && !tls && self.conn.transport.may_starttls() {
                    self.starttls().await?;
                    break; // a new stream starts over TLS (RFC 6120 §5.4.3.3)
                } else if el.is("auth", ns::SASL) || el.is("authenticate", ns::SASL2) {
                    let profile = if el.ns() == ns::SASL2 { Profile::Sasl2 } else { Profile::Rfc6120 };
                    if !may_auth {
                        sasl::fail(&mut self.conn, profile, "encryption-required").await?;
                        continue;
                    }
                    self.may_try_auth()?;
                    if profile == Profile::Rfc6120 {
                        let outcome = sasl::authenticate(&self.core, &mut self.conn, profile, &mechanisms, el.attr("mechanism"), &el.text())
                            .await
                            .map_err(|e| self.abandoned(e))?;
                        if let Some((user, additional, credentials)) = self.counted(outcome, &el)? {
                            let data = additional.map(|a| sasl::encode(&a)).unwrap_or_default();
                            self.conn.send_el(&text_el("success", ns::SASL, &data)).await?;
                            self.conn.restart();
                            return Ok(Negotiated::Rfc6120 { user, credentials });
                        }
                    } else {
                        let req = Box::new(sasl2::Authenticate::parse(&el));
                        let (outcome, rotate) =
                            sasl2::authenticate(&self.core, &mut self.conn, &mechanisms, &req).await.map_err(|e| self.abandoned(e))?;
                        if let Some((user, additional, _)) = self.counted(outcome, &el)? {
                            return Ok(Negotiated::Sasl2 { user, req, additional, rotate });
                        }
                    }
                } else if el.is("iq", ns::CLIENT) && cfg.registration.enabled && may_auth {
                    let may_create = || {
                        let allowed = self.core.registrations.try_attempt(self.conn.peer.ip());
                        if !allowed {
                            self.core.counters.registrations_refused.inc();
                        }
                        allowed
                    };
                    let reply = register::unauthenticated(&self.core, &el, may_create).await;
                    self.conn.send_el(&reply).await?;
                } else {
                    // RFC 6120 §6.4.6 / §4.9.3.21: nothing is routed before authentication.
                    return Err(end(StreamError::NotAuthorized, "authenticate first"));
                }
            }
        }
    }

    fn features(&self, tls: bool, may_auth: bool, mechanisms: &[Mechanism]) -> Vec<Element> {
        let mut children = Vec::new();
        if !tls && self.conn.transport.may_starttls() {
            let required = if self.core.cfg.c2s.require_tls { vec![Element::bare("required", ns::TLS)] } else { vec![] };
            children.push(build("starttls", ns::TLS, &[], required));
        }
        if may_auth {
            let mechs = mechanisms.iter().map(|m| text_el("mechanism", ns::SASL, m.name())).collect();
            children.push(build("mechanisms", ns::SASL, &[], mechs));
            children.push(sasl2::feature(&self.core, mechanisms, self.conn.transport.offers_sm()));
            if self.core.cfg.registration.enabled {
                children.push(Element::bare("register", ns::REGISTER_FEATURE));
            }
        }
        children
    }

    async fn starttls(&mut self) -> Result<(), ConnEnd> {
        self.conn.send_el(&Element::bare("proceed", ns::TLS)).await?;
        let Transport::Plain(tcp) = self.conn.take_transport() else {
            return Err(end(StreamError::BadFormat, "TLS is already on"));
        };
        let accept = async { TlsStream::accept(tcp, self.core.tls.xmpp.clone()).await.map_err(ConnEnd::Io) };
        let tls = match self.conn.deadline {
            Some(deadline) => until(deadline, accept).await?,
            None => accept.await?,
        };
        self.conn.transport = Transport::Tls(Box::new(tls));
        self.conn.restart();
        Ok(())
    }

    /// Whether this address may try to authenticate now (`auth_failures_per_ip_per_minute`).
    fn may_try_auth(&self) -> Result<(), ConnEnd> {
        if !self.core.peers.auth_allowed(self.conn.peer.ip()) {
            return Err(end(StreamError::PolicyViolation, "too many failed authentications from this address; try again later"));
        }
        Ok(())
    }

    /// The outcome of one SASL attempt, either profile: the user and the mechanism's
    /// success data, or `None` after a failure. Failures are counted per stream and per
    /// address; past either limit the stream ends. Each failure is logged (rate-limited)
    /// with what an operator, or fail2ban, needs: user, address, mechanism, reason.
    fn counted(&mut self, outcome: Outcome, auth: &Element) -> Result<Option<Authenticating>, ConnEnd> {
        let ip = self.conn.peer.ip();
        match outcome {
            Outcome::Success { user, additional, credentials } => Ok(Some((user, additional, credentials))),
            Outcome::Failure { condition, user } => {
                let user = user.map_or_else(|| "(none given)".to_owned(), |u| u.to_string());
                // The client's own words: cut short and quoted, so they cannot forge log lines.
                let mechanism: String = auth.attr("mechanism").unwrap_or("").chars().take(MECHANISM_LOGGED_CHARS_MAX).collect();
                crate::security_log::event(
                    log::Level::Warn,
                    format_args!("authentication failed: user {user} from {ip}, mechanism {mechanism:?}: {condition}"),
                );
                self.record_failure();
                self.auth_failures += 1;
                if self.auth_failures >= self.core.cfg.limits.auth_failures_max {
                    return Err(end(StreamError::NotAuthorized, "too many failed authentication attempts"));
                }
                Ok(None)
            }
        }
    }
}

impl Unauthenticated {
    fn record_failure(&self) {
        self.core.peers.record_auth_failure(self.conn.peer.ip());
        self.core.counters.auth_failures.inc();
    }

    /// A SASL exchange the stream ended in the middle of counts as a failure: otherwise a
    /// client hanging up before each answer would make the server look up accounts and run
    /// PBKDF2 past `auth_failures_per_ip_per_minute` without ever being counted.
    fn abandoned(&self, end: ConnEnd) -> ConnEnd {
        self.record_failure();
        end
    }
}

/// Who authenticated, the mechanism's success data, and what the password was checked against.
type Authenticating = (BareJid, Option<Vec<u8>>, Option<Credentials>);

impl Authenticated {
    /// The stream may still bind: the password it proved is still the account's. A
    /// password change or deletion ends bound sessions (`Revoked`); this stream was not
    /// bound yet, so it checks here.
    async fn still_authorized(&self) -> Result<(), ConnEnd> {
        let Some(proved) = &self.credentials else { return Ok(()) };
        match self.core.storage.credentials(self.user.to_string()).await {
            Ok(Some(current)) if current == *proved => Ok(()),
            Ok(_) => Err(end(StreamError::NotAuthorized, "the account's password changed, or it was deleted, since this stream authenticated")),
            Err(e) => {
                log::error!("{}: credentials not read at bind: {e}", self.user);
                Err(end(StreamError::InternalServerError, "storage unavailable"))
            }
        }
    }

    /// Resource binding (RFC 6120 §7), or XEP-0198 resumption of an earlier session; the
    /// legacy session IQ is answered on the way.
    pub async fn bind(mut self) -> Result<BoundSession, (Conn, ConnEnd)> {
        match self.negotiate_bind().await {
            Ok(Bound::Fresh(jid)) => Ok(BoundSession::new(self.core, self.conn, jid)),
            Ok(Bound::Resumed(r)) => {
                let jid = self.user.with_resource_str(&r.handover.resource).expect("a bound resource is valid");
                Ok(BoundSession::resumed(self.core, self.conn, jid, *r, None))
            }
            Err(e) => Err((self.conn, e)),
        }
    }

    async fn negotiate_bind(&mut self) -> Result<Bound, ConnEnd> {
        let mut features = vec![Element::bare("bind", ns::BIND), session_iq::stream_feature()];
        features.extend(session_features(&self.core, self.conn.transport.offers_sm()));
        if self.restarted {
            open_stream(&self.core, &mut self.conn, &features).await?;
        } else {
            // SASL2: the stream goes on, no header
            self.conn.send(super::features::to_wire(&features).as_bytes()).await?;
        }
        loop {
            let iq = next_element(&mut self.conn).await?;
            match ClientSm::parse(&iq) {
                Some(ClientSm::Resume { previd, h }) => {
                    self.still_authorized().await?;
                    match self.resume(previd.into(), h).await? {
                        Some(resumed) => return Ok(Bound::Resumed(Box::new(resumed))),
                        None => {
                            self.conn.send_el(&sm::failed("item-not-found")).await?;
                            continue;
                        }
                    }
                }
                // XEP-0198 §3: enabling comes after binding.
                Some(_) => {
                    self.conn.send_el(&sm::failed("unexpected-request")).await?;
                    continue;
                }
                None => {}
            }
            if !iq.is("iq", ns::CLIENT) {
                return Err(end(StreamError::NotAuthorized, "bind a resource first"));
            }
            match iq.get_child("bind", ns::BIND).filter(|_| iq.attr("type") == Some("set")) {
                Some(bind) => match self.resource(bind) {
                    Ok(full) => {
                        self.still_authorized().await?;
                        let jid_el = text_el("jid", ns::BIND, &full.to_string());
                        let id = iq.attr("id").unwrap_or("");
                        let result = build("iq", ns::CLIENT, &[("type", "result"), ("id", id)], vec![build("bind", ns::BIND, &[], vec![jid_el])]);
                        self.conn.send_el(&result).await?;
                        return Ok(Bound::Fresh(full));
                    }
                    Err(e) => self.conn.send_el(&e.reply_to(&iq)).await?,
                },
                None => {
                    let reply = StanzaError::NotAuthorized.reply_to(&iq);
                    self.conn.send_el(&reply).await?;
                }
            }
        }
    }

    /// XEP-0198 §5: asks this user's UserChannel to move the session with `resume_id` to a
    /// new address here, and waits for the old session to hand over. `None` when there is
    /// nothing to resume; anything routed to the new address meanwhile is given back.
    pub(super) async fn resume(&mut self, resume_id: Arc<str>, h: u32) -> Result<Option<Resumption>, ConnEnd> {
        let user: Arc<str> = self.user.to_string().into();
        let (addr, rx) = self.core.register_session(user.clone());
        self.core.send_to_user(user.clone(), UserMsg::Resume { resume_id: resume_id.clone(), session: addr, h }).await;
        let wait = Duration::from_secs(self.core.cfg.limits.send_stall_secs) + RESUME_HANDOVER_SLACK;
        let deadline = Instant::now() + wait;
        // At most a session mailbox's worth (`session_mailbox_stanzas_max`), as a live
        // session would hold: past it the resumption fails, as a full mailbox would end
        // the session, and what came is routed again.
        let meanwhile_max = self.core.cfg.limits.session_mailbox_stanzas_max;
        let mut meanwhile = Vec::new();
        let mut updates = Vec::new();
        // The account was deleted or its password changed during the hand-over: the old
        // session still hands over (it was told first), and what it hands is routed again.
        let mut revoked = None;
        loop {
            let mail = futures_lite::future::or(async { Some(rx.recv().await) }, async {
                glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
                None
            })
            .await;
            match mail {
                Some(Some(SessionMsg::Resumed(handover))) => {
                    let Some(why) = revoked else {
                        let (registered, handover) = ((addr, rx), *handover);
                        return Ok(Some(Resumption { registered, resume_id, h_client: h, handover, meanwhile, updates }));
                    };
                    self.core.unregister_session(addr);
                    meanwhile.splice(0..0, handover.unacked);
                    self.reroute(&user, meanwhile).await;
                    return Err(super::stream_error::revoked(why));
                }
                Some(Some(SessionMsg::Revoked(why))) => revoked = Some(why),
                Some(Some(SessionMsg::Deliver(xml))) if meanwhile.len() < meanwhile_max => meanwhile.push(xml),
                Some(Some(SessionMsg::DeliverBacklog(backlog))) if meanwhile.len() + backlog.len() <= meanwhile_max => {
                    meanwhile.extend(backlog)
                }
                Some(Some(SessionMsg::Deliver(xml))) => return self.give_up_resuming(&user, addr, meanwhile, vec![xml], revoked).await,
                Some(Some(SessionMsg::DeliverBacklog(backlog))) => {
                    return self.give_up_resuming(&user, addr, meanwhile, backlog, revoked).await
                }
                Some(Some(m @ (SessionMsg::CarbonPeers(_) | SessionMsg::Blocklist(_)))) => updates.push(m),
                Some(Some(SessionMsg::ResumeFailed)) => {
                    self.core.unregister_session(addr);
                    return Ok(None);
                }
                Some(Some(SessionMsg::Shutdown)) => {
                    self.core.unregister_session(addr);
                    return Err(end(StreamError::SystemShutdown, "the server is restarting"));
                }
                Some(Some(_)) => {}
                // Timed out, or the queue overflowed: the UserChannel may have moved the
                // resource here already, so it is unbound and what came is routed again.
                None | Some(None) => {
                    log::warn!("{}: XEP-0198 hand-over did not arrive in {wait:?}", self.user);
                    return self.give_up_resuming(&user, addr, meanwhile, Vec::new(), revoked).await;
                }
            }
        }
    }

    /// The hand-over did not come in time, or more came meanwhile than a session may
    /// queue: the UserChannel may have moved the resource here already, so it is unbound
    /// and what came is routed again.
    async fn give_up_resuming(
        &self,
        user: &Arc<str>,
        addr: SessionAddr,
        mut meanwhile: Vec<Arc<str>>,
        more: Vec<Arc<str>>,
        revoked: Option<Revocation>,
    ) -> Result<Option<Resumption>, ConnEnd> {
        self.core.send_to_user(user.clone(), UserMsg::Unbind { session: addr }).await;
        self.core.unregister_session(addr);
        meanwhile.extend(more);
        self.reroute(user, meanwhile).await;
        match revoked {
            Some(why) => Err(super::stream_error::revoked(why)),
            None => Ok(None),
        }
    }

    /// Stanzas a resumption that failed had taken in, for the user's other resources or
    /// offline storage.
    async fn reroute(&self, user: &Arc<str>, stanzas: Vec<Arc<str>>) {
        for stanza in stanzas.into_iter().filter_map(crate::stanza::Stanza::reroutable) {
            self.core.send_to_user(user.clone(), UserMsg::Undelivered(stanza)).await;
        }
    }

    /// The client's resource if valid, else one made by the server (RFC 6120 §7.6).
    fn resource(&self, bind: &Element) -> Result<FullJid, StanzaError> {
        let asked = bind.get_child("resource", ns::BIND).map(|r| r.text()).filter(|r| !r.trim().is_empty());
        match asked {
            Some(r) if r.len() > RESOURCE_BYTES_MAX => Err(StanzaError::BadRequest),
            Some(r) => self.user.with_resource_str(&r).map_err(|_| StanzaError::BadRequest),
            None => Ok(self.user.with_resource_str(&format!("martlet-{:08x}", rand::random::<u32>())).expect("hex is a valid resource")),
        }
    }
}

/// The features of an authenticated stream beyond binding: XEP-0198 (unless it is on),
/// XEP-0352, XEP-0237 and the server's XEP-0115 caps.
pub fn session_features(core: &CoreState, with_sm: bool) -> Vec<Element> {
    let sm = with_sm.then(sm::stream_feature);
    sm.into_iter().chain([csi::stream_feature(), roster::versioning_feature(), core.caps.clone()]).collect()
}

/// How the bind phase ended.
enum Bound {
    Fresh(FullJid),
    Resumed(Box<Resumption>),
}


