//! XEP-0386 Bind 2: resource binding inside the SASL2 `<authenticate/>`, together with what
//! a client does right after binding: XEP-0198 `<enable/>`, XEP-0280 carbons `<enable/>`
//! and XEP-0352 `<inactive/>`. The server picks the resource: the client's `<tag/>` and a
//! suffix derived from its user-agent id, so one client gets the same resource on every
//! login (and a stale session of that client is replaced, RFC 6120 §7.7.2.2).

use jid::{BareJid, FullJid};
use minidom::Element;
use sha2::{Digest, Sha256};

use crate::modules::csi;
use crate::modules::stream_mgmt::ClientSm;
use crate::stanza::build;
use crate::xml::ns;

/// Longest tag kept in a resource, in bytes; longer ones are cut at a character boundary.
const TAG_BYTES_MAX: usize = 64;

/// What the client asked to happen with its bind.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub tag: Option<String>,
    /// XEP-0198 `<enable/>`, with its `resume` flag.
    pub sm_enable: Option<bool>,
    pub carbons: bool,
    pub inactive: bool,
}

impl Request {
    pub fn parse(bind: &Element) -> Request {
        let mut req = Request { tag: bind.get_child("tag", ns::BIND2).map(|t| t.text()), ..Request::default() };
        for child in bind.children() {
            match ClientSm::parse(child) {
                Some(ClientSm::Enable { resume }) => req.sm_enable = Some(resume),
                Some(_) => {}
                None if child.is("enable", ns::CARBONS) => req.carbons = true,
                None => req.inactive |= csi::parse(child) == Some(false),
            }
        }
        req
    }
}

/// `<bind/>` among the SASL2 inline features, listing what may ride along.
pub fn feature(with_sm: bool) -> Element {
    let sm = with_sm.then_some(ns::SM);
    let inline = sm.iter().chain(&[ns::CARBONS, ns::CSI]).map(|var| build("feature", ns::BIND2, &[("var", var)], vec![])).collect();
    build("bind", ns::BIND2, &[], vec![build("inline", ns::BIND2, &[], inline)])
}

/// The resource: `tag.suffix`, the suffix stable for one user-agent id and random without.
pub fn resource(user: &BareJid, tag: Option<&str>, agent: Option<&str>) -> FullJid {
    let suffix = match agent {
        Some(agent) => Sha256::digest(format!("{user}\0{agent}").as_bytes())[..4].iter().map(|b| format!("{b:02x}")).collect(),
        None => format!("{:08x}", rand::random::<u32>()),
    };
    let tag = tag.map(str::trim).filter(|t| !t.is_empty()).map(|t| cut(t, TAG_BYTES_MAX));
    tag.and_then(|t| user.with_resource_str(&format!("{t}.{suffix}")).ok())
        .unwrap_or_else(|| user.with_resource_str(&format!("martlet.{suffix}")).expect("hex makes a valid resource"))
}

/// `<bound/>` with the answers to the inline requests.
pub fn bound(answers: Vec<Element>) -> Element {
    build("bound", ns::BIND2, &[], answers)
}

fn cut(text: &str, bytes_max: usize) -> &str {
    let mut end = text.len().min(bytes_max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_requests_are_read() {
        let el: Element = "<bind xmlns='urn:xmpp:bind:0'><tag>Phone</tag>\
            <enable xmlns='urn:xmpp:sm:3' resume='true'/><enable xmlns='urn:xmpp:carbons:2'/>\
            <inactive xmlns='urn:xmpp:csi:0'/></bind>"
            .parse()
            .unwrap();
        let want = Request { tag: Some("Phone".into()), sm_enable: Some(true), carbons: true, inactive: true };
        assert_eq!(Request::parse(&el), want);
    }

    #[test]
    fn resources_are_stable_per_client() {
        let user = BareJid::new("a@localhost").unwrap();
        let first = resource(&user, Some("Phone"), Some("ua-1"));
        assert_eq!(first, resource(&user, Some("Phone"), Some("ua-1")));
        assert_ne!(first, resource(&user, Some("Phone"), Some("ua-2")));
        assert!(first.resource().as_str().starts_with("Phone."));
        let long = "é".repeat(100);
        assert!(resource(&user, Some(&long), None).resource().as_str().len() <= TAG_BYTES_MAX + 9);
        assert!(resource(&user, None, None).resource().as_str().starts_with("martlet."));
    }
}
