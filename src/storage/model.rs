//! The records the server keeps per account: SCRAM credentials, roster items
//! and their RFC 6121 subscription state. Backend-neutral; each `Store`
//! chooses its own encoding.

use serde::{Deserialize, Serialize};

/// SCRAM keys for both mechanisms offered (RFC 5802 §3). Neither the plaintext nor the
/// salted password is kept: either is enough to log in, StoredKey and ServerKey are not.
/// PLAIN is checked by deriving the salted password again and comparing StoredKeys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub sha1: ScramKeys,
    pub sha256: ScramKeys,
}

/// One mechanism's salt, iteration count, StoredKey = H(HMAC(SaltedPassword, "Client Key"))
/// and ServerKey = HMAC(SaltedPassword, "Server Key").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScramKeys {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

/// RFC 6121 section 2.1.2.5 `subscription` attribute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Subscription {
    #[default]
    None,
    To,
    From,
    Both,
}

impl Subscription {
    /// The attribute value as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }
}

/// One contact in a user's roster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterItem {
    /// The contact's bare JID; unique within one roster.
    pub jid: String,
    pub name: Option<String>,
    pub groups: Vec<String>,
    pub subscription: Subscription,
    /// We asked the contact for a subscription and have no answer yet
    /// (`ask="subscribe"`).
    pub ask_out: bool,
    /// The contact asked for a subscription to us and the user has not
    /// answered yet; replayed at next login (RFC 6121 section 3.1.3).
    pub pending_in: bool,
    /// Shown in the user's roster. False for a record kept only to track
    /// subscription state, such as a request from a contact the user has not
    /// added (RFC 6121 section 3.1.3 keeps that out of roster pushes).
    pub listed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_attribute_values() {
        let all = [
            Subscription::None,
            Subscription::To,
            Subscription::From,
            Subscription::Both,
        ];
        let names: Vec<_> = all.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["none", "to", "from", "both"]);
    }
}
