//! Custody of the messages that cross nodes, so that a node failing on the path between a
//! sender and a recipient that both survive loses none of them (issue 4), and a resent one
//! reaches the client once.
//!
//! A message stanza that leaves its node is *held* by the core that sent it until the core
//! at the end of its path confirms: the core of the recipient's session once that session
//! has it in its queue, or the owner's UserChannel once it stored, refused or dropped it.
//! The [`Receipt`] travels inside the stanza, and a UserChannel that hands the message to
//! sessions passes the receipt on, so a confirmation never comes from the middle of the
//! path: the owner can die with the message in its mailbox or in its mesh queue.
//!
//! ```text
//!  A: sender's core          B: owner's UserChannel       C: recipient session's core
//!  hold(r) ──ToUser(m, r)──▶ deliver ──Deliver(m, r)────▶ first sight of r? queue m
//!     ▲                                                        │
//!     └──────────────────────── Confirm(r) ◀───────────────────┘
//! ```
//! - B goes down: A sends what it holds for B to the user's new owner; C drops a copy whose
//!   receipt it has already seen (and confirms again), so the client gets it once.
//! - C goes down: what B holds for C's sessions goes back to the user as undelivered
//!   (another resource, or offline storage).
//! - Nothing confirms within `confirm_timeout_ms` (a mesh connection broke, and what it had
//!   queued is gone): sent again, at most [`SEND_ATTEMPTS_MAX`] times, then counted as lost.
//!
//! A message fanned out to several resources is confirmed by the first that has it; the
//! others are not covered if the owner dies between their copies. The owner archives a
//! resent message again (XEP-0313 sees it twice), as it cannot tell it from a new one.
//!
//! This file is the bookkeeping only, with time passed in; [`super::core`] moves messages.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::envelope::SessionAddr;
use crate::stanza::{Receipt, Stanza};

/// Sends of one held message, the first included, before it is given up.
pub const SEND_ATTEMPTS_MAX: u32 = 3;

/// What is held, in the form it is sent again.
#[derive(Clone, Debug)]
pub enum Held {
    /// For `user`'s UserChannel on another node.
    User(Arc<str>, Stanza),
    /// For a session on another node, from this core's UserChannel, or (`from_room`) a
    /// room's copy from this core's room actor; `earlier`, the receipt a message read back
    /// from offline storage was stored with.
    Session { to: SessionAddr, xml: Arc<str>, from_room: bool, earlier: Option<Receipt> },
}

struct Entry {
    /// The node it was sent to last.
    node: u32,
    due: Instant,
    attempts: u32,
    held: Held,
}

/// One held message taken back, to be sent again or re-routed.
pub struct Retry {
    pub receipt: Receipt,
    pub attempts: u32,
    pub held: Held,
}

pub struct Custody {
    node: u32,
    core: u16,
    held_max: usize,
    seen_max: usize,
    timeout: Duration,
    /// Starts at random, so a restarted core's receipts are not mistaken for its former
    /// self's by the cores that remember those.
    next_id: Cell<u64>,
    /// By id, which grows with time: the oldest first.
    held: RefCell<BTreeMap<u64, Entry>>,
    /// Held messages already queued for a session here, oldest first, bounded. Keyed by
    /// session too: one message to a bare JID reaches each of its resources.
    seen: RefCell<(HashSet<(Receipt, SessionAddr)>, VecDeque<(Receipt, SessionAddr)>)>,
    /// Confirmations to send, per holding node and core.
    outgoing: RefCell<HashMap<(u32, u16), Vec<u64>>>,
}

impl Custody {
    pub fn new(node: u32, core: u16, held_max: usize, seen_max: usize, timeout: Duration) -> Custody {
        Custody {
            node,
            core,
            held_max,
            seen_max,
            timeout,
            next_id: Cell::new(rand::random::<u64>() >> 1),
            held: RefCell::new(BTreeMap::new()),
            seen: RefCell::new((HashSet::new(), VecDeque::new())),
            outgoing: RefCell::new(HashMap::new()),
        }
    }

    /// No room for another held message: the sender waits (backpressure).
    pub fn is_full(&self) -> bool {
        self.held.borrow().len() >= self.held_max
    }

    pub fn held_count(&self) -> usize {
        self.held.borrow().len()
    }

    /// Holds a message about to be sent to `node` for the first time.
    pub fn hold(&self, node: u32, held: Held, now: Instant) -> Receipt {
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        let receipt = Receipt { node: self.node, core: self.core, id };
        self.hold_again(Retry { receipt, attempts: 0, held }, node, now);
        receipt
    }

    /// Holds a message taken back by [`Self::overdue`] or [`Self::held_for`] as it is sent again.
    pub fn hold_again(&self, retry: Retry, node: u32, now: Instant) {
        let entry = Entry { node, due: now + self.timeout, attempts: retry.attempts + 1, held: retry.held };
        self.held.borrow_mut().insert(retry.receipt.id, entry);
    }

    /// The node a held message was last sent to; `None` once confirmed or taken back.
    pub fn held_at(&self, id: u64) -> Option<u32> {
        self.held.borrow().get(&id).map(|e| e.node)
    }

    /// The sender is trying another node for it (the ring moved its user).
    pub fn redirect(&self, id: u64, node: u32) {
        if let Some(e) = self.held.borrow_mut().get_mut(&id) {
            e.node = node;
        }
    }

    /// The end of the path has them; returns how many were still held.
    pub fn release(&self, ids: &[u64]) -> usize {
        let mut held = self.held.borrow_mut();
        ids.iter().filter(|id| held.remove(id).is_some()).count()
    }

    /// Takes back everything last sent to one of `nodes` (they went down).
    pub fn held_for(&self, nodes: &[u32]) -> Vec<Retry> {
        let mut held = self.held.borrow_mut();
        let ids: Vec<u64> = held.iter().filter(|(_, e)| nodes.contains(&e.node)).map(|(&id, _)| id).collect();
        ids.into_iter().map(|id| self.retry(id, held.remove(&id).expect("listed above"))).collect()
    }

    /// Takes back what is past its confirmation time: those to send again, and how many
    /// were given up after their last attempt.
    pub fn overdue(&self, now: Instant) -> (Vec<Retry>, usize) {
        let mut held = self.held.borrow_mut();
        let ids: Vec<u64> = held.iter().filter(|(_, e)| e.due <= now).map(|(&id, _)| id).collect();
        let (mut again, mut given_up) = (Vec::new(), 0);
        for id in ids {
            let entry = held.remove(&id).expect("listed above");
            if entry.attempts >= SEND_ATTEMPTS_MAX {
                given_up += 1;
            } else {
                again.push(self.retry(id, entry));
            }
        }
        (again, given_up)
    }

    fn retry(&self, id: u64, e: Entry) -> Retry {
        Retry { receipt: Receipt { node: self.node, core: self.core, id }, attempts: e.attempts, held: e.held }
    }

    /// Whether the message `receipt` names was queued for session `to` already: a copy.
    pub fn delivered(&self, receipt: Receipt, to: SessionAddr) -> bool {
        self.seen.borrow().0.contains(&(receipt, to))
    }

    /// Remembers that it was, forgetting the oldest beyond the bound. Only once it is
    /// queued: a session that could not take it may be offered it again.
    pub fn remember_delivered(&self, receipt: Receipt, to: SessionAddr) {
        let (set, order) = &mut *self.seen.borrow_mut();
        if set.insert((receipt, to)) {
            order.push_back((receipt, to));
        }
        if order.len() > self.seen_max {
            let oldest = order.pop_front().expect("not empty");
            set.remove(&oldest);
        }
    }

    /// Queues a confirmation for its holder; true when it is the first of a new batch
    /// (the caller schedules the flush).
    pub fn queue_confirmation(&self, receipt: Receipt) -> bool {
        let mut out = self.outgoing.borrow_mut();
        let first = out.is_empty();
        out.entry((receipt.node, receipt.core)).or_default().push(receipt.id);
        first
    }

    /// The batch to send: per holding node and core, the ids it may release.
    pub fn take_confirmations(&self) -> Vec<((u32, u16), Vec<u64>)> {
        self.outgoing.borrow_mut().drain().collect()
    }
}

#[cfg(test)]
mod tests {
    use jid::Jid;

    use super::*;
    use crate::stanza::{build, Kind};
    use crate::xml::ns;

    fn custody(held_max: usize, seen_max: usize) -> Custody {
        Custody::new(1, 0, held_max, seen_max, Duration::from_secs(10))
    }

    fn for_user(user: &str) -> Held {
        let el = build("message", ns::CLIENT, &[("type", "chat")], vec![]);
        let to = Jid::new(user).unwrap();
        Held::User(user.into(), Stanza::seal(Kind::Message, el, Jid::new("a@localhost/r").unwrap(), to))
    }

    #[test]
    fn a_confirmed_message_is_released_and_the_rest_come_back_for_a_failed_node() {
        let c = custody(8, 8);
        let now = Instant::now();
        let r1 = c.hold(7, for_user("b@localhost"), now);
        let r2 = c.hold(7, for_user("c@localhost"), now);
        let _r3 = c.hold(9, for_user("d@localhost"), now);
        assert_ne!(r1.id, r2.id);
        assert_eq!(c.release(&[r1.id, r1.id]), 1);
        assert_eq!(c.held_at(r2.id), Some(7));
        c.redirect(r2.id, 8);
        assert!(c.held_for(&[7]).is_empty(), "redirected to node 8");
        let back = c.held_for(&[8]);
        assert_eq!(back.iter().map(|r| r.receipt).collect::<Vec<_>>(), vec![r2]);
        assert_eq!(c.held_count(), 1, "only node 9's message is still held");
    }

    #[test]
    fn overdue_messages_are_sent_again_until_the_attempts_run_out() {
        let c = custody(8, 8);
        let start = Instant::now();
        let r = c.hold(7, for_user("b@localhost"), start);
        assert!(c.overdue(start + Duration::from_secs(9)).0.is_empty(), "not due yet");
        let mut at = start;
        for attempt in 1..SEND_ATTEMPTS_MAX {
            at += Duration::from_secs(10);
            let (mut again, given_up) = c.overdue(at);
            assert_eq!((again.len(), given_up), (1, 0), "attempt {attempt}");
            let retry = again.pop().unwrap();
            assert_eq!(retry.receipt, r, "sent again under the same receipt, so copies are recognised");
            c.hold_again(retry, 8, at);
        }
        let (again, given_up) = c.overdue(at + Duration::from_secs(10));
        assert_eq!((again.len(), given_up), (0, 1));
        assert_eq!(c.held_count(), 0);
    }

    #[test]
    fn a_copy_is_recognised_per_session_within_a_bounded_window() {
        let c = custody(8, 2);
        let r = |id| Receipt { node: 3, core: 1, id };
        let (s1, s2) = (SessionAddr { node: 1, core: 0, slot: 1, generation: 1 }, SessionAddr { node: 1, core: 0, slot: 2, generation: 1 });
        assert!(!c.delivered(r(1), s1));
        c.remember_delivered(r(1), s1);
        assert!(c.delivered(r(1), s1));
        assert!(!c.delivered(r(1), s2), "the same message to another resource is no copy");
        c.remember_delivered(r(2), s1);
        c.remember_delivered(r(3), s1);
        assert!(!c.delivered(r(1), s1), "forgotten once two newer ones came");
        assert!(c.delivered(r(3), s1));
    }

    #[test]
    fn confirmations_are_batched_per_holder() {
        let c = custody(8, 8);
        assert!(c.queue_confirmation(Receipt { node: 3, core: 1, id: 10 }));
        assert!(!c.queue_confirmation(Receipt { node: 3, core: 1, id: 11 }));
        assert!(!c.queue_confirmation(Receipt { node: 4, core: 0, id: 12 }));
        let mut batch = c.take_confirmations();
        batch.sort();
        assert_eq!(batch, vec![((3, 1), vec![10, 11]), ((4, 0), vec![12])]);
        assert!(c.take_confirmations().is_empty());
    }

    #[test]
    fn the_bound_is_reported() {
        let c = custody(1, 8);
        assert!(!c.is_full());
        c.hold(7, for_user("b@localhost"), Instant::now());
        assert!(c.is_full());
    }
}
