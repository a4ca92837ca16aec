//! XEP-0077 in-band registrations per client address per hour (`registrations_per_ip_per_hour`),
//! node-wide: one table shared by every core, since SO_REUSEPORT spreads one address's
//! connections over the cores and a per-core count would let it register `cores` times as
//! many accounts. Registration is rare, so one mutex costs nothing on any hot path.
//! Attempts are counted, not accounts made: each costs the server a PBKDF2 derivation.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::limits::peer_key;

const WINDOW: Duration = Duration::from_secs(3600);

pub struct RegistrationLimit {
    per_hour: usize,
    /// Past this many tracked addresses (`tracked_addresses_max`), expired windows are
    /// swept; if none has expired, a new address is refused until one does: memory stays
    /// bounded under a spray of addresses, and no address's count is forgotten early.
    tracked_addresses_max: usize,
    /// Address key -> (start of its window, attempts in it).
    attempts: Mutex<HashMap<IpAddr, (Instant, usize)>>,
}

impl RegistrationLimit {
    pub fn new(per_hour: usize, tracked_addresses_max: usize) -> Self {
        RegistrationLimit { per_hour, tracked_addresses_max, attempts: Mutex::new(HashMap::new()) }
    }

    /// Counts one registration attempt from `ip`; false (and nothing counted) when the
    /// address has used up its hour.
    pub fn try_attempt(&self, ip: IpAddr) -> bool {
        self.try_attempt_at(peer_key(ip), Instant::now())
    }

    fn try_attempt_at(&self, key: IpAddr, now: Instant) -> bool {
        // A panic elsewhere while holding the lock leaves counts that are still counts.
        let mut attempts = self.attempts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if attempts.len() >= self.tracked_addresses_max && !attempts.contains_key(&key) {
            attempts.retain(|_, (since, _)| now.duration_since(*since) < WINDOW);
            if attempts.len() >= self.tracked_addresses_max {
                return false;
            }
        }
        let entry = attempts.entry(key).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        if entry.1 >= self.per_hour {
            return false;
        }
        entry.1 += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_allowance_per_hour() {
        let limit = RegistrationLimit::new(2, 16);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let t0 = Instant::now();
        assert!(limit.try_attempt_at(a, t0) && limit.try_attempt_at(a, t0));
        assert!(!limit.try_attempt_at(a, t0 + Duration::from_secs(3599)));
        assert!(limit.try_attempt_at(b, t0));
        assert!(limit.try_attempt_at(a, t0 + WINDOW));
    }

    #[test]
    fn the_table_stays_bounded() {
        let limit = RegistrationLimit::new(1, 1000);
        let t0 = Instant::now();
        for i in 0..1000 {
            assert!(limit.try_attempt_at(IpAddr::V4(i.into()), t0));
        }
        let newcomer = IpAddr::V4(u32::MAX.into());
        assert!(!limit.try_attempt_at(newcomer, t0), "a full table of live windows refuses newcomers");
        assert!(limit.try_attempt_at(newcomer, t0 + WINDOW), "expired windows make room");
        assert_eq!(limit.attempts.lock().unwrap().len(), 1);
    }
}
