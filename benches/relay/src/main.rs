//! `relay`: the simplest correct message relay, no XMPP, no parsing beyond a line: the
//! ceiling of relayed messages/s on a box, for martlet's figures to be read against
//! (`loadgen --protocol raw` drives it with the same connection pattern as an XMPP server).
//!
//! Wire protocol, all lines end in `\n`:
//! - the client's first line is `HELLO <id>` (any bytes but space and newline);
//! - every later line is `<to-id> <payload>`: the relay writes `<payload>\n` to the
//!   connection that said `HELLO <to-id>` (the latest one, if several did).
//!
//! loadgen's payload is the very `<message to='…' type='chat'><body>lg …</body></message>`
//! it sends to an XMPP server (about 100 bytes), so the kernel's TCP work per message is
//! comparable: the relay receives `<to-id> ` more (~16 bytes) and sends what it received,
//! where an XMPP server sends the stanza with a `from` stamped (~30 bytes more).
//!
//! Event loop: one thread per `--threads`, each with its own epoll (mio, edge-triggered),
//! all accepting from the same listening socket. A frame for a connection another thread
//! owns is written straight to that socket from the reading thread, under the connection's
//! outbox lock; what does not fit waits in the outbox until the owner sees the socket
//! writable. Nothing is batched across frames: one write per message, as a server would.
//!
//! Every byte read is hostile: a line longer than `--line-bytes-max` closes its connection,
//! an outbox over `--outbox-bytes-max` drops frames (counted), malformed lines close the
//! connection (counted). Counts go to stderr every 10 s while they change.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use clap::Parser;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

#[derive(Parser, Clone)]
#[command(about = "Raw TCP relay: HELLO <id>, then <to-id> <payload> lines forwarded as <payload>")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:25235")]
    listen: SocketAddr,
    /// Event-loop threads (one per core for the box's ceiling).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Longest line accepted, in bytes; a longer one closes its connection.
    #[arg(long, default_value_t = 64 * 1024)]
    line_bytes_max: usize,
    /// Bytes waiting for one slow receiver beyond which frames to it are dropped (counted).
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    outbox_bytes_max: usize,
}

/// Bytes read per call.
const READ_BYTES: usize = 64 * 1024;
const LISTENER: Token = Token(0);
const STATS_EVERY: Duration = Duration::from_secs(10);

/// A connection as every thread sees it: its socket, for writing, and what waits to be written.
struct Conn {
    stream: TcpStream,
    outbox: Mutex<Vec<u8>>,
}

/// What the owning thread alone keeps of a connection.
struct Owned {
    conn: Arc<Conn>,
    inbox: Vec<u8>,
    id: Option<Vec<u8>>,
}

#[derive(Default)]
struct Counts {
    connections: AtomicU64,
    forwarded: AtomicU64,
    /// Frames to an id nobody said HELLO with (or whose connection is gone).
    unknown_peer: AtomicU64,
    /// Frames dropped because the receiver's outbox was full or its socket failed.
    receiver_full_or_gone: AtomicU64,
    /// Connections closed for a malformed or too long line.
    malformed: AtomicU64,
}

struct Shared {
    routes: RwLock<HashMap<Vec<u8>, Arc<Conn>>>,
    counts: Counts,
    args: Args,
}

fn main() {
    let args = Args::parse();
    let listener = match std::net::TcpListener::bind(args.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("relay: cannot listen on {}: {e}", args.listen);
            std::process::exit(2);
        }
    };
    listener.set_nonblocking(true).expect("non-blocking listener");
    eprintln!("relay: listening on {} with {} threads", args.listen, args.threads);
    let shared = Arc::new(Shared { routes: RwLock::new(HashMap::new()), counts: Counts::default(), args: args.clone() });
    for i in 0..args.threads.max(1) {
        let (shared, listener) = (shared.clone(), listener.try_clone().expect("listener clone"));
        let spawned = std::thread::Builder::new().name(format!("relay-{i}")).spawn(move || event_loop(&shared, TcpListener::from_std(listener)));
        spawned.expect("spawning an event loop");
    }
    report_counts(&shared.counts);
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

fn event_loop(shared: &Shared, mut listener: TcpListener) {
    let mut poll = Poll::new().expect("epoll");
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
            if event.token() == LISTENER {
                accept_all(shared, &listener, &poll, &mut owned, &mut next_token);
                continue;
            }
            let token = event.token();
            let Some(o) = owned.get_mut(&token) else { continue };
            if event.is_writable() {
                flush(&o.conn);
            }
            if (event.is_readable() || event.is_read_closed() || event.is_error()) && !read_and_route(shared, o, &mut buf) {
                if let Some(o) = owned.remove(&token) {
                    close(shared, o);
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
                let conn = Arc::new(Conn { stream, outbox: Mutex::new(Vec::new()) });
                owned.insert(token, Owned { conn, inbox: Vec::new(), id: None });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            // Out of descriptors or a connection reset before accept: try again on the next event.
            Err(_) => return,
        }
    }
}

/// Reads until the socket is drained (edge-triggered) and routes every complete line.
/// Returns false when the connection is to be closed.
fn read_and_route(shared: &Shared, o: &mut Owned, buf: &mut [u8]) -> bool {
    loop {
        match (&o.conn.stream).read(buf) {
            Ok(0) => return false,
            Ok(n) => {
                o.inbox.extend_from_slice(&buf[..n]);
                if !route_lines(shared, o) {
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
fn route_lines(shared: &Shared, o: &mut Owned) -> bool {
    let mut start = 0;
    let mut ok = true;
    while let Some(len) = o.inbox[start..].iter().position(|&b| b == b'\n') {
        let line = &o.inbox[start..start + len + 1];
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
        match &o.id {
            None if head == b"HELLO" && rest.len() > 1 => {
                let id = rest[..rest.len() - 1].to_vec();
                shared.routes.write().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), o.conn.clone());
                o.id = Some(id);
            }
            None => {
                ok = false;
                break;
            }
            Some(_) => forward(shared, head, rest),
        }
    }
    o.inbox.drain(..start);
    ok && o.inbox.len() <= shared.args.line_bytes_max
}

fn forward(shared: &Shared, to: &[u8], frame: &[u8]) {
    let conn = shared.routes.read().unwrap_or_else(|p| p.into_inner()).get(to).cloned();
    let Some(conn) = conn else {
        shared.counts.unknown_peer.fetch_add(1, Relaxed);
        return;
    };
    let mut outbox = conn.outbox.lock().unwrap_or_else(|p| p.into_inner());
    // Frames keep their order: with bytes already waiting, this one waits behind them.
    let mut written = 0;
    if outbox.is_empty() {
        loop {
            match (&conn.stream).write(&frame[written..]) {
                Ok(n) => {
                    written += n;
                    if written == frame.len() {
                        shared.counts.forwarded.fetch_add(1, Relaxed);
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    shared.counts.receiver_full_or_gone.fetch_add(1, Relaxed);
                    return;
                }
            }
        }
    } else if outbox.len() + frame.len() > shared.args.outbox_bytes_max {
        shared.counts.receiver_full_or_gone.fetch_add(1, Relaxed);
        return;
    }
    // A frame begun on the wire is always finished, so the stream stays framed.
    outbox.extend_from_slice(&frame[written..]);
    shared.counts.forwarded.fetch_add(1, Relaxed);
}

/// The owner's writable edge: what waits in the outbox goes out.
fn flush(conn: &Conn) {
    let mut outbox = conn.outbox.lock().unwrap_or_else(|p| p.into_inner());
    let mut written = 0;
    while written < outbox.len() {
        match (&conn.stream).write(&outbox[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            // The reading side sees the failure too and closes the connection.
            Err(_) => {
                written = outbox.len();
                break;
            }
        }
    }
    outbox.drain(..written);
}

fn close(shared: &Shared, mut o: Owned) {
    if let Some(id) = o.id.take() {
        let mut routes = shared.routes.write().unwrap_or_else(|p| p.into_inner());
        // A later HELLO with the same id owns the route now: leave it.
        if routes.get(&id).is_some_and(|c| Arc::ptr_eq(c, &o.conn)) {
            routes.remove(&id);
        }
    }
    // Writes racing in from other threads fail from here on; the descriptor (and with it
    // its epoll registration) goes once the last of them lets go of the connection, and
    // an event for it meanwhile finds no owner and is ignored.
    let _ = o.conn.stream.shutdown(std::net::Shutdown::Both);
    shared.counts.connections.fetch_sub(1, Relaxed);
}
