//! Steady message traffic: every online user sends `per_user` chat messages, one every
//! `interval_secs`, each to a uniformly random other user of the run, starting at a random
//! offset within the interval so the total is a steady rate rather than bursts. With a 1 s
//! interval and 100 messages this is the paper's experiment (seed 001 §5.1); the knee search
//! offers one step after another over the same sessions.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::Rng;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use super::login_all;
use crate::cpu::cpu_secs;
use crate::client::{bytes_so_far, message, spawn_receiver, Writer};
use crate::scan::{MarkScanner, BODY};
use crate::stats::{latency_histogram, unix_nanos, Report};
use crate::Common;

/// Users logged in, each with a reader counting what arrives.
pub struct Traffic {
    /// Shared with the session's receiver, which answers acks and pings.
    writers: Vec<Rc<Mutex<Writer>>>,
    histogram: Rc<RefCell<Histogram<u64>>>,
    delivered: Rc<RefCell<u64>>,
    pub users_online: u32,
    pub login_errors: u32,
    pub logins_per_sec: f64,
}

/// What one offer of traffic gave.
pub struct Step {
    pub sent: u64,
    pub send_errors: u64,
    pub delivered: u64,
    pub send_secs: f64,
    pub histogram: Histogram<u64>,
    /// Bytes this process read and wrote from the start of the offer to the end of the drain.
    pub bytes_read: u64,
    pub bytes_written: u64,
}

impl Step {
    pub fn delivery_ratio(&self) -> f64 {
        crate::stats::delivery_ratio(self.delivered, self.sent)
    }
}

impl Traffic {
    pub async fn start(common: &Common) -> Traffic {
        let online = login_all(common).await;
        let histogram = Rc::new(RefCell::new(latency_histogram()));
        let delivered = Rc::new(RefCell::new(0u64));
        let mut writers = Vec::new();
        for session in online.sessions.into_iter().flatten() {
            let (h, d) = (histogram.clone(), delivered.clone());
            let writer = Rc::new(Mutex::new(session.writer));
            let mut scan = MarkScanner::new(BODY);
            spawn_receiver(session.reader, writer.clone(), move |chunk, now, _| {
                scan.feed(chunk, |_, sent| {
                    let micros = (now.saturating_sub(sent) / 1000).max(1) as u64;
                    let _ = h.borrow_mut().record(micros);
                    *d.borrow_mut() += 1;
                });
            });
            writers.push(writer);
        }
        Traffic {
            users_online: writers.len() as u32,
            writers,
            histogram,
            delivered,
            login_errors: online.errors,
            logins_per_sec: online.logins_per_sec,
        }
    }

    /// Each user sends `per_user` messages, one per `interval_secs`; `on_sent` is told when
    /// the last was sent; then `drain_secs` for the last ones to arrive. Counts start from
    /// zero at each offer.
    pub async fn offer(&mut self, common: &Common, interval_secs: f64, per_user: u32, drain_secs: u64, on_sent: impl FnOnce()) -> Step {
        self.histogram.borrow_mut().reset();
        *self.delivered.borrow_mut() = 0;
        let started = Instant::now();
        let (read_before, written_before) = bytes_so_far();
        let sent = Rc::new(RefCell::new(0u64));
        let send_errors = Rc::new(RefCell::new(0u64));
        let mut senders = Vec::new();
        for (idx, writer) in std::mem::take(&mut self.writers).into_iter().enumerate() {
            let (common, sent, send_errors) = (common.clone(), sent.clone(), send_errors.clone());
            senders.push(tokio::task::spawn_local(async move {
                let interval = Duration::from_secs_f64(interval_secs);
                let offset = interval.mul_f64(rand::thread_rng().gen::<f64>());
                let start = tokio::time::Instant::now() + offset;
                for seq in 0..per_user {
                    tokio::time::sleep_until(start + interval * seq).await;
                    // Anyone of the whole range but ourselves (other processes hold the rest).
                    let me = common.first + idx as u32;
                    let mut peer = common.peers_first + rand::thread_rng().gen_range(0..common.peers_count.max(2) - 1);
                    if peer >= me {
                        peer += 1;
                    }
                    let to = format!("{}{}@{}", common.prefix, peer, common.domain);
                    match writer.lock().await.write_all(message(common.protocol, &to, idx as u32, seq, unix_nanos()).as_bytes()).await {
                        Ok(()) => *sent.borrow_mut() += 1,
                        Err(_) => *send_errors.borrow_mut() += 1,
                    }
                }
                writer
            }));
        }
        for s in senders {
            self.writers.push(s.await.expect("sender task"));
        }
        let send_secs = started.elapsed().as_secs_f64();
        on_sent();
        tokio::time::sleep(Duration::from_secs(drain_secs)).await;
        let (sent, send_errors) = (*sent.borrow(), *send_errors.borrow());
        let (read, written) = bytes_so_far();
        Step {
            sent,
            send_errors,
            delivered: *self.delivered.borrow(),
            send_secs,
            histogram: self.histogram.borrow().clone(),
            bytes_read: read - read_before,
            bytes_written: written - written_before,
        }
    }

    pub async fn close(self) {
        for w in self.writers {
            let _ = w.lock().await.write_all(b"</stream:stream>").await;
        }
    }
}

/// With `server_pids`, the server's CPU during the offer is reported too; this load
/// process's own CPU always is, to tell whether the generator was the limit.
pub async fn run(common: &Common, scenario: &'static str, interval_secs: f64, per_user: u32, drain_secs: u64, server_pids: &[u32]) -> Report {
    let mut traffic = Traffic::start(common).await;
    let cpu = || (cpu_secs(server_pids), cpu_secs(&[std::process::id()]));
    let before = cpu();
    let at_sent = Cell::new((None, None));
    let step = traffic.offer(common, interval_secs, per_user, drain_secs, || at_sent.set(cpu())).await;
    let (server_after, _) = cpu();
    let ((server_before, own_before), (server_sent, own_sent)) = (before, at_sent.get());
    let send_secs = step.send_secs.max(1e-3);
    let pct_of_core = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| round1(100.0 * (a - b) / send_secs));
    let mut report = Report::new(scenario);
    report
        .add("users_online", traffic.users_online)
        .add("login_errors", traffic.login_errors)
        .add("logins_per_sec", traffic.logins_per_sec.round())
        .add("sent", step.sent)
        .add("send_errors", step.send_errors)
        .add("delivered", step.delivered)
        .add("delivery_ratio", step.delivery_ratio())
        .add("send_secs", (step.send_secs * 100.0).round() / 100.0)
        .add("offered_msgs_per_sec", (step.sent as f64 / step.send_secs).round())
        .latency(&step.histogram)
        .add("generator_cpu_pct_of_core", pct_of_core(own_sent, own_before));
    if !server_pids.is_empty() {
        // Over the send window, as in the stepped scenarios; per message with the drain,
        // when the window's backlog is routed.
        let per_msg = server_after.zip(server_before).filter(|_| step.delivered > 0).map(|(a, b)| round1((a - b) * 1e6 / step.delivered as f64));
        report.add("server_cpu_pct_of_core", pct_of_core(server_sent, server_before)).add("server_cpu_us_per_msg", per_msg);
    }
    wire_bytes(&mut report, step.bytes_read, step.bytes_written);
    if common.proc_index.is_some() {
        report.histogram(&step.histogram);
    }
    traffic.close().await;
    report
}

/// The bytes of the measured traffic (logins excluded) and of the whole process, and the
/// traffic's bytes per delivered message. The per-message figures are derived again once
/// the processes' counts are summed.
pub fn wire_bytes(report: &mut Report, read: u64, written: u64) {
    let (total_read, total_written) = bytes_so_far();
    report
        .add("bytes_read", read)
        .add("bytes_written", written)
        .add("bytes_read_total", total_read)
        .add("bytes_written_total", total_written);
    per_delivered(report);
}

/// `bytes_*_per_delivered` from a report's `bytes_read`, `bytes_written` and `delivered`.
pub fn per_delivered(report: &mut Report) {
    let delivered = report.number("delivered").max(1.0);
    let (read, written) = (report.number("bytes_read"), report.number("bytes_written"));
    report.set("bytes_read_per_delivered", round1(read / delivered));
    report.set("bytes_written_per_delivered", round1(written / delivered));
    report.set("bytes_per_delivered", round1((read + written) / delivered));
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
