//! Client-to-server streams (RFC 6120). A connection moves through typed phases, so code that
//! routes can only ever hold a bound session:
//!
//! `accept` → [`negotiate::Unauthenticated`] (STARTTLS, SASL, XEP-0077) →
//! [`negotiate::Authenticated`] (resource binding) → [`session::BoundSession`] (routing).

pub mod accept;
pub mod conn;
pub mod limits;
pub mod negotiate;
pub mod sasl;
pub mod session;
pub mod stream_error;
pub mod transport;
