//! `relay`: the simplest correct message relay, no XMPP, no parsing beyond a line: the
//! ceiling of relayed messages/s on a box, for martlet's figures to be read against
//! (`loadgen --protocol raw` drives it with the same connection pattern as an XMPP server).
//!
//! Wire protocol, all lines end in `\n`:
//! - the client's first line is `HELLO <id>` (any bytes but space and newline);
//! - `JOIN <group>` or `JOIN <group> <ack>` makes the connection a member of the group
//!   (group.rs; `<group>` any bytes but space and newline, at most
//!   `GROUPS_PER_CONNECTION_MAX` groups per connection, joining twice is joining once);
//!   with `<ack>` the relay then writes `<ack>\n` back, so the client knows that lines to
//!   the group reach it from then on. `JOIN` is a verb: no id named so can be written to;
//! - every other line is `<to> <payload>`: the relay writes `<payload>\n` to the connection
//!   that said `HELLO <to>` (the latest one, if several did), or else, if `<to>` is a group,
//!   to every member of it, the sender too if it is one.
//!
//! loadgen's payload is the very `<message to='…' type='chat'><body>lg …</body></message>`
//! it sends to an XMPP server (about 100 bytes), so the kernel's TCP work per message is
//! comparable: the relay receives `<to-id> ` more (~16 bytes) and sends what it received,
//! where an XMPP server sends the stanza with a `from` stamped (~30 bytes more).
//!
//! Event loop: one thread per `--threads`, each with its own epoll (mio, edge-triggered)
//! and its own listening socket on the address (SO_REUSEPORT: the kernel spreads the
//! connections over the threads by hash, as over martlet's per-core listeners). A frame
//! for a connection another thread owns is written straight to that socket from the
//! reading thread, under the connection's outbox lock (conn.rs); what does not fit waits in
//! the outbox until the owner sees the socket writable. A group's copies are written by the
//! threads owning its members, all at once (group.rs). Nothing is batched across frames:
//! one write per copy, as a server would.
//!
//! Every byte read is hostile: a line longer than `--line-bytes-max` closes its connection,
//! an outbox over `--outbox-bytes-max` drops frames (counted), malformed lines close the
//! connection (counted). Counts go to stderr every 10 s while they change.

mod conn;
mod group;

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use clap::Parser;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use conn::Conn;
use group::{Groups, GROUPS_PER_CONNECTION_MAX};

#[derive(Parser, Clone)]
#[command(about = "Raw TCP relay: HELLO <id>, JOIN <group>, then <to-id-or-group> <payload> lines forwarded as <payload>")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:25235")]
    listen: SocketAddr,
    /// Event-loop threads (one per core for the box's ceiling).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Longest line accepted, in bytes; a longer one closes its connection.
    #[arg(long, default_value_t = 64 * 1024)]
    line_bytes_max: usize,
    /// Bytes waiting for one slow receiver (or for one thread's share of group copies) beyond
    /// which frames to it are dropped (counted).
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    outbox_bytes_max: usize,
}

/// Bytes read per call.
const READ_BYTES: usize = 64 * 1024;
/// Connections waiting to be accepted, per listener (what scripts/compare gives every server).
const LISTEN_BACKLOG: i32 = 4096;
const LISTENER: Token = Token(0);
/// Another thread handed this one group copies to write (group.rs).
const WAKER: Token = Token(usize::MAX);
const STATS_EVERY: Duration = Duration::from_secs(10);

/// What the owning thread alone keeps of a connection.
struct Owned {
    conn: Arc<Conn>,
    inbox: Vec<u8>,
    id: Option<Vec<u8>>,
    /// The groups it joined, to leave when it closes.
    groups: Vec<Vec<u8>>,
}

#[derive(Default)]
struct Counts {
    connections: AtomicU64,
    /// Frames written or queued, each copy of a group's line counted.
    forwarded: AtomicU64,
    /// Frames to an id nobody said HELLO with (or whose connection is gone), and no group.
    unknown_peer: AtomicU64,
    /// Frames dropped because the receiver's outbox was full or its socket failed.
    receiver_full_or_gone: AtomicU64,
    /// Connections closed for a malformed or too long line.
    malformed: AtomicU64,
}

struct Shared {
    routes: RwLock<HashMap<Vec<u8>, Arc<Conn>>>,
    groups: Groups,
    counts: Counts,
    args: Args,
}

fn main() {
    let args = Args::parse();
    match start(args) {
        Ok((shared, _)) => report_counts(&shared.counts),
        Err(e) => {
            eprintln!("relay: {e}");
            std::process::exit(2);
        }
    }
}

/// Listens and runs the event loops on threads of their own; the address listened on.
fn start(args: Args) -> io::Result<(Arc<Shared>, SocketAddr)> {
    let threads = args.threads.max(1);
    let cannot = |e: io::Error| io::Error::new(e.kind(), format!("cannot listen on {}: {e}", args.listen));
    // The first listener settles the port (a test asks for any), the others join it.
    let first = reuseport_listener(args.listen).map_err(cannot)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..threads {
        listeners.push(reuseport_listener(addr).map_err(cannot)?);
    }
    eprintln!("relay: listening on {addr} with {threads} threads");
    // Every thread's epoll is made first: each thread's waker is in Shared for the others.
    let mut polls = Vec::with_capacity(threads);
    let mut wakers = Vec::with_capacity(threads);
    for _ in 0..threads {
        let poll = Poll::new()?;
        wakers.push(Waker::new(poll.registry(), WAKER)?);
        polls.push(poll);
    }
    let shared = Arc::new(Shared { routes: RwLock::new(HashMap::new()), groups: Groups::new(wakers), counts: Counts::default(), args });
    for (i, (poll, listener)) in polls.into_iter().zip(listeners).enumerate() {
        let (shared, listener) = (shared.clone(), TcpListener::from_std(listener));
        std::thread::Builder::new().name(format!("relay-{i}")).spawn(move || event_loop(&shared, listener, poll, i))?;
    }
    Ok((shared, addr))
}

/// One thread's listener on `addr`, in the address's SO_REUSEPORT group. One listener
/// shared by every thread let whichever thread woke first accept a whole burst of
/// connections (3:1 over two threads, seen), and a group's copies are written by the
/// threads owning its members, so that split is the fan-out's.
fn reuseport_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

fn report_counts(c: &Counts) {
    let mut last = [0; 5];
    loop {
        std::thread::sleep(STATS_EVERY);
        let now = [&c.connections, &c.forwarded, &c.unknown_peer, &c.receiver_full_or_gone, &c.malformed].map(|a| a.load(Relaxed));
        if now != last {
            eprintln!(
                "relay: connections {} forwarded {} unknown_peer {} receiver_full_or_gone {} malformed {}",
                now[0], now[1], now[2], now[3], now[4]
            );
            last = now;
        }
    }
}

fn event_loop(shared: &Shared, mut listener: TcpListener, mut poll: Poll, thread: usize) {
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE).expect("registering the listener");
    let mut events = Events::with_capacity(1024);
    let mut owned: HashMap<Token, Owned> = HashMap::new();
    let mut next_token = 1usize;
    let mut buf = vec![0u8; READ_BYTES];
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            panic!("epoll_wait: {e}");
        }
        for event in events.iter() {
            match event.token() {
                LISTENER => accept_all(shared, &listener, &poll, &mut owned, &mut next_token),
                WAKER => group::deliver_hops(shared, thread),
                token => {
                    let Some(o) = owned.get_mut(&token) else { continue };
                    if event.is_writable() {
                        o.conn.flush();
                    }
                    if (event.is_readable() || event.is_read_closed() || event.is_error()) && !read_and_route(shared, thread, o, &mut buf) {
                        if let Some(o) = owned.remove(&token) {
                            close(shared, thread, o);
                        }
                    }
                }
            }
        }
    }
}

fn accept_all(shared: &Shared, listener: &TcpListener, poll: &Poll, owned: &mut HashMap<Token, Owned>, next_token: &mut usize) {
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let _ = stream.set_nodelay(true);
                let token = Token(*next_token);
                *next_token += 1;
                if poll.registry().register(&mut stream, token, Interest::READABLE | Interest::WRITABLE).is_err() {
                    continue;
                }
                shared.counts.connections.fetch_add(1, Relaxed);
                owned.insert(token, Owned { conn: Arc::new(Conn::new(stream)), inbox: Vec::new(), id: None, groups: Vec::new() });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            // Out of descriptors or a connection reset before accept: try again on the next event.
            Err(_) => return,
        }
    }
}

/// Reads until the socket is drained (edge-triggered) and routes every complete line.
/// Returns false when the connection is to be closed.
fn read_and_route(shared: &Shared, thread: usize, o: &mut Owned, buf: &mut [u8]) -> bool {
    loop {
        match (&o.conn.stream).read(buf) {
            Ok(0) => return false,
            Ok(n) => {
                o.inbox.extend_from_slice(&buf[..n]);
                if !route_lines(shared, thread, o) {
                    shared.counts.malformed.fetch_add(1, Relaxed);
                    return false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}

/// Routes the complete lines of the inbox and keeps the unfinished rest. False when a line
/// is malformed or too long.
fn route_lines(shared: &Shared, thread: usize, o: &mut Owned) -> bool {
    let mut start = 0;
    let mut ok = true;
    let mut inbox = std::mem::take(&mut o.inbox);
    while let Some(len) = inbox[start..].iter().position(|&b| b == b'\n') {
        let line = &inbox[start..start + len + 1];
        start += len + 1;
        if line.len() > shared.args.line_bytes_max {
            ok = false;
            break;
        }
        let Some(space) = line.iter().position(|&b| b == b' ') else {
            ok = false;
            break;
        };
        let (head, rest) = (&line[..space], &line[space + 1..]);
        match (o.id.is_some(), head) {
            (false, b"HELLO") if rest.len() > 1 => {
                let id = rest[..rest.len() - 1].to_vec();
                shared.routes.write().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), o.conn.clone());
                o.id = Some(id);
            }
            (true, b"JOIN") if join(shared, thread, o, rest) => {}
            (true, to) if to != b"JOIN" => forward(shared, thread, to, rest),
            _ => {
                ok = false;
                break;
            }
        }
    }
    inbox.drain(..start);
    o.inbox = inbox;
    ok && o.inbox.len() <= shared.args.line_bytes_max
}

/// `JOIN <group>[ <ack>]\n`'s `rest`, after the verb: false if malformed or one group too many.
fn join(shared: &Shared, thread: usize, o: &mut Owned, rest: &[u8]) -> bool {
    let line = &rest[..rest.len() - 1];
    let (group, ack) = match line.iter().position(|&b| b == b' ') {
        Some(space) => (&line[..space], Some(&rest[space + 1..])),
        None => (line, None),
    };
    if group.is_empty() {
        return false;
    }
    if !o.groups.iter().any(|g| g == group) {
        if o.groups.len() >= GROUPS_PER_CONNECTION_MAX {
            return false;
        }
        shared.groups.join(thread, &o.conn, group);
        o.groups.push(group.to_vec());
    }
    if let Some(ack) = ack {
        send(shared, &o.conn, ack);
    }
    true
}

/// A line to `to`: the connection that said `HELLO <to>`, else the members of group `to`.
fn forward(shared: &Shared, thread: usize, to: &[u8], frame: &[u8]) {
    let conn = shared.routes.read().unwrap_or_else(|p| p.into_inner()).get(to).cloned();
    match conn {
        Some(conn) => send(shared, &conn, frame),
        None if group::fan_out(shared, thread, to, frame) => {}
        None => {
            shared.counts.unknown_peer.fetch_add(1, Relaxed);
        }
    }
}

/// One copy of a frame to one connection, counted.
fn send(shared: &Shared, conn: &Conn, frame: &[u8]) {
    let counter = if conn.send(frame, shared.args.outbox_bytes_max) { &shared.counts.forwarded } else { &shared.counts.receiver_full_or_gone };
    counter.fetch_add(1, Relaxed);
}

fn close(shared: &Shared, thread: usize, mut o: Owned) {
    if let Some(id) = o.id.take() {
        let mut routes = shared.routes.write().unwrap_or_else(|p| p.into_inner());
        // A later HELLO with the same id owns the route now: leave it.
        if routes.get(&id).is_some_and(|c| Arc::ptr_eq(c, &o.conn)) {
            routes.remove(&id);
        }
    }
    shared.groups.leave(thread, &o.conn, &o.groups);
    // Writes racing in from other threads fail from here on; the descriptor (and with it
    // its epoll registration) goes once the last of them lets go of the connection, and
    // an event for it meanwhile finds no owner and is ignored.
    let _ = o.conn.stream.shutdown(std::net::Shutdown::Both);
    shared.counts.connections.fetch_sub(1, Relaxed);
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpStream;

    use super::*;

    /// A client that said HELLO and joined `group`, once the relay acknowledged the join.
    fn member(addr: SocketAddr, id: &str, group: &str) -> (TcpStream, BufReader<TcpStream>) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(format!("HELLO {id}\nJOIN {group} joined {id}\n").as_bytes()).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        assert_eq!(line(&mut r), format!("joined {id}\n"));
        (s, r)
    }

    fn line(r: &mut BufReader<TcpStream>) -> String {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        l
    }

    #[test]
    fn a_line_to_a_group_reaches_every_member_once_over_both_threads() {
        let args = Args { listen: "127.0.0.1:0".parse().unwrap(), threads: 2, line_bytes_max: 1024, outbox_bytes_max: 1 << 20 };
        let (_shared, addr) = start(args).unwrap();
        let mut members: Vec<_> = (0..8).map(|i| member(addr, &format!("c{i}"), "room@x")).collect();
        // Joining again is joining once: still one copy each.
        members[1].0.write_all(b"JOIN room@x again\n").unwrap();
        assert_eq!(line(&mut members[1].1), "again\n");
        for m in ["<message>one</message>", "<message>two</message>"] {
            members[0].0.write_all(format!("room@x {m}\n").as_bytes()).unwrap();
            for (_, r) in &mut members {
                assert_eq!(line(r), format!("{m}\n"), "each member, the sender too, gets each line once and in order");
            }
        }
        // One-to-one lines still go to one connection.
        members[2].0.write_all(b"c5 direct\n").unwrap();
        assert_eq!(line(&mut members[5].1), "direct\n");
    }

    #[test]
    fn a_join_before_hello_or_without_a_group_closes_the_connection() {
        let args = Args { listen: "127.0.0.1:0".parse().unwrap(), threads: 1, line_bytes_max: 1024, outbox_bytes_max: 1 << 20 };
        let (shared, addr) = start(args).unwrap();
        for bad in ["JOIN g ack\n", "HELLO a\nJOIN \n"] {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(bad.as_bytes()).unwrap();
            let mut r = BufReader::new(s);
            assert_eq!(line(&mut r), "", "closed without an answer: {bad:?}");
        }
        assert_eq!(shared.counts.malformed.load(Relaxed), 2);
    }
}
