//! Credit for what a session asks of its user's actor (UserChannel): presence, roster and
//! blocking requests, subscriptions, carbons and PEP interest. Those need no answer before
//! the session reads on, so a client pipelining them could queue them on the actor without
//! bound. Each is sent as a [`UserMsg::Request`] that uses one credit; the actor gives it
//! back ([`SessionMsg::Credit`]) once handled, and a session out of credit stops reading
//! its socket until some comes back: TCP slows the client down, not the server's memory.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use super::{CoreState, SessionAddr, UserMsg};

/// A session's requests in flight to its user's actor.
pub struct Credit {
    addr: SessionAddr,
    inflight: Cell<u32>,
}

impl Credit {
    pub fn new(addr: SessionAddr) -> Credit {
        Credit { addr, inflight: Cell::new(0) }
    }

    /// At `max` in flight: the session reads no more until credit comes back.
    pub fn exhausted(&self, max: usize) -> bool {
        self.inflight.get() as usize >= max
    }

    pub fn returned(&self) {
        self.inflight.set(self.inflight.get().saturating_sub(1));
    }

    /// The user's actor moved or its node failed: what was in flight there is handled by
    /// the new owner or lost with the old, and no credit for it may come back.
    pub fn forgive(&self) {
        self.inflight.set(0);
    }
}

impl CoreState {
    /// Sends `msg` to `user`'s actor as a request of the session holding `credit`.
    pub async fn request_user(self: &Rc<Self>, user: Arc<str>, credit: &Credit, msg: UserMsg) {
        credit.inflight.set(credit.inflight.get() + 1);
        self.send_to_user(user, UserMsg::Request { from: credit.addr, msg: Box::new(msg) }).await;
    }
}
