//! # shards — a thread-per-core runtime, XMPP-agnostic
//!
//! Every CPU core runs one pinned glommio executor (io_uring). A core owns its sockets and its
//! slice of the routing ring; cores share nothing but messages.
//!
//! # Layout
//! - [`runtime`]  starts one pinned executor per core and hands each its [`runtime::Core`].
//! - [`mesh`]     the cross-core full mesh: bounded lock-free SPSC channels between every pair of
//!   cores; a full channel makes the sender wait (backpressure), never grow.
//! - [`mailbox`]  a hand-rolled bounded mailbox for actors that live on one core.
//! - [`wheel`]    a coarse timer wheel per core: one task wakes the actors whose alarm is due,
//!   so an idle actor holds no timer of its own.
//! - [`contain`]  panic containment: an actor's step that panics ends that actor, not the core.
//! - [`ring`]     consistent-hash rings with virtual nodes, and the two-level lookup of the
//!   design (node ring, then the node's core ring keyed by `hash(key + local address)`).
//! - [`cluster`]  the node-to-node mesh: framed TCP, shared-secret handshake, membership and
//!   failure detection, on its own threads; cores reach it through lock-free channels.
//! - [`listener`] SO_REUSEPORT listeners made with socket2, one per core, so the kernel spreads
//!   accepts over the cores; [`listening`] tells a listener from a previous run's leftovers.
//!
//! Nothing here knows about XMPP: the server in `src/` chooses the message type that travels.

pub mod cluster;
pub mod contain;
pub mod listener;
pub mod listening;
pub mod mailbox;
pub mod mesh;
pub mod ring;
pub mod runtime;
pub mod wheel;
