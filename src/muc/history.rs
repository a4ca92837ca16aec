//! XEP-0045 §7.2.13-14: the discussion history a room keeps for joiners, and the part of it
//! a joiner asks for (`maxchars`, `maxstanzas`, `seconds`, `since`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use minidom::Element;

use crate::xml::ns;

/// One groupchat message as the room sent it (from `room/nick`, no `to`), and when.
#[derive(Clone)]
pub struct Entry {
    pub at: SystemTime,
    pub xml: Arc<str>,
}

#[derive(Default)]
pub struct History {
    entries: VecDeque<Entry>,
    /// Bytes of the entries' text.
    bytes: usize,
}

/// What a joiner asked for; `None` everywhere: the room's default.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub maxchars: Option<usize>,
    pub maxstanzas: Option<usize>,
    pub seconds: Option<u64>,
    pub since: Option<SystemTime>,
}

impl Request {
    /// The `<history/>` of a join's `<x xmlns='...muc'/>`; attributes that do not parse are
    /// left out.
    pub fn of(muc: Option<&Element>) -> Request {
        let Some(h) = muc.and_then(|x| x.get_child("history", ns::MUC)) else { return Request::default() };
        let num = |name| h.attr(name).and_then(|v| v.trim().parse::<u64>().ok());
        Request {
            maxchars: num("maxchars").map(|n| n as usize),
            maxstanzas: num("maxstanzas").map(|n| n as usize),
            seconds: num("seconds"),
            since: h.attr("since").and_then(|s| humantime::parse_rfc3339_weak(s.trim_end_matches('Z')).ok()),
        }
    }
}

impl History {
    /// Messages kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Keeps `entry`, the oldest going past `length` entries or `bytes_max` bytes.
    pub fn push(&mut self, entry: Entry, length: usize, bytes_max: usize) {
        self.bytes += entry.xml.len();
        self.entries.push_back(entry);
        self.truncate(length, bytes_max);
    }

    pub fn truncate(&mut self, length: usize, bytes_max: usize) {
        while self.entries.len() > length || self.bytes > bytes_max {
            let Some(old) = self.entries.pop_front() else { break };
            self.bytes -= old.xml.len();
        }
    }

    /// The newest entries that fit `req`, oldest first. `maxchars` counts the characters
    /// of each message as sent, as the XEP defines it.
    pub fn select(&self, req: &Request, now: SystemTime) -> Vec<Entry> {
        let mut chars = 0usize;
        let mut picked = Vec::new();
        for e in self.entries.iter().rev() {
            if req.maxstanzas.is_some_and(|max| picked.len() >= max) {
                break;
            }
            if req.seconds.is_some_and(|s| now.duration_since(e.at).unwrap_or(Duration::ZERO) > Duration::from_secs(s)) {
                break;
            }
            if req.since.is_some_and(|since| e.at < since) {
                break;
            }
            chars += e.xml.chars().count();
            if req.maxchars.is_some_and(|max| chars > max) {
                break;
            }
            picked.push(e.clone());
        }
        picked.reverse();
        picked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(n: usize, t0: SystemTime) -> History {
        let mut h = History::default();
        for i in 0..n {
            h.push(Entry { at: t0 + Duration::from_secs(i as u64), xml: format!("<m>{i}</m>").into() }, 5, 1000);
        }
        h
    }

    #[test]
    fn the_newest_that_fit_come_oldest_first() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let h = history(8, t0);
        let all: Vec<_> = h.select(&Request::default(), t0).iter().map(|e| e.xml.to_string()).collect();
        assert_eq!(all, ["<m>3</m>", "<m>4</m>", "<m>5</m>", "<m>6</m>", "<m>7</m>"], "the room keeps 5");
        let two = h.select(&Request { maxstanzas: Some(2), ..Request::default() }, t0);
        assert_eq!(two.iter().map(|e| e.xml.to_string()).collect::<Vec<_>>(), ["<m>6</m>", "<m>7</m>"]);
        assert!(h.select(&Request { maxchars: Some(0), ..Request::default() }, t0).is_empty());
        let recent = h.select(&Request { seconds: Some(1), ..Request::default() }, t0 + Duration::from_secs(7));
        assert_eq!(recent.len(), 2);
        let since = h.select(&Request { since: Some(t0 + Duration::from_secs(5)), ..Request::default() }, t0);
        assert_eq!(since.len(), 3);
    }

    #[test]
    fn bytes_bound_the_history_too() {
        let mut h = History::default();
        for i in 0..4 {
            h.push(Entry { at: SystemTime::UNIX_EPOCH, xml: format!("<m>{i}</m>").into() }, 10, 16);
        }
        assert_eq!(h.select(&Request::default(), SystemTime::UNIX_EPOCH).len(), 2, "8 bytes each, 16 kept");
    }

    #[test]
    fn the_request_is_read_from_the_join() {
        let x: Element = "<x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='3' seconds='x'/></x>".parse().unwrap();
        assert_eq!(Request::of(Some(&x)), Request { maxstanzas: Some(3), ..Request::default() });
    }
}
