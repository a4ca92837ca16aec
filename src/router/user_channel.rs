//! The UserChannel actor: one per online user, on the user's owner core (seed 001 §2-3).
//!
//! It knows every session of its user, wherever they are, holds the user's roster while the
//! user is online, and applies RFC 6121: delivery rules (§8.5), presence broadcast and probes
//! (§4), the subscription state machine (§3), roster get/set/push (§2), and offline storage
//! (XEP-0160). Messages to one user are handled strictly in order, one at a time; storage is
//! awaited here, so only this user waits for the disk, never the core.

mod fanouts;
mod last;
mod pep;
mod push;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use jid::{BareJid, Jid};
use minidom::Element;
use shards::contain::contained;
use shards::mailbox;

use super::core::CoreState;
use super::envelope::{Revocation, SessionAddr, SessionMsg, UserMsg};
use crate::modules::blocking::{self, BlockList};
use crate::modules::carbons::{self, Direction};
use crate::modules::delivery::{self, ResourceView, Route};
use crate::modules::entity_caps::Interests;
use crate::modules::subscription::{self, SubType};
use crate::modules::{delay, disco, hints, mam, offline, roster, vcard, IqAnswer};
use crate::stanza::{build, may_answer_with_error, Kind, Stanza, StanzaError};
use crate::storage::{ArchiveRow, RosterItem, Subscription};
use crate::xml::ns;

/// Waits between attempts to load a user's state while storage fails, doubling.
const LOAD_RETRY_DELAY_MIN: std::time::Duration = std::time::Duration::from_millis(250);
const LOAD_RETRY_DELAY_MAX: std::time::Duration = std::time::Duration::from_secs(5);

struct Resource {
    name: Arc<str>,
    session: SessionAddr,
    available: bool,
    priority: i8,
    /// The last available presence this resource broadcast, answered to probes.
    presence: Option<Stanza>,
    /// It asked for the roster, so it gets roster pushes (RFC 6121 §2.1.6).
    roster_interested: bool,
    /// XEP-0198: the id a new stream may resume this resource's session with.
    resume_id: Option<Arc<str>>,
    /// XEP-0280: it wants copies of its siblings' chats.
    carbons: bool,
    /// What its session was last told of its siblings' carbons (`SessionMsg::CarbonPeers`).
    told_carbon_peers: Option<bool>,
    /// XEP-0186: its presence reaches only the user's own resources.
    invisible: bool,
    /// XEP-0163: the PEP nodes its client wants events from.
    pep_interest: Interests,
    /// XEP-0357: its client does not see messages now (hibernating, or inactive).
    dormant: bool,
}

struct UserChannel {
    core: Rc<CoreState>,
    jid: Arc<str>,
    bare: BareJid,
    exists: bool,
    roster: BTreeMap<String, RosterItem>,
    /// XEP-0191, shared with the user's sessions, which check outbound stanzas against it.
    blocked: Arc<BlockList>,
    resources: Vec<Resource>,
    /// Set while handling a held message (`super::custody`) once a delivery took its
    /// receipt on, so the session's core confirms it and not this actor.
    receipt_passed: Cell<bool>,
    /// Messages that found no session while the ring was settling: the sessions of a user
    /// that moved here register one by one, as their nodes see the change. Delivered as
    /// they come, the rest stored offline once the ring settled. At most
    /// `user_mailbox_messages_max`: past it a message is stored offline at once.
    deferred: Vec<Stanza>,
    /// A `RingSettled` is on its way (`check_when_settled`).
    settle_check_pending: bool,
    /// This actor stored a message offline. If the ring then moves the user away, the new
    /// owner is told to look (`hand_off`): this actor may have stood in for it during a
    /// partition, storing what a session there should have had, and its stores (slow ones
    /// included) are done only now.
    stored_offline: Cell<bool>,
    /// XEP-0163: the user's PEP nodes.
    pep: crate::modules::pep::Service,
    /// XEP-0357: the user's push registrations, read when first needed.
    push: Option<Vec<crate::modules::push::Registration>>,
    /// Recent messages copied to several resources (`fanouts`).
    fanouts: fanouts::Fanouts,
}

/// The actor's life: load, handle messages in order, retire when no session is left.
///
/// This future is most of an online user's memory, so nothing message-sized lives in it
/// across an await: each message is taken in a block of its own (a binding's space lasts
/// to the end of its scope, moved out or not) and handled in a boxed step.
pub async fn run(core: Rc<CoreState>, jid: Arc<str>, rx: mailbox::Receiver<UserMsg>) {
    let mut uc = Box::pin(load_when_readable(&core, &jid)).await;
    loop {
        let (credit_to, disowned, step) = {
            let Some(msg) = rx.recv().await else { break };
            let credit_to = if let UserMsg::Request { from, .. } = &msg { Some(*from) } else { None };
            match msg {
                // Nothing to handle: an empty step (a one-byte allocation, once per hand-off).
                UserMsg::Disown => (credit_to, true, Box::pin(std::future::ready(())) as Step<'_>),
                msg => (credit_to, false, step(&mut uc, msg)),
            }
        };
        // A panic drops the one message that caused it; the user's sessions stay bound.
        if let Err(p) = contained(step).await {
            core.counters.actor_panics.inc();
            log::error!("{jid}: a message made the user's actor panic; dropped, contained: {}", p.0);
        }
        if disowned {
            // Out of the core's table first, so nothing new arrives here; then what came
            // before goes on to the new owner, in order. The sessions register there
            // themselves (SessionMsg::RingChanged), so nothing is broadcast. Boxed: the
            // hand-off's futures would otherwise be space in every actor, used once.
            core.retire_user_channel(&jid);
            Box::pin(hand_off(&core, &jid, std::mem::take(&mut uc.deferred), uc.stored_offline.get(), &rx)).await;
            return;
        }
        // Handled (or dropped by a panic): the asking session may send another.
        if let Some(session) = credit_to {
            Box::pin(core.send_to_session(session, SessionMsg::Credit)).await;
        }
        if uc.resources.is_empty() && uc.deferred.is_empty() && rx.is_empty() {
            break;
        }
    }
    core.retire_user_channel(&jid);
}

/// Handling one message, boxed: it awaits storage and the mesh, whose futures are large,
/// and an idle actor should hold only its state, not that space.
type Step<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>;

/// The step that handles `msg` (a session's request is handled as what it asks).
fn step(uc: &mut UserChannel, msg: UserMsg) -> Step<'_> {
    Box::pin(async move {
        let msg = match msg {
            UserMsg::Request { msg, .. } => *msg,
            msg => msg,
        };
        #[cfg(feature = "test-hooks")]
        if let UserMsg::Inbound(stanza) = &msg {
            crate::test_hooks::panic_if_asked(&stanza.xml, "user");
        }
        uc.handle(msg).await
    })
}

/// What came before a `Disown` goes on to the new owner, in order; then, if this actor
/// stored anything offline, the new owner hands it to a session it has (`NodesUp`).
async fn hand_off(core: &Rc<CoreState>, jid: &Arc<str>, deferred: Vec<Stanza>, stored_offline: bool, rx: &mailbox::Receiver<UserMsg>) {
    for stanza in deferred {
        core.send_to_user(jid.clone(), UserMsg::Inbound(stanza)).await;
    }
    while let Some(msg) = rx.try_recv() {
        if !matches!(msg, UserMsg::Disown | UserMsg::NodeDown(_) | UserMsg::RingSettled) {
            core.send_to_user(jid.clone(), msg).await;
        }
    }
    if stored_offline {
        core.send_to_user(jid.clone(), UserMsg::NodesUp).await;
    }
}

/// Loads the user's state, waiting out a storage failure: run on a roster or blocklist read
/// as empty, the user would be unblocked, and the next change would overwrite what is
/// stored. Meanwhile messages wait in the bounded mailbox, and past it are refused.
async fn load_when_readable(core: &Rc<CoreState>, jid: &Arc<str>) -> UserChannel {
    let mut delay = LOAD_RETRY_DELAY_MIN;
    loop {
        match UserChannel::load(core.clone(), jid.clone()).await {
            Ok(uc) => return uc,
            Err(e) => {
                core.counters.storage_errors.inc();
                log::error!("{jid}: not loaded, trying again in {delay:?}: {e}");
                glommio::timer::sleep(delay).await;
                delay = (delay * 2).min(LOAD_RETRY_DELAY_MAX);
            }
        }
    }
}

/// A message that found the user's mailbox full: answer the sender instead of queueing.
/// That settles it, so a held one is confirmed.
pub fn overloaded(core: Rc<CoreState>, msg: UserMsg) {
    if let UserMsg::Inbound(stanza) = msg {
        if let Some(receipt) = stanza.receipt {
            core.confirm(receipt);
        }
        glommio::spawn_local(async move { bounce(&core, &stanza, StanzaError::ResourceConstraint).await }).detach();
    }
}

/// Answers `stanza`'s sender with an error, unless that would answer an error or a result.
async fn bounce(core: &Rc<CoreState>, stanza: &Stanza, err: StanzaError) {
    let original = stanza.element();
    if !may_answer_with_error(&original) {
        return;
    }
    core.counters.stanzas_bounced.inc();
    let reply = Stanza::seal(stanza.kind, err.reply_to(&original), stanza.to.clone(), stanza.from.clone());
    core.route_error(reply).await;
}

impl UserChannel {
    async fn load(core: Rc<CoreState>, jid: Arc<str>) -> Result<UserChannel, crate::storage::StorageError> {
        let bare = BareJid::new(&jid).expect("owner keys are bare JIDs");
        let exists = core.storage.user_exists(jid.to_string()).await?;
        let (roster, blocked) = if exists {
            let roster = core.storage.roster(jid.to_string()).await?;
            let blocked = core.storage.doc_get(jid.to_string(), blocking::KEY.into()).await?;
            (roster, BlockList::parse(&blocked.unwrap_or_default()))
        } else {
            (Vec::new(), BlockList::default())
        };
        let roster = roster.into_iter().map(|i| (i.jid.clone(), i)).collect();
        Ok(UserChannel {
            core,
            jid,
            bare,
            exists,
            roster,
            blocked: Arc::new(blocked),
            resources: Vec::new(),
            receipt_passed: Cell::new(false),
            deferred: Vec::new(),
            settle_check_pending: false,
            stored_offline: Cell::new(false),
            fanouts: Default::default(),
            pep: Default::default(),
            push: None,
        })
    }

    /// Handles one message; a held message whose path ends here (stored, refused, dropped,
    /// or delivered without a session taking its receipt) is confirmed once handled.
    async fn handle(&mut self, msg: UserMsg) {
        let receipt = msg.receipt();
        self.receipt_passed.set(false);
        self.handle_msg(msg).await;
        if let Some(receipt) = receipt.filter(|_| !self.receipt_passed.get()) {
            self.core.confirm(receipt);
        }
    }

    async fn handle_msg(&mut self, msg: UserMsg) {
        match msg {
            UserMsg::Bind { resource, session } => {
                self.bind(resource, session).await;
                self.deliver_deferred(false).await;
            }
            UserMsg::Unbind { session } => self.unbind(session).await,
            UserMsg::OwnPresence { resource, stanza } => self.own_presence(&resource, stanza).await,
            UserMsg::OutboundSubscription(stanza) => self.outbound_subscription(stanza).await,
            UserMsg::AccountIq { resource, stanza } => self.account_iq(&resource, stanza).await,
            // XEP-0191 §3.5: nothing from a blocked JID reaches the user.
            UserMsg::Inbound(stanza) if self.blocked.blocks(&stanza.from) => {
                if stanza.kind != Kind::Presence {
                    bounce(&self.core, &stanza, StanzaError::ServiceUnavailable).await;
                }
            }
            UserMsg::Inbound(stanza) | UserMsg::ErrorReply(stanza) => match stanza.kind {
                Kind::Message => self.inbound_message(stanza).await,
                Kind::Presence => self.inbound_presence(stanza).await,
                Kind::Iq => self.inbound_iq(stanza).await,
            },
            UserMsg::Rebind { resource, session, presence, roster_interested, resume_id, carbons, pep_interest, invisible } => {
                let r = self.rebind(resource, session, presence, roster_interested, resume_id, carbons);
                r.pep_interest = pep_interest;
                r.invisible = invisible;
                self.tell_carbon_peers().await;
                self.deliver_deferred(false).await;
                // While its owner was unreachable, the node that stood in for it may have
                // stored offline what was meant for this session.
                self.offline_to_online().await;
            }
            UserMsg::PepInterest { resource, nodes } => self.pep_interest(&resource, nodes).await,
            UserMsg::PepEvent { node, stanza } => self.pep_event(&node, &stanza).await,
            UserMsg::PepLast { to, nodes } => self.pep_send_last(&to, &nodes).await,
            UserMsg::Carbons { resource, enabled } => {
                if let Some(idx) = self.index_of(&resource) {
                    self.resources[idx].carbons = enabled;
                    self.tell_carbon_peers().await;
                }
            }
            UserMsg::Sent(stanza) => self.carbon_copies(Direction::Sent, &stanza, &[]).await,
            UserMsg::RoomNotice(stanza) => {
                if self.resources.iter().all(|r| r.dormant || r.presence.is_none()) {
                    self.push_notify(&stanza).await;
                }
            }
            UserMsg::Dormant { session, dormant } => {
                if let Some(r) = self.resources.iter_mut().find(|r| r.session == session) {
                    r.dormant = dormant;
                }
            }
            UserMsg::Resumable { session, resume_id } => {
                if let Some(r) = self.resources.iter_mut().find(|r| r.session == session) {
                    r.resume_id = Some(resume_id);
                }
            }
            UserMsg::Resume { resume_id, session, h } => self.resume(&resume_id, session, h).await,
            UserMsg::Undelivered(stanza) => self.undelivered(stanza).await,
            UserMsg::NodeDown(node) => self.node_down(node).await,
            UserMsg::NodesUp => self.offline_to_online().await,
            UserMsg::RingSettled => {
                self.settle_check_pending = false;
                self.deliver_deferred(true).await;
                self.offline_to_online().await;
            }
            UserMsg::EndSessions(why) => self.end_sessions(why).await,
            UserMsg::Disown => unreachable!("handled by run"),
            UserMsg::Request { .. } => unreachable!("unwrapped by run"),
        }
    }

    // ---- sessions -------------------------------------------------------------------

    /// At `resources_per_user_max`, the oldest session gives way to the new one, as
    /// ejabberd's `max_user_sessions` does: a new login of the user's own always works,
    /// and the count stays bounded. It is forgotten here at once (its unbind finds nothing).
    async fn make_room_for_a_resource(&mut self) {
        let max = self.core.cfg.limits.resources_per_user_max;
        while self.resources.len() >= max {
            let oldest = self.resources.remove(0);
            self.core.counters.resources_evicted.inc();
            self.core.send_to_session(oldest.session, SessionMsg::TooManyResources).await;
            if oldest.available {
                self.broadcast_unavailable(&oldest.name).await;
            }
        }
    }

    /// Grows the list one at a time: most users have one resource, and a Vec's first
    /// growth would make room for four, most of an idle user's memory.
    fn add_resource(&mut self, resource: Resource) {
        self.resources.reserve_exact(1);
        self.resources.push(resource);
    }

    async fn bind(&mut self, name: Arc<str>, session: SessionAddr) {
        if let Some(i) = self.resources.iter().position(|r| r.name == name) {
            // RFC 6120 §7.7.2.2: the newer session wins; the older one is told and leaves.
            let old = self.resources.remove(i);
            self.core.send_to_session(old.session, SessionMsg::Replaced).await;
            if old.available {
                self.broadcast_unavailable(&name).await;
            }
        }
        self.make_room_for_a_resource().await;
        self.add_resource(Resource {
            name,
            session,
            available: false,
            priority: 0,
            presence: None,
            roster_interested: false,
            resume_id: None,
            carbons: false,
            told_carbon_peers: None,
            invisible: false,
            pep_interest: Interests::default(),
            dormant: false,
        });
        self.tell_carbon_peers().await;
        if !self.blocked.is_empty() {
            self.core.send_to_session(session, SessionMsg::Blocklist(self.blocked.clone())).await;
        }
    }

    /// Registers a session the ring moved here; returns its resource for the rest of what
    /// `UserMsg::Rebind` carries.
    fn rebind(
        &mut self,
        name: Arc<str>,
        session: SessionAddr,
        presence: Option<Stanza>,
        roster_interested: bool,
        resume_id: Option<Arc<str>>,
        carbons: bool,
    ) -> &mut Resource {
        self.resources.retain(|r| r.session != session);
        self.add_resource(Resource {
            name,
            session,
            available: presence.is_some(),
            priority: presence.as_ref().map_or(0, |p| priority_of(&p.element())),
            presence,
            roster_interested,
            resume_id,
            carbons,
            told_carbon_peers: None,
            invisible: false,
            pep_interest: Interests::default(),
            dormant: false,
        });
        self.resources.last_mut().expect("just added")
    }

    /// XEP-0198 §5: from now on the resource's stanzas go to the resuming stream, and the
    /// old session is told to hand over what the client has not acknowledged. Both happen
    /// here, in this actor's order, so nothing routed to the resource is missed or doubled:
    /// what came before the swap is in the old session's queue, what comes after goes to
    /// the new one. Only this user's own streams reach this actor, so only they can resume.
    async fn resume(&mut self, resume_id: &str, session: SessionAddr, h: u32) {
        let Some(r) = self.resources.iter_mut().find(|r| r.resume_id.as_deref() == Some(resume_id)) else {
            return self.core.send_to_session(session, SessionMsg::ResumeFailed).await;
        };
        let old = std::mem::replace(&mut r.session, session);
        r.told_carbon_peers = None; // the new session starts without knowing
        r.dormant = false; // a live stream, active until it says otherwise (XEP-0352)
        self.core.send_to_session(old, SessionMsg::TakeOver { by: session, h }).await;
        self.tell_carbon_peers().await;
        if !self.blocked.is_empty() {
            self.core.send_to_session(session, SessionMsg::Blocklist(self.blocked.clone())).await;
        }
    }

    /// XEP-0280: tells each session whose answer changed whether a sibling wants carbons.
    async fn tell_carbon_peers(&mut self) {
        let enabled = self.resources.iter().filter(|r| r.carbons).count();
        for idx in 0..self.resources.len() {
            let r = &mut self.resources[idx];
            let peers = enabled > usize::from(r.carbons);
            if r.told_carbon_peers != Some(peers) {
                r.told_carbon_peers = Some(peers);
                let session = r.session;
                self.core.send_to_session(session, SessionMsg::CarbonPeers(peers)).await;
            }
        }
    }

    /// XEP-0280 copies of `stanza` to the carbon-enabled resources that are not `skip`
    /// (those that got the message itself) and did not send it.
    async fn carbon_copies(&self, direction: Direction, stanza: &Stanza, skip: &[usize]) {
        if !carbons::eligible(stanza) {
            return;
        }
        let sender = (direction == Direction::Sent).then(|| stanza.from.resource().map(|r| r.as_str())).flatten();
        for idx in 0..self.resources.len() {
            let r = &self.resources[idx];
            if !r.carbons || skip.contains(&idx) || Some(&*r.name) == sender {
                continue;
            }
            let to = self.full_jid(&r.name).to_string();
            self.deliver_el(idx, &carbons::wrap(direction, stanza, &self.jid, &to)).await;
        }
    }

    /// A message a session ended without confirming: to the user's other resources by the
    /// usual rules, or offline, stamped with the time it first came in (XEP-0203). A copy
    /// of one sent to the bare JID goes nowhere while another recipient still has its own.
    async fn undelivered(&mut self, stanza: Stanza) {
        if !self.exists {
            return bounce(&self.core, &stanza, StanzaError::ServiceUnavailable).await;
        }
        if self.copy_held_elsewhere(&stanza) {
            self.core.counters.undelivered_copies_dropped.inc();
            return;
        }
        let stanza = delay::late(stanza, &self.core.cfg.domain);
        match delivery::message(&self.views(), stanza.to_resource(), &stanza.type_) {
            Route::Resources(targets) => {
                for idx in targets {
                    self.deliver_message(idx, &stanza).await;
                }
            }
            Route::Offline => self.store_offline_and_push(&stanza).await,
            Route::Bounce | Route::Drop => {}
        }
    }

    /// Every session is told to end, and forgotten here at once, so no stream can resume
    /// one; what they had not delivered comes back as `Undelivered`, which a deleted
    /// account bounces rather than keeping for whoever registers the name next.
    async fn end_sessions(&mut self, why: Revocation) {
        if why == Revocation::AccountDeleted {
            self.exists = false;
        }
        for r in std::mem::take(&mut self.resources) {
            self.core.send_to_session(r.session, SessionMsg::Revoked(why)).await;
            if r.available {
                self.broadcast_unavailable(&r.name).await;
            }
        }
    }

    /// Sessions on a failed node ended without a word: as if each had unbound.
    async fn node_down(&mut self, node: u32) {
        let gone: Vec<SessionAddr> = self.resources.iter().filter(|r| r.session.node == node).map(|r| r.session).collect();
        for session in gone {
            self.unbind(session).await;
        }
    }

    async fn unbind(&mut self, session: SessionAddr) {
        let Some(i) = self.resources.iter().position(|r| r.session == session) else { return };
        let gone = self.resources.remove(i);
        if gone.available {
            self.broadcast_unavailable(&gone.name).await;
            self.note_logout(None).await;
        }
    }

    fn full_jid(&self, resource: &str) -> Jid {
        Jid::from(self.bare.with_resource_str(resource).expect("bound resources are valid"))
    }

    fn index_of(&self, resource: &str) -> Option<usize> {
        self.resources.iter().position(|r| &*r.name == resource)
    }

    async fn deliver(&self, idx: usize, xml: Arc<str>) {
        self.core.send_to_session(self.resources[idx].session, SessionMsg::Deliver(xml)).await;
    }

    /// A message to one resource: with its receipt, if it is held, passed on.
    async fn deliver_message(&self, idx: usize, stanza: &Stanza) {
        if self.core.deliver_message(self.resources[idx].session, stanza).await {
            self.receipt_passed.set(true);
        }
    }

    async fn deliver_el(&self, idx: usize, el: &Element) {
        self.deliver(idx, crate::stanza::to_xml(el).into()).await;
    }

    fn views(&self) -> Vec<ResourceView<'_>> {
        self.resources
            .iter()
            .map(|r| ResourceView { name: &r.name, available: r.available, priority: r.priority })
            .collect()
    }

    // ---- presence (RFC 6121 §4) -------------------------------------------------------

    async fn own_presence(&mut self, resource: &str, stanza: Stanza) {
        let Some(idx) = self.index_of(resource) else { return };
        match &*stanza.type_ {
            "" => {
                let initial = !self.resources[idx].available;
                let priority = priority_of(&stanza.element());
                let r = &mut self.resources[idx];
                let was_negative = r.priority < 0;
                r.available = true;
                r.priority = priority;
                r.presence = Some(stanza.clone());
                self.broadcast(&stanza).await;
                if initial {
                    self.after_initial_presence(idx).await;
                } else if was_negative && priority >= 0 {
                    // XEP-0160 §3: stored messages wait for a non-negative priority.
                    self.flush_offline(idx).await;
                }
            }
            "unavailable" => {
                if self.resources[idx].available {
                    self.resources[idx].available = false;
                    self.resources[idx].presence = None;
                    self.broadcast(&stanza).await;
                    self.note_logout(Some(&stanza.element())).await;
                }
            }
            _ => {} // probe or error without a 'to': nothing to do (RFC 6121 §4.3.1)
        }
    }

    /// To contacts subscribed to this user (unless the resource it is from is invisible),
    /// and to the user's own available resources.
    async fn broadcast(&self, stanza: &Stanza) {
        let invisible = stanza.from.resource().and_then(|r| self.index_of(r.as_str())).is_some_and(|i| self.resources[i].invisible);
        if !invisible {
            self.to_contacts(stanza).await;
        }
        for idx in 0..self.resources.len() {
            if self.resources[idx].available {
                self.deliver(idx, stanza.xml.clone()).await;
            }
        }
    }

    /// To each contact subscribed to this user's presence and not blocked.
    async fn to_contacts(&self, stanza: &Stanza) {
        for contact in self.subscribers() {
            let copy = stanza.readdressed(contact);
            self.core.send_to_user(copy.to.to_string().into(), UserMsg::Inbound(copy)).await;
        }
    }

    /// The contacts subscribed to this user's presence (`from`, `both`) and not blocked
    /// (XEP-0191 §3.3): who sees the user's presence, and its PEP events.
    fn subscribers(&self) -> impl Iterator<Item = Jid> + '_ {
        self.roster
            .values()
            .filter(|i| matches!(i.subscription, Subscription::From | Subscription::Both))
            .filter_map(|i| BareJid::new(&i.jid).ok().map(Jid::from))
            .filter(|contact| !self.blocked.blocks(contact))
    }

    async fn broadcast_unavailable(&self, resource: &str) {
        let from = self.full_jid(resource);
        let el = build("presence", ns::CLIENT, &[("type", "unavailable")], vec![]);
        let stanza = Stanza::seal(Kind::Presence, el, from, Jid::from(self.bare.clone()));
        self.broadcast(&stanza).await;
    }

    /// RFC 6121 §4.2.2 and XEP-0160: probe contacts, tell the new resource about the user's
    /// other available ones, replay pending subscription requests, hand over stored messages.
    async fn after_initial_presence(&mut self, idx: usize) {
        let me = Jid::from(self.bare.clone());
        let siblings: Vec<Arc<str>> = (0..self.resources.len())
            .filter(|&i| i != idx && self.resources[i].available)
            .filter_map(|i| self.resources[i].presence.as_ref().map(|p| p.xml.clone()))
            .collect();
        for xml in siblings {
            self.deliver(idx, xml).await;
        }
        let probes: Vec<String> = self
            .roster
            .values()
            .filter(|i| matches!(i.subscription, Subscription::To | Subscription::Both))
            .map(|i| i.jid.clone())
            .collect();
        for contact in probes {
            if let Ok(to) = BareJid::new(&contact) {
                let el = build("presence", ns::CLIENT, &[("type", "probe")], vec![]);
                let probe = Stanza::seal(Kind::Presence, el, me.clone(), Jid::from(to));
                self.core.send_to_user(contact.into(), UserMsg::Inbound(probe)).await;
            }
        }
        let pending: Vec<String> = self.roster.values().filter(|i| i.pending_in).map(|i| i.jid.clone()).collect();
        for contact in pending {
            let el = build("presence", ns::CLIENT, &[("type", "subscribe"), ("from", &contact)], vec![]);
            self.deliver_el(idx, &el).await;
        }
        if self.resources[idx].priority >= 0 {
            self.flush_offline(idx).await;
        }
        let pep_interest = self.resources[idx].pep_interest.clone();
        self.pep_request_last(idx, pep_interest).await;
    }

    /// Hands what is stored offline to the resource at `idx`; how many messages that was.
    async fn flush_offline(&self, idx: usize) -> usize {
        match self.core.storage.offline_take(self.jid.to_string()).await {
            Ok(stored) if stored.is_empty() => 0,
            Ok(stored) => {
                let count = stored.len();
                let session = self.resources[idx].session;
                let rows = stored.into_iter().map(|row| {
                    let (receipt, xml) = offline::parse_row(row);
                    (receipt, Arc::from(xml))
                });
                if session.node == self.core.local_node() {
                    self.core.deliver_stored(session, rows.collect()).await;
                } else {
                    // Out of storage already: held until the session's node has each one,
                    // and stored again if that node fails first.
                    for (earlier, xml) in rows {
                        self.core.deliver_held(session, xml, earlier).await;
                    }
                }
                count
            }
            // They stay stored: the next available resource of the user gets them.
            Err(e) => {
                self.core.counters.storage_errors.inc();
                log::error!("{}: offline messages not read: {e}", self.jid);
                0
            }
        }
    }

    /// Messages stored offline for a user who has a session that sees them: possible only
    /// when the side of a partition that could not reach the session stood in as the
    /// user's owner (or an owner changed while the session was registering). They go to
    /// the resource a bare-JID message would reach now, not at the next login; and again
    /// once the ring has settled, for what the other side stored before it saw the change.
    async fn offline_to_online(&mut self) {
        self.check_when_settled();
        let Route::Resources(targets) = delivery::message(&self.views(), None, "chat") else { return };
        let Some(&idx) = targets.first() else { return };
        let count = self.flush_offline(idx).await;
        if count > 0 {
            self.core.counters.offline_to_online.add(count as u64);
            log::info!("{}: {count} messages stored offline while the user was online handed to {}", self.jid, self.resources[idx].name);
        }
    }

    async fn inbound_presence(&mut self, stanza: Stanza) {
        if !self.exists {
            return; // RFC 6121 §8.5.1: presence to an unknown user is dropped
        }
        if let Some(t) = SubType::parse(&stanza.type_) {
            return self.inbound_subscription(t, stanza).await;
        }
        match &*stanza.type_ {
            "probe" => self.answer_probe(&stanza).await,
            "" | "unavailable" | "error" => {
                for idx in delivery::presence(&self.views(), stanza.to_resource()) {
                    self.deliver(idx, stanza.xml.clone()).await;
                }
            }
            _ => {}
        }
    }

    async fn answer_probe(&self, probe: &Stanza) {
        let prober = probe.from.to_bare().to_string();
        let allowed = self
            .roster
            .get(&prober)
            .is_some_and(|i| matches!(i.subscription, Subscription::From | Subscription::Both));
        if !allowed {
            return;
        }
        for r in self.resources.iter().filter(|r| r.available && !r.invisible) {
            if let Some(p) = &r.presence {
                let copy = p.readdressed(probe.from.clone());
                self.core.send_to_user(prober.as_str().into(), UserMsg::Inbound(copy)).await;
            }
        }
    }

    // ---- subscriptions (RFC 6121 §3) --------------------------------------------------

    async fn outbound_subscription(&mut self, stanza: Stanza) {
        let Some(t) = SubType::parse(&stanza.type_) else { return };
        let contact = stanza.to_bare();
        let key = contact.to_string();
        let known = self.roster.get(&key).cloned();
        // A subscribe lists the contact: the same limit as a roster set (RFC 6121 §3.1.2).
        if t == SubType::Subscribe && !known.as_ref().is_some_and(|i| i.listed) && !self.roster_has_room() {
            return bounce(&self.core, &stanza, StanzaError::ResourceConstraint).await;
        }
        let mut item = known.unwrap_or_else(|| subscription::new_item(&key));
        let effect = subscription::outbound(&mut item, t);
        if effect.changed {
            if let Err(e) = self.store_and_push(item).await {
                // Not forwarded: the contact's state would run ahead of the user's.
                return bounce(&self.core, &stanza, e).await;
            }
        }
        if !effect.forward {
            return;
        }
        // Subscription stanzas carry the user's bare JID (RFC 6121 §3.1.2).
        let sealed = Stanza::seal(Kind::Presence, stanza.element(), Jid::from(self.bare.clone()), Jid::from(contact.clone()));
        self.core.send_to_user(key.as_str().into(), UserMsg::Inbound(sealed)).await;
        match t {
            SubType::Subscribed => self.send_presence_to(&contact).await,
            SubType::Unsubscribed => self.send_unavailable_to(&contact).await,
            _ => {}
        }
    }

    async fn inbound_subscription(&mut self, t: SubType, stanza: Stanza) {
        let contact = stanza.from.to_bare();
        let key = contact.to_string();
        // A request from a stranger is kept as an unlisted item: those count too, or any
        // number of senders could grow the stored roster past the limit.
        if t == SubType::Subscribe && !self.roster.contains_key(&key) && self.roster.len() >= self.core.cfg.limits.roster_items_max {
            return bounce(&self.core, &stanza, StanzaError::ResourceConstraint).await;
        }
        let mut item = self.roster.get(&key).cloned().unwrap_or_else(|| subscription::new_item(&key));
        let effect = subscription::inbound(&mut item, t);
        if effect.changed {
            if let Err(e) = self.store_and_push(item).await {
                // Refused, so the contact learns it did not happen, and may send it again.
                return bounce(&self.core, &stanza, e).await;
            }
        }
        if let Some(reply) = effect.auto_reply {
            let type_ = match reply {
                SubType::Subscribed => "subscribed",
                _ => unreachable!("only 'subscribed' is answered automatically"),
            };
            let el = build("presence", ns::CLIENT, &[("type", type_)], vec![]);
            let answer = Stanza::seal(Kind::Presence, el, Jid::from(self.bare.clone()), Jid::from(contact.clone()));
            self.core.send_to_user(key.as_str().into(), UserMsg::Inbound(answer)).await;
        }
        if effect.deliver {
            for idx in delivery::presence(&self.views(), None) {
                self.deliver(idx, stanza.xml.clone()).await;
            }
        }
        if effect.send_unavailable {
            self.send_unavailable_to(&contact).await;
        }
    }

    /// Current presence of every available resource, to a contact who just got access.
    async fn send_presence_to(&self, contact: &BareJid) {
        for r in self.resources.iter().filter(|r| r.available && !r.invisible) {
            if let Some(p) = &r.presence {
                let copy = p.readdressed(Jid::from(contact.clone()));
                self.core.send_to_user(contact.to_string().into(), UserMsg::Inbound(copy)).await;
            }
        }
    }

    async fn send_unavailable_to(&self, contact: &BareJid) {
        for r in self.resources.iter().filter(|r| r.available && !r.invisible) {
            let el = build("presence", ns::CLIENT, &[("type", "unavailable")], vec![]);
            let gone = Stanza::seal(Kind::Presence, el, self.full_jid(&r.name), Jid::from(contact.clone()));
            self.core.send_to_user(contact.to_string().into(), UserMsg::Inbound(gone)).await;
        }
    }

    // ---- roster (RFC 6121 §2) ---------------------------------------------------------

    /// Stores the item, then holds and pushes it; nothing changes when it is not stored.
    async fn store_and_push(&mut self, item: RosterItem) -> Result<(), StanzaError> {
        if let Err(e) = self.core.storage.roster_put(self.jid.to_string(), item.clone()).await {
            self.core.counters.storage_errors.inc();
            log::error!("{}: roster item {} not stored: {e}", self.jid, item.jid);
            return Err(StanzaError::ServiceUnavailable);
        }
        let pushed = item.listed.then(|| roster::item_xml(&item));
        self.roster.insert(item.jid.clone(), item);
        if let Some(item_el) = pushed {
            self.push(item_el).await;
        }
        Ok(())
    }

    async fn push(&self, item_el: Element) {
        let query = roster::query(vec![item_el], &roster::version(self.roster.values()));
        for (idx, _) in self.resources.iter().enumerate().filter(|(_, r)| r.roster_interested) {
            self.push_to(idx, query.clone()).await;
        }
    }

    /// A server push (an IQ set the client acknowledges) to one resource.
    async fn push_to(&self, idx: usize, payload: Element) {
        let to = self.full_jid(&self.resources[idx].name).to_string();
        let id = format!("push{:x}", rand::random::<u32>());
        self.deliver_el(idx, &build("iq", ns::CLIENT, &[("type", "set"), ("id", &id), ("to", &to)], vec![payload])).await;
    }

    /// The IQs this actor answers for its user's account (`modules::ACCOUNT_IQS`).
    async fn account_iq(&mut self, resource: &str, stanza: Stanza) {
        let Some(idx) = self.index_of(resource) else { return };
        let iq = stanza.element();
        let payload = iq.children().next().cloned().unwrap_or_else(|| Element::bare("query", ns::ROSTER));
        let outcome = match payload.ns().as_str() {
            ns::ROSTER => self.roster_answer(idx, &stanza.type_, &payload).await,
            ns::BLOCKING => self.blocking_answer(&stanza.type_, &payload).await,
            ns::INVISIBLE => self.invisible_answer(idx, &stanza.type_, &payload).await,
            ns::PUBSUB => self.pep_owner_answer(&stanza.type_, &payload).await,
            ns::PUSH => self.push_answer(&stanza.type_, &payload).await,
            ns::LAST => self.last_activity(&stanza.from, &stanza.type_).await,
            _ => Err(StanzaError::ServiceUnavailable),
        };
        let reply = match outcome {
            Ok(payload) => {
                let id = iq.attr("id").unwrap_or("");
                build("iq", ns::CLIENT, &[("type", "result"), ("id", id), ("to", &stanza.from.to_string())], payload.into_iter().collect())
            }
            Err(e) => e.reply_to(&iq),
        };
        self.deliver_el(idx, &reply).await;
    }

    async fn roster_answer(&mut self, idx: usize, type_: &str, query: &Element) -> Result<Option<Element>, StanzaError> {
        match type_ {
            "get" => {
                self.resources[idx].roster_interested = true;
                let ver = roster::version(self.roster.values());
                // XEP-0237 §2.6: the client's copy is current: an empty result, no items.
                if query.attr("ver") == Some(ver.as_str()) {
                    return Ok(None);
                }
                let items = self.roster.values().filter(|i| i.listed).map(roster::item_xml).collect();
                Ok(Some(roster::query(items, &ver)))
            }
            "set" => self.roster_set(query).await.map(|()| None),
            _ => Err(StanzaError::BadRequest),
        }
    }

    // ---- blocking (XEP-0191) and invisibility (XEP-0186) ------------------------------

    async fn blocking_answer(&mut self, type_: &str, payload: &Element) -> Result<Option<Element>, StanzaError> {
        match (type_, payload.name()) {
            ("get", "blocklist") => Ok(Some(self.blocked.to_element())),
            ("set", _) => {
                let change = blocking::parse_change(payload)?;
                self.change_blocklist(change).await.map(|()| None)
            }
            _ => Err(StanzaError::BadRequest),
        }
    }

    /// Applies, stores and announces a blocklist change: every resource gets the push
    /// (§3.2) and every session the new list; a contact blocked now sees the user go
    /// unavailable (§3.3), one unblocked gets the user's presence again (§3.4).
    async fn change_blocklist(&mut self, change: blocking::Change) -> Result<(), StanzaError> {
        let mut list = (*self.blocked).clone();
        let (blocked, changed) = match change {
            blocking::Change::Block(jids) => {
                let added: Vec<String> = jids.into_iter().filter(|j| !list.contains(j)).collect();
                if list.len() + added.len() > self.core.cfg.limits.blocklist_items_max {
                    return Err(StanzaError::ResourceConstraint);
                }
                added.iter().for_each(|j| {
                    list.insert(j.clone());
                });
                (true, added)
            }
            blocking::Change::Unblock(jids) if jids.is_empty() => (false, list.take_all()),
            blocking::Change::Unblock(jids) => (false, jids.into_iter().filter(|j| list.remove(j)).collect()),
        };
        if let Err(e) = self.core.storage.doc_put(self.jid.to_string(), blocking::KEY.into(), Some(list.stored())).await {
            self.core.counters.storage_errors.inc();
            log::error!("{}: blocklist not stored: {e}", self.jid);
            return Err(StanzaError::ServiceUnavailable);
        }
        let before = std::mem::replace(&mut self.blocked, Arc::new(list));
        let pushed = blocking::push_payload(blocked, &changed);
        for idx in 0..self.resources.len() {
            self.push_to(idx, pushed.clone()).await;
            let session = self.resources[idx].session;
            self.core.send_to_session(session, SessionMsg::Blocklist(self.blocked.clone())).await;
        }
        for item in self.roster.values().filter(|i| matches!(i.subscription, Subscription::From | Subscription::Both)) {
            let Ok(contact) = BareJid::new(&item.jid) else { continue };
            let jid = Jid::from(contact.clone());
            match (before.blocks(&jid), self.blocked.blocks(&jid)) {
                (false, true) => self.send_unavailable_to(&contact).await,
                (true, false) => self.send_presence_to(&contact).await,
                _ => {}
            }
        }
        Ok(())
    }

    /// XEP-0186: an invisible resource's presence reaches only the user's own resources;
    /// going invisible tells the contacts it left, going visible tells them it is back.
    async fn invisible_answer(&mut self, idx: usize, type_: &str, payload: &Element) -> Result<Option<Element>, StanzaError> {
        let invisible = match (type_, payload.name()) {
            ("set", "invisible") => true,
            ("set", "visible") => false,
            _ => return Err(StanzaError::BadRequest),
        };
        let was = std::mem::replace(&mut self.resources[idx].invisible, invisible);
        if was != invisible && self.resources[idx].available {
            let from = self.full_jid(&self.resources[idx].name);
            let presence = if invisible {
                let el = build("presence", ns::CLIENT, &[("type", "unavailable")], vec![]);
                Some(Stanza::seal(Kind::Presence, el, from, Jid::from(self.bare.clone())))
            } else {
                self.resources[idx].presence.clone()
            };
            if let Some(p) = presence {
                self.to_contacts(&p).await;
            }
        }
        Ok(None)
    }

    async fn roster_set(&mut self, query: &Element) -> Result<(), StanzaError> {
        let set = roster::parse_set(query, self.core.cfg.limits.roster_group_bytes_max)?;
        if set.jid == *self.jid {
            return Err(StanzaError::NotAllowed);
        }
        if set.remove {
            let item = self.roster.get(&set.jid).cloned().ok_or(StanzaError::ItemNotFound)?;
            if let Err(e) = self.core.storage.roster_remove(self.jid.to_string(), set.jid.clone()).await {
                self.core.counters.storage_errors.inc();
                log::error!("{}: roster removal not stored: {e}", self.jid);
                return Err(StanzaError::ServiceUnavailable);
            }
            self.roster.remove(&set.jid);
            self.push(roster::removed_item(&set.jid)).await;
            self.cancel_subscriptions(&item).await;
            return Ok(());
        }
        let mut item = match self.roster.get(&set.jid) {
            Some(existing) => existing.clone(),
            None if !self.roster_has_room() => return Err(StanzaError::ResourceConstraint),
            None => subscription::new_item(&set.jid),
        };
        item.name = set.name;
        item.groups = set.groups;
        item.listed = true;
        self.store_and_push(item).await
    }

    /// May one more contact be listed (`roster_items_max`)?
    fn roster_has_room(&self) -> bool {
        self.roster.values().filter(|i| i.listed).count() < self.core.cfg.limits.roster_items_max
    }

    /// RFC 6121 §2.5.2: removing a contact cancels the subscriptions both ways.
    async fn cancel_subscriptions(&self, item: &RosterItem) {
        let Ok(contact) = BareJid::new(&item.jid) else { return };
        let mut types = Vec::new();
        if item.ask_out || matches!(item.subscription, Subscription::To | Subscription::Both) {
            types.push("unsubscribe");
        }
        if item.pending_in || matches!(item.subscription, Subscription::From | Subscription::Both) {
            types.push("unsubscribed");
            self.send_unavailable_to(&contact).await;
        }
        for t in types {
            let el = build("presence", ns::CLIENT, &[("type", t)], vec![]);
            let s = Stanza::seal(Kind::Presence, el, Jid::from(self.bare.clone()), Jid::from(contact.clone()));
            self.core.send_to_user(item.jid.as_str().into(), UserMsg::Inbound(s)).await;
        }
    }

    // ---- messages and IQs (RFC 6121 §8.5) --------------------------------------------

    async fn inbound_message(&mut self, stanza: Stanza) {
        if !self.exists {
            return bounce(&self.core, &stanza, StanzaError::ServiceUnavailable).await;
        }
        let stanza = self.archive(stanza).await;
        match delivery::message(&self.views(), stanza.to_resource(), &stanza.type_) {
            Route::Resources(targets) => {
                self.remember_fanout(&stanza, &targets);
                for &idx in &targets {
                    self.deliver_message(idx, &stanza).await;
                }
                self.carbon_copies(Direction::Received, &stanza, &targets).await;
                if targets.iter().all(|&idx| self.resources[idx].dormant) {
                    self.push_notify(&stanza).await;
                }
            }
            Route::Offline => match self.core.ring_settling_until() {
                Some(_) if self.deferred.len() < self.core.cfg.limits.user_mailbox_messages_max => self.defer(stanza),
                _ => self.store_offline_and_push(&stanza).await,
            },
            Route::Bounce => bounce(&self.core, &stanza, StanzaError::ServiceUnavailable).await,
            Route::Drop => {}
        }
    }

    /// Keeps a message for a session that may be about to register (see `deferred`); it
    /// keeps its receipt, and is confirmed when it is finally delivered or stored.
    fn defer(&mut self, stanza: Stanza) {
        self.receipt_passed.set(true);
        self.deferred.push(stanza);
        self.check_when_settled();
    }

    /// Sends this actor a `RingSettled` when the ring has settled, unless one is on its way.
    fn check_when_settled(&mut self) {
        let Some(until) = self.core.ring_settling_until() else { return };
        if std::mem::replace(&mut self.settle_check_pending, true) {
            return;
        }
        let (core, jid) = (self.core.clone(), self.jid.clone());
        glommio::spawn_local(async move {
            glommio::timer::sleep(until.saturating_duration_since(std::time::Instant::now())).await;
            core.send_to_user(jid, UserMsg::RingSettled).await;
        })
        .detach();
    }

    /// Routes the deferred messages again, now that a session registered (or, `settled`,
    /// the wait is over and what still finds no session goes offline).
    async fn deliver_deferred(&mut self, settled: bool) {
        for stanza in std::mem::take(&mut self.deferred) {
            let receipt = stanza.receipt;
            self.receipt_passed.set(false);
            match delivery::message(&self.views(), stanza.to_resource(), &stanza.type_) {
                Route::Resources(targets) => {
                    for idx in targets {
                        self.deliver_message(idx, &stanza).await;
                    }
                }
                Route::Offline if !settled => {
                    self.deferred.push(stanza);
                    continue;
                }
                Route::Offline => self.store_offline_and_push(&stanza).await,
                Route::Bounce | Route::Drop => {}
            }
            if let Some(receipt) = receipt.filter(|_| !self.receipt_passed.get()) {
                self.core.confirm(receipt);
            }
        }
    }

    /// XEP-0313: a chat for this user goes into this user's archive and its sender's, and
    /// reaches this user stamped with its archive id (XEP-0359). The rows are queued for the
    /// storage's archive writer; nothing here waits for the disk.
    async fn archive(&self, stanza: Stanza) -> Stanza {
        if !self.core.cfg.archive.enabled || !hints::archive(&stanza) {
            return stanza;
        }
        let id = self.core.archive_ids.next();
        let stamped = mam::stamp(&stanza, id, &self.jid);
        let mut rows = vec![ArchiveRow { owner: self.jid.to_string(), id, with: stanza.from.to_bare().to_string(), xml: stamped.xml.to_string() }];
        let sender = stanza.from.to_bare();
        // A room's messages are archived by the room (XEP-0313 §5.1.1), not under its JID here.
        if sender.node().is_some() && sender != self.bare && sender.domain().as_str() == self.core.cfg.domain {
            rows.push(ArchiveRow { owner: sender.to_string(), id, with: self.jid.to_string(), xml: stanza.xml.to_string() });
        }
        self.core.storage.archive(rows, self.core.cfg.limits.mam_messages_per_user_max).await;
        stamped
    }

    /// Stores the message for later, or answers its sender why not; true if stored.
    /// XEP-0160, then XEP-0357: stored for the next login, and the user's app told.
    async fn store_offline_and_push(&mut self, stanza: &Stanza) {
        if self.store_offline(stanza).await {
            self.push_notify(stanza).await;
        }
    }

    async fn store_offline(&self, stanza: &Stanza) -> bool {
        if !hints::store_offline(stanza) {
            self.core.counters.offline_not_kept.inc();
            return false;
        }
        let stored = offline::row(stanza, &self.core.cfg.domain);
        let max = self.core.cfg.limits.offline_messages_max;
        match self.core.storage.offline_push(self.jid.to_string(), stored, max).await {
            Ok(true) => {
                self.core.counters.offline_stored.inc();
                self.stored_offline.set(true);
                return true;
            }
            Ok(false) => bounce(&self.core, stanza, StanzaError::ResourceConstraint).await,
            Err(e) => {
                self.core.counters.storage_errors.inc();
                log::error!("{}: offline message not stored: {e}", self.jid);
                bounce(&self.core, stanza, StanzaError::ServiceUnavailable).await
            }
        }
        false
    }

    async fn inbound_iq(&mut self, stanza: Stanza) {
        let target = stanza.to_resource().and_then(|r| self.index_of(r));
        match target {
            Some(idx) if self.exists => self.deliver(idx, stanza.xml.clone()).await,
            None if self.exists && stanza.to_resource().is_none() => self.iq_for_account(&stanza).await,
            // No such resource, or an IQ to the bare JID that no module answers for the user.
            _ => bounce(&self.core, &stanza, StanzaError::ServiceUnavailable).await,
        }
    }

    /// RFC 6120 §10.5.4: an IQ to the bare JID is answered by the server for the account:
    /// reading its vCard (XEP-0054 §3.1), its disco#info (XEP-0030), its PEP (XEP-0163).
    async fn iq_for_account(&mut self, stanza: &Stanza) {
        let iq = stanza.element();
        let type_ = iq.attr("type").unwrap_or("");
        let Some(payload) = iq.children().next() else {
            return bounce(&self.core, stanza, StanzaError::BadRequest).await;
        };
        let answer = match (type_, payload.ns().as_str()) {
            ("get", ns::VCARD) if payload.name() == "vCard" => {
                match vcard::answer_for_account(&self.core.storage, self.jid.to_string()).await {
                    IqAnswer::Result(payload) => Ok(payload),
                    _ => Err(StanzaError::ServiceUnavailable),
                }
            }
            // XEP-0030 §3.1: nodes of an account are not listed, so none is known.
            ("get", ns::DISCO_INFO) if payload.attr("node").is_some() => Err(StanzaError::ItemNotFound),
            ("get", ns::DISCO_INFO) => Ok(Some(disco::account_info(&self.core.cfg, false))),
            ("get" | "set", ns::PUBSUB) => self.pep_answer_other(&stanza.from, type_, payload).await,
            (_, ns::LAST) => self.last_activity(&stanza.from, type_).await,
            _ => Err(StanzaError::ServiceUnavailable),
        };
        let payload = match answer {
            Ok(payload) => payload,
            Err(e) => return bounce(&self.core, stanza, e).await,
        };
        let id = iq.attr("id").unwrap_or("");
        let el = build("iq", ns::CLIENT, &[("type", "result"), ("id", id)], payload.into_iter().collect());
        let reply = Stanza::seal(Kind::Iq, el, stanza.to.clone(), stanza.from.clone());
        self.core.send_to_user(stanza.from.to_bare().to_string().into(), UserMsg::Inbound(reply)).await;
    }
}

/// `<priority/>` of a presence, -128..=127, 0 when absent or malformed (RFC 6121 §4.7.2.3).
fn priority_of(presence: &Element) -> i8 {
    presence
        .get_child("priority", ns::CLIENT)
        .and_then(|p| p.text().trim().parse::<i8>().ok())
        .unwrap_or(0)
}
