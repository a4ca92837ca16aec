//! Incremental parser of one XML stream (RFC 6120 §4): bytes in, stream events out.
//!
//! rxml does the XML (restricted XML: no DTD, no entity declarations, no processing
//! instructions, namespace-well-formedness enforced), minidom's tree builder turns each
//! top-level child of `<stream:stream>` into an element. Limits are enforced here, while the
//! bytes arrive, so an oversized stanza is refused before it is buffered whole.

use minidom::tree_builder::TreeBuilder;
use minidom::Element;
use rxml::{Parse, RawEvent, RawParser};

/// What the peer sent.
#[derive(Debug)]
pub enum StreamEvent {
    /// `<stream:stream ...>`, with its namespace and attributes (the element has no children).
    Header(Element),
    /// A complete top-level element: a stanza or a negotiation element.
    Element(Element),
    /// `</stream:stream>`.
    End,
}

/// Why parsing stopped; each maps to a stream error condition (RFC 6120 §4.9.3).
#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Not XML, or XML that breaks namespace rules: `<not-well-formed/>`.
    NotWellFormed(String),
    /// XML that XMPP forbids (DTD, entity declarations, processing instructions, comments):
    /// `<restricted-xml/>`.
    Restricted(String),
    /// A stanza larger than the limit: `<policy-violation/>`.
    TooLarge { stanza_bytes_max: usize },
    /// A stream header larger than the limit: `<policy-violation/>`.
    HeaderTooLarge { stream_header_bytes_max: usize },
    /// Elements nested deeper than the limit (the stanza is level 1): `<policy-violation/>`.
    TooDeep { stanza_depth_max: usize },
}

/// What one stream may send, from `[limits]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParserLimits {
    /// Largest `<stream:stream>` start tag, in bytes. A real one is a few hundred; rxml
    /// bounds each token, but not how many attributes a client may send before authenticating.
    pub stream_header_bytes_max: usize,
    pub stanza_bytes_max: usize,
    /// Checked before an element reaches the tree builder: minidom resolves each element's
    /// prefix by walking every open element, so depth costs quadratic time before anything
    /// else could refuse the stanza, and a deep tree is cloned and dropped recursively.
    pub stanza_depth_max: usize,
}

pub struct StreamParser {
    raw: RawParser,
    /// Open elements: 0 before the stream header, 1 inside the stream, 2+ inside a stanza.
    depth: usize,
    /// The stream header being read (its name and attributes arrive as separate events).
    /// Boxed, like `stanza`: the parser lives inline in every idle session's future, and
    /// neither is there between stanzas.
    header: Option<Box<HeaderInProgress>>,
    /// The stream's default namespace (normally jabber:client), declared on the header and
    /// inherited by every stanza. A `Box<str>`, not a `String`: the parser lives in every
    /// idle session, and its capacity word would be 8 bytes of each.
    content_ns: Box<str>,
    /// Builds the stanza being read; `None` between stanzas. A fresh builder per stanza keeps
    /// an idle stream's parser free of the stream element and its attribute maps (about
    /// 2 KiB per connection when kept).
    stanza: Option<Box<TreeBuilder>>,
    /// Bytes of the top-level element being read, counted from its first byte.
    element_bytes: usize,
    limits: ParserLimits,
    /// Top-level elements completed but not yet handed out.
    ready: std::collections::VecDeque<StreamEvent>,
}

#[derive(Default)]
struct HeaderInProgress {
    prefix: Option<String>,
    name: String,
    /// `(prefix, name, value)` of plain attributes; namespace declarations go to `ns_decls`.
    attrs: Vec<(Option<String>, String, String)>,
    ns_decls: Vec<(Option<String>, String)>,
}

impl StreamParser {
    pub fn new(limits: ParserLimits) -> Self {
        StreamParser {
            raw: RawParser::new(),
            depth: 0,
            header: None,
            content_ns: Box::default(),
            stanza: None,
            element_bytes: 0,
            limits,
            ready: Default::default(),
        }
    }

    /// The limits it enforces, for the parser of a restarted stream (RFC 6120 §4.3.3).
    pub fn limits(&self) -> ParserLimits {
        self.limits
    }

    /// Feeds bytes; completed events are then available from [`Self::next_event`].
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), ParseError> {
        loop {
            match self.raw.parse(&mut data, false) {
                Ok(Some(ev)) => self.on_event(ev)?,
                Ok(None) => return Ok(()),
                Err(rxml::error::EndOrError::NeedMoreData) => return Ok(()),
                Err(rxml::error::EndOrError::Error(e)) => return Err(classify(e)),
            }
        }
    }

    pub fn next_event(&mut self) -> Option<StreamEvent> {
        self.ready.pop_front()
    }

    /// Drops parser scratch buffers; worth it for sessions that go idle (most of them).
    pub fn release_temporaries(&mut self) {
        self.raw.release_temporaries();
        // Room for four events stays behind once the first is handed out (~0.5 KiB).
        if self.ready.is_empty() {
            self.ready = Default::default();
        }
    }

    fn on_event(&mut self, ev: RawEvent) -> Result<(), ParseError> {
        super::names::check(&ev).map_err(ParseError::NotWellFormed)?;
        if self.depth == 0 {
            self.element_bytes += ev.metrics().len();
            if self.element_bytes > self.limits.stream_header_bytes_max {
                return Err(ParseError::HeaderTooLarge { stream_header_bytes_max: self.limits.stream_header_bytes_max });
            }
            return self.on_header_event(ev);
        }
        if self.depth == 1 {
            match &ev {
                // Whitespace between stanzas is a keepalive (RFC 6120 §4.6.1): never kept.
                RawEvent::Text(_, text) if text.as_str().trim().is_empty() => return Ok(()),
                RawEvent::Text(..) => return Err(ParseError::NotWellFormed("text at stream level".into())),
                RawEvent::ElementFoot(_) => {
                    self.depth = 0;
                    self.ready.push_back(StreamEvent::End);
                    return Ok(());
                }
                RawEvent::ElementHeadOpen(..) => {
                    let inherited = vec![self.content_ns.to_string().into()];
                    self.stanza = Some(Box::new(TreeBuilder::new().with_prefixes_stack(inherited)));
                    self.element_bytes = 0;
                }
                _ => {}
            }
        }
        self.element_bytes += ev.metrics().len();
        if self.element_bytes > self.limits.stanza_bytes_max {
            return Err(ParseError::TooLarge { stanza_bytes_max: self.limits.stanza_bytes_max });
        }
        match ev {
            RawEvent::ElementHeadOpen(..) => {
                self.depth += 1;
                // depth 1 is the stream, so the stanza element is level 1 at depth 2.
                if self.depth - 1 > self.limits.stanza_depth_max {
                    return Err(ParseError::TooDeep { stanza_depth_max: self.limits.stanza_depth_max });
                }
            }
            RawEvent::ElementFoot(_) => self.depth -= 1,
            _ => {}
        }
        let Some(tree) = self.stanza.as_mut() else {
            return Err(ParseError::NotWellFormed("content outside a stanza".into()));
        };
        tree.process_event(ev).map_err(|e| ParseError::NotWellFormed(e.to_string()))?;
        if self.depth == 1 {
            let Some(el) = self.stanza.take().and_then(|t| t.root) else {
                return Err(ParseError::NotWellFormed("a stanza ended without an element".into()));
            };
            self.ready.push_back(StreamEvent::Element(el));
        }
        Ok(())
    }

    /// The `<stream:stream>` start tag, read event by event and resolved by hand: the
    /// stream element is never built into a tree that would live as long as the stream.
    fn on_header_event(&mut self, ev: RawEvent) -> Result<(), ParseError> {
        match ev {
            RawEvent::XmlDeclaration(..) => {}
            RawEvent::ElementHeadOpen(_, (prefix, name)) => {
                self.header = Some(Box::new(HeaderInProgress {
                    prefix: prefix.map(|p| p.to_string()),
                    name: name.to_string(),
                    ..Default::default()
                }));
            }
            RawEvent::Attribute(_, (prefix, name), value) => {
                let h = self.header.as_mut().expect("attributes follow a start tag");
                match (prefix.as_ref().map(|p| p.as_str()), name.as_str()) {
                    (None, "xmlns") => h.ns_decls.push((None, value.to_string())),
                    (Some("xmlns"), p) => h.ns_decls.push((Some(p.to_owned()), value.to_string())),
                    (p, n) => h.attrs.push((p.map(str::to_owned), n.to_owned(), value.to_string())),
                }
            }
            RawEvent::ElementHeadClose(_) => {
                let h = self.header.take().expect("a start tag is open");
                let header = build_header(&h)?;
                self.content_ns = h.ns_decls.iter().find(|(p, _)| p.is_none()).map(|(_, ns)| ns.as_str().into()).unwrap_or_default();
                self.depth = 1;
                self.element_bytes = 0;
                self.ready.push_back(StreamEvent::Header(header));
            }
            RawEvent::Text(..) | RawEvent::ElementFoot(_) => {
                return Err(ParseError::NotWellFormed("expected a stream header".into()));
            }
        }
        Ok(())
    }
}

/// The header as an element without children: name in its resolved namespace, attributes
/// (with `xml:lang` in the XML namespace).
fn build_header(h: &HeaderInProgress) -> Result<Element, ParseError> {
    let lookup = |prefix: &Option<String>| h.ns_decls.iter().find(|(p, _)| p == prefix).map(|(_, ns)| ns.clone());
    let ns = lookup(&h.prefix).ok_or_else(|| ParseError::NotWellFormed("undeclared namespace prefix on the stream".into()))?;
    let mut el = Element::bare(h.name.clone(), ns);
    for (prefix, name, value) in &h.attrs {
        let namespace = match prefix.as_deref() {
            None => rxml::Namespace::NONE,
            Some("xml") => rxml::Namespace::xml().clone(),
            Some(p) => lookup(&Some(p.to_owned()))
                .map(rxml::Namespace::from)
                .ok_or_else(|| ParseError::NotWellFormed(format!("undeclared prefix {p}")))?,
        };
        let name = rxml::NcName::try_from(name.as_str()).map_err(|e| ParseError::NotWellFormed(e.to_string()))?;
        el.attrs_mut().insert(namespace, name, value.clone());
    }
    Ok(el)
}

fn classify(e: rxml::Error) -> ParseError {
    let text = e.to_string();
    match e {
        rxml::Error::RestrictedXml(_) => ParseError::Restricted(text),
        _ => ParseError::NotWellFormed(text),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Limits for a test: the default header bound, and these.
    pub(crate) fn limits(stanza_bytes_max: usize, stanza_depth_max: usize) -> ParserLimits {
        ParserLimits { stream_header_bytes_max: 8192, stanza_bytes_max, stanza_depth_max }
    }

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

    fn events(p: &mut StreamParser) -> Vec<StreamEvent> {
        std::iter::from_fn(|| p.next_event()).collect()
    }

    #[test]
    fn endless_stream_header_is_too_large() {
        let mut p = StreamParser::new(limits(1 << 20, 48));
        let attrs: String = (0..2000).map(|i| format!(" a{i}='x'")).collect();
        let header = format!("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'{attrs}");
        assert_eq!(p.feed(header.as_bytes()), Err(ParseError::HeaderTooLarge { stream_header_bytes_max: 8192 }));
    }

    #[test]
    fn header_stanzas_and_end_byte_by_byte() {
        let mut p = StreamParser::new(limits(4096, 48));
        let doc = format!("{HEADER} <message to='a@b'><body>hi &amp; bye</body></message>\n</stream:stream>");
        for b in doc.as_bytes() {
            p.feed(std::slice::from_ref(b)).unwrap();
        }
        let evs = events(&mut p);
        assert_eq!(evs.len(), 3, "{evs:?}");
        match &evs[0] {
            StreamEvent::Header(h) => {
                assert_eq!(h.ns(), super::super::ns::STREAM);
                assert_eq!(h.attr("to"), Some("localhost"));
            }
            other => panic!("{other:?}"),
        }
        match &evs[1] {
            StreamEvent::Element(m) => {
                assert_eq!(m.name(), "message");
                assert_eq!(m.ns(), "jabber:client");
                assert_eq!(m.get_child("body", "jabber:client").unwrap().text(), "hi & bye");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(evs[2], StreamEvent::End));
    }

    #[test]
    fn oversized_stanza_is_refused_before_it_ends() {
        // rxml hands out text in tokens of at most 8 KiB, so the count (and the memory held
        // for an unfinished stanza) runs at most one token behind the bytes received.
        let mut p = StreamParser::new(limits(100, 48));
        p.feed(HEADER.as_bytes()).unwrap();
        let big = format!("<message><body>{}", "x".repeat(20_000));
        assert_eq!(p.feed(big.as_bytes()), Err(ParseError::TooLarge { stanza_bytes_max: 100 }));
    }

    #[test]
    fn depth_is_refused_at_the_first_element_past_the_limit() {
        let mut p = StreamParser::new(limits(1 << 20, 3));
        p.feed(HEADER.as_bytes()).unwrap();
        p.feed(b"<message><a><b></b></a></message>").unwrap();
        assert_eq!(events(&mut p).len(), 2);
        assert_eq!(p.feed(b"<message><a><b><c>"), Err(ParseError::TooDeep { stanza_depth_max: 3 }));
    }

    #[test]
    fn doctype_is_restricted() {
        let mut p = StreamParser::new(limits(4096, 48));
        let err = p.feed(b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]><x/>").unwrap_err();
        assert!(matches!(err, ParseError::Restricted(_) | ParseError::NotWellFormed(_)), "{err:?}");
    }

    #[test]
    fn garbage_is_not_well_formed() {
        let mut p = StreamParser::new(limits(4096, 48));
        p.feed(HEADER.as_bytes()).unwrap();
        assert!(matches!(p.feed(b"<message><</message>"), Err(ParseError::NotWellFormed(_))));
    }

    #[test]
    fn undeclared_prefix_is_not_well_formed() {
        let mut p = StreamParser::new(limits(4096, 48));
        p.feed(HEADER.as_bytes()).unwrap();
        assert!(p.feed(b"<foo:bar/>").is_err());
    }
}
