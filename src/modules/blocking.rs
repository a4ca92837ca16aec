//! XEP-0191 Blocking Command: a user's list of JIDs it will neither hear from nor talk to.
//!
//! The user's UserChannel owns the list (loaded with the roster, stored as one document) and
//! answers the IQs; it enforces the inbound side as stanzas arrive, and hands every session
//! a copy ([`BlockList`], shared) so the session refuses outbound stanzas itself. Neither
//! side reads storage per stanza.

use std::collections::BTreeSet;

use jid::Jid;
use minidom::Element;
use serde::{Deserialize, Serialize};

use crate::stanza::{build, StanzaError};
use crate::xml::ns;

/// The storage key of the list.
pub const KEY: &str = "blocklist";

/// Blocked JIDs as written: `domain`, `user@domain` or `user@domain/resource` (§3.1; a
/// bare JID covers its full JIDs, a domain everyone there).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockList {
    jids: BTreeSet<String>,
}

impl BlockList {
    /// From the stored form, one JID a line.
    pub fn parse(stored: &str) -> BlockList {
        BlockList { jids: stored.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect() }
    }

    pub fn stored(&self) -> String {
        self.jids.iter().map(|j| format!("{j}\n")).collect()
    }

    pub fn blocks(&self, jid: &Jid) -> bool {
        !self.jids.is_empty()
            && (self.jids.contains(jid.as_str())
                || self.jids.contains(jid.to_bare().as_str())
                || self.jids.contains(jid.domain().as_str()))
    }

    pub fn len(&self) -> usize {
        self.jids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jids.is_empty()
    }

    pub fn contains(&self, jid: &str) -> bool {
        self.jids.contains(jid)
    }

    pub fn insert(&mut self, jid: String) -> bool {
        self.jids.insert(jid)
    }

    pub fn remove(&mut self, jid: &str) -> bool {
        self.jids.remove(jid)
    }

    pub fn take_all(&mut self) -> Vec<String> {
        std::mem::take(&mut self.jids).into_iter().collect()
    }

    /// `<blocklist/>` with every item (§3.1).
    pub fn to_element(&self) -> Element {
        build("blocklist", ns::BLOCKING, &[], self.jids.iter().map(|j| item(j)).collect())
    }
}

/// What a `<block/>` or `<unblock/>` asks.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    Block(Vec<String>),
    /// An empty list unblocks everyone (§3.4).
    Unblock(Vec<String>),
}

/// Parses the payload of a blocking IQ `set`; JIDs normalised. `<block/>` without items is
/// bad-request (§3.2), a malformed JID jid-malformed.
pub fn parse_change(payload: &Element) -> Result<Change, StanzaError> {
    let jids = payload
        .children()
        .filter(|c| c.is("item", ns::BLOCKING))
        .map(|c| c.attr("jid").and_then(crate::stanza::stable_jid).map(|j| j.to_string()).ok_or(StanzaError::JidMalformed))
        .collect::<Result<Vec<_>, _>>()?;
    match payload.name() {
        "block" if jids.is_empty() => Err(StanzaError::BadRequest),
        "block" => Ok(Change::Block(jids)),
        "unblock" => Ok(Change::Unblock(jids)),
        _ => Err(StanzaError::BadRequest),
    }
}

fn item(jid: &str) -> Element {
    build("item", ns::BLOCKING, &[("jid", jid)], vec![])
}

/// The push of a change to the user's resources (§3.2, §3.3): `<block/>` or `<unblock/>`
/// with the JIDs it changed (none: everyone was unblocked).
pub fn push_payload(blocked: bool, jids: &[String]) -> Element {
    build(if blocked { "block" } else { "unblock" }, ns::BLOCKING, &[], jids.iter().map(|j| item(j)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_covers_full_and_domain_covers_all() {
        let list = BlockList::parse("b@d\nevil.example\nc@d/phone\n");
        assert!(list.blocks(&Jid::new("b@d/any").unwrap()));
        assert!(list.blocks(&Jid::new("x@evil.example/r").unwrap()));
        assert!(list.blocks(&Jid::new("c@d/phone").unwrap()));
        assert!(!list.blocks(&Jid::new("c@d/laptop").unwrap()));
        assert!(!list.blocks(&Jid::new("a@d").unwrap()));
        assert_eq!(BlockList::parse(&list.stored()), list);
    }

    #[test]
    fn changes_parse() {
        let el: Element = "<block xmlns='urn:xmpp:blocking'><item jid='B@d'/></block>".parse().unwrap();
        assert_eq!(parse_change(&el), Ok(Change::Block(vec!["b@d".into()])));
        let el: Element = "<block xmlns='urn:xmpp:blocking'/>".parse().unwrap();
        assert_eq!(parse_change(&el), Err(StanzaError::BadRequest));
        let el: Element = "<unblock xmlns='urn:xmpp:blocking'/>".parse().unwrap();
        assert_eq!(parse_change(&el), Ok(Change::Unblock(vec![])));
        let el: Element = "<block xmlns='urn:xmpp:blocking'><item jid='@@'/></block>".parse().unwrap();
        assert_eq!(parse_change(&el), Err(StanzaError::JidMalformed));
    }
}
