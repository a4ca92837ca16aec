//! Finds load-generator bodies (`<body>lg S Q T</body>`) in a byte stream that arrives in
//! arbitrary chunks, without parsing XML: the load generator must stay cheaper than the
//! server it measures.

const OPEN: &[u8] = b"<body>lg ";
const CLOSE: &[u8] = b"</body>";
/// Longest unfinished tail kept between chunks, in bytes.
const TAIL_BYTES_MAX: usize = 256;

#[derive(Default)]
pub struct BodyScanner {
    tail: Vec<u8>,
}

impl BodyScanner {
    /// Calls `found(send_unix_nanos)` for every complete body in `chunk`.
    pub fn feed(&mut self, chunk: &[u8], mut found: impl FnMut(u128)) {
        self.tail.extend_from_slice(chunk);
        let mut pos = 0;
        while let Some(start) = find(&self.tail[pos..], OPEN) {
            let body_start = pos + start + OPEN.len();
            let Some(len) = find(&self.tail[body_start..], CLOSE) else {
                pos += start;
                break;
            };
            let body = &self.tail[body_start..body_start + len];
            if let Some(nanos) = std::str::from_utf8(body).ok().and_then(|b| b.rsplit(' ').next()?.parse().ok()) {
                found(nanos);
            }
            pos = body_start + len + CLOSE.len();
        }
        // Keep only what may start an unfinished body.
        let keep_from = if find(&self.tail[pos..], OPEN).is_some() { pos } else { self.tail.len().saturating_sub(OPEN.len()).max(pos) };
        self.tail.drain(..keep_from);
        if self.tail.len() > TAIL_BYTES_MAX && find(&self.tail, OPEN).is_none() {
            self.tail.clear();
        }
    }
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
            let mut s = BodyScanner::default();
            let mut got = Vec::new();
            s.feed(&stream[..split], |n| got.push(n));
            s.feed(&stream[split..], |n| got.push(n));
            assert_eq!(got, vec![123, 456], "split at {split}");
        }
    }
}
