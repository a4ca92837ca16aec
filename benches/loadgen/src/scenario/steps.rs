//! Traffic in steps, over several load processes, with the server's CPU read around every
//! step: what knee and cpu-per-msg are made of. One load process saturates its own core
//! before a fast server does (a knee of 16,000 msg/s was once the generator's, with the
//! server's core 48 % busy), so the parent holds no session: it starts `--procs` processes
//! on slices of the users (messages still go to any user of the whole range), tells all of
//! them each step's rate, merges what they measured, and reads /proc/PID/stat of the server
//! (`--server-pid`) and of the load processes before the step, when every process has sent
//! its last message, and after the drain.
//!
//! Parent and processes talk in lines: the parent writes `go` once all are online, then
//! `step RATE SECS DRAIN_SECS` (RATE: this process's share) or `end`; a process answers
//! `loadgen-sent` when its last message of the step is out and `loadgen-step JSON` after
//! the drain.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::traffic::Traffic;
use crate::cpu::cpu_secs;
use crate::procs::Children;
use crate::stats::{histogram_from_base64, latency_histogram, Report, HISTOGRAM_FIELD};
use crate::Common;

/// Quiet time between the logins and the first step: a server still finishing the logins'
/// work (or collecting their garbage) would fail the first step for the wrong reason.
const WARMUP: Duration = Duration::from_secs(3);
const SENT: &str = "loadgen-sent";
const STEP: &str = "loadgen-step ";
/// Server CPU, as a share of the cores it may use, from which a step is the server's limit.
pub const SATURATED_PCT_MIN: f64 = 90.0;

/// The measured server: its processes, and how many cores it may use (`--server-cores`).
#[derive(Clone, Debug)]
pub struct Server {
    pub pids: Vec<u32>,
    pub cores: f64,
}

/// The load processes, logged in and waiting for steps.
pub struct Stepper {
    children: Children,
    server: Server,
    pub users_online: u64,
}

/// One step, merged over the processes.
pub struct Measured {
    pub offered: u32,
    pub sent: u64,
    pub send_errors: u64,
    pub delivered: u64,
    pub histogram: Histogram<u64>,
    /// From the step's start until every process had sent its last message.
    pub send_window_secs: f64,
    /// Server CPU seconds over the send window, and over the window plus the drain.
    pub server_cpu_sending: Option<f64>,
    pub server_cpu_total: Option<f64>,
    /// The load processes' CPU seconds over the send window.
    pub generator_cpu_sending: Option<f64>,
    cores: f64,
}

impl Measured {
    pub fn delivery_ratio(&self) -> f64 {
        crate::stats::delivery_ratio(self.delivered, self.sent)
    }

    pub fn p99_ms(&self) -> f64 {
        self.histogram.value_at_quantile(0.99) as f64 / 1000.0
    }

    /// Server CPU over the send window, in % of one core.
    pub fn server_pct_of_core(&self) -> Option<f64> {
        self.server_cpu_sending.map(|s| 100.0 * s / self.send_window_secs.max(1e-3))
    }

    /// Whether the server used at least SATURATED_PCT_MIN % of the cores it may use.
    pub fn server_saturated(&self) -> Option<bool> {
        self.server_pct_of_core().map(|p| p / self.cores >= SATURATED_PCT_MIN)
    }

    /// Server CPU microseconds per delivered message, drain included (the backlog of the
    /// window is routed then).
    pub fn server_us_per_msg(&self) -> Option<f64> {
        self.server_cpu_total.filter(|_| self.delivered > 0).map(|s| s * 1e6 / self.delivered as f64)
    }

    pub fn json(&self) -> Value {
        let q = |p: f64| self.histogram.value_at_quantile(p) as f64 / 1000.0;
        let round = |x: Option<f64>| x.map(|x| (x * 10.0).round() / 10.0);
        json!({
            "offered_msgs_per_sec": self.offered, "sent": self.sent, "delivered": self.delivered,
            "send_errors": self.send_errors,
            // What the load processes managed to send: under the offered rate, they were the limit.
            "sent_msgs_per_sec": (self.sent as f64 / self.send_window_secs.max(1e-3)).round(),
            "delivered_msgs_per_sec": (self.delivered as f64 / self.send_window_secs.max(1e-3)).round(),
            "latency_p50_ms": q(0.5), "latency_p99_ms": q(0.99), "latency_p999_ms": q(0.999),
            "send_window_secs": (self.send_window_secs * 100.0).round() / 100.0,
            "server_cpu_pct_of_core": round(self.server_pct_of_core()),
            "server_cpu_pct_of_cores": round(self.server_pct_of_core().map(|p| p / self.cores)),
            "server_cpu_us_per_msg": round(self.server_us_per_msg()),
            "server_saturated": self.server_saturated(),
            "generator_cpu_pct_of_core": round(self.generator_cpu_sending.map(|s| 100.0 * s / self.send_window_secs.max(1e-3))),
        })
    }
}

impl Stepper {
    /// Starts the load processes and waits until all are logged in and warmed up.
    pub fn start(common: &Common, server: Server) -> Stepper {
        let mut children = Children::spawn(common);
        children.wait_online();
        children.tell("go");
        std::thread::sleep(WARMUP);
        Stepper { children, server, users_online: 0 }
    }

    /// Offers `rate` messages/s in total for `secs`, then waits `drain_secs`.
    pub fn step(&mut self, rate: u32, secs: u64, drain_secs: u64) -> Measured {
        let share = rate as f64 / self.children.list.len() as f64;
        let load_pids = self.children.pids();
        let started = Instant::now();
        let (server_before, load_before) = (cpu_secs(&self.server.pids), cpu_secs(&load_pids));
        self.children.tell(&format!("step {share} {secs} {drain_secs}"));
        for child in self.children.list.iter_mut() {
            child.read_until(|line| line == SENT);
        }
        let send_window_secs = started.elapsed().as_secs_f64();
        let (server_sent, load_sent) = (cpu_secs(&self.server.pids), cpu_secs(&load_pids));
        let mut m = Measured {
            offered: rate,
            sent: 0,
            send_errors: 0,
            delivered: 0,
            histogram: latency_histogram(),
            send_window_secs,
            server_cpu_sending: server_sent.zip(server_before).map(|(a, b)| a - b),
            server_cpu_total: None,
            generator_cpu_sending: load_sent.zip(load_before).map(|(a, b)| a - b),
            cores: self.server.cores,
        };
        let mut users = 0;
        for child in self.children.list.iter_mut() {
            let line = child.read_until(|line| line.starts_with(STEP));
            let v: Value = serde_json::from_str(line.strip_prefix(STEP).unwrap_or("")).expect("a load process's step result (did it fail?)");
            let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
            m.sent += n("sent");
            m.send_errors += n("send_errors");
            m.delivered += n("delivered");
            users += n("users_online");
            if let Some(b64) = v.get(HISTOGRAM_FIELD).and_then(Value::as_str) {
                m.histogram.add(histogram_from_base64(b64)).expect("same histogram bounds");
            }
        }
        self.users_online = users;
        m.server_cpu_total = cpu_secs(&self.server.pids).zip(server_before).map(|(a, b)| a - b);
        m
    }

    pub fn finish(mut self) {
        self.children.tell("end");
        for child in self.children.list.iter_mut() {
            let _ = child.process.wait();
        }
    }
}

/// A load process's side: log in its slice, then run the steps it is told, until `end`.
pub async fn serve(common: &Common) {
    let mut traffic = Traffic::start(common).await;
    loop {
        // Read on the blocking pool: the sessions' readers go on meanwhile. Through std's
        // stdin, as the `go` before was (its buffer is shared).
        let line = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map(|_| line)
        });
        let Ok(Ok(line)) = line.await else { break };
        let f: Vec<&str> = line.split_whitespace().collect();
        let (rate, secs, drain_secs) = match f[..] {
            ["step", rate, secs, drain] => match (rate.parse::<f64>(), secs.parse::<u64>(), drain.parse::<u64>()) {
                (Ok(r), Ok(s), Ok(d)) => (r.max(0.001), s, d),
                _ => break,
            },
            _ => break,
        };
        let users = traffic.users_online.max(1) as f64;
        let per_user = ((rate * secs as f64) / users).max(1.0) as u32;
        let step = traffic.offer(common, users / rate, per_user, drain_secs, || println!("{SENT}")).await;
        let mut r = Report::new("step");
        r.add("users_online", traffic.users_online)
            .add("sent", step.sent)
            .add("send_errors", step.send_errors)
            .add("delivered", step.delivered)
            .histogram(&step.histogram);
        let compact: Value = serde_json::from_str(&r.json()).expect("our own JSON");
        println!("{STEP}{compact}");
    }
    traffic.close().await;
}
