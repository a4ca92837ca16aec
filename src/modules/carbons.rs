//! XEP-0280 Message Carbons: a resource that enables carbons gets a copy of every chat
//! message its user's other resources receive (`<received/>`) or send (`<sent/>`).
//!
//! The UserChannel holds who enabled them and wraps the copies. Received copies cost
//! nothing extra: the message is already at the user's owner. Sent copies need the sender's
//! session to hand the message to its own UserChannel too, so the UserChannel tells each
//! session whether any *other* resource of its user wants them (`SessionMsg::CarbonPeers`):
//! a user without carbon-enabled siblings pays no extra hop per message.

use minidom::Element;

use super::{IqAnswer, IqFuture, IqRequest};
use crate::router::UserMsg;
use crate::stanza::{build, Stanza, StanzaError};
use crate::xml::ns;

/// `<enable/>` and `<disable/>` (XEP-0280 §4, §5), recorded by the user's UserChannel.
pub fn handle(req: IqRequest<'_>) -> IqFuture<'_> {
    Box::pin(async move {
        let enabled = match (req.iq.attr("type"), req.payload.name()) {
            (Some("set"), "enable") => true,
            (Some("set"), "disable") => false,
            _ => return IqAnswer::Error(StanzaError::BadRequest),
        };
        let resource = crate::stanza::resource_of(req.user);
        let bare = req.user.to_bare().to_string().into();
        req.core.request_user(bare, req.credit, UserMsg::Carbons { resource, enabled }).await;
        IqAnswer::Result(None)
    })
}

/// Which way a copied message went, seen from the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Received,
    Sent,
}

/// Whether a message is copied (XEP-0280 §6): chat messages, and normal ones with a body;
/// not those marked private (§7) or `<no-copy/>` (XEP-0334), nor carbons themselves.
pub fn eligible(stanza: &Stanza) -> bool {
    let xml = &*stanza.xml;
    let kind_ok = match &*stanza.type_ {
        "chat" => true,
        "" | "normal" => xml.contains("<body"),
        _ => false,
    };
    kind_ok && !xml.contains(ns::CARBONS) && super::hints::may_copy(stanza)
}

/// The copy for `to` (a full JID of the user): the original, forwarded (XEP-0297) inside
/// `<received/>` or `<sent/>`, from the user's bare JID (§6: so no one else can forge it).
pub fn wrap(direction: Direction, original: &Stanza, user_bare: &str, to: &str) -> Element {
    let name = match direction {
        Direction::Received => "received",
        Direction::Sent => "sent",
    };
    let forwarded = build("forwarded", ns::FORWARD, &[], vec![original.element()]);
    let type_ = if original.type_.is_empty() { "normal" } else { &original.type_ };
    build(
        "message",
        ns::CLIENT,
        &[("from", user_bare), ("to", to), ("type", type_)],
        vec![build(name, ns::CARBONS, &[], vec![forwarded])],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use jid::Jid;

    fn message(type_: &str, inner: &str) -> Stanza {
        let el: Element = format!("<message xmlns='jabber:client' type='{type_}'>{inner}</message>").parse().unwrap();
        let kind = crate::stanza::Kind::Message;
        Stanza::seal(kind, el, Jid::new("b@d/r").unwrap(), Jid::new("a@d").unwrap())
    }

    #[test]
    fn which_messages_are_copied() {
        assert!(eligible(&message("chat", "<body>x</body>")));
        assert!(eligible(&message("chat", "<active xmlns='http://jabber.org/protocol/chatstates'/>")));
        assert!(eligible(&message("normal", "<body>x</body>")));
        assert!(!eligible(&message("normal", "")));
        assert!(!eligible(&message("headline", "<body>x</body>")));
        assert!(!eligible(&message("groupchat", "<body>x</body>")));
        assert!(!eligible(&message("chat", "<body>x</body><private xmlns='urn:xmpp:carbons:2'/>")));
        assert!(!eligible(&message("chat", "<body>x</body><no-copy xmlns='urn:xmpp:hints'/>")));
    }

    #[test]
    fn copies_forward_the_original() {
        let m = message("chat", "<body>x</body>");
        let xml = crate::stanza::to_xml(&wrap(Direction::Sent, &m, "a@d", "a@d/phone"));
        assert!(xml.starts_with("<message xmlns='jabber:client' from='a@d' to='a@d/phone' type='chat'><sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message"), "{xml}");
        assert!(xml.contains("<body>x</body>"));
    }
}
