//! One authenticated connection to another node: a writer thread that drains the peer's
//! bounded queue into as few `write` calls as it can, and a reader thread that hands data
//! frames to the destination core and liveness to membership.

use std::io::BufReader;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use flume::{Receiver, Sender};

use super::frame::{self, Kind};
use super::handshake::Identity;
use super::transport::{Link, ReadHalf, WriteHalf};
use super::Inner;

/// Bytes gathered into one `write` at most: many small frames, few syscalls.
const WRITE_BATCH_BYTES_MAX: usize = 256 * 1024;
/// Read buffer per connection, in bytes.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// The live connection to one node, as the peer table holds it.
pub struct Conn {
    pub id: u64,
    pub peer: Identity,
    /// Name of the node that dialled: of two simultaneous connections between the same
    /// pair, both ends keep the one dialled by the smaller name, so they agree.
    pub initiator: String,
    pub tx: Sender<Vec<u8>>,
    /// Set when this node stopped running for long enough that the peer gave it up
    /// (`Inner::fenced`): what the connection brings from then on is not read.
    pub fence: Arc<AtomicBool>,
    /// The last full gossip queued on this connection (`Inner::gossip_frame`): while the
    /// gossip stays the same, heartbeats carry only `GOSSIP_UNCHANGED`.
    pub gossip_sent: Option<Arc<Vec<u8>>>,
    stream: TcpStream,
}

impl Conn {
    pub fn close(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Starts the threads of a freshly authenticated connection and returns its table entry.
pub fn start(inner: &Arc<Inner>, id: u64, link: Link, peer: Identity, initiator: String) -> std::io::Result<Conn> {
    // flume's bounded queue grows as frames queue up; crossbeam's array queue allocates
    // and touches every slot up front: 32 B x 65,536 frames = 2 MiB resident per peer, so
    // a 53-node cluster held ~100 MiB per node in empty queues.
    let (tx, rx) = flume::bounded(inner.cfg.outbound_frames_max);
    let stream = link.socket().try_clone()?;
    let (reader, writer) = link.split(tx.clone())?;
    let name = peer.name.clone();
    thread::Builder::new().name(format!("mesh-w-{name}")).spawn(move || write_loop(writer, rx))?;
    let (inner2, peer2) = (inner.clone(), peer.clone());
    let fence = Arc::new(AtomicBool::new(false));
    let fence2 = fence.clone();
    thread::Builder::new().name(format!("mesh-r-{name}")).spawn(move || read_loop(&inner2, id, reader, &peer2, &fence2))?;
    Ok(Conn { id, peer, initiator, tx, fence, gossip_sent: None, stream })
}

fn write_loop(mut stream: WriteHalf, rx: Receiver<Vec<u8>>) {
    let mut batch = Vec::with_capacity(WRITE_BATCH_BYTES_MAX);
    // Ends when the connection leaves the peer table (every sender dropped).
    while let Ok(first) = rx.recv() {
        batch.clear();
        batch.extend_from_slice(&first);
        while batch.len() < WRITE_BATCH_BYTES_MAX {
            match rx.try_recv() {
                Ok(f) => batch.extend_from_slice(&f),
                Err(_) => break,
            }
        }
        if stream.send(&batch).is_err() {
            stream.shut_down();
            return;
        }
    }
}

fn read_loop(inner: &Arc<Inner>, id: u64, stream: ReadHalf, peer: &Identity, fence: &AtomicBool) {
    let mut r = BufReader::with_capacity(READ_BUFFER_BYTES, stream);
    // Whom the peer's last full heartbeat on this connection said it hears.
    let mut hears = Vec::new();
    let end = loop {
        let f = match frame::read(&mut r, inner.cfg.frame_bytes_max) {
            Ok(f) => f,
            // The read timeout (`bound_silence`): no frame, not even a heartbeat, for a
            // whole suspicion timeout.
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                inner.counters.silent_closed.fetch_add(1, Ordering::Relaxed);
                break std::io::Error::new(e.kind(), "silent for the suspicion timeout");
            }
            Err(e) => break e,
        };
        if inner.fenced(fence) {
            inner.counters.connections_fenced.fetch_add(1, Ordering::Relaxed);
            break std::io::Error::other("fenced: it brought frames from before this node stopped running");
        }
        inner.heard(peer);
        match f.kind {
            Kind::Data => inner.deliver(peer, f.core, f.payload),
            Kind::Heartbeat if f.payload == GOSSIP_UNCHANGED => inner.vouched(peer, &hears),
            Kind::Heartbeat => {
                let addrs;
                (addrs, hears) = parse_heartbeat(&f.payload);
                inner.learned(addrs);
                inner.vouched(peer, &hears);
            }
            Kind::Relay => inner.relay(f.core, &f.payload),
            Kind::Hello => break std::io::Error::new(std::io::ErrorKind::InvalidData, "hello after the handshake"),
        }
    };
    log::info!("mesh: connection to {} ({}) ended: {end}", peer.name, peer.addr);
    inner.connection_ended(id, peer);
}

/// Heartbeat payload saying that the sender's gossip is what its last full heartbeat on this
/// connection said. Gossip changes only when a member comes, goes or falls silent; sent in
/// full four times per suspicion timeout to every peer, it made the idle mesh's cost grow
/// with the cube of its size (each of N² heartbeats parsed N addresses and N names).
/// Never a line of a full heartbeat (an address or `hears ...`).
pub const GOSSIP_UNCHANGED: &[u8] = b"=";

/// Heartbeat payload, a line each: the mesh addresses this node knows, so a node that
/// joined through one seed finds every other member; then `hears INCARNATION NAME` for
/// each member it heard itself of late, so a member that cannot hear that one knows it is
/// alive (`membership`).
pub fn heartbeat(addrs: &[std::net::SocketAddr], hears: &[(String, u64)]) -> Vec<u8> {
    let mut lines: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    lines.extend(hears.iter().map(|(name, incarnation)| format!("hears {incarnation} {name}")));
    frame::encode(Kind::Heartbeat, 0, lines.join("\n").as_bytes())
}

/// What a heartbeat says: the addresses, and whom its sender hears. Lines it cannot read
/// are skipped.
pub fn parse_heartbeat(payload: &[u8]) -> (Vec<std::net::SocketAddr>, Vec<(String, u64)>) {
    let (mut addrs, mut hears) = (Vec::new(), Vec::new());
    for line in std::str::from_utf8(payload).unwrap_or("").lines() {
        if let Some(rest) = line.strip_prefix("hears ") {
            if let Some((incarnation, name)) = rest.split_once(' ') {
                if let Ok(incarnation) = incarnation.parse() {
                    hears.push((name.to_string(), incarnation));
                }
            }
        } else if let Ok(addr) = line.parse() {
            addrs.push(addr);
        }
    }
    (addrs, hears)
}
