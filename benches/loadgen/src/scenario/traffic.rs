//! Steady message traffic: every online user sends `per_user` chat messages, one every
//! `interval_secs`, each to a uniformly random other user of the run, starting at a random
//! offset within the interval so the total is a steady rate rather than bursts. With a 1 s
//! interval and 100 messages this is the paper's experiment (seed 001 §5.1).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::login_all;
use crate::client::message;
use crate::scan::{MarkScanner, BODY};
use crate::stats::{latency_histogram, unix_nanos, Report};
use crate::Common;

/// Bytes read per call by each receiving session.
const RECV_READ_BYTES: usize = 4096;

pub async fn run(common: &Common, scenario: &'static str, interval_secs: f64, per_user: u32, drain_secs: u64) -> Report {
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
    let online_count = writers.len() as u32;
    let started = Instant::now();
    let sent = Rc::new(RefCell::new(0u64));
    let send_errors = Rc::new(RefCell::new(0u64));
    let mut senders = Vec::new();
    for (idx, mut writer) in writers.into_iter().enumerate() {
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
    let mut writers = Vec::new();
    for s in senders {
        writers.push(s.await.expect("sender task"));
    }
    let send_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(drain_secs)).await;
    for mut w in writers {
        let _ = w.write_all(b"</stream:stream>").await;
    }
    let (sent, delivered) = (*sent.borrow(), *delivered.borrow());
    let mut report = Report::new(scenario);
    report
        .add("users_online", online_count)
        .add("login_errors", online.errors)
        .add("logins_per_sec", online.logins_per_sec.round())
        .add("sent", sent)
        .add("send_errors", *send_errors.borrow())
        .add("delivered", delivered)
        .add("delivery_ratio", if sent == 0 { 0.0 } else { delivered as f64 / sent as f64 })
        .add("send_secs", (send_secs * 100.0).round() / 100.0)
        .add("offered_msgs_per_sec", (sent as f64 / send_secs).round())
        .latency(&histogram.borrow());
    if common.proc_index.is_some() {
        report.histogram(&histogram.borrow());
    }
    report
}
