//! The node-to-node layer: a framed TCP mesh between the nodes of a cluster, with mutual
//! authentication by a shared secret, membership and failure detection.
//!
//! # How it fits the cores
//! The mesh runs on its own threads, never on a core's executor: one listener, a dialer per
//! known address, a ticker (heartbeats, failure detection), and per connection a reader and
//! a writer. A core hands a payload to its [`MeshSender`], which puts it on the peer's
//! bounded flume queue without blocking (full: [`SendError::Full`], the core waits and
//! retries: backpressure) and without the table's lock: each core keeps its own copy of the
//! table of peer queues, and takes a fresh one only when a connection came or went. Readers hand data frames to the destination core through that
//! core's bounded flume channel ([`Inbound`]), which the core awaits with `recv_async`; when
//! it is full the reader blocks, and TCP flow control pushes back on the sending node.
//! Membership changes reach every core through the same channel, so a core sees them in
//! order with the frames.
//!
//! # Files
//! - [`frame`]: the versioned, length-prefixed frame.
//! - [`handshake`]: HMAC challenge-response with the cluster secret.
//! - [`pending`]: how many handshakes may be under way, and for how long.
//! - [`membership`]: the pure up/suspect/down state machine (simulated from a seed in tests).
//! - [`transport`]: plain TCP or TLS (rustls), and the handshake's binding to the TLS session.
//! - [`connection`]: one authenticated connection's reader and writer threads.

pub mod connection;
pub mod frame;
pub mod handshake;
pub mod membership;
pub mod pending;
pub mod transport;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rand::Rng;

use connection::Conn;
use handshake::{HandshakeError, Identity};
use membership::{Change, Member, MemberStatus, Membership};
use pending::Handshakes;
use transport::{Link, MeshTls};

/// Everything the mesh needs; the server fills it from its `[cluster]` section.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub node_name: String,
    pub listen: SocketAddr,
    pub seeds: Vec<SocketAddr>,
    pub secret: Vec<u8>,
    /// Silence after which a member is suspected; down after as long again.
    pub suspicion_timeout: Duration,
    /// Frames queued per peer before `send` reports `Full`.
    pub outbound_frames_max: usize,
    /// Largest frame payload accepted from a peer, in bytes.
    pub frame_bytes_max: usize,
    /// Messages queued per core before a reader waits.
    pub inbound_messages_max: usize,
    /// A handshake (TLS included) not done this long after the connection is given up.
    pub handshake_timeout: Duration,
    /// Unauthenticated connections handshaking at once; more are closed at accept.
    pub pending_handshakes_max: usize,
    /// Nodes tracked, this one included: members, peer connections and dialers.
    pub members_max: usize,
    /// Encrypt the mesh; every node must agree (one speaking plain TCP to a TLS node fails
    /// the handshake and is refused).
    pub tls: Option<MeshTls>,
}

/// Pause before the first redial of an address, doubled up to [`RECONNECT_MAX`]: short,
/// because after a partition heals the two sides agree again only once one of them has
/// dialled (a failed dial to a node that is gone costs one refused connect).
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_millis(500);
/// How often a dialer whose connection is up looks again without being woken: a safety
/// net only, as the end of a connection wakes it.
const CONNECTED_RECHECK: Duration = Duration::from_secs(1);

/// How a node is reached: its own connection's queue, or another member's that passes the
/// frames on (`Kind::Relay`: a node this one cannot hear, but that member can).
#[derive(Clone)]
enum Route {
    Direct(flume::Sender<Vec<u8>>),
    Relay(flume::Sender<Vec<u8>>),
}

type Routes = HashMap<u32, Route>;

/// What a core receives from the mesh.
#[derive(Debug)]
pub enum Inbound {
    /// A payload another node sent to this core (or to be forwarded from it).
    Frame(Vec<u8>),
    /// Membership changed: the members now holding the ring, those just gone down, and
    /// those just come (back) up.
    Members { ring: Vec<Member>, down: Vec<Member>, up: Vec<Member> },
    /// This node did not run for longer than its peers take to declare it down (SIGSTOP,
    /// a paused VM): they have, and dropped what they held for its sessions, though its
    /// own view of the ring never changed. Its sessions must register with their owners
    /// again.
    Resumed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// No live connection to that node.
    Unreachable,
    /// Its queue is full.
    Full,
}

/// What the mesh's threads count, for the server's metrics.
#[derive(Default, Debug)]
pub struct MeshCounters {
    /// Connections closed at accept because `pending_handshakes_max` were under way.
    pub refused: AtomicU64,
    /// Handshakes cut off at `handshake_timeout`.
    pub timed_out: AtomicU64,
    /// Members this node declared down, and saw come (back) up: each cut of a partition,
    /// each failure and return, as this node saw it.
    pub members_down: AtomicU64,
    pub members_up: AtomicU64,
    /// Frames this node passed on for a member that cannot reach their destination itself
    /// (`Kind::Relay`), and those it could not pass on.
    pub frames_relayed: AtomicU64,
    pub relay_frames_dropped: AtomicU64,
    /// Connections closed after a suspicion timeout without a frame (`bound_silence`).
    pub silent_closed: AtomicU64,
    /// Connections dropped, with the frames they had brought, because those came in while
    /// this node was not running (`Inner::fenced`).
    pub connections_fenced: AtomicU64,
}

/// The handle cores and the admin interface use; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

pub struct Inner {
    cfg: ClusterConfig,
    me: Identity,
    node_id: u32,
    started: Instant,
    /// The live connection per node id; changed by the mesh threads, never by a send.
    peers: Mutex<HashMap<u32, Conn>>,
    /// Signalled when a connection leaves `peers`, so its address's dialer, which sleeps
    /// while it is up, dials again at once.
    peers_changed: Condvar,
    /// How to reach each node, as published for the senders after every change of `peers`
    /// or of the relays, and a count of those changes (see [`MeshSender`]).
    routes: Mutex<Arc<Routes>>,
    routes_version: AtomicU64,
    /// The relays in `routes`: node id -> the node id whose connection carries its frames.
    relays: Mutex<HashMap<u32, u32>>,
    membership: Mutex<Membership>,
    /// Addresses that have a dialer thread.
    dialing: Mutex<HashSet<SocketAddr>>,
    cores: Vec<flume::Sender<Inbound>>,
    next_conn_id: AtomicU64,
    /// The listener's handshakes under way.
    handshakes: Handshakes,
    counters: Arc<MeshCounters>,
    /// When the ticker last ran, in ms since `started` (see [`Inner::fenced`]).
    last_tick_ms: AtomicU64,
    /// The last gossip built (`Inner::gossip_frame`).
    last_gossip: Mutex<Arc<Vec<u8>>>,
}

impl Cluster {
    /// Binds the mesh listener, starts dialing the seeds, and returns the handle and one
    /// receiver per core.
    pub fn start(cfg: ClusterConfig, cores: usize) -> io::Result<(Cluster, Vec<flume::Receiver<Inbound>>)> {
        let listener = TcpListener::bind(cfg.listen)?;
        let me = Identity { name: cfg.node_name.clone(), addr: cfg.listen, incarnation: rand::rngs::OsRng.gen() };
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..cores).map(|_| flume::bounded(cfg.inbound_messages_max)).unzip();
        let counters = Arc::new(MeshCounters::default());
        let inner = Arc::new(Inner {
            node_id: membership::node_id(&me.name),
            membership: Mutex::new(Membership::new(&me, cfg.suspicion_timeout, cfg.members_max)),
            started: Instant::now(),
            peers: Mutex::new(HashMap::new()),
            peers_changed: Condvar::new(),
            routes: Mutex::new(Arc::new(HashMap::new())),
            routes_version: AtomicU64::new(0),
            relays: Mutex::new(HashMap::new()),
            dialing: Mutex::new(HashSet::new()),
            cores: txs,
            next_conn_id: AtomicU64::new(1),
            handshakes: Handshakes::new(cfg.handshake_timeout, cfg.pending_handshakes_max, counters.clone())?,
            counters,
            last_tick_ms: AtomicU64::new(0),
            last_gossip: Mutex::new(Arc::default()),
            me,
            cfg,
        });
        let i = inner.clone();
        thread::Builder::new().name("mesh-listen".into()).spawn(move || accept_loop(&i, listener))?;
        let i = inner.clone();
        thread::Builder::new().name("mesh-tick".into()).spawn(move || tick_loop(&i))?;
        for seed in inner.cfg.seeds.clone() {
            inner.dial(seed);
        }
        Ok((Cluster { inner }, rxs))
    }

    /// This node's id on the ring.
    pub fn node_id(&self) -> u32 {
        self.inner.node_id
    }

    /// This node as a ring member.
    pub fn me(&self) -> Member {
        Member { name: self.inner.me.name.clone(), addr: self.inner.me.addr, node_id: self.inner.node_id }
    }

    /// A sending handle for one thread (a core): see [`MeshSender`].
    pub fn sender(&self) -> MeshSender {
        MeshSender { inner: self.inner.clone(), routes: RefCell::new((u64::MAX, Arc::new(HashMap::new()))) }
    }

    /// Queues `payload` for core `core` of node `node_id`; never blocks. For occasional
    /// senders; a core keeps a [`MeshSender`].
    pub fn send(&self, node_id: u32, core: u16, payload: &[u8]) -> Result<(), SendError> {
        self.sender().send(node_id, core, payload)
    }

    /// What the mesh counted: handshakes refused or cut off, silent connections, fenced frames.
    pub fn counters(&self) -> Arc<MeshCounters> {
        self.inner.counters.clone()
    }

    /// Every member this node knows, itself included, with its state.
    pub fn status(&self) -> Vec<MemberStatus> {
        self.inner.membership.lock().expect("membership").status(self.inner.started.elapsed())
    }
}

/// One core's way onto the mesh. It holds its own copy of the route table and checks one
/// atomic counter per send to see whether the table changed; only then does it lock,
/// once, to take the new copy. Sends themselves are flume's `try_send`, which never waits
/// (a queue that allocates only what it holds: `connection::start` says why not crossbeam's).
/// A connection's writer ends when the last copy naming it goes, so a core that sends
/// nothing more keeps a closed connection's writer thread until its next send.
pub struct MeshSender {
    inner: Arc<Inner>,
    routes: RefCell<(u64, Arc<Routes>)>,
}

impl MeshSender {
    /// Queues `payload` for core `core` of node `node_id`; never blocks.
    pub fn send(&self, node_id: u32, core: u16, payload: &[u8]) -> Result<(), SendError> {
        let version = self.inner.routes_version.load(Ordering::Acquire);
        if self.routes.borrow().0 != version {
            let table = self.inner.routes.lock().expect("route table").clone();
            *self.routes.borrow_mut() = (version, table);
        }
        let routes = self.routes.borrow();
        let (tx, frame) = match routes.1.get(&node_id).ok_or(SendError::Unreachable)? {
            Route::Direct(tx) => (tx, frame::encode(frame::Kind::Data, core, payload)),
            Route::Relay(tx) => {
                let mut relayed = Vec::with_capacity(4 + payload.len());
                relayed.extend_from_slice(&node_id.to_be_bytes());
                relayed.extend_from_slice(payload);
                (tx, frame::encode(frame::Kind::Relay, core, &relayed))
            }
        };
        tx.try_send(frame).map_err(|e| match e {
            flume::TrySendError::Full(_) => SendError::Full,
            flume::TrySendError::Disconnected(_) => SendError::Unreachable,
        })
    }
}

impl Inner {
    /// Publishes the routes for the senders: the queue of each connection in `peers`, and
    /// for a member on the ring without one, the queue of the member that vouched for it
    /// (`Membership::relays`). Called with `peers` locked after each change of it, and by
    /// the ticker and the gossip when the relays changed.
    fn publish_routes(&self, peers: &HashMap<u32, Conn>) {
        self.publish_routes_with(peers, self.current_relays());
    }

    /// The relays membership names now: node id -> the voucher's node id.
    fn current_relays(&self) -> HashMap<u32, u32> {
        self.membership.lock().expect("membership").relays(self.now()).into_iter().collect()
    }

    fn publish_routes_with(&self, peers: &HashMap<u32, Conn>, relays: HashMap<u32, u32>) {
        let mut table: Routes = peers.iter().map(|(&node, c)| (node, Route::Direct(c.tx.clone()))).collect();
        for (&node, via) in &relays {
            if let (false, Some(conn)) = (table.contains_key(&node), peers.get(via)) {
                table.insert(node, Route::Relay(conn.tx.clone()));
            }
        }
        let mut published = self.relays.lock().expect("relays");
        for (node, via) in &relays {
            if published.get(node) != Some(via) && !peers.contains_key(node) {
                log::info!("mesh: node {node} is reached through node {via}, which hears it");
            }
        }
        *published = relays;
        *self.routes.lock().expect("route table") = Arc::new(table);
        self.routes_version.fetch_add(1, Ordering::Release);
    }

    /// Publishes the routes again if the relays moved (a voucher came or went).
    fn refresh_relays(&self) {
        let relays = self.current_relays();
        if *self.relays.lock().expect("relays") != relays {
            let peers = self.peers.lock().expect("peer table");
            self.publish_routes_with(&peers, relays);
        }
    }

    /// A `Kind::Relay` frame: passed on to the node it names, over this node's own
    /// connection, waiting a little while that queue is full (the reader's backpressure);
    /// dropped when this node cannot reach that node either (the sender's custody sends a
    /// message again, anything else was best effort).
    fn relay(&self, core: u16, payload: &[u8]) {
        let Some((to, data)) = payload.split_first_chunk::<4>() else { return };
        let to = u32::from_be_bytes(*to);
        let tx = self.peers.lock().expect("peer table").get(&to).map(|c| c.tx.clone());
        let sent = tx.is_some_and(|tx| tx.send_timeout(frame::encode(frame::Kind::Data, core, data), self.cfg.suspicion_timeout / 4).is_ok());
        let counter = if sent { &self.counters.frames_relayed } else { &self.counters.relay_frames_dropped };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Silence after which every peer has declared this node down: suspected after one
    /// suspicion timeout, down after another, and a tick of theirs to notice.
    fn down_after(&self) -> Duration {
        self.cfg.suspicion_timeout * 2 + self.cfg.suspicion_timeout / 4
    }

    /// Is a frame read on a connection with `fence` set from before a stop of this node?
    /// A node that did not run for `down_after` (SIGSTOP, a VM paused, a swap storm) was
    /// declared down by every peer, and they sent what they held for it elsewhere; but
    /// its kernel kept taking their frames meanwhile, and reading those now would deliver
    /// each a second time. So such frames are dropped, with their connections: the ticker
    /// sets `fence` on every connection when it finds it ran that late, before it records
    /// that it ran; a reader that wakes before the ticker finds the record stale.
    fn fenced(&self, fence: &AtomicBool) -> bool {
        let last_tick = Duration::from_millis(self.last_tick_ms.load(Ordering::SeqCst));
        fence.load(Ordering::SeqCst) || self.now().saturating_sub(last_tick) > self.down_after()
    }

    fn heard(&self, peer: &Identity) {
        let changes = self.membership.lock().expect("membership").heard(peer, self.now());
        self.publish(changes);
    }

    /// Tells every core about `changes` (with the whole new ring: a core only swaps rings).
    fn publish(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let (mut down, mut up) = (Vec::new(), Vec::new());
        for c in changes {
            match c {
                Change::Up(m) => {
                    self.counters.members_up.fetch_add(1, Ordering::Relaxed);
                    log::info!("mesh: {} ({}) is up", m.name, m.addr);
                    up.push(m);
                }
                Change::Down(m) => {
                    self.counters.members_down.fetch_add(1, Ordering::Relaxed);
                    log::warn!("mesh: {} ({}) is down: its arcs pass to the members this node still hears", m.name, m.addr);
                    down.push(m);
                }
            }
        }
        let ring = self.membership.lock().expect("membership").ring_members();
        for core in &self.cores {
            let _ = core.send(Inbound::Members { ring: ring.clone(), down: down.clone(), up: up.clone() });
        }
    }

    /// Hands a frame to its core, waiting while that core's channel is full: the reader
    /// stops reading, and TCP flow control pushes back on the sender (backpressure). The
    /// peer's heartbeats then wait behind its frames, so while waiting the peer counts as
    /// heard: a frame from it in hand is proof it is alive, and a busy node must not
    /// suspect its peers for its own slowness.
    fn deliver(&self, peer: &Identity, core: u16, payload: Vec<u8>) {
        // The sender cannot know our core count; its hint only spreads the load.
        let core = core as usize % self.cores.len();
        let mut frame = Inbound::Frame(payload);
        loop {
            match self.cores[core].send_timeout(frame, self.cfg.suspicion_timeout / 4) {
                Err(flume::SendTimeoutError::Timeout(back)) => {
                    frame = back;
                    self.heard(peer);
                }
                Ok(()) | Err(flume::SendTimeoutError::Disconnected(_)) => return,
            }
        }
    }

    /// Mesh addresses a peer's gossip names: each gets a dialer if it has none.
    fn learned(self: &Arc<Self>, addrs: Vec<SocketAddr>) {
        for addr in addrs {
            self.dial(addr);
        }
    }

    /// A peer's heartbeat says it hears `hears` (its last full gossip, or this one).
    fn vouched(&self, peer: &Identity, hears: &[(String, u64)]) {
        let changes = self.membership.lock().expect("membership").vouched(&peer.name, hears, self.now());
        self.publish(changes);
        self.refresh_relays();
    }

    /// This node's gossip as a heartbeat frame: the same `Arc` for as long as the gossip
    /// does not change, so a connection that was sent it can be sent `GOSSIP_UNCHANGED`.
    fn gossip_frame(&self) -> Arc<Vec<u8>> {
        let fresh = {
            let membership = self.membership.lock().expect("membership");
            connection::heartbeat(&membership.known_addrs(), &membership.heard_directly(self.now()))
        };
        let mut last = self.last_gossip.lock().expect("last gossip");
        if **last != fresh {
            *last = Arc::new(fresh);
        }
        last.clone()
    }

    /// Queues a heartbeat on `conn`: only `GOSSIP_UNCHANGED` if `gossip` is what it was sent
    /// last. A full queue is not waited for (it carries traffic, which is proof of life); a
    /// gossip that did not fit counts as not sent, so the next heartbeat carries it in full.
    fn beat(conn: &mut Conn, gossip: &Arc<Vec<u8>>) {
        if conn.gossip_sent.as_ref().is_some_and(|sent| Arc::ptr_eq(sent, gossip)) {
            let _ = conn.tx.try_send(frame::encode(frame::Kind::Heartbeat, 0, connection::GOSSIP_UNCHANGED));
        } else if conn.tx.try_send(gossip.to_vec()).is_ok() {
            conn.gossip_sent = Some(gossip.clone());
        }
    }

    /// Adds an authenticated connection, unless one to that node is already preferred.
    fn register(self: &Arc<Self>, stream: Link, peer: Identity, initiator: String) {
        let id = self.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let _ = stream.socket().set_nodelay(true);
        if let Err(e) = bound_silence(stream.socket(), self.cfg.suspicion_timeout) {
            log::warn!("mesh: cannot bound the silence of the connection to {}: {e}", peer.name);
        }
        let node = membership::node_id(&peer.name);
        if !self.membership.lock().expect("membership").admits(&peer.name) {
            log::warn!("mesh: {} ({}) refused: {} members already (cluster.members_max)", peer.name, peer.addr, self.cfg.members_max);
            let _ = stream.socket().shutdown(std::net::Shutdown::Both);
            return;
        }
        let mut peers = self.peers.lock().expect("peer table");
        if let Some(old) = peers.get(&node) {
            let keep_old = old.peer.incarnation == peer.incarnation && old.initiator < initiator;
            if keep_old {
                let _ = stream.socket().shutdown(std::net::Shutdown::Both);
                return;
            }
            old.close();
        }
        match connection::start(self, id, stream, peer.clone(), initiator) {
            Ok(mut conn) => {
                Self::beat(&mut conn, &self.gossip_frame());
                peers.insert(node, conn);
                self.publish_routes(&peers);
            }
            Err(e) => log::error!("mesh: cannot start threads for {}: {e}", peer.name),
        }
        drop(peers);
        self.heard(&peer);
    }

    fn connection_ended(&self, id: u64, peer: &Identity) {
        let node = membership::node_id(&peer.name);
        let mut peers = self.peers.lock().expect("peer table");
        if peers.get(&node).is_some_and(|c| c.id == id) {
            // Closed both ways: a writer blocked on a broken path gives up now.
            if let Some(conn) = peers.remove(&node) {
                conn.close();
            }
            self.publish_routes(&peers);
            self.peers_changed.notify_all();
        }
    }

    /// Sleeps while a connection to `addr` is up; true if one was. Woken when a connection
    /// ends, and every [`CONNECTED_RECHECK`] regardless. (It polled every 100 ms: with 52
    /// peers, 520 wake-ups a second per node for nothing, and with 53 nodes on two cores
    /// an idle cluster kept them ~38 % busy.)
    fn wait_while_connected(&self, addr: SocketAddr) -> bool {
        let mut peers = self.peers.lock().expect("peer table");
        let mut was = false;
        while peers.values().any(|c| c.peer.addr == addr) {
            was = true;
            peers = self.peers_changed.wait_timeout(peers, CONNECTED_RECHECK).expect("peer table").0;
        }
        was
    }

    /// Keeps one dialer thread per address for the process's life: a member that leaves
    /// may come back at the same address, and that is how it is found again.
    /// At most `members_max` addresses are dialed: gossip cannot start threads without bound.
    fn dial(self: &Arc<Self>, addr: SocketAddr) {
        let mut dialing = self.dialing.lock().expect("dialers");
        if addr == self.me.addr || dialing.contains(&addr) {
            return;
        }
        if dialing.len() >= self.cfg.members_max {
            log::warn!("mesh: not dialing {addr}: {} addresses dialed already (cluster.members_max)", dialing.len());
            return;
        }
        dialing.insert(addr);
        drop(dialing);
        let inner = self.clone();
        let spawned = thread::Builder::new().name(format!("mesh-dial-{addr}")).spawn(move || dial_loop(&inner, addr));
        if let Err(e) = spawned {
            log::error!("mesh: cannot start a dialer for {addr}: {e}");
        }
    }
}

/// Each connection is handshaken on a thread of its own, if it gets one of the
/// `pending_handshakes_max` places (else it is closed at once) and for at most
/// `handshake_timeout` (see [`pending`]).
fn accept_loop(inner: &Arc<Inner>, listener: TcpListener) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let from = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        let Some(ticket) = inner.handshakes.admit(&stream, &from) else { continue };
        let inner = inner.clone();
        let _ = thread::Builder::new().name("mesh-hello".into()).spawn(move || match accept(&inner, stream) {
            Ok((link, peer)) if ticket.complete() => {
                drop(ticket);
                let initiator = peer.name.clone();
                inner.register(link, peer, initiator);
            }
            Ok((_, peer)) => log::info!("mesh: handshake with {from} ({}) completed too late", peer.name),
            Err(_) if !ticket.complete() => log::info!("mesh: handshake with {from} timed out (handshake_timeout_ms)"),
            Err(e) => log_handshake_failure(&from, &e),
        });
    }
}

fn accept(inner: &Inner, stream: TcpStream) -> Result<(Link, Identity), HandshakeError> {
    stream.set_read_timeout(Some(inner.cfg.handshake_timeout))?;
    let mut link = Link::accept(stream, inner.cfg.tls.as_ref()).map_err(tls_refused)?;
    let binding = link.binding()?;
    let peer = handshake::respond(&mut link, &inner.cfg.secret, &inner.me, &binding)?;
    Ok((link, peer))
}

fn dial_loop(inner: &Arc<Inner>, addr: SocketAddr) {
    let mut backoff = RECONNECT_MIN;
    loop {
        if inner.wait_while_connected(addr) {
            backoff = RECONNECT_MIN;
        }
        match connect(inner, addr) {
            Ok((stream, peer)) => {
                backoff = RECONNECT_MIN;
                let me = inner.me.name.clone();
                inner.register(stream, peer, me);
                continue;
            }
            Err(e) => {
                if let HandshakeError::Refused(_) = e {
                    log_handshake_failure(&addr.to_string(), &e);
                }
            }
        }
        // Jitter keeps a whole cluster from redialling a returning node in lockstep.
        let jitter = rand::thread_rng().gen_range(0..=backoff.as_millis() as u64 / 2);
        thread::sleep(backoff + Duration::from_millis(jitter));
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}

/// A live connection hears a heartbeat every quarter of the suspicion timeout, so a whole
/// timeout without a byte means the path is broken (a partition, a frozen peer), though
/// TCP may keep the connection ESTABLISHED for minutes of retransmission backoff. A read
/// that waits that long fails, the connection is closed both ways (which frees a writer
/// blocked on it), and the dialer tries again at once instead of waiting for the kernel:
/// a healed partition is noticed in about one redial. `TCP_USER_TIMEOUT` gives the kernel
/// the same bound for data it sent and never saw acknowledged. Writes get no timeout of
/// their own: a peer that is alive but slow to read (its cores are full) still
/// acknowledges the window probes, and must slow this node down, not be cut off.
fn bound_silence(socket: &TcpStream, silence: Duration) -> io::Result<()> {
    socket.set_read_timeout(Some(silence))?;
    socket2::SockRef::from(socket).set_tcp_user_timeout(Some(silence))
}

fn connect(inner: &Inner, addr: SocketAddr) -> Result<(Link, Identity), HandshakeError> {
    // A SYN into a partition is never answered; waiting longer than the suspicion timeout
    // for it would only delay the redial that finds the path healed.
    let stream = TcpStream::connect_timeout(&addr, inner.cfg.handshake_timeout.min(inner.cfg.suspicion_timeout))?;
    stream.set_read_timeout(Some(inner.cfg.handshake_timeout))?;
    let mut link = Link::dial(stream, inner.cfg.tls.as_ref()).map_err(tls_refused)?;
    let binding = link.binding()?;
    let peer = handshake::initiate(&mut link, &inner.cfg.secret, &inner.me, &binding)?;
    Ok((link, peer))
}

/// A TLS handshake that fails on a live connection is a peer that does not speak the
/// mesh's TLS setting (or is no node at all): refused, and logged as such. A connection
/// that simply ended is left for the redial.
fn tls_refused(e: std::io::Error) -> HandshakeError {
    match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::Other => HandshakeError::Refused(format!("TLS handshake: {e}")),
        _ => HandshakeError::Io(e),
    }
}

fn log_handshake_failure(from: &str, e: &HandshakeError) {
    match e {
        HandshakeError::Refused(why) => log::warn!("mesh: refused {from}: {why}"),
        HandshakeError::Io(io) => log::info!("mesh: handshake with {from} failed: {io}"),
    }
}

/// Heartbeats four times per suspicion timeout, so a member is suspected only after
/// several in a row were missed; then failure detection.
fn tick_loop(inner: &Arc<Inner>) {
    let every = inner.cfg.suspicion_timeout / 4;
    loop {
        thread::sleep(every);
        let now = inner.now();
        let stopped = now.saturating_sub(Duration::from_millis(inner.last_tick_ms.load(Ordering::SeqCst)));
        if stopped > inner.down_after() {
            log::warn!("mesh: this node did not run for {} ms: every peer has declared it down, so what they sent meanwhile is dropped", stopped.as_millis());
            for conn in inner.peers.lock().expect("peer table").values() {
                conn.fence.store(true, Ordering::SeqCst);
            }
            for core in &inner.cores {
                let _ = core.send(Inbound::Resumed);
            }
        }
        inner.last_tick_ms.store(now.as_millis() as u64, Ordering::SeqCst);
        let gossip = inner.gossip_frame();
        for conn in inner.peers.lock().expect("peer table").values_mut() {
            Inner::beat(conn, &gossip);
        }
        let changes = inner.membership.lock().expect("membership").tick(inner.now());
        inner.publish(changes);
        inner.refresh_relays();
    }
}

#[cfg(test)]
mod tests;
