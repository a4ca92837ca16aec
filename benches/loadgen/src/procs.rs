//! Several load processes as one: a process may hold at most `ulimit -n` sockets (20,000
//! here), so `--procs P` re-runs this program P times on disjoint slices of the user range,
//! measures the server's memory once all of them are online, and merges their results:
//! counts add up, histograms merge, rates add up. The stepped scenarios (knee, cpu-per-msg)
//! drive their processes step by step instead (scenario/steps.rs).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{ChildStdout, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::scenario::connections::rss_bytes;
use crate::stats::{histogram_from_base64, latency_histogram, Report, HISTOGRAM_FIELD};
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
const MAXED: &[&str] = &["storm_secs", "hold_secs", "generator_cpu_pct_of_core"];

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

/// One load process started by this one.
pub struct Child {
    pub process: std::process::Child,
    pub stdout: BufReader<ChildStdout>,
    /// Where it writes its JSON result.
    pub out: PathBuf,
}

/// The load processes of a run, each on its slice of the user range, and their temp dir.
pub struct Children {
    pub list: Vec<Child>,
    dir: PathBuf,
}

impl Children {
    /// Starts `common.procs` copies of this program with the same arguments, each told its slice.
    pub fn spawn(common: &Common) -> Children {
        let exe = std::env::current_exe().expect("own executable");
        let args: Vec<String> = std::env::args().skip(1).collect();
        let dir = std::env::temp_dir().join(format!("loadgen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut list = Vec::new();
        for i in 0..common.procs {
            let out = dir.join(format!("{i}.json"));
            let mut command = Command::new(&exe);
            command
                .args(&args)
                .args(["--proc-index", &i.to_string(), "--out", out.to_str().expect("UTF-8 temp path")])
                .stdout(Stdio::piped())
                .stdin(Stdio::piped());
            // A load process ends with its parent: a bench script that kills the parent (the
            // holders of idle sessions, `--hold-secs` long) would otherwise leave its
            // children holding their sessions and ports into the next run.
            // SAFETY: prctl is async-signal-safe, and the closure touches nothing else.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
            let mut process = command.spawn().expect("starting a load process");
            let stdout = BufReader::new(process.stdout.take().expect("piped stdout"));
            list.push(Child { process, stdout, out });
        }
        Children { list, dir }
    }

    /// Waits until every process reports its users online.
    pub fn wait_online(&mut self) {
        for child in self.list.iter_mut() {
            child.read_until(|line| line == ONLINE);
        }
    }

    /// Writes `line` to every process.
    pub fn tell(&mut self, line: &str) {
        for child in self.list.iter_mut() {
            if let Some(stdin) = child.process.stdin.as_mut() {
                let _ = stdin.write_all(format!("{line}\n").as_bytes());
                let _ = stdin.flush();
            }
        }
    }

    pub fn pids(&self) -> Vec<u32> {
        self.list.iter().map(|c| c.process.id()).collect()
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Child {
    /// Reads the process's output up to the first line `wanted` accepts, and returns it
    /// (empty if the process ended first).
    pub fn read_until(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            if !self.stdout.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                return String::new();
            }
            if wanted(line.trim_end()) {
                return line.trim_end().to_owned();
            }
        }
    }
}

pub fn run_parent(common: &Common, server_pid: Option<u32>) -> Report {
    let before = server_pid.and_then(rss_bytes);
    let mut children = Children::spawn(common);
    // Every process's users online, then the server's memory.
    children.wait_online();
    std::thread::sleep(SETTLE);
    let after = server_pid.and_then(rss_bytes);
    children.tell("go");
    let mut reports = Vec::new();
    for child in children.list.iter_mut() {
        std::io::copy(&mut child.stdout, &mut std::io::sink()).ok();
        let status = child.process.wait().expect("waiting for a load process");
        assert!(status.success(), "a load process failed: {status}");
        let text = std::fs::read_to_string(&child.out).expect("a load process's result");
        let Value::Object(map) = serde_json::from_str(&text).expect("JSON result") else { panic!("result is not an object") };
        let scenario = match map.get("scenario").and_then(Value::as_str) {
            Some("paper") => "paper",
            Some("rate") => "rate",
            _ => "connections",
        };
        reports.push(Report::from_json(scenario, map));
    }
    drop(children);
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
            histogram.add(histogram_from_base64(&b64)).expect("same histogram bounds");
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
