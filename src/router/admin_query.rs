//! Questions the admin socket (`crate::admin`, on core 0) asks an actor that may live on any
//! core of any node, and their answers' way back: the question carries a ticket naming the
//! asking node; the actor answers with [`CoreMsg::AdminAnswer`] to that node's core 0,
//! which hands it to the waiting request. An answer that comes after the wait ended (the
//! actor's node was slow or its frame was lost) finds no ticket and is dropped.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[cfg(doc)]
use super::envelope::CoreMsg;

/// Where an answer goes: the asking node (its core 0) and the question's number there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminTicket {
    pub node: u32,
    pub id: u64,
}

/// What an actor answers: whether it did (or has) what was asked, and text for the operator.
#[derive(Debug, Serialize, Deserialize)]
pub struct AdminAnswer {
    pub ok: bool,
    pub text: String,
}

/// Longest an admin request waits for its answer: past it, the actor's node is taken to be
/// unreachable and the operator is told so.
pub const ADMIN_ANSWER_WAIT: Duration = Duration::from_secs(10);

/// The questions of this core still waiting for their answers.
pub type AdminQueries = Tickets<AdminAnswer>;

/// Questions this core sent to an actor elsewhere, each waiting for its answer (a `T`) by
/// number: the admin socket's, and XEP-0206 requests forwarded to the core that owns their
/// BOSH session (`crate::c2s::bosh`).
pub struct Tickets<T> {
    next_id: Cell<u64>,
    waiting: RefCell<HashMap<u64, flume::Sender<T>>>,
}

impl<T> Default for Tickets<T> {
    fn default() -> Self {
        Tickets { next_id: Cell::new(0), waiting: RefCell::default() }
    }
}

impl AdminQueries {
    /// A ticket for a new question from `node`, and where its answer will arrive.
    pub fn open_admin(&self, node: u32) -> (AdminTicket, flume::Receiver<AdminAnswer>) {
        let (id, rx) = self.open();
        (AdminTicket { node, id }, rx)
    }
}

impl<T> Tickets<T> {
    /// A number for a new question, and where its answer will arrive.
    pub fn open(&self) -> (u64, flume::Receiver<T>) {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = flume::bounded(1);
        self.waiting.borrow_mut().insert(id, tx);
        (id, rx)
    }

    /// The question `id` no longer waits (answered, or given up).
    pub fn close(&self, id: u64) {
        self.waiting.borrow_mut().remove(&id);
    }

    /// An answer arrived: to its question, if that still waits.
    pub fn answer(&self, id: u64, answer: T) {
        if let Some(tx) = self.waiting.borrow_mut().remove(&id) {
            let _ = tx.try_send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_reaches_its_question_once_and_a_late_one_is_dropped() {
        let q = AdminQueries::default();
        let (a, rx_a) = q.open_admin(7);
        let (b, rx_b) = q.open_admin(7);
        assert_ne!(a.id, b.id);
        q.answer(b.id, AdminAnswer { ok: true, text: "b".into() });
        assert_eq!(rx_b.try_recv().map(|x| x.text).ok().as_deref(), Some("b"));
        assert!(rx_a.try_recv().is_err(), "a's answer has not come");
        q.close(a.id);
        q.answer(a.id, AdminAnswer { ok: true, text: "late".into() });
        assert!(rx_a.try_recv().is_err(), "a gave up: its late answer goes nowhere");
    }
}
