//! Mutual authentication of two nodes with the shared cluster secret, before any other
//! frame flows. Challenge-response, so the secret never crosses the wire:
//!
//! ```text
//! initiator -> responder   Hello(name_i, addr_i, incarnation_i, nonce_i)
//! responder -> initiator   Hello(name_r, addr_r, incarnation_r, nonce_r, proof_r)
//! initiator -> responder   Hello(proof_i)
//! proof_x = HMAC-SHA256(secret, role_x | nonce_i | nonce_r | name_x | name_other | binding)
//! ```
//! `binding` is the TLS session's exporter value when the mesh runs over TLS (see
//! `transport`), empty otherwise: a proof made for one TLS session is worthless in another.
//! Each side checks the other's proof in constant time; the role label keeps one side's
//! proof from being replayed as the other's, and fresh nonces keep an old exchange from
//! being replayed at all. A node without the secret learns nothing and is refused.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::frame::{self, Kind};

type HmacSha256 = Hmac<Sha256>;

const NONCE_BYTES: usize = 32;
/// Largest handshake frame accepted, in bytes: names and addresses are short.
const HELLO_BYTES_MAX: usize = 1024;

/// What a node says of itself when it connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    /// Its mesh address, where others dial it.
    pub addr: SocketAddr,
    /// Differs at each start, so a restarted node is told from its former self.
    pub incarnation: u64,
}

#[derive(Debug)]
pub enum HandshakeError {
    Io(io::Error),
    /// The peer does not know the secret (or is not a martlet node at all).
    Refused(String),
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Io(e) => write!(f, "{e}"),
            HandshakeError::Refused(why) => write!(f, "refused: {why}"),
        }
    }
}

impl From<io::Error> for HandshakeError {
    fn from(e: io::Error) -> Self {
        HandshakeError::Io(e)
    }
}

/// What both proofs of one exchange cover besides the role and the names.
struct Exchange<'a> {
    secret: &'a [u8],
    nonce_i: &'a [u8],
    nonce_r: &'a [u8],
    binding: &'a [u8],
}

impl Exchange<'_> {
    /// HMAC over the role, both nonces, both names and the binding, each length-prefixed.
    fn mac(&self, role: &[u8], prover: &str, other: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(self.secret).expect("HMAC takes keys of any length");
        for part in [role, self.nonce_i, self.nonce_r, prover.as_bytes(), other.as_bytes(), self.binding] {
            mac.update(&(part.len() as u32).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    fn proof(&self, role: &[u8], me: &str, other: &str) -> [u8; 32] {
        self.mac(role, me, other).finalize().into_bytes().into()
    }

    /// Constant-time check of a proof made by `them`.
    fn verify(&self, role: &[u8], them: &str, me: &str, got: &[u8]) -> bool {
        self.mac(role, them, me).verify_slice(got).is_ok()
    }
}

/// Length-prefixed fields in one Hello payload.
fn pack(fields: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields {
        out.extend_from_slice(&(f.len() as u16).to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

fn unpack(mut payload: &[u8], count: usize) -> Result<Vec<Vec<u8>>, HandshakeError> {
    let bad = || HandshakeError::Refused("malformed hello".into());
    let mut fields = Vec::with_capacity(count);
    for _ in 0..count {
        if payload.len() < 2 {
            return Err(bad());
        }
        let len = u16::from_be_bytes([payload[0], payload[1]]) as usize;
        let field = payload.get(2..2 + len).ok_or_else(bad)?;
        fields.push(field.to_vec());
        payload = &payload[2 + len..];
    }
    Ok(fields)
}

fn send_hello(w: &mut impl Write, fields: &[&[u8]]) -> io::Result<()> {
    w.write_all(&frame::encode(Kind::Hello, 0, &pack(fields)))?;
    w.flush()
}

fn read_hello(r: &mut impl Read, count: usize) -> Result<Vec<Vec<u8>>, HandshakeError> {
    let f = frame::read(r, HELLO_BYTES_MAX)?;
    if f.kind != Kind::Hello {
        return Err(HandshakeError::Refused("expected a hello".into()));
    }
    unpack(&f.payload, count)
}

fn identity(name: &[u8], addr: &[u8], incarnation: &[u8]) -> Result<Identity, HandshakeError> {
    let bad = |what: &str| HandshakeError::Refused(format!("malformed hello: {what}"));
    Ok(Identity {
        name: String::from_utf8(name.to_vec()).map_err(|_| bad("name"))?,
        addr: std::str::from_utf8(addr).ok().and_then(|a| a.parse().ok()).ok_or_else(|| bad("address"))?,
        incarnation: u64::from_be_bytes(incarnation.try_into().map_err(|_| bad("incarnation"))?),
    })
}

fn nonce() -> [u8; NONCE_BYTES] {
    let mut n = [0u8; NONCE_BYTES];
    rand::Rng::fill(&mut rand::rngs::OsRng, &mut n[..]);
    n
}

/// The dialling side; returns who answered.
pub fn initiate(s: &mut (impl Read + Write), secret: &[u8], me: &Identity, binding: &[u8]) -> Result<Identity, HandshakeError> {
    let nonce_i = nonce();
    let addr = me.addr.to_string();
    send_hello(s, &[me.name.as_bytes(), addr.as_bytes(), &me.incarnation.to_be_bytes(), &nonce_i])?;
    let f = read_hello(s, 5)?;
    let them = identity(&f[0], &f[1], &f[2])?;
    let x = Exchange { secret, nonce_i: &nonce_i, nonce_r: &f[3], binding };
    if !x.verify(b"responder", &them.name, &me.name, &f[4]) {
        return Err(HandshakeError::Refused(format!("{} ({}) does not know the cluster secret", them.name, them.addr)));
    }
    send_hello(s, &[&x.proof(b"initiator", &me.name, &them.name)])?;
    Ok(them)
}

/// The accepting side; returns who dialled.
pub fn respond(s: &mut (impl Read + Write), secret: &[u8], me: &Identity, binding: &[u8]) -> Result<Identity, HandshakeError> {
    let f = read_hello(s, 4)?;
    let them = identity(&f[0], &f[1], &f[2])?;
    let nonce_r = nonce();
    let x = Exchange { secret, nonce_i: &f[3], nonce_r: &nonce_r, binding };
    let addr = me.addr.to_string();
    let p = x.proof(b"responder", &me.name, &them.name);
    send_hello(s, &[me.name.as_bytes(), addr.as_bytes(), &me.incarnation.to_be_bytes(), &nonce_r, &p])?;
    // A node with the secret always answers with its proof; one that hangs up here found
    // our proof wrong, so it does not have the secret.
    let f = read_hello(s, 1).map_err(|e| match e {
        HandshakeError::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof => HandshakeError::Refused(format!(
            "{} ({}) hung up after our proof: it does not know the cluster secret",
            them.name, them.addr
        )),
        other => other,
    })?;
    if !x.verify(b"initiator", &them.name, &me.name, &f[0]) {
        return Err(HandshakeError::Refused(format!("{} ({}) does not know the cluster secret", them.name, them.addr)));
    }
    Ok(them)
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};
    use std::thread;

    use super::*;

    fn id(name: &str) -> Identity {
        Identity { name: name.into(), addr: "127.0.0.1:1".parse().unwrap(), incarnation: 7 }
    }

    type Outcome = Result<Identity, HandshakeError>;

    fn exchange(secret_i: &'static [u8], secret_r: &'static [u8]) -> (Outcome, Outcome) {
        bound_exchange((secret_i, b""), (secret_r, b""))
    }

    /// Each side with its secret and the binding it sees.
    fn bound_exchange(i: (&'static [u8], &'static [u8]), r: (&'static [u8], &'static [u8])) -> (Outcome, Outcome) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let responder = thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            respond(&mut s, r.0, &id("b"), r.1)
        });
        let mut s = TcpStream::connect(addr).unwrap();
        let initiated = initiate(&mut s, i.0, &id("a"), i.1);
        drop(s); // a refused initiator hangs up, as the mesh does
        (initiated, responder.join().unwrap())
    }

    #[test]
    fn the_same_secret_authenticates_both_ways() {
        let (i, r) = exchange(b"0123456789abcdef", b"0123456789abcdef");
        assert_eq!(i.unwrap(), id("b"));
        assert_eq!(r.unwrap(), id("a"));
    }

    #[test]
    fn a_wrong_secret_is_refused_on_both_ends() {
        let (i, r) = exchange(b"0123456789abcdef", b"another secret!!");
        assert!(matches!(i, Err(HandshakeError::Refused(_))), "{i:?}");
        // The responder sees the initiator hang up on its proof.
        assert!(matches!(r, Err(HandshakeError::Refused(_))), "{r:?}");
    }

    #[test]
    fn a_proof_is_bound_to_its_role() {
        let x = Exchange { secret: b"k", nonce_i: b"n1", nonce_r: b"n2", binding: b"" };
        let p = x.proof(b"responder", "a", "b");
        assert!(x.verify(b"responder", "a", "b", &p));
        assert!(!x.verify(b"initiator", "a", "b", &p));
    }

    #[test]
    fn proofs_made_for_another_tls_session_are_refused() {
        // A node in the middle relays the hellos between two TLS sessions of its own; each
        // end sees a different exporter value, so neither accepts the other's proof.
        let secret: &[u8] = b"0123456789abcdef";
        let (i, r) = bound_exchange((secret, b"session-1"), (secret, b"session-2"));
        assert!(matches!(i, Err(HandshakeError::Refused(_))), "{i:?}");
        assert!(matches!(r, Err(HandshakeError::Refused(_))), "{r:?}");
        let (i, r) = bound_exchange((secret, b"session-1"), (secret, b"session-1"));
        assert!(i.is_ok() && r.is_ok());
    }
}
