//! Idle sessions: log N users in, hold them, and read the server's resident memory before
//! and after, which gives the memory cost of one authenticated idle session.

use std::time::Duration;

use super::login_all;
use crate::stats::Report;
use crate::Common;

/// Time for the server to settle (lazy frees, allocator purges) before RSS is read.
const SETTLE: Duration = Duration::from_secs(4);

pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub async fn run(common: &Common, hold_secs: u64, server_pid: Option<u32>) -> Report {
    let before = server_pid.and_then(rss_bytes);
    let online = login_all(common).await;
    tokio::time::sleep(SETTLE).await;
    let after = server_pid.and_then(rss_bytes);
    let held = online.sessions.iter().flatten().count() as u64;
    let mut report = Report::new("connections");
    report.add("sessions", held).add("login_errors", online.errors).add("logins_per_sec", online.logins_per_sec.round());
    if let (Some(b), Some(a)) = (before, after) {
        report
            .add("server_rss_before_bytes", b)
            .add("server_rss_after_bytes", a)
            .add("server_rss_per_session_bytes", a.saturating_sub(b) / held.max(1));
    }
    tokio::time::sleep(Duration::from_secs(hold_secs)).await;
    drop(online);
    report
}
