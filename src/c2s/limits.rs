//! Per-peer limits of the whole node: open connections per address, failed authentications
//! per address per minute, and XEP-0198 sessions hibernating per address and per account.
//!
//! Shared by the node's cores behind one mutex, on purpose: SO_REUSEPORT spreads one peer's
//! connections over every core, so a table per core would let a peer have `cores` times each
//! limit. The table is touched only at accept, close, authentication failure and hibernation,
//! never per message, so the lock is not contended on the routing path.
//!
//! An address is an IPv4 address, or an IPv6 /64 (one subscriber's usual allocation: a host
//! can pick any of its 2^64 addresses), with IPv4-mapped IPv6 counted as the IPv4 address.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::Limits;
use crate::router::SessionAddr;

const AUTH_FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// The address a limit counts `ip` under: IPv4 as is (an IPv4-mapped IPv6 address as its
/// IPv4), IPv6 by its /64, the prefix one subscriber is usually given, so a client cannot
/// step through its own 2^64 addresses to multiply its allowance.
pub fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

pub struct PeerLimits {
    connections_per_ip_max: usize,
    auth_failures_per_ip_per_minute: usize,
    hibernating_per_ip_max: usize,
    hibernating_per_user_max: usize,
    /// Addresses whose failures are counted at most (`tracked_addresses_max`). Past it,
    /// expired windows are swept, then the window that started longest ago is forgotten:
    /// the table stays bounded under a spray from more addresses within a minute, and what
    /// a sprayer gains is a few more guesses from addresses it already has many of.
    tracked_addresses_max: usize,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    connections: HashMap<IpAddr, usize>,
    failures: HashMap<IpAddr, (Instant, usize)>,
    /// Hibernating sessions, oldest first, by address and by account; each queue is at
    /// most its limit long, so removing one is a short scan.
    hibernating_by_ip: HashMap<IpAddr, VecDeque<Hibernating>>,
    hibernating_by_user: HashMap<std::sync::Arc<str>, VecDeque<Hibernating>>,
}

#[derive(Clone)]
struct Hibernating {
    session: SessionAddr,
    ip: IpAddr,
    user: std::sync::Arc<str>,
}

impl PeerLimits {
    pub fn new(limits: &Limits) -> Self {
        PeerLimits {
            connections_per_ip_max: limits.connections_per_ip_max,
            auth_failures_per_ip_per_minute: limits.auth_failures_per_ip_per_minute,
            hibernating_per_ip_max: limits.hibernating_sessions_per_ip_max,
            hibernating_per_user_max: limits.hibernating_sessions_per_user_max,
            tracked_addresses_max: limits.tracked_addresses_max,
            table: Mutex::new(Table::default()),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while holding the lock leaves counts that are still counts: go on.
        self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a new connection from `ip`; false (and nothing counted) when at the limit.
    pub fn try_open(&self, ip: IpAddr) -> bool {
        let mut table = self.table();
        let n = table.connections.entry(peer_key(ip)).or_insert(0);
        if *n >= self.connections_per_ip_max {
            return false;
        }
        *n += 1;
        true
    }

    pub fn close(&self, ip: IpAddr) {
        let mut table = self.table();
        let key = peer_key(ip);
        if let Some(n) = table.connections.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                table.connections.remove(&key);
            }
        }
    }

    /// May `ip` try to authenticate now?
    pub fn auth_allowed(&self, ip: IpAddr) -> bool {
        match self.table().failures.get(&peer_key(ip)) {
            Some((since, n)) => since.elapsed() >= AUTH_FAILURE_WINDOW || *n < self.auth_failures_per_ip_per_minute,
            None => true,
        }
    }

    pub fn record_auth_failure(&self, ip: IpAddr) {
        let mut table = self.table();
        let key = peer_key(ip);
        if table.failures.len() >= self.tracked_addresses_max && !table.failures.contains_key(&key) {
            table.failures.retain(|_, (since, _)| since.elapsed() < AUTH_FAILURE_WINDOW);
            if table.failures.len() >= self.tracked_addresses_max {
                let oldest = table.failures.iter().min_by_key(|(_, (since, _))| *since).map(|(ip, _)| *ip);
                table.failures.remove(&oldest.expect("a full table has an entry"));
            }
        }
        let entry = table.failures.entry(key).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= AUTH_FAILURE_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }

    /// `session` of `user`, connected from `ip`, starts to hibernate (XEP-0198). Returns the
    /// sessions to end for good to stay within both limits: the ones hibernating longest,
    /// which are the least likely to be resumed (a client comes back soon or not at all).
    pub fn hibernate(&self, ip: IpAddr, user: &str, session: SessionAddr) -> Vec<SessionAddr> {
        let mut table = self.table();
        let entry = Hibernating { session, ip: peer_key(ip), user: user.into() };
        table.hibernating_by_ip.entry(entry.ip).or_default().push_back(entry.clone());
        table.hibernating_by_user.entry(entry.user.clone()).or_default().push_back(entry.clone());
        let mut evicted = Vec::new();
        while let Some(oldest) = oldest_past(table.hibernating_by_ip.get(&entry.ip), self.hibernating_per_ip_max) {
            evicted.push(oldest.session);
            forget(&mut table, &oldest);
        }
        while let Some(oldest) = oldest_past(table.hibernating_by_user.get(&entry.user), self.hibernating_per_user_max) {
            evicted.push(oldest.session);
            forget(&mut table, &oldest);
        }
        evicted
    }

    /// `session` of `user` from `ip` hibernates no more: resumed, timed out or ended.
    pub fn woke(&self, ip: IpAddr, user: &str, session: SessionAddr) {
        forget(&mut self.table(), &Hibernating { session, ip: peer_key(ip), user: user.into() });
    }
}

/// The oldest of `queue` if it holds more than `max`.
fn oldest_past(queue: Option<&VecDeque<Hibernating>>, max: usize) -> Option<Hibernating> {
    queue.filter(|q| q.len() > max).and_then(|q| q.front().cloned())
}

/// Removes `h` from both hibernation queues, and a queue left empty.
fn forget(table: &mut Table, h: &Hibernating) {
    if let Some(q) = table.hibernating_by_ip.get_mut(&h.ip) {
        q.retain(|e| e.session != h.session);
        if q.is_empty() {
            table.hibernating_by_ip.remove(&h.ip);
        }
    }
    if let Some(q) = table.hibernating_by_user.get_mut(&h.user) {
        q.retain(|e| e.session != h.session);
        if q.is_empty() {
            table.hibernating_by_user.remove(&h.user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> PeerLimits {
        let mut l = Limits::default();
        l.connections_per_ip_max = 2;
        l.auth_failures_per_ip_per_minute = 2;
        l.hibernating_sessions_per_ip_max = 2;
        l.hibernating_sessions_per_user_max = 1;
        l.tracked_addresses_max = 3;
        PeerLimits::new(&l)
    }

    #[test]
    fn connections_are_capped_per_address() {
        let p = limits();
        let (a, b) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        assert!(p.try_open(a) && p.try_open(a));
        assert!(!p.try_open(a));
        assert!(p.try_open(b));
        p.close(a);
        assert!(p.try_open(a));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let p = limits();
        assert!(p.try_open("2001:db8:1:2::1".parse().unwrap()));
        assert!(p.try_open("2001:db8:1:2:ffff::9".parse().unwrap()));
        assert!(!p.try_open("2001:db8:1:2:abcd::1".parse().unwrap()));
        assert!(p.try_open("2001:db8:1:3::1".parse().unwrap()));
        assert!(p.try_open("::ffff:10.0.0.1".parse().unwrap()));
        assert!(p.try_open("10.0.0.1".parse().unwrap()));
        assert!(!p.try_open("::ffff:10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn failures_throttle_an_address() {
        let p = limits();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        p.record_auth_failure(a);
        assert!(p.auth_allowed(a));
        p.record_auth_failure(a);
        assert!(!p.auth_allowed(a));
        assert!(p.auth_allowed("127.0.0.9".parse().unwrap()));
    }

    #[test]
    fn a_spray_of_addresses_within_a_minute_keeps_the_table_bounded() {
        let p = limits();
        let addr = |i: u32| IpAddr::V4((0x0a00_0000 + i).into());
        for i in 0..100 {
            p.record_auth_failure(addr(i));
            p.record_auth_failure(addr(i));
            assert!(p.table().failures.len() <= 3);
        }
        assert!(!p.auth_allowed(addr(99)), "the newest addresses are still counted");
        assert!(p.auth_allowed(addr(0)), "the oldest window was forgotten to make room");
    }

    fn session(slot: u32) -> SessionAddr {
        SessionAddr { node: 0, core: 0, slot, generation: 0 }
    }

    #[test]
    fn the_longest_hibernating_session_goes_first() {
        let p = limits();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(p.hibernate(a, "u1@d", session(1)).is_empty());
        assert!(p.hibernate(a, "u2@d", session(2)).is_empty());
        // Past the per-address limit: the first goes.
        assert_eq!(p.hibernate(a, "u3@d", session(3)), [session(1)]);
        // Past u3's per-user limit (from elsewhere): u3's older one goes, and frees its address slot.
        assert_eq!(p.hibernate("127.0.0.2".parse().unwrap(), "u3@d", session(4)), [session(3)]);
        assert!(p.hibernate(a, "u5@d", session(5)).is_empty());
        p.woke(a, "u2@d", session(2));
        p.woke(a, "u5@d", session(5));
        assert!(p.table().hibernating_by_ip.len() == 1 && p.table().hibernating_by_user.len() == 1);
    }
}
