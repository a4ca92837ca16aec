//! RFC 6121 §2: the roster's wire format — items, results, pushes and the parsing of a set.
//! The UserChannel owns the roster itself; this file only speaks its XML.

use minidom::Element;

use crate::stanza::{build, text_el, StanzaError};
use crate::storage::RosterItem;
use crate::xml::ns;

/// `<item/>` as a client sees it (§2.1.2).
pub fn item_xml(item: &RosterItem) -> Element {
    let mut attrs = vec![("jid", item.jid.as_str()), ("subscription", item.subscription.as_str())];
    if let Some(name) = &item.name {
        attrs.push(("name", name));
    }
    if item.ask_out {
        attrs.push(("ask", "subscribe"));
    }
    let groups = item.groups.iter().map(|g| text_el("group", ns::ROSTER, g)).collect();
    build("item", ns::ROSTER, &attrs, groups)
}

/// `<query/>` with `items`, stamped with the roster's version (XEP-0237).
pub fn query(items: Vec<Element>, ver: &str) -> Element {
    build("query", ns::ROSTER, &[("ver", ver)], items)
}

/// XEP-0237 roster version: a digest of the listed items as a client sees them, so equal
/// rosters have equal versions with nothing stored. (A new build may hash differently;
/// clients then fetch the roster once.)
pub fn version<'a>(items: impl Iterator<Item = &'a RosterItem>) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for item in items.filter(|i| i.listed) {
        crate::stanza::to_xml(&item_xml(item)).hash(&mut h);
    }
    format!("{:016x}", h.finish())
}

/// `<ver/>`, the stream feature of XEP-0237 §3.
pub fn versioning_feature() -> Element {
    Element::bare("ver", ns::ROSTER_VER)
}

/// The item of a push announcing that `jid` left the roster (§2.5.2).
pub fn removed_item(jid: &str) -> Element {
    build("item", ns::ROSTER, &[("jid", jid), ("subscription", "remove")], vec![])
}

/// A roster set as a client sends it (§2.3.2, §2.5.2).
#[derive(Debug, PartialEq, Eq)]
pub struct SetItem {
    pub jid: String,
    pub name: Option<String>,
    pub groups: Vec<String>,
    pub remove: bool,
}

/// Exactly one item, a valid bare JID, no duplicate or empty groups (§2.3.3).
pub fn parse_set(query: &Element, group_chars_max: usize) -> Result<SetItem, StanzaError> {
    let mut items = query.children().filter(|c| c.is("item", ns::ROSTER));
    let item = items.next().ok_or(StanzaError::BadRequest)?;
    if items.next().is_some() {
        return Err(StanzaError::BadRequest);
    }
    let jid = item.attr("jid").ok_or(StanzaError::BadRequest)?;
    let jid = crate::stanza::stable_jid(jid).filter(|j| j.resource().is_none()).ok_or(StanzaError::JidMalformed)?.to_string();
    let mut groups: Vec<String> = Vec::new();
    for g in item.children().filter(|c| c.is("group", ns::ROSTER)) {
        let name = g.text();
        if name.is_empty() || name.len() > group_chars_max || groups.contains(&name) {
            return Err(StanzaError::NotAcceptable);
        }
        groups.push(name);
    }
    Ok(SetItem {
        jid,
        name: item.attr("name").filter(|n| !n.is_empty()).map(str::to_owned),
        groups,
        remove: item.attr("subscription") == Some("remove"),
    })
}


#[cfg(test)]
mod tests {
    use super::*;

    fn q(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    #[test]
    fn parses_a_set_and_refuses_two_items() {
        let set = parse_set(
            &q("<query xmlns='jabber:iq:roster'><item jid='Bob@D' name='B'><group>g</group></item></query>"),
            100,
        )
        .unwrap();
        assert_eq!(set, SetItem { jid: "bob@d".into(), name: Some("B".into()), groups: vec!["g".into()], remove: false });
        let two = q("<query xmlns='jabber:iq:roster'><item jid='a@d'/><item jid='b@d'/></query>");
        assert_eq!(parse_set(&two, 100), Err(StanzaError::BadRequest));
    }

    #[test]
    fn duplicate_group_is_not_acceptable() {
        let dup = q("<query xmlns='jabber:iq:roster'><item jid='a@d'><group>x</group><group>x</group></item></query>");
        assert_eq!(parse_set(&dup, 100), Err(StanzaError::NotAcceptable));
    }
}
