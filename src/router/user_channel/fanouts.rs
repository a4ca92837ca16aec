//! Copies of one message to several resources (one to the bare JID, RFC 6121 §8.5.2.1.1),
//! remembered for a while: a session that ends without its client acknowledging a copy
//! (XEP-0198) gives it back to be routed again, and sending it to a sibling that had its
//! own copy would show it there twice. A copy given back goes on only when no other
//! recipient is still bound (each gives back its own if it ends too, so the last one
//! routes it, once). Forgotten entries (past the count or the time below) fall back to
//! routing the copy again: at worst a duplicate, never a loss.

use std::collections::hash_map::DefaultHasher;
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use super::UserChannel;
use crate::router::SessionAddr;
use crate::stanza::Stanza;

/// Fan-outs remembered per user: a user's unacknowledged window is what matters, and it
/// is bounded by `unacked_stanzas_max` per session; past this, the oldest are forgotten.
const FANOUTS_REMEMBERED_MAX: usize = 64;

#[derive(Default)]
pub(super) struct Fanouts(VecDeque<Fanout>);

struct Fanout {
    key: u64,
    at: Instant,
    sessions: Vec<SessionAddr>,
}

fn key_of(stanza: &Stanza) -> u64 {
    let mut h = DefaultHasher::new();
    stanza.xml.hash(&mut h);
    h.finish()
}

impl UserChannel {
    /// Remembers that `stanza` went to each of `targets` (indexes into `resources`).
    pub(super) fn remember_fanout(&mut self, stanza: &Stanza, targets: &[usize]) {
        if targets.len() < 2 || stanza.to_resource().is_some() {
            return;
        }
        // A copy comes back at the latest when its session's resumption window closes.
        let keep = Duration::from_secs(self.core.cfg.stream_management.resume_timeout_secs) + Duration::from_secs(60);
        let fanouts = &mut self.fanouts.0;
        while fanouts.front().is_some_and(|f| f.at.elapsed() > keep) || fanouts.len() >= FANOUTS_REMEMBERED_MAX {
            fanouts.pop_front();
        }
        let sessions = targets.iter().map(|&i| self.resources[i].session).collect();
        fanouts.push_back(Fanout { key: key_of(stanza), at: Instant::now(), sessions });
    }

    /// For a copy given back by an ended session: whether another recipient of the same
    /// fan-out is still bound (it has its own copy, or will give it back in turn).
    pub(super) fn copy_held_elsewhere(&mut self, stanza: &Stanza) -> bool {
        if stanza.to_resource().is_some() {
            return false;
        }
        let key = key_of(stanza);
        let Some(i) = self.fanouts.0.iter().position(|f| f.key == key) else { return false };
        let held = self.fanouts.0[i].sessions.iter().any(|s| self.resources.iter().any(|r| r.session == *s));
        if !held {
            self.fanouts.0.remove(i);
            if self.fanouts.0.is_empty() {
                self.fanouts = Fanouts::default(); // an idle user keeps no buffer
            }
        }
        held
    }
}
