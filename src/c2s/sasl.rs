//! SASL authentication (RFC 6120 §6): SCRAM-SHA-256 and SCRAM-SHA-1 through scram-rs,
//! PLAIN checked against the stored salted password. The same exchange runs under RFC
//! 6120's profile or XEP-0388's ([`Profile`]); only the element names' namespace differs,
//! and the caller sends the success, which under SASL2 carries more than the mechanism's.
//!
//! Credentials are fetched from storage before the mechanism runs (the mechanism's callback
//! is synchronous; storage is not allowed to block a core), and PLAIN's PBKDF2 runs on a
//! storage thread for the same reason: one login storm must not stall a core's routing.

use std::num::NonZeroU32;
use std::rc::Rc;

use base64::Engine;
use jid::BareJid;
use minidom::Element;
use scram_rs::scram_sync::{ScramServerDyn, SyncScramServer};
use scram_rs::{
    ScramAuthServer, ScramCbHelper, ScramHashing, ScramNonce, ScramPassword, ScramResult, ScramResultServer,
    ScramSha1Ring, ScramSha256Ring, SCRAM_TYPES,
};

use super::conn::{Conn, ConnEnd};
use super::stream_error::StreamError;
use crate::router::CoreState;
use crate::stanza::{build, text_el};
use crate::storage::Credentials;
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
    Success { user: BareJid, additional: Option<Vec<u8>> },
    /// The client was told `<failure/>` and may try again.
    Failure,
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
        Mechanism::ScramSha256 => scram::<ScramSha256Ring>(core, conn, profile, mech, initial_b64).await,
        Mechanism::ScramSha1 => scram::<ScramSha1Ring>(core, conn, profile, mech, initial_b64).await,
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
    match core.storage.verify_plain(jid.to_string(), password.to_owned()).await {
        Ok(true) => Ok(Outcome::Success { user: jid, additional: None }),
        Ok(false) => fail(conn, profile, "not-authorized").await,
        Err(e) => {
            log::error!("PLAIN for {jid}: storage: {e}");
            fail(conn, profile, "temporary-auth-failure").await
        }
    }
}

async fn scram<S: ScramHashing + 'static>(
    core: &Rc<CoreState>,
    conn: &mut Conn,
    profile: Profile,
    mech: Mechanism,
    initial_b64: &str,
) -> Result<Outcome, ConnEnd> {
    let Some(first) = decode(initial_b64) else { return fail(conn, profile, "incorrect-encoding").await };
    let Some(jid) = scram_username(&first).and_then(|u| local_jid(&u, &core.cfg.domain)) else {
        return fail(conn, profile, "malformed-request").await;
    };
    let credentials = match core.storage.credentials(jid.to_string()).await {
        Ok(c) => c,
        Err(e) => {
            log::error!("SCRAM for {jid}: storage: {e}");
            return fail(conn, profile, "temporary-auth-failure").await;
        }
    };
    let secret = credentials.map(|c| StoredSecret::of(&c, mech));
    let nonce = ScramNonce::none().expect("the system random source works");
    let Some(mut server) = scram_server::<S>(secret, mech, nonce) else {
        return fail(conn, profile, "temporary-auth-failure").await;
    };
    let mut input = initial_b64.trim().as_bytes().to_vec();
    loop {
        match server.parse_response_base64(&input) {
            ScramResultServer::Data(ref data) => {
                let challenge = encode(data.as_bytes());
                conn.send_el(&text_el("challenge", profile.ns(), &challenge)).await?;
                match next_sasl_element(conn, profile).await? {
                    Some(resp) if resp.name() == "response" => input = resp.text().trim().as_bytes().to_vec(),
                    Some(abort) if abort.name() == "abort" => return fail(conn, profile, "aborted").await,
                    _ => return fail(conn, profile, "malformed-request").await,
                }
            }
            ScramResultServer::Final(data) => return Ok(Outcome::Success { user: jid, additional: Some(data.into_bytes()) }),
            ScramResultServer::Error(e) => {
                log::debug!("SCRAM for {jid} failed: {e}");
                return fail(conn, profile, "not-authorized").await;
            }
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

/// scram-rs's server side of one exchange, for the user's stored secret (`None`: unknown).
fn scram_server<S: ScramHashing>(
    secret: Option<StoredSecret>,
    mech: Mechanism,
    nonce: ScramNonce,
) -> Option<SyncScramServer<S, Prefetched, Prefetched>> {
    let scram_type = SCRAM_TYPES.get_scramtype(mech.name()).expect("scram-rs knows SCRAM-SHA-1 and -256");
    SyncScramServer::<S, _, _>::new(Prefetched(secret), Prefetched(None), nonce, scram_type, true).ok()
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

/// The user's salted password for one SCRAM hash, handed to scram-rs.
#[derive(Clone)]
struct StoredSecret {
    salted_password: Vec<u8>,
    salt_b64: String,
    iterations: NonZeroU32,
}

impl StoredSecret {
    fn of(c: &Credentials, mech: Mechanism) -> StoredSecret {
        let (salted, salt, iterations) = match mech {
            Mechanism::ScramSha1 => (&c.sha1.digest, &c.sha1.salt, c.sha1.iterations),
            _ => (&c.sha256.digest, &c.sha256.salt, c.sha256.iterations),
        };
        StoredSecret {
            salted_password: salted.clone(),
            salt_b64: encode(salt),
            iterations: NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN),
        }
    }
}

/// Credentials fetched before the exchange; `None` for an unknown user, for which scram-rs
/// makes up a consistent fake salt so that a probe cannot tell users from non-users.
#[derive(Clone)]
struct Prefetched(Option<StoredSecret>);

impl std::fmt::Debug for Prefetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prefetched(..)") // never print secrets
    }
}

impl<S: ScramHashing> ScramAuthServer<S> for Prefetched {
    fn get_password_for_user(&self, _username: &str, _authzid: Option<&str>) -> ScramResult<ScramPassword> {
        match &self.0 {
            Some(s) => Ok(ScramPassword::found_secret_password(
                s.salted_password.clone(),
                s.salt_b64.clone(),
                s.iterations,
                None,
            )),
            None => ScramPassword::not_found::<S>(),
        }
    }
}

/// No channel binding yet (tls-exporter is future work): the default helper refuses it.
impl ScramCbHelper for Prefetched {}

/// The `n=` attribute of a SCRAM client-first message, unescaped (RFC 5802 §5.1).
fn scram_username(client_first: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(client_first).ok()?;
    let mut fields = text.splitn(3, ',');
    let (_cb, _authzid, bare) = (fields.next()?, fields.next()?, fields.next()?);
    let name = bare.split(',').find_map(|f| f.strip_prefix("n="))?;
    Some(name.replace("=2C", ",").replace("=3D", "="))
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
pub(super) async fn fail(conn: &mut Conn, profile: Profile, condition: &str) -> Result<Outcome, ConnEnd> {
    let failure = build("failure", profile.ns(), &[], vec![Element::bare(condition, ns::SASL)]);
    conn.send_el(&failure).await?;
    Ok(Outcome::Failure)
}

/// Entry points for `fuzz/` only (cargo-fuzz compiles with `--cfg fuzzing`): a client's
/// SASL messages through the parsers above, as a login runs them.
#[cfg(fuzzing)]
pub mod fuzzing {
    use super::*;

    /// `initial_b64` as a PLAIN message and as a SCRAM client-first message, then
    /// `final_b64` as the client-final message, against a known user with a fixed nonce
    /// (so an input means the same on every run).
    pub fn client_messages(initial_b64: &str, final_b64: &str) {
        if let Some(msg) = decode(initial_b64) {
            if let Some((_, authcid, _)) = plain_message(&msg) {
                let _ = local_jid(authcid, "localhost");
            }
            if let Some(user) = scram_username(&msg) {
                let _ = local_jid(&user, "localhost");
            }
        }
        exchange::<ScramSha256Ring>(Mechanism::ScramSha256, 32, initial_b64, final_b64);
        exchange::<ScramSha1Ring>(Mechanism::ScramSha1, 20, initial_b64, final_b64);
    }

    fn exchange<S: ScramHashing + 'static>(mech: Mechanism, digest_bytes: usize, first: &str, last: &str) {
        let secret = StoredSecret { salted_password: vec![7; digest_bytes], salt_b64: encode(b"salt"), iterations: NonZeroU32::MIN };
        let nonce = ScramNonce::plain(b"martlet-fuzz").expect("a short nonce");
        let Some(mut server) = scram_server::<S>(Some(secret), mech, nonce) else { return };
        for input in [first, last] {
            if !matches!(server.parse_response_base64(input.trim().as_bytes()), ScramResultServer::Data(_)) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn username_is_unescaped() {
        assert_eq!(scram_username(b"n,,n=a=2Cb=3Dc,r=abc").as_deref(), Some("a,b=c"));
        assert_eq!(scram_username(b"y,,n=alice,r=x").as_deref(), Some("alice"));
        assert_eq!(scram_username(b"garbage"), None);
    }

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
