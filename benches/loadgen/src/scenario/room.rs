//! One big XEP-0045 room: N users log in and join `ROOM@SERVICE` under their user names;
//! then SENDERS of them send groupchat messages at a total rate for a while, and every
//! occupant timestamps each copy it gets.
//!
//! - Join: the first user creates the room and, as its owner, submits the configuration
//!   form (§10.1.2: an instant room, with the `--room-config` fields, say a smaller
//!   `muc#roomconfig_presencebroadcast` so that N joins do not cost N² presences); then the
//!   others join, `--join-concurrency` at a time. Each join's latency runs from sending the
//!   join presence to receiving the self-presence (status 110); the join time is the first
//!   join's send to the last self-presence.
//! - Fan-out: per message, from its send to its copy at the LAST occupant (p50/p99/max over
//!   the messages every occupant got: a message some occupant missed has no such time, and
//!   is counted as incomplete instead); per copy; and the delivery ratio over messages ×
//!   occupants (every occupant, its sender too, gets every message). Copies repeated or out
//!   of order per sender, copies of an earlier step, and the errors the room answers
//!   messages with (by condition) are counted.
//! - Steps: with `--rate-max` above `--rate`, the rate doubles while steps hold (p99 send to
//!   last within `--p99-ms-max`, delivery at least `--delivery-min`, no error from the room),
//!   then one step halfway back (scenario/knee.rs's search): the rate the room sustains.
//!   The server's CPU (`--server-pid`) and this process's are read around every step.
//!
//! - `--protocol raw` (benches/relay): the same run through a relay's group, for the floor
//!   of a fan-out on this box. No login beyond `HELLO`; a join is the relay's `JOIN <room>
//!   <ack>` line, the ack being the self-presence (status 110) a room would answer with, so
//!   the relay echoes what the occupant's reader waits for; nobody creates or configures
//!   anything; each message is the same groupchat stanza as a line to the group. The steps,
//!   the stamps and the figures are this same code's.
//!
//! One process holds the whole room: the last copy of a message must be seen in one place.
//! 10,000 sessions fit (20,000 open files here). A copy's time is the kernel's receive stamp
//! of its bytes (SO_TIMESTAMPNS, over plain TCP; with TLS, when this process read it): one
//! thread reading 10,000 sockets reaches the last long after its copy arrived, and that
//! queue is the load generator's, not the server's. This process's CPU is reported with
//! every step, so a step it could not keep up with is not taken for the server's limit.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::Rng;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::{oneshot, Mutex, Semaphore};

use super::knee;
use super::login_all;
use super::steps::{Server, SATURATED_PCT_MIN};
use crate::client::{groupchat, raw_join, spawn_receiver, Protocol, Writer};
use crate::cpu::cpu_secs;
use crate::scan::{attr, Tags};
use crate::stats::{latency_histogram, unix_nanos, Report};
use crate::Common;

const MUC: &str = "http://jabber.org/protocol/muc";
const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
const ROOMCONFIG: &str = "http://jabber.org/protocol/muc#roomconfig";
const STANZA_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// The id of the owner's configuration IQ.
const CONFIG_ID: &str = "lg-room-config";
/// How often a drain looks whether every copy is in.
const DRAIN_POLL: Duration = Duration::from_millis(50);

pub struct Plan {
    /// The room's bare JID.
    pub room: String,
    /// Fields of the owner's configuration form: (var, values).
    pub config: Vec<(String, Vec<String>)>,
    pub join_concurrency: usize,
    pub senders: u32,
    /// The rates to offer: knee's search from `start_rate` up to `rate_max`.
    pub steps: knee::Plan,
}

/// A message of the current step, from its sender's side.
struct Sent {
    sent_nanos: u128,
    copies: u32,
    last_copy_nanos: u128,
}

/// What the occupants' readers saw, shared by all of them.
struct Seen {
    /// Per user: its join, waiting for the room's answer (`Ok(true)`: the room was created).
    joins: Vec<Option<oneshot::Sender<Result<bool, String>>>>,
    config: Option<oneshot::Sender<Result<(), String>>>,
    /// Counts steps, so each occupant's order check starts again with each.
    step: u32,
    /// The current step's messages by (sender, sequence).
    messages: HashMap<(u32, u32), Sent>,
    copy_latency: Histogram<u64>,
    stale_copies: u64,
    disordered_copies: u64,
    /// Errors the room answered messages with, by condition.
    room_errors: BTreeMap<String, u64>,
}

/// The stanza an occupant's reader is in, as far as its tags tell.
#[derive(Default)]
struct Current {
    name: String,
    from_room: bool,
    error: bool,
    config_answer: bool,
    self_presence: bool,
    created: bool,
    condition: Option<String>,
}

/// One occupant's reader: what it is reading, and per sender the last sequence it got
/// in step `step`.
struct Occupant {
    me: usize,
    room: Rc<str>,
    current: Current,
    step: u32,
    last_seq: HashMap<u32, u32>,
}

impl Occupant {
    /// One tag of the stream, of bytes that arrived at `arrived` (Unix nanoseconds).
    fn tag(&mut self, seen: &RefCell<Seen>, arrived: u128, tag: &str, name: &str, text: &str) {
        match name {
            "message" | "presence" | "iq" => {
                let from = attr(tag, "from").unwrap_or("");
                self.current = Current {
                    name: name.to_owned(),
                    from_room: from.strip_prefix(&*self.room).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
                    error: attr(tag, "type") == Some("error"),
                    config_answer: name == "iq" && attr(tag, "id") == Some(CONFIG_ID),
                    ..Current::default()
                };
                if tag.ends_with("/>") {
                    self.end(seen);
                }
            }
            "/message" | "/presence" | "/iq" => self.end(seen),
            "status" => match attr(tag, "code") {
                Some("110") => self.current.self_presence = true,
                Some("201") => self.current.created = true,
                _ => {}
            },
            "/body" if self.current.name == "message" && !self.current.error => {
                if let Some(mark) = text.strip_prefix("lg ").and_then(mark) {
                    self.copy(seen, arrived, mark);
                }
            }
            _ if self.current.error && self.current.condition.is_none() && tag.contains(STANZA_ERRORS) => {
                self.current.condition = Some(name.to_owned());
            }
            _ => {}
        }
    }

    fn copy(&mut self, seen: &RefCell<Seen>, now: u128, (sender, seq, sent_nanos): (u32, u32, u128)) {
        let mut seen = seen.borrow_mut();
        let seen = &mut *seen;
        let Some(m) = seen.messages.get_mut(&(sender, seq)).filter(|m| m.sent_nanos == sent_nanos) else {
            seen.stale_copies += 1;
            return;
        };
        if self.step != seen.step {
            self.step = seen.step;
            self.last_seq.clear();
        }
        if self.last_seq.insert(sender, seq).is_some_and(|last| last >= seq) {
            seen.disordered_copies += 1;
            return;
        }
        m.copies += 1;
        m.last_copy_nanos = m.last_copy_nanos.max(now);
        let _ = seen.copy_latency.record((now.saturating_sub(sent_nanos) / 1000).max(1) as u64);
    }

    /// A stanza ended: answers what waits for it.
    fn end(&mut self, seen: &RefCell<Seen>) {
        let c = std::mem::take(&mut self.current);
        let condition = || c.condition.clone().unwrap_or_else(|| "unknown".into());
        let mut seen = seen.borrow_mut();
        match c.name.as_str() {
            "presence" if c.from_room && (c.error || c.self_presence) => {
                if let Some(tx) = seen.joins.get_mut(self.me).and_then(Option::take) {
                    let _ = tx.send(if c.error { Err(condition()) } else { Ok(c.created) });
                }
            }
            "iq" if c.config_answer => {
                if let Some(tx) = seen.config.take() {
                    let _ = tx.send(if c.error { Err(condition()) } else { Ok(()) });
                }
            }
            "message" if c.from_room && c.error => *seen.room_errors.entry(condition()).or_default() += 1,
            _ => {}
        }
    }
}

/// (sender, sequence, send time) of a mark's text `S Q T`.
fn mark(text: &str) -> Option<(u32, u32, u128)> {
    let mut f = text.split(' ');
    let m = (f.next()?.parse().ok()?, f.next()?.parse().ok()?, f.next()?.parse().ok()?);
    f.next().is_none().then_some(m)
}

/// The owner's configuration form (§10.1.2: with no fields, an instant room).
fn config_iq(room: &str, fields: &[(String, Vec<String>)]) -> String {
    let mut x = format!("<field var='FORM_TYPE' type='hidden'><value>{ROOMCONFIG}</value></field>");
    for (var, values) in fields {
        x.push_str(&format!("<field var='{var}'>"));
        for v in values {
            x.push_str(&format!("<value>{v}</value>"));
        }
        x.push_str("</field>");
    }
    format!("<iq type='set' id='{CONFIG_ID}' to='{room}'><query xmlns='{MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'>{x}</x></query></iq>")
}

/// One step, as measured.
struct Step {
    offered: u32,
    occupants: u64,
    sent: u64,
    send_errors: u64,
    copies: u64,
    complete: u64,
    fan_out: Histogram<u64>,
    copy_latency: Histogram<u64>,
    stale_copies: u64,
    disordered_copies: u64,
    room_errors: BTreeMap<String, u64>,
    send_window_secs: f64,
    drain_secs: f64,
    server_cpu_sending: Option<f64>,
    server_cpu_total: Option<f64>,
    generator_cpu_total: Option<f64>,
}

impl Step {
    fn delivery_ratio(&self) -> f64 {
        crate::stats::delivery_ratio(self.copies, self.sent * self.occupants)
    }

    fn p99_ms(&self) -> f64 {
        self.fan_out.value_at_quantile(0.99) as f64 / 1000.0
    }

    fn holds(&self, plan: &knee::Plan) -> bool {
        self.send_errors == 0
            && self.room_errors.is_empty()
            && self.complete > 0
            && self.delivery_ratio() >= plan.delivery_min
            && self.p99_ms() <= plan.p99_ms_max
    }

    fn server_pct_of_core(&self) -> Option<f64> {
        self.server_cpu_sending.map(|s| 100.0 * s / self.send_window_secs.max(1e-3))
    }

    fn server_saturated(&self, server: &Server) -> Option<bool> {
        self.server_pct_of_core().map(|p| p / server.cores >= SATURATED_PCT_MIN)
    }

    /// This process's CPU over the step, in % of its one core.
    fn generator_pct_of_core(&self) -> Option<f64> {
        self.generator_cpu_total.map(|s| 100.0 * s / (self.send_window_secs + self.drain_secs).max(1e-3))
    }

    fn generator_saturated(&self) -> bool {
        self.generator_pct_of_core().is_some_and(|p| p >= SATURATED_PCT_MIN)
    }

    fn json(&self, server: &Server) -> Value {
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let round = |x: Option<f64>| x.map(|x| (x * 10.0).round() / 10.0);
        let whole = self.send_window_secs + self.drain_secs;
        json!({
            "offered_msgs_per_sec": self.offered,
            "sent": self.sent, "send_errors": self.send_errors, "occupants": self.occupants,
            "sent_msgs_per_sec": (self.sent as f64 / self.send_window_secs.max(1e-3) * 10.0).round() / 10.0,
            "copies_expected": self.sent * self.occupants, "copies_delivered": self.copies,
            "delivery_ratio": self.delivery_ratio(),
            "messages_complete": self.complete, "messages_incomplete": self.sent - self.complete,
            "copies_stale": self.stale_copies, "copies_repeated_or_disordered": self.disordered_copies,
            "room_errors": self.room_errors,
            "fanout_p50_ms": ms(&self.fan_out, 0.5), "fanout_p99_ms": ms(&self.fan_out, 0.99),
            "fanout_max_ms": self.fan_out.max() as f64 / 1000.0,
            "copy_p50_ms": ms(&self.copy_latency, 0.5), "copy_p99_ms": ms(&self.copy_latency, 0.99),
            "send_window_secs": (self.send_window_secs * 100.0).round() / 100.0,
            "drain_secs": (self.drain_secs * 100.0).round() / 100.0,
            "copies_per_sec": (self.copies as f64 / whole.max(1e-3)).round(),
            "server_cpu_pct_of_core": round(self.server_pct_of_core()),
            "server_cpu_pct_of_cores": round(self.server_pct_of_core().map(|p| p / server.cores)),
            "server_cpu_us_per_copy": round(self.server_cpu_total.filter(|_| self.copies > 0).map(|s| s * 1e6 / self.copies as f64)),
            "server_saturated": self.server_saturated(server),
            "generator_cpu_pct_of_core": round(self.generator_pct_of_core()),
        })
    }
}

/// The occupants, joined, with their readers.
struct Room {
    name: Rc<str>,
    protocol: Protocol,
    /// Per user; `None` where the login or the join failed.
    writers: Vec<Option<Rc<Mutex<Writer>>>>,
    seen: Rc<RefCell<Seen>>,
    occupants: u64,
}

impl Room {
    /// Offers `rate` msg/s from the first `senders` occupants for `secs`, then waits until
    /// every copy is in or `drain_secs` passed.
    async fn step(&self, rate: u32, senders: u32, secs: u64, drain_secs: u64, server: &Server) -> Step {
        {
            let mut seen = self.seen.borrow_mut();
            seen.step += 1;
            seen.messages.clear();
            seen.copy_latency.reset();
            seen.stale_copies = 0;
            seen.disordered_copies = 0;
            seen.room_errors.clear();
        }
        let me = [std::process::id()];
        let (server_before, own_before) = (cpu_secs(&server.pids), cpu_secs(&me));
        let started = Instant::now();
        let writers: Vec<(u32, Rc<Mutex<Writer>>)> =
            self.writers.iter().enumerate().filter_map(|(i, w)| Some((i as u32, w.clone()?))).take(senders as usize).collect();
        let per_sender = ((rate as u64 * secs) / writers.len().max(1) as u64).max(1) as u32;
        let interval = Duration::from_secs_f64(writers.len() as f64 / rate.max(1) as f64);
        let send_errors = Rc::new(RefCell::new(0u64));
        let mut tasks = Vec::new();
        for (sender, writer) in writers {
            let (seen, room, send_errors, protocol) = (self.seen.clone(), self.name.clone(), send_errors.clone(), self.protocol);
            tasks.push(tokio::task::spawn_local(async move {
                let start = tokio::time::Instant::now() + interval.mul_f64(rand::thread_rng().gen::<f64>());
                for seq in 0..per_sender {
                    tokio::time::sleep_until(start + interval * seq).await;
                    let sent_nanos = unix_nanos();
                    // Known before it is sent: its first copy may come back before the write returns.
                    seen.borrow_mut().messages.insert((sender, seq), Sent { sent_nanos, copies: 0, last_copy_nanos: 0 });
                    if writer.lock().await.write_all(groupchat(protocol, &room, sender, seq, sent_nanos).as_bytes()).await.is_err() {
                        seen.borrow_mut().messages.remove(&(sender, seq));
                        *send_errors.borrow_mut() += 1;
                    }
                }
            }));
        }
        for t in tasks {
            t.await.expect("sender task");
        }
        let send_window_secs = started.elapsed().as_secs_f64();
        let server_sent = cpu_secs(&server.pids);
        let drain_started = Instant::now();
        let all_in = || self.seen.borrow().messages.values().all(|m| m.copies as u64 >= self.occupants);
        while !all_in() && drain_started.elapsed() < Duration::from_secs(drain_secs) {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        let drain_secs = drain_started.elapsed().as_secs_f64();
        let (server_after, own_after) = (cpu_secs(&server.pids), cpu_secs(&me));
        let seen = self.seen.borrow();
        let mut fan_out = latency_histogram();
        let mut copies = 0u64;
        for m in seen.messages.values() {
            copies += m.copies as u64;
            if m.copies as u64 >= self.occupants {
                let _ = fan_out.record((m.last_copy_nanos.saturating_sub(m.sent_nanos) / 1000).max(1) as u64);
            }
        }
        let diff = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a - b);
        let send_errors = *send_errors.borrow();
        Step {
            offered: rate,
            occupants: self.occupants,
            sent: seen.messages.len() as u64,
            send_errors,
            copies,
            complete: fan_out.len(),
            fan_out,
            copy_latency: seen.copy_latency.clone(),
            stale_copies: seen.stale_copies,
            disordered_copies: seen.disordered_copies,
            room_errors: seen.room_errors.clone(),
            send_window_secs,
            drain_secs,
            server_cpu_sending: diff(server_sent, server_before),
            server_cpu_total: diff(server_after, server_before),
            generator_cpu_total: diff(own_after, own_before),
        }
    }

    async fn close(self) {
        // The relay's connections just close (a stream end would be half a line to it).
        if self.protocol == Protocol::Raw {
            return;
        }
        for w in self.writers.into_iter().flatten() {
            let _ = w.lock().await.write_all(b"</stream:stream>").await;
        }
    }
}

/// Whether the server (None: not measured) and this process were saturated in a step.
struct Busy {
    server: Option<bool>,
    generator: bool,
}

/// Whose limit the sustained rate is, from the step that held last and the first that did
/// not: knee's reading, except that a step may also fail with nobody saturated (a room's
/// latency bound, on a box shared with other work), which says so rather than blaming the
/// load generator.
fn verdict(held: Option<&Busy>, failed: Option<&Busy>, any_failed: bool) -> &'static str {
    let server = |b: Option<&Busy>| b.and_then(|b| b.server);
    if server(held) == Some(true) || server(failed) == Some(true) {
        "server-saturated"
    } else if held.is_some_and(|b| b.generator) || failed.is_some_and(|b| b.generator) {
        "lower bound (generator-limited)"
    } else if !any_failed {
        "lower bound (every step held up to --rate-max)"
    } else if server(failed).is_none() {
        "unknown (no --server-pid)"
    } else {
        "latency or delivery bound, neither the server nor loadgen saturated"
    }
}

/// What joins `room` under `nick`: the join presence (§7.2.1, no history), or the relay's
/// join line whose ack is the self-presence a room answers with.
fn join_request(protocol: Protocol, room: &str, nick: &str) -> String {
    match protocol {
        Protocol::Xmpp => format!("<presence to='{room}/{nick}'><x xmlns='{MUC}'><history maxstanzas='0'/></x></presence>"),
        Protocol::Raw => raw_join(room, &format!("<presence from='{room}/{nick}'><x xmlns='{MUC_USER}'><status code='110'/></x></presence>")),
    }
}

/// Joins user `i` under `nick`: its latency to the self-presence, and whether it created the room.
async fn join(writer: &Rc<Mutex<Writer>>, seen: &RefCell<Seen>, i: usize, request: String, timeout: Duration) -> Result<(bool, Duration), String> {
    let (tx, rx) = oneshot::channel();
    seen.borrow_mut().joins[i] = Some(tx);
    let began = Instant::now();
    writer.lock().await.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(answer)) => answer.map(|created| (created, began.elapsed())),
        Ok(Err(_)) => Err("the session ended".into()),
        Err(_) => Err("no self-presence in time".into()),
    }
}

pub async fn run(common: &Common, plan: Plan, server: &Server) -> Report {
    let online = login_all(common).await;
    let users = online.sessions.len();
    let seen = Rc::new(RefCell::new(Seen {
        joins: (0..users).map(|_| None).collect(),
        config: None,
        step: 0,
        messages: HashMap::new(),
        copy_latency: latency_histogram(),
        stale_copies: 0,
        disordered_copies: 0,
        room_errors: BTreeMap::new(),
    }));
    let room: Rc<str> = plan.room.as_str().into();
    let mut writers = Vec::with_capacity(users);
    for (i, session) in online.sessions.into_iter().enumerate() {
        writers.push(session.map(|s| {
            let writer = Rc::new(Mutex::new(s.writer));
            let mut occupant = Occupant { me: i, room: room.clone(), current: Current::default(), step: 0, last_seq: HashMap::new() };
            let (mut tags, seen) = (Tags::default(), seen.clone());
            if let Err(e) = s.reader.stamp_arrivals() {
                eprintln!("room: no kernel receive stamps ({e}): copies are timed when read");
            }
            spawn_receiver(s.reader, writer.clone(), move |chunk, arrived, _| {
                tags.feed(chunk, |tag, name, text| occupant.tag(&seen, arrived, tag, name, text))
            });
            writer
        }));
    }
    // Progress on stderr: a run cut short by a time bound still tells how far it got.
    eprintln!("room: {} of {users} logged in in {:.1} s", users - online.errors as usize, online.secs);
    let request = |i: usize| join_request(common.protocol, &room, &format!("{}{}", common.prefix, common.first + i as u32));
    let timeout = Duration::from_secs(common.connect_timeout_secs);
    let mut report = Report::new("room");
    report
        .add("users_online", writers.iter().flatten().count())
        .add("login_errors", online.errors)
        .add("room", &*room)
        // Only a plain TCP reader takes kernel stamps (`Reader::stamp_arrivals`).
        .add("copies_timed_by", if common.tls == crate::tls::TlsMode::None && common.ws_url.is_none() { "kernel receive stamp" } else { "loadgen's read" });

    // The first user creates the room and configures it; without it there is no room.
    let Some(owner) = writers.iter().position(Option::is_some) else { return report };
    let mut join_latency = latency_histogram();
    let mut join_errors: BTreeMap<String, u64> = BTreeMap::new();
    let joins_started = Instant::now();
    let created = match join(writers[owner].as_ref().expect("online"), &seen, owner, request(owner), timeout).await {
        Ok((created, took)) => {
            let _ = join_latency.record((took.as_micros() as u64).max(1));
            created
        }
        Err(e) => {
            report.add("owner_join_error", e);
            return report;
        }
    };
    report.add("room_created", created).add("room_config", json!(plan.config));
    if created {
        let (tx, rx) = oneshot::channel();
        seen.borrow_mut().config = Some(tx);
        let w = writers[owner].as_ref().expect("online");
        let _ = w.lock().await.write_all(config_iq(&room, &plan.config).as_bytes()).await;
        let answer = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => answer,
            _ => Err("no answer in time".into()),
        };
        if let Err(e) = answer {
            report.add("room_config_error", e);
            return report;
        }
    }

    let gate = Rc::new(Semaphore::new(plan.join_concurrency.max(1)));
    let mut tasks = Vec::new();
    for (i, w) in writers.iter().enumerate().filter(|(i, _)| *i != owner) {
        let Some(w) = w.clone() else { continue };
        let (gate, seen, request) = (gate.clone(), seen.clone(), request(i));
        let task = tokio::task::spawn_local(async move {
            let _permit = gate.acquire().await.expect("semaphore open");
            join(&w, &seen, i, request, timeout).await
        });
        tasks.push((i, task));
    }
    let mut occupants = 1u64; // the owner
    for (i, t) in tasks {
        match t.await.expect("join task") {
            Ok((_, took)) => {
                let _ = join_latency.record((took.as_micros() as u64).max(1));
                occupants += 1;
            }
            Err(e) => {
                *join_errors.entry(e).or_default() += 1;
                writers[i] = None; // not an occupant: it neither sends nor counts
            }
        }
    }
    let join_secs = joins_started.elapsed().as_secs_f64();
    eprintln!("room: {occupants} joined in {join_secs:.1} s, {} refused", join_errors.values().sum::<u64>());
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    report
        .add("occupants", occupants)
        .add("join_errors", join_errors.values().sum::<u64>())
        .add("join_error_kinds", json!(join_errors))
        .add("join_secs", (join_secs * 1000.0).round() / 1000.0)
        .add("joins_per_sec", (occupants as f64 / join_secs.max(1e-3)).round())
        .add("join_p50_ms", ms(&join_latency, 0.5))
        .add("join_p99_ms", ms(&join_latency, 0.99))
        .add("join_max_ms", join_latency.max() as f64 / 1000.0);

    let room = Room { name: room, protocol: common.protocol, writers, seen, occupants };
    let (mut held, mut failed, mut bisected) = (None::<u32>, None::<u32>, false);
    let mut steps: Vec<(u32, Busy, Value)> = Vec::new();
    let mut rate = plan.steps.start_rate;
    loop {
        let step = room.step(rate, plan.senders, plan.steps.step_secs, plan.steps.drain_secs, server).await;
        let ok = step.holds(&plan.steps);
        eprintln!(
            "room: {rate} msg/s to {occupants} occupants: send-to-last p99 {:.1} ms, {}/{} copies, errors {:?}, server CPU {}: {}",
            step.p99_ms(),
            step.copies,
            step.sent * step.occupants,
            step.room_errors,
            step.server_pct_of_core().map_or("unknown".into(), |p| format!("{p:.0} % of a core")),
            if ok { "held" } else { "did not hold" }
        );
        let mut record = step.json(server);
        record["held"] = json!(ok);
        if ok {
            held = Some(held.map_or(rate, |h| h.max(rate)));
        } else {
            failed = Some(failed.map_or(rate, |f| f.min(rate)));
        }
        let busy = Busy { server: step.server_saturated(server), generator: step.generator_saturated() };
        steps.push((rate, busy, record));
        match plan.steps.next_rate(rate, ok, held, bisected) {
            Some(next) => {
                bisected = !ok;
                rate = next;
            }
            None => break,
        }
    }
    room.close().await;
    // The fixed-rate figures are the first step's; the sustained rate is the search's.
    let first = &steps[0].2;
    for key in ["offered_msgs_per_sec", "delivery_ratio", "messages_incomplete", "fanout_p50_ms", "fanout_p99_ms", "fanout_max_ms", "copy_p50_ms", "copy_p99_ms", "server_cpu_pct_of_core", "server_cpu_us_per_copy", "generator_cpu_pct_of_core"] {
        report.add(key, first[key].clone());
    }
    let step_at = |r: Option<u32>| r.and_then(|r| steps.iter().find(|s| s.0 == r)).map(|s| &s.1);
    let verdict = verdict(step_at(held), step_at(failed), failed.is_some());
    report
        .add("senders", plan.senders)
        .add("sustained_msgs_per_sec", held.unwrap_or(0))
        .add("sustained_verdict", verdict)
        .add("first_failed_msgs_per_sec", failed.map_or(json!(null), |f| json!(f)))
        .add("server_cores", server.cores)
        .add("p99_ms_max", plan.steps.p99_ms_max)
        .add("delivery_min", plan.steps.delivery_min)
        .add("step_secs", plan.steps.step_secs)
        .add("steps", json!(steps.into_iter().map(|s| s.2).collect::<Vec<_>>()));
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(users: usize) -> RefCell<Seen> {
        RefCell::new(Seen {
            joins: (0..users).map(|_| None).collect(),
            config: None,
            step: 1,
            messages: HashMap::new(),
            copy_latency: latency_histogram(),
            stale_copies: 0,
            disordered_copies: 0,
            room_errors: BTreeMap::new(),
        })
    }

    fn feed(o: &mut Occupant, seen: &RefCell<Seen>, stream: &str) {
        let mut tags = Tags::default();
        tags.feed(stream.as_bytes(), |tag, name, text| o.tag(seen, 1000, tag, name, text));
    }

    /// A join of user 0 waiting for its answer.
    fn awaiting_join(s: &RefCell<Seen>) -> oneshot::Receiver<Result<bool, String>> {
        let (tx, rx) = oneshot::channel();
        s.borrow_mut().joins[0] = Some(tx);
        rx
    }

    fn occupant() -> Occupant {
        Occupant { me: 0, room: "r@c".into(), current: Current::default(), step: 0, last_seq: HashMap::new() }
    }

    #[test]
    fn a_limit_is_the_generators_only_where_it_was_saturated() {
        let b = |server, generator| Busy { server: Some(server), generator };
        assert_eq!(verdict(Some(&b(false, false)), Some(&b(true, false)), true), "server-saturated");
        assert_eq!(verdict(Some(&b(false, false)), Some(&b(false, true)), true), "lower bound (generator-limited)");
        assert_eq!(verdict(Some(&b(false, false)), Some(&b(false, false)), true), "latency or delivery bound, neither the server nor loadgen saturated");
        assert_eq!(verdict(Some(&b(false, false)), None, false), "lower bound (every step held up to --rate-max)");
        assert_eq!(verdict(None, Some(&Busy { server: None, generator: false }), true), "unknown (no --server-pid)");
    }

    #[test]
    fn a_join_ends_at_the_self_presence_or_the_rooms_error() {
        let s = seen(1);
        let mut o = occupant();
        let mut rx = awaiting_join(&s);
        // Another occupant's presence, then ours with 201 and 110.
        feed(&mut o, &s, "<presence from='r@c/a'><x><item role='moderator'/></x></presence>");
        assert!(rx.try_recv().is_err());
        feed(&mut o, &s, "<presence from='r@c/u1'><x><status code='110'/><status code='201'/></x></presence>");
        assert_eq!(rx.try_recv().unwrap(), Ok(true));
        let mut rx = awaiting_join(&s);
        feed(&mut o, &s, "<presence from='r@c/u1' type='error'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>");
        assert_eq!(rx.try_recv().unwrap(), Err("service-unavailable".to_owned()));
    }

    /// What the relay writes back for a line (benches/relay: a JOIN's ack, a group line's
    /// payload), as loadgen's reader would get it.
    fn relayed(line: &str) -> &str {
        let rest = line.strip_suffix('\n').expect("one line");
        match rest.strip_prefix("JOIN r@c ") {
            Some(ack) => ack,
            None => rest.strip_prefix("r@c ").expect("a line to the group"),
        }
    }

    #[test]
    fn through_the_relay_a_join_ends_at_its_ack_and_a_line_is_a_copy() {
        let s = seen(1);
        let mut o = occupant();
        let mut rx = awaiting_join(&s);
        feed(&mut o, &s, relayed(&join_request(Protocol::Raw, "r@c", "u1")));
        assert_eq!(rx.try_recv().unwrap(), Ok(false), "joined; nobody created the group");
        s.borrow_mut().messages.insert((3, 0), Sent { sent_nanos: 100, copies: 0, last_copy_nanos: 0 });
        feed(&mut o, &s, relayed(&groupchat(Protocol::Raw, "r@c", 3, 0, 100)));
        assert_eq!(s.borrow().messages[&(3, 0)].copies, 1);
        assert_eq!(groupchat(Protocol::Xmpp, "r@c", 3, 0, 100), relayed(&groupchat(Protocol::Raw, "r@c", 3, 0, 100)), "the same stanza either way");
    }

    #[test]
    fn copies_count_once_per_occupant_and_bounces_not_at_all() {
        let s = seen(1);
        s.borrow_mut().messages.insert((3, 0), Sent { sent_nanos: 100, copies: 0, last_copy_nanos: 0 });
        s.borrow_mut().messages.insert((3, 1), Sent { sent_nanos: 200, copies: 0, last_copy_nanos: 0 });
        let mut o = occupant();
        let copy = |seq, nanos| format!("<message from='r@c/u3' type='groupchat'><body>lg 3 {seq} {nanos}</body></message>");
        feed(&mut o, &s, &(copy(0, 100) + &copy(0, 100) + &copy(1, 50)));
        feed(&mut o, &s, "<message from='r@c' type='error'><body>lg 3 1 200</body><error><resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>");
        let s = s.borrow();
        assert_eq!(s.messages[&(3, 0)].copies, 1);
        assert_eq!(s.messages[&(3, 1)].copies, 0, "a copy of another step's message and a bounce are no delivery");
        assert_eq!((s.disordered_copies, s.stale_copies), (1, 1));
        assert_eq!(s.room_errors.get("resource-constraint"), Some(&1));
    }
}
