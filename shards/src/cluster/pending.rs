//! Handshakes not yet authenticated: how many may be under way, and for how long. Each
//! holds a thread blocked in reads, and a per-read timeout alone lets a peer without the
//! secret keep one for ever by sending a byte now and then; so there are at most
//! `pending_handshakes_max` at once (more are closed at once), and a reaper thread shuts
//! down the socket of any still pending `handshake_timeout` after it was admitted, which
//! ends its blocked read.

use std::collections::VecDeque;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

const PENDING: u8 = 0;
const DONE: u8 = 1;
const EXPIRED: u8 = 2;

use super::MeshCounters;

/// The admission and the deadlines of the listener's handshakes.
pub struct Handshakes {
    pending: Arc<AtomicUsize>,
    pending_max: usize,
    timeout: Duration,
    deadlines: Sender<(Instant, Arc<Watch>)>,
    pub counters: Arc<MeshCounters>,
    /// When a refusal was last logged: a flood is logged once per [`LOG_EVERY`].
    last_logged: Mutex<Option<Instant>>,
}

const LOG_EVERY: Duration = Duration::from_secs(10);

/// What the reaper holds of a handshake: its state, and a handle on its socket while it
/// is pending (given back when the handshake ends, so a flood of short connections does
/// not keep their descriptors open until their deadlines).
struct Watch {
    state: AtomicU8,
    stream: Mutex<Option<TcpStream>>,
}

/// One admitted handshake; dropping it frees its place.
pub struct Ticket {
    watch: Arc<Watch>,
    pending: Arc<AtomicUsize>,
}

impl Ticket {
    /// The handshake succeeded; `false` if its time had run out first (the reaper shut the
    /// socket, or is about to: the connection is not to be used).
    pub fn complete(&self) -> bool {
        self.watch.state.compare_exchange(PENDING, DONE, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.watch.stream.lock().expect("watched socket").take();
        self.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Handshakes {
    pub fn new(timeout: Duration, pending_max: usize, counters: Arc<MeshCounters>) -> std::io::Result<Handshakes> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let c = counters.clone();
        thread::Builder::new().name("mesh-deadlines".into()).spawn(move || reap(&rx, &c))?;
        Ok(Handshakes {
            pending: Arc::new(AtomicUsize::new(0)),
            pending_max,
            timeout,
            deadlines: tx,
            counters,
            last_logged: Mutex::new(None),
        })
    }

    /// A place for a handshake on `stream`, with its deadline set; `None` when all are
    /// taken (the caller closes the connection) or the stream cannot be watched (no
    /// descriptor to spare).
    pub fn admit(&self, stream: &TcpStream, from: &str) -> Option<Ticket> {
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.pending_max {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.refused(from);
            return None;
        }
        let watch = Watch { state: AtomicU8::new(PENDING), stream: Mutex::new(None) };
        let ticket = Ticket { watch: Arc::new(watch), pending: self.pending.clone() };
        // Without a handle the deadline could not be enforced: refused (the ticket's drop
        // gives the place back).
        *ticket.watch.stream.lock().expect("watched socket") = Some(stream.try_clone().ok()?);
        // Every deadline is admission + the same timeout, so they arrive in order.
        self.deadlines.send((Instant::now() + self.timeout, ticket.watch.clone())).ok()?;
        Some(ticket)
    }

    fn refused(&self, from: &str) {
        let total = self.counters.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_logged.lock().expect("log time");
        if last.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            *last = Some(Instant::now());
            log::warn!(
                "mesh: refused {from}: {} handshakes already pending (pending_handshakes_max); {total} refused so far",
                self.pending_max
            );
        }
    }
}

/// Shuts down each socket whose handshake is still pending at its deadline. Holds an
/// entry (no socket, once its handshake ended) per handshake admitted within the timeout.
fn reap(rx: &Receiver<(Instant, Arc<Watch>)>, counters: &MeshCounters) {
    let mut queue: VecDeque<(Instant, Arc<Watch>)> = VecDeque::new();
    loop {
        let next = match queue.front() {
            Some((deadline, ..)) => rx.recv_timeout(deadline.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match next {
            Ok(entry) => queue.push_back(entry),
            Err(RecvTimeoutError::Disconnected) if queue.is_empty() => return,
            Err(_) => {}
        }
        let now = Instant::now();
        while queue.front().is_some_and(|(deadline, ..)| *deadline <= now) {
            let Some((_, watch)) = queue.pop_front() else { break };
            if watch.state.compare_exchange(PENDING, EXPIRED, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                counters.timed_out.fetch_add(1, Ordering::Relaxed);
                if let Some(stream) = watch.stream.lock().expect("watched socket").as_ref() {
                    let _ = stream.shutdown(Shutdown::Both);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::TcpListener;

    use super::*;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        (l.accept().unwrap().0, c)
    }

    #[test]
    fn places_are_limited_and_given_back() {
        let h = Handshakes::new(Duration::from_secs(60), 2, Default::default()).unwrap();
        let (a, _ca) = pair();
        let (b, _cb) = pair();
        let (c, _cc) = pair();
        let ta = h.admit(&a, "a").unwrap();
        let _tb = h.admit(&b, "b").unwrap();
        assert!(h.admit(&c, "c").is_none());
        assert_eq!(h.counters.refused.load(Ordering::Relaxed), 1);
        let watch = ta.watch.clone();
        drop(ta);
        assert!(watch.stream.lock().unwrap().is_none(), "an ended handshake's descriptor is closed before its deadline");
        assert!(h.admit(&c, "c").is_some());
    }

    #[test]
    fn a_pending_handshake_is_cut_off_at_its_deadline_and_a_completed_one_is_not() {
        let h = Handshakes::new(Duration::from_millis(200), 4, Default::default()).unwrap();
        let (mut slow, _peer) = pair();
        let (done, _peer2) = pair();
        let started = Instant::now();
        let slow_ticket = h.admit(&slow, "slow").unwrap();
        let done_ticket = h.admit(&done, "done").unwrap();
        assert!(done_ticket.complete());
        // The read blocks (the peer sends nothing) until the reaper shuts the socket.
        let n = slow.read(&mut [0u8; 8]).unwrap_or(0);
        assert_eq!(n, 0);
        assert!(started.elapsed() >= Duration::from_millis(200), "{:?}", started.elapsed());
        assert!(!slow_ticket.complete());
        assert_eq!(h.counters.timed_out.load(Ordering::Relaxed), 1);
        done.set_nonblocking(true).unwrap();
        let still_open = matches!((&done).read(&mut [0u8; 8]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        assert!(still_open);
    }
}
