//! XEP-0045 Multi-User Chat at `[muc] domain` (`conference.<domain>` by default).
//!
//! A room is an actor like a user's UserChannel: owned through the same two-level ring
//! (`hash(room JID)` picks the node, then the core), fed by [`crate::router::RoomMsg`]; its
//! occupants' sessions live anywhere. A stanza to `room@service[/nick]` goes there from any
//! session through [`crate::router::CoreState::route`]; what the room sends goes to each
//! occupant's full JID through the occupant's own UserChannel.
//!
//! # Layout
//! - [`room`]: the actor: joining, leaving, messages, subject, private messages, invitations,
//!   roles and affiliations, configuration, destruction, its archive (XEP-0313); in
//!   `room/`: `voice` (§7.13 voice requests), `register` (§7.10 registration, reserved
//!   nicks) and `admin` (what `martlet room` asks of a room).
//! - [`occupants`]: roles, affiliations, occupants and the presence each recipient sees.
//! - [`room_config`]: the XEP-0004 `muc#roomconfig` form and what it sets.
//! - [`history`]: the discussion history sent to joiners (§7.2.13-14).
//! - [`service`]: disco of the service, and the node-wide room [`Directory`].

pub mod history;
pub mod occupants;
pub mod room;
pub mod room_config;
pub mod service;

pub use service::Directory;
