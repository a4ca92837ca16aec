//! Consistent hashing with virtual nodes on a 2^32 ring (seed 001, section 3).
//!
//! Two levels: [`HashRing`] of nodes picks the node that owns a key; on that node a second
//! [`HashRing`] of its cores picks the owner core, keyed by `hash(key + local address)`. The
//! re-hash matters: keys that reached a node all hash into that node's arcs of the first ring,
//! so reusing the first hash on the second ring would crowd them onto a few cores.
//!
//! The hash is xxHash32 with a fixed seed: stable across processes, builds and machines, which
//! a cluster needs (every node must agree on every owner).

use xxhash_rust::xxh32::Xxh32;

/// Seed of every ring hash. Changing it moves every user to another owner.
const RING_HASH_SEED: u32 = 0x6d61_7274; // "mart"

/// `hash(parts[0] + parts[1] + ...)` on the 2^32 ring, without building the concatenation.
pub fn ring_hash(parts: &[&[u8]]) -> u32 {
    let mut h = Xxh32::new(RING_HASH_SEED);
    for part in parts {
        h.update(part);
    }
    h.digest()
}

/// A ring of members, each placed at `vnodes` points `hash(member_name + "#" + i)`.
#[derive(Clone, Debug)]
pub struct HashRing<M> {
    /// Points sorted by position; a key belongs to the first point at or after its hash.
    points: Vec<(u32, M)>,
}

impl<M: Clone> HashRing<M> {
    /// Places each `(name, member)` at `vnodes` virtual points. Names must be unique and stable
    /// (an address, a node name): they decide where the member's arcs fall.
    pub fn new(members: &[(String, M)], vnodes: u32) -> Self {
        assert!(!members.is_empty(), "a ring needs at least one member");
        assert!(vnodes > 0, "a member needs at least one point");
        let mut points = Vec::with_capacity(members.len() * vnodes as usize);
        for (name, member) in members {
            for i in 0..vnodes {
                let pos = ring_hash(&[name.as_bytes(), b"#", i.to_string().as_bytes()]);
                points.push((pos, member.clone()));
            }
        }
        points.sort_by_key(|(pos, _)| *pos);
        HashRing { points }
    }

    /// The member owning `hash`: the first point clockwise, wrapping past 2^32 - 1.
    pub fn owner(&self, hash: u32) -> &M {
        let idx = self.points.partition_point(|(pos, _)| *pos < hash);
        &self.points[idx % self.points.len()].1
    }
}

impl<M: Clone + Eq + std::hash::Hash> HashRing<M> {
    /// Each member's share of the 2^32 ring (the arcs ending at its points), summing to 1.
    pub fn shares(&self) -> std::collections::HashMap<M, f64> {
        let mut shares = std::collections::HashMap::new();
        let mut prev = self.points.last().map_or(0, |p| p.0);
        for (pos, member) in &self.points {
            let arc = pos.wrapping_sub(prev) as f64;
            *shares.entry(member.clone()).or_insert(0.0) += arc / (u32::MAX as f64 + 1.0);
            prev = *pos;
        }
        shares
    }
}

/// Where a key lives: the node, and the core on that node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    pub node: u32,
    pub core: usize,
}

/// The two-level lookup of the design: node ring, then this node's core ring.
///
/// Only the local node's core ring is known here; for a key owned by another node the core is
/// decided there (its own `TwoLevelRing`), so `core` is meaningful only when `node == local`.
#[derive(Clone, Debug)]
pub struct TwoLevelRing {
    nodes: HashRing<u32>,
    cores: HashRing<usize>,
    local_node: u32,
    local_address: String,
}

/// Virtual points per core on the local ring: enough that 2..64 cores get even shares
/// (a share deviates about 1/sqrt(points) from fair: ~4 % at 512; see the unit test).
pub const CORE_VNODES: u32 = 512;

impl TwoLevelRing {
    /// `nodes` are `(node address, node id)`; `local_address` names this node on the ring.
    pub fn new(nodes: &[(String, u32)], node_vnodes: u32, local_node: u32, core_count: usize) -> Self {
        let local_address = nodes
            .iter()
            .find(|(_, id)| *id == local_node)
            .map(|(addr, _)| addr.clone())
            .expect("the local node is a member of the node ring");
        let cores: Vec<(String, usize)> =
            (0..core_count).map(|c| (format!("{local_address}/core{c}"), c)).collect();
        TwoLevelRing {
            nodes: HashRing::new(nodes, node_vnodes),
            cores: HashRing::new(&cores, CORE_VNODES),
            local_node,
            local_address,
        }
    }

    /// A ring of one node: the single-server case.
    pub fn single_node(local_address: &str, core_count: usize) -> Self {
        Self::new(&[(local_address.to_owned(), 0)], 1, 0, core_count)
    }

    /// Owner of `key`: `hash(key)` on the node ring, then `hash(key + local address)` on the
    /// core ring when the node is this one.
    pub fn owner(&self, key: &str) -> Owner {
        let node = *self.nodes.owner(ring_hash(&[key.as_bytes()]));
        let core = if node == self.local_node { self.local_core(key) } else { usize::MAX };
        Owner { node, core }
    }

    /// The core of this node that owns `key`; the check an owner runs on what it receives.
    pub fn local_core(&self, key: &str) -> usize {
        *self.cores.owner(ring_hash(&[key.as_bytes(), self.local_address.as_bytes()]))
    }

    pub fn local_node(&self) -> u32 {
        self.local_node
    }

    /// Each node's share of the node ring, by node id.
    pub fn node_shares(&self) -> std::collections::HashMap<u32, f64> {
        self.nodes.shares()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_sum_to_one_and_are_fair_with_enough_points() {
        let members: Vec<(String, u8)> = (0..4).map(|i| (format!("10.0.0.{i}:5270"), i)).collect();
        let shares = HashRing::new(&members, 160).shares();
        assert!((shares.values().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(shares.values().all(|s| (0.15..0.35).contains(s)), "{shares:?}");
    }

    #[test]
    fn owner_wraps_around_the_ring() {
        let ring = HashRing::new(&[("a".into(), 1u8), ("b".into(), 2u8)], 4);
        let last = ring.points.last().unwrap().0;
        assert_eq!(ring.owner(last.wrapping_add(1)), &ring.points[0].1);
        assert_eq!(ring.owner(0), &ring.points[0].1);
    }

    #[test]
    fn cores_get_even_shares() {
        for cores in [2usize, 4, 8, 16] {
            let ring = TwoLevelRing::single_node("127.0.0.1:5222", cores);
            let mut counts = vec![0u32; cores];
            let users = 200_000;
            for i in 0..users {
                counts[ring.owner(&format!("user{i}@localhost")).core] += 1;
            }
            let fair = users as f64 / cores as f64;
            for c in counts {
                let skew = (c as f64 - fair).abs() / fair;
                assert!(skew < 0.15, "{cores} cores: share {c} is {skew:.3} off fair {fair}");
            }
        }
    }

    #[test]
    fn adding_a_node_moves_only_its_arcs() {
        let three: Vec<(String, u32)> = (0..3).map(|i| (format!("10.0.0.{i}:5222"), i)).collect();
        let mut four = three.clone();
        four.push(("10.0.0.3:5222".into(), 3));
        let before = TwoLevelRing::new(&three, 64, 0, 2);
        let after = TwoLevelRing::new(&four, 64, 0, 2);
        for i in 0..50_000 {
            let key = format!("u{i}@d");
            let (b, a) = (before.owner(&key).node, after.owner(&key).node);
            assert!(a == b || a == 3, "{key} moved from {b} to {a}, not to the new node");
        }
    }

    #[test]
    fn core_ring_rehash_avoids_skew() {
        // Keys owned by one node of a 2-node ring still spread evenly over its cores.
        let nodes: Vec<(String, u32)> = (0..2).map(|i| (format!("n{i}"), i)).collect();
        let ring = TwoLevelRing::new(&nodes, 1, 0, 4);
        let mut counts = [0u32; 4];
        for i in 0..100_000 {
            let key = format!("user{i}@localhost");
            let owner = ring.owner(&key);
            if owner.node == 0 {
                counts[owner.core] += 1;
            }
        }
        let total: u32 = counts.iter().sum();
        for c in counts {
            assert!((c as f64) > total as f64 / 4.0 * 0.8, "{counts:?}");
        }
    }
}
