//! Idle sessions: log N users in, hold them, and read the server's resident memory before
//! and after, which gives the memory cost of one authenticated idle session. With `storm`,
//! every client then drops its connection at once and logs in again at once (the reconnect
//! storm of seeds 003/004): the report gives the time until all were back and the spread of
//! single reconnect times (the `latency_*` figures, here meaning login time).
//!
//! While held, each session answers what the server asks (pings, and XEP-0198 acks with
//! `--sm`) and sends nothing else (no whitespace keepalives); the bytes of the hold give the
//! idle cost of a session, extrapolated to an hour.

use std::rc::Rc;
use std::time::Duration;

use tokio::sync::Mutex;

use super::login_all;
use crate::client::{bytes_so_far, spawn_receiver};
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
    let (errors, logins_per_sec) = (online.errors, online.logins_per_sec);
    // Reading from here on, so the answers to login (the reflected initial presence, the
    // first ack request) are read while settling, not counted in the hold.
    let receivers: Vec<_> = online
        .sessions
        .into_iter()
        .flatten()
        .map(|s| spawn_receiver(s.reader, Rc::new(Mutex::new(s.writer)), |_, _, _| {}))
        .collect();
    tokio::time::sleep(SETTLE).await;
    let after = server_pid.and_then(rss_bytes);
    let held = receivers.len() as u64;
    let mut report = Report::new("connections");
    report.add("sessions", held).add("login_errors", errors).add("logins_per_sec", logins_per_sec.round());
    if let (Some(b), Some(a)) = (before, after) {
        report
            .add("server_rss_before_bytes", b)
            .add("server_rss_after_bytes", a)
            .add("server_rss_per_session_bytes", a.saturating_sub(b) / held.max(1));
    }
    let (read_before, written_before) = bytes_so_far();
    tokio::time::sleep(Duration::from_secs(hold_secs)).await;
    let (read, written) = bytes_so_far();
    report
        .add("hold_secs", hold_secs)
        .add("hold_bytes_read", read - read_before)
        .add("hold_bytes_written", written - written_before)
        .add("bytes_read_total", read)
        .add("bytes_written_total", written);
    per_session_hour(&mut report);
    if !storm {
        return report;
    }
    for r in &receivers {
        r.abort(); // every socket closed at once
    }
    for r in receivers {
        let _ = r.await;
    }
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

/// `hold_bytes_per_session_hour`: the hold's bytes (both directions) per session, scaled
/// linearly from the hold to an hour (derived again once the processes' counts are summed).
pub fn per_session_hour(report: &mut Report) {
    let (sessions, secs) = (report.number("sessions").max(1.0), report.number("hold_secs").max(1.0));
    let bytes = report.number("hold_bytes_read") + report.number("hold_bytes_written");
    report.set("hold_bytes_per_session_hour", (bytes / sessions * 3600.0 / secs).round());
}
