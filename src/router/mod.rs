//! Routing: who owns a user, how a stanza gets there, and the actor that owns each user.
//!
//! # Routing table (the design's two-level consistent hashing, seed 001 §3)
//!
//! | what                         | decided by                                   | hop                          |
//! |------------------------------|----------------------------------------------|------------------------------|
//! | owner node of `user@domain`  | `hash(bare JID)` on the node ring            | cluster mesh ([`node_link`]) |
//! | owner core on that node      | `hash(bare JID + node address)` on core ring | local call, or core mesh     |
//! | a user's sessions            | the owner core's [`user_channel`]            | local mailbox, or core mesh  |
//! | a XEP-0045 room              | the same two levels, `hash(room JID)`        | as a user: `crate::muc::room`|
//!
//! A stanza from a session goes to the recipient's owner core ([`CoreMsg::ToUser`]), whose
//! UserChannel applies the delivery rules and sends it to each target session
//! ([`CoreMsg::ToSession`]): at most two hops between cores, none through a shared table.
//! Each hop checks the rule on arrival (the sender picked the owner; the owner verifies).
//! What a session asks of its own user's actor is paced by [`credit`].

pub mod admin_query;
pub mod core;
pub mod credit;
pub mod custody;
pub mod envelope;
pub mod node_link;
pub mod user_channel;

pub use self::core::CoreState;
pub use admin_query::{AdminAnswer, AdminTicket};
pub use envelope::{CoreMsg, Handover, Revocation, RoomAdminOp, RoomMsg, SessionAddr, SessionMsg, UserMsg};
