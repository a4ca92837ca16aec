//! A bounded mailbox for an actor that lives on one core.
//!
//! Single-threaded by construction (`Rc`, no atomics): an actor and everything that writes to
//! its mailbox run on the same executor. Cross-core traffic arrives through [`crate::mesh`]
//! first and is then put into the local mailbox by that core's dispatcher.
//!
//! Overload is defined, not emergent: `try_send` on a full mailbox hands the message back
//! ([`Full`]) so the producer decides (drop and report, or slow down). Memory stays bounded
//! by `capacity` messages per actor.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

struct Inner<T> {
    queue: VecDeque<T>,
    capacity: usize,
    waker: Option<Waker>,
    closed: bool,
}

/// The producer side; cheap to clone.
pub struct Sender<T>(Rc<RefCell<Inner<T>>>);

/// The actor's side; one per mailbox.
pub struct Receiver<T>(Rc<RefCell<Inner<T>>>);

/// Returned by [`Sender::try_send`] when the mailbox holds `capacity` messages already.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError<T> {
    Full(T),
    Closed(T),
}

/// A mailbox holding at most `capacity_messages` messages.
pub fn mailbox<T>(capacity_messages: usize) -> (Sender<T>, Receiver<T>) {
    assert!(capacity_messages > 0);
    let inner = Rc::new(RefCell::new(Inner {
        // Start empty: most actors are idle most of the time and must stay small.
        queue: VecDeque::new(),
        capacity: capacity_messages,
        waker: None,
        closed: false,
    }));
    (Sender(inner.clone()), Receiver(inner))
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender(self.0.clone())
    }
}

impl<T> Sender<T> {
    pub fn try_send(&self, msg: T) -> Result<(), SendError<T>> {
        let mut inner = self.0.borrow_mut();
        if inner.closed {
            return Err(SendError::Closed(msg));
        }
        if inner.queue.len() >= inner.capacity {
            return Err(SendError::Full(msg));
        }
        inner.queue.push_back(msg);
        if let Some(w) = inner.waker.take() {
            w.wake();
        }
        Ok(())
    }

    /// Queues past the bound. Only for messages whose number is bounded elsewhere (one per
    /// session lifecycle event, say), where dropping would break an invariant.
    pub fn force_send(&self, msg: T) {
        let mut inner = self.0.borrow_mut();
        inner.queue.push_back(msg);
        if let Some(w) = inner.waker.take() {
            w.wake();
        }
    }

    /// Closes from the producer side: the actor drains what is queued, then `recv` yields
    /// `None`. Used to stop an actor that cannot keep up.
    pub fn close(&self) {
        let mut inner = self.0.borrow_mut();
        inner.closed = true;
        if let Some(w) = inner.waker.take() {
            w.wake();
        }
    }

    pub fn is_closed(&self) -> bool {
        self.0.borrow().closed
    }
}

impl<T> Receiver<T> {
    /// The next message; `None` once closed and drained.
    pub async fn recv(&self) -> Option<T> {
        poll_fn(|cx| {
            let mut inner = self.0.borrow_mut();
            if let Some(msg) = inner.queue.pop_front() {
                return Poll::Ready(Some(msg));
            }
            if inner.closed {
                return Poll::Ready(None);
            }
            // The actor goes idle: an idle actor holds no buffer (most of a million are
            // idle); the next burst allocates one again.
            if inner.queue.capacity() > 0 {
                inner.queue = VecDeque::new();
            }
            inner.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// A message if one is waiting; never waits.
    pub fn try_recv(&self) -> Option<T> {
        self.0.borrow_mut().queue.pop_front()
    }

    pub fn len(&self) -> usize {
        self.0.borrow().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses further messages; those already queued can still be received.
    pub fn close(&self) {
        let mut inner = self.0.borrow_mut();
        inner.closed = true;
        // Give back the queue's memory early for actors that linger while shutting down.
        inner.queue.shrink_to_fit();
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.0.borrow_mut().closed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_mailbox_hands_the_message_back() {
        let (tx, rx) = mailbox(2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert_eq!(tx.try_send(3), Err(SendError::Full(3)));
        assert_eq!(rx.try_recv(), Some(1));
        tx.try_send(3).unwrap();
        assert_eq!(rx.len(), 2);
    }

    #[test]
    fn closed_mailbox_refuses_and_drains() {
        let (tx, rx) = mailbox(4);
        tx.try_send("a").unwrap();
        rx.close();
        assert_eq!(tx.try_send("b"), Err(SendError::Closed("b")));
        assert_eq!(futures_lite::future::block_on(rx.recv()), Some("a"));
        assert_eq!(futures_lite::future::block_on(rx.recv()), None);
    }

    #[test]
    fn recv_wakes_on_send() {
        let ex = glommio::LocalExecutor::default();
        ex.run(async {
            let (tx, rx) = mailbox(1);
            let t = glommio::spawn_local(async move { rx.recv().await });
            glommio::yield_if_needed().await;
            tx.try_send(7u32).unwrap();
            assert_eq!(t.await, Some(7));
        });
    }
}
