//! Password handling: SCRAM salted passwords made from a plaintext, and the
//! SASL PLAIN check against them. PBKDF2 is deliberately slow, so these run
//! on storage worker threads, never on a core's event loop.

use rand::RngCore;
use sasl::secret::{Pbkdf2Secret, Pbkdf2Sha1, Pbkdf2Sha256};
use subtle::ConstantTimeEq;

use super::{Credentials, StorageError};

/// Fresh for each mechanism and each password; NIST SP 800-132 asks for at
/// least 128 bits.
const SALT_BYTES: usize = 16;

/// Salt used to burn the same PBKDF2 time for unknown users, so a PLAIN
/// attempt's timing does not reveal whether the account exists.
const DUMMY_SALT: &[u8] = b"martlet-no-user!";

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

/// Whether `password` matches `stored`; false for an unknown user (`None`)
/// after the same amount of work as for a known one.
pub(super) fn verify(
    stored: Option<&Credentials>,
    password: &str,
    iterations: u32,
) -> Result<bool, StorageError> {
    let Ok(password) = prepare(password) else {
        return Ok(false);
    };
    let (salt, iterations) = match stored {
        Some(c) => (c.sha256.salt(), c.sha256.iterations()),
        None => (DUMMY_SALT, iterations),
    };
    let attempt = Pbkdf2Sha256::derive(&password, salt, iterations).map_err(derive_error)?;
    Ok(stored.is_some_and(|c| bool::from(attempt.digest.ct_eq(c.sha256.digest()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derive_then_verify() {
        let c = derive("s3cret", 16).unwrap();
        assert_ne!(c.sha1.salt, c.sha256.salt);
        assert_eq!(c.sha256.iterations, 16);
        assert!(verify(Some(&c), "s3cret", 16).unwrap());
        assert!(!verify(Some(&c), "s3cre", 16).unwrap());
        assert!(!verify(None, "s3cret", 16).unwrap());
    }

    #[test]
    fn saslprep_equates_spellings_and_refuses_control_chars() {
        // U+00A0 NO-BREAK SPACE maps to a plain space under SASLprep.
        let c = derive("pass word", 16).unwrap();
        assert!(verify(Some(&c), "pass\u{a0}word", 16).unwrap());
        assert!(matches!(
            derive("a\u{7}b", 16),
            Err(StorageError::InvalidPassword(_))
        ));
    }
}
