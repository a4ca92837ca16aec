//! Password handling: SCRAM salted passwords made from a plaintext, the
//! SASL PLAIN check against them, and the made-up credentials of a name that
//! is no account. PBKDF2 is deliberately slow, so `derive` and `verify` run
//! on the KDF pool's threads (`super::kdf_pool`), never on a core's event loop.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sasl::secret::{Pbkdf2Sha1, Pbkdf2Sha256};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Credentials, ScramKeys, StorageError};

/// The hash of a SCRAM mechanism (RFC 5802 SHA-1, RFC 7677 SHA-256).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScramHash {
    Sha1,
    Sha256,
}

impl ScramHash {
    pub fn hmac(self, key: &[u8], message: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => keyed::<Hmac<Sha1>>(key, message),
            ScramHash::Sha256 => keyed::<Hmac<Sha256>>(key, message),
        }
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    /// RFC 5802 Hi(): PBKDF2 with this hash's HMAC.
    fn salted_password(self, password: &str, salt: &[u8], iterations: u32) -> Result<Vec<u8>, StorageError> {
        Ok(match self {
            ScramHash::Sha1 => Pbkdf2Sha1::derive(password, salt, iterations).map_err(derive_error)?.digest,
            ScramHash::Sha256 => Pbkdf2Sha256::derive(password, salt, iterations).map_err(derive_error)?.digest,
        })
    }

    /// StoredKey and ServerKey from a salted password (RFC 5802 §3); also what the
    /// migrations from stored salted passwords compute.
    pub fn keys_from_salted(self, salted: &[u8], salt: Vec<u8>, iterations: u32) -> ScramKeys {
        ScramKeys {
            stored_key: self.digest(&self.hmac(salted, b"Client Key")),
            server_key: self.hmac(salted, b"Server Key"),
            salt,
            iterations,
        }
    }
}

fn keyed<M: Mac + hmac::digest::KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// The keys for `password` (already SASLprep'd) under `salt`: one PBKDF2.
pub fn scram_keys(hash: ScramHash, password: &str, salt: &[u8], iterations: u32) -> Result<ScramKeys, StorageError> {
    let salted = hash.salted_password(password, salt, iterations)?;
    Ok(hash.keys_from_salted(&salted, salt.to_vec(), iterations))
}

/// Fresh for each mechanism and each password; NIST SP 800-132 asks for at
/// least 128 bits.
const SALT_BYTES: usize = 16;

/// Bytes of the server secret that made-up credentials are keyed with.
pub(super) const SERVER_SECRET_BYTES: usize = 32;

/// Its name in the store (`Store::server_secret`).
pub(super) const UNKNOWN_USER_SECRET: &str = "scram-unknown-user";

/// RFC 4013 SASLprep, as RFC 5802 and RFC 4616 require of both ends, so that
/// equivalent Unicode spellings of one password match.
fn prepare(password: &str) -> Result<String, StorageError> {
    stringprep::saslprep(password)
        .map(|p| p.into_owned())
        .map_err(|e| StorageError::InvalidPassword(e.to_string()))
}

fn derive_error(e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(format!("deriving credentials: {e}"))
}

fn fresh_salt() -> [u8; SALT_BYTES] {
    let mut salt = [0; SALT_BYTES];
    rand::thread_rng().fill_bytes(&mut salt);
    salt
}

/// New credentials for both SCRAM mechanisms, each with its own random salt.
pub(super) fn derive(password: &str, iterations: u32) -> Result<Credentials, StorageError> {
    let password = prepare(password)?;
    Ok(Credentials {
        sha1: scram_keys(ScramHash::Sha1, &password, &fresh_salt(), iterations)?,
        sha256: scram_keys(ScramHash::Sha256, &password, &fresh_salt(), iterations)?,
    })
}

pub(super) fn fresh_server_secret() -> [u8; SERVER_SECRET_BYTES] {
    let mut secret = [0; SERVER_SECRET_BYTES];
    rand::thread_rng().fill_bytes(&mut secret);
    secret
}

/// Whether `password` matches `stored`: the real credentials of a user, or the
/// made-up ones of an unknown name ([`unknown_user`]), which cost the same work.
pub(super) fn verify(stored: &Credentials, password: &str) -> Result<bool, StorageError> {
    let Ok(password) = prepare(password) else {
        return Ok(false);
    };
    let c = &stored.sha256;
    let attempt = scram_keys(ScramHash::Sha256, &password, &c.salt, c.iterations)?;
    Ok(bool::from(attempt.stored_key.ct_eq(&c.stored_key)))
}

/// Credentials for a name that is no account, shaped like a real account's
/// (salt length, `iterations`, digest length) and the same at every attempt and
/// on every node, since they are keyed by the server secret and the name: a SCRAM
/// probe that compares two server-first messages cannot tell a user from a
/// non-user. No PBKDF2 is run: a real user's SCRAM costs the server none either,
/// and no password can match a digest nobody derived.
pub(super) fn unknown_user(secret: &[u8], jid: &str, iterations: u32) -> Credentials {
    let keyed = |label: &str, len: usize| {
        let mut out = ScramHash::Sha256.hmac(secret, format!("{label}\0{jid}").as_bytes());
        out.truncate(len);
        out
    };
    let made_up = |name: &str, len: usize| ScramKeys {
        salt: keyed(&format!("{name} salt"), SALT_BYTES),
        iterations,
        stored_key: keyed(&format!("{name} stored key"), len),
        server_key: keyed(&format!("{name} server key"), len),
    };
    Credentials { sha1: made_up("sha1", 20), sha256: made_up("sha256", 32) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derive_then_verify() {
        let c = derive("s3cret", 16).unwrap();
        assert_ne!(c.sha1.salt, c.sha256.salt);
        assert_eq!(c.sha256.iterations, 16);
        assert!(verify(&c, "s3cret").unwrap());
        assert!(!verify(&c, "s3cre").unwrap());
    }

    #[test]
    fn unknown_users_get_stable_credentials_shaped_like_real_ones() {
        let real = derive("pw", 16).unwrap();
        let made_up = unknown_user(b"secret", "nobody@localhost", 16);
        assert_eq!(made_up, unknown_user(b"secret", "nobody@localhost", 16));
        assert_ne!(made_up.sha256.salt, unknown_user(b"secret", "other@localhost", 16).sha256.salt);
        assert_ne!(made_up.sha256.salt, unknown_user(b"another", "nobody@localhost", 16).sha256.salt);
        for (a, b) in [(&real.sha1, &made_up.sha1), (&real.sha256, &made_up.sha256)] {
            assert_eq!((a.salt.len(), a.stored_key.len(), a.server_key.len()), (b.salt.len(), b.stored_key.len(), b.server_key.len()));
        }
        assert_eq!(made_up.sha256.iterations, 16);
        assert!(!verify(&made_up, "pw").unwrap());
    }

    #[test]
    fn saslprep_equates_spellings_and_refuses_control_chars() {
        // U+00A0 NO-BREAK SPACE maps to a plain space under SASLprep.
        let c = derive("pass word", 16).unwrap();
        assert!(verify(&c, "pass\u{a0}word").unwrap());
        assert!(matches!(
            derive("a\u{7}b", 16),
            Err(StorageError::InvalidPassword(_))
        ));
    }
}
