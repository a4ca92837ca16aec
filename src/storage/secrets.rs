//! Password handling: SCRAM salted passwords made from a plaintext, the
//! SASL PLAIN check against them, and the made-up credentials of a name that
//! is no account. PBKDF2 is deliberately slow, so `derive` and `verify` run
//! on the KDF pool's threads (`super::kdf_pool`), never on a core's event loop.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sasl::secret::{Pbkdf2Sha1, Pbkdf2Sha256};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{Credentials, StorageError};

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
        sha1: Pbkdf2Sha1::derive(&password, &fresh_salt(), iterations).map_err(derive_error)?,
        sha256: Pbkdf2Sha256::derive(&password, &fresh_salt(), iterations).map_err(derive_error)?,
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
    let attempt = Pbkdf2Sha256::derive(&password, &c.salt, c.iterations).map_err(derive_error)?;
    Ok(bool::from(attempt.digest.ct_eq(&c.digest)))
}

/// Credentials for a name that is no account, shaped like a real account's
/// (salt length, `iterations`, digest length) and the same at every attempt and
/// on every node, since they are keyed by the server secret and the name: a SCRAM
/// probe that compares two server-first messages cannot tell a user from a
/// non-user. No PBKDF2 is run: a real user's SCRAM costs the server none either,
/// and no password can match a digest nobody derived.
pub(super) fn unknown_user(secret: &[u8], jid: &str, iterations: u32) -> Credentials {
    let keyed = |label: &str, len: usize| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(label.as_bytes());
        mac.update(&[0]);
        mac.update(jid.as_bytes());
        let mut out = mac.finalize().into_bytes().to_vec();
        out.truncate(len);
        out
    };
    Credentials {
        sha1: Pbkdf2Sha1 { salt: keyed("sha1 salt", SALT_BYTES), iterations, digest: keyed("sha1 digest", 20) },
        sha256: Pbkdf2Sha256 { salt: keyed("sha256 salt", SALT_BYTES), iterations, digest: keyed("sha256 digest", 32) },
    }
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
        for (a, b) in [(&real.sha1.salt, &made_up.sha1.salt), (&real.sha1.digest, &made_up.sha1.digest)] {
            assert_eq!(a.len(), b.len());
        }
        assert_eq!(real.sha256.digest.len(), made_up.sha256.digest.len());
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
