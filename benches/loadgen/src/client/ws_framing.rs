//! RFC 7395 §3.3 from the client's side: the rest of loadgen reads and writes an ordinary
//! XMPP byte stream, and this translates it to and from WebSocket messages, one element
//! each, `<open/>` standing for the stream header and `<close/>` for its end. The server
//! does the mirror image (martlet's src/c2s/ws_framing.rs); this crate has its own.
//!
//! Outbound, the cutting reads only what loadgen itself wrote: its stanzas escape `<` and
//! `>` in text and attribute values, so a `<` always starts a tag and a `>` always ends one.

use std::io;

use crate::scan::attr;

pub const FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
/// Largest WebSocket message taken or sent, in bytes: martlet's default `stanza_bytes_max`
/// (256 KiB), which bounds what it sends, with room for the framing.
pub const MESSAGE_BYTES_MAX: usize = 256 * 1024 + 1024;

/// Cuts the bytes loadgen writes into whole elements, each one WebSocket message.
#[derive(Default)]
pub struct Cutter {
    /// Written and not yet part of a whole element.
    pending: Vec<u8>,
    /// Bytes of `pending` already looked at.
    scanned: usize,
    /// Where the tag being read starts, once its `<` is in.
    tag_start: Option<usize>,
    /// Where the element being read starts.
    element_start: usize,
    /// Elements open in the one being read.
    depth: usize,
}

impl Cutter {
    /// Takes `bytes` as written; returns the messages now whole, translated.
    pub fn push(&mut self, bytes: &[u8]) -> io::Result<Vec<String>> {
        self.pending.extend_from_slice(bytes);
        let mut messages = Vec::new();
        let mut done = 0;
        for i in self.scanned..self.pending.len() {
            match self.pending[i] {
                b'<' if self.tag_start.is_none() => {
                    self.tag_start = Some(i);
                    if self.depth == 0 {
                        self.element_start = i;
                    }
                }
                b'>' => {
                    let Some(start) = self.tag_start.take() else { continue };
                    if let Some(message) = self.close_tag(start, i) {
                        messages.extend(message);
                        done = i + 1;
                    }
                }
                _ => {}
            }
        }
        self.pending.drain(..done);
        self.scanned = self.pending.len();
        self.element_start = self.element_start.saturating_sub(done);
        self.tag_start = self.tag_start.map(|s| s - done);
        if self.pending.len() > MESSAGE_BYTES_MAX {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "an element longer than a WebSocket message may be"));
        }
        Ok(messages)
    }

    /// Accounts for the tag at `start..=end` of `pending`: `Some` once a unit is whole (with
    /// its message, or none for the XML declaration, which has no place on WebSocket).
    fn close_tag(&mut self, start: usize, end: usize) -> Option<Option<String>> {
        let tag = &self.pending[start..=end];
        if tag.starts_with(b"<?") {
            return Some(None);
        }
        if tag.starts_with(b"<stream:stream") {
            let tag = String::from_utf8_lossy(tag);
            let mut open = format!("<open xmlns='{FRAMING}'");
            for name in ["to", "from", "version"] {
                if let Some(value) = attr(&tag, name) {
                    open.push_str(&format!(" {name}='{value}'"));
                }
            }
            return Some(Some(open + "/>"));
        }
        if tag.starts_with(b"</stream:stream") {
            return Some(Some(format!("<close xmlns='{FRAMING}'/>")));
        }
        if tag.starts_with(b"</") {
            self.depth = self.depth.saturating_sub(1);
        } else if !tag.ends_with(b"/>") {
            self.depth += 1;
        }
        if self.depth > 0 {
            return None;
        }
        Some(Some(String::from_utf8_lossy(&self.pending[self.element_start..=end]).into_owned()))
    }
}

/// What the server's message stands for in the byte stream loadgen reads.
pub fn inbound(message: &str) -> String {
    let text = message.trim();
    if text.starts_with("<close") {
        return "</stream:stream>".into();
    }
    if !text.starts_with("<open") {
        return text.to_owned();
    }
    let mut header = String::from("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'");
    for name in ["from", "id", "version"] {
        if let Some(value) = attr(text, name) {
            header.push_str(&format!(" {name}='{value}'"));
        }
    }
    header + ">"
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRITTEN: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'><auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AHU=</auth><message to='a@b' type='chat'><body>lg 1 2 3</body></message><presence/></stream:stream>";

    #[test]
    fn cuts_written_bytes_into_messages_however_split() {
        let want = vec![
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>".to_owned(),
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AHU=</auth>".to_owned(),
            "<message to='a@b' type='chat'><body>lg 1 2 3</body></message>".to_owned(),
            "<presence/>".to_owned(),
            "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>".to_owned(),
        ];
        for split in 0..WRITTEN.len() {
            let mut cutter = Cutter::default();
            let mut got = cutter.push(&WRITTEN.as_bytes()[..split]).unwrap();
            got.extend(cutter.push(&WRITTEN.as_bytes()[split..]).unwrap());
            assert_eq!(got, want, "split at {split}");
        }
    }

    #[test]
    fn an_endless_element_is_refused() {
        let mut cutter = Cutter::default();
        cutter.push(b"<message><body>").unwrap();
        assert!(cutter.push(&vec![b'x'; MESSAGE_BYTES_MAX]).is_err());
    }

    #[test]
    fn open_and_close_read_as_the_stream_header_and_end() {
        let header = inbound("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' from='localhost' id='s1' version='1.0'/>");
        assert_eq!(header, "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' from='localhost' id='s1' version='1.0'>");
        assert_eq!(inbound("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"), "</stream:stream>");
        assert_eq!(inbound("<message><body>x</body></message>"), "<message><body>x</body></message>");
    }
}
