//! XEP-0160 offline messages: a message for a user with no available resource is stored
//! durably with an XEP-0203 delay stamp, and handed to the first resource that sends initial
//! presence with a non-negative priority.

use std::time::SystemTime;

use crate::stanza::{to_xml, Stanza};

/// The stored form: the message with our XEP-0203 `<delay/>`, stamped with the time the
/// server took it in (now, unless it comes late already: `Stanza::received`).
pub fn stored_form(message: &Stanza, domain: &str) -> String {
    let at = message.received.unwrap_or_else(SystemTime::now);
    to_xml(&super::delay::stamp_once(message.element(), domain, at))
}

#[cfg(test)]
mod tests {
    use crate::stanza::{Kind, Stanza};

    #[test]
    fn delay_is_appended() {
        let m: minidom::Element = "<message xmlns='jabber:client' to='a@d'><body>x</body></message>".parse().unwrap();
        let m = Stanza::seal(Kind::Message, m, jid::Jid::new("b@d/r").unwrap(), jid::Jid::new("a@d").unwrap());
        let s = super::stored_form(&m, "d");
        assert!(s.contains("<delay xmlns='urn:xmpp:delay' from='d' stamp='"), "{s}");
        assert!(s.contains("<body>x</body>"));
    }
}
