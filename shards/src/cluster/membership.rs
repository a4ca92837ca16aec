//! Who is in the cluster, as one node sees it: a pure state machine fed with what the node
//! heard and when, so the same code runs under the real clock and in a seeded simulation.
//!
//! A member is **up** from its first authenticated contact; **suspect** after
//! `suspicion_timeout` without a frame from it (heartbeats flow every quarter of that); and
//! **down** after as long again. Suspect members keep their arcs of the ring (a slow node
//! is not evicted by one missed beat: senders retry meanwhile), down members lose them.
//! A member heard again after being down is up again; one heard with a new incarnation
//! restarted, so its former self is reported down first (its sessions died with it).
//!
//! **Heard through another member.** Each heartbeat lists the members its sender heard
//! directly of late; a member this node cannot hear, but that one it hears vouches for,
//! is alive (the SWIM idea of an indirect probe, carried by the heartbeats): one broken
//! link does not take a reachable node off the ring, and the mesh relays through the
//! voucher instead ([`Membership::relays`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::handshake::Identity;
use crate::ring::ring_hash;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Up,
    Suspect,
    Down,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Suspect => "suspect",
            State::Down => "down",
        }
    }
}

/// A member as the ring needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub addr: SocketAddr,
    /// `ring_hash(name)`: the same on every node, so it can address the node in messages.
    pub node_id: u32,
}

/// A change the cores must act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Up(Member),
    Down(Member),
}

/// One row of `martlet cluster status`.
#[derive(Clone, Debug)]
pub struct MemberStatus {
    pub member: Member,
    pub state: State,
    pub silent_for: Duration,
}

struct Entry {
    member: Member,
    incarnation: u64,
    state: State,
    /// Last frame from the member itself.
    last_heard: Duration,
    /// Last heartbeat of another member that said it hears this one, and whose it was.
    last_vouched: Duration,
    via: Option<String>,
}

impl Entry {
    fn new(member: Member, incarnation: u64, now: Duration) -> Entry {
        Entry { member, incarnation, state: State::Up, last_heard: now, last_vouched: Duration::ZERO, via: None }
    }

    /// Silent: neither heard nor vouched for.
    fn silent(&self, now: Duration) -> Duration {
        now.saturating_sub(self.last_heard.max(self.last_vouched))
    }

    /// A restart (a new incarnation) is its former self down; then it is up.
    fn alive(&mut self, incarnation: u64, changes: &mut Vec<Change>) {
        if self.incarnation != incarnation && self.state != State::Down {
            changes.push(Change::Down(self.member.clone()));
            self.state = State::Down;
        }
        if self.state == State::Down {
            changes.push(Change::Up(self.member.clone()));
        }
        self.incarnation = incarnation;
        self.state = State::Up;
    }
}

pub fn node_id(name: &str) -> u32 {
    ring_hash(&[name.as_bytes()])
}

pub struct Membership {
    me: Member,
    suspicion_timeout: Duration,
    /// Members tracked, this node included (`[cluster] members_max`): a peer holding the
    /// secret is trusted, but a bug or a misconfigured fleet must not grow the table, the
    /// dialers and the ring without bound. A newcomer past it takes the place of the
    /// member down longest, or is not admitted.
    members_max: usize,
    others: BTreeMap<String, Entry>,
}

impl Membership {
    pub fn new(me: &Identity, suspicion_timeout: Duration, members_max: usize) -> Membership {
        let me = Member { name: me.name.clone(), addr: me.addr, node_id: node_id(&me.name) };
        Membership { me, suspicion_timeout, members_max, others: BTreeMap::new() }
    }

    /// Whether `name` is, or may become, a member: known, or there is room, or a member
    /// that is down can give up its place.
    pub fn admits(&self, name: &str) -> bool {
        self.others.contains_key(name)
            || self.others.len() + 1 < self.members_max
            || self.others.values().any(|e| e.state == State::Down)
    }

    /// `who` authenticated, or sent a frame, at `now`. Nothing changes for a newcomer not
    /// [`admitted`](Self::admits).
    pub fn heard(&mut self, who: &Identity, now: Duration) -> Vec<Change> {
        if who.name == self.me.name {
            return Vec::new();
        }
        let member = Member { name: who.name.clone(), addr: who.addr, node_id: node_id(&who.name) };
        let Some(e) = self.others.get_mut(&who.name) else {
            if !self.admits(&who.name) {
                return Vec::new();
            }
            if self.others.len() + 1 >= self.members_max {
                let longest_down = self.others.iter().filter(|(_, e)| e.state == State::Down).min_by_key(|(_, e)| e.last_heard);
                let name = longest_down.map(|(name, _)| name.clone()).expect("admits: one is down");
                self.others.remove(&name);
            }
            self.others.insert(who.name.clone(), Entry::new(member.clone(), who.incarnation, now));
            return vec![Change::Up(member)];
        };
        let mut changes = Vec::new();
        e.alive(who.incarnation, &mut changes);
        e.member = member;
        e.last_heard = now;
        changes
    }

    /// `by`, heard directly just now, says it hears each of `hears` (name, incarnation)
    /// directly. Members not known here yet are left to the gossip of addresses (they are
    /// dialled, and counted once they answer).
    pub fn vouched(&mut self, by: &str, hears: &[(String, u64)], now: Duration) -> Vec<Change> {
        let mut changes = Vec::new();
        if self.others.get(by).is_none_or(|e| e.state == State::Down) {
            return changes;
        }
        for (name, incarnation) in hears {
            if name == &self.me.name || name == by {
                continue;
            }
            let Some(e) = self.others.get_mut(name) else { continue };
            e.alive(*incarnation, &mut changes);
            e.last_vouched = now;
            e.via = Some(by.to_string());
        }
        changes
    }

    /// What this node's heartbeats vouch for: the members it heard itself within half a
    /// suspicion timeout, so a voucher's word is never much older than its own silence.
    pub fn heard_directly(&self, now: Duration) -> Vec<(String, u64)> {
        let recent = self.suspicion_timeout / 2;
        self.others
            .iter()
            .filter(|(_, e)| e.state != State::Down && now.saturating_sub(e.last_heard) < recent)
            .map(|(name, e)| (name.clone(), e.incarnation))
            .collect()
    }

    /// Members on the ring this node has not heard itself for a suspicion timeout, each
    /// with the member that vouched for it since (by node id): the way to reach them.
    pub fn relays(&self, now: Duration) -> Vec<(u32, u32)> {
        self.others
            .values()
            .filter(|e| e.state != State::Down && now.saturating_sub(e.last_heard) >= self.suspicion_timeout)
            .filter(|e| now.saturating_sub(e.last_vouched) < self.suspicion_timeout)
            .filter_map(|e| Some((e.member.node_id, node_id(e.via.as_ref()?))))
            .collect()
    }

    /// Time passed: members silent too long become suspect, then down.
    pub fn tick(&mut self, now: Duration) -> Vec<Change> {
        let mut changes = Vec::new();
        for e in self.others.values_mut() {
            let silent = e.silent(now);
            match e.state {
                State::Up if silent >= self.suspicion_timeout => e.state = State::Suspect,
                State::Suspect if silent >= 2 * self.suspicion_timeout => {
                    e.state = State::Down;
                    changes.push(Change::Down(e.member.clone()));
                }
                _ => {}
            }
        }
        changes
    }

    /// Every member holding arcs of the ring (up or suspect), this node included, by name.
    pub fn ring_members(&self) -> Vec<Member> {
        let mut all: Vec<Member> =
            self.others.values().filter(|e| e.state != State::Down).map(|e| e.member.clone()).collect();
        all.push(self.me.clone());
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn status(&self, now: Duration) -> Vec<MemberStatus> {
        let mut rows = vec![MemberStatus { member: self.me.clone(), state: State::Up, silent_for: Duration::ZERO }];
        rows.extend(self.others.values().map(|e| MemberStatus {
            member: e.member.clone(),
            state: e.state,
            silent_for: e.silent(now),
        }));
        rows.sort_by(|a, b| a.member.name.cmp(&b.member.name));
        rows
    }

    /// Addresses of members up or suspect, for the gossip in heartbeats.
    pub fn known_addrs(&self) -> Vec<SocketAddr> {
        self.ring_members().iter().map(|m| m.addr).collect()
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    const SUSPICION: Duration = Duration::from_millis(1000);
    const BEAT: Duration = Duration::from_millis(250);

    fn id(name: &str, incarnation: u64) -> Identity {
        Identity { name: name.into(), addr: format!("127.0.0.1:{}", 7000 + name.len()).parse().unwrap(), incarnation }
    }

    fn names(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                Change::Up(m) => format!("up {}", m.name),
                Change::Down(m) => format!("down {}", m.name),
            })
            .collect()
    }

    #[test]
    fn silence_makes_suspect_then_down_and_a_restart_is_down_then_up() {
        let ms = |n| Duration::from_millis(n);
        let mut m = Membership::new(&id("a", 1), SUSPICION, 64);
        assert_eq!(names(&m.heard(&id("b", 1), ms(0))), ["up b"]);
        assert!(m.tick(ms(999)).is_empty());
        assert!(m.tick(ms(1000)).is_empty()); // suspect: still on the ring
        assert_eq!(m.ring_members().len(), 2);
        assert_eq!(names(&m.tick(ms(2000))), ["down b"]);
        assert_eq!(m.ring_members().len(), 1);
        assert_eq!(names(&m.heard(&id("b", 1), ms(2500))), ["up b"]);
        // Restarted faster than the suspicion timeout: its old self is gone all the same.
        assert_eq!(names(&m.heard(&id("b", 2), ms(2600))), ["down b", "up b"]);
        assert!(m.heard(&id("b", 2), ms(2700)).is_empty());
    }

    #[test]
    fn past_members_max_a_newcomer_takes_the_place_of_one_down_or_is_refused() {
        let ms = |n| Duration::from_millis(n);
        let mut m = Membership::new(&id("a", 1), SUSPICION, 3);
        assert_eq!(names(&m.heard(&id("b", 1), ms(0))), ["up b"]);
        assert_eq!(names(&m.heard(&id("cc", 1), ms(0))), ["up cc"]);
        assert!(!m.admits("ddd"));
        assert!(m.heard(&id("ddd", 1), ms(0)).is_empty(), "full of live members: refused");
        assert_eq!(m.ring_members().len(), 3);
        assert!(m.tick(ms(1000)).is_empty());
        m.heard(&id("cc", 1), ms(1500));
        assert_eq!(names(&m.tick(ms(2000))), ["down b"]);
        assert!(m.admits("ddd"));
        assert_eq!(names(&m.heard(&id("ddd", 1), ms(2100))), ["up ddd"]);
        assert_eq!(m.status(ms(2100)).len(), 3, "b gave up its place");
    }

    #[test]
    fn a_member_only_another_hears_stays_up_and_is_relayed_through_it() {
        let ms = |n| Duration::from_millis(n);
        let mut m = Membership::new(&id("a", 1), SUSPICION, 64);
        m.heard(&id("b", 1), ms(0));
        m.heard(&id("cc", 1), ms(0));
        // The a-b link breaks at 0; cc keeps hearing b, and says so in every heartbeat.
        for t in (250..=5000).step_by(250) {
            m.heard(&id("cc", 1), ms(t));
            assert!(m.vouched("cc", &[("b".into(), 1), ("a".into(), 1)], ms(t)).is_empty());
            assert!(m.tick(ms(t)).is_empty(), "b was taken off the ring at {t} ms");
        }
        assert_eq!(m.relays(ms(5000)), [(node_id("b"), node_id("cc"))]);
        assert_eq!(m.heard_directly(ms(5000)), [("cc".to_string(), 1)]);
        // A voucher's word on a restart counts as the member's own.
        assert_eq!(names(&m.vouched("cc", &[("b".into(), 2)], ms(5000))), ["down b", "up b"]);
        // cc stops hearing b: b goes down as if silent since then.
        m.heard(&id("cc", 1), ms(6000));
        assert!(m.tick(ms(6000)).is_empty());
        m.heard(&id("cc", 1), ms(7000));
        assert_eq!(names(&m.tick(ms(7000))), ["down b"]);
        assert!(m.relays(ms(7000)).is_empty());
        // A member that is down vouches for no one.
        m.tick(ms(8500));
        assert_eq!(names(&m.tick(ms(9000))), ["down cc"]);
        assert!(m.vouched("cc", &[("b".into(), 2)], ms(9000)).is_empty());
    }

    /// Five nodes exchange heartbeats over a simulated network that a seeded RNG makes lossy,
    /// partitioned for a while, then healed. Every step is reproducible from the seed.
    #[test]
    #[allow(clippy::needless_range_loop)] // node indices are the simulation's addresses
    fn seeded_simulation_of_partitions_and_flapping_converges() {
        for seed in 0..20u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let ids: Vec<Identity> = (0..5).map(|i| id(&format!("n{i}"), 1)).collect();
            let mut nodes: Vec<Membership> = ids.iter().map(|i| Membership::new(i, SUSPICION, 64)).collect();
            let side = |i: usize| i < 2; // partition: {n0, n1} | {n2, n3, n4}
            let mut now = Duration::ZERO;
            let mut run = |nodes: &mut Vec<Membership>, until: Duration, partitioned: bool, loss: f64, rng: &mut StdRng| {
                while now < until {
                    now += BEAT;
                    for from in 0..5 {
                        for to in 0..5 {
                            let cut = partitioned && side(from) != side(to);
                            if from != to && !cut && rng.gen::<f64>() >= loss {
                                nodes[to].heard(&ids[from], now);
                            }
                        }
                    }
                    for n in nodes.iter_mut() {
                        n.tick(now);
                    }
                }
            };
            // A flapping network (30 % of beats lost) alone does not evict anyone for long;
            // then a partition evicts the other side on each side; healing restores all.
            run(&mut nodes, Duration::from_secs(10), false, 0.3, &mut rng);
            run(&mut nodes, Duration::from_secs(20), true, 0.0, &mut rng);
            for (i, n) in nodes.iter().enumerate() {
                let seen: Vec<bool> = (0..5).map(|j| n.ring_members().iter().any(|m| m.name == format!("n{j}"))).collect();
                assert!((0..5).all(|j| seen[j] == (side(i) == side(j))), "seed {seed}: n{i} sees {seen:?}");
            }
            run(&mut nodes, Duration::from_secs(22), false, 0.0, &mut rng);
            for n in &nodes {
                assert_eq!(n.ring_members().len(), 5, "seed {seed}: not healed");
            }
        }
    }
}
