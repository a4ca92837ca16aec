//! RFC 6120 §4.3.2 stream features, written as `<stream:features>` with the `stream` prefix
//! our header declares (as `<stream:error>` is). A default-namespace `<features
//! xmlns='http://etherx.jabber.org/streams'>` is the same XML, but loudmouth (mcabber)
//! matches the literal name `stream:features` and Tsung waits for `</stream:features>`:
//! both hang on it. The children keep their own default-namespace declarations.

use minidom::Element;

use crate::stanza::to_xml;

/// The features element holding `children`. Always with a closing tag, even when empty,
/// since the clients above look for `</stream:features>`.
pub fn to_wire(children: &[Element]) -> String {
    let mut out = String::from("<stream:features>");
    for child in children {
        out.push_str(&to_xml(child));
    }
    out.push_str("</stream:features>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_with_children_in_their_own_namespace() {
        let wire = to_wire(&[Element::bare("bind", "urn:ietf:params:xml:ns:xmpp-bind")]);
        assert_eq!(wire, "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>");
        assert_eq!(to_wire(&[]), "<stream:features></stream:features>");
    }
}
