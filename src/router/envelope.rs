//! The messages that travel between actors: within a core, across the core mesh, and (in
//! their serde form, see [`super::wire`]) across the cluster mesh between nodes.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::admin_query::{AdminAnswer, AdminTicket};
use crate::modules::blocking::BlockList;
use crate::modules::entity_caps::Interests;
use crate::stanza::{Receipt, Stanza};

/// A session's address: its node, the core it lives on there and its slot on that core.
/// `generation` tells a reused slot from the session that held it before, so late messages
/// never reach a stranger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionAddr {
    /// The node's id on the ring (`shards::ring`); 0 on a single node.
    pub node: u32,
    pub core: u16,
    pub slot: u32,
    pub generation: u32,
}

/// Everything that crosses between cores.
#[derive(Debug, Serialize, Deserialize)]
pub enum CoreMsg {
    /// For the UserChannel of `user` (a bare JID) on its owner core.
    ToUser { user: Arc<str>, msg: UserMsg },
    /// For one session on its core.
    ToSession { to: SessionAddr, msg: SessionMsg },
    /// For the XEP-0045 room `room` (a bare JID at the MUC service) on its owner core.
    ToRoom { room: Arc<str>, msg: RoomMsg },
    /// A message for one session, held by the core `receipt` names (`super::custody`):
    /// the session's core confirms it, and queues it as `SessionMsg::Deliver` (or, a
    /// room's copy, `SessionMsg::FromRoom`) unless it had it already, under `receipt` or
    /// under `earlier`: the receipt it came with before it was stored offline
    /// (`crate::modules::offline::row`).
    HeldDelivery { to: SessionAddr, xml: Arc<str>, receipt: Receipt, from_room: bool, earlier: Option<Receipt> },
    /// Messages read back from offline storage for a session on this node, with the
    /// receipts they were stored with: the session's core drops those it had already (a
    /// copy from the other side of a healed partition) and queues the rest as one
    /// `SessionMsg::DeliverBacklog`.
    StoredBacklog { to: SessionAddr, rows: Vec<(Option<Receipt>, Arc<str>)> },
    /// For core `core`, which held these messages (`super::custody`): their path's end has them.
    Confirm { core: u16, ids: Vec<u64> },
    /// Messages for one core, or for one node, travelling as one hop (a room's fan-out):
    /// split where they arrive, each going on to its owner.
    Batch(Vec<CoreMsg>),
    /// The answer to an admin socket's question (`super::admin_query`), for core 0 of the
    /// node that asked.
    AdminAnswer { ticket: AdminTicket, answer: AdminAnswer },
    /// Node `owner` had this node down (a partition, or this node froze) and dropped the
    /// sessions it held for it; it is back up now. On `core`, every session whose user
    /// `owner` holds registers again; core 0 passes it on to this node's other cores.
    Reregister { owner: u32, core: u16 },
    /// XEP-0206: an HTTP request for the BOSH session on core `core` of this node (its sid
    /// names the core), which arrived at core `from`; the answer goes back as `BoshAnswer`
    /// with `ticket`. Never sent to another node (`crate::c2s::bosh`).
    BoshRequest { core: u16, from: u16, ticket: u64, body: crate::c2s::bosh::Body },
    /// The response body for a `BoshRequest`, for the core that forwarded it.
    BoshAnswer { core: u16, ticket: u64, xml: String },
}

/// What a UserChannel handles.
#[derive(Debug, Serialize, Deserialize)]
pub enum UserMsg {
    /// A session of this user bound `resource` (RFC 6120 §7). A session already holding the
    /// resource is replaced and told so.
    Bind { resource: Arc<str>, session: SessionAddr },
    /// A session of this user ended; if it was available its contacts learn it went away.
    Unbind { session: SessionAddr },
    /// Presence broadcast by one of this user's resources (RFC 6121 §4.2, §4.4, §4.5).
    OwnPresence { resource: Arc<str>, stanza: Stanza },
    /// A subscription request or answer this user sends to a contact (RFC 6121 §3).
    OutboundSubscription(Stanza),
    /// An IQ one of this user's resources sends its own account that this actor answers:
    /// roster (RFC 6121 §2), blocking (XEP-0191), invisibility (XEP-0186).
    AccountIq { resource: Arc<str>, stanza: Stanza },
    /// A stanza addressed to this user, bare or full JID.
    Inbound(Stanza),
    /// `msg`, asked by the session at `from` on one of its credits (`super::credit`),
    /// which is given back with [`SessionMsg::Credit`] once `msg` is handled.
    Request { from: SessionAddr, msg: Box<UserMsg> },
    /// XEP-0280: `resource` enabled or disabled carbons.
    Carbons { resource: Arc<str>, enabled: bool },
    /// XEP-0045 with XEP-0357: a message in a members-only room this user is a member of
    /// and not in. Never delivered (the member catches up from the room's archive); pushed
    /// when no client of the user would see a message now.
    RoomNotice(Stanza),
    /// XEP-0280: a message one of this user's resources sent, for `<sent/>` copies.
    Sent(Stanza),
    /// The error this server answers a stanza of this user's with (RFC 6120 §8.3), handled
    /// like `Inbound` but never refused for a full mailbox: there is at most one per stanza
    /// the server refused, and refusing it too would leave the sender without an answer.
    ErrorReply(Stanza),
    /// A session re-registering because the ring moved its user here (a node joined or
    /// left): it joins silently with the presence it had, since its contacts already know.
    Rebind {
        resource: Arc<str>,
        session: SessionAddr,
        presence: Option<Stanza>,
        roster_interested: bool,
        resume_id: Option<Arc<str>>,
        carbons: bool,
        /// XEP-0163: the PEP nodes it wants notifications from.
        pep_interest: Interests,
        /// XEP-0186: it is invisible, so its presence goes to the user's resources only.
        invisible: bool,
    },
    /// XEP-0163 filtered notifications: the PEP nodes `resource`'s client wants events from,
    /// learned from its XEP-0115 caps by its session.
    PepInterest { resource: Arc<str>, nodes: Interests },
    /// XEP-0163: an event from the PEP service at `stanza.from` (a bare JID) about `node`, for
    /// this user's resources that want it; `stanza.to` naming a resource, for that one only.
    PepEvent { node: Arc<str>, stanza: Stanza },
    /// XEP-0163 §4.3.4: the resource `to` (a full JID) came to want `nodes`: send it the last
    /// item of each this user's access models let it see.
    PepLast { to: Arc<str>, nodes: Interests },
    /// XEP-0357: the session's client will not see messages now (its connection is lost
    /// and it waits to be resumed, XEP-0198, or it said it is inactive, XEP-0352), or will again.
    Dormant { session: SessionAddr, dormant: bool },
    /// XEP-0198: the session holding `resource` may be resumed with `resume_id`.
    Resumable { session: SessionAddr, resume_id: Arc<str> },
    /// XEP-0198: a new stream of this user asks to take over the session that enabled
    /// resumption with `resume_id`; the client has `h` of that session's stanzas.
    Resume { resume_id: Arc<str>, session: SessionAddr, h: u32 },
    /// A message a session that ended for good had not seen acknowledged (XEP-0198 §5):
    /// route it again, to the user's other resources or to offline storage.
    Undelivered(Stanza),
    /// The ring moved this user to another owner: stop, and pass on what is queued.
    Disown,
    /// A node is down: its sessions are gone (their contacts learn it).
    NodeDown(u32),
    /// Offline storage may hold what was meant for this user's online sessions: a node
    /// came (back) up and a partition may have healed, this node resumed from a stop its
    /// peers saw as down, or an actor that stood in for this one handed the user back.
    NodesUp,
    /// The ring has settled since a message found no session here: deliver or store it.
    RingSettled,
    /// The account was deleted or its password changed: every session of the user ends,
    /// hibernating ones too, and none can be resumed.
    EndSessions(Revocation),
}

/// Why an account's sessions are ended under it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Revocation {
    /// XEP-0077 cancellation or `martlet user del`: a session must not outlive its account,
    /// or live on as a new account registered under the same name.
    AccountDeleted,
    /// XEP-0077 password change or `martlet user passwd`: whoever knew the old password
    /// must log in again.
    PasswordChanged,
}

impl UserMsg {
    /// The receipt of a held message (`super::custody`) this actor may be the end of.
    pub fn receipt(&self) -> Option<Receipt> {
        match self {
            UserMsg::Inbound(s) | UserMsg::Undelivered(s) => s.receipt,
            _ => None,
        }
    }
}

/// What a room actor (`crate::muc::room`) handles.
#[derive(Debug, Serialize, Deserialize)]
pub enum RoomMsg {
    /// A stanza for the room, or for one of its occupants (`room@service/nick`); with the
    /// address of the session that sent it, for a presence from a local client: the room
    /// sends that occupant's copies straight to it (`SessionMsg::FromRoom`).
    Stanza(Stanza, Option<SessionAddr>),
    /// A session that was in the room (its presence to `room/nick`) registers again after
    /// the ring changed, or from its new address after an XEP-0198 resumption: it joins
    /// without a word to anyone, as its client never left.
    Rejoin(Stanza, SessionAddr),
    /// The ring moved this room to another owner: hand its state over, pass on what is
    /// queued, stop.
    Disown,
    /// `martlet room info|create|destroy`, from the admin socket of `ticket.node`, which
    /// waits for the answer ([`CoreMsg::AdminAnswer`]).
    Admin { op: RoomAdminOp, ticket: AdminTicket },
}

/// What the operator asks of a room (`martlet room ...`).
#[derive(Debug, Serialize, Deserialize)]
pub enum RoomAdminOp {
    /// Its configuration, occupants and affiliations, as text.
    Info,
    /// Create it, persistent and unlocked, with `owner` (a bare JID) as its owner.
    Create { owner: String, name: String, public: bool },
    /// Destroy it (XEP-0045 §10.9): its occupants are told, with `reason`.
    Destroy { reason: Option<String> },
}

/// What a session handles.
#[derive(Debug, Serialize, Deserialize)]
pub enum SessionMsg {
    /// Write this stanza to the client.
    Deliver(Arc<str>),
    /// XEP-0045: a room's copy of a groupchat message or an occupant's presence, sent to
    /// this session directly, not through its UserChannel. Written as `Deliver` is, unless
    /// the user blocked the room since joining; while the client is dormant its
    /// UserChannel hears of a message too, for a push (XEP-0357).
    FromRoom(Arc<str>),
    /// Write these, in order: a user's offline messages, handed over as one mailbox entry
    /// so a backlog as long as `offline_messages_max` never overflows the session's queue.
    DeliverBacklog(Vec<Arc<str>>),
    /// Another session bound the same resource: end with `<conflict/>` (RFC 6120 §7.7.2.2).
    Replaced,
    /// The server is stopping: end with `<system-shutdown/>`.
    Shutdown,
    /// The ring changed, and these nodes went down (a node that restarted is both down and
    /// back in the ring): if this session's user has a new owner, or its owner is one of
    /// those nodes (which lost its UserChannels), register there again.
    RingChanged(Arc<[u32]>),
    /// XEP-0280: whether another resource of this user wants carbon copies, so this
    /// session hands its sent messages to its UserChannel as well.
    CarbonPeers(bool),
    /// XEP-0191: the user's blocklist changed (or, at bind, is not empty).
    Blocklist(Arc<BlockList>),
    /// XEP-0198: the stream at `by` resumes this session; hand it over and end quietly.
    TakeOver { by: SessionAddr, h: u32 },
    /// XEP-0198: the session this stream resumes, handed over.
    Resumed(Box<Handover>),
    /// XEP-0198: nothing to resume under that id (it timed out, or never was).
    ResumeFailed,
    /// XEP-0198: a hibernating session past `hibernating_sessions_per_{ip,user}_max`, the
    /// one waiting longest: end for good (`c2s::limits`).
    Evicted,
    /// The account was deleted or its password changed: end, and do not hibernate.
    Revoked(Revocation),
    /// One of this session's requests was handled by its user's actor (`super::credit`).
    Credit,
    /// Its account bound more than `resources_per_user_max` sessions and this one is the
    /// oldest: end with `<policy-violation/>`.
    TooManyResources,
}

impl SessionMsg {
    /// A message for the client: a room's copy (`from_room`), or any other.
    pub fn copy(xml: Arc<str>, from_room: bool) -> SessionMsg {
        if from_room {
            SessionMsg::FromRoom(xml)
        } else {
            SessionMsg::Deliver(xml)
        }
    }
}

/// What a resumed session takes from the one it replaces (XEP-0198 §5).
#[derive(Debug, Serialize, Deserialize)]
pub struct Handover {
    pub resource: Arc<str>,
    /// Stanzas the old session handled from the client: the `h` of `<resumed/>`.
    pub handled: u32,
    /// What the client had not acknowledged, oldest first: sent again.
    pub unacked: Vec<Arc<str>>,
    pub presence: Option<Stanza>,
    pub roster_interested: bool,
    /// XEP-0280: it enabled carbons.
    pub carbons: bool,
    /// Directed presences (RFC 6121 §4.6), as JIDs.
    pub directed: Vec<String>,
    /// XEP-0163: the PEP nodes its client wants notifications from.
    pub pep_interest: Interests,
}
