//! The messages that travel between actors, within a core or across the core mesh.

use std::sync::Arc;

use crate::stanza::Stanza;

/// A session's address: the core it lives on and its slot there. `generation` tells a
/// reused slot from the session that held it before, so late messages never reach a stranger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionAddr {
    pub core: u16,
    pub slot: u32,
    pub generation: u32,
}

/// Everything that crosses between cores.
#[derive(Debug)]
pub enum CoreMsg {
    /// For the UserChannel of `user` (a bare JID) on its owner core.
    ToUser { user: Arc<str>, msg: UserMsg },
    /// For one session on its core.
    ToSession { to: SessionAddr, msg: SessionMsg },
}

/// What a UserChannel handles.
#[derive(Debug)]
pub enum UserMsg {
    /// A session of this user bound `resource` (RFC 6120 §7). A session already holding the
    /// resource is replaced and told so.
    Bind { resource: Arc<str>, session: SessionAddr },
    /// A session of this user ended; if it was available its contacts learn it went away.
    Unbind { resource: Arc<str>, session: SessionAddr },
    /// Presence broadcast by one of this user's resources (RFC 6121 §4.2, §4.4, §4.5).
    OwnPresence { resource: Arc<str>, stanza: Stanza },
    /// A subscription request or answer this user sends to a contact (RFC 6121 §3).
    OutboundSubscription(Stanza),
    /// A roster get or set from one of this user's resources (RFC 6121 §2).
    RosterIq { resource: Arc<str>, stanza: Stanza },
    /// A stanza addressed to this user, bare or full JID.
    Inbound(Stanza),
}

/// What a session handles.
#[derive(Debug)]
pub enum SessionMsg {
    /// Write this stanza to the client.
    Deliver(Arc<str>),
    /// Another session bound the same resource: end with `<conflict/>` (RFC 6120 §7.7.2.2).
    Replaced,
    /// The server is stopping: end with `<system-shutdown/>`.
    Shutdown,
}
