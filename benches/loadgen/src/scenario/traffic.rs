//! Steady message traffic: every online user sends `per_user` chat messages, one every
//! `interval_secs`, each to a uniformly random other user of the run, starting at a random
//! offset within the interval so the total is a steady rate rather than bursts. With a 1 s
//! interval and 100 messages this is the paper's experiment (seed 001 §5.1); the knee search
//! offers one step after another over the same sessions.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::login_all;
use crate::client::{message, Writer};
use crate::scan::{MarkScanner, BODY};
use crate::stats::{latency_histogram, unix_nanos, Report};
use crate::Common;

/// Bytes read per call by each receiving session.
const RECV_READ_BYTES: usize = 4096;

/// Users logged in, each with a reader counting what arrives.
pub struct Traffic {
    writers: Vec<Writer>,
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
}

impl Step {
    pub fn delivery_ratio(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.delivered as f64 / self.sent as f64
        }
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
            let mut reader = session.reader;
            tokio::task::spawn_local(async move {
                let mut buf = vec![0u8; RECV_READ_BYTES];
                let mut scan = MarkScanner::new(BODY);
                while let Ok(n) = reader.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let now = unix_nanos();
                    scan.feed(&buf[..n], |_, sent| {
                        let micros = (now.saturating_sub(sent) / 1000).max(1) as u64;
                        let _ = h.borrow_mut().record(micros);
                        *d.borrow_mut() += 1;
                    });
                }
            });
            writers.push(session.writer);
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

    /// Each user sends `per_user` messages, one per `interval_secs`; then `drain_secs` for
    /// the last ones to arrive. Counts start from zero at each offer.
    pub async fn offer(&mut self, common: &Common, interval_secs: f64, per_user: u32, drain_secs: u64) -> Step {
        self.histogram.borrow_mut().reset();
        *self.delivered.borrow_mut() = 0;
        let started = Instant::now();
        let sent = Rc::new(RefCell::new(0u64));
        let send_errors = Rc::new(RefCell::new(0u64));
        let mut senders = Vec::new();
        for (idx, mut writer) in std::mem::take(&mut self.writers).into_iter().enumerate() {
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
                    match writer.write_all(message(&to, idx as u32, seq, unix_nanos()).as_bytes()).await {
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
        tokio::time::sleep(Duration::from_secs(drain_secs)).await;
        let (sent, send_errors) = (*sent.borrow(), *send_errors.borrow());
        Step { sent, send_errors, delivered: *self.delivered.borrow(), send_secs, histogram: self.histogram.borrow().clone() }
    }

    pub async fn close(self) {
        for mut w in self.writers {
            let _ = w.write_all(b"</stream:stream>").await;
        }
    }
}

pub async fn run(common: &Common, scenario: &'static str, interval_secs: f64, per_user: u32, drain_secs: u64) -> Report {
    let mut traffic = Traffic::start(common).await;
    let step = traffic.offer(common, interval_secs, per_user, drain_secs).await;
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
        .latency(&step.histogram);
    if common.proc_index.is_some() {
        report.histogram(&step.histogram);
    }
    traffic.close().await;
    report
}
