//! RFC 7395 §3.3: how an XMPP stream is framed over WebSocket, as a translation to and from
//! the byte stream the rest of the server speaks. Each WebSocket message holds one complete
//! element: `<open/>` stands for the stream header, `<close/>` for its end, and
//! `stream:features` and `stream:error` declare their prefix themselves.
//!
//! Inbound, a client's message becomes what a TCP client would have sent. Outbound, the
//! server's writes (several top-level elements at once, or part of one) are cut into whole
//! elements, each translated and sent as one message. The cutting reads only what martlet
//! itself serialised (`crate::xml::write`), which escapes `<` and `>` in text and attribute
//! values: a `<` always starts a tag and a `>` always ends one.

use minidom::Element;

use crate::xml::ns;

pub const FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";

/// What a client's message stands for in the byte stream.
pub fn inbound(message: &str) -> Result<String, &'static str> {
    let text = message.trim();
    if text.starts_with("<open") || text.starts_with("<close") {
        let el: Element = text.parse().map_err(|_| "an <open/> or <close/> that is not well-formed")?;
        if el.ns() != FRAMING {
            return Err("<open/> and <close/> are in urn:ietf:params:xml:ns:xmpp-framing");
        }
        if el.name() == "close" {
            return Ok("</stream:stream>".into());
        }
        return Ok(stream_header(["to", "from", "version", "id"].into_iter().filter_map(|name| Some((name, el.attr(name)?)))));
    }
    Ok(text.to_owned())
}

/// The stream header a TCP client would have sent, with these attributes: what a
/// WebSocket `<open/>` or a XEP-0206 session start or restart stands for.
pub fn stream_header<'a>(attrs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut header = String::from("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'");
    for (name, value) in attrs {
        header.push_str(&format!(" {name}='{}'", crate::xml::write::escape_attr(value)));
    }
    header.push('>');
    header
}

/// Cuts the server's outbound bytes into whole elements, translated for WebSocket.
#[derive(Default)]
pub struct Outbound {
    units: Units,
}

impl Outbound {
    /// Takes `bytes` written by the server; returns the messages now complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.units.push(bytes).iter().filter_map(|unit| outbound(unit)).collect()
    }
}

/// Cuts the server's outbound bytes into whole units, untranslated: for WebSocket here,
/// for XEP-0206 BOSH response bodies in `super::bosh`.
#[derive(Default)]
pub struct Units {
    pending: String,
}

impl Units {
    /// Takes `bytes` written by the server; returns the units now complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.push_str(&String::from_utf8_lossy(bytes));
        let mut units = Vec::new();
        loop {
            let rest = self.pending.trim_start();
            let skipped = self.pending.len() - rest.len();
            let Some(len) = unit_len(rest) else {
                self.pending.drain(..skipped);
                if self.pending.is_empty() {
                    // Given back, as the WebSocket's own buffers are: an idle session keeps none.
                    self.pending = String::new();
                }
                return units;
            };
            units.push(rest[..len].to_owned());
            self.pending.drain(..skipped + len);
        }
    }
}

/// The bytes of the first whole unit of `text` (a declaration, a stream header or end, or
/// an element), `None` until it is all there.
fn unit_len(text: &str) -> Option<usize> {
    if text.is_empty() {
        return None;
    }
    if text.starts_with("<?") {
        return text.find("?>").map(|i| i + 2);
    }
    if text.starts_with("<stream:stream") || text.starts_with("</stream:stream") {
        return text.find('>').map(|i| i + 1);
    }
    let mut depth = 0usize;
    let mut at = 0;
    while let Some(open) = text[at..].find('<') {
        let start = at + open;
        let end = start + text[start..].find('>')?;
        let tag = &text[start..=end];
        if tag.starts_with("</") {
            depth = depth.saturating_sub(1);
        } else if !tag.ends_with("/>") {
            depth += 1;
        }
        at = end + 1;
        if depth == 0 {
            return Some(at);
        }
    }
    None
}

/// One unit as a WebSocket message; `None` for what has no place there (the declaration).
fn outbound(unit: &str) -> Option<String> {
    if unit.starts_with("<?") {
        return None;
    }
    if unit.starts_with("</stream:stream") {
        return Some(format!("<close xmlns='{FRAMING}'/>"));
    }
    if let Some(attrs) = unit.strip_prefix("<stream:stream") {
        // The header's own attributes, less its namespace declarations. Values never hold
        // a quote (written as `&#39;`), so quotes split names from values.
        let mut kept = String::new();
        let mut parts = attrs.trim_end_matches('>').split('\'');
        while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
            let name = name.trim().trim_end_matches('=').trim();
            if !name.is_empty() && !name.starts_with("xmlns") {
                kept.push_str(&format!(" {name}='{value}'"));
            }
        }
        return Some(format!("<open xmlns='{FRAMING}'{kept}/>"));
    }
    for prefixed in ["<stream:features", "<stream:error"] {
        if let Some(rest) = unit.strip_prefix(prefixed) {
            return Some(format!("{prefixed} xmlns:stream='{}'{rest}", ns::STREAM));
        }
    }
    Some(unit.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_and_close_stand_for_the_stream_header_and_end() {
        let header = inbound("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>").unwrap();
        assert!(header.starts_with("<stream:stream xmlns='jabber:client'") && header.contains(" to='localhost'") && header.ends_with('>'));
        assert_eq!(inbound("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>").unwrap(), "</stream:stream>");
        assert!(inbound("<open xmlns='jabber:client'/>").is_err());
        let stanza = "<message xmlns='jabber:client' to='a@b'><body>hi</body></message>";
        assert_eq!(inbound(stanza).unwrap(), stanza);
    }

    #[test]
    fn the_servers_writes_are_cut_into_whole_elements() {
        let mut out = Outbound::default();
        let header = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' from='localhost' id='s1' version='1.0' xml:lang='en'>";
        let msgs = out.push(format!("{header}<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>").as_bytes());
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert_eq!(msgs[0], "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' from='localhost' id='s1' version='1.0' xml:lang='en'/>");
        assert!(msgs[1].starts_with("<stream:features xmlns:stream='http://etherx.jabber.org/streams'>"), "{}", msgs[1]);
        // Halves of an element wait for the rest; two in one write are two messages.
        assert!(out.push(b"<message xmlns='jabber:client'><body>a &gt; b</bo").is_empty());
        let msgs = out.push(b"dy></message> <presence xmlns='jabber:client'/></stream:stream>");
        assert_eq!(msgs, ["<message xmlns='jabber:client'><body>a &gt; b</body></message>", "<presence xmlns='jabber:client'/>", "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"]);
    }
}
