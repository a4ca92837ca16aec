//! Several load processes as one: a process may hold at most `ulimit -n` sockets (20,000
//! here), so `--procs P` re-runs this program P times on disjoint slices of the user range,
//! measures the server's memory once all of them are online, and merges their results:
//! counts add up, histograms merge, rates add up.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use hdrhistogram::serialization::Deserializer;
use serde_json::Value;

use crate::scenario::connections::rss_bytes;
use crate::stats::{latency_histogram, Report, HISTOGRAM_FIELD};
use crate::Common;

/// The line a child prints once its users are logged in.
const ONLINE: &str = "loadgen-online";
/// Time for the server to settle before its memory is read (as in the one-process case).
const SETTLE: Duration = Duration::from_secs(4);

/// Fields that add up across processes; the rest are taken from the first process, and
/// latency is recomputed from the merged histogram.
const SUMMED: &[&str] = &[
    "users_online", "login_errors", "logins_per_sec", "sent", "send_errors", "delivered", "offered_msgs_per_sec", "sessions",
    "storm_reconnected", "storm_errors", "bytes_read", "bytes_written", "bytes_read_total", "bytes_written_total",
    "hold_bytes_read", "hold_bytes_written",
];
/// Fields whose largest value across processes is the whole run's (the storm is over when
/// the slowest process is back).
const MAXED: &[&str] = &["storm_secs", "hold_secs"];

/// This process's slice of the range, as child `index` of `common.procs`.
pub fn take_slice(common: &mut Common, index: u32) {
    let per = common.users.div_ceil(common.procs);
    let first = common.first + index * per;
    common.users = per.min(common.first + common.users - first);
    common.first = first;
}

/// Tells the parent this process's users are online, then waits for its word to go on, so
/// no process starts its traffic while another is still logging in (logins cost the server
/// far more than messages, and would land in the latency measured).
/// Only the first login of a run (a storm logs in again) waits.
pub fn announce_online_and_wait() {
    static ONCE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if ONCE.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    println!("{ONLINE}");
    let _ = std::io::stdout().flush();
    let mut go = String::new();
    let _ = std::io::stdin().read_line(&mut go);
}

pub fn run_parent(common: &Common, server_pid: Option<u32>) -> Report {
    let before = server_pid.and_then(rss_bytes);
    let exe = std::env::current_exe().expect("own executable");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = std::env::temp_dir().join(format!("loadgen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut children = Vec::new();
    for i in 0..common.procs {
        let out = dir.join(format!("{i}.json"));
        let mut child = Command::new(&exe)
            .args(&args)
            .args(["--proc-index", &i.to_string(), "--out", out.to_str().expect("UTF-8 temp path")])
            .stdout(Stdio::piped())
            .stdin(Stdio::piped())
            .spawn()
            .expect("starting a load process");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        children.push((child, stdout, out));
    }
    // Wait until every process reports its users online, then read the server's memory.
    for (_, stdout, _) in children.iter_mut() {
        let mut line = String::new();
        while stdout.read_line(&mut line).map(|n| n > 0).unwrap_or(false) && line.trim() != ONLINE {
            line.clear();
        }
    }
    std::thread::sleep(SETTLE);
    let after = server_pid.and_then(rss_bytes);
    for (child, _, _) in children.iter_mut() {
        if let Some(stdin) = child.stdin.as_mut() {
            let _ = stdin.write_all(b"go\n");
        }
    }
    let mut reports = Vec::new();
    for (mut child, mut stdout, out) in children {
        std::io::copy(&mut stdout, &mut std::io::sink()).ok();
        let status = child.wait().expect("waiting for a load process");
        assert!(status.success(), "a load process failed: {status}");
        let text = std::fs::read_to_string(&out).expect("a load process's result");
        let Value::Object(map) = serde_json::from_str(&text).expect("JSON result") else { panic!("result is not an object") };
        let scenario = match map.get("scenario").and_then(Value::as_str) {
            Some("paper") => "paper",
            Some("rate") => "rate",
            _ => "connections",
        };
        reports.push(Report::from_json(scenario, map));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let mut merged = merge(reports);
    merged.set("processes", common.procs);
    if let (Some(b), Some(a), Some(n)) = (before, after, merged.get("sessions").and_then(Value::as_u64)) {
        merged.set("server_rss_before_bytes", b);
        merged.set("server_rss_after_bytes", a);
        merged.set("server_rss_per_session_bytes", a.saturating_sub(b) / n.max(1));
    }
    merged
}

fn merge(mut reports: Vec<Report>) -> Report {
    let mut merged = reports.remove(0);
    let mut histogram = latency_histogram();
    let mut add_histogram = |r: &mut Report| {
        if let Some(Value::String(b64)) = r.remove(HISTOGRAM_FIELD) {
            let bytes = base64::engine::general_purpose::STANDARD.decode(b64).expect("base64 histogram");
            let h: hdrhistogram::Histogram<u64> = Deserializer::new().deserialize(&mut &bytes[..]).expect("histogram");
            histogram.add(&h).expect("same histogram bounds");
        }
    };
    add_histogram(&mut merged);
    for mut r in reports {
        add_histogram(&mut r);
        for name in MAXED {
            if let (Some(a), Some(b)) = (merged.get(name).and_then(Value::as_f64), r.get(name).and_then(Value::as_f64)) {
                merged.set(name, a.max(b));
            }
        }
        for name in SUMMED {
            let (Some(a), Some(b)) = (merged.get(name).cloned(), r.get(name).cloned()) else { continue };
            match (a.as_u64(), b.as_u64()) {
                (Some(a), Some(b)) => merged.set(name, a + b),
                _ => merged.set(name, a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0)),
            }
        }
    }
    if let (Some(sent), Some(delivered)) = (merged.get("sent").and_then(Value::as_f64), merged.get("delivered").and_then(Value::as_f64)) {
        merged.set("delivery_ratio", if sent == 0.0 { 0.0 } else { delivered / sent });
    }
    if merged.get("bytes_read").is_some() {
        crate::scenario::traffic::per_delivered(&mut merged);
    }
    if merged.get("hold_bytes_read").is_some() {
        crate::scenario::connections::per_session_hour(&mut merged);
    }
    if !histogram.is_empty() {
        let mut latency = Report::new("latency");
        latency.latency(&histogram);
        for name in ["latency_mean_ms", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_p999_ms", "latency_max_ms"] {
            if let Some(v) = latency.get(name) {
                merged.set(name, v.clone());
            }
        }
    }
    merged
}
