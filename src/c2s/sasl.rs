//! SASL authentication (RFC 6120 §6): SCRAM-SHA-256 and SCRAM-SHA-1 (`super::scram`)
//! checked against the stored StoredKey and ServerKey, PLAIN by deriving the StoredKey. The same exchange runs under RFC
//! 6120's profile or XEP-0388's ([`Profile`]); only the element names' namespace differs,
//! and the caller sends the success, which under SASL2 carries more than the mechanism's.
//!
//! Credentials are fetched from storage before the mechanism runs (the mechanism's callback
//! is synchronous; storage is not allowed to block a core), and PLAIN's PBKDF2 runs on the
//! storage's KDF pool for the same reason: one login storm must not stall a core's routing.
//! A name that is no account gets made-up credentials, the same at every attempt, so SCRAM
//! runs to its end as for a user and no PBKDF2 runs on the core for it either.

use std::rc::Rc;

use base64::Engine;
use jid::BareJid;
use minidom::Element;

use super::conn::{Conn, ConnEnd};
use super::scram::{ClientFirst, Exchange};
use super::stream_error::StreamError;
use crate::router::CoreState;
use crate::stanza::{build, text_el};
use crate::storage::{Credentials, ScramHash, StorageError};
use crate::xml::{ns, stream_parser::StreamEvent};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    ScramSha256,
    ScramSha1,
    Plain,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::Plain => "PLAIN",
        }
    }

    /// Mechanisms offered on a stream, strongest first. PLAIN sends the password itself, so
    /// it needs TLS unless the operator explicitly allows it (and does not require TLS).
    pub fn offered(tls: bool, require_tls: bool, plain_without_tls: bool) -> Vec<Mechanism> {
        let mut m = vec![Mechanism::ScramSha256, Mechanism::ScramSha1];
        if tls || (plain_without_tls && !require_tls) {
            m.push(Mechanism::Plain);
        }
        m
    }
}

pub enum Outcome {
    /// Authenticated as `user`; `additional` is the mechanism's success data (SCRAM's
    /// server signature), for the caller's `<success/>`.
    /// `credentials`: what a password was checked against (none for a XEP-0484 token), so
    /// binding can refuse a stream whose password changed since (`negotiate`).
    Success { user: BareJid, additional: Option<Vec<u8>>, credentials: Option<Credentials> },
    /// The client was told `<failure/>` with `condition` and may try again; `user` is who
    /// it claimed to be, when it got that far.
    Failure { condition: &'static str, user: Option<BareJid> },
}

impl Outcome {
    /// A failure, for the log: named after the user the client claimed to be.
    fn claimed_by(self, jid: &BareJid) -> Outcome {
        match self {
            Outcome::Failure { condition, .. } => Outcome::Failure { condition, user: Some(jid.clone()) },
            success => success,
        }
    }
}

/// The framing of an exchange: RFC 6120 §6.4's elements, or XEP-0388's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Rfc6120,
    Sasl2,
}

impl Profile {
    fn ns(self) -> &'static str {
        match self {
            Profile::Rfc6120 => ns::SASL,
            Profile::Sasl2 => ns::SASL2,
        }
    }
}

/// Runs one SASL exchange with the mechanism the client named, which must be one of
/// `offered`, starting from its base64 initial response.
pub async fn authenticate(
    core: &Rc<CoreState>,
    conn: &mut Conn,
    profile: Profile,
    offered: &[Mechanism],
    mechanism: Option<&str>,
    initial_b64: &str,
) -> Result<Outcome, ConnEnd> {
    let mech = offered.iter().copied().find(|m| Some(m.name()) == mechanism);
    let Some(mech) = mech else {
        return fail(conn, profile, "invalid-mechanism").await;
    };
    match mech {
        Mechanism::Plain => plain(core, conn, profile, initial_b64).await,
        Mechanism::ScramSha256 => scram(core, conn, profile, ScramHash::Sha256, initial_b64).await,
        Mechanism::ScramSha1 => scram(core, conn, profile, ScramHash::Sha1, initial_b64).await,
    }
}

async fn plain(core: &Rc<CoreState>, conn: &mut Conn, profile: Profile, initial_b64: &str) -> Result<Outcome, ConnEnd> {
    let Some(msg) = decode(initial_b64) else { return fail(conn, profile, "incorrect-encoding").await };
    let Some((authzid, authcid, password)) = plain_message(&msg) else {
        return fail(conn, profile, "malformed-request").await;
    };
    let Some(jid) = local_jid(authcid, &core.cfg.domain) else { return fail(conn, profile, "not-authorized").await };
    if !authzid.is_empty() && authzid != jid.to_string().as_bytes() {
        return fail(conn, profile, "invalid-authzid").await;
    }
    match core.storage.plain_credentials(jid.to_string(), password.to_owned()).await {
        Ok(Some(credentials)) => Ok(Outcome::Success { user: jid, additional: None, credentials: Some(credentials) }),
        Ok(None) => fail(conn, profile, "not-authorized").await.map(|o| o.claimed_by(&jid)),
        Err(StorageError::Busy) => {
            core.counters.password_hash_busy.inc();
            fail(conn, profile, "temporary-auth-failure").await.map(|o| o.claimed_by(&jid))
        }
        Err(e) => {
            log::error!("PLAIN for {jid}: storage: {e}");
            fail(conn, profile, "temporary-auth-failure").await.map(|o| o.claimed_by(&jid))
        }
    }
}

async fn scram(core: &Rc<CoreState>, conn: &mut Conn, profile: Profile, hash: ScramHash, initial_b64: &str) -> Result<Outcome, ConnEnd> {
    let Some(first) = decode(initial_b64) else { return fail(conn, profile, "incorrect-encoding").await };
    let Ok(first) = String::from_utf8(first) else { return fail(conn, profile, "malformed-request").await };
    let first = match ClientFirst::parse(&first) {
        Ok(f) => f,
        Err(e) => return fail(conn, profile, e.condition()).await,
    };
    let Some(jid) = local_jid(&first.username, &core.cfg.domain) else {
        return fail(conn, profile, "not-authorized").await;
    };
    if first.authzid.as_ref().is_some_and(|a| *a != jid.to_string()) {
        return fail(conn, profile, "invalid-authzid").await;
    }
    let (keys, credentials) = match core.storage.credentials_or_made_up(jid.to_string()).await {
        Ok((c, _known)) => (if hash == ScramHash::Sha1 { c.sha1.clone() } else { c.sha256.clone() }, c),
        Err(e) => {
            log::error!("SCRAM for {jid}: storage: {e}");
            return fail(conn, profile, "temporary-auth-failure").await.map(|o| o.claimed_by(&jid));
        }
    };
    let (exchange, server_first) = Exchange::start(hash, &first, keys, &server_nonce());
    conn.send_el(&text_el("challenge", profile.ns(), &encode(server_first.as_bytes()))).await?;
    let client_final = match next_sasl_element(conn, profile).await? {
        Some(resp) if resp.name() == "response" => decode(&resp.text()).and_then(|b| String::from_utf8(b).ok()),
        Some(abort) if abort.name() == "abort" => return fail(conn, profile, "aborted").await.map(|o| o.claimed_by(&jid)),
        _ => return fail(conn, profile, "malformed-request").await.map(|o| o.claimed_by(&jid)),
    };
    let Some(client_final) = client_final else { return fail(conn, profile, "incorrect-encoding").await.map(|o| o.claimed_by(&jid)) };
    match exchange.finish(&client_final) {
        Ok(server_final) => Ok(Outcome::Success { user: jid, additional: Some(server_final.into_bytes()), credentials: Some(credentials) }),
        Err(e) => {
            log::debug!("SCRAM for {jid} failed: {e:?}");
            fail(conn, profile, e.condition()).await.map(|o| o.claimed_by(&jid))
        }
    }
}

/// PLAIN's message (RFC 4616): `authzid NUL authcid NUL password`, the last two UTF-8.
fn plain_message(msg: &[u8]) -> Option<(&[u8], &str, &str)> {
    let mut parts = msg.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    Some((authzid, std::str::from_utf8(authcid).ok()?, std::str::from_utf8(password).ok()?))
}

/// 18 random bytes, base64: printable, no ',' (RFC 5802 §5.1 nonce).
fn server_nonce() -> String {
    encode(&rand::random::<[u8; 18]>())
}

/// The SASL element that answers a challenge; `None` for anything else.
async fn next_sasl_element(conn: &mut Conn, profile: Profile) -> Result<Option<Element>, ConnEnd> {
    match conn.next_event().await? {
        StreamEvent::Element(el) if el.ns() == profile.ns() => Ok(Some(el)),
        StreamEvent::Element(_) => Ok(None),
        StreamEvent::End => Err(ConnEnd::StreamClosed),
        StreamEvent::Header(_) => Err(ConnEnd::Error(StreamError::BadFormat, "stream header inside SASL".into())),
    }
}

/// `user@domain` if `localpart` makes a valid JID (RFC 7622 via the jid crate).
pub(super) fn local_jid(localpart: &str, domain: &str) -> Option<BareJid> {
    if localpart.is_empty() || localpart.contains('@') || localpart.contains('/') {
        return None;
    }
    BareJid::new(&format!("{localpart}@{domain}")).ok()
}

pub(super) fn decode(b64: &str) -> Option<Vec<u8>> {
    let b64 = b64.trim();
    if b64 == "=" || b64.is_empty() {
        return Some(Vec::new()); // RFC 6120 §6.4.2: "=" is an empty initial response
    }
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

pub(super) fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `<failure/>` with an RFC 6120 §6.5 condition, which SASL2 keeps in the RFC's namespace.
pub(super) async fn fail(conn: &mut Conn, profile: Profile, condition: &'static str) -> Result<Outcome, ConnEnd> {
    let failure = build("failure", profile.ns(), &[], vec![Element::bare(condition, ns::SASL)]);
    conn.send_el(&failure).await?;
    Ok(Outcome::Failure { condition, user: None })
}

/// Entry points for `fuzz/` only (cargo-fuzz compiles with `--cfg fuzzing`): a client's
/// SASL messages through the parsers above, as a login runs them.
#[cfg(fuzzing)]
pub mod fuzzing {
    use super::*;

    /// `initial_b64` as a PLAIN message and as a SCRAM client-first message, then
    /// `final_b64` as the client-final message, against made-up keys with a fixed nonce
    /// (so an input means the same on every run).
    pub fn client_messages(initial_b64: &str, final_b64: &str) {
        let Some(msg) = decode(initial_b64) else { return };
        if let Some((_, authcid, _)) = plain_message(&msg) {
            let _ = local_jid(authcid, "localhost");
        }
        let Ok(first) = std::str::from_utf8(&msg) else { return };
        let Ok(first) = ClientFirst::parse(first) else { return };
        let _ = local_jid(&first.username, "localhost");
        for (hash, digest_bytes) in [(ScramHash::Sha256, 32), (ScramHash::Sha1, 20)] {
            let keys = crate::storage::ScramKeys {
                salt: b"salt".to_vec(),
                iterations: 1,
                stored_key: vec![7; digest_bytes],
                server_key: vec![9; digest_bytes],
            };
            let (exchange, _) = Exchange::start(hash, &first, keys, "martlet-fuzz");
            if let Some(last) = decode(final_b64).and_then(|b| String::from_utf8(b).ok()) {
                let _ = exchange.finish(&last);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_message_has_three_parts_and_utf8_names() {
        assert_eq!(plain_message(b"\0alice\0pw"), Some((&b""[..], "alice", "pw")));
        assert_eq!(plain_message(b"\0alice"), None);
        assert_eq!(plain_message(b"\0alice\0pw\0more"), None);
        assert_eq!(plain_message(b"\0\xff\0pw"), None);
    }

    #[test]
    fn plain_needs_tls_unless_allowed() {
        assert!(!Mechanism::offered(false, true, true).contains(&Mechanism::Plain));
        assert!(!Mechanism::offered(false, false, false).contains(&Mechanism::Plain));
        assert!(Mechanism::offered(false, false, true).contains(&Mechanism::Plain));
        assert!(Mechanism::offered(true, true, false).contains(&Mechanism::Plain));
    }

    #[test]
    fn localparts_are_validated() {
        assert!(local_jid("alice", "localhost").is_some());
        assert!(local_jid("a@b", "localhost").is_none());
        assert!(local_jid("", "localhost").is_none());
    }
}
