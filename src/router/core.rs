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

use super::envelope::{CoreMsg, SessionAddr, SessionMsg, UserMsg};
use super::node_link::{self, NodeLink};
use super::user_channel;
use crate::c2s::limits::PeerLimits;
use crate::config::Config;
use crate::metrics::CoreCounters;
use crate::modules::mam::ArchiveIds;
use crate::storage::Storage;

/// A session as its core's table knows it.
struct SessionSlot {
    generation: u32,
    mailbox: mailbox::Sender<SessionMsg>,
}

/// Pause between attempts to hand a frame to another node that is unreachable or busy.
const NODE_SEND_RETRY: Duration = Duration::from_millis(20);

pub struct CoreState {
    pub id: usize,
    pub cfg: Arc<Config>,
    /// Replaced when the cluster's membership changes; read, never held across an await.
    ring: RefCell<TwoLevelRing>,
    link: Option<Box<dyn NodeLink>>,
    pub storage: Storage,
    pub tls: futures_rustls::TlsAcceptor,
    pub counters: Arc<CoreCounters>,
    pub peers: PeerLimits,
    /// XEP-0313 ids for the messages this core's UserChannels archive.
    pub archive_ids: ArchiveIds,
    /// XEP-0115: the server's `<c/>` stream feature, hashed once from its features.
    pub caps: minidom::Element,
    /// XEP-0115: what the caps hashes of clients seen on this core stand for.
    pub client_caps: crate::modules::entity_caps::Cache,
    /// XEP-0357: the pace of pushes for the users this core owns.
    pub push_limiter: crate::modules::push::RateLimiter,
    mesh: Mesh<CoreMsg>,
    sessions: RefCell<Slab<SessionSlot>>,
    next_generation: Cell<u32>,
    /// UserChannels owned by this core, by bare JID.
    users: RefCell<HashMap<Arc<str>, mailbox::Sender<UserMsg>>>,
}

impl CoreState {
    pub fn new(
        cfg: Arc<Config>,
        mesh: Mesh<CoreMsg>,
        ring: TwoLevelRing,
        link: Option<Box<dyn NodeLink>>,
        storage: Storage,
        tls: futures_rustls::TlsAcceptor,
        counters: Arc<CoreCounters>,
    ) -> Rc<CoreState> {
        Rc::new(CoreState {
            id: mesh.core_id(),
            peers: PeerLimits::new(&cfg.limits),
            archive_ids: ArchiveIds::new(mesh.core_id()),
            caps: crate::modules::caps::stream_feature(&cfg),
            client_caps: Default::default(),
            push_limiter: Default::default(),
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
        })
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
        let owner = self.owner_of(&user);
        if owner.node != self.local_node() {
            self.send_to_node(owner.node, CoreMsg::ToUser { user, msg }).await;
        } else if self.mesh.is_local(owner.core) {
            self.user_local(user, msg);
        } else {
            self.counters.cross_core_messages.inc();
            let _ = self.mesh.send(owner.core, CoreMsg::ToUser { user, msg }).await;
        }
    }

    /// Routes a message to a session, wherever it lives.
    pub async fn send_to_session(self: &Rc<Self>, to: SessionAddr, msg: SessionMsg) {
        if to.node != self.local_node() {
            self.send_to_node(to.node, CoreMsg::ToSession { to, msg }).await;
        } else if self.mesh.is_local(to.core as usize) {
            self.session_local(to, msg);
        } else {
            self.counters.cross_core_messages.inc();
            let _ = self.mesh.send(to.core as usize, CoreMsg::ToSession { to, msg }).await;
        }
    }

    /// The hop to another node. While that node is unreachable or busy the sender waits
    /// and retries (backpressure), re-reading the ring: when the node has failed, the ring
    /// soon names another owner, and a message for a user goes there instead. A session's
    /// address does not move, so a message for a session on a node that stays unreachable
    /// is dropped after the deadline; that node's sessions are gone with it.
    async fn send_to_node(self: &Rc<Self>, mut node: u32, msg: CoreMsg) {
        let Some(link) = &self.link else {
            log::error!("core {}: message for node {node} on a single node dropped", self.id);
            return;
        };
        let user = match &msg {
            CoreMsg::ToUser { user, .. } => Some(user.clone()),
            CoreMsg::ToSession { .. } => None,
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
                    if Instant::now() >= deadline {
                        self.counters.cross_node_drops.inc();
                        log::warn!("core {}: node {node} {why:?} for {timeout:?}; message dropped", self.id);
                        return;
                    }
                }
            }
            glommio::timer::sleep(NODE_SEND_RETRY).await;
            if let Some(user) = &user {
                let owner = self.owner_of(user);
                if owner.node == self.local_node() {
                    // The ring moved the user here meanwhile.
                    if let Ok(msg) = node_link::decode(&frame) {
                        self.dispatch(msg);
                    }
                    return;
                }
                node = owner.node;
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
        match msg {
            CoreMsg::ToUser { user, msg } => {
                let owner = self.owner_of(&user);
                if owner.node == self.local_node() && owner.core == self.id {
                    self.user_local(user, msg);
                } else {
                    let this = self.clone();
                    glommio::spawn_local(async move { this.send_to_user(user, msg).await }).detach();
                }
            }
            CoreMsg::ToSession { to, msg } => {
                if to.node == self.local_node() && to.core as usize == self.id {
                    self.session_local(to, msg);
                } else {
                    let this = self.clone();
                    glommio::spawn_local(async move { this.send_to_session(to, msg).await }).detach();
                }
            }
        }
    }

    fn user_local(self: &Rc<Self>, user: Arc<str>, msg: UserMsg) {
        // Callers checked the rule; a message here for a user this core does not own would
        // be a routing bug.
        debug_assert_eq!(self.owner_of(&user).core, self.id, "{user} routed to a core that does not own it");
        let tx = self.user_channel(&user);
        match msg {
            // Lifecycle messages are bounded by the user's session count, not by traffic;
            // dropping one would leave a ghost resource, so they bypass the mailbox bound.
            // So are the XEP-0198 hand-overs, and the undelivered messages a session returns
            // (at most its unacked limit): refusing those would lose what was accepted.
            // What the user's own sessions ask of it (presence, subscriptions, roster) has
            // no sender to be told "try later" and would be lost without a word; it is paced
            // by those sessions' own reads, one stanza at a time, so only the user's own
            // traffic can take their actor past the bound.
            UserMsg::Bind { .. }
            | UserMsg::Unbind { .. }
            | UserMsg::Resumable { .. }
            | UserMsg::Resume { .. }
            | UserMsg::Undelivered(_)
            | UserMsg::ErrorReply(_)
            | UserMsg::OwnPresence { .. }
            | UserMsg::Carbons { .. }
            | UserMsg::PepInterest { .. }
            | UserMsg::Dormant { .. }
            | UserMsg::OutboundSubscription(_)
            | UserMsg::AccountIq { .. } => tx.force_send(msg),
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
        glommio::spawn_local(user_channel::run(self.clone(), user.clone(), rx)).detach();
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
            // The session ended while the message travelled. A hand-over (XEP-0198) for a
            // resuming stream that gave up carries what its client never saw: route that again.
            if let SessionMsg::Resumed(handover) = msg {
                self.reroute(handover.unacked);
            }
            return;
        };
        if let SessionMsg::Deliver(_) = msg {
            self.counters.routed_stanzas.inc();
        }
        if slot.mailbox.try_send(msg).is_err() {
            // A client that does not read: its queue is full. Tell the session to go
            // (it is woken by the close) rather than let its queue grow without bound.
            self.counters.session_mailbox_full_drops.inc();
            slot.mailbox.close();
        }
    }

    /// Sends messages no session could hand over back to their users, as undelivered.
    fn reroute(self: &Rc<Self>, stanzas: Vec<Arc<str>>) {
        let this = self.clone();
        glommio::spawn_local(async move {
            for stanza in stanzas.into_iter().filter_map(crate::stanza::Stanza::reroutable) {
                let user: Arc<str> = stanza.to.to_bare().to_string().into();
                this.send_to_user(user, UserMsg::Undelivered(stanza)).await;
            }
        })
        .detach();
    }

    /// Gives a new session its address and mailbox on this core.
    pub fn register_session(&self) -> (SessionAddr, mailbox::Receiver<SessionMsg>) {
        let (tx, rx) = mailbox::mailbox(self.cfg.limits.session_mailbox_stanzas_max);
        let generation = self.next_generation.get().wrapping_add(1);
        self.next_generation.set(generation);
        let slot = self.sessions.borrow_mut().insert(SessionSlot { generation, mailbox: tx });
        self.counters.sessions.add(1);
        (SessionAddr { node: self.local_node(), core: self.id as u16, slot: slot as u32, generation }, rx)
    }

    /// The cluster's membership changed: adopt the new ring, let UserChannels this core no
    /// longer owns go (they pass on what they hold), tell every session so those whose user
    /// moved register with the new owner, and tell every UserChannel which nodes are gone.
    pub fn ring_changed(&self, ring: TwoLevelRing, nodes_down: &[u32]) {
        *self.ring.borrow_mut() = ring;
        for (user, tx) in self.users.borrow().iter() {
            let owner = self.owner_of(user);
            if owner.node != self.local_node() || owner.core != self.id {
                tx.force_send(UserMsg::Disown);
            } else {
                for &node in nodes_down {
                    tx.force_send(UserMsg::NodeDown(node));
                }
            }
        }
        let nodes_down: Arc<[u32]> = nodes_down.into();
        for (_, slot) in self.sessions.borrow().iter() {
            slot.mailbox.force_send(SessionMsg::RingChanged(nodes_down.clone()));
        }
    }

    /// Tells every session on this core to close with `<system-shutdown/>`.
    pub fn shut_down_sessions(&self) {
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
