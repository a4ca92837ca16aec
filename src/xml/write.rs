//! Serialising an element (XML 1.0, Namespaces in XML 1.0 §3-§6), for everything martlet
//! writes: routed stanzas, error echoes, replies.
//!
//! Not minidom's writer: it replays the prefix declarations an element was parsed with into
//! rxml's namespace tracker, which panics on input the parser accepts (`xmlns:xml`, a prefix
//! of the stanza element declared again below it, a client's `tns0` prefix meeting one the
//! tracker makes up) and recurses once per level. Here prefixes are never taken from the
//! input: elements are written unprefixed with a default namespace declaration where it
//! changes, namespaced attributes get a prefix declared on their own element, and the walk
//! keeps its own stack. Nothing in an element can make it panic.

use std::fmt::Write as _;

use minidom::{Element, Node};

/// What is left to write, innermost last.
enum Step<'a> {
    /// An element's start tag (and content), inside a parent whose default namespace is the
    /// `String`.
    Open(&'a Element, String),
    /// An element's end tag.
    Close(&'a Element),
    Text(&'a str),
}

/// The element as XML text, `xmlns` declared on it.
pub fn to_xml(root: &Element) -> String {
    let mut out = String::with_capacity(256);
    let mut todo = vec![Step::Open(root, String::new())];
    while let Some(step) = todo.pop() {
        match step {
            Step::Text(text) => escape_into(&mut out, text, false),
            Step::Close(el) => {
                out.push_str("</");
                out.push_str(el.name());
                out.push('>');
            }
            Step::Open(el, inherited_ns) => {
                let ns = el.ns();
                out.push('<');
                out.push_str(el.name());
                if ns != inherited_ns {
                    out.push_str(" xmlns='");
                    escape_into(&mut out, &ns, true);
                    out.push('\'');
                }
                write_attrs(&mut out, el);
                if el.nodes().next().is_none() {
                    out.push_str("/>");
                    continue;
                }
                out.push('>');
                todo.push(Step::Close(el));
                for node in el.nodes().rev() {
                    todo.push(match node {
                        Node::Element(child) => Step::Open(child, ns.clone()),
                        Node::Text(text) => Step::Text(text),
                    });
                }
            }
        }
    }
    out
}

/// The attributes of one start tag. A namespaced attribute's prefix (`ns0`, `ns1`, ...) is
/// declared on the same element, so it never depends on, nor clashes with, an ancestor's.
fn write_attrs(out: &mut String, el: &Element) {
    let mut declared: Vec<&str> = Vec::new();
    for ((ns, name), value) in el.attrs().iter() {
        out.push(' ');
        match ns.as_namespace_name() {
            None => {}
            Some(uri) if uri == rxml::XMLNS_XML => out.push_str("xml:"),
            Some(uri) => {
                let n = match declared.iter().position(|d| *d == uri) {
                    Some(n) => n,
                    None => {
                        declared.push(uri);
                        let n = declared.len() - 1;
                        let _ = write!(out, "xmlns:ns{n}='");
                        escape_into(out, uri, true);
                        out.push_str("' ");
                        n
                    }
                };
                let _ = write!(out, "ns{n}:");
            }
        }
        out.push_str(name.as_str());
        out.push_str("='");
        escape_into(out, value, true);
        out.push('\'');
    }
}

/// `text` as an attribute value in single quotes, escaped as [`to_xml`] writes it.
pub fn escape_attr(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    escape_into(&mut out, text, true);
    out
}

/// Escapes markup, and line ends and tabs in attribute values (XML 1.0 §3.3.3 would
/// normalise them to spaces). Characters XML 1.0 §2.2 does not allow (control characters,
/// U+FFFE, U+FFFF), which only strings the server made can hold, become U+FFFD.
fn escape_into(out: &mut String, text: &str, attribute: bool) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xd;"),
            '\'' if attribute => out.push_str("&#39;"),
            '"' if attribute => out.push_str("&#34;"),
            '\n' if attribute => out.push_str("&#xa;"),
            '\t' if attribute => out.push_str("&#x9;"),
            '\t' | '\n' => out.push(c),
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    /// Writes, reads back, and compares the trees (names, namespaces, attributes, text).
    fn round_trip(xml: &str) -> String {
        let el = parse(xml);
        let out = to_xml(&el);
        let again: Element = out.parse().unwrap_or_else(|e| panic!("{out}: {e}"));
        assert_eq!(el, again, "{out}");
        out
    }

    #[test]
    fn plain_stanza_is_written_as_minidom_did() {
        let xml = "<message xmlns='jabber:client' to='b@x' type='chat'><body>a &amp; b &lt;c&gt;</body><x xmlns='urn:x'/></message>";
        assert_eq!(round_trip(xml), xml);
    }

    #[test]
    fn declarations_that_panicked_minidom_round_trip() {
        for xml in [
            "<message xmlns='jabber:client' xmlns:xml='http://www.w3.org/XML/1998/namespace' xml:lang='en'/>",
            "<message xmlns='jabber:client' xmlns:p='urn:a'><p:x xmlns:p='urn:b'/></message>",
            "<message xmlns='jabber:client' xmlns:p='urn:a'><p:x xmlns:p='urn:a' p:y='1'/></message>",
            "<message xmlns='jabber:client' xmlns:tns0='urn:z' tns0:a='1'><x xmlns:q='urn:q'><y q:b='2'/></x></message>",
            "<message xmlns='jabber:client'><a xmlns='urn:a'><b xmlns='urn:b'><c xmlns='urn:a'/></b></a></message>",
            "<message xmlns='jabber:client' xmlns:a='urn:u' xmlns:b='urn:u' a:x='1' b:y='2'/>",
            "<message xmlns='jabber:client'><e xmlns=''/></message>",
        ] {
            round_trip(xml);
        }
    }

    #[test]
    fn attribute_values_keep_quotes_and_whitespace() {
        let out = round_trip("<a xmlns='u' v='&apos;&quot;&#9;&#10;&#13;'>x&#13;y</a>");
        assert_eq!(out, "<a xmlns='u' v='&#39;&#34;&#x9;&#xa;&#xd;'>x&#xd;y</a>");
    }

    #[test]
    fn characters_xml_forbids_are_replaced() {
        let mut el = Element::bare("a", "u");
        el.append_text("x\u{1}y".to_owned());
        assert_eq!(to_xml(&el), "<a xmlns='u'>x\u{fffd}y</a>");
    }

    #[test]
    fn deep_tree_does_not_recurse() {
        // Far deeper than the parser lets through, written on a stack far smaller than an
        // executor's: one frame per level would overflow it.
        let mut el = Element::bare("a", "u");
        for _ in 0..10_000 {
            let mut parent = Element::bare("a", "u");
            parent.append_child(el);
            el = parent;
        }
        let out = std::thread::scope(|s| {
            let writer = std::thread::Builder::new().stack_size(64 * 1024);
            writer.spawn_scoped(s, || to_xml(&el)).unwrap().join().unwrap()
        });
        assert!(out.starts_with("<a xmlns='u'><a><a>") && out.ends_with("</a></a>"));
        assert_eq!(out.matches("<a/>").count(), 1);
        assert_eq!(out.matches("<a>").count(), 9_999);
    }
}
