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
}

pub struct StreamParser {
    raw: RawParser,
    tree: TreeBuilder,
    /// Bytes of the top-level element being read, counted from its first byte.
    element_bytes: usize,
    stanza_bytes_max: usize,
    /// Top-level elements completed but not yet handed out.
    ready: std::collections::VecDeque<StreamEvent>,
}

impl StreamParser {
    pub fn new(stanza_bytes_max: usize) -> Self {
        StreamParser {
            raw: RawParser::new(),
            tree: TreeBuilder::new(),
            element_bytes: 0,
            stanza_bytes_max,
            ready: Default::default(),
        }
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
    }

    fn on_event(&mut self, ev: RawEvent) -> Result<(), ParseError> {
        let depth = self.tree.depth();
        let bytes = ev.metrics().len();
        let closes_head = matches!(ev, RawEvent::ElementHeadClose(_));
        let is_foot = matches!(ev, RawEvent::ElementFoot(_));
        // Whitespace between stanzas is a keepalive (RFC 6120 §4.6.1): never kept.
        if depth == 1 {
            if let RawEvent::Text(_, ref text) = ev {
                if text.as_str().trim().is_empty() {
                    return Ok(());
                }
                return Err(ParseError::NotWellFormed("text at stream level".into()));
            }
        }
        if depth >= 1 {
            self.element_bytes += bytes;
            if self.element_bytes > self.stanza_bytes_max {
                return Err(ParseError::TooLarge { stanza_bytes_max: self.stanza_bytes_max });
            }
        }
        self.tree
            .process_event(ev)
            .map_err(|e| ParseError::NotWellFormed(e.to_string()))?;
        if depth == 0 && closes_head {
            let header = self.tree.top().cloned().expect("the stream element was just opened");
            self.ready.push_back(StreamEvent::Header(header));
        } else if depth == 2 && is_foot {
            // A top-level element just closed: detach it from the stream element.
            let el = self.tree.unshift_child().expect("the closed element is the stream's child");
            self.ready.push_back(StreamEvent::Element(el));
            self.element_bytes = 0;
        } else if depth == 1 && is_foot {
            self.ready.push_back(StreamEvent::End);
        }
        Ok(())
    }
}

fn classify(e: rxml::Error) -> ParseError {
    let text = e.to_string();
    match e {
        rxml::Error::RestrictedXml(_) => ParseError::Restricted(text),
        _ => ParseError::NotWellFormed(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

    fn events(p: &mut StreamParser) -> Vec<StreamEvent> {
        std::iter::from_fn(|| p.next_event()).collect()
    }

    #[test]
    fn header_stanzas_and_end_byte_by_byte() {
        let mut p = StreamParser::new(4096);
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
        let mut p = StreamParser::new(100);
        p.feed(HEADER.as_bytes()).unwrap();
        let big = format!("<message><body>{}", "x".repeat(20_000));
        assert_eq!(p.feed(big.as_bytes()), Err(ParseError::TooLarge { stanza_bytes_max: 100 }));
    }

    #[test]
    fn doctype_is_restricted() {
        let mut p = StreamParser::new(4096);
        let err = p.feed(b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]><x/>").unwrap_err();
        assert!(matches!(err, ParseError::Restricted(_) | ParseError::NotWellFormed(_)), "{err:?}");
    }

    #[test]
    fn garbage_is_not_well_formed() {
        let mut p = StreamParser::new(4096);
        p.feed(HEADER.as_bytes()).unwrap();
        assert!(matches!(p.feed(b"<message><</message>"), Err(ParseError::NotWellFormed(_))));
    }

    #[test]
    fn undeclared_prefix_is_not_well_formed() {
        let mut p = StreamParser::new(4096);
        p.feed(HEADER.as_bytes()).unwrap();
        assert!(p.feed(b"<foo:bar/>").is_err());
    }
}
