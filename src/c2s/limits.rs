//! Per-peer limits of one core: open connections per IP address, and failed
//! authentications per IP address per minute. Per core on purpose (no shared table): with
//! SO_REUSEPORT spreading a peer's connections, the node-wide limit is about `cores` times
//! the configured one, which the README states.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::Limits;

const AUTH_FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Past this many tracked addresses, expired failure windows are swept: the table stays
/// bounded even under a spray of failures from many addresses.
const TRACKED_ADDRESSES_MAX: usize = 65_536;

pub struct PeerLimits {
    connections_per_ip_max: usize,
    auth_failures_per_ip_per_minute: usize,
    connections: RefCell<HashMap<IpAddr, usize>>,
    failures: RefCell<HashMap<IpAddr, (Instant, usize)>>,
}

impl PeerLimits {
    pub fn new(limits: &Limits) -> Self {
        PeerLimits {
            connections_per_ip_max: limits.connections_per_ip_max,
            auth_failures_per_ip_per_minute: limits.auth_failures_per_ip_per_minute,
            connections: RefCell::new(HashMap::new()),
            failures: RefCell::new(HashMap::new()),
        }
    }

    /// Counts a new connection from `ip`; false (and nothing counted) when at the limit.
    pub fn try_open(&self, ip: IpAddr) -> bool {
        let mut conns = self.connections.borrow_mut();
        let n = conns.entry(ip).or_insert(0);
        if *n >= self.connections_per_ip_max {
            return false;
        }
        *n += 1;
        true
    }

    pub fn close(&self, ip: IpAddr) {
        let mut conns = self.connections.borrow_mut();
        if let Some(n) = conns.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                conns.remove(&ip);
            }
        }
    }

    /// May `ip` try to authenticate now?
    pub fn auth_allowed(&self, ip: IpAddr) -> bool {
        match self.failures.borrow().get(&ip) {
            Some((since, n)) => since.elapsed() >= AUTH_FAILURE_WINDOW || *n < self.auth_failures_per_ip_per_minute,
            None => true,
        }
    }

    pub fn record_auth_failure(&self, ip: IpAddr) {
        let mut failures = self.failures.borrow_mut();
        if failures.len() >= TRACKED_ADDRESSES_MAX {
            failures.retain(|_, (since, _)| since.elapsed() < AUTH_FAILURE_WINDOW);
        }
        let entry = failures.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= AUTH_FAILURE_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> PeerLimits {
        let mut l = Limits::default();
        l.connections_per_ip_max = 2;
        l.auth_failures_per_ip_per_minute = 2;
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
    fn failures_throttle_an_address() {
        let p = limits();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        p.record_auth_failure(a);
        assert!(p.auth_allowed(a));
        p.record_auth_failure(a);
        assert!(!p.auth_allowed(a));
        assert!(p.auth_allowed("127.0.0.9".parse().unwrap()));
    }
}
