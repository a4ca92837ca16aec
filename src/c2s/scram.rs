//! The server side of SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC 7677), checked against
//! StoredKey and ServerKey alone: the salted password, which is enough to log in, is never
//! stored. scram-rs (which martlet used before) wants the salted password itself
//! (`ScramPassword::found_secret_password`; its `ScramKey` only renames the "Client Key" and
//! "Server Key" labels), so the exchange is done here: two messages, parsed strictly, each
//! bounded by the stream's stanza size limit. No channel binding (no -PLUS mechanisms).

use base64::Engine;
use subtle::ConstantTimeEq;

use crate::storage::{ScramHash, ScramKeys};

/// Why an exchange failed, as the RFC 6120 §6.5 condition the client is sent.
#[derive(Debug, PartialEq, Eq)]
pub enum ScramError {
    /// Not SCRAM as RFC 5802 §7 writes it.
    Malformed,
    /// Well-formed, but the proof is wrong (or the nonce, or the channel binding header).
    NotAuthorized,
}

impl ScramError {
    pub fn condition(&self) -> &'static str {
        match self {
            ScramError::Malformed => "malformed-request",
            ScramError::NotAuthorized => "not-authorized",
        }
    }
}

/// A client-first message taken apart (RFC 5802 §7).
#[derive(Debug, PartialEq, Eq)]
pub struct ClientFirst<'a> {
    /// `n,,` / `y,,` / `n,a=authzid,`: echoed, base64, in the client-final's `c=`.
    gs2_header: &'a str,
    pub authzid: Option<String>,
    pub username: String,
    bare: &'a str,
    nonce: &'a str,
}

impl<'a> ClientFirst<'a> {
    pub fn parse(message: &'a str) -> Result<ClientFirst<'a>, ScramError> {
        let mut parts = message.splitn(3, ',');
        let (flag, authzid, bare) = (parts.next(), parts.next(), parts.next());
        let (Some(flag), Some(authzid), Some(bare)) = (flag, authzid, bare) else { return Err(ScramError::Malformed) };
        // "p=": the client wants channel binding, which no offered mechanism has.
        if flag != "n" && flag != "y" {
            return Err(ScramError::Malformed);
        }
        let gs2_header = &message[..flag.len() + authzid.len() + 2];
        let authzid = match authzid {
            "" => None,
            a => Some(unescape(a.strip_prefix("a=").ok_or(ScramError::Malformed)?)?),
        };
        let mut attrs = bare.split(',');
        // A leading "m=" is a mandatory extension we do not know: RFC 5802 §5.1 says fail.
        let username = attrs.next().and_then(|a| a.strip_prefix("n=")).ok_or(ScramError::Malformed)?;
        let nonce = attrs.next().and_then(|a| a.strip_prefix("r=")).ok_or(ScramError::Malformed)?;
        if nonce.is_empty() || !nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(ScramError::Malformed);
        }
        Ok(ClientFirst { gs2_header, authzid, username: unescape(username)?, bare, nonce })
    }
}

/// RFC 5802 §5.1 saslname: "=2C" is ',', "=3D" is '=', and no other '=' may appear.
fn unescape(name: &str) -> Result<String, ScramError> {
    let unescaped = name.replace("=2C", ",").replace("=3D", "=");
    if name.matches('=').count() != name.matches("=2C").count() + name.matches("=3D").count() || unescaped.is_empty() {
        return Err(ScramError::Malformed);
    }
    Ok(unescaped)
}

/// The server's half of an exchange between its first and its final message.
pub struct Exchange {
    hash: ScramHash,
    keys: ScramKeys,
    gs2_header_b64: String,
    nonce: String,
    /// client-first-bare "," server-first: the AuthMessage's first two thirds.
    auth_message_head: String,
}

impl Exchange {
    /// The server-first message for `first` with the account's `keys` (made up ones for a
    /// name that is no account); `server_nonce` must be fresh and unpredictable.
    pub fn start(hash: ScramHash, first: &ClientFirst<'_>, keys: ScramKeys, server_nonce: &str) -> (Exchange, String) {
        let b64 = base64::engine::general_purpose::STANDARD;
        let nonce = format!("{}{server_nonce}", first.nonce);
        let server_first = format!("r={nonce},s={},i={}", b64.encode(&keys.salt), keys.iterations);
        let exchange = Exchange {
            hash,
            keys,
            gs2_header_b64: b64.encode(first.gs2_header),
            nonce,
            auth_message_head: format!("{},{server_first}", first.bare),
        };
        (exchange, server_first)
    }

    /// Checks the client-final message; its server-final (`v=` and the server signature).
    pub fn finish(self, client_final: &str) -> Result<String, ScramError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let (without_proof, proof) = client_final.rsplit_once(",p=").ok_or(ScramError::Malformed)?;
        let proof = b64.decode(proof).map_err(|_| ScramError::Malformed)?;
        let mut attrs = without_proof.split(',');
        let binding = attrs.next().and_then(|a| a.strip_prefix("c=")).ok_or(ScramError::Malformed)?;
        let nonce = attrs.next().and_then(|a| a.strip_prefix("r=")).ok_or(ScramError::Malformed)?;
        if binding != self.gs2_header_b64 || nonce != self.nonce || proof.len() != self.keys.stored_key.len() {
            return Err(ScramError::NotAuthorized);
        }
        let auth_message = format!("{},{without_proof}", self.auth_message_head);
        let signature = self.hash.hmac(&self.keys.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        if !bool::from(self.hash.digest(&client_key).ct_eq(&self.keys.stored_key)) {
            return Err(ScramError::NotAuthorized);
        }
        let server_signature = self.hash.hmac(&self.keys.server_key, auth_message.as_bytes());
        Ok(format!("v={}", b64.encode(server_signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(hash: ScramHash, password: &str, salt_b64: &str) -> ScramKeys {
        let salt = base64::engine::general_purpose::STANDARD.decode(salt_b64).unwrap();
        crate::storage::scram_keys(hash, password, &salt, 4096).unwrap()
    }

    /// RFC 5802 §5 and RFC 7677 §3: the specifications' own exchanges.
    #[test]
    fn the_rfc_examples_pass() {
        let cases = [
            (ScramHash::Sha1, "QSXCR+Q6sek8bf92", "fyko+d2lbbFgONRv9qkxdawL", "3rfcNHYJY1ZVvWVs7j",
             "v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=", "v=rmF9pqV8S7suAoZWja4dJRkFsKQ="),
            (ScramHash::Sha256, "W22ZaJ0SNY7soEsUEjb6gQ==", "rOprNGfwEbeRWgbNEkqO", "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
             "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
        ];
        for (hash, salt, cnonce, snonce, proof, verifier) in cases {
            let first_text = format!("n,,n=user,r={cnonce}");
            let first = ClientFirst::parse(&first_text).unwrap();
            assert_eq!(first.username, "user");
            let (exchange, server_first) = Exchange::start(hash, &first, keys(hash, "pencil", salt), snonce);
            assert_eq!(server_first, format!("r={cnonce}{snonce},s={salt},i=4096"));
            let client_final = format!("c=biws,r={cnonce}{snonce},p={proof}");
            assert_eq!(exchange.finish(&client_final).as_deref(), Ok(verifier));
            let (exchange, _) = Exchange::start(hash, &first, keys(hash, "pencil2", salt), snonce);
            assert_eq!(exchange.finish(&client_final), Err(ScramError::NotAuthorized));
        }
    }

    #[test]
    fn malformed_and_hostile_messages_are_refused() {
        for bad in ["", "n", "n,,", "p=tls-unique,,n=u,r=x", "n,,m=ext,n=u,r=x", "n,,n=u", "n,,n=,r=x", "n,,n=a=b,r=x", "n,x,n=u,r=x", "n,,n=u,r="] {
            assert!(ClientFirst::parse(bad).is_err(), "{bad:?}");
        }
        let first = ClientFirst::parse("n,a=a=2Cb,n=a=3Db,r=abc").unwrap();
        assert_eq!((first.authzid.as_deref(), first.username.as_str()), (Some("a,b"), "a=b"));
        let k = keys(ScramHash::Sha256, "pw", "QSXCR+Q6sek8bf92");
        for bad in ["", "c=biws", "c=biws,r=abcS,p=!!", "c=biws,r=abcS,p=AAAA", "c=eSws,r=abcS,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="] {
            let (exchange, _) = Exchange::start(ScramHash::Sha256, &first, k.clone(), "S");
            assert!(exchange.finish(bad).is_err(), "{bad:?}");
        }
    }
}
