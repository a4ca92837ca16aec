//! Real sockets on 127.0.0.1: meshes in one process find each other, carry frames to the
//! named core in order, and keep out a node without the secret.

use std::time::{Duration, Instant};

use super::*;

const WAIT: Duration = Duration::from_secs(10);

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn config(name: &str, listen: SocketAddr, seeds: Vec<SocketAddr>, secret: &[u8]) -> ClusterConfig {
    ClusterConfig {
        node_name: name.into(),
        listen,
        seeds,
        secret: secret.to_vec(),
        suspicion_timeout: Duration::from_millis(400),
        outbound_frames_max: 1024,
        frame_bytes_max: 1 << 20,
        inbound_messages_max: 1024,
        handshake_timeout: Duration::from_secs(5),
        pending_handshakes_max: 16,
        members_max: 64,
        tls: None,
    }
}

/// Mesh TLS from a fresh self-signed certificate, as a dev node has.
fn mesh_tls() -> Option<transport::MeshTls> {
    let cert = rcgen::generate_simple_self_signed(vec!["node.test".into()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    Some(transport::MeshTls::new(vec![cert.cert.der().clone()], key).unwrap())
}

/// The next membership update a core receives, skipping frames.
fn next_ring(rx: &flume::Receiver<Inbound>) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        match rx.recv_deadline(deadline).expect("a membership update in time") {
            Inbound::Members { ring, .. } => return ring.into_iter().map(|m| m.name).collect(),
            Inbound::Frame(_) | Inbound::Resumed => {}
        }
    }
}

fn until_ring(rx: &flume::Receiver<Inbound>, want: &[&str]) {
    while next_ring(rx) != want {}
}

#[test]
fn three_nodes_join_through_one_seed_and_carry_frames_in_order() {
    let secret = b"0123456789abcdef";
    let (a, b, c) = (free_addr(), free_addr(), free_addr());
    let (na, ra) = Cluster::start(config("a", a, vec![], secret), 2).unwrap();
    let (_nb, rb) = Cluster::start(config("b", b, vec![a], secret), 2).unwrap();
    // c knows only a, and learns b from a's gossip.
    let (nc, rc) = Cluster::start(config("c", c, vec![a], secret), 1).unwrap();
    until_ring(&ra[0], &["a", "b", "c"]);
    until_ring(&rb[1], &["a", "b", "c"]);
    until_ring(&rc[0], &["a", "b", "c"]);
    let deadline = Instant::now() + WAIT;
    while nc.send(membership::node_id("b"), 1, b"probe").is_err() {
        assert!(Instant::now() < deadline, "c never connected to b");
        std::thread::sleep(Duration::from_millis(20));
    }
    for i in 0..100u32 {
        na.send(membership::node_id("b"), 1, &i.to_be_bytes()).unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 100 {
        if let Inbound::Frame(p) = rb[1].recv_timeout(WAIT).unwrap() {
            if p != b"probe" {
                got.push(u32::from_be_bytes(p.try_into().unwrap()));
            }
        }
    }
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    assert_eq!(na.send(12345, 0, b"x"), Err(SendError::Unreachable));
    let status = na.status();
    assert_eq!(status.iter().map(|s| s.state.as_str()).collect::<Vec<_>>(), ["up", "up", "up"]);
}

#[test]
fn a_node_with_another_secret_never_becomes_a_member() {
    let (a, x) = (free_addr(), free_addr());
    let (na, ra) = Cluster::start(config("a", a, vec![], b"0123456789abcdef"), 1).unwrap();
    let (nx, _rx) = Cluster::start(config("x", x, vec![a], b"fedcba9876543210"), 1).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert!(ra[0].try_recv().is_err(), "no membership change at all");
    assert_eq!(na.status().len(), 1);
    assert_eq!(nx.status().len(), 1);
}

#[test]
fn a_node_whose_core_stops_reading_still_hears_its_peers() {
    let secret = b"0123456789abcdef";
    let (a, b) = (free_addr(), free_addr());
    let mut cfg_b = config("b", b, vec![a], secret);
    cfg_b.inbound_messages_max = 1;
    let (na, ra) = Cluster::start(config("a", a, vec![], secret), 1).unwrap();
    let (nb, rb) = Cluster::start(cfg_b, 1).unwrap();
    until_ring(&ra[0], &["a", "b"]);
    until_ring(&rb[0], &["a", "b"]);
    // b's one core takes nothing for six suspicion timeouts while a keeps sending: b's
    // reader waits on the full channel, and a's heartbeats queue behind a's frames.
    let stalled_until = Instant::now() + Duration::from_millis(2400);
    let mut sent = 0u32;
    while Instant::now() < stalled_until {
        if na.send(membership::node_id("b"), 0, &sent.to_be_bytes()).is_ok() {
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(sent > 1, "a's frames went out");
    let states: Vec<&str> = nb.status().iter().map(|s| s.state.as_str()).collect();
    assert_eq!(states, ["up", "up"], "b suspected a for b's own stall");
    // And nothing was lost meanwhile: b's core reads every frame, in order.
    let mut got = Vec::new();
    while got.len() < sent as usize {
        if let Inbound::Frame(p) = rb[0].recv_timeout(WAIT).unwrap() {
            got.push(u32::from_be_bytes(p.try_into().unwrap()));
        }
    }
    assert_eq!(got, (0..sent).collect::<Vec<_>>());
}

#[test]
fn over_tls_frames_of_every_size_arrive_in_order_and_a_plain_node_is_refused() {
    let secret = b"0123456789abcdef";
    let (a, b, p) = (free_addr(), free_addr(), free_addr());
    let tls = |name, listen, seeds| ClusterConfig { tls: mesh_tls(), ..config(name, listen, seeds, secret) };
    let (na, ra) = Cluster::start(tls("a", a, vec![]), 1).unwrap();
    let (_nb, rb) = Cluster::start(tls("b", b, vec![a]), 1).unwrap();
    until_ring(&ra[0], &["a", "b"]);
    until_ring(&rb[0], &["a", "b"]);
    // Sizes past one TLS record (16 KiB) and one socket read (64 KiB).
    let sizes = [0usize, 1, 100, 16_385, 70_000, 300_000, 5];
    let deadline = Instant::now() + WAIT;
    for (i, &n) in sizes.iter().enumerate() {
        let payload = vec![i as u8; n];
        while na.send(membership::node_id("b"), 0, &payload).is_err() {
            assert!(Instant::now() < deadline, "a never connected to b");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let mut got = Vec::new();
    while got.len() < sizes.len() {
        if let Inbound::Frame(p) = rb[0].recv_timeout(WAIT).unwrap() {
            assert!(p.iter().all(|&x| x == got.len() as u8), "frame {} garbled", got.len());
            got.push(p.len());
        }
    }
    assert_eq!(got, sizes);
    // A node that speaks plain TCP never joins.
    let (np, _rp) = Cluster::start(config("plain", p, vec![a], secret), 1).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(na.status().len(), 2, "a lists only itself and b");
    assert_eq!(np.status().len(), 1);
}
