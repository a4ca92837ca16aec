//! XEP-0203 delayed delivery: what the server stamps on a stanza that reaches its
//! recipient late (stored offline, or routed again after the session it was handed to
//! ended), with the time the server took it in. Ours at most once: a stanza that already
//! carries our stamp keeps it (an offline message stored, then left unacknowledged).

use std::time::SystemTime;

use minidom::Element;

use crate::stanza::{build, to_xml, Stanza};
use crate::xml::ns;

/// `el` with our `<delay from=domain stamp=at/>` appended, unless it has one of ours.
pub fn stamp_once(mut el: Element, domain: &str, at: SystemTime) -> Element {
    let ours = el.children().any(|c| c.is("delay", ns::DELAY) && c.attr("from") == Some(domain));
    if !ours {
        let stamp = humantime::format_rfc3339_seconds(at).to_string();
        el.append_child(build("delay", ns::DELAY, &[("from", domain), ("stamp", &stamp)], vec![]));
    }
    el
}

/// A stanza routed again: stamped with the time the server took it in, when known.
pub fn late(stanza: Stanza, domain: &str) -> Stanza {
    let Some(at) = stanza.received else { return stanza };
    let xml = to_xml(&stamp_once(stanza.element(), domain, at)).into();
    Stanza { xml, ..stanza }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn message() -> Element {
        "<message xmlns='jabber:client' to='a@d'><body>x</body></message>".parse().unwrap()
    }

    #[test]
    fn stamps_the_given_time_once() {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let once = stamp_once(message(), "d", at);
        let twice = stamp_once(once.clone(), "d", SystemTime::now());
        assert_eq!(once, twice);
        let s = to_xml(&once);
        assert!(s.contains("<delay xmlns='urn:xmpp:delay' from='d' stamp='2023-11-14T22:13:20Z'/>"), "{s}");
    }

    #[test]
    fn another_servers_delay_does_not_count_as_ours() {
        let mut el = message();
        el.append_child(build("delay", ns::DELAY, &[("from", "elsewhere"), ("stamp", "2020-01-01T00:00:00Z")], vec![]));
        let stamped = stamp_once(el, "d", SystemTime::now());
        assert_eq!(stamped.children().filter(|c| c.is("delay", ns::DELAY)).count(), 2);
    }
}
