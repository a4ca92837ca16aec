//! Presence fan-out (seed 004: presence is what costs an IM server): N users, each with R
//! mutual contacts (its R/2 neighbours on either side of a ring of the users), come online
//! and go offline in rounds; every change is broadcast by the server to the online contacts.
//!
//! Setup is done over XMPP, so any server works: each user asks its forward neighbours for a
//! subscription, and every client approves what it is asked and asks back (RFC 6121 §3);
//! repeated runs find the rosters done and the server answers for the contacts.
//!
//! Each round, a batch of users spread around the ring (no two of them contacts) closes
//! its streams (each contact receives `unavailable`), then logs in again and, once bound,
//! sends an available presence whose status carries the send time (each contact receives
//! it: the fan-out latency, login excluded). `presence_delivered_per_sec` is the rate this
//! paced scenario produced (rounds sleep to let broadcasts land), not the server's ceiling.
//!
//! With `--server-pid`, the server's CPU time is read at each phase of every round. The
//! leaving phase is closes and `unavailable` fan-out only, so its CPU per broadcast is a
//! cost the load generator's speed does not bound; the return phase also holds the batch's
//! logins (a PBKDF2 each with PLAIN), so its CPU is reported but not divided.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use super::login_all;
use crate::client::{self, login, marked_presence, Account};
use crate::cpu::cpu_secs;
use crate::scan::{attr, MarkScanner, STATUS};
use crate::stats::{latency_histogram, unix_nanos, Report};
use crate::Common;

/// Setup is over when, after some subscription traffic, none was seen for this long...
const SETUP_QUIET: Duration = Duration::from_secs(3);
/// ...or after this long in all.
const SETUP_SECS_MAX: u64 = 120;
/// Time for the last broadcasts of a round to arrive.
const ROUND_DRAIN: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Counts {
    subscription_stanzas: u64,
    available_marked: u64,
    unavailable: u64,
    last_subscription: Option<Instant>,
    /// Marks sent before this (the current round's start) are answers to probes carrying an
    /// earlier round's presence: not this round's broadcast.
    round_started_nanos: u128,
}

type Writer = Rc<Mutex<client::Writer>>;

pub struct Plan {
    pub users: u32,
    pub roster: u32,
    pub rounds: u32,
    pub batch: u32,
}

impl Plan {
    /// The users of `round`'s batch: every `stride`-th user, so none is another's contact.
    pub fn batch_of(&self, round: u32) -> Vec<u32> {
        let stride = self.users / self.batch;
        (0..self.batch).map(|k| (k * stride + round) % self.users).collect()
    }

    /// Whether batches keep contacts apart (the stride exceeds half a roster).
    pub fn is_valid(&self) -> bool {
        self.roster.is_multiple_of(2) && self.roster < self.users && self.batch > 0 && self.users / self.batch > self.roster / 2
    }

    /// Broadcasts each kind of change should reach: every member of a batch has R contacts,
    /// all online at that moment.
    pub fn expected_per_kind(&self) -> u64 {
        self.rounds as u64 * self.batch as u64 * self.roster as u64
    }
}

pub async fn run(common: &Common, plan: Plan, server_pids: &[u32]) -> Report {
    assert!(plan.is_valid(), "presence needs an even roster < users and users/batch > roster/2");
    let name = |i: u32| format!("{}{}@{}", common.prefix, common.first + i, common.domain);
    let online = login_all(common).await;
    let online_count = online.sessions.iter().flatten().count() as u64;
    let counts = Rc::new(RefCell::new(Counts::default()));
    let histogram = Rc::new(RefCell::new(latency_histogram()));
    let mut writers: Vec<Option<Writer>> = Vec::new();
    for (i, session) in online.sessions.into_iter().enumerate() {
        writers.push(session.map(|s| spawn_reader(i as u32, s.reader, Rc::new(Mutex::new(s.writer)), &counts, &histogram)));
    }

    // Setup: ask the forward half of the ring; the rest follows from the approvals.
    let setup_started = Instant::now();
    for i in 0..plan.users {
        let Some(w) = &writers[i as usize] else { continue };
        let mut asks = String::new();
        for d in 1..=plan.roster / 2 {
            asks.push_str(&format!("<presence to='{}' type='subscribe'/>", name((i + d) % plan.users)));
        }
        let _ = w.lock().await.write_all(asks.as_bytes()).await;
    }
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let quiet = counts.borrow().last_subscription.is_some_and(|last| last.elapsed() >= SETUP_QUIET);
        if quiet || setup_started.elapsed().as_secs() >= SETUP_SECS_MAX {
            break;
        }
    }
    let setup_secs = setup_started.elapsed().as_secs_f64();
    let subscription_stanzas = counts.borrow().subscription_stanzas;
    *counts.borrow_mut() = Counts::default();
    histogram.borrow_mut().reset();

    // Rounds: the batch leaves, then comes back with a marked presence.
    let started = Instant::now();
    let mut errors = 0u64;
    let timeout = Duration::from_secs(common.connect_timeout_secs);
    let server_started = cpu_secs(server_pids);
    let mut leave_cpu = LeaveCpu::default();
    let mut rounds_cpu = Vec::new();
    for round in 0..plan.rounds {
        let batch = plan.batch_of(round);
        counts.borrow_mut().round_started_nanos = unix_nanos();
        let (cpu_start, unavailable_before) = (cpu_secs(server_pids), counts.borrow().unavailable);
        for &i in &batch {
            if let Some(w) = writers[i as usize].take() {
                let _ = w.lock().await.write_all(b"</stream:stream>").await;
            }
        }
        tokio::time::sleep(ROUND_DRAIN).await; // unavailable fans out
        let (cpu_left, unavailable) = (cpu_secs(server_pids), counts.borrow().unavailable - unavailable_before);
        for &i in &batch {
            let acct = Account {
                server: common.server,
                domain: &common.domain,
                user: format!("{}{}", common.prefix, common.first + i),
                password: &common.password,
                resource: format!("lg{i}r{round}"),
                // Sent below once logged in: the mark's time must not include the login.
                presence: String::new(),
                sasl: common.sasl,
                tls: crate::tls::get(),
                sm: common.sm,
                protocol: common.protocol,
                source: common.source_for(i),
                websocket: common.ws_url.as_ref(),
            };
            match login(&acct, timeout).await {
                Ok(mut s) => {
                    if s.writer.write_all(marked_presence(i, unix_nanos()).as_bytes()).await.is_err() {
                        errors += 1;
                        continue;
                    }
                    writers[i as usize] = Some(spawn_reader(i, s.reader, Rc::new(Mutex::new(s.writer)), &counts, &histogram));
                }
                Err(_) => errors += 1,
            }
        }
        tokio::time::sleep(ROUND_DRAIN).await;
        if let (Some(start), Some(left), Some(end)) = (cpu_start, cpu_left, cpu_secs(server_pids)) {
            leave_cpu.secs += left - start;
            leave_cpu.unavailable += unavailable;
            rounds_cpu.push(json!({
                "round": round, "unavailable_delivered": unavailable,
                "server_cpu_leave_ms": ((left - start) * 1000.0).round(), "server_cpu_return_ms": ((end - left) * 1000.0).round(),
            }));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let server_cpu = cpu_secs(server_pids).zip(server_started).map(|(a, b)| a - b);
    for w in writers.into_iter().flatten() {
        let _ = w.lock().await.write_all(b"</stream:stream>").await;
    }
    let c = counts.borrow();
    let expected = plan.expected_per_kind();
    let mut report = Report::new("presence");
    report
        .add("users_online", online_count)
        .add("login_errors", online.errors as u64 + errors)
        .add("roster", plan.roster)
        .add("setup_secs", (setup_secs * 100.0).round() / 100.0)
        .add("setup_subscription_stanzas", subscription_stanzas)
        .add("changes", plan.rounds as u64 * plan.batch as u64 * 2)
        .add("expected_per_kind", expected)
        .add("unavailable_delivered", c.unavailable)
        .add("available_delivered", c.available_marked)
        .add("delivery_ratio", (c.unavailable + c.available_marked) as f64 / (2 * expected).max(1) as f64)
        .add("presence_delivered_per_sec", ((c.unavailable + c.available_marked) as f64 / secs).round())
        .latency(&histogram.borrow());
    if let Some(cpu) = server_cpu {
        report
            .add("server_cpu_pct_of_core_rounds", (cpu / secs * 1000.0).round() / 10.0)
            .add("server_cpu_us_per_unavailable_delivered", leave_cpu.us_per_unavailable())
            .add("server_cpu_per_round", json!(rounds_cpu));
    }
    report
}

/// Server CPU over the leaving phases of the rounds, and the `unavailable` they delivered.
#[derive(Default)]
struct LeaveCpu {
    secs: f64,
    unavailable: u64,
}

impl LeaveCpu {
    fn us_per_unavailable(&self) -> Option<f64> {
        (self.unavailable > 0).then(|| (self.secs * 1e6 / self.unavailable as f64 * 10.0).round() / 10.0)
    }
}

/// Reads user `me`'s session: approves subscription requests (and asks back), counts the
/// presence broadcasts of the measured rounds, and records the latency of marked ones (not
/// its own presence, which the server reflects to the user's resources).
fn spawn_reader(
    me: u32,
    reader: client::Reader,
    writer: Writer,
    counts: &Rc<RefCell<Counts>>,
    histogram: &Rc<RefCell<hdrhistogram::Histogram<u64>>>,
) -> Writer {
    let (counts, histogram) = (counts.clone(), histogram.clone());
    let mut scan = MarkScanner::new(STATUS);
    let mut pending = String::new();
    client::spawn_receiver(reader, writer.clone(), move |chunk, now, replies| {
        scan.feed(chunk, |sender, sent| {
            let mut c = counts.borrow_mut();
            if sender != me && sent >= c.round_started_nanos {
                let _ = histogram.borrow_mut().record((now.saturating_sub(sent) / 1000).max(1) as u64);
                c.available_marked += 1;
            }
        });
        pending.push_str(&String::from_utf8_lossy(chunk));
        let (answers, rest) = presence_tags(&pending, &counts);
        pending = rest;
        replies.push_str(&answers);
    });
    writer
}

/// Looks at each complete `<presence ...>` start tag in `text`: counts unavailable ones and
/// answers subscription requests. Returns the replies and the unfinished rest.
fn presence_tags(text: &str, counts: &Rc<RefCell<Counts>>) -> (String, String) {
    let mut replies = String::new();
    let mut pos = 0;
    while let Some(start) = text[pos..].find("<presence") {
        let from = pos + start;
        let Some(end) = text[from..].find('>') else { return (replies, text[from..].to_owned()) };
        let tag = &text[from..from + end];
        pos = from + end + 1;
        let type_ = attr(tag, "type").unwrap_or("");
        let mut c = counts.borrow_mut();
        match type_ {
            "unavailable" => c.unavailable += 1,
            "subscribe" | "subscribed" => {
                c.subscription_stanzas += 1;
                c.last_subscription = Some(Instant::now());
                if let (Some(peer), "subscribe") = (attr(tag, "from"), type_) {
                    let bare = peer.split('/').next().unwrap_or(peer);
                    replies.push_str(&format!(
                        "<presence to='{bare}' type='subscribed'/><presence to='{bare}' type='subscribe'/>"
                    ));
                }
            }
            _ => {}
        }
    }
    // Keep a little in case a tag was cut just before "<presence".
    let keep = text.len().saturating_sub(8).max(pos);
    (replies, text[keep..].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_never_hold_two_contacts() {
        let plan = Plan { users: 1000, roster: 20, rounds: 5, batch: 50 };
        assert!(plan.is_valid());
        for round in 0..plan.rounds {
            let b = plan.batch_of(round);
            for &x in &b {
                for &y in &b {
                    let d = x.abs_diff(y).min(plan.users - x.abs_diff(y));
                    assert!(x == y || d > plan.roster / 2, "{x} and {y} are contacts");
                }
            }
        }
        assert_eq!(plan.expected_per_kind(), 5 * 50 * 20);
        assert!(!Plan { users: 100, roster: 20, rounds: 1, batch: 20 }.is_valid());
    }
}
