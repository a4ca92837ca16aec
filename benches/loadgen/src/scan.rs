//! Finds load-generator marks (`<body>lg S Q T</body>` in messages, `<status>lg S T</status>`
//! in presence) in a byte stream that arrives in arbitrary chunks, without parsing XML: the
//! load generator must stay cheaper than the server it measures.

/// Longest unfinished tail kept between chunks, in bytes.
const TAIL_BYTES_MAX: usize = 256;
/// Longest unfinished tag, or text since the last tag, kept between chunks, in bytes.
const TAG_BYTES_MAX: usize = 4096;

/// Picks every tag (`<name ...>`, `</name>`, `<name/>`) out of a byte stream arriving in
/// arbitrary chunks, each with the text just before it, without parsing XML: what a
/// session answers (client/control.rs) and what a room occupant watches for
/// (scenario/room.rs) are in tags and short texts alone.
#[derive(Default)]
pub struct Tags {
    /// From the end of the last complete tag.
    tail: Vec<u8>,
}

impl Tags {
    /// Calls `found(tag, name, text_before)` for every complete tag in `chunk`; `name` of
    /// an end tag starts with '/'.
    pub fn feed(&mut self, chunk: &[u8], mut found: impl FnMut(&str, &str, &str)) {
        self.tail.extend_from_slice(chunk);
        let mut pos = 0;
        while let Some(lt) = self.tail[pos..].iter().position(|&b| b == b'<') {
            let from = pos + lt;
            let Some(len) = self.tail[from..].iter().position(|&b| b == b'>') else { break };
            let end = from + len + 1;
            let text = String::from_utf8_lossy(&self.tail[pos..from]);
            let tag = String::from_utf8_lossy(&self.tail[from..end]);
            let name = tag[1..].split(|c: char| c.is_ascii_whitespace() || c == '>').next().unwrap_or("");
            found(&tag, name.strip_suffix('/').unwrap_or(name), &text);
            pos = end;
        }
        self.tail.drain(..pos);
        // An endless tag or text (not ours to read): dropped rather than kept growing.
        if self.tail.len() > TAG_BYTES_MAX {
            self.tail.clear();
        }
    }
}

/// Scans for one kind of mark: `open`, space-separated fields ending in the send time, `close`.
pub struct MarkScanner {
    open: &'static [u8],
    close: &'static [u8],
    tail: Vec<u8>,
}

pub const BODY: (&[u8], &[u8]) = (b"<body>lg ", b"</body>");
pub const STATUS: (&[u8], &[u8]) = (b"<status>lg ", b"</status>");

impl MarkScanner {
    pub fn new((open, close): (&'static [u8], &'static [u8])) -> Self {
        MarkScanner { open, close, tail: Vec::new() }
    }

    /// Calls `found(sender, send_unix_nanos)` for every complete mark in `chunk`.
    pub fn feed(&mut self, chunk: &[u8], mut found: impl FnMut(u32, u128)) {
        self.tail.extend_from_slice(chunk);
        let mut pos = 0;
        let (open, close) = (self.open, self.close);
        while let Some(start) = find(&self.tail[pos..], open) {
            let body_start = pos + start + open.len();
            let Some(len) = find(&self.tail[body_start..], close) else {
                pos += start;
                break;
            };
            let body = &self.tail[body_start..body_start + len];
            if let Some((sender, nanos)) = std::str::from_utf8(body).ok().and_then(fields) {
                found(sender, nanos);
            }
            pos = body_start + len + close.len();
        }
        // Keep only what may start an unfinished mark.
        let keep_from = if find(&self.tail[pos..], open).is_some() { pos } else { self.tail.len().saturating_sub(open.len()).max(pos) };
        self.tail.drain(..keep_from);
        if self.tail.len() > TAIL_BYTES_MAX && find(&self.tail, open).is_none() {
            self.tail.clear();
        }
    }
}

/// An attribute's value in a start tag, quoted either way.
pub fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    for quote in ['\'', '"'] {
        let key = format!(" {name}={quote}");
        if let Some(i) = tag.find(&key) {
            let rest = &tag[i + key.len()..];
            return rest.find(quote).map(|j| &rest[..j]);
        }
    }
    None
}

/// (sender, send time): the first and the last field of a mark.
pub fn fields(body: &str) -> Option<(u32, u128)> {
    Some((body.split(' ').next()?.parse().ok()?, body.rsplit(' ').next()?.parse().ok()?))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_bodies_split_anywhere() {
        let stream = b"<message from='a'><body>lg 1 2 123</body></message><presence/><message><body>lg 3 4 456</body></message>";
        for split in 0..stream.len() {
            let mut s = MarkScanner::new(BODY);
            let mut got = Vec::new();
            s.feed(&stream[..split], |from, n| got.push((from, n)));
            s.feed(&stream[split..], |from, n| got.push((from, n)));
            assert_eq!(got, vec![(1, 123), (3, 456)], "split at {split}");
        }
    }

    #[test]
    fn tags_and_the_text_before_them_split_anywhere() {
        let stream = b"<message type='groupchat'><body>lg 1 2 3</body></message><r xmlns='urn:xmpp:sm:3'/>";
        let want = vec![
            ("message".to_owned(), String::new()),
            ("body".into(), String::new()),
            ("/body".into(), "lg 1 2 3".into()),
            ("/message".into(), String::new()),
            ("r".into(), String::new()),
        ];
        for split in 0..stream.len() {
            let mut t = Tags::default();
            let mut got = Vec::new();
            t.feed(&stream[..split], |_, name, text| got.push((name.to_owned(), text.to_owned())));
            t.feed(&stream[split..], |_, name, text| got.push((name.to_owned(), text.to_owned())));
            assert_eq!(got, want, "split at {split}");
        }
    }

    #[test]
    fn attributes_in_either_quote() {
        assert_eq!(attr("<presence from='a@b/c' type=\"subscribe\"", "from"), Some("a@b/c"));
        assert_eq!(attr("<presence from='a@b/c' type=\"subscribe\"", "type"), Some("subscribe"));
        assert_eq!(attr("<presence", "type"), None);
    }
}
