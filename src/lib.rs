//! # martlet — an XMPP server, thread-per-core
//!
//! Each core runs one executor (see the `shards` crate) that owns its client connections and
//! its share of the users. A stanza goes from the sender's Session actor to the recipient's
//! UserChannel on the recipient's owner core (picked by consistent hashing), and from there
//! to each target Session: no lock, no shared session table, no lookup per message.
//!
//! # Layout
//! - [`server`]   `martlet serve`: storage, TLS, one executor per core, listeners.
//! - [`c2s`]      client streams in typed phases: accept → negotiate (STARTTLS, SASL, bind)
//!   → bound [`c2s::session`], the Session actor.
//! - [`router`]   the routing table, the envelopes between actors, each core's state, and
//!   the [`router::user_channel`] actor (RFC 6121 rules live there); [`router::custody`]
//!   keeps a message that crosses nodes until the end of its path confirms it;
//!   [`router::credit`] paces what a session asks of its own user's actor.
//! - [`modules`]  one protocol feature per file, labelled with its RFC/XEP; server IQs are
//!   registered as data in [`modules::SERVER_IQS`].
//! - [`muc`]      XEP-0045 group chat: rooms as actors on the same ring as users.
//! - [`stanza`]   the routed form of a stanza and stanza errors.
//! - [`xml`]      the incremental stream parser (rxml + minidom) and namespaces.
//! - [`storage`]  accounts (SCRAM StoredKey/ServerKey only), rosters, offline messages; embedded (redb) or PostgreSQL
//!   behind an async facade so disk work never blocks a core.
//! - [`cluster`]  the node mesh as the router's link to other nodes, the global ring, and
//!   `martlet cluster status`.
//! - [`config`], [`tls`], [`metrics`]: configuration, certificates, counters; [`listeners`]:
//!   the addresses served, claimed so that a second server on them refuses to start;
//!   [`security_log`]: what an attacker can make us log, rate-limited per core;
//!   [`startup_log`]: what the log says at start (listeners, storage, certificate).
//! - [`cli_user`], [`admin`]: account administration, offline or through the running server.

pub mod admin;
pub mod c2s;
pub mod cli_user;
pub mod cluster;
pub mod config;
pub mod listeners;
pub mod metrics;
pub mod modules;
pub mod muc;
pub mod router;
pub mod security_log;
pub mod server;
pub mod stanza;
pub mod startup_log;
pub mod storage;
#[cfg(feature = "test-hooks")]
pub mod test_hooks;
pub mod tls;
pub mod xml;
