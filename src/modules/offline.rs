//! XEP-0160 offline messages: a message for a user with no available resource is stored
//! durably with an XEP-0203 delay stamp, and handed to the first resource that sends initial
//! presence with a non-negative priority.

use std::time::SystemTime;

use crate::stanza::{to_xml, Receipt, Stanza};

/// The stored form: the message with our XEP-0203 `<delay/>`, stamped with the time the
/// server took it in (now, unless it comes late already: `Stanza::received`).
fn stored_form(message: &Stanza, domain: &str) -> String {
    let at = message.received.unwrap_or_else(SystemTime::now);
    to_xml(&super::delay::stamp_once(message.element(), domain, at))
}

/// The row kept in storage: the stored form, after the custody receipt of a message that
/// came from another node (`#node.core.id` and a newline; a stanza starts with `<`, so a
/// row without one is read as before). A side of a partition that stood in as the user's
/// owner stores what it could not deliver; when the cut heals it is handed to the session,
/// which may have had it already from the other side, and the receipt lets the session's
/// core recognise that copy (`router::custody`).
pub fn row(message: &Stanza, domain: &str) -> String {
    let stored = stored_form(message, domain);
    match message.receipt {
        Some(r) => format!("#{}.{}.{}\n{stored}", r.node, r.core, r.id),
        None => stored,
    }
}

/// A row read back: its receipt, if it has one, and the stanza as the client gets it.
pub fn parse_row(row: String) -> (Option<Receipt>, String) {
    let Some((head, xml)) = row.strip_prefix('#').and_then(|rest| rest.split_once('\n')) else {
        return (None, row);
    };
    let mut parts = head.splitn(3, '.');
    let receipt = match (parts.next().map(str::parse), parts.next().map(str::parse), parts.next().map(str::parse)) {
        (Some(Ok(node)), Some(Ok(core)), Some(Ok(id))) => Some(Receipt { node, core, id }),
        _ => None,
    };
    (receipt, xml.to_string())
}

#[cfg(test)]
mod tests {
    use crate::stanza::{Kind, Receipt, Stanza};

    #[test]
    fn delay_is_appended() {
        let m: minidom::Element = "<message xmlns='jabber:client' to='a@d'><body>x</body></message>".parse().unwrap();
        let m = Stanza::seal(Kind::Message, m, jid::Jid::new("b@d/r").unwrap(), jid::Jid::new("a@d").unwrap());
        let s = super::stored_form(&m, "d");
        assert!(s.contains("<delay xmlns='urn:xmpp:delay' from='d' stamp='"), "{s}");
        assert!(s.contains("<body>x</body>"));
    }

    #[test]
    fn a_row_keeps_the_receipt_apart_from_what_the_client_gets() {
        let m: minidom::Element = "<message xmlns='jabber:client' to='a@d'><body>x</body></message>".parse().unwrap();
        let mut m = Stanza::seal(Kind::Message, m, jid::Jid::new("b@d/r").unwrap(), jid::Jid::new("a@d").unwrap());
        let plain = super::row(&m, "d");
        assert!(plain.starts_with("<message"), "{plain}");
        assert_eq!(super::parse_row(plain.clone()), (None, plain.clone()));
        let receipt = Receipt { node: 4_000_000_000, core: 3, id: u64::MAX };
        m.receipt = Some(receipt);
        let (read, xml) = super::parse_row(super::row(&m, "d"));
        assert_eq!(read, Some(receipt));
        assert!(xml.starts_with("<message") && xml.contains("<body>x</body>"), "{xml}");
        assert_eq!(super::parse_row("#1.2\n<m/>".into()), (None, "<m/>".into()), "a damaged head is dropped, the stanza kept");
    }
}
