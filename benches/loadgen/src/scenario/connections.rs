//! Idle sessions: log N users in, hold them, and read the server's resident memory before
//! and after, which gives the memory cost of one authenticated idle session. With `storm`,
//! every client then drops its connection at once and logs in again at once (the reconnect
//! storm of seeds 003/004): the report gives the time until all were back and the spread of
//! single reconnect times (the `latency_*` figures, here meaning login time).

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

pub async fn run(common: &Common, hold_secs: u64, server_pid: Option<u32>, storm: bool) -> Report {
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
    if !storm {
        return report;
    }
    drop(online); // every socket closed at once
    let again = login_all(common).await;
    let back = again.sessions.iter().flatten().count() as u64;
    report
        .add("storm_reconnected", back)
        .add("storm_errors", again.errors)
        .add("storm_secs", (again.secs * 100.0).round() / 100.0)
        .latency(&again.login_micros);
    if common.proc_index.is_some() {
        report.histogram(&again.login_micros);
    }
    report
}
