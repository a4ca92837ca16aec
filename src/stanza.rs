//! The routed form of a stanza, and the errors that answer one (RFC 6120 §8.3).
//!
//! A session parses what its client sent once, stamps `from` (so no client can speak for
//! another), serialises it once, and from then on the stanza travels as that text plus the
//! few header fields routing decisions need. Fan-out to many sessions shares one `Arc<str>`.

use std::sync::Arc;
use std::time::SystemTime;

use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use serde::{Deserialize, Serialize};

use crate::xml::ns;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Message,
    Presence,
    Iq,
}

impl Kind {
    pub fn of(el: &Element) -> Option<Kind> {
        if el.ns() != ns::CLIENT {
            return None;
        }
        match el.name() {
            "message" => Some(Kind::Message),
            "presence" => Some(Kind::Presence),
            "iq" => Some(Kind::Iq),
            _ => None,
        }
    }
}

/// A stanza on its way through the server. Between nodes it travels as [`WireStanza`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(into = "WireStanza", try_from = "WireStanza")]
pub struct Stanza {
    pub kind: Kind,
    /// The `type` attribute ("" when absent: normal message, available presence).
    pub type_: Arc<str>,
    pub from: Jid,
    pub to: Jid,
    /// The stanza as it goes on the wire, `from` stamped.
    pub xml: Arc<str>,
    /// Set while a message crosses nodes: who holds it until its path's end confirms
    /// (`router::custody`).
    pub receipt: Option<Receipt>,
    /// When the server took it in, for a stanza that is late: one a session ended without
    /// handing over, routed again; it is stamped with this (XEP-0203) where it goes next.
    pub received: Option<SystemTime>,
}

/// Names one message held in custody (`router::custody`): the core holding it, and its
/// number there. It travels inside the stanza, so the end of its path can confirm it, and
/// into offline storage (`modules::offline::row`), so a copy read back is recognised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Receipt {
    pub node: u32,
    pub core: u16,
    pub id: u64,
}

impl Stanza {
    /// Serialises `el` after stamping `from` and `to`.
    pub fn seal(kind: Kind, mut el: Element, from: Jid, to: Jid) -> Stanza {
        set_attr(&mut el, "from", Some(from.to_string()));
        set_attr(&mut el, "to", Some(to.to_string()));
        let type_: Arc<str> = el.attr("type").unwrap_or("").into();
        Stanza { kind, type_, from, to, xml: to_xml(&el).into(), receipt: None, received: None }
    }

    /// A stanza this server sealed earlier, read back from its text (a session returning
    /// what its client never acknowledged); `None` if it is not one.
    pub fn from_sealed(xml: Arc<str>) -> Option<Stanza> {
        let el: Element = xml.parse().ok()?;
        let kind = Kind::of(&el)?;
        let from = Jid::new(el.attr("from")?).ok()?;
        let to = Jid::new(el.attr("to")?).ok()?;
        Some(Stanza { kind, type_: el.attr("type").unwrap_or("").into(), from, to, xml, receipt: None, received: None })
    }

    /// Of what a session could not hand its client, what goes to the user again: messages,
    /// but not the carbon copies the user's own account made (from the user's bare JID),
    /// which the siblings already had.
    pub fn reroutable(xml: Arc<str>) -> Option<Stanza> {
        Stanza::from_sealed(xml).filter(|s| s.kind == Kind::Message && s.from != Jid::from(s.to.to_bare()))
    }

    /// The element again, for the rarer paths that must look inside (presence, roster).
    pub fn element(&self) -> Element {
        self.xml.parse().expect("a sealed stanza is well-formed")
    }

    /// The same stanza addressed to someone else (presence broadcast to each contact).
    pub fn readdressed(&self, to: Jid) -> Stanza {
        Stanza::seal(self.kind, self.element(), self.from.clone(), to)
    }

    pub fn to_bare(&self) -> BareJid {
        self.to.to_bare()
    }

    pub fn to_resource(&self) -> Option<&str> {
        self.to.resource().map(|r| r.as_str())
    }
}

/// A stanza's form on the cluster mesh: the JIDs as text, checked again on arrival (a
/// frame from another node is trusted for authenticity, not for well-formedness).
#[derive(Serialize, Deserialize)]
pub struct WireStanza {
    kind: Kind,
    type_: Arc<str>,
    from: String,
    to: String,
    xml: Arc<str>,
    receipt: Option<Receipt>,
    received: Option<SystemTime>,
}

impl From<Stanza> for WireStanza {
    fn from(s: Stanza) -> Self {
        let (from, to) = (s.from.to_string(), s.to.to_string());
        WireStanza { kind: s.kind, type_: s.type_, from, to, xml: s.xml, receipt: s.receipt, received: s.received }
    }
}

/// Why a stanza from another node was refused.
#[derive(Debug)]
pub enum WireError {
    Jid(jid::Error),
    /// Its text is not one element: its receiver, reading it back with
    /// [`Stanza::element`], would fail.
    NotAnElement,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Jid(e) => write!(f, "stanza address: {e}"),
            WireError::NotAnElement => f.write_str("stanza text is not a well-formed element"),
        }
    }
}

impl TryFrom<WireStanza> for Stanza {
    type Error = WireError;
    fn try_from(w: WireStanza) -> Result<Self, WireError> {
        let (from, to) = (Jid::new(&w.from).map_err(WireError::Jid)?, Jid::new(&w.to).map_err(WireError::Jid)?);
        if w.xml.parse::<Element>().is_err() {
            return Err(WireError::NotAnElement);
        }
        Ok(Stanza { kind: w.kind, type_: w.type_, from, to, xml: w.xml, receipt: w.receipt, received: w.received })
    }
}

/// Sets (`Some`) or removes (`None`) an attribute without a namespace.
pub fn set_attr(el: &mut Element, name: &str, value: Option<String>) {
    let name = rxml::NcName::try_from(name).expect("attribute names here are valid NCNames");
    let attrs = el.attrs_mut();
    match value {
        Some(v) => {
            attrs.insert(rxml::Namespace::NONE, name, v);
        }
        None => {
            attrs.remove(&rxml::Namespace::NONE, &name);
        }
    }
}

/// `<name xmlns=ns attr=value...>children</name>` in one call, for the replies modules build.
pub fn build(name: &str, namespace: &str, attrs: &[(&str, &str)], children: Vec<Element>) -> Element {
    let mut el = Element::bare(name, namespace);
    for (k, v) in attrs {
        set_attr(&mut el, k, Some((*v).to_owned()));
    }
    for c in children {
        el.append_child(c);
    }
    el
}

/// `<name xmlns=ns>text</name>`; no text node when `text` is empty.
pub fn text_el(name: &str, namespace: &str, text: &str) -> Element {
    let mut el = Element::bare(name, namespace);
    if !text.is_empty() {
        el.append_text(text.to_owned());
    }
    el
}

/// Every element martlet writes goes through here ([`crate::xml::write`]).
pub use crate::xml::write::to_xml;

/// Stanza error conditions martlet sends, with the error type RFC 6120 §8.3.3 gives each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StanzaError {
    BadRequest,
    FeatureNotImplemented,
    Forbidden,
    ItemNotFound,
    JidMalformed,
    NotAcceptable,
    NotAllowed,
    NotAuthorized,
    RemoteServerNotFound,
    ResourceConstraint,
    ServiceUnavailable,
    Conflict,
    /// XEP-0045 §7.2.6: a members-only room, and the joiner is no member.
    RegistrationRequired,
    /// XEP-0363 §4.1: `<not-acceptable/>` with `<file-too-large/>` naming the largest size.
    FileTooLarge(u64),
    /// XEP-0191 §3.6: `<not-acceptable/>` with `<blocked/>`: the user blocked the recipient.
    Blocked,
    /// XEP-0060 §7.1.3.4: `<not-acceptable/>` with `<payload-too-big/>`.
    PayloadTooBig,
    /// XEP-0060 §7.1.3.5: `<bad-request/>` with `<invalid-payload/>`.
    InvalidPayload,
    /// XEP-0060 §7.1.3.6: `<bad-request/>` with `<payload-required/>`.
    PayloadRequired,
    /// XEP-0060 §7.2.3.3: `<bad-request/>` with `<item-required/>`.
    ItemRequired,
    /// XEP-0060 §7.1.3.x, §7.2.3.2: `<bad-request/>` with `<nodeid-required/>`.
    NodeIdRequired,
    /// XEP-0060 §6.5.9.2: `<not-authorized/>` with `<presence-subscription-required/>`.
    PresenceSubscriptionRequired,
    /// XEP-0060 §6.5.9.4: `<not-allowed/>` with `<closed-node/>`.
    ClosedNode,
    /// XEP-0060 §7.1.5: `<conflict/>` with `<precondition-not-met/>`.
    PreconditionNotMet,
    /// XEP-0060: `<feature-not-implemented/>` with `<unsupported feature='...'/>`.
    Unsupported(&'static str),
    /// XEP-0357 enable naming another domain: `<remote-server-not-found/>`, with a text that
    /// says why (no server-to-server links, so app servers must be local).
    RemotePushService,
}

impl StanzaError {
    pub fn condition(self) -> &'static str {
        match self {
            StanzaError::BadRequest
            | StanzaError::InvalidPayload
            | StanzaError::PayloadRequired
            | StanzaError::ItemRequired
            | StanzaError::NodeIdRequired => "bad-request",
            StanzaError::FeatureNotImplemented | StanzaError::Unsupported(_) => "feature-not-implemented",
            StanzaError::Forbidden => "forbidden",
            StanzaError::ItemNotFound => "item-not-found",
            StanzaError::JidMalformed => "jid-malformed",
            StanzaError::NotAcceptable | StanzaError::Blocked | StanzaError::PayloadTooBig | StanzaError::FileTooLarge(_) => "not-acceptable",
            StanzaError::NotAllowed | StanzaError::ClosedNode => "not-allowed",
            StanzaError::NotAuthorized | StanzaError::PresenceSubscriptionRequired => "not-authorized",
            StanzaError::RemoteServerNotFound | StanzaError::RemotePushService => "remote-server-not-found",
            StanzaError::ResourceConstraint => "resource-constraint",
            StanzaError::ServiceUnavailable => "service-unavailable",
            StanzaError::Conflict | StanzaError::PreconditionNotMet => "conflict",
            StanzaError::RegistrationRequired => "registration-required",
        }
    }

    /// The usual type of each condition (RFC 6120 §8.3.3); a condition a XEP qualifies
    /// with its own element (the pubsub and blocking ones) takes the type that XEP gives.
    fn error_type(self) -> &'static str {
        match self {
            StanzaError::BadRequest
            | StanzaError::InvalidPayload
            | StanzaError::PayloadRequired
            | StanzaError::ItemRequired
            | StanzaError::NodeIdRequired
            | StanzaError::PayloadTooBig
            | StanzaError::JidMalformed
            | StanzaError::FileTooLarge(_)
            | StanzaError::NotAcceptable => "modify",
            StanzaError::Conflict
            | StanzaError::FeatureNotImplemented
            | StanzaError::ItemNotFound
            | StanzaError::NotAllowed
            | StanzaError::PreconditionNotMet
            | StanzaError::ClosedNode
            | StanzaError::Unsupported(_)
            | StanzaError::RemoteServerNotFound
            | StanzaError::RemotePushService
            | StanzaError::ServiceUnavailable
            | StanzaError::Blocked => "cancel",
            StanzaError::Forbidden | StanzaError::NotAuthorized | StanzaError::PresenceSubscriptionRequired | StanzaError::RegistrationRequired => "auth",
            StanzaError::ResourceConstraint => "wait",
        }
    }

    /// The error reply to `original` (RFC 6120 §8.3.1): same kind and id, addresses swapped,
    /// `type='error'`, the original payload kept, and the `<error/>` appended.
    pub fn reply_to(self, original: &Element) -> Element {
        let mut reply = original.clone();
        let (from, to) = (original.attr("to").map(str::to_owned), original.attr("from").map(str::to_owned));
        set_attr(&mut reply, "from", from);
        set_attr(&mut reply, "to", to);
        set_attr(&mut reply, "type", Some("error".into()));
        let mut error = Element::bare("error", ns::CLIENT);
        set_attr(&mut error, "type", Some(self.error_type().into()));
        error.append_child(Element::bare(self.condition(), ns::STANZA_ERRORS));
        if let Some(detail) = self.detail() {
            error.append_child(detail);
        }
        reply.append_child(error);
        reply
    }

    /// What goes with the defined condition (RFC 6120 §8.3.2): an application-specific
    /// condition, or a text.
    fn detail(self) -> Option<Element> {
        let pubsub = |name| Some(Element::bare(name, ns::PUBSUB_ERRORS));
        match self {
            StanzaError::Blocked => Some(Element::bare("blocked", ns::BLOCKING_ERRORS)),
            StanzaError::PayloadTooBig => pubsub("payload-too-big"),
            StanzaError::InvalidPayload => pubsub("invalid-payload"),
            StanzaError::PayloadRequired => pubsub("payload-required"),
            StanzaError::ItemRequired => pubsub("item-required"),
            StanzaError::NodeIdRequired => pubsub("nodeid-required"),
            StanzaError::PresenceSubscriptionRequired => pubsub("presence-subscription-required"),
            StanzaError::ClosedNode => pubsub("closed-node"),
            StanzaError::PreconditionNotMet => pubsub("precondition-not-met"),
            StanzaError::Unsupported(feature) => Some(build("unsupported", ns::PUBSUB_ERRORS, &[("feature", feature)], vec![])),
            StanzaError::FileTooLarge(max) => Some(build(
                "file-too-large",
                crate::modules::upload::NS,
                &[],
                vec![text_el("max-file-size", crate::modules::upload::NS, &max.to_string())],
            )),
            StanzaError::RemotePushService => Some(text_el(
                "text",
                ns::STANZA_ERRORS,
                "this server has no server-to-server links: the push service must be a client on its own domain",
            )),
            _ => None,
        }
    }
}

/// Messages and presences of type error, and IQ results/errors, never get an error back
/// (RFC 6120 §8.3.1: no error loops).
pub fn may_answer_with_error(el: &Element) -> bool {
    match (el.name(), el.attr("type")) {
        (_, Some("error")) => false,
        ("iq", Some("result")) => false,
        _ => true,
    }
}

/// A JID from a client, normalised (RFC 7622) to a fixed point: `None` unless it parses and
/// its printed form parses to the same JID. The `jid` crate's normalisation is not always
/// idempotent (fuzzing found a domain with a final sigma and a combining mark that
/// normalises once more when read back); a JID that changes when printed and read again
/// would route to one owner here and another after crossing nodes or storage.
pub fn stable_jid(text: &str) -> Option<Jid> {
    let jid = Jid::new(text).ok()?;
    (Jid::new(&jid.to_string()).ok()? == jid).then_some(jid)
}

/// `Some(full)` when `jid` names a resource.
pub fn as_full(jid: &Jid) -> Option<FullJid> {
    jid.clone().try_into_full().ok()
}

/// The resource part, shared by a session and its UserChannel.
pub fn resource_of(jid: &FullJid) -> Arc<str> {
    jid.resource().as_str().into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_jid_that_normalises_again_when_read_back_is_refused() {
        // Found by the jid fuzz target: a final sigma and a combining mark.
        let unstable = std::str::from_utf8(&[0xcf, 0xb2, 0x74, 0x70, 0xcf, 0xb9, 0xcc, 0xbc, 0x63, 0x6f]).unwrap();
        assert!(jid::Jid::new(unstable).is_ok(), "the jid crate takes it");
        assert_eq!(super::stable_jid(unstable), None);
        assert!(super::stable_jid("a@b/c").is_some());
    }

    use super::StanzaError as E;

    /// Each condition with the type its defining section gives; a wrong type makes clients
    /// retry what cannot succeed (`modify`) or give up on what could (`cancel`).
    #[test]
    fn each_condition_has_the_type_its_spec_gives() {
        let table: &[(E, &str, &str)] = &[
            (E::BadRequest, "bad-request", "modify"),                  // RFC 6120 §8.3.3.1
            (E::Conflict, "conflict", "cancel"),                        // RFC 6120 §8.3.3.2; XEP-0077 §3.1 ex. 7
            (E::FeatureNotImplemented, "feature-not-implemented", "cancel"), // RFC 6120 §8.3.3.3; XEP-0313 §4.1.1
            (E::Forbidden, "forbidden", "auth"),                        // RFC 6120 §8.3.3.4; XEP-0012 §3, XEP-0060 §7.1.3.1
            (E::ItemNotFound, "item-not-found", "cancel"),              // RFC 6120 §8.3.3.7; XEP-0060 §6.5.9.11, XEP-0059 §2.5
            (E::JidMalformed, "jid-malformed", "modify"),               // RFC 6120 §8.3.3.8
            (E::NotAcceptable, "not-acceptable", "modify"),             // RFC 6120 §8.3.3.9; XEP-0049 §3
            (E::NotAllowed, "not-allowed", "cancel"),                   // RFC 6120 §8.3.3.10
            (E::NotAuthorized, "not-authorized", "auth"),               // RFC 6120 §8.3.3.11
            (E::RemoteServerNotFound, "remote-server-not-found", "cancel"), // RFC 6120 §8.3.3.16
            (E::RemotePushService, "remote-server-not-found", "cancel"),    // RFC 6120 §8.3.3.16
            (E::ResourceConstraint, "resource-constraint", "wait"),     // RFC 6120 §8.3.3.18
            (E::ServiceUnavailable, "service-unavailable", "cancel"),   // RFC 6120 §8.3.3.19
            (E::Blocked, "not-acceptable", "cancel"),                   // XEP-0191 §3.5
            (E::PayloadTooBig, "not-acceptable", "modify"),             // XEP-0060 §7.1.3.4
            (E::InvalidPayload, "bad-request", "modify"),               // XEP-0060 §7.1.3.5
            (E::PayloadRequired, "bad-request", "modify"),              // XEP-0060 §7.1.3.6
            (E::ItemRequired, "bad-request", "modify"),                 // XEP-0060 §7.2.3.3
            (E::NodeIdRequired, "bad-request", "modify"),               // XEP-0060 §7.1.3.3
            (E::PresenceSubscriptionRequired, "not-authorized", "auth"), // XEP-0060 §6.5.9.2
            (E::ClosedNode, "not-allowed", "cancel"),                   // XEP-0060 §6.5.9.4
            (E::PreconditionNotMet, "conflict", "cancel"),              // XEP-0060 §7.1.5
            (E::Unsupported("publish"), "feature-not-implemented", "cancel"), // XEP-0060 §7.1.3.x
        ];
        for &(e, condition, type_) in table {
            assert_eq!((e.condition(), e.error_type()), (condition, type_), "{e:?}");
        }
    }

    #[test]
    fn the_reply_carries_type_and_condition() {
        let iq: minidom::Element = "<iq xmlns='jabber:client' type='get' id='1' from='a@d/r' to='b@d'><q xmlns='x'/></iq>".parse().unwrap();
        let xml = super::to_xml(&E::ItemNotFound.reply_to(&iq));
        assert!(xml.contains("<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"), "{xml}");
        assert!(xml.contains("from='b@d'") && xml.contains("to='a@d/r'"), "{xml}");
    }
}
