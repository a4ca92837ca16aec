//! XEP-0352 Client State Indication: while a client says it is inactive (a phone in a
//! pocket), its session holds what is not urgent — presence above all, the traffic seed 003
//! says not to forward to phones — and sends it on the next urgent stanza or when the client
//! is active again. Of a contact's held presences only the newest is kept.
//!
//! Urgent: IQs (someone waits for the answer) and messages with a body. Everything else
//! (presence, chat states, receipts) waits. Order is kept: an urgent stanza goes out after
//! what was held before it.

use std::sync::Arc;

use minidom::Element;

use crate::xml::ns;

/// What the client said (`<active/>` or `<inactive/>`).
pub fn parse(el: &Element) -> Option<bool> {
    if el.ns() != ns::CSI {
        return None;
    }
    match el.name() {
        "active" => Some(true),
        "inactive" => Some(false),
        _ => None,
    }
}

/// `<csi/>`, offered to bound streams (XEP-0352 §3).
pub fn stream_feature() -> Element {
    Element::bare("csi", ns::CSI)
}

/// The stanzas an inactive session holds back, oldest first.
#[derive(Debug, Default)]
pub struct Held {
    stanzas: Vec<Arc<str>>,
}

/// What to do with a stanza for an inactive client.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Held; nothing to write now.
    Held,
    /// Write what was held, then this one.
    Flush,
}

impl Held {
    /// Holds `xml` unless it is urgent or the hold is full (`held_max` stanzas).
    pub fn offer(&mut self, xml: &Arc<str>, held_max: usize) -> Verdict {
        if is_urgent(xml) {
            return Verdict::Flush;
        }
        if is_state(xml) {
            // A contact's newer presence replaces its older one (RFC 6121 §4.4: only the
            // latest matters); subscription requests and answers are kept, each.
            let from = attr(xml, "from");
            self.stanzas.retain(|held| !(is_state(held) && attr(held, "from") == from));
        }
        if self.stanzas.len() >= held_max {
            return Verdict::Flush;
        }
        self.stanzas.push(xml.clone());
        Verdict::Held
    }

    pub fn take(&mut self) -> Vec<Arc<str>> {
        std::mem::take(&mut self.stanzas)
    }

    pub fn is_empty(&self) -> bool {
        self.stanzas.is_empty()
    }
}

/// Available or unavailable presence: state, of which only the newest counts.
fn is_state(xml: &str) -> bool {
    xml.starts_with("<presence") && matches!(attr(xml, "type"), None | Some("unavailable"))
}

fn is_urgent(xml: &str) -> bool {
    xml.starts_with("<iq") || (xml.starts_with("<message") && xml.contains("<body"))
}

/// An attribute of the start tag of a stanza this server serialised (minidom writes
/// `name='value'`, with `'` quotes).
fn attr<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let head = &xml[..xml.find('>').unwrap_or(xml.len())];
    let key = format!(" {name}='");
    let start = head.find(&key)? + key.len();
    head[start..].find('\'').map(|end| &head[start..start + end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(h: &mut Held, xml: &str) -> Verdict {
        h.offer(&Arc::from(xml), 3)
    }

    #[test]
    fn presence_collapses_per_contact_and_urgent_flushes() {
        let mut h = Held::default();
        assert_eq!(offer(&mut h, "<presence xmlns='jabber:client' from='b@d/1' to='a@d'/>"), Verdict::Held);
        assert_eq!(offer(&mut h, "<presence xmlns='jabber:client' from='c@d/1' to='a@d'/>"), Verdict::Held);
        assert_eq!(offer(&mut h, "<presence xmlns='jabber:client' from='b@d/1' to='a@d' type='unavailable'/>"), Verdict::Held);
        let typing = "<message xmlns='jabber:client' from='b@d/1'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>";
        assert_eq!(offer(&mut h, typing), Verdict::Held);
        assert_eq!(offer(&mut h, "<message xmlns='jabber:client' from='b@d/1'><body>hi</body></message>"), Verdict::Flush);
        let held = h.take();
        assert_eq!(held.len(), 3);
        assert!(held[0].contains("c@d/1") && held[1].contains("unavailable") && held[2].contains("composing"));
    }

    #[test]
    fn subscription_requests_are_not_collapsed() {
        let mut h = Held::default();
        assert_eq!(offer(&mut h, "<presence xmlns='jabber:client' from='b@d' to='a@d' type='subscribe'/>"), Verdict::Held);
        assert_eq!(offer(&mut h, "<presence xmlns='jabber:client' from='b@d/1' to='a@d'/>"), Verdict::Held);
        assert_eq!(offer(&mut h, "<presence xmlns='jabber:client' from='b@d' to='a@d' type='unsubscribe'/>"), Verdict::Held);
        assert_eq!(h.take().len(), 3);
    }

    #[test]
    fn iq_is_urgent_and_a_full_hold_flushes() {
        let mut h = Held::default();
        assert_eq!(offer(&mut h, "<iq xmlns='jabber:client' type='get'/>"), Verdict::Flush);
        for i in 0..3 {
            assert_eq!(offer(&mut h, &format!("<presence xmlns='jabber:client' from='u{i}@d'/>")), Verdict::Held);
        }
        assert_eq!(offer(&mut h, "<presence xmlns='jabber:client' from='u9@d'/>"), Verdict::Flush);
    }
}
