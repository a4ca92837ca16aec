//! XEP-0484 Fast Authentication Streamlining Tokens, with the HT-SHA-256-NONE mechanism
//! (draft-schmaus-kitten-sasl-ht). A client that logged in with its password asks, inside
//! its SASL2 `<authenticate/>`, for a token; on later connections it proves it holds the
//! token in the one message `authcid NUL HMAC-SHA-256(token, "Initiator")`, and we prove we
//! issued it with `HMAC-SHA-256(token, "Responder")`. With Bind 2 and XEP-0198 inline, that
//! is login, bind and resume in one round trip after TLS: the mobile "quickstart".
//!
//! Tokens are kept per user and per client (the SASL2 `<user-agent id/>`) in one document
//! of the user's store, so they survive restarts and every node of a cluster sees them
//! (PostgreSQL). At most `fast_clients_per_user_max` clients keep one; each has its current
//! token and, after a rotation, the one before, until the client shows it got the new one
//! (XEP-0484 §4.3: the answer carrying a new token may be lost). A password change drops
//! them all (`Storage::set_password`). Two logins of one user that both change its tokens
//! at the same instant may lose one change; that client then logs in with its password.
//!
//! No channel binding (the `-NONE` variant, the one @xmpp/client implements): the proof is
//! the same on every use, so a token is worth what TLS protects; tokens rotate at half
//! their lifetime and an optional increasing `count` is enforced when the client sends it.

use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use jid::BareJid;
use minidom::Element;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::conn::{Conn, ConnEnd};
use super::sasl::{self, Outcome, Profile};
use crate::router::CoreState;
use crate::stanza::{build, text_el};
use crate::storage::{StorageError, FAST_TOKENS_DOC};
use crate::xml::ns;

/// The one FAST mechanism offered.
pub const MECHANISM: &str = "HT-SHA-256-NONE";

/// Random bytes in a token (base64url in the `<token/>` the client stores).
const TOKEN_BYTES: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// What an `<authenticate/>` says about FAST.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// `<request-token mechanism='HT-SHA-256-NONE'/>`: issue a token on success.
    pub token_wanted: bool,
    /// `<fast count='…'/>`: the client's use counter, which must grow.
    pub count: Option<u64>,
    /// `<fast invalidate='true'/>`: drop the token just used (a log-out).
    pub invalidate: bool,
}

impl Request {
    pub fn parse(authenticate: &Element) -> Request {
        let token_wanted = authenticate.get_child("request-token", ns::FAST).is_some_and(|r| r.attr("mechanism") == Some(MECHANISM));
        let fast = authenticate.get_child("fast", ns::FAST);
        Request {
            token_wanted,
            count: fast.and_then(|f| f.attr("count")).and_then(|c| c.parse().ok()),
            invalidate: fast.is_some_and(|f| matches!(f.attr("invalidate"), Some("true" | "1"))),
        }
    }
}

/// `<fast/>` among the SASL2 inline features, when tokens are on.
pub fn feature() -> Element {
    build("fast", ns::FAST, &[], vec![text_el("mechanism", ns::FAST, MECHANISM)])
}

/// One client's tokens.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Client {
    /// SHA-256 of the user-agent id, hex: the id itself is the client's business.
    agent: String,
    current: Token,
    previous: Option<Token>,
    /// The highest `count` the client sent.
    count: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Token {
    secret: String,
    issued_unix: u64,
    expires_unix: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Tokens {
    clients: Vec<Client>,
}

/// Why a token proof was refused: the SASL condition to answer with.
#[derive(Debug, PartialEq, Eq)]
struct Refused(&'static str);

impl Tokens {
    /// Checks `proof` against the tokens of client `agent` at `now`; on success the token
    /// used, and whether the client's state moved on (count, the older token dropped once
    /// the newer is used, everything dropped on `invalidate`) and must be stored.
    fn verify(&mut self, agent: &str, proof: &[u8], req: &Request, now: u64) -> Result<(Token, bool), Refused> {
        let i = self.clients.iter().position(|c| c.agent == agent).ok_or(Refused("not-authorized"))?;
        let client = &mut self.clients[i];
        let proves = |t: &Token| signed(&t.secret, b"Initiator").verify_slice(proof).is_ok();
        let used = match (&client.current, &client.previous) {
            (current, _) if proves(current) => current.clone(),
            (_, Some(previous)) if proves(previous) => previous.clone(),
            _ => return Err(Refused("not-authorized")),
        };
        if used.expires_unix <= now {
            return Err(Refused("credentials-expired"));
        }
        if req.count.is_some_and(|c| c <= client.count) {
            return Err(Refused("not-authorized")); // a replayed proof
        }
        let mut changed = req.count.is_some();
        client.count = req.count.unwrap_or(client.count);
        if used.secret == client.current.secret && client.previous.is_some() {
            client.previous = None; // the client has the newest token: the older is done with
            changed = true;
        }
        if req.invalidate {
            self.clients.remove(i);
            changed = true;
        }
        Ok((used, changed))
    }

    /// A new token for client `agent`; its current one stays usable until the new one is
    /// used. Expired clients go, and past `clients_max` the one issued longest ago.
    fn issue(&mut self, agent: &str, now: u64, lifetime_secs: u64, clients_max: usize) -> Token {
        let token = Token { secret: new_secret(), issued_unix: now, expires_unix: now.saturating_add(lifetime_secs) };
        match self.clients.iter_mut().find(|c| c.agent == agent) {
            Some(client) => {
                let current = std::mem::replace(&mut client.current, token.clone());
                client.previous = Some(current).filter(|t| t.expires_unix > now);
            }
            None => self.clients.push(Client { agent: agent.to_owned(), current: token.clone(), previous: None, count: 0 }),
        }
        self.clients.retain(|c| c.current.expires_unix > now);
        while self.clients.len() > clients_max {
            let oldest = self.clients.iter().enumerate().min_by_key(|(_, c)| c.current.issued_unix).map(|(i, _)| i);
            self.clients.remove(oldest.expect("more than the limit, so not empty"));
        }
        token
    }
}

impl Token {
    /// Used past half its life: time the client got the next one.
    fn due_for_rotation(&self, now: u64) -> bool {
        now >= self.issued_unix + (self.expires_unix - self.issued_unix) / 2
    }
}

/// HT-SHA-256-NONE with the token of the client `agent`. On success `rotate` says whether
/// the token used is past half its life, so the caller issues the next one.
pub async fn authenticate(
    core: &Rc<CoreState>,
    conn: &mut Conn,
    agent: Option<&str>,
    req: &Request,
    initial_b64: &str,
) -> Result<(Outcome, bool), ConnEnd> {
    let Some(message) = sasl::decode(initial_b64) else { return refuse(conn, "incorrect-encoding").await };
    let (Some(agent), Some((authcid, proof))) = (agent, token_message(&message)) else {
        return refuse(conn, "malformed-request").await; // XEP-0484 §4: tokens belong to a user-agent id
    };
    let Some(user) = sasl::local_jid(authcid, &core.cfg.domain) else { return refuse(conn, "not-authorized").await };
    let mut tokens = match load(core, &user).await {
        Ok(t) => t,
        Err(e) => {
            log::error!("FAST for {user}: storage: {e}");
            return refuse(conn, "temporary-auth-failure").await;
        }
    };
    let now = unix_now();
    let (used, changed) = match tokens.verify(&agent_key(agent), proof, req, now) {
        Ok(verified) => verified,
        Err(Refused(condition)) => return refuse(conn, condition).await,
    };
    // Most logins change nothing: no storage write for them.
    if changed {
        if let Err(e) = save(core, &user, &tokens).await {
            log::error!("FAST for {user}: storage: {e}");
            return refuse(conn, "temporary-auth-failure").await;
        }
    }
    core.counters.fast_logins.inc();
    let rotate = !req.invalidate && used.due_for_rotation(now);
    let additional = signed(&used.secret, b"Responder").finalize().into_bytes().to_vec();
    Ok((Outcome::Success { user, additional: Some(additional), credentials: None }, rotate))
}

/// HT's message: `authcid NUL proof`, the authcid UTF-8.
fn token_message(message: &[u8]) -> Option<(&str, &[u8])> {
    let nul = message.iter().position(|&b| b == 0)?;
    let (authcid, proof) = message.split_at(nul);
    Some((std::str::from_utf8(authcid).ok()?, proof.get(1..)?))
}

async fn refuse(conn: &mut Conn, condition: &'static str) -> Result<(Outcome, bool), ConnEnd> {
    Ok((sasl::fail(conn, Profile::Sasl2, condition).await?, false))
}

/// A new token for `user`'s client `agent`, as the `<token/>` for the SASL2 success.
pub async fn issue(core: &Rc<CoreState>, user: &BareJid, agent: &str) -> Result<Element, StorageError> {
    let mut tokens = load(core, user).await?;
    let (lifetime, clients_max) = (core.cfg.fast.token_lifetime_secs, core.cfg.limits.fast_clients_per_user_max);
    let token = tokens.issue(&agent_key(agent), unix_now(), lifetime, clients_max);
    save(core, user, &tokens).await?;
    let expiry = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(token.expires_unix)).to_string();
    Ok(build("token", ns::FAST, &[("expiry", &expiry), ("token", &token.secret)], vec![]))
}

async fn load(core: &Rc<CoreState>, user: &BareJid) -> Result<Tokens, StorageError> {
    let stored = core.storage.doc_get(user.to_string(), FAST_TOKENS_DOC.into()).await?;
    // An unreadable document (from a future version, say) costs its clients a password login.
    Ok(stored.and_then(|json| serde_json::from_str(&json).ok()).unwrap_or_default())
}

async fn save(core: &Rc<CoreState>, user: &BareJid, tokens: &Tokens) -> Result<(), StorageError> {
    let json = (!tokens.clients.is_empty()).then(|| serde_json::to_string(tokens).expect("tokens serialise"));
    core.storage.doc_put(user.to_string(), FAST_TOKENS_DOC.into(), json).await
}

/// HMAC-SHA-256 keyed with the token's text, as the client holds it.
fn signed(secret: &str, label: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(label);
    mac
}

fn agent_key(agent: &str) -> String {
    Sha256::digest(agent.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn new_secret() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; TOKEN_BYTES]>())
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Entry point for `fuzz/` only (cargo-fuzz compiles with `--cfg fuzzing`).
#[cfg(fuzzing)]
pub mod fuzzing {
    use super::*;

    /// An initial response as a token proof, checked against one issued token.
    pub fn token_proof(req: &Request, initial_b64: &str) {
        let Some(message) = sasl::decode(initial_b64) else { return };
        let Some((authcid, proof)) = token_message(&message) else { return };
        let _ = sasl::local_jid(authcid, "localhost");
        let mut tokens = Tokens::default();
        tokens.issue("agent", 0, 1, 1);
        let _ = tokens.verify("agent", proof, req, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_from_authenticate() {
        let el: Element = "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='HT-SHA-256-NONE'>\
            <request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/>\
            <fast xmlns='urn:xmpp:fast:0' count='7' invalidate='true'/></authenticate>"
            .parse()
            .unwrap();
        assert_eq!(Request::parse(&el), Request { token_wanted: true, count: Some(7), invalidate: true });
        let other: Element = "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'>\
            <request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-512-NONE'/></authenticate>"
            .parse()
            .unwrap();
        assert_eq!(Request::parse(&other), Request::default());
    }

    fn proof(t: &Token) -> Vec<u8> {
        signed(&t.secret, b"Initiator").finalize().into_bytes().to_vec()
    }

    const DAY: u64 = 86_400;

    #[test]
    fn a_rotated_token_stays_good_until_the_new_one_is_used() {
        let mut tokens = Tokens::default();
        let first = tokens.issue("a", 0, DAY, 4);
        let second = tokens.issue("a", 10, DAY, 4);
        let req = Request::default();
        assert_eq!(tokens.verify("a", &proof(&first), &req, 20).map(|(t, _)| t.secret), Ok(first.secret.clone()));
        assert_eq!(tokens.verify("a", &proof(&second), &req, 30), Ok((second.clone(), true)), "the older one goes");
        assert_eq!(tokens.verify("a", &proof(&second), &req, 31), Ok((second.clone(), false)), "nothing to store");
        assert_eq!(tokens.verify("a", &proof(&first), &req, 40).err(), Some(Refused("not-authorized")));
        assert_eq!(tokens.verify("b", &proof(&second), &req, 40).err(), Some(Refused("not-authorized")));
    }

    #[test]
    fn expiry_count_and_invalidation_are_enforced() {
        let mut tokens = Tokens::default();
        let t = tokens.issue("a", 0, DAY, 4);
        assert_eq!(tokens.verify("a", &proof(&t), &Request::default(), DAY).err(), Some(Refused("credentials-expired")));
        let counted = |c| Request { count: Some(c), ..Request::default() };
        assert!(tokens.verify("a", &proof(&t), &counted(5), 1).is_ok());
        assert_eq!(tokens.verify("a", &proof(&t), &counted(5), 2).err(), Some(Refused("not-authorized")));
        assert!(tokens.verify("a", &proof(&t), &counted(6), 3).is_ok());
        assert!(!t.due_for_rotation(DAY / 2 - 1) && t.due_for_rotation(DAY / 2));
        let logout = Request { invalidate: true, ..Request::default() };
        assert!(tokens.verify("a", &proof(&t), &logout, 4).is_ok());
        assert_eq!(tokens.verify("a", &proof(&t), &Request::default(), 5).err(), Some(Refused("not-authorized")));
    }

    #[test]
    fn clients_past_the_limit_lose_the_oldest_token() {
        let mut tokens = Tokens::default();
        let oldest = tokens.issue("a", 0, DAY, 2);
        tokens.issue("b", 1, DAY, 2);
        let newest = tokens.issue("c", 2, DAY, 2);
        assert_eq!(tokens.clients.len(), 2);
        assert!(tokens.verify("a", &proof(&oldest), &Request::default(), 3).is_err());
        assert!(tokens.verify("c", &proof(&newest), &Request::default(), 3).is_ok());
    }

    #[test]
    fn token_message_splits_at_the_first_nul() {
        assert_eq!(token_message(b"alice\0p\0f"), Some(("alice", &b"p\0f"[..])));
        assert_eq!(token_message(b"alice\0"), Some(("alice", &b""[..])));
        assert_eq!(token_message(b"alice"), None);
        assert_eq!(token_message(b"\xff\0p"), None);
    }

    #[test]
    fn proofs_are_keyed_by_the_token_text() {
        // The HT draft's proof: HMAC(token, "Initiator"); a different token fails.
        let proof = signed("tok", b"Initiator").finalize().into_bytes();
        assert!(signed("tok", b"Initiator").verify_slice(&proof).is_ok());
        assert!(signed("tok2", b"Initiator").verify_slice(&proof).is_err());
        assert!(signed("tok", b"Responder").verify_slice(&proof).is_err());
    }
}
