//! martlet's side of the cluster (issue 4): starts the node mesh of `shards::cluster` from the
//! `[cluster]` section, lets the router use it as its [`NodeLink`], turns membership into
//! the global ring, and prints `martlet cluster status`.
//!
//! The global ring places each node at `vnodes` points `hash(ip:port + "#" + i)` of its mesh
//! address and identifies it by `hash(node_name)`; `hash(bare JID)` picks the node, and that
//! node's own core ring the core. Every node computes the same ring from the same members,
//! so no lookup table is shared.

use std::fmt::Write as _;
use std::rc::Rc;
use std::time::Duration;

use shards::cluster::membership::Member;
use shards::cluster::{Cluster, ClusterConfig, Inbound, MeshSender, SendError};
use shards::ring::TwoLevelRing;

use crate::config::Config;
use crate::router::node_link::{self, LinkError, NodeLink};
use crate::router::CoreState;

/// The running mesh, and what it brings each core.
pub type Started = (Cluster, Vec<flume::Receiver<Inbound>>);

/// Starts the mesh when `[cluster] listen` is set; one inbound receiver per core.
pub fn start(cfg: &Config, cores: usize) -> Result<Option<Started>, String> {
    let Some(listen) = cfg.cluster_addr() else { return Ok(None) };
    let c = &cfg.cluster;
    let mesh = ClusterConfig {
        node_name: c.node_name.clone(),
        listen,
        seeds: c.seeds.iter().map(|s| s.parse().expect("checked by Config::load")).collect(),
        secret: c.secret.as_bytes().to_vec(),
        suspicion_timeout: Duration::from_millis(c.suspicion_timeout_ms),
        outbound_frames_max: c.outbound_frames_max,
        frame_bytes_max: c.frame_bytes_max,
        inbound_messages_max: cfg.limits.core_mailbox_messages_max,
        handshake_timeout: Duration::from_millis(c.handshake_timeout_ms),
        pending_handshakes_max: c.pending_handshakes_max,
        members_max: c.members_max,
        tls: if c.tls { Some(crate::tls::mesh_tls(cfg).map_err(|e| format!("cluster.tls: {e}"))?) } else { None },
    };
    let (cluster, inboxes) = Cluster::start(mesh, cores).map_err(|e| format!("cluster.listen {listen}: {e}"))?;
    let tls = if c.tls { "TLS" } else { "plain TCP" };
    log::info!("cluster: node {} on {listen} ({tls}), seeds {:?}", c.node_name, c.seeds);
    Ok(Some((cluster, inboxes)))
}

/// The global ring over `members`, with this node's core ring.
pub fn ring(cfg: &Config, members: &[Member], local: u32, cores: usize) -> TwoLevelRing {
    let nodes: Vec<(String, u32)> = members.iter().map(|m| (m.addr.to_string(), m.node_id)).collect();
    TwoLevelRing::new(&nodes, cfg.cluster.vnodes, local, cores)
}

/// The router's way to other nodes: one per core.
pub struct MeshLink(pub MeshSender);

impl NodeLink for MeshLink {
    fn send(&self, node: u32, core_hint: u16, frame: Vec<u8>) -> Result<(), (LinkError, Vec<u8>)> {
        self.0.send(node, core_hint, &frame).map_err(|e| {
            let why = match e {
                SendError::Unreachable => LinkError::Unreachable,
                SendError::Full => LinkError::Full,
            };
            (why, frame)
        })
    }
}

/// A core's loop over what the mesh brings it: frames for its actors, and ring changes.
pub async fn serve_core(state: Rc<CoreState>, inbox: flume::Receiver<Inbound>, cores: usize) {
    glommio::spawn_local(state.clone().custody_ticks()).detach();
    while let Ok(msg) = inbox.recv_async().await {
        match msg {
            Inbound::Frame(bytes) => match node_link::decode(&bytes) {
                Ok(msg) => state.dispatch(msg),
                Err(e) => log::error!("core {}: unreadable frame from the mesh dropped: {e}", state.id),
            },
            Inbound::Members { ring: members, down, up } => {
                let ring = ring(&state.cfg, &members, state.local_node(), cores);
                let down: Vec<u32> = down.iter().map(|m| m.node_id).collect();
                let up: Vec<u32> = up.iter().map(|m| m.node_id).collect();
                state.ring_changed(ring, &down, &up);
            }
            Inbound::Resumed => state.reregister_everywhere(),
        }
    }
}

/// The ring as membership stands: every member not down.
fn current_ring(cfg: &Config, cluster: &Cluster, cores: usize) -> (TwoLevelRing, Vec<Member>) {
    let members: Vec<Member> =
        cluster.status().into_iter().filter(|r| r.state.as_str() != "down").map(|r| r.member).collect();
    (ring(cfg, &members, cluster.node_id(), cores), members)
}

/// `martlet cluster owner JID`: the member owning a bare JID's arc, by name.
pub fn owner_text(cfg: &Config, cluster: &Cluster, cores: usize, jid: &str) -> Result<String, String> {
    let bare = jid::BareJid::new(jid).map_err(|e| format!("{jid}: not a bare JID: {e}"))?;
    let (ring, members) = current_ring(cfg, cluster, cores);
    let owner = ring.owner(&bare.to_string()).node;
    let member = members.iter().find(|m| m.node_id == owner).expect("the ring is made of these members");
    Ok(format!("{} {}\n", member.name, member.addr))
}

/// `martlet cluster status`: every member, its state, and its share of the ring.
pub fn status_text(cfg: &Config, cluster: &Cluster, cores: usize) -> String {
    let rows = cluster.status();
    let shares = current_ring(cfg, cluster, cores).0.node_shares();
    let mut out = format!("{:<20} {:<22} {:<8} {:>7} {:>10}\n", "node", "mesh address", "state", "ring %", "silent ms");
    for r in rows {
        let share = shares.get(&r.member.node_id).map_or(0.0, |s| s * 100.0);
        let _ = writeln!(
            out,
            "{:<20} {:<22} {:<8} {:>7.1} {:>10}",
            r.member.name,
            r.member.addr.to_string(),
            r.state.as_str(),
            share,
            r.silent_for.as_millis()
        );
    }
    out
}
