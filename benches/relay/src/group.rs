//! Groups, the relay's rooms: `JOIN <group>` makes a connection a member, and a line to a
//! group is written as it is to every member (its sender too, if it joined: a room reflects
//! a message to its sender), one write per member, as for a one-to-one line.
//!
//! Each thread writes the copies of the members it owns, so a group's fan-out runs on every
//! thread at once, as a server's per-core sessions would: the reading thread writes its own
//! members' copies and hands the frame to each other thread with members (a queue and an
//! eventfd wake-up, mio's `Waker`: the hop a server's cores make), which writes theirs when
//! it wakes. The member lists are read-locked for a whole fan-out; joins and leaves wait
//! meanwhile, which in a benchmark only its set-up and its end do.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, RwLock};

use mio::Waker;

use crate::conn::Conn;
use crate::Shared;

/// Groups one connection may be in; one more closes it as malformed (every join costs the
/// relay memory, and a hostile client could otherwise join without end).
pub const GROUPS_PER_CONNECTION_MAX: usize = 64;

/// A frame for the members of `group` that another thread owns.
struct Hopped {
    group: Vec<u8>,
    frame: Vec<u8>,
}

/// One thread's share of the other threads' fan-outs, and how to wake it.
struct Hops {
    waker: Waker,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<Arc<Hopped>>,
    /// Frame bytes queued, bounded by `--outbox-bytes-max` like one receiver's outbox.
    bytes: usize,
}

pub struct Groups {
    /// Members by group, then by the thread that owns them.
    members: RwLock<HashMap<Vec<u8>, Vec<Vec<Arc<Conn>>>>>,
    /// By thread.
    hops: Vec<Hops>,
}

impl Groups {
    /// `wakers[i]` wakes thread i's epoll with its hop queue to deliver.
    pub fn new(wakers: Vec<Waker>) -> Self {
        let hops = wakers.into_iter().map(|waker| Hops { waker, queue: Mutex::default() }).collect();
        Groups { members: RwLock::default(), hops }
    }

    /// `conn`, owned by `thread`, joins `group` (once: the caller keeps what it joined).
    pub fn join(&self, thread: usize, conn: &Arc<Conn>, group: &[u8]) {
        let mut members = self.members.write().unwrap_or_else(|p| p.into_inner());
        let by_thread = members.entry(group.to_vec()).or_insert_with(|| vec![Vec::new(); self.hops.len()]);
        by_thread[thread].push(conn.clone());
    }

    /// `conn`, owned by `thread`, leaves each of `groups`; a group with no member left goes.
    pub fn leave(&self, thread: usize, conn: &Arc<Conn>, groups: &[Vec<u8>]) {
        let mut members = self.members.write().unwrap_or_else(|p| p.into_inner());
        for group in groups {
            let Some(by_thread) = members.get_mut(group) else { continue };
            let mine = &mut by_thread[thread];
            if let Some(i) = mine.iter().position(|c| Arc::ptr_eq(c, conn)) {
                mine.swap_remove(i);
            }
            if by_thread.iter().all(Vec::is_empty) {
                members.remove(group);
            }
        }
    }
}

/// Writes `frame` to the members of `group` that `thread` owns and hands it to the other
/// threads with members. False if nobody is in `group`.
pub fn fan_out(shared: &Shared, thread: usize, group: &[u8], frame: &[u8]) -> bool {
    let groups = &shared.groups;
    let members = groups.members.read().unwrap_or_else(|p| p.into_inner());
    let Some(by_thread) = members.get(group) else { return false };
    // Made once, for however many threads it goes to.
    let mut hopped: Option<Arc<Hopped>> = None;
    for (other, theirs) in by_thread.iter().enumerate().filter(|(t, m)| *t != thread && !m.is_empty()) {
        let h = hopped.get_or_insert_with(|| Arc::new(Hopped { group: group.to_vec(), frame: frame.to_vec() }));
        let hops = &groups.hops[other];
        let mut queue = hops.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.bytes + frame.len() > shared.args.outbox_bytes_max {
            shared.counts.receiver_full_or_gone.fetch_add(theirs.len() as u64, Relaxed);
            continue;
        }
        queue.bytes += frame.len();
        queue.frames.push_back(h.clone());
        drop(queue);
        // Only an eventfd failing: the frame stays queued for the thread's next wake-up.
        let _ = hops.waker.wake();
    }
    for conn in &by_thread[thread] {
        crate::send(shared, conn, frame);
    }
    true
}

/// On `thread`'s wake-up: writes what other threads handed it to its members, in order.
pub fn deliver_hops(shared: &Shared, thread: usize) {
    let groups = &shared.groups;
    let frames = {
        let mut queue = groups.hops[thread].queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.bytes = 0;
        std::mem::take(&mut queue.frames)
    };
    if frames.is_empty() {
        return;
    }
    let members = groups.members.read().unwrap_or_else(|p| p.into_inner());
    for h in frames {
        // Members are those of the moment of delivery, as on a server's core.
        for conn in members.get(&h.group).map_or(&[][..], |by_thread| &by_thread[thread]) {
            crate::send(shared, conn, &h.frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    use clap::Parser;

    use super::*;
    use crate::{Args, Counts};

    /// Shared state for `threads` threads, with their epolls (kept alive for the wakers).
    fn shared(threads: usize, outbox_bytes_max: usize) -> (Shared, Vec<mio::Poll>) {
        let mut args = Args::parse_from(["relay"]);
        args.outbox_bytes_max = outbox_bytes_max;
        let polls: Vec<mio::Poll> = (0..threads).map(|_| mio::Poll::new().unwrap()).collect();
        let wakers = polls.iter().map(|p| Waker::new(p.registry(), crate::WAKER).unwrap()).collect();
        let shared = Shared { routes: RwLock::default(), groups: Groups::new(wakers), counts: Counts::default(), args };
        (shared, polls)
    }

    /// A connection as the relay holds it, and the client's end of it.
    fn pair(l: &TcpListener) -> (Arc<Conn>, TcpStream) {
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (Arc::new(Conn::new(mio::net::TcpStream::from_std(server))), client)
    }

    /// Clients of connections that joined group `g`, each owned by the thread given.
    fn members<const N: usize>(shared: &Shared, l: &TcpListener, threads: [usize; N]) -> [(Arc<Conn>, TcpStream); N] {
        threads.map(|t| {
            let (conn, client) = pair(l);
            shared.groups.join(t, &conn, b"g");
            (conn, client)
        })
    }

    fn expect(client: &mut TcpStream, want: &[u8]) {
        let mut got = vec![0; want.len()];
        client.read_exact(&mut got).unwrap();
        assert_eq!(got, want);
    }

    fn nothing_yet(client: &mut TcpStream) {
        client.set_nonblocking(true).unwrap();
        let mut b = [0; 64];
        assert_eq!(client.read(&mut b).map_err(|e| e.kind()), Err(ErrorKind::WouldBlock));
        client.set_nonblocking(false).unwrap();
    }

    #[test]
    fn each_thread_writes_its_own_members_copy_once() {
        let (shared, _polls) = shared(2, 1 << 20);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let [(_, mut ca), (_, mut cb), (_, mut cc)] = members(&shared, &l, [0, 1, 1]);
        assert!(fan_out(&shared, 0, b"g", b"one\n"));
        expect(&mut ca, b"one\n");
        // Thread 1's members get theirs when thread 1 delivers its hops, not from thread 0.
        nothing_yet(&mut cb);
        nothing_yet(&mut cc);
        deliver_hops(&shared, 1);
        expect(&mut cb, b"one\n");
        expect(&mut cc, b"one\n");
        // And the other way round, from a line read on thread 1.
        assert!(fan_out(&shared, 1, b"g", b"two\n"));
        expect(&mut cb, b"two\n");
        expect(&mut cc, b"two\n");
        nothing_yet(&mut ca);
        deliver_hops(&shared, 0);
        expect(&mut ca, b"two\n");
        assert_eq!(shared.counts.forwarded.load(Relaxed), 6);
        assert!(!fan_out(&shared, 0, b"nobody", b"x\n"), "no such group");
    }

    #[test]
    fn a_member_that_left_gets_nothing_and_an_empty_group_is_gone() {
        let (shared, _polls) = shared(2, 1 << 20);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let [(a, mut ca), (b, mut cb)] = members(&shared, &l, [0, 1]);
        shared.groups.leave(1, &b, &[b"g".to_vec()]);
        assert!(fan_out(&shared, 0, b"g", b"one\n"));
        deliver_hops(&shared, 1);
        expect(&mut ca, b"one\n");
        nothing_yet(&mut cb);
        shared.groups.leave(0, &a, &[b"g".to_vec()]);
        assert!(!fan_out(&shared, 0, b"g", b"two\n"));
    }

    #[test]
    fn a_full_hop_queue_drops_that_threads_copies_counted() {
        let (shared, _polls) = shared(2, 8);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let [(_, mut ca), (_, mut cb), _] = members(&shared, &l, [0, 1, 1]);
        assert!(fan_out(&shared, 0, b"g", b"12345\n"));
        assert!(fan_out(&shared, 0, b"g", b"67890\n"), "over 8 queued bytes: thread 1's two copies dropped");
        deliver_hops(&shared, 1);
        expect(&mut cb, b"12345\n");
        nothing_yet(&mut cb);
        expect(&mut ca, b"12345\n67890\n");
        assert_eq!(shared.counts.receiver_full_or_gone.load(Relaxed), 2);
    }
}
