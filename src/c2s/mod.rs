//! Client-to-server streams (RFC 6120). A connection moves through typed phases, so code that
//! routes can only ever hold a bound session:
//!
//! `accept` → [`negotiate::Unauthenticated`] (STARTTLS, SASL, XEP-0077) →
//! [`negotiate::Authenticated`] (resource binding) → [`session::BoundSession`] (routing).
//!
//! The byte stream under it is a [`transport::Transport`]: TCP, TLS, or RFC 7395 WebSocket
//! ([`websocket`], [`ws_framing`]).
//!
//! SASL2 (`sasl2`, XEP-0388) with Bind 2 (`bind2`, XEP-0386) and FAST tokens (`fast`,
//! XEP-0484) goes from the first phase to the last in one step.

pub mod accept;
pub mod bind2;
pub mod bosh;
pub mod conn;
pub mod directed;
pub mod fast;
pub mod features;
pub mod limits;
pub mod negotiate;
pub mod registration_limit;
pub mod sasl;
pub mod scram;
pub mod sasl2;
pub mod session;
pub mod stream_error;
pub mod tls_stream;
pub mod transport;
pub mod websocket;
pub mod ws_framing;
