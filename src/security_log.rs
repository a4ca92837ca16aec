//! Log lines an attacker can cause (failed logins, handshake timeouts, streams closed with
//! an error, resumable sessions expiring), rate-limited per core by a token bucket so that a
//! flood of them cannot fill the disk: `[log] security_events_per_minute` lines a minute
//! (bursts up to that many), the rest counted and reported in one line with the next one
//! let through. Per core because each core is one thread: no lock, no shared counter.

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const TARGET: &str = "martlet::security";

/// `[log] security_events_per_minute`, set once at start (before the cores run).
static EVENTS_PER_MINUTE: AtomicU32 = AtomicU32::new(60);

pub fn set_events_per_minute(n: u32) {
    EVENTS_PER_MINUTE.store(n, Ordering::Relaxed);
}

thread_local! {
    static BUCKET: RefCell<Option<Bucket>> = const { RefCell::new(None) };
}

/// Logs `args` at `level` unless this core used its budget; arguments are only formatted
/// for lines that are written.
pub fn event(level: log::Level, args: fmt::Arguments<'_>) {
    let allowed = BUCKET.with(|b| {
        let per_minute = EVENTS_PER_MINUTE.load(Ordering::Relaxed);
        b.borrow_mut().get_or_insert_with(|| Bucket::new(per_minute, Instant::now())).take(Instant::now())
    });
    match allowed {
        Some(0) => {}
        Some(suppressed) => {
            log::warn!(target: TARGET, "{suppressed} security log lines suppressed on this core ([log] security_events_per_minute)")
        }
        None => return,
    }
    log::log!(target: TARGET, level, "{args}");
}

/// A token bucket holding up to a minute's worth of lines, refilled continuously.
struct Bucket {
    per_minute: u32,
    tokens: f64,
    refilled: Instant,
    suppressed: u64,
}

impl Bucket {
    fn new(per_minute: u32, now: Instant) -> Bucket {
        Bucket { per_minute, tokens: f64::from(per_minute), refilled: now, suppressed: 0 }
    }

    /// `Some(lines suppressed since the last one written)` when a line may be written now.
    fn take(&mut self, now: Instant) -> Option<u64> {
        let per_sec = f64::from(self.per_minute) / Duration::from_secs(60).as_secs_f64();
        let earned = now.saturating_duration_since(self.refilled).as_secs_f64() * per_sec;
        self.tokens = (self.tokens + earned).min(f64::from(self.per_minute));
        self.refilled = now;
        if self.tokens < 1.0 {
            self.suppressed += 1;
            return None;
        }
        self.tokens -= 1.0;
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_past_the_budget_is_suppressed_and_counted_in_the_next_line() {
        let start = Instant::now();
        let mut b = Bucket::new(6, start);
        for _ in 0..6 {
            assert_eq!(b.take(start), Some(0));
        }
        for _ in 0..100 {
            assert_eq!(b.take(start), None);
        }
        // 6 a minute: one token every 10 s.
        assert_eq!(b.take(start + Duration::from_secs(9)), None);
        assert_eq!(b.take(start + Duration::from_secs(11)), Some(101));
        assert_eq!(b.take(start + Duration::from_secs(11)), None);
    }

    #[test]
    fn a_quiet_hour_refills_no_more_than_a_minute() {
        let start = Instant::now();
        let mut b = Bucket::new(3, start);
        let later = start + Duration::from_secs(3600);
        assert_eq!((0..10).filter(|_| b.take(later).is_some()).count(), 3);
    }
}
