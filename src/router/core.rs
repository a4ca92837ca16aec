//! A core's routing state: its sessions, the UserChannels it owns, and the two hops that
//! leave it (to a user's owner core, to a session's core). Seastar's rule: the local case is
//! handled directly; only a different core goes through the mesh.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use shards::mailbox::{self, SendError};
use shards::mesh::Mesh;
use shards::ring::TwoLevelRing;
use slab::Slab;

use super::envelope::{CoreMsg, SessionAddr, SessionMsg, UserMsg};
use super::user_channel;
use crate::c2s::limits::PeerLimits;
use crate::config::Config;
use crate::metrics::CoreCounters;
use crate::storage::Storage;

/// A session as its core's table knows it.
struct SessionSlot {
    generation: u32,
    mailbox: mailbox::Sender<SessionMsg>,
}

pub struct CoreState {
    pub id: usize,
    pub cfg: Arc<Config>,
    pub ring: TwoLevelRing,
    pub storage: Storage,
    pub tls: futures_rustls::TlsAcceptor,
    pub counters: Arc<CoreCounters>,
    pub peers: PeerLimits,
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
        storage: Storage,
        tls: futures_rustls::TlsAcceptor,
        counters: Arc<CoreCounters>,
    ) -> Rc<CoreState> {
        Rc::new(CoreState {
            id: mesh.core_id(),
            peers: PeerLimits::new(&cfg.limits),
            cfg,
            ring,
            storage,
            tls,
            counters,
            mesh,
            sessions: RefCell::new(Slab::new()),
            next_generation: Cell::new(0),
            users: RefCell::new(HashMap::new()),
        })
    }

    /// Routes a message to `user`'s UserChannel: locally when this core owns the user,
    /// else across the mesh (waiting if that core's channel is full: backpressure).
    pub async fn send_to_user(self: &Rc<Self>, user: Arc<str>, msg: UserMsg) {
        let owner = self.ring.owner(&user);
        if self.mesh.is_local(owner.core) {
            self.user_local(user, msg);
        } else {
            self.counters.cross_core_messages.inc();
            let _ = self.mesh.send(owner.core, CoreMsg::ToUser { user, msg }).await;
        }
    }

    /// Routes a message to a session, wherever it lives.
    pub async fn send_to_session(self: &Rc<Self>, to: SessionAddr, msg: SessionMsg) {
        if self.mesh.is_local(to.core as usize) {
            self.session_local(to, msg);
        } else {
            self.counters.cross_core_messages.inc();
            let _ = self.mesh.send(to.core as usize, CoreMsg::ToSession { to, msg }).await;
        }
    }

    /// What arrives from another core.
    pub fn dispatch(self: &Rc<Self>, msg: CoreMsg) {
        match msg {
            CoreMsg::ToUser { user, msg } => self.user_local(user, msg),
            CoreMsg::ToSession { to, msg } => self.session_local(to, msg),
        }
    }

    fn user_local(self: &Rc<Self>, user: Arc<str>, msg: UserMsg) {
        // The owner checks the rule the sender applied (glommio's sharding example does
        // the same): a message here for a user this core does not own is a routing bug.
        assert_eq!(self.ring.local_core(&user), self.id, "{user} routed to a core that does not own it");
        let tx = self.user_channel(&user);
        match msg {
            // Lifecycle messages are bounded by the user's session count, not by traffic;
            // dropping one would leave a ghost resource, so they bypass the mailbox bound.
            UserMsg::Bind { .. } | UserMsg::Unbind { .. } => tx.force_send(msg),
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

    fn session_local(&self, to: SessionAddr, msg: SessionMsg) {
        let sessions = self.sessions.borrow();
        let Some(slot) = sessions.get(to.slot as usize).filter(|s| s.generation == to.generation) else {
            return; // the session ended while the message travelled
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

    /// Gives a new session its address and mailbox on this core.
    pub fn register_session(&self) -> (SessionAddr, mailbox::Receiver<SessionMsg>) {
        let (tx, rx) = mailbox::mailbox(self.cfg.limits.session_mailbox_stanzas_max);
        let generation = self.next_generation.get().wrapping_add(1);
        self.next_generation.set(generation);
        let slot = self.sessions.borrow_mut().insert(SessionSlot { generation, mailbox: tx });
        self.counters.sessions.add(1);
        (SessionAddr { core: self.id as u16, slot: slot as u32, generation }, rx)
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
