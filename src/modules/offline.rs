//! XEP-0160 offline messages: a message for a user with no available resource is stored
//! durably with an XEP-0203 delay stamp, and handed to the first resource that sends initial
//! presence with a non-negative priority.

use minidom::Element;

use crate::stanza::{build, to_xml};
use crate::xml::ns;

/// The stored form: the message with `<delay from=domain stamp=now/>` appended.
pub fn stored_form(mut message: Element, domain: &str) -> String {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    message.append_child(build("delay", ns::DELAY, &[("from", domain), ("stamp", &stamp)], vec![]));
    to_xml(&message)
}

#[cfg(test)]
mod tests {
    #[test]
    fn delay_is_appended() {
        let m: minidom::Element = "<message xmlns='jabber:client' to='a@d'><body>x</body></message>".parse().unwrap();
        let s = super::stored_form(m, "d");
        assert!(s.contains("<delay xmlns='urn:xmpp:delay' from='d' stamp='"), "{s}");
        assert!(s.contains("<body>x</body>"));
    }
}
