//! Finds load-generator marks (`<body>lg S Q T</body>` in messages, `<status>lg S T</status>`
//! in presence) in a byte stream that arrives in arbitrary chunks, without parsing XML: the
//! load generator must stay cheaper than the server it measures.

/// Longest unfinished tail kept between chunks, in bytes.
const TAIL_BYTES_MAX: usize = 256;

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
fn fields(body: &str) -> Option<(u32, u128)> {
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
    fn attributes_in_either_quote() {
        assert_eq!(attr("<presence from='a@b/c' type=\"subscribe\"", "from"), Some("a@b/c"));
        assert_eq!(attr("<presence from='a@b/c' type=\"subscribe\"", "type"), Some("subscribe"));
        assert_eq!(attr("<presence", "type"), None);
    }
}
