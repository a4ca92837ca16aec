//! A core's routing state: its sessions, the UserChannels it owns, and the hops that leave
//! it (to a user's owner core, to a session's core, to another node). Seastar's rule: the
//! local case is handled directly; only a different core goes through the core mesh, and
//! only a different node through the cluster's [`NodeLink`].

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shards::mailbox::{self, SendError};
use shards::mesh::Mesh;
use shards::ring::TwoLevelRing;
use slab::Slab;

use super::custody::{Custody, Held, Retry};
use super::admin_query::{AdminAnswer, AdminQueries, AdminTicket, ADMIN_ANSWER_WAIT};
use super::envelope::{CoreMsg, RoomAdminOp, RoomMsg, SessionAddr, SessionMsg, UserMsg};
use super::node_link::{self, LinkError, NodeLink};
use super::user_channel;
use crate::c2s::limits::PeerLimits;
use crate::c2s::registration_limit::RegistrationLimit;
use crate::config::Config;
use crate::metrics::CoreCounters;
use crate::modules::mam::ArchiveIds;
use crate::stanza::{Kind, Receipt, Stanza};
use crate::storage::Storage;

/// A session as its core's table knows it.
struct SessionSlot {
    generation: u32,
    mailbox: mailbox::Sender<SessionMsg>,
    /// The session's user (a bare JID): told at once when the session stops taking mail.
    user: Arc<str>,
}

/// Pause between attempts to hand a frame to another node that is unreachable or busy.
const NODE_SEND_RETRY: Duration = Duration::from_millis(20);
/// How long confirmations gather before they go out as one frame per holder: a few per
/// millisecond of traffic instead of one per message. Adds to custody, not to delivery.
const CONFIRM_BATCH_DELAY: Duration = Duration::from_millis(2);

pub struct CoreState {
    pub id: usize,
    pub cfg: Arc<Config>,
    /// Replaced when the cluster's membership changes; read, never held across an await.
    ring: RefCell<TwoLevelRing>,
    link: Option<Box<dyn NodeLink>>,
    pub storage: Storage,
    /// STARTTLS and Direct TLS, and HTTPS (`c2s::tls_stream`).
    pub tls: crate::tls::ServerTls,
    pub counters: Arc<CoreCounters>,
    /// Node-wide, shared with the other cores (see `c2s::limits`).
    pub peers: Arc<PeerLimits>,
    /// XEP-0077 registrations per address, shared by every core of the node.
    pub registrations: Arc<RegistrationLimit>,
    /// XEP-0313 ids for the messages this core's UserChannels archive.
    pub archive_ids: ArchiveIds,
    /// XEP-0115: the server's `<c/>` stream feature, hashed once from its features.
    pub caps: minidom::Element,
    /// XEP-0115: what the caps hashes of clients seen on this core stand for.
    pub client_caps: crate::modules::entity_caps::Cache,
    /// XEP-0357: the pace of pushes for the users this core owns.
    pub push_limiter: crate::modules::push::RateLimiter,
    /// XEP-0012: the server's uptime counts from here.
    pub started: Instant,
    mesh: Mesh<CoreMsg>,
    sessions: RefCell<Slab<SessionSlot>>,
    next_generation: Cell<u32>,
    /// UserChannels owned by this core, by bare JID.
    users: RefCell<HashMap<Arc<str>, mailbox::Sender<UserMsg>>>,
    /// XEP-0045 rooms owned by this core, by bare JID.
    rooms: RefCell<HashMap<Arc<str>, mailbox::Sender<RoomMsg>>>,
    /// XEP-0045: the node's rooms, shared by its cores (listing, counts, creation rates).
    pub muc_directory: Arc<crate::muc::Directory>,
    /// The admin socket's questions to actors, waiting for their answers (core 0).
    admin_queries: AdminQueries,
    /// The messages this core sent to other nodes and still answers for.
    custody: Custody,
    /// When the ring last changed (see [`Self::ring_settling_until`]).
    ring_changed_at: Cell<Option<Instant>>,
    /// When this core's users last looked, asked by a peer, for what a stand-in stored
    /// offline for them (`sweep_stand_in_offline`).
    stand_in_swept_at: Cell<Option<Instant>>,
    /// Set when the server stops: writes to clients that do not read give up at once
    /// (`c2s::conn`), and sessions store what their clients never saw offline.
    pub stopping: Rc<Cell<bool>>,
    /// Drives every session's pings, idle timeouts, ack requests and buffer release: an
    /// idle session arms no timer of its own (`shards::wheel`).
    pub wheel: shards::wheel::Wheel,
    /// XEP-0206: the BOSH sessions living on this core (`c2s::bosh`).
    pub bosh: crate::c2s::bosh::Sessions,
}

/// The wheel's resolution: coarse, as what it drives is measured in seconds; the XEP-0198
/// ack request delay (milliseconds, configurable) comes at most this much late.
const WHEEL_TICK: Duration = Duration::from_millis(100);

impl CoreState {
    pub fn new(
        cfg: Arc<Config>,
        mesh: Mesh<CoreMsg>,
        ring: TwoLevelRing,
        link: Option<Box<dyn NodeLink>>,
        storage: Storage,
        tls: crate::tls::ServerTls,
        counters: Arc<CoreCounters>,
        peers: Arc<PeerLimits>,
        registrations: Arc<RegistrationLimit>,
        muc_directory: Arc<crate::muc::Directory>,
    ) -> Rc<CoreState> {
        let c = &cfg.cluster;
        let custody = Custody::new(
            ring.local_node(),
            mesh.core_id() as u16,
            c.held_messages_max,
            c.delivered_receipts_max,
            Duration::from_millis(c.confirm_timeout_ms),
        );
        Rc::new(CoreState {
            id: mesh.core_id(),
            custody,
            ring_changed_at: Cell::new(None),
            stand_in_swept_at: Cell::new(None),
            stopping: Rc::default(),
            wheel: shards::wheel::Wheel::new(WHEEL_TICK),
            peers,
            registrations,
            archive_ids: ArchiveIds::new(mesh.core_id()),
            caps: crate::modules::caps::stream_feature(&cfg),
            client_caps: crate::modules::entity_caps::Cache::new(cfg.limits.caps_cache_entries_max),
            push_limiter: Default::default(),
            started: Instant::now(),
            cfg,
            ring: RefCell::new(ring),
            link,
            storage,
            tls,
            counters,
            mesh,
            sessions: RefCell::new(Slab::new()),
            next_generation: Cell::new(0),
            users: RefCell::new(HashMap::new()),
            rooms: RefCell::new(HashMap::new()),
            muc_directory,
            admin_queries: AdminQueries::default(),
            bosh: Default::default(),
        })
    }

    /// Until when the last ring change may still be spreading: each node's failure
    /// detector sees it on its own tick, within a suspicion timeout of the others, and only
    /// then do its sessions register with their users' new owners.
    pub fn ring_settling_until(&self) -> Option<Instant> {
        let settled = self.ring_changed_at.get()? + Duration::from_millis(self.cfg.cluster.suspicion_timeout_ms);
        (Instant::now() < settled).then_some(settled)
    }

    /// When the ring last changed; `None` if never since this core started.
    pub fn ring_changed_at(&self) -> Option<Instant> {
        self.ring_changed_at.get()
    }

    /// The nodes that hold arcs of the ring now, this one included.
    pub fn ring_nodes(&self) -> std::collections::HashSet<u32> {
        let ring = self.ring.borrow();
        ring.node_shares().into_keys().chain([ring.local_node()]).collect()
    }

    pub fn local_node(&self) -> u32 {
        self.ring.borrow().local_node()
    }

    /// Where `user`'s UserChannel lives now.
    pub fn owner_of(&self, user: &str) -> shards::ring::Owner {
        self.ring.borrow().owner(user)
    }

    /// Routes a message to `user`'s UserChannel: locally when this core owns the user,
    /// else across the core mesh (waiting if that core's channel is full: backpressure), or
    /// to the owner node.
    pub async fn send_to_user(self: &Rc<Self>, user: Arc<str>, msg: UserMsg) {
        let key = user.clone();
        self.send_to_owner(&key, CoreMsg::ToUser { user, msg }).await;
    }

    /// The hop to the owner of `key` (a user's or a room's bare JID): handled here, across
    /// the core mesh (waiting while that core's channel is full), or to the owner node.
    async fn send_to_owner(self: &Rc<Self>, key: &str, msg: CoreMsg) {
        let owner = self.owner_of(key);
        if owner.node != self.local_node() {
            self.send_to_node(owner.node, msg).await;
        } else if self.mesh.is_local(owner.core) {
            self.handle_here(msg);
        } else {
            self.counters.cross_core_messages.inc();
            let _ = self.mesh.send(owner.core, msg).await;
        }
    }

    /// Routes a stanza to whoever `stanza.to` names: a room of the XEP-0045 service, or a
    /// user of this server.
    pub async fn route(self: &Rc<Self>, stanza: Stanza) {
        let bare: Arc<str> = stanza.to.to_bare().to_string().into();
        if self.is_room(&stanza.to) {
            self.send_to_room(bare, RoomMsg::Stanza(stanza, None)).await;
        } else {
            self.send_to_user(bare, UserMsg::Inbound(stanza)).await;
        }
    }

    /// Routes the error this server answers a stanza with (see [`UserMsg::ErrorReply`]).
    pub async fn route_error(self: &Rc<Self>, reply: Stanza) {
        let bare: Arc<str> = reply.to.to_bare().to_string().into();
        if self.is_room(&reply.to) {
            self.send_to_room(bare, RoomMsg::Stanza(reply, None)).await;
        } else {
            self.send_to_user(bare, UserMsg::ErrorReply(reply)).await;
        }
    }

    /// Whether `jid` is a room (or an occupant of one) of this server's MUC service.
    pub fn is_room(&self, jid: &jid::Jid) -> bool {
        jid.node().is_some() && self.cfg.muc_domain() == Some(jid.domain().as_str())
    }

    /// Routes a message to room `room`'s actor, the way [`Self::send_to_user`] does to a
    /// user's: locally, across the core mesh, or to the owner node.
    pub async fn send_to_room(self: &Rc<Self>, room: Arc<str>, msg: RoomMsg) {
        let key = room.clone();
        self.send_to_owner(&key, CoreMsg::ToRoom { room, msg }).await;
    }

    /// Asks room `room`'s actor, wherever it lives, and waits for its answer, at most
    /// [`ADMIN_ANSWER_WAIT`]. The admin socket asks from core 0, where answers arrive.
    pub async fn ask_room(self: &Rc<Self>, room: Arc<str>, op: RoomAdminOp) -> AdminAnswer {
        let (ticket, rx) = self.admin_queries.open_admin(self.local_node());
        self.send_to_room(room, RoomMsg::Admin { op, ticket }).await;
        let answer = futures_lite::future::or(async { rx.recv_async().await.ok() }, async {
            glommio::timer::sleep(ADMIN_ANSWER_WAIT).await;
            None
        })
        .await;
        self.admin_queries.close(ticket.id);
        answer.unwrap_or_else(|| AdminAnswer {
            ok: false,
            text: format!("no answer from the room's owner within {} s: is its node up?", ADMIN_ANSWER_WAIT.as_secs()),
        })
    }

    /// An actor's answer to the admin socket that asked (`ticket`), on whatever node.
    pub async fn answer_admin(self: &Rc<Self>, ticket: AdminTicket, answer: AdminAnswer) {
        self.send_to_core(ticket.node, 0, CoreMsg::AdminAnswer { ticket, answer }).await;
    }

    fn room_local(self: &Rc<Self>, room: Arc<str>, msg: RoomMsg) {
        let tx = self.room(&room);
        // Lifecycle, one per session and ring change: never refused.
        let (stanza, session) = match msg {
            RoomMsg::Stanza(stanza, session) => (stanza, session),
            other => return tx.force_send(other),
        };
        // Errors that answer the room's own stanzas are never refused (one per stanza it
        // sent); anything else past the bound is answered `<resource-constraint/>`.
        if stanza.type_.as_ref() == "error" {
            return tx.force_send(RoomMsg::Stanza(stanza, session));
        }
        if let Err(SendError::Full(RoomMsg::Stanza(stanza, _)) | SendError::Closed(RoomMsg::Stanza(stanza, _))) = tx.try_send(RoomMsg::Stanza(stanza, session)) {
            self.counters.room_mailbox_full_drops.inc();
            let this = self.clone();
            glommio::spawn_local(async move { crate::muc::room::refuse(&this, &stanza, crate::stanza::StanzaError::ResourceConstraint).await }).detach();
        }
    }

    fn room(self: &Rc<Self>, room: &Arc<str>) -> mailbox::Sender<RoomMsg> {
        if let Some(tx) = self.rooms.borrow().get(room) {
            return tx.clone();
        }
        let (tx, rx) = mailbox::mailbox(self.cfg.muc.room_mailbox_messages_max);
        self.rooms.borrow_mut().insert(room.clone(), tx.clone());
        glommio::spawn_local(crate::muc::room::run(self.clone(), room.clone(), rx)).detach();
        tx
    }

    /// Called by a room actor with nothing left to do (no occupants, empty mailbox),
    /// synchronously with that check.
    pub fn retire_room(&self, room: &str) {
        self.rooms.borrow_mut().remove(room);
    }

    /// Routes a message to a session, wherever it lives.
    pub async fn send_to_session(self: &Rc<Self>, to: SessionAddr, msg: SessionMsg) {
        self.send_to_core(to.node, to.core as usize, CoreMsg::ToSession { to, msg }).await;
    }

    /// Routes a message stanza to a session; true when it carried a receipt and passed it
    /// on (the end of its path confirms, not the caller). One for another node is held
    /// here until that node's core confirms, unless another core already holds it.
    pub async fn deliver_message(self: &Rc<Self>, to: SessionAddr, stanza: &Stanza) -> bool {
        let xml = stanza.xml.clone();
        match stanza.receipt {
            Some(receipt) => {
                let msg = CoreMsg::HeldDelivery { to, xml, receipt, from_room: false, earlier: None };
                self.send_to_core(to.node, to.core as usize, msg).await;
            }
            None => self.deliver_held(to, xml, None).await,
        }
        stanza.receipt.is_some()
    }

    /// A message that is this core's to keep until `to` has it (see [`Self::held_copy`]);
    /// `earlier`, the receipt it was stored offline with, if any.
    pub async fn deliver_held(self: &Rc<Self>, to: SessionAddr, xml: Arc<str>, earlier: Option<Receipt>) {
        let msg = self.held_copy(to, xml, false, earlier).await;
        self.send_to_core(to.node, to.core as usize, msg).await;
    }

    /// Messages read back from offline storage for `to`, a session on this node, with the
    /// receipts they were stored with (see [`CoreMsg::StoredBacklog`]).
    pub async fn deliver_stored(self: &Rc<Self>, to: SessionAddr, rows: Vec<(Option<Receipt>, Arc<str>)>) {
        self.send_to_core(to.node, to.core as usize, CoreMsg::StoredBacklog { to, rows }).await;
    }

    /// The hop that takes a message to session `to`: straight to it on this node; to
    /// another node, held here (`custody`) until that node's core confirms, and given back
    /// to its user (other resources, offline storage) if the node goes down first.
    /// `from_room`: a room's copy ([`SessionMsg::FromRoom`]); `earlier`: see
    /// [`CoreMsg::HeldDelivery`].
    pub async fn held_copy(&self, to: SessionAddr, xml: Arc<str>, from_room: bool, earlier: Option<Receipt>) -> CoreMsg {
        if to.node == self.local_node() {
            return CoreMsg::ToSession { to, msg: SessionMsg::copy(xml, from_room) };
        }
        let receipt = self.hold(to.node, Held::Session { to, xml: xml.clone(), from_room, earlier }).await;
        CoreMsg::HeldDelivery { to, xml, receipt, from_room, earlier }
    }

    /// The hop toward core `core` of `node`: handled here when it is this core, else across
    /// the core mesh (waiting while that core's channel is full) or to the other node.
    async fn send_to_core(self: &Rc<Self>, node: u32, core: usize, msg: CoreMsg) {
        if node != self.local_node() {
            self.send_to_node(node, msg).await;
        } else if self.mesh.is_local(core) {
            self.handle_here(msg);
        } else {
            self.counters.cross_core_messages.inc();
            let _ = self.mesh.send(core, msg).await;
        }
    }

    /// The hop to another node. A message stanza for a user there is held first
    /// (`custody`). While that node is unreachable or busy the sender waits and retries
    /// (backpressure), re-reading the ring: when the node has failed, the ring soon names
    /// another owner, and a message for a user goes there instead. A session's address does
    /// not move, so anything else for a node that stays unreachable is given up after the
    /// deadline: the held messages are then custody's to re-route, the rest is dropped.
    async fn send_to_node(self: &Rc<Self>, mut node: u32, msg: CoreMsg) {
        let Some(link) = &self.link else {
            log::error!("core {}: message for node {node} on a single node dropped", self.id);
            return;
        };
        let msg = self.in_custody(node, msg).await;
        let receipt = receipt_of(&msg);
        // Held here: while it waits, custody may take it back to send again (its node went
        // down) or see it confirmed (a copy got through); then this attempt stops.
        let mine = receipt.filter(|r| self.holds(r)).map(|r| r.id);
        // A batch (a room's fan-out) whose every message is held here is let go the same
        // way: custody sends each again, so the room does not wait on an unreachable node.
        let held_batch = matches!(&msg, CoreMsg::Batch(msgs) if msgs.iter().all(|m| receipt_of(m).is_some_and(|r| self.holds(&r))));
        // A user's or a room's owner may change while this waits: the ring is read again.
        let owned_by = match &msg {
            CoreMsg::ToUser { user: key, .. } | CoreMsg::ToRoom { room: key, .. } => Some(key.clone()),
            CoreMsg::ToSession { .. }
            | CoreMsg::HeldDelivery { .. }
            | CoreMsg::StoredBacklog { .. }
            | CoreMsg::Confirm { .. }
            | CoreMsg::Batch(_)
            | CoreMsg::AdminAnswer { .. }
            | CoreMsg::Reregister { .. }
            | CoreMsg::BoshRequest { .. }
            | CoreMsg::BoshAnswer { .. } => None,
        };
        let timeout = Duration::from_millis(self.cfg.cluster.suspicion_timeout_ms * 2) + Duration::from_secs(1);
        let deadline = Instant::now() + timeout;
        let mut frame = node_link::encode(&msg);
        loop {
            match link.send(node, self.id as u16, frame) {
                Ok(()) => {
                    self.counters.cross_node_messages.inc();
                    return;
                }
                Err((why, back)) => {
                    frame = back;
                    // Held and the node unreachable: custody sends it again when the node is
                    // down, or at the confirmation timeout, and the caller (a UserChannel,
                    // with more to route) does not wait for either.
                    if why == LinkError::Unreachable && (mine.is_some() || held_batch) {
                        return;
                    }
                    if Instant::now() >= deadline {
                        if receipt.is_none() && !held_batch {
                            self.counters.cross_node_drops.inc();
                            log::warn!("core {}: node {node} {why:?} for {timeout:?}; message dropped", self.id);
                        }
                        return;
                    }
                }
            }
            glommio::timer::sleep(NODE_SEND_RETRY).await;
            if mine.is_some_and(|id| self.custody.held_at(id) != Some(node)) {
                return;
            }
            if let Some(key) = &owned_by {
                let owner = self.owner_of(key);
                if owner.node == self.local_node() {
                    // The ring moved the user (or room) here meanwhile.
                    if let Ok(msg) = node_link::decode(&frame) {
                        self.dispatch(msg);
                    }
                    return;
                }
                node = owner.node;
                if let Some(id) = mine {
                    self.custody.redirect(id, node);
                }
            }
        }
    }

    /// What arrives from another core or node. Each hop checks the rule its sender applied
    /// (glommio's sharding example does the same); a message for a user this core does not
    /// own (sent with an older ring, or by a node that cannot know our cores) goes on to the
    /// owner, and one for a session on another core goes to that core.
    /// Forwarding runs as its own task: the loop that called this must not wait on another
    /// core's channel, which may be waiting on ours.
    pub fn dispatch(self: &Rc<Self>, msg: CoreMsg) {
        if let CoreMsg::Batch(msgs) = msg {
            // What is for this core is handled now, in order with what arrives next; the
            // rest goes on, grouped again.
            let (here, onward): (Vec<_>, Vec<_>) =
                msgs.into_iter().partition(|m| self.destination(m) == (self.local_node(), self.id));
            here.into_iter().for_each(|m| self.handle_here(m));
            if !onward.is_empty() {
                let this = self.clone();
                glommio::spawn_local(async move { this.send_batched(onward).await }).detach();
            }
            return;
        }
        let (node, core) = self.destination(&msg);
        if node == self.local_node() && core == self.id {
            self.handle_here(msg);
        } else {
            let this = self.clone();
            glommio::spawn_local(async move { this.send_to_core(node, core, msg).await }).detach();
        }
    }

    /// The node and core `msg` is for.
    fn destination(&self, msg: &CoreMsg) -> (u32, usize) {
        match msg {
            CoreMsg::ToUser { user: key, .. } | CoreMsg::ToRoom { room: key, .. } => {
                let owner = self.owner_of(key);
                (owner.node, owner.core)
            }
            CoreMsg::ToSession { to, .. } | CoreMsg::HeldDelivery { to, .. } | CoreMsg::StoredBacklog { to, .. } => {
                (to.node, to.core as usize)
            }
            CoreMsg::Confirm { core, .. }
            | CoreMsg::Reregister { core, .. }
            | CoreMsg::BoshRequest { core, .. }
            | CoreMsg::BoshAnswer { core, .. } => (self.local_node(), *core as usize),
            CoreMsg::Batch(_) => (self.local_node(), self.id),
            CoreMsg::AdminAnswer { ticket, .. } => (ticket.node, 0),
        }
    }

    /// Sends `msgs` grouped by where they go: one hop per other core of this node and one
    /// frame per other node (whose receiving core splits it again per core), instead of
    /// one per message. A room's fan-out to its occupants goes this way.
    pub async fn send_batched(self: &Rc<Self>, msgs: Vec<CoreMsg>) {
        let local = self.local_node();
        let mut by_hop: std::collections::BTreeMap<(u32, usize), Vec<CoreMsg>> = Default::default();
        for msg in msgs {
            let (node, core) = self.destination(&msg);
            // Another node's cores are its own business: one frame per node.
            let hop = if node == local { (node, core) } else { (node, 0) };
            by_hop.entry(hop).or_default().push(msg);
        }
        for ((node, core), batch) in by_hop {
            if node == local && core == self.id {
                batch.into_iter().for_each(|msg| self.handle_here(msg));
            } else {
                self.counters.batched_hops.inc();
                self.send_to_core(node, core, CoreMsg::Batch(batch)).await;
            }
        }
    }

    /// A message stanza for a UserChannel on another node, held here (`custody`) until the
    /// end of its path confirms it; each one of a batch for that node the same way.
    async fn in_custody(&self, node: u32, msg: CoreMsg) -> CoreMsg {
        match msg {
            CoreMsg::Batch(msgs) => {
                let mut held = Vec::with_capacity(msgs.len());
                for msg in msgs {
                    held.push(self.held_if_message(node, msg).await);
                }
                CoreMsg::Batch(held)
            }
            other => self.held_if_message(node, other).await,
        }
    }

    async fn held_if_message(&self, node: u32, msg: CoreMsg) -> CoreMsg {
        match msg {
            CoreMsg::ToUser { user, msg: UserMsg::Inbound(mut stanza) } if stanza.kind == Kind::Message && stanza.receipt.is_none() => {
                stanza.receipt = Some(self.hold(node, Held::User(user.clone(), stanza.clone())).await);
                CoreMsg::ToUser { user, msg: UserMsg::Inbound(stanza) }
            }
            other => other,
        }
    }

    /// Whether this core holds the message `receipt` names.
    fn holds(&self, receipt: &Receipt) -> bool {
        receipt.node == self.local_node() && receipt.core as usize == self.id
    }

    /// A message for this core itself.
    fn handle_here(self: &Rc<Self>, msg: CoreMsg) {
        match msg {
            CoreMsg::ToUser { user, msg } => self.user_local(user, msg),
            CoreMsg::ToRoom { room, msg } => self.room_local(room, msg),
            CoreMsg::ToSession { to, msg } => self.session_local(to, msg),
            CoreMsg::HeldDelivery { to, xml, receipt, from_room, earlier } => {
                self.held_delivery_local(to, xml, receipt, from_room, earlier)
            }
            CoreMsg::StoredBacklog { to, rows } => self.stored_backlog_local(to, rows),
            CoreMsg::Confirm { ids, .. } => {
                let released = self.custody.release(&ids);
                self.counters.custody_held.add(-(released as i64));
            }
            CoreMsg::Batch(msgs) => self.dispatch(CoreMsg::Batch(msgs)),
            CoreMsg::Reregister { owner, .. } => self.reregister_local(owner),
            CoreMsg::AdminAnswer { ticket, answer } => self.admin_queries.answer(ticket.id, answer),
            CoreMsg::BoshRequest { from, ticket, body, .. } => {
                glommio::spawn_local(crate::c2s::bosh::answer_forwarded(self.clone(), from as usize, ticket, body)).detach();
            }
            CoreMsg::BoshAnswer { ticket, xml, .. } => self.bosh.forwarded.answer(ticket, xml),
        }
    }

    /// XEP-0206: a BOSH request for the session on core `owner` of this node, and its
    /// answer, waited for at most `wait`; `None` when there is no such core or no answer.
    pub async fn forward_bosh(self: &Rc<Self>, owner: usize, body: crate::c2s::bosh::Body, wait: Duration) -> Option<String> {
        if owner >= self.mesh.cores() {
            return None;
        }
        let (ticket, rx) = self.bosh.forwarded.open();
        let msg = CoreMsg::BoshRequest { core: owner as u16, from: self.id as u16, ticket, body };
        self.send_to_core(self.local_node(), owner, msg).await;
        let answer = futures_lite::future::or(async { rx.recv_async().await.ok() }, async {
            glommio::timer::sleep(wait).await;
            None
        })
        .await;
        self.bosh.forwarded.close(ticket);
        answer
    }

    /// The answer to a BOSH request core `to` forwarded here.
    pub async fn answer_bosh(self: &Rc<Self>, to: usize, ticket: u64, xml: String) {
        self.send_to_core(self.local_node(), to, CoreMsg::BoshAnswer { core: to as u16, ticket, xml }).await;
    }

    /// Asks `node`, back up, to register its sessions here again; and once more a suspicion
    /// timeout later, while it is still on the ring. The first request may be lost: the
    /// connection it went on can lose the race with the one the other side dialled, or be
    /// fenced by a node that is just waking from a stop (`shards::cluster`). Registering
    /// twice is harmless: a UserChannel replaces a session's entry with itself.
    async fn ask_to_reregister(self: Rc<Self>, node: u32) {
        let msg = || CoreMsg::Reregister { owner: self.local_node(), core: 0 };
        self.send_to_core(node, 0, msg()).await;
        glommio::timer::sleep(Duration::from_millis(self.cfg.cluster.suspicion_timeout_ms)).await;
        if self.ring.borrow().node_shares().contains_key(&node) {
            self.send_to_core(node, 0, msg()).await;
        }
    }

    /// This node was stopped long enough for every peer to declare it down: each session
    /// here whose user another node holds registers with that owner again. The owners
    /// ask for it too (`ask_to_reregister`), but their request may be among the frames a
    /// waking node fences; this needs no frame.
    pub fn reregister_everywhere(self: &Rc<Self>) {
        let local = self.local_node();
        self.reregister_sessions(|owner| owner != local);
        self.sweep_stand_in_offline(false);
    }

    /// `CoreMsg::Reregister`: the sessions here whose users `owner` holds register with it
    /// again, as after a ring change that took `owner` down (`SessionMsg::RingChanged`).
    fn reregister_local(self: &Rc<Self>, owner: u32) {
        if self.id == 0 {
            for core in 1..self.mesh.cores() {
                self.dispatch(CoreMsg::Reregister { owner, core: core as u16 });
            }
        }
        self.reregister_sessions(|node| node == owner);
        self.sweep_stand_in_offline(true);
    }

    /// While every peer had this node down, they stood in for its users and stored offline
    /// what came for them; this node, frozen, saw no ring change, so its UserChannels would
    /// not look (`UserMsg::NodesUp`) on their own. They look when it resumes, and again when
    /// a peer that saw it come back asks its sessions to register again
    /// (`CoreMsg::Reregister`), by which time that peer has stopped standing in: `asked`.
    /// Asked sweeps come at most once per half suspicion timeout, since the asks of every
    /// such peer arrive together and each sweep reads storage for every user online here.
    fn sweep_stand_in_offline(&self, asked: bool) {
        if asked {
            let min_gap = Duration::from_millis(self.cfg.cluster.suspicion_timeout_ms / 2);
            if self.stand_in_swept_at.get().is_some_and(|at| at.elapsed() < min_gap) {
                return;
            }
            self.stand_in_swept_at.set(Some(Instant::now()));
        }
        for (_, tx) in self.users.borrow().iter() {
            tx.force_send(UserMsg::NodesUp);
        }
    }

    /// Each session on this core whose user's owner node `forgot` it registers with that
    /// owner again, as after a ring change that took the owner down (`SessionMsg::RingChanged`).
    fn reregister_sessions(&self, forgot: impl Fn(u32) -> bool) {
        let mut count = 0;
        // One list per owner, shared by its sessions, not one allocated per session.
        let mut forgotten: HashMap<u32, Arc<[u32]>> = HashMap::new();
        for (_, slot) in self.sessions.borrow().iter() {
            let owner = self.owner_of(&slot.user).node;
            if forgot(owner) {
                let nodes = forgotten.entry(owner).or_insert_with(|| Arc::from([owner])).clone();
                slot.mailbox.force_send(SessionMsg::RingChanged(nodes));
                count += 1;
            }
        }
        if count > 0 {
            self.counters.sessions_reregistered.add(count);
            log::info!("core {}: {count} sessions register again with owners that had this node down", self.id);
        }
    }

    fn user_local(self: &Rc<Self>, user: Arc<str>, msg: UserMsg) {
        // Callers checked the rule; a message here for a user this core does not own would
        // be a routing bug.
        debug_assert_eq!(self.owner_of(&user).core, self.id, "{user} routed to a core that does not own it");
        let tx = self.user_channel(&user);
        match msg {
            // Past the mailbox bound, each for a reason that bounds it elsewhere:
            // - what the user's own sessions ask of it (presence, subscriptions, roster,
            //   carbons, PEP interest) has no sender to be told "try later"; it comes as a
            //   `Request` on one of the session's credits (`super::credit`), at most
            //   `session_inflight_requests_max` per session, which then stops reading;
            // - lifecycle messages, one per session event (dropping one would leave a ghost
            //   resource), and the XEP-0198 hand-overs;
            // - what sessions give back (at most their unacked limit) and the errors the
            //   server answers with (one per refused stanza): refusing those would lose
            //   what was accepted.
            UserMsg::Request { .. }
            | UserMsg::Bind { .. }
            | UserMsg::Unbind { .. }
            | UserMsg::Resumable { .. }
            | UserMsg::Resume { .. }
            | UserMsg::Dormant { .. }
            | UserMsg::Undelivered(_)
            | UserMsg::ErrorReply(_)
            | UserMsg::RingSettled => tx.force_send(msg),
            other => {
                if let Err(SendError::Full(msg) | SendError::Closed(msg)) = tx.try_send(other) {
                    self.counters.user_mailbox_full_drops.inc();
                    user_channel::overloaded(self.clone(), msg);
                }
            }
        }
    }

    fn user_channel(self: &Rc<Self>, user: &Arc<str>) -> mailbox::Sender<UserMsg> {
        if let Some(tx) = self.users.borrow().get(user) {
            return tx.clone();
        }
        let (tx, rx) = mailbox::mailbox(self.cfg.limits.user_mailbox_messages_max);
        self.users.borrow_mut().insert(user.clone(), tx.clone());
        self.counters.user_channels.add(1);
        let actor = user_channel::run(self.clone(), user.clone(), rx);
        self.counters.user_task_bytes.set(std::mem::size_of_val(&actor) as i64);
        glommio::spawn_local(actor).detach();
        tx
    }

    /// Called by a UserChannel that has nothing left to do: no sessions, empty mailbox.
    /// Synchronous with the emptiness check, so no message can slip in between.
    pub fn retire_user_channel(&self, user: &str) {
        self.users.borrow_mut().remove(user);
        self.counters.user_channels.add(-1);
    }

    fn session_local(self: &Rc<Self>, to: SessionAddr, msg: SessionMsg) {
        let sessions = self.sessions.borrow();
        let Some(slot) = sessions.get(to.slot as usize).filter(|s| s.generation == to.generation) else {
            // The session ended while the message travelled: what its client never saw goes
            // back to the user, behind the session's `Unbind`, for its other resources or
            // offline storage. So does a hand-over (XEP-0198) for a resuming stream that gave up.
            drop(sessions);
            return self.give_back(None, msg);
        };
        if let SessionMsg::Deliver(_) | SessionMsg::FromRoom(_) = msg {
            self.counters.routed_stanzas.inc();
        }
        match slot.mailbox.try_send(msg) {
            Ok(()) => {}
            Err(SendError::Full(msg)) => {
                // A client that does not read: its queue is full. Tell the session to go
                // (it is woken by the close) rather than let its queue grow without bound.
                let stalled = self.stalled(slot, to);
                drop(sessions);
                self.give_back(stalled, msg);
            }
            // The session is ending (stalled, or finishing): it reads no more mail.
            Err(SendError::Closed(msg)) => {
                drop(sessions);
                self.give_back(None, msg);
            }
        }
    }

    /// A session's mailbox overflowed: it is closed, and its user's UserChannel must stop
    /// routing to it now, not when the session gets to unbind itself (after a write that
    /// may stall for `send_stall_secs`); else what is given back would come straight back.
    fn stalled(&self, slot: &SessionSlot, to: SessionAddr) -> Option<(Arc<str>, SessionAddr)> {
        self.counters.session_mailbox_full_drops.inc();
        slot.mailbox.close();
        Some((slot.user.clone(), to))
    }

    /// What a session will not take goes back to its user to be routed again (RFC 6121
    /// §8.5: other resources, else offline storage, else an error to the sender); nothing
    /// accepted is dropped. The rest (presence, state updates) has no one to answer.
    fn give_back(self: &Rc<Self>, unbind: Option<(Arc<str>, SessionAddr)>, msg: SessionMsg) {
        let stanzas = match msg {
            SessionMsg::Deliver(xml) | SessionMsg::FromRoom(xml) => vec![xml],
            SessionMsg::DeliverBacklog(backlog) => backlog,
            SessionMsg::Resumed(handover) => handover.unacked,
            _ => Vec::new(),
        };
        self.reroute(unbind, stanzas);
    }

    /// A held message for a session here: queued and confirmed, or confirmed and dropped
    /// when this session had it already (a copy sent again after a failure). When the
    /// session is gone or not reading, it goes back to its user as undelivered, receipt
    /// and all, and the owner's handling confirms it.
    fn held_delivery_local(self: &Rc<Self>, to: SessionAddr, xml: Arc<str>, receipt: Receipt, from_room: bool, earlier: Option<Receipt>) {
        let sessions = self.sessions.borrow();
        let Some(slot) = sessions.get(to.slot as usize).filter(|s| s.generation == to.generation) else {
            drop(sessions);
            return self.reroute_held(None, xml, receipt);
        };
        if self.custody.delivered(receipt, to) || earlier.is_some_and(|e| self.custody.delivered(e, to)) {
            self.copy_dropped(to);
            return self.confirm(receipt);
        }
        self.counters.routed_stanzas.inc();
        match slot.mailbox.try_send(SessionMsg::copy(xml.clone(), from_room)) {
            Ok(()) => {
                self.custody.remember_delivered(receipt, to);
                if let Some(e) = earlier {
                    self.custody.remember_delivered(e, to);
                }
                self.confirm(receipt);
            }
            Err(e) => {
                let stalled = matches!(e, SendError::Full(_)).then(|| self.stalled(slot, to)).flatten();
                drop(sessions);
                self.reroute_held(stalled, xml, receipt);
            }
        }
    }

    /// Messages read back from offline storage for a session here: those it had already
    /// under the receipt they were stored with are dropped; the rest are remembered under
    /// it (the first copy may still be on its way) and queued as one backlog.
    fn stored_backlog_local(self: &Rc<Self>, to: SessionAddr, rows: Vec<(Option<Receipt>, Arc<str>)>) {
        let mut backlog = Vec::with_capacity(rows.len());
        for (receipt, xml) in rows {
            match receipt {
                Some(r) if self.custody.delivered(r, to) => self.copy_dropped(to),
                Some(r) => {
                    self.custody.remember_delivered(r, to);
                    backlog.push(xml);
                }
                None => backlog.push(xml),
            }
        }
        if !backlog.is_empty() {
            self.session_local(to, SessionMsg::DeliverBacklog(backlog));
        }
    }

    /// Rare (a node failed or a cut healed while the message was in flight), so each one
    /// is worth a line.
    fn copy_dropped(&self, to: SessionAddr) {
        self.counters.custody_copies_dropped.inc();
        log::info!("core {}: a copy of a message session {}/{} already has was dropped (sent again after a ring change)", self.id, to.slot, to.generation);
    }

    fn reroute_held(self: &Rc<Self>, unbind: Option<(Arc<str>, SessionAddr)>, xml: Arc<str>, receipt: Receipt) {
        let Some(mut stanza) = Stanza::reroutable(xml) else {
            self.reroute(unbind, Vec::new());
            return self.confirm(receipt);
        };
        stanza.receipt = Some(receipt);
        let this = self.clone();
        glommio::spawn_local(async move {
            if let Some((user, session)) = unbind {
                this.send_to_user(user, UserMsg::Unbind { session }).await;
            }
            this.counters.undelivered_rerouted.inc();
            let user: Arc<str> = stanza.to.to_bare().to_string().into();
            this.send_to_user(user, UserMsg::Undelivered(stanza)).await;
        })
        .detach();
    }

    /// Holds a message for `node`, waiting while this core holds as many as it may.
    async fn hold(&self, node: u32, held: Held) -> Receipt {
        while self.custody.is_full() {
            glommio::timer::sleep(NODE_SEND_RETRY).await;
        }
        self.counters.custody_held.add(1);
        self.custody.hold(node, held, Instant::now())
    }

    /// The end of a held message's path has it: tell its holder (batched per holder).
    pub fn confirm(self: &Rc<Self>, receipt: Receipt) {
        if receipt.node == self.local_node() && receipt.core as usize == self.id {
            let released = self.custody.release(&[receipt.id]);
            self.counters.custody_held.add(-(released as i64));
            return;
        }
        if !self.custody.queue_confirmation(receipt) {
            return; // a flush is already due
        }
        let this = self.clone();
        glommio::spawn_local(async move {
            glommio::timer::sleep(CONFIRM_BATCH_DELAY).await;
            for ((node, core), ids) in this.custody.take_confirmations() {
                this.send_to_core(node, core as usize, CoreMsg::Confirm { core, ids }).await;
            }
        })
        .detach();
    }

    /// Sends a held message again: to its user's owner now, or, when it was for a session
    /// whose node went down, back to its user as undelivered (that session is gone).
    async fn send_again(self: &Rc<Self>, retry: Retry, nodes_down: &[u32]) {
        self.counters.custody_resends.inc();
        match retry.held.clone() {
            Held::User(user, mut stanza) => {
                stanza.receipt = Some(retry.receipt);
                self.custody.hold_again(retry, self.owner_of(&user).node, Instant::now());
                self.send_to_user(user, UserMsg::Inbound(stanza)).await;
            }
            Held::Session { to, xml, .. } if nodes_down.contains(&to.node) => {
                self.counters.custody_held.add(-1);
                if let Some(stanza) = Stanza::reroutable(xml) {
                    self.send_to_user(stanza.to.to_bare().to_string().into(), UserMsg::Undelivered(stanza)).await;
                }
            }
            Held::Session { to, xml, from_room, earlier } => {
                let receipt = retry.receipt;
                self.custody.hold_again(retry, to.node, Instant::now());
                let msg = CoreMsg::HeldDelivery { to, xml, receipt, from_room, earlier };
                self.send_to_core(to.node, to.core as usize, msg).await;
            }
        }
    }

    /// Sends again what no one confirmed in time, and gives up what ran out of attempts;
    /// runs for the life of a clustered core.
    pub async fn custody_ticks(self: Rc<Self>) {
        let every = Duration::from_millis(self.cfg.cluster.confirm_timeout_ms / 4).max(NODE_SEND_RETRY);
        loop {
            glommio::timer::sleep(every).await;
            let (again, given_up) = self.custody.overdue(Instant::now());
            if given_up > 0 {
                self.counters.custody_held.add(-(given_up as i64));
                self.counters.custody_given_up.add(given_up as u64);
                log::warn!("core {}: {given_up} messages to other nodes never confirmed; given up", self.id);
            }
            for retry in again {
                self.send_again(retry, &[]).await;
            }
        }
    }

    /// Sends messages no session could hand over back to their users, as undelivered;
    /// first, for a session that stalled, its `Unbind`, so they are not routed to it again.
    fn reroute(self: &Rc<Self>, unbind: Option<(Arc<str>, SessionAddr)>, stanzas: Vec<Arc<str>>) {
        if unbind.is_none() && stanzas.is_empty() {
            return;
        }
        let this = self.clone();
        glommio::spawn_local(async move {
            if let Some((user, session)) = unbind {
                this.send_to_user(user, UserMsg::Unbind { session }).await;
            }
            for stanza in stanzas.into_iter().filter_map(crate::stanza::Stanza::reroutable) {
                this.counters.undelivered_rerouted.inc();
                let user: Arc<str> = stanza.to.to_bare().to_string().into();
                this.send_to_user(user, UserMsg::Undelivered(stanza)).await;
            }
        })
        .detach();
    }

    /// Gives a new session its address and mailbox on this core.
    pub fn register_session(&self, user: Arc<str>) -> (SessionAddr, mailbox::Receiver<SessionMsg>) {
        let (tx, rx) = mailbox::mailbox(self.cfg.limits.session_mailbox_stanzas_max);
        let generation = self.next_generation.get().wrapping_add(1);
        self.next_generation.set(generation);
        let slot = self.sessions.borrow_mut().insert(SessionSlot { generation, mailbox: tx, user });
        self.counters.sessions.add(1);
        (SessionAddr { node: self.local_node(), core: self.id as u16, slot: slot as u32, generation }, rx)
    }

    /// The cluster's membership changed: adopt the new ring, let UserChannels this core no
    /// longer owns go (they pass on what they hold), tell every session so those whose user
    /// moved register with the new owner, and tell every UserChannel which nodes are gone.
    /// `nodes_up`: nodes that joined or came back, as when a partition heals. What either
    /// side stored offline meanwhile for users who stayed online is handed to their
    /// sessions, and each such node hears (from core 0, once) that this node may have
    /// dropped its sessions: they register again (`CoreMsg::Reregister`). That node may
    /// never have seen this one down (it froze, or its side of the cut saw less), so it
    /// would not know to on its own.
    pub fn ring_changed(self: &Rc<Self>, ring: TwoLevelRing, nodes_down: &[u32], nodes_up: &[u32]) {
        *self.ring.borrow_mut() = ring;
        self.ring_changed_at.set(Some(Instant::now()));
        for (user, tx) in self.users.borrow().iter() {
            let owner = self.owner_of(user);
            if owner.node != self.local_node() || owner.core != self.id {
                tx.force_send(UserMsg::Disown);
            } else {
                for &node in nodes_down {
                    tx.force_send(UserMsg::NodeDown(node));
                }
                if !nodes_up.is_empty() {
                    tx.force_send(UserMsg::NodesUp);
                }
            }
        }
        for (room, tx) in self.rooms.borrow().iter() {
            let owner = self.owner_of(room);
            if owner.node != self.local_node() || owner.core != self.id {
                tx.force_send(RoomMsg::Disown);
            }
        }
        if self.id == 0 {
            for &node in nodes_up {
                let this = self.clone();
                glommio::spawn_local(async move { this.ask_to_reregister(node).await }).detach();
            }
        }
        let nodes_down: Arc<[u32]> = nodes_down.into();
        for (_, slot) in self.sessions.borrow().iter() {
            slot.mailbox.force_send(SessionMsg::RingChanged(nodes_down.clone()));
        }
        // After the NodeDown above: a message coming back as undelivered finds its user's
        // actor without the sessions that went down.
        let retries = self.custody.held_for(&nodes_down);
        if !retries.is_empty() {
            log::info!("core {}: {} held messages sent again after nodes {nodes_down:?} went down", self.id, retries.len());
            let this = self.clone();
            glommio::spawn_local(async move {
                for retry in retries {
                    this.send_again(retry, &nodes_down).await;
                }
            })
            .detach();
        }
    }

    /// Tells every session on this core to close with `<system-shutdown/>`.
    pub fn shut_down_sessions(&self) {
        self.stopping.set(true);
        for (_, slot) in self.sessions.borrow().iter() {
            slot.mailbox.force_send(SessionMsg::Shutdown);
        }
    }

    pub fn session_count(&self) -> usize {
        self.sessions.borrow().len()
    }

    pub fn unregister_session(&self, addr: SessionAddr) {
        let mut sessions = self.sessions.borrow_mut();
        if sessions.get(addr.slot as usize).is_some_and(|s| s.generation == addr.generation) {
            sessions.remove(addr.slot as usize);
            self.counters.sessions.add(-1);
        }
    }
}

/// The receipt a held message carries (`custody`), if it is one.
fn receipt_of(msg: &CoreMsg) -> Option<Receipt> {
    match msg {
        CoreMsg::ToUser { msg: UserMsg::Inbound(s), .. } => s.receipt,
        CoreMsg::HeldDelivery { receipt, .. } => Some(*receipt),
        _ => None,
    }
}
