//! Counters each core keeps about itself, and a Prometheus text endpoint that reads them.
//!
//! The one exception to "cores share nothing": each core writes only its own counters
//! (relaxed atomics, no contention), and the metrics endpoint reads them all.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use shards::cluster::MeshCounters;

#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default, Debug)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
    pub fn set(&self, n: i64) {
        self.0.store(n, Ordering::Relaxed);
    }
}

/// One core's counters. Names in the endpoint are `martlet_<field>` (+ `_total` for counters).
#[derive(Default, Debug)]
pub struct CoreCounters {
    pub connections: Gauge,
    pub sessions: Gauge,
    pub user_channels: Gauge,
    /// Bytes of one bound session's task (its future) and of one online user's actor, as
    /// last spawned: most of what an idle session costs, watched so it cannot creep up.
    pub session_task_bytes: Gauge,
    pub user_task_bytes: Gauge,
    pub routed_stanzas: Counter,
    pub cross_core_messages: Counter,
    pub cross_node_messages: Counter,
    /// Messages for another node given up after it stayed unreachable.
    pub cross_node_drops: Counter,
    pub offline_stored: Counter,
    /// Messages for an offline user not stored, as XEP-0334 hints or XEP-0085 §5.5 ask
    /// (a chat state, a bodiless message, one hinted `<no-store/>`): dropped by design.
    pub offline_not_kept: Counter,
    /// Messages taken from offline storage for a user already online: stored by the side
    /// of a partition that could not reach the session (or while an owner changed), and
    /// handed to it once a path existed again, not at the next login.
    pub offline_to_online: Counter,
    /// Sessions that registered again with an owner node that had their node down and was
    /// back (`CoreMsg::Reregister`): a partition healed, or this node had frozen.
    pub sessions_reregistered: Counter,
    pub auth_failures: Counter,
    /// Password checks and registrations refused because the PBKDF2 pool was saturated.
    pub password_hash_busy: Counter,
    /// XEP-0077 registrations refused by `registrations_per_ip_per_hour`.
    pub registrations_refused: Counter,
    /// Sessions ended because their account was deleted or its password changed.
    pub sessions_revoked: Counter,
    /// Logins through XEP-0388 SASL2, and those of them with a XEP-0484 FAST token.
    pub sasl2_logins: Counter,
    pub fast_logins: Counter,
    /// Sessions closed because their mailbox overflowed (their client stopped reading);
    /// what they could not take is re-routed (`undelivered_rerouted`), not dropped.
    pub session_mailbox_full_drops: Counter,
    /// Messages a session could not hand its client (it stalled or ended first), sent back
    /// to their user's UserChannel for its other resources or offline storage.
    pub undelivered_rerouted: Counter,
    /// Of those, copies of a message to the bare JID not routed again because another of
    /// the user's resources had its own copy (it would have seen the message twice).
    pub undelivered_copies_dropped: Counter,
    /// Stanza errors the server answered a sender with (RFC 6120 §8.3): full offline store
    /// or mailbox, unknown recipient, blocked sender.
    pub stanzas_bounced: Counter,
    pub user_mailbox_full_drops: Counter,
    pub connections_refused: Counter,
    /// Messages to other nodes held until their path's end confirms (`router::custody`).
    pub custody_held: Gauge,
    pub custody_resends: Counter,
    /// Held messages never confirmed after every attempt: lost, as far as this core knows.
    pub custody_given_up: Counter,
    /// Copies of held messages a session had already, dropped instead of written twice.
    pub custody_copies_dropped: Counter,
    /// XEP-0198 hibernating sessions ended past `hibernating_sessions_per_{ip,user}_max`.
    pub hibernation_evictions: Counter,
    /// Sessions ended because their account bound more than `resources_per_user_max`.
    pub resources_evicted: Counter,
    /// Storage calls that failed; the request was refused, never answered as if it worked.
    pub storage_errors: Counter,
    /// Actor steps that panicked and were contained (`shards::contain`): the session ended
    /// with `<internal-server-error/>`, or the user's actor dropped that one message.
    pub actor_panics: Counter,
    /// Times a session stopped reading its socket, out of credit for requests to its
    /// user's actor (`router::credit`): a client pipelining requests, slowed down.
    pub session_reads_paused: Counter,
    /// XEP-0163 items read from storage (each one parsed): what PEP reads cost.
    pub pep_items_read: Counter,
    /// XEP-0045: occupants of the rooms this core owns, rooms created, groupchat
    /// messages broadcast, and stanzas refused because a room's mailbox was full.
    pub muc_occupants: Gauge,
    pub muc_rooms_created: Counter,
    pub muc_messages: Counter,
    pub room_mailbox_full_drops: Counter,
    /// XEP-0206: BOSH sessions living on this core, HTTP requests for them (counted on
    /// the core the request arrived at), and requests answered with an error (a terminate
    /// with a condition, or an HTTP error status).
    pub bosh_sessions: Gauge,
    pub bosh_requests: Counter,
    pub bosh_errors: Counter,
    /// Occupants registered again with a room's new owner after a ring change, silently.
    pub muc_rejoins: Counter,
    /// Hops that carried several messages at once (`CoreMsg::Batch`: a room's fan-out,
    /// one per other core and one per other node).
    pub batched_hops: Counter,
}

impl CoreCounters {
    fn gauges(&self) -> Vec<(&'static str, i64)> {
        vec![
            ("connections", self.connections.get()),
            ("sessions", self.sessions.get()),
            ("user_channels", self.user_channels.get()),
            ("session_task_bytes", self.session_task_bytes.get()),
            ("user_task_bytes", self.user_task_bytes.get()),
            ("custody_held", self.custody_held.get()),
            ("muc_occupants", self.muc_occupants.get()),
            ("bosh_sessions", self.bosh_sessions.get()),
        ]
    }

    // Vectors, not arrays: a new counter is one line here, not a length to keep in step.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("routed_stanzas", self.routed_stanzas.get()),
            ("cross_core_messages", self.cross_core_messages.get()),
            ("cross_node_messages", self.cross_node_messages.get()),
            ("cross_node_drops", self.cross_node_drops.get()),
            ("offline_stored", self.offline_stored.get()),
            ("offline_not_kept", self.offline_not_kept.get()),
            ("offline_to_online", self.offline_to_online.get()),
            ("sessions_reregistered", self.sessions_reregistered.get()),
            ("auth_failures", self.auth_failures.get()),
            ("password_hash_busy", self.password_hash_busy.get()),
            ("registrations_refused", self.registrations_refused.get()),
            ("sessions_revoked", self.sessions_revoked.get()),
            ("sasl2_logins", self.sasl2_logins.get()),
            ("fast_logins", self.fast_logins.get()),
            ("session_mailbox_full_drops", self.session_mailbox_full_drops.get()),
            ("undelivered_rerouted", self.undelivered_rerouted.get()),
            ("undelivered_copies_dropped", self.undelivered_copies_dropped.get()),
            ("stanzas_bounced", self.stanzas_bounced.get()),
            ("user_mailbox_full_drops", self.user_mailbox_full_drops.get()),
            ("connections_refused", self.connections_refused.get()),
            ("custody_resends", self.custody_resends.get()),
            ("custody_given_up", self.custody_given_up.get()),
            ("custody_copies_dropped", self.custody_copies_dropped.get()),
            ("hibernation_evictions", self.hibernation_evictions.get()),
            ("resources_evicted", self.resources_evicted.get()),
            ("storage_errors", self.storage_errors.get()),
            ("actor_panics", self.actor_panics.get()),
            ("session_reads_paused", self.session_reads_paused.get()),
            ("pep_items_read", self.pep_items_read.get()),
            ("muc_rooms_created", self.muc_rooms_created.get()),
            ("muc_messages", self.muc_messages.get()),
            ("room_mailbox_full_drops", self.room_mailbox_full_drops.get()),
            ("bosh_requests", self.bosh_requests.get()),
            ("bosh_errors", self.bosh_errors.get()),
            ("muc_rejoins", self.muc_rejoins.get()),
            ("batched_hops", self.batched_hops.get()),
        ]
    }
}

/// Prometheus text exposition of every core's counters, and of the cluster mesh's
/// listener (its threads belong to no core: reported on core 0's row).
pub fn render(cores: &[Arc<CoreCounters>], mesh: Option<&MeshCounters>) -> String {
    let mut out = String::new();
    let names_g: Vec<_> = cores[0].gauges().into_iter().map(|(n, _)| n).collect();
    for (i, name) in names_g.iter().enumerate() {
        let _ = writeln!(out, "# TYPE martlet_{name} gauge");
        for (core, c) in cores.iter().enumerate() {
            let _ = writeln!(out, "martlet_{name}{{core=\"{core}\"}} {}", c.gauges()[i].1);
        }
    }
    let names_c: Vec<_> = cores[0].counters().into_iter().map(|(n, _)| n).collect();
    for (i, name) in names_c.iter().enumerate() {
        let _ = writeln!(out, "# TYPE martlet_{name}_total counter");
        for (core, c) in cores.iter().enumerate() {
            let _ = writeln!(out, "martlet_{name}_total{{core=\"{core}\"}} {}", c.counters()[i].1);
        }
    }
    // Process-wide, shown on core 0 as the mesh's are: a core's sleep that ran past its next
    // timer, the wake-up lost between glommio's rings and recovered by the sleep's own
    // deadline (shards/vendor/README.md).
    let _ = writeln!(out, "# TYPE martlet_executor_lost_wakeups_total counter");
    let _ = writeln!(out, "martlet_executor_lost_wakeups_total{{core=\"0\"}} {}", glommio::lost_wakeups_total());
    if let Some(m) = mesh {
        let counted = [
            ("mesh_handshakes_refused", &m.refused),
            ("mesh_handshakes_timed_out", &m.timed_out),
            ("mesh_members_down", &m.members_down),
            ("mesh_members_up", &m.members_up),
            ("mesh_silent_connections_closed", &m.silent_closed),
            ("mesh_frames_relayed", &m.frames_relayed),
            ("mesh_relay_frames_dropped", &m.relay_frames_dropped),
            ("mesh_connections_fenced", &m.connections_fenced),
        ];
        for (name, n) in counted {
            let _ = writeln!(out, "# TYPE martlet_{name}_total counter");
            let _ = writeln!(out, "martlet_{name}_total{{core=\"0\"}} {}", n.load(Ordering::Relaxed));
        }
    }
    out
}

/// Largest HTTP request head read, in bytes; the endpoint only needs the request line.
const REQUEST_HEAD_BYTES_MAX: usize = 4096;

/// Serves `GET /metrics` over plain HTTP/1.0 (bind it to loopback or a management network).
pub async fn serve(listener: glommio::net::TcpListener, cores: Arc<Vec<Arc<CoreCounters>>>, mesh: Option<Arc<MeshCounters>>) {
    loop {
        let Ok(mut stream) = listener.accept().await else { continue };
        let (cores, mesh) = (cores.clone(), mesh.clone());
        glommio::spawn_local(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 512];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < REQUEST_HEAD_BYTES_MAX {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let response = if head.starts_with(b"GET /metrics ") {
                let body = render(&cores, mesh.as_deref());
                format!("HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}", body.len())
            } else {
                "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned()
            };
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.close().await;
        })
        .detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_each_core() {
        let cores = vec![Arc::new(CoreCounters::default()), Arc::new(CoreCounters::default())];
        cores[1].sessions.add(3);
        cores[0].cross_core_messages.inc();
        let text = render(&cores, None);
        assert!(text.contains("martlet_sessions{core=\"1\"} 3"), "{text}");
        assert!(text.contains("martlet_cross_core_messages_total{core=\"0\"} 1"), "{text}");
    }
}
