//! XEP-0198 Stream Management: the counters and the queue of stanzas the client has not yet
//! acknowledged, as one session keeps them, plus the protocol's elements.
//!
//! The session owns an [`SmState`] once the client sends `<enable/>`. Every stanza written
//! to the client is counted and queued until an `<a h='…'/>` covers it; every stanza read
//! from the client is counted for our `<a/>`. When a resumable session loses its
//! connection it keeps its queue for `resume_timeout_secs` (see `c2s::session`); a client
//! that comes back with `<resume/>` gets the uncovered stanzas again, and one that does not
//! has them re-routed (to its other resources or offline storage, `router::user_channel`).
//!
//! Resumption ids name the resource's record in its UserChannel, never a core or slot, so a
//! session may be resumed on any core (SO_REUSEPORT spreads reconnects) and again later.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use minidom::Element;

use crate::config::StreamManagement;
use crate::stanza::build;
use crate::xml::ns;

/// One session's stream-management state.
#[derive(Debug)]
pub struct SmState {
    /// Stanzas sent to the client, mod 2^32 (XEP-0198 §4).
    pub sent: u32,
    /// Stanzas handled from the client, mod 2^32: our `h`.
    pub handled: u32,
    /// Sent and not yet acknowledged, oldest first; `sent - unacked.len()` is the client's last `h`.
    unacked: VecDeque<Unacked>,
    /// `Some(id)` when the client asked for resumption.
    pub resume_id: Option<Arc<str>>,
    /// An `<r/>` went out and its `<a/>` has not come back: do not ask again.
    ack_requested: bool,
    /// When the oldest stanza sent since the last `<r/>` went out.
    unrequested_since: Option<Instant>,
    unacked_max: usize,
    /// Ask for an ack once this many stanzas wait for one, or once the oldest not yet
    /// asked about has waited `ack_request_delay`: a phone receiving one message a second
    /// then answers one `<r/>` per few messages instead of one per message.
    ack_request_stanzas: usize,
    ack_request_delay: Duration,
}

/// The client acknowledged more than was sent (XEP-0198 §4, `<handled-count-too-high/>`).
#[derive(Debug, PartialEq, Eq)]
pub struct TooHigh {
    pub h: u32,
    pub sent: u32,
}

impl SmState {
    pub fn new(resume_id: Option<Arc<str>>, cfg: &StreamManagement) -> SmState {
        SmState {
            sent: 0,
            handled: 0,
            unacked: VecDeque::new(),
            resume_id,
            ack_requested: false,
            unrequested_since: None,
            unacked_max: cfg.unacked_stanzas_max,
            ack_request_stanzas: cfg.ack_request_stanzas,
            ack_request_delay: Duration::from_millis(cfg.ack_request_delay_ms),
        }
    }

    /// The state a resumed session continues with: the client has `h_client` of ours, and
    /// `unacked` (ours after that) goes out again and is counted again.
    pub fn resumed(resume_id: Arc<str>, handled: u32, h_client: u32, cfg: &StreamManagement) -> SmState {
        let mut s = SmState::new(Some(resume_id), cfg);
        s.sent = h_client;
        s.handled = handled;
        s
    }

    /// A stanza goes out at `now`; `false` when the queue is past its limit (the client
    /// does not ack).
    pub fn on_sent(&mut self, xml: Arc<str>, now: Instant) -> bool {
        self.sent = self.sent.wrapping_add(1);
        self.unacked.push_back(Unacked { xml, sent_at: SystemTime::now() });
        self.unrequested_since.get_or_insert(now);
        self.unacked.len() <= self.unacked_max
    }

    /// When an `<r/>` is due (`None`: none is); at or before `now` means at once.
    pub fn ack_request_due(&self) -> Option<Instant> {
        let since = self.unrequested_since.filter(|_| !self.ack_requested)?;
        if self.unacked.len() >= self.ack_request_stanzas {
            return Some(since);
        }
        Some(since + self.ack_request_delay)
    }

    /// Whether to write an `<r/>` now; if so, it counts as written. `riding`: the write
    /// goes to a client that is awake anyway (an answer to its request, or our ping, which
    /// it must answer), so an `<r/>` along costs it no extra wake-up and is not put off.
    pub fn take_ack_request(&mut self, now: Instant, riding: bool) -> bool {
        let due = self.ack_request_due().is_some_and(|due| riding || due <= now);
        if due {
            self.ack_requested = true;
            self.unrequested_since = None;
        }
        due
    }

    /// The client's `<a h='…'/>`: drop what it covers.
    pub fn on_ack(&mut self, h: u32) -> Result<(), TooHigh> {
        let last_acked = self.sent.wrapping_sub(self.unacked.len() as u32);
        // Signed, so a counter that wrapped past 2^32 still compares; an `h` behind the
        // last one (a stale ack) covers nothing new.
        let newly = h.wrapping_sub(last_acked) as i32;
        if newly > self.unacked.len() as i32 {
            return Err(TooHigh { h, sent: self.sent });
        }
        if newly >= 0 {
            self.unacked.drain(..newly as usize);
            self.ack_requested = false; // a stale `h` does not answer the `<r/>` out now
        }
        Ok(())
    }

    pub fn on_handled(&mut self) {
        self.handled = self.handled.wrapping_add(1);
    }

    pub fn unacked_len(&self) -> usize {
        self.unacked.len()
    }

    /// Takes what the client has not acknowledged, oldest first.
    pub fn take_unacked(&mut self) -> Vec<Unacked> {
        self.unacked.drain(..).collect()
    }
}

/// A stanza sent and not acknowledged, and when it went out: the time it is stamped with
/// (XEP-0203) if it has to be routed again after the session ends.
#[derive(Debug, PartialEq)]
pub struct Unacked {
    pub xml: Arc<str>,
    pub sent_at: SystemTime,
}

/// The state and the `<enabled/>` answer for a client's `<enable/>`, with a resumption id
/// when it asked for one and resumption is on.
pub fn enable(cfg: &StreamManagement, resume: bool) -> (SmState, Element) {
    let resume_id = (resume && cfg.resume_timeout_secs > 0).then(new_resume_id);
    let reply = enabled(resume_id.as_deref(), cfg.resume_timeout_secs);
    (SmState::new(resume_id, cfg), reply)
}

/// A fresh, unguessable resumption id.
fn new_resume_id() -> Arc<str> {
    format!("{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>()).into()
}

/// What the client may send in the SM namespace.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientSm {
    Enable { resume: bool },
    Request,
    Ack(u32),
    Resume { previd: String, h: u32 },
    /// Well-formed but not one of the above, or missing its `h`.
    Invalid,
}

impl ClientSm {
    /// `None` when `el` is not in the SM namespace.
    pub fn parse(el: &Element) -> Option<ClientSm> {
        if el.ns() != ns::SM {
            return None;
        }
        let h = || el.attr("h").and_then(|h| h.parse::<u32>().ok());
        Some(match el.name() {
            "enable" => ClientSm::Enable { resume: matches!(el.attr("resume"), Some("true" | "1")) },
            "r" => ClientSm::Request,
            "a" => h().map_or(ClientSm::Invalid, ClientSm::Ack),
            "resume" => match (el.attr("previd"), h()) {
                (Some(previd), Some(h)) => ClientSm::Resume { previd: previd.to_owned(), h },
                _ => ClientSm::Invalid,
            },
            _ => ClientSm::Invalid,
        })
    }
}

/// `<sm/>`, offered once the client has authenticated (XEP-0198 §3).
pub fn stream_feature() -> Element {
    Element::bare("sm", ns::SM)
}

pub fn enabled(resume_id: Option<&str>, resume_timeout_secs: u64) -> Element {
    match resume_id {
        Some(id) => build("enabled", ns::SM, &[("id", id), ("resume", "true"), ("max", &resume_timeout_secs.to_string())], vec![]),
        None => Element::bare("enabled", ns::SM),
    }
}

pub fn ack(handled: u32) -> Element {
    build("a", ns::SM, &[("h", &handled.to_string())], vec![])
}

pub fn request() -> Element {
    Element::bare("r", ns::SM)
}

pub fn resumed(previd: &str, handled: u32) -> Element {
    build("resumed", ns::SM, &[("previd", previd), ("h", &handled.to_string())], vec![])
}

/// `<failed/>` with a stanza error condition (XEP-0198 §3, §5).
pub fn failed(condition: &str) -> Element {
    build("failed", ns::SM, &[], vec![Element::bare(condition, ns::STANZA_ERRORS)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xml_of(unacked: Vec<Unacked>) -> Vec<Arc<str>> {
        unacked.into_iter().map(|u| u.xml).collect()
    }

    fn cfg() -> StreamManagement {
        StreamManagement { unacked_stanzas_max: 3, ack_request_stanzas: 2, ack_request_delay_ms: 1000, ..StreamManagement::default() }
    }

    fn state_with(n: usize) -> SmState {
        let mut s = SmState::new(None, &cfg());
        for i in 0..n {
            s.on_sent(format!("<m{i}/>").into(), Instant::now());
        }
        s
    }

    #[test]
    fn acks_are_asked_for_after_a_few_stanzas_or_a_delay() {
        let t0 = Instant::now();
        let mut s = SmState::new(None, &cfg());
        assert_eq!(s.ack_request_due(), None);
        s.on_sent("<a/>".into(), t0);
        assert_eq!(s.ack_request_due(), Some(t0 + Duration::from_secs(1)));
        assert!(!s.take_ack_request(t0, false));
        s.on_sent("<b/>".into(), t0 + Duration::from_millis(10));
        assert!(s.take_ack_request(t0 + Duration::from_millis(10), false), "two unacked: ask now");
        s.on_sent("<c/>".into(), t0 + Duration::from_millis(20));
        assert_eq!(s.ack_request_due(), None, "one <r/> at a time");
        s.on_ack(2).unwrap();
        assert!(!s.take_ack_request(t0 + Duration::from_millis(500), false));
        assert!(s.take_ack_request(t0 + Duration::from_millis(1020), false), "<c/> waited long enough");
        s.on_ack(1).unwrap(); // a stale `h`: the <r/> is still out
        assert_eq!(s.ack_request_due(), None);
        s.on_ack(3).unwrap();
        s.on_sent("<d/>".into(), t0 + Duration::from_millis(1030));
        assert!(s.take_ack_request(t0 + Duration::from_millis(1030), true), "with a ping, at once");
    }

    #[test]
    fn acks_drop_what_they_cover() {
        let mut s = state_with(3);
        s.on_ack(2).unwrap();
        // An ack repeated or older changes nothing.
        s.on_ack(2).unwrap();
        s.on_ack(1).unwrap();
        assert_eq!(xml_of(s.take_unacked()), vec![Arc::<str>::from("<m2/>")]);
    }

    #[test]
    fn ack_past_sent_is_refused() {
        let mut s = state_with(2);
        assert_eq!(s.on_ack(3), Err(TooHigh { h: 3, sent: 2 }));
    }

    #[test]
    fn counters_wrap_at_2_pow_32() {
        let mut s = SmState::resumed("id".into(), 0, u32::MAX, &cfg());
        s.on_sent("<a/>".into(), Instant::now());
        s.on_sent("<b/>".into(), Instant::now());
        assert_eq!(s.sent, 1);
        s.on_ack(0).unwrap();
        assert_eq!(xml_of(s.take_unacked()), vec![Arc::<str>::from("<b/>")]);
    }

    #[test]
    fn queue_limit_is_reported() {
        let mut s = state_with(3);
        assert!(!s.on_sent("<x/>".into(), Instant::now()));
    }

    #[test]
    fn client_elements() {
        let parse = |xml: &str| ClientSm::parse(&xml.parse::<Element>().unwrap());
        assert_eq!(parse("<enable xmlns='urn:xmpp:sm:3' resume='true'/>"), Some(ClientSm::Enable { resume: true }));
        assert_eq!(parse("<a xmlns='urn:xmpp:sm:3' h='7'/>"), Some(ClientSm::Ack(7)));
        assert_eq!(parse("<a xmlns='urn:xmpp:sm:3'/>"), Some(ClientSm::Invalid));
        assert_eq!(
            parse("<resume xmlns='urn:xmpp:sm:3' previd='x' h='1'/>"),
            Some(ClientSm::Resume { previd: "x".into(), h: 1 })
        );
        assert_eq!(parse("<r xmlns='urn:other'/>"), None);
    }
}
