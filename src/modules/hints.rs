//! XEP-0334 Message Processing Hints: what the server keeps of a message and what it
//! copies. The one place that decides, for offline storage (XEP-0160), the archive
//! (XEP-0313) and carbons (XEP-0280).
//!
//! Kept: a message with a body, or one hinted `<store/>`. Never kept: one hinted
//! `<no-store/>`, a standalone chat state (XEP-0085 §5.5: stale by the time anyone reads
//! it), and for the archive one hinted `<no-permanent-store/>` (§4.1; offline storage is
//! temporary, so it may still wait there).

use crate::stanza::Stanza;
use crate::xml::ns;

/// The hints a message carries (§4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Hints {
    no_permanent_store: bool,
    no_store: bool,
    no_copy: bool,
    store: bool,
}

impl Hints {
    /// Nearly no message carries hints: the text is checked first, so those are not parsed.
    fn of(stanza: &Stanza) -> Hints {
        if !stanza.xml.contains(ns::HINTS) {
            return Hints::default();
        }
        let el = stanza.element();
        let has = |name: &str| el.get_child(name, ns::HINTS).is_some();
        Hints { no_permanent_store: has("no-permanent-store"), no_store: has("no-store"), no_copy: has("no-copy"), store: has("store") }
    }
}

/// A body is what a person reads later. Sealed stanzas escape `<` in text and attributes,
/// so the text holds `<body` only as an element.
fn has_body(stanza: &Stanza) -> bool {
    stanza.xml.contains("<body>") || stanza.xml.contains("<body ")
}

fn keeps(stanza: &Stanza, permanently: bool) -> bool {
    let hints = Hints::of(stanza);
    if hints.no_store || (permanently && hints.no_permanent_store) {
        return false;
    }
    has_body(stanza) || (hints.store && !stanza.xml.contains(ns::CHATSTATES))
}

/// XEP-0160: whether a message that found no available resource is stored for later.
pub fn store_offline(stanza: &Stanza) -> bool {
    keeps(stanza, false)
}

/// XEP-0313 §5.1.1: whether a message goes into the archives: a chat or normal one that is
/// kept.
pub fn archive(stanza: &Stanza) -> bool {
    matches!(&*stanza.type_, "chat" | "normal" | "") && keeps(stanza, true)
}

/// XEP-0280 §6 with XEP-0334 §4.3: whether carbons may copy the message.
pub fn may_copy(stanza: &Stanza) -> bool {
    !Hints::of(stanza).no_copy
}

#[cfg(test)]
mod tests {
    use super::*;
    use jid::Jid;

    fn message(type_: &str, inner: &str) -> Stanza {
        let el: minidom::Element = format!("<message xmlns='jabber:client' type='{type_}'>{inner}</message>").parse().unwrap();
        Stanza::seal(crate::stanza::Kind::Message, el, Jid::new("b@d/r").unwrap(), Jid::new("a@d").unwrap())
    }

    const COMPOSING: &str = "<composing xmlns='http://jabber.org/protocol/chatstates'/>";

    fn hint(name: &str) -> String {
        format!("<{name} xmlns='urn:xmpp:hints'/>")
    }

    /// (children, stored offline, archived)
    #[test]
    fn what_is_kept() {
        let cases: &[(String, bool, bool)] = &[
            ("<body>x</body>".into(), true, true),
            ("<body xml:lang='en'>x</body>".into(), true, true),
            (COMPOSING.into(), false, false),
            (format!("{COMPOSING}{}", hint("no-store")), false, false),
            (format!("{COMPOSING}{}", hint("store")), false, false),
            (format!("<body>x</body>{}", hint("no-store")), false, false),
            (format!("<body>x</body>{}", hint("no-permanent-store")), true, false),
            ("<received xmlns='urn:xmpp:receipts' id='1'/>".into(), false, false),
            (format!("<received xmlns='urn:xmpp:receipts' id='1'/>{}", hint("store")), true, true),
            (format!("<body>x</body>{}{}", hint("store"), hint("no-store")), false, false),
            ("<bodyguard xmlns='x'/>".into(), false, false),
        ];
        for (inner, offline, archived) in cases {
            let m = message("chat", inner);
            assert_eq!((store_offline(&m), archive(&m)), (*offline, *archived), "{inner}");
        }
        assert!(!archive(&message("headline", "<body>x</body>")));
        assert!(archive(&message("normal", "<body>x</body>")));
    }

    #[test]
    fn no_copy_stops_carbons() {
        assert!(may_copy(&message("chat", "<body>x</body>")));
        assert!(may_copy(&message("chat", &format!("<body>x</body>{}", hint("no-store")))));
        assert!(!may_copy(&message("chat", &format!("<body>x</body>{}", hint("no-copy")))));
    }
}
