//! The room actor (XEP-0045): one per live room, on the room's owner core, handling in
//! order every stanza for the room or its occupants. What it sends goes to each
//! occupant's full JID through [`CoreState::route`].
//!
//! A persistent room's configuration, affiliations and subject are one document in
//! storage (owner: the room's JID), written on each change and read when the actor starts;
//! a persistent room with no occupants retires and is read again when next addressed. A
//! temporary room ends with its last occupant.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::SystemTime;

use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use serde::{Deserialize, Serialize};
use shards::mailbox;

use super::history::{self, History};
use super::occupants::{Affiliation, Occupant, Occupants, Presented, Role};
use super::room_config::RoomConfig;
use super::service::Listing;
use crate::modules::{mam, IqAnswer};
use crate::router::{AdminAnswer, CoreMsg, CoreState, RoomMsg, SessionAddr, SessionMsg, UserMsg};
use crate::stanza::{as_full, build, may_answer_with_error, text_el, Kind, Stanza, StanzaError};
use crate::storage::ArchiveRow;
use crate::xml::ns;

mod admin;
mod register;
mod voice;

/// The storage document of a persistent room (owner: the room's bare JID).
const ROOM_DOC: &str = "muc-room";
/// Longest nick accepted, in bytes (RFC 7622 bounds a resourcepart at 1023).
const NICK_BYTES_MAX: usize = 1023;
/// Longest subject, in bytes.
const SUBJECT_BYTES_MAX: usize = 4096;

#[derive(Serialize, Deserialize)]
struct Persisted {
    config: RoomConfig,
    affiliations: BTreeMap<String, Affiliation>,
    subject: Option<Subject>,
    /// §7.10: nick -> the account (bare JID) that reserved it. Absent in rooms stored
    /// before registration existed.
    #[serde(default)]
    reserved_nicks: BTreeMap<String, String>,
}

#[derive(Clone, Serialize, Deserialize)]
struct Subject {
    nick: String,
    text: String,
}

struct Room {
    core: Rc<CoreState>,
    jid: BareJid,
    key: Arc<str>,
    /// Created (and counted in the directory), or loaded from storage.
    exists: bool,
    /// Created and not yet configured by its owner (§10.1): only owners may enter.
    locked: bool,
    /// Loaded from the state a previous owner handed over (a temporary room moved by a
    /// ring change): that stored state goes when the room ends.
    handed_over: bool,
    config: RoomConfig,
    /// By bare JID; `None` is not stored.
    affiliations: BTreeMap<String, Affiliation>,
    /// §7.10 (`register`): nick -> the account that reserved it.
    reserved_nicks: BTreeMap<String, String>,
    subject: Option<Subject>,
    occupants: Occupants,
    history: History,
    /// The ring change this room last checked its occupants' sessions against
    /// (`prune_departed`).
    ring_seen: Option<std::time::Instant>,
}

/// The actor's life: load, handle stanzas in order, retire with the last occupant.
pub async fn run(core: Rc<CoreState>, key: Arc<str>, rx: mailbox::Receiver<RoomMsg>) {
    let Ok(jid) = BareJid::new(&key) else {
        core.retire_room(&key);
        return;
    };
    let mut room = match Room::load(core.clone(), jid, key.clone()).await {
        Ok(room) => room,
        Err(e) => {
            // Unknown state: refusing is safer than creating over a stored room.
            log::error!("room {key}: not loaded: {e}");
            core.retire_room(&key);
            while let Some(msg) = rx.try_recv() {
                match msg {
                    RoomMsg::Stanza(stanza, _) => refuse(&core, &stanza, StanzaError::ServiceUnavailable).await,
                    RoomMsg::Admin { ticket, .. } => core.answer_admin(ticket, AdminAnswer { ok: false, text: format!("room {key} not loaded: {e}") }).await,
                    RoomMsg::Rejoin(..) | RoomMsg::Disown => {}
                }
            }
            return;
        }
    };
    while let Some(msg) = rx.recv().await {
        let (stanza, session) = match msg {
            RoomMsg::Stanza(stanza, session) => (stanza, session),
            RoomMsg::Rejoin(stanza, session) => {
                if shards::contain::contained(room.rejoin(stanza, session)).await.is_err() {
                    core.counters.actor_panics.inc();
                    log::error!("room {key}: a rejoin panicked; that occupant is not back");
                }
                continue;
            }
            RoomMsg::Admin { op, ticket } => {
                let answer = match shards::contain::contained(room.admin(op)).await {
                    Ok(answer) => answer,
                    Err(_) => {
                        core.counters.actor_panics.inc();
                        AdminAnswer { ok: false, text: format!("room {key}: the request panicked; see the server's log") }
                    }
                };
                core.answer_admin(ticket, answer).await;
                if room.retire_if_idle(&rx).await {
                    return;
                }
                continue;
            }
            RoomMsg::Disown => {
                room.hand_over().await;
                core.retire_room(&key);
                // What came meanwhile goes to the new owner.
                while let Some(msg) = rx.try_recv() {
                    if !matches!(msg, RoomMsg::Disown) {
                        core.send_to_room(key.clone(), msg).await;
                    }
                }
                return;
            }
        };
        let step = shards::contain::contained(room.handle(stanza, session)).await;
        if step.is_err() {
            core.counters.actor_panics.inc();
            log::error!("room {key}: a step panicked; that stanza is dropped");
        }
        if room.retire_if_idle(&rx).await {
            return;
        }
    }
}

/// Answers `stanza` with `err` from the room (the room is overloaded or not loaded).
pub async fn refuse(core: &Rc<CoreState>, stanza: &Stanza, err: StanzaError) {
    let original = stanza.element();
    if !may_answer_with_error(&original) {
        return;
    }
    let reply = Stanza::seal(stanza.kind, err.reply_to(&original), stanza.to.clone(), stanza.from.clone());
    core.route_error(reply).await;
}

impl Room {
    async fn load(core: Rc<CoreState>, jid: BareJid, key: Arc<str>) -> Result<Room, crate::storage::StorageError> {
        let m = &core.cfg.muc;
        let mut room = Room {
            config: RoomConfig::new(m.occupants_max, m.history_messages_max, core.cfg.archive.enabled),
            core: core.clone(),
            jid,
            key: key.clone(),
            exists: false,
            locked: false,
            handed_over: false,
            affiliations: BTreeMap::new(),
            reserved_nicks: BTreeMap::new(),
            subject: None,
            occupants: Occupants::default(),
            history: History::default(),
            ring_seen: core.ring_changed_at(),
        };
        if let Some(doc) = core.storage.doc_get(key.to_string(), ROOM_DOC.into()).await? {
            match serde_json::from_str::<Persisted>(&doc) {
                Ok(p) => {
                    room.handed_over = !p.config.persistent;
                    room.config = p.config;
                    room.affiliations = p.affiliations;
                    room.reserved_nicks = p.reserved_nicks;
                    room.subject = p.subject;
                    room.exists = true;
                    core.muc_directory.update(&key, room.listing());
                }
                Err(e) => log::error!("room {key}: stored state unreadable ({e}); starting empty"),
            }
        }
        Ok(room)
    }

    /// With no occupants and nothing queued the actor ends (true), synchronously with that
    /// check: a persistent room is read again when next addressed, a temporary one is gone.
    async fn retire_if_idle(&self, rx: &mailbox::Receiver<RoomMsg>) -> bool {
        if !(self.occupants.is_empty() && rx.is_empty()) {
            return false;
        }
        self.core.retire_room(&self.key);
        if self.exists && !self.config.persistent {
            // A temporary room ends here; one handed over from another owner leaves its
            // state behind in storage, gone with it.
            self.core.muc_directory.remove(&self.key);
            if self.handed_over {
                self.store(None, None).await;
            }
        }
        true
    }

    /// The lasting state as stored.
    fn persisted(&self) -> String {
        let p = Persisted {
            config: self.config.clone(),
            affiliations: self.affiliations.clone(),
            subject: self.subject.clone(),
            reserved_nicks: self.reserved_nicks.clone(),
        };
        serde_json::to_string(&p).expect("room state serialises")
    }

    fn listing(&self) -> Listing {
        Listing { name: self.config.name.clone(), public: self.config.public }
    }

    /// Writes the room's lasting state and its entry in the service's index, when it is
    /// persistent; forgets both when not.
    async fn save(&self) {
        let persisted = self.config.persistent.then(|| self.persisted());
        let listing = self.config.persistent.then(|| serde_json::to_string(&self.listing()).expect("a listing serialises"));
        self.store(persisted, listing).await;
        self.core.muc_directory.update(&self.key, self.listing());
    }

    /// The ring moved the room: its state goes to storage whatever its persistence, for the
    /// new owner to read when the occupants' sessions register there (`RoomMsg::Rejoin`).
    /// The discussion history stays behind (the archive has it).
    async fn hand_over(&self) {
        if !self.exists {
            return;
        }
        let listing = self.config.persistent.then(|| serde_json::to_string(&self.listing()).expect("a listing serialises"));
        self.store(Some(self.persisted()), listing).await;
        self.core.counters.muc_occupants.add(-(self.occupants.len() as i64));
    }

    /// A session that was in the room before the ring changed. It is let in again with the
    /// checks of a join (a ban, or a password it cannot repeat, keeps it out), with nothing
    /// sent to anyone: its client and the others believe it never left. A room that is gone
    /// (a temporary room whose node failed) tells it so: unavailable, 332.
    async fn rejoin(&mut self, stanza: Stanza, session: SessionAddr) {
        self.prune_departed().await;
        let (Some(from), Some(nick)) = (as_full(&stanza.from), stanza.to.resource().map(|r| r.as_str().to_owned())) else { return };
        if let Some(occupant) = self.occupants.get_mut(&nick).filter(|o| o.jid == from) {
            occupant.session = Some(session); // resumed (XEP-0198) at a new address, or no change
            return;
        }
        let el = stanza.element();
        if !self.exists || self.join(from.clone(), nick.clone(), &el, Some(session), true).await.is_err() {
            let gone = Occupant {
                nick: nick.clone(),
                jid: from.clone(),
                role: Role::None,
                affiliation: Affiliation::None,
                presence: vec![],
                occupant_id: String::new(),
                voice_requested_at: None,
                session: None,
            };
            let p = keep_muc_children(build("presence", ns::CLIENT, &[("type", "unavailable")], vec![]), &gone, true, &[110, 332], None);
            self.send(p, self.occupant_jid(&nick), &from).await;
        }
    }

    async fn store(&self, persisted: Option<String>, listing: Option<String>) {
        let storage = &self.core.storage;
        let index_key = format!("{}{}", super::service::INDEX_PREFIX, self.key);
        let service = self.jid.domain().to_string();
        let stored = async {
            storage.doc_put(self.key.to_string(), ROOM_DOC.into(), persisted).await?;
            storage.doc_put(service, index_key, listing).await
        };
        if let Err(e) = stored.await {
            log::error!("room {}: state not saved: {e}", self.key);
        }
    }

    fn affiliation_of(&self, bare: &str) -> Affiliation {
        self.affiliations.get(bare).copied().unwrap_or(Affiliation::None)
    }

    fn occupant_jid(&self, nick: &str) -> Jid {
        Jid::from(self.jid.with_resource_str(nick).expect("nicks are checked resourceparts"))
    }

    /// `session`: the sender's, when it is a local client's presence (see `Occupant::session`).
    async fn handle(&mut self, stanza: Stanza, session: Option<SessionAddr>) {
        #[cfg(feature = "test-hooks")]
        crate::test_hooks::panic_if_asked(&stanza.xml, "room");
        self.prune_departed().await;
        let Some(from) = as_full(&stanza.from) else { return };
        let nick = stanza.to.resource().map(|r| r.as_str().to_owned());
        if &*stanza.type_ == "error" {
            // §7.2.x, as ejabberd does: an occupant whose client answers the room with an
            // error (gone, or refusing) is taken out, so the room stops sending to it.
            if stanza.kind != Kind::Iq {
                if let Some(nick) = self.occupants.nick_of(&from) {
                    self.remove_occupant(&nick, &[333], None).await;
                }
            }
            return;
        }
        let result = match stanza.kind {
            Kind::Presence => self.on_presence(&stanza, from, nick, session).await,
            Kind::Message => self.on_message(&stanza, from, nick).await,
            Kind::Iq => self.on_iq(&stanza, from, nick).await,
        };
        if let Err(e) = result {
            refuse(&self.core, &stanza, e).await;
        }
    }

    /// Occupants whose session was on a node that has left the ring went with it, as the
    /// UserChannel forgets such sessions: they are taken out (333), not sent copies that
    /// custody would hold for a node that is not there. Looked at once per ring change.
    /// A session that was only cut off comes back silently when it registers again
    /// (`RoomMsg::Rejoin`).
    async fn prune_departed(&mut self) {
        let changed = self.core.ring_changed_at();
        if changed == self.ring_seen {
            return;
        }
        self.ring_seen = changed;
        let on_ring = self.core.ring_nodes();
        let departed: Vec<String> = self
            .occupants
            .iter()
            .filter(|o| o.session.is_some_and(|s| !on_ring.contains(&s.node)))
            .map(|o| o.nick.clone())
            .collect();
        for nick in departed {
            self.remove_occupant(&nick, &[333], None).await;
        }
    }

    /// A presence from the room (`from`: an occupant JID) to one occupant.
    async fn send(&self, presence: Element, from: Jid, to: &FullJid) {
        self.core.route(Stanza::seal(Kind::Presence, presence, from, Jid::from(to.clone()))).await;
    }

    // ------------------------------------------------------------------ presence

    async fn on_presence(&mut self, stanza: &Stanza, from: FullJid, nick: Option<String>, session: Option<SessionAddr>) -> Result<(), StanzaError> {
        let Some(nick) = nick else { return Err(StanzaError::JidMalformed) }; // §7.2.1
        let el = stanza.element();
        let current = self.occupants.nick_of(&from);
        match (&*stanza.type_, current) {
            ("unavailable", Some(current)) => {
                let status = el.get_child("status", ns::CLIENT).map(|s| s.text());
                self.remove_occupant(&current, &[], status).await;
                Ok(())
            }
            ("", Some(current)) if current == nick => {
                let occupant = self.occupants.get_mut(&nick).expect("present");
                occupant.presence = presence_payload(&el);
                occupant.session = session.or(occupant.session);
                self.broadcast_presence(&nick, &[], None).await;
                Ok(())
            }
            ("", Some(current)) => self.change_nick(&current, nick, &el).await,
            ("", None) => self.join(from, nick, &el, session, false).await,
            _ => Ok(()),
        }
    }

    /// §7.2; `silent` for a session registering again after a ring change (no one is told).
    async fn join(&mut self, from: FullJid, nick: String, el: &Element, session: Option<SessionAddr>, silent: bool) -> Result<(), StanzaError> {
        if nick.is_empty() || nick.len() > NICK_BYTES_MAX {
            return Err(StanzaError::JidMalformed);
        }
        let bare = from.to_bare().to_string();
        let muc = el.get_child("x", ns::MUC);
        let mut codes = Vec::new();
        if !self.exists && !silent {
            self.core.muc_directory.create(&self.key, &bare)?;
            self.exists = true;
            self.locked = true;
            self.affiliations.insert(bare.clone(), Affiliation::Owner);
            codes.push(201);
            self.core.counters.muc_rooms_created.inc();
        }
        let affiliation = self.affiliation_of(&bare);
        let privileged = affiliation >= Affiliation::Admin;
        if self.locked && affiliation != Affiliation::Owner {
            return Err(StanzaError::ItemNotFound); // §10.1.1: locked until configured
        }
        if affiliation == Affiliation::Outcast {
            return Err(StanzaError::Forbidden); // §7.2.7
        }
        if self.occupants.get(&nick).is_some_and(|o| o.jid.to_bare().as_str() != bare) || self.nick_reserved_by_other(&nick, &bare) {
            return Err(StanzaError::Conflict); // §7.2.9
        }
        if self.config.members_only && affiliation < Affiliation::Member {
            return Err(StanzaError::RegistrationRequired); // §7.2.6
        }
        if let Some(password) = &self.config.password {
            let given = muc.and_then(|x| x.get_child("password", ns::MUC)).map(|p| p.text());
            if given.as_deref() != Some(password.as_str()) && !privileged {
                return Err(StanzaError::NotAuthorized); // §7.2.5
            }
        }
        if self.occupants.len() >= self.config.max_occupants.min(self.core.cfg.muc.occupants_max) && !privileged {
            return Err(StanzaError::ServiceUnavailable); // §7.2.10
        }
        // The same account under the same nick from another resource takes the place over
        // (a client that reconnected before its old session timed out).
        if let Some(old) = self.occupants.remove(&nick) {
            log::debug!("room {}: {} takes over {nick} from {}", self.key, from, old.jid);
        }
        // An account holds one nick: joining under another leaves the first.
        for other in self.occupants.nicks_of_account(&bare) {
            self.remove_occupant(&other, &[], None).await;
        }
        let occupant = Occupant {
            nick: nick.clone(),
            jid: from.clone(),
            role: affiliation.default_role(self.config.moderated),
            affiliation,
            presence: presence_payload(el),
            occupant_id: self.core.storage.keyed_id(&["occupant-id", &self.key, &bare]),
            voice_requested_at: None,
            session,
        };
        if silent {
            self.occupants.insert(occupant);
            self.core.counters.muc_occupants.add(1);
            self.core.counters.muc_rejoins.inc();
            return Ok(());
        }
        // §7.2.3: the others' presence first, then the joiner's own (110 last to it).
        // Everything to the joiner takes one path, its session's when known, so it arrives
        // in this order.
        let shows_jid = self.config.whois_anyone || occupant.role == Role::Moderator;
        let others = self.occupants.iter().filter(|o| self.config.broadcasts(o.role));
        let presences = others.map(|other| OccupantCopy::sealed(Kind::Presence, self.presence_of(other, shows_jid, &[], vec![], None), self.occupant_jid(&other.nick), &occupant)).collect();
        self.fan_out(presences).await;
        self.occupants.insert(occupant);
        self.core.counters.muc_occupants.add(1);
        if self.config.whois_anyone {
            codes.push(100);
        }
        if self.config.archive && self.core.cfg.archive.enabled {
            codes.push(170);
        }
        self.broadcast_presence(&nick, &codes, None).await;
        if !self.locked {
            self.send_history(&from, session, &history::Request::of(muc)).await;
        }
        self.send_subject(&from, session).await;
        Ok(())
    }

    /// The presence `occupant` shows one recipient.
    fn presence_of(&self, occupant: &Occupant, show_jid: bool, codes: &[u16], x_children: Vec<Element>, new_nick: Option<&str>) -> Element {
        let mut children = occupant.presence.clone();
        children.push(Presented { occupant, show_jid, codes, item_children: vec![], x_children, new_nick }.muc_user());
        children.push(build("occupant-id", ns::OCCUPANT_ID, &[("id", &occupant.occupant_id)], vec![]));
        build("presence", ns::CLIENT, &[], children)
    }

    /// Copies to occupants, one hop per core and per node ([`CoreState::send_batched`]),
    /// not one per occupant: straight to each occupant's session where the room knows it
    /// (its presence came from that session), else through the user's UserChannel. A
    /// message for another node is held (custody) until that node has it.
    async fn fan_out(&self, copies: Vec<OccupantCopy>) {
        let mut msgs = Vec::with_capacity(copies.len());
        for OccupantCopy { stanza, session } in copies {
            msgs.push(match session {
                Some(to) if stanza.kind == Kind::Message => self.core.held_copy(to, stanza.xml, true, None).await,
                Some(to) => CoreMsg::ToSession { to, msg: SessionMsg::FromRoom(stanza.xml) },
                None => CoreMsg::ToUser { user: stanza.to.to_bare().to_string().into(), msg: UserMsg::Inbound(stanza) },
            });
        }
        self.core.send_batched(msgs).await;
    }

    /// `nick`'s current presence to everyone who may see it; to itself with 110 and `codes`.
    async fn broadcast_presence(&self, nick: &str, codes: &[u16], new_nick: Option<&str>) {
        let Some(occupant) = self.occupants.get(nick) else { return };
        let own_codes: Vec<u16> = codes.iter().copied().chain([110]).collect();
        let others_codes: Vec<u16> = codes.iter().copied().filter(|c| *c != 201).collect();
        let from = self.occupant_jid(nick);
        let mut copies = Vec::new();
        for to in self.occupants.iter() {
            let own = to.nick == nick;
            if !own && !self.config.broadcasts(occupant.role) {
                continue;
            }
            let show_jid = self.config.whois_anyone || to.role == Role::Moderator || own;
            let p = self.presence_of(occupant, show_jid, if own { &own_codes } else { &others_codes }, vec![], new_nick);
            copies.push(OccupantCopy::sealed(Kind::Presence, p, from.clone(), to));
        }
        self.fan_out(copies).await;
    }

    /// Takes `nick` out and tells everyone (§7.14, §9.1-9.2): `codes` say why (307 kicked,
    /// 301 banned, 321 no longer a member, 333 its client failed).
    async fn remove_occupant(&mut self, nick: &str, codes: &[u16], status: Option<String>) {
        let Some(mut gone) = self.occupants.remove(nick) else { return };
        self.core.counters.muc_occupants.add(-1);
        // Others saw it come only if its role is broadcast; a removal by a moderator is
        // told to everyone.
        let announced = self.config.broadcasts(gone.role) || !codes.is_empty();
        gone.role = Role::None;
        if codes.contains(&301) {
            gone.affiliation = Affiliation::Outcast;
        }
        let from = self.occupant_jid(nick);
        let status_el = status.map(|s| text_el("status", ns::CLIENT, &s));
        let unavailable = || build("presence", ns::CLIENT, &[("type", "unavailable")], vec![]);
        let own_codes: Vec<u16> = codes.iter().copied().chain([110]).collect();
        let to_self = keep_muc_children(unavailable(), &gone, true, &own_codes, status_el.clone());
        let mut copies = vec![OccupantCopy::sealed(Kind::Presence, to_self, from.clone(), &gone)];
        for to in self.occupants.iter().filter(|_| announced) {
            let show_jid = self.config.whois_anyone || to.role == Role::Moderator;
            let p = keep_muc_children(unavailable(), &gone, show_jid, codes, status_el.clone());
            copies.push(OccupantCopy::sealed(Kind::Presence, p, from.clone(), to));
        }
        self.fan_out(copies).await;
        if self.locked && self.occupants.is_empty() {
            // The owner left before configuring: the room never opened (§10.1.3).
            self.forget().await;
        }
    }

    /// §7.6: unavailable with 303 and the new nick, then available under the new nick.
    async fn change_nick(&mut self, current: &str, nick: String, el: &Element) -> Result<(), StanzaError> {
        if nick.is_empty() || nick.len() > NICK_BYTES_MAX {
            return Err(StanzaError::JidMalformed);
        }
        if self.occupants.get(&nick).is_some() {
            return Err(StanzaError::Conflict);
        }
        let Some(mut occupant) = self.occupants.remove(current) else { return Ok(()) };
        let from_old = self.occupant_jid(current);
        let mut copies = Vec::with_capacity(self.occupants.len() + 1);
        for to in self.occupants.iter().chain(std::iter::once(&occupant)) {
            let own = to.jid == occupant.jid;
            let codes: &[u16] = if own { &[303, 110] } else { &[303] };
            let show_jid = self.config.whois_anyone || to.role == Role::Moderator || own;
            let p = keep_muc_children(build("presence", ns::CLIENT, &[("type", "unavailable")], vec![]), &occupant, show_jid, codes, None);
            copies.push(OccupantCopy::sealed(Kind::Presence, with_new_nick(p, &nick), from_old.clone(), to));
        }
        self.fan_out(copies).await;
        occupant.nick = nick.clone();
        occupant.presence = presence_payload(el);
        self.occupants.insert(occupant);
        self.broadcast_presence(&nick, &[], None).await;
        Ok(())
    }

    // ------------------------------------------------------------------ messages

    async fn on_message(&mut self, stanza: &Stanza, from: FullJid, nick: Option<String>) -> Result<(), StanzaError> {
        if !self.exists {
            return Err(StanzaError::ItemNotFound);
        }
        let sender = self.occupants.nick_of(&from);
        let el = stanza.element();
        match (&*stanza.type_, nick) {
            ("groupchat", Some(_)) => Err(StanzaError::BadRequest),
            ("groupchat", None) => {
                let Some(sender) = sender else { return Err(StanzaError::NotAcceptable) }; // §7.4
                self.groupchat(&sender, el).await
            }
            (_, Some(to_nick)) => {
                let Some(sender) = sender else { return Err(StanzaError::NotAcceptable) };
                self.private_message(&sender, &to_nick, el).await
            }
            (_, None) => {
                if let Some(form) = voice::request_form(&el) {
                    return self.voice_form(sender, form).await;
                }
                match el.get_child("x", ns::MUC_USER) {
                    Some(x) => self.invitation(&from, sender, x).await,
                    None => Err(StanzaError::NotAcceptable),
                }
            }
        }
    }

    async fn groupchat(&mut self, sender: &str, mut el: Element) -> Result<(), StanzaError> {
        let occupant = self.occupants.get(sender).expect("a present sender");
        if occupant.role < Role::Participant {
            return Err(StanzaError::Forbidden); // §7.4: visitors in a moderated room
        }
        let subject = el.get_child("subject", ns::CLIENT).map(|s| s.text());
        let has_body = el.get_child("body", ns::CLIENT).is_some();
        if let Some(text) = subject.filter(|_| !has_body) {
            let may = occupant.role == Role::Moderator || (self.config.change_subject && occupant.role >= Role::Participant);
            if !may {
                return Err(StanzaError::Forbidden); // §8.1
            }
            if text.len() > SUBJECT_BYTES_MAX {
                return Err(StanzaError::NotAcceptable);
            }
            self.subject = Some(Subject { nick: sender.to_owned(), text });
            self.save().await;
        }
        // What the room sends: the client's stanza, `from` the occupant, its own ids out.
        while el.remove_child("stanza-id", ns::SID).is_some() {}
        while el.remove_child("occupant-id", ns::OCCUPANT_ID).is_some() {}
        el.append_child(build("occupant-id", ns::OCCUPANT_ID, &[("id", &occupant.occupant_id)], vec![]));
        let from = self.occupant_jid(sender);
        let room_jid = self.jid.to_string();
        let mut template = Stanza::seal(Kind::Message, el, from, Jid::from(self.jid.clone()));
        let archiving = self.config.archive && self.core.cfg.archive.enabled && has_body;
        if archiving {
            let id = self.core.archive_ids.next();
            template = mam::stamp(&template, id, &room_jid);
            let with = self.occupants.get(sender).map(|o| o.jid.to_bare().to_string()).unwrap_or_default();
            let row = ArchiveRow { owner: room_jid.clone(), id, with, xml: template.xml.to_string() };
            self.core.storage.archive(vec![row], self.core.cfg.limits.mam_messages_per_user_max).await;
        }
        if has_body {
            let entry = history::Entry { at: SystemTime::now(), xml: template.xml.clone() };
            self.history.push(entry, self.config.history_length, self.core.cfg.muc.history_bytes_max);
        }
        self.core.counters.muc_messages.inc();
        let copies = self.occupants.iter().map(|to| OccupantCopy { stanza: addressed_to(&template, &to.jid), session: to.session }).collect();
        self.fan_out(copies).await;
        if has_body && self.config.members_only {
            self.notify_absent_members(&template).await;
        }
        Ok(())
    }

    /// Seed 003: members of a members-only room who are not in it miss nothing. Their
    /// UserChannels are told (and push, XEP-0357, when no client of theirs is active); the
    /// messages themselves wait in the room's archive.
    async fn notify_absent_members(&self, template: &Stanza) {
        let absent = self
            .affiliations
            .iter()
            .filter(|(jid, a)| **a >= Affiliation::Member && self.occupants.nicks_of_account(jid).is_empty())
            .filter_map(|(jid, _)| BareJid::new(jid).ok());
        let msgs = absent
            .map(|member| {
                let notice = Stanza { to: Jid::from(member.clone()), ..template.clone() };
                CoreMsg::ToUser { user: member.to_string().into(), msg: UserMsg::RoomNotice(notice) }
            })
            .collect();
        self.core.send_batched(msgs).await;
    }

    /// §7.5: a private message to `to_nick`, from the sender's occupant JID.
    async fn private_message(&self, sender: &str, to_nick: &str, mut el: Element) -> Result<(), StanzaError> {
        let role = self.occupants.get(sender).expect("a present sender").role;
        if !self.config.allow_pm.allows(role) {
            return Err(StanzaError::NotAllowed);
        }
        let Some(target) = self.occupants.get(to_nick) else { return Err(StanzaError::ItemNotFound) };
        if el.get_child("x", ns::MUC_USER).is_none() {
            el.append_child(build("x", ns::MUC_USER, &[], vec![]));
        }
        let stanza = Stanza::seal(Kind::Message, el, self.occupant_jid(sender), Jid::from(target.jid.clone()));
        self.core.route(stanza).await;
        Ok(())
    }

    /// §7.8.2 mediated invitations, and §7.8.2.x declines, through the room.
    async fn invitation(&mut self, from: &FullJid, sender: Option<String>, x: &Element) -> Result<(), StanzaError> {
        if let Some(invite) = x.get_child("invite", ns::MUC_USER) {
            let Some(sender) = sender else { return Err(StanzaError::NotAcceptable) };
            let Some(invitee) = invite.attr("to").and_then(|t| BareJid::new(t).ok()) else { return Err(StanzaError::JidMalformed) };
            let affiliation = self.affiliation_of(from.to_bare().as_str());
            let role = self.occupants.get(&sender).map_or(Role::None, |o| o.role);
            if self.config.members_only {
                if affiliation < Affiliation::Admin && !(self.config.allow_invites && role >= Role::Participant) {
                    return Err(StanzaError::Forbidden);
                }
                let invited = invitee.to_string();
                if self.affiliation_of(&invited) < Affiliation::Member {
                    self.affiliations.insert(invited, Affiliation::Member);
                    self.save().await;
                }
            }
            let mut children = vec![invite_el("invite", "from", &from.to_bare().to_string(), invite)];
            if let Some(p) = &self.config.password {
                children.push(text_el("password", ns::MUC_USER, p));
            }
            let msg = build("message", ns::CLIENT, &[], vec![build("x", ns::MUC_USER, &[], children)]);
            self.core.route(Stanza::seal(Kind::Message, msg, Jid::from(self.jid.clone()), Jid::from(invitee))).await;
            return Ok(());
        }
        if let Some(decline) = x.get_child("decline", ns::MUC_USER) {
            let Some(inviter) = decline.attr("to").and_then(|t| Jid::new(t).ok()) else { return Err(StanzaError::JidMalformed) };
            let children = vec![invite_el("decline", "from", &from.to_bare().to_string(), decline)];
            let msg = build("message", ns::CLIENT, &[], vec![build("x", ns::MUC_USER, &[], children)]);
            self.core.route(Stanza::seal(Kind::Message, msg, Jid::from(self.jid.clone()), inviter)).await;
            return Ok(());
        }
        Err(StanzaError::BadRequest)
    }

    async fn send_history(&self, to: &FullJid, session: Option<SessionAddr>, req: &history::Request) {
        let mut copies = Vec::new();
        for entry in self.history.select(req, SystemTime::now()) {
            let Ok(el) = entry.xml.parse::<Element>() else { continue };
            let el = crate::modules::delay::stamp_once(el, &self.jid.to_string(), entry.at);
            let from = el.attr("from").and_then(|f| Jid::new(f).ok()).unwrap_or_else(|| Jid::from(self.jid.clone()));
            copies.push(OccupantCopy { stanza: Stanza::seal(Kind::Message, el, from, Jid::from(to.clone())), session });
        }
        self.fan_out(copies).await;
    }

    /// §7.2.15: the subject goes to every joiner, empty when none is set.
    async fn send_subject(&self, to: &FullJid, session: Option<SessionAddr>) {
        let (from, text) = match &self.subject {
            Some(s) if self.occupants.get(&s.nick).is_some() => (self.occupant_jid(&s.nick), s.text.as_str()),
            Some(s) => (Jid::from(self.jid.clone()), s.text.as_str()),
            None => (Jid::from(self.jid.clone()), ""),
        };
        let msg = build("message", ns::CLIENT, &[("type", "groupchat")], vec![text_el("subject", ns::CLIENT, text)]);
        let stanza = Stanza::seal(Kind::Message, msg, from, Jid::from(to.clone()));
        self.fan_out(vec![OccupantCopy { stanza, session }]).await;
    }

    // ------------------------------------------------------------------ IQs

    async fn on_iq(&mut self, stanza: &Stanza, from: FullJid, nick: Option<String>) -> Result<(), StanzaError> {
        let el = stanza.element();
        let type_ = &*stanza.type_;
        if !matches!(type_, "get" | "set") {
            return Ok(()); // results and errors for the room: it asks nothing
        }
        let Some(payload) = el.children().next() else { return Err(StanzaError::BadRequest) };
        let answer = match nick {
            // XEP-0410: a client checks it is still joined by pinging its own occupant JID.
            Some(nick) if payload.is("ping", ns::PING) => match self.occupants.nick_of(&from) {
                Some(own) if own == nick => IqAnswer::Result(None),
                None => IqAnswer::Error(StanzaError::NotAcceptable),
                Some(_) if self.occupants.get(&nick).is_none() => IqAnswer::Error(StanzaError::ItemNotFound),
                Some(_) => IqAnswer::Error(StanzaError::FeatureNotImplemented),
            },
            Some(_) => IqAnswer::Error(StanzaError::FeatureNotImplemented),
            None => self.room_iq(&from, type_, payload).await,
        };
        let payload = match answer {
            IqAnswer::Result(p) => p,
            IqAnswer::ResultAfter(first, p) => {
                for m in first {
                    self.core.route(Stanza::seal(Kind::Message, m, Jid::from(self.jid.clone()), Jid::from(from.clone()))).await;
                }
                p
            }
            IqAnswer::Error(e) => return Err(e),
        };
        let id = el.attr("id").unwrap_or("");
        let reply = build("iq", ns::CLIENT, &[("type", "result"), ("id", id)], payload.into_iter().collect());
        self.core.route(Stanza::seal(Kind::Iq, reply, stanza.to.clone(), Jid::from(from))).await;
        Ok(())
    }

    async fn room_iq(&mut self, from: &FullJid, type_: &str, payload: &Element) -> IqAnswer {
        let bare = from.to_bare().to_string();
        let affiliation = self.affiliation_of(&bare);
        if !self.exists {
            return IqAnswer::Error(StanzaError::ItemNotFound);
        }
        match (type_, payload.ns().as_str(), payload.name()) {
            ("get", ns::DISCO_INFO, "query") => IqAnswer::Result(Some(self.disco_info())),
            ("get", ns::DISCO_ITEMS, "query") => IqAnswer::Result(Some(build("query", ns::DISCO_ITEMS, &[], vec![]))),
            ("get", ns::PING, "ping") => IqAnswer::Result(None),
            (_, ns::REGISTER, "query") => self.register_iq(&bare, type_, payload).await,
            (_, ns::MUC_OWNER, "query") if affiliation != Affiliation::Owner => IqAnswer::Error(StanzaError::Forbidden),
            ("get", ns::MUC_OWNER, "query") => {
                IqAnswer::Result(Some(build("query", ns::MUC_OWNER, &[], vec![self.config.form(self.core.cfg.muc.occupants_max)])))
            }
            ("set", ns::MUC_OWNER, "query") => self.owner_set(payload).await,
            ("get", ns::MUC_ADMIN, "query") => self.admin_get(from, payload),
            ("set", ns::MUC_ADMIN, "query") => self.admin_set(from, payload).await,
            (_, ns::MAM, "query") if !(self.config.archive && self.core.cfg.archive.enabled) => IqAnswer::Error(StanzaError::ServiceUnavailable),
            (_, ns::MAM, "query") if self.config.members_only && affiliation < Affiliation::Member => IqAnswer::Error(StanzaError::Forbidden),
            (_, ns::MAM, "query") if affiliation == Affiliation::Outcast => IqAnswer::Error(StanzaError::Forbidden),
            ("get", ns::MAM, "query") => IqAnswer::Result(Some(mam::query_form())),
            ("set", ns::MAM, "query") => mam::query(&self.core, self.jid.to_string(), payload, &from.to_string()).await,
            _ => IqAnswer::Error(StanzaError::ServiceUnavailable),
        }
    }

    fn disco_info(&self) -> Element {
        let name = if self.config.name.is_empty() { self.jid.node().map(|n| n.to_string()).unwrap_or_default() } else { self.config.name.clone() };
        let identity = build("identity", ns::DISCO_INFO, &[("category", "conference"), ("type", "text"), ("name", &name)], vec![]);
        let archiving = self.config.archive && self.core.cfg.archive.enabled;
        let mut children = vec![identity];
        children.extend(self.config.features(archiving).into_iter().map(|f| build("feature", ns::DISCO_INFO, &[("var", f)], vec![])));
        let subject = self.subject.as_ref().map(|s| s.text.as_str()).unwrap_or("");
        children.push(self.config.info_form(self.occupants.len(), subject));
        build("query", ns::DISCO_INFO, &[], children)
    }

    /// §10.1-10.2 (configuration: unlocks a new room), §10.9 (destruction).
    async fn owner_set(&mut self, payload: &Element) -> IqAnswer {
        if let Some(destroy) = payload.get_child("destroy", ns::MUC_OWNER) {
            self.destroy(destroy).await;
            return IqAnswer::Result(None);
        }
        let Some(form) = payload.get_child("x", ns::DATA_FORMS) else { return IqAnswer::Error(StanzaError::BadRequest) };
        match form.attr("type") {
            Some("cancel") if self.locked => {
                let destroy = Element::bare("destroy", ns::MUC_OWNER);
                self.destroy(&destroy).await;
                IqAnswer::Result(None)
            }
            Some("cancel") => IqAnswer::Result(None),
            Some("submit") => {
                let m = &self.core.cfg.muc;
                if let Err(e) = self.config.apply(form, m.occupants_max, m.history_messages_max) {
                    return IqAnswer::Error(e);
                }
                self.history.truncate(self.config.history_length, m.history_bytes_max);
                self.locked = false;
                self.save().await;
                // §9.3 (322): a room made members-only loses the occupants who are not.
                if self.config.members_only {
                    for nick in self.occupants.nicks() {
                        if self.occupants.get(&nick).is_some_and(|o| o.affiliation < Affiliation::Member) {
                            self.remove_occupant(&nick, &[322], None).await;
                        }
                    }
                }
                // §10.2.1: occupants learn that the configuration changed (104).
                let msg = build("message", ns::CLIENT, &[("type", "groupchat")], vec![build("x", ns::MUC_USER, &[], vec![build("status", ns::MUC_USER, &[("code", "104")], vec![])])]);
                for to in self.occupants.iter() {
                    self.core.route(Stanza::seal(Kind::Message, msg.clone(), Jid::from(self.jid.clone()), Jid::from(to.jid.clone()))).await;
                }
                IqAnswer::Result(None)
            }
            _ => IqAnswer::Error(StanzaError::BadRequest),
        }
    }

    /// §10.9: everyone leaves with the reason (and an alternate venue), and the room is gone.
    async fn destroy(&mut self, destroy: &Element) {
        let mut children = vec![];
        if let Some(reason) = destroy.get_child("reason", ns::MUC_OWNER) {
            children.push(text_el("reason", ns::MUC_USER, &reason.text()));
        }
        let mut attrs = vec![];
        let venue = destroy.attr("jid").map(str::to_owned);
        if let Some(v) = &venue {
            attrs.push(("jid", v.as_str()));
        }
        let destroy_el = build("destroy", ns::MUC_USER, &attrs, children);
        let mut copies = Vec::with_capacity(self.occupants.len());
        for nick in self.occupants.nicks() {
            let Some(mut gone) = self.occupants.remove(&nick) else { continue };
            self.core.counters.muc_occupants.add(-1);
            gone.role = Role::None;
            gone.affiliation = Affiliation::None;
            let x = Presented { occupant: &gone, show_jid: false, codes: &[], item_children: vec![], x_children: vec![destroy_el.clone()], new_nick: None }.muc_user();
            let p = build("presence", ns::CLIENT, &[("type", "unavailable")], vec![x]);
            copies.push(OccupantCopy::sealed(Kind::Presence, p, self.occupant_jid(&nick), &gone));
        }
        self.fan_out(copies).await;
        self.forget().await;
    }

    /// The room no longer exists: out of storage and the directory.
    async fn forget(&mut self) {
        if self.config.persistent || self.handed_over {
            self.store(None, None).await;
        }
        self.core.muc_directory.remove(&self.key);
        self.exists = false;
        self.locked = false;
        self.affiliations.clear();
        self.reserved_nicks.clear();
        self.subject = None;
        self.history = History::default();
        let m = &self.core.cfg.muc;
        self.config = RoomConfig::new(m.occupants_max, m.history_messages_max, self.core.cfg.archive.enabled);
    }

    /// §9.5, §10.5 and kin: the occupants with a role, or the accounts with an affiliation.
    fn admin_get(&self, from: &FullJid, payload: &Element) -> IqAnswer {
        let Some(item) = payload.get_child("item", ns::MUC_ADMIN) else { return IqAnswer::Error(StanzaError::BadRequest) };
        let affiliation = self.affiliation_of(from.to_bare().as_str());
        let role = self.occupants.nick_of(from).and_then(|n| self.occupants.get(&n).map(|o| o.role)).unwrap_or(Role::None);
        let items: Vec<Element> = if let Some(wanted) = item.attr("affiliation").and_then(Affiliation::parse) {
            if affiliation < Affiliation::Admin && !(wanted == Affiliation::Member && role == Role::Moderator) {
                return IqAnswer::Error(StanzaError::Forbidden);
            }
            self.affiliations
                .iter()
                .filter(|(_, a)| **a == wanted)
                .map(|(jid, a)| build("item", ns::MUC_ADMIN, &[("affiliation", a.as_str()), ("jid", jid)], vec![]))
                .collect()
        } else if let Some(wanted) = item.attr("role").and_then(Role::parse) {
            if role < Role::Moderator {
                return IqAnswer::Error(StanzaError::Forbidden);
            }
            self.occupants
                .iter()
                .filter(|o| o.role == wanted)
                .map(|o| {
                    let jid = o.jid.to_string();
                    build("item", ns::MUC_ADMIN, &[("affiliation", o.affiliation.as_str()), ("role", o.role.as_str()), ("nick", &o.nick), ("jid", &jid)], vec![])
                })
                .collect()
        } else {
            return IqAnswer::Error(StanzaError::BadRequest);
        };
        IqAnswer::Result(Some(build("query", ns::MUC_ADMIN, &[], items)))
    }

    /// Role changes by nick (kick, voice, moderator: §8.2-8.5, §9.6-9.7) and affiliation
    /// changes by JID (ban, member, admin, owner: §9.1-9.4, §10.3-10.8). All items or none.
    async fn admin_set(&mut self, from: &FullJid, payload: &Element) -> IqAnswer {
        let actor_affiliation = self.affiliation_of(from.to_bare().as_str());
        let actor_role = self.occupants.nick_of(from).and_then(|n| self.occupants.get(&n).map(|o| o.role)).unwrap_or(Role::None);
        let items: Vec<&Element> = payload.children().filter(|c| c.is("item", ns::MUC_ADMIN)).collect();
        if items.is_empty() {
            return IqAnswer::Error(StanzaError::BadRequest);
        }
        let mut changes = Vec::new();
        for item in &items {
            let reason = item.get_child("reason", ns::MUC_ADMIN).map(|r| r.text());
            if let Some(role) = item.attr("role") {
                let (Some(role), Some(nick)) = (Role::parse(role), item.attr("nick")) else { return IqAnswer::Error(StanzaError::BadRequest) };
                let Some(target) = self.occupants.get(nick) else { return IqAnswer::Error(StanzaError::ItemNotFound) };
                // A moderator acts on those ranked below it; owners and admins are never
                // kicked or muted by anyone ranked at or below them (§8.2, §9.6).
                if actor_role < Role::Moderator || (target.affiliation >= actor_affiliation && target.affiliation >= Affiliation::Admin) {
                    return IqAnswer::Error(StanzaError::NotAllowed);
                }
                if role == Role::Moderator && actor_affiliation < Affiliation::Admin {
                    return IqAnswer::Error(StanzaError::NotAllowed);
                }
                changes.push(Change::Role { nick: nick.to_owned(), role, reason });
            } else if let Some(affiliation) = item.attr("affiliation") {
                let (Some(affiliation), Some(jid)) = (Affiliation::parse(affiliation), item.attr("jid").and_then(|j| Jid::new(j).ok())) else {
                    return IqAnswer::Error(StanzaError::BadRequest);
                };
                let jid = jid.to_bare().to_string();
                let current = self.affiliation_of(&jid);
                let allowed = match actor_affiliation {
                    Affiliation::Owner => true,
                    Affiliation::Admin => current < Affiliation::Admin && affiliation < Affiliation::Admin,
                    _ => false,
                };
                if !allowed {
                    return IqAnswer::Error(StanzaError::NotAllowed);
                }
                let owners_left = self.affiliations.values().filter(|a| **a == Affiliation::Owner).count();
                if current == Affiliation::Owner && affiliation != Affiliation::Owner && owners_left <= 1 {
                    return IqAnswer::Error(StanzaError::Conflict); // §10.6: the last owner stays
                }
                changes.push(Change::Affiliation { jid, affiliation, reason });
            } else {
                return IqAnswer::Error(StanzaError::BadRequest);
            }
        }
        let mut affiliations_changed = false;
        for change in changes {
            match change {
                Change::Role { nick, role: Role::None, reason } => self.remove_occupant(&nick, &[307], reason).await,
                Change::Role { nick, role, .. } => {
                    if let Some(o) = self.occupants.get_mut(&nick) {
                        o.role = role;
                    }
                    self.broadcast_presence(&nick, &[], None).await;
                }
                Change::Affiliation { jid, affiliation, reason } => {
                    affiliations_changed = true;
                    self.set_affiliation(&jid, affiliation, reason).await;
                }
            }
        }
        if affiliations_changed {
            self.save().await;
        }
        IqAnswer::Result(None)
    }
}

impl Room {
    /// `jid` (an account) gets `affiliation`: its occupants leave when it may no longer
    /// be here (301 banned, 321 not a member of a members-only room), or take their new
    /// role; below member it keeps no reserved nick. The caller saves.
    async fn set_affiliation(&mut self, jid: &str, affiliation: Affiliation, reason: Option<String>) {
        match affiliation {
            Affiliation::None => self.affiliations.remove(jid),
            a => self.affiliations.insert(jid.to_owned(), a),
        };
        if affiliation < Affiliation::Member {
            self.release_nick_of(jid);
        }
        for nick in self.occupants.nicks_of_account(jid) {
            if affiliation == Affiliation::Outcast {
                self.remove_occupant(&nick, &[301], reason.clone()).await;
            } else if self.config.members_only && affiliation < Affiliation::Member {
                self.remove_occupant(&nick, &[321], reason.clone()).await;
            } else if let Some(o) = self.occupants.get_mut(&nick) {
                o.affiliation = affiliation;
                o.role = affiliation.default_role(self.config.moderated);
                self.broadcast_presence(&nick, &[], None).await;
            }
        }
    }
}

enum Change {
    Role { nick: String, role: Role, reason: Option<String> },
    Affiliation { jid: String, affiliation: Affiliation, reason: Option<String> },
}

/// A client's presence as the room repeats it: its children but any MUC `<x/>`.
fn presence_payload(el: &Element) -> Vec<Element> {
    el.children().filter(|c| !(c.name() == "x" && c.ns().starts_with(ns::MUC))).filter(|c| !c.is("occupant-id", ns::OCCUPANT_ID)).cloned().collect()
}

/// `p` with the `<x/>` of `occupant` as `show_jid` allows, `codes`, and a status text.
fn keep_muc_children(mut p: Element, occupant: &Occupant, show_jid: bool, codes: &[u16], status: Option<Element>) -> Element {
    if let Some(s) = status {
        p.append_child(s);
    }
    p.append_child(Presented { occupant, show_jid, codes, item_children: vec![], x_children: vec![], new_nick: None }.muc_user());
    p.append_child(build("occupant-id", ns::OCCUPANT_ID, &[("id", &occupant.occupant_id)], vec![]));
    p
}

/// Puts the new nick (§7.6.3, status 303) on the presence's `<item/>`.
fn with_new_nick(mut p: Element, nick: &str) -> Element {
    if let Some(x) = p.get_child_mut("x", ns::MUC_USER) {
        if let Some(item) = x.get_child_mut("item", ns::MUC_USER) {
            crate::stanza::set_attr(item, "nick", Some(nick.to_owned()));
        }
    }
    p
}

/// An `<invite/>` or `<decline/>` as the room passes it on: `attr` naming who sent it, the
/// reason kept.
fn invite_el(name: &str, attr: &str, who: &str, original: &Element) -> Element {
    let reason = original.get_child("reason", ns::MUC_USER).map(|r| text_el("reason", ns::MUC_USER, &r.text()));
    build(name, ns::MUC_USER, &[(attr, who)], reason.into_iter().collect())
}

/// One stanza from the room to one occupant, with the occupant's session if the room
/// knows it (`Room::fan_out`).
struct OccupantCopy {
    stanza: Stanza,
    session: Option<SessionAddr>,
}

impl OccupantCopy {
    fn sealed(kind: Kind, el: Element, from: Jid, to: &Occupant) -> OccupantCopy {
        OccupantCopy { stanza: Stanza::seal(kind, el, from, Jid::from(to.jid.clone())), session: to.session }
    }
}

/// `template` (sealed by the room, to the room) addressed to one occupant: the sealed text's
/// `to` replaced, not the stanza serialised again per occupant. The root's start tag ends at
/// the first `>`, since sealed text escapes `>` in attribute values.
pub fn addressed_to(template: &Stanza, to: &FullJid) -> Stanza {
    let xml = &*template.xml;
    let head_end = xml.find('>').unwrap_or(xml.len());
    let to_text = to.to_string();
    let spliced = xml[..head_end].find(" to='").and_then(|at| {
        let value_start = at + 5;
        let value_end = value_start + xml[value_start..head_end].find('\'')?;
        let escaped = crate::xml::write::escape_attr(&to_text);
        Some(format!("{}{}{}", &xml[..value_start], escaped, &xml[value_end..]))
    });
    match spliced {
        Some(xml) => Stanza { to: Jid::from(to.clone()), xml: xml.into(), ..template.clone() },
        None => template.readdressed(Jid::from(to.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fanned_out_copy_differs_only_in_to() {
        let el: Element = "<message xmlns='jabber:client' type='groupchat'><body>to='x' &gt; y</body></message>".parse().unwrap();
        let template = Stanza::seal(Kind::Message, el, Jid::new("r@c/ann").unwrap(), Jid::new("r@c").unwrap());
        let copy = addressed_to(&template, &FullJid::new("bob@d/phone").unwrap());
        let expected = Stanza::seal(Kind::Message, template.element(), Jid::new("r@c/ann").unwrap(), Jid::new("bob@d/phone").unwrap());
        assert_eq!(copy.element(), expected.element());
        assert_eq!(copy.to, Jid::new("bob@d/phone").unwrap());
        assert!(copy.xml.contains("<body>to='x' &gt; y</body>"), "{}", copy.xml);
    }
}
