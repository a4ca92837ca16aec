//! Namespaces in XML 1.0 §3 and §5, the parts rxml's raw parser leaves to its user: the
//! reserved `xml` and `xmlns` prefixes and namespace names, and undeclaring a prefix. XML
//! breaking them is not namespace-well-formed, which RFC 6120 §11.2 and §4.9.3.13 answer
//! with `<not-well-formed/>`; none of it is in any XMPP a client sends.

use rxml::{RawEvent, XMLNS_XML, XMLNS_XMLNS};

/// Why `ev` breaks the rules, if it does.
pub fn check(ev: &RawEvent) -> Result<(), String> {
    match ev {
        RawEvent::ElementHeadOpen(_, (Some(prefix), _)) if prefix.as_str() == "xmlns" => {
            Err("element names must not have the prefix xmlns".into())
        }
        // Allowed by the letter of §3, but then nothing could read the element back:
        // minidom resolves an element's `xml:` prefix only where it is declared.
        RawEvent::ElementHeadOpen(_, (Some(prefix), _)) if prefix.as_str() == "xml" => {
            Err("no element is in the xml namespace".into())
        }
        RawEvent::Attribute(_, (None, name), value) if name.as_str() == "xmlns" => default_declaration(value),
        RawEvent::Attribute(_, (Some(xmlns), prefix), value) if xmlns.as_str() == "xmlns" => {
            prefix_declaration(prefix.as_str(), value)
        }
        _ => Ok(()),
    }
}

fn default_declaration(uri: &str) -> Result<(), String> {
    if uri == XMLNS_XML || uri == XMLNS_XMLNS {
        return Err(format!("{uri} must not be the default namespace"));
    }
    Ok(())
}

fn prefix_declaration(prefix: &str, uri: &str) -> Result<(), String> {
    match (prefix, uri) {
        ("xmlns", _) => Err("the xmlns prefix must not be declared".into()),
        ("xml", XMLNS_XML) => Ok(()),
        ("xml", _) => Err("the xml prefix must not be bound to another namespace".into()),
        (_, XMLNS_XML | XMLNS_XMLNS) => Err(format!("only its own prefix may be bound to {uri}")),
        // §5.2 of Namespaces in XML 1.1 only; 1.0 has no way to undeclare a prefix.
        (_, "") => Err(format!("the prefix {prefix} is bound to no namespace")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::stream_parser::tests::limits;
    use super::super::stream_parser::{ParseError, StreamParser};

    const HEADER: &str = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost'>";

    fn parse(stanza: &str) -> Result<(), ParseError> {
        let mut p = StreamParser::new(limits(1 << 16, 48));
        p.feed(HEADER.as_bytes()).unwrap();
        p.feed(stanza.as_bytes())
    }

    #[test]
    fn reserved_prefixes_and_names_are_refused() {
        for bad in [
            "<message xmlns:xml='urn:other'/>",
            "<message xmlns:xmlns='urn:other'/>",
            "<message xmlns:xmlns='http://www.w3.org/2000/xmlns/'/>",
            "<message xmlns:p='http://www.w3.org/2000/xmlns/'/>",
            "<message xmlns:p='http://www.w3.org/XML/1998/namespace'/>",
            "<message><x xmlns='http://www.w3.org/XML/1998/namespace'/></message>",
            "<message><x xmlns='http://www.w3.org/2000/xmlns/'/></message>",
            "<message xmlns:p='urn:a'><x xmlns:p=''/></message>",
            "<message><xmlns:x/></message>",
            "<message xmlns:xml='http://www.w3.org/XML/1998/namespace'><xml:x/></message>",
        ] {
            assert!(matches!(parse(bad), Err(ParseError::NotWellFormed(_))), "{bad}");
        }
    }

    #[test]
    fn legal_declarations_pass() {
        for good in [
            "<message xmlns:xml='http://www.w3.org/XML/1998/namespace' xml:lang='en'/>",
            "<message xmlns:p='urn:a'><p:x xmlns:p='urn:b'/></message>",
            "<message><x xmlns=''/></message>",
        ] {
            assert_eq!(parse(good), Ok(()), "{good}");
        }
    }
}
