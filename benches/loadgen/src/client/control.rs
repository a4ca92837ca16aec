//! What a session answers on its own, whatever the scenario: the server's XEP-0198 ack
//! requests (`<r/>`, answered with `<a h='…'/>`, h = stanzas received since enabling) and
//! XEP-0199 pings (answered with an empty result), as a mobile client would. Start tags are
//! picked out of the byte stream without parsing XML, like the marks in `scan`.

use std::rc::Rc;

use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use super::{Reader, Writer};
use crate::scan::{attr, Tags};

/// Bytes read per call by each session.
const RECV_READ_BYTES: usize = 4096;

#[derive(Default)]
pub struct Control {
    /// Stanzas received (XEP-0198's h, modulo 2^32).
    handled: u32,
    /// The id and sender of the last `<iq type='get'>`, until its child shows what it asks.
    iq_get: Option<(String, String)>,
    tags: Tags,
}

impl Control {
    /// Counts the stanzas in `chunk` and appends to `replies` what the server asked for.
    pub fn feed(&mut self, chunk: &[u8], replies: &mut String) {
        let (handled, iq_get) = (&mut self.handled, &mut self.iq_get);
        self.tags.feed(chunk, |tag, name, _| match name {
            "message" | "presence" => *handled = handled.wrapping_add(1),
            "iq" => {
                *handled = handled.wrapping_add(1);
                *iq_get = match (attr(tag, "type"), attr(tag, "id")) {
                    (Some("get"), Some(id)) => Some((id.to_owned(), attr(tag, "from").unwrap_or("").to_owned())),
                    _ => None,
                };
            }
            "ping" if tag.contains("urn:xmpp:ping") => {
                if let Some((id, from)) = iq_get.take() {
                    replies.push_str(&format!("<iq type='result' id='{id}' to='{from}'/>"));
                }
            }
            "r" if tag.contains("urn:xmpp:sm:3") => {
                replies.push_str(&format!("<a xmlns='urn:xmpp:sm:3' h='{}'/>", handled));
            }
            _ => {}
        });
    }
}

/// Reads a session until it ends: `on_chunk` sees every chunk, with when it arrived (Unix
/// nanoseconds, `Reader::read_stamped`), and may add replies; the session's own answers
/// (acks, pongs) go out with them.
pub fn spawn_receiver(mut reader: Reader, writer: Rc<Mutex<Writer>>, mut on_chunk: impl FnMut(&[u8], u128, &mut String) + 'static) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_local(async move {
        let mut buf = vec![0u8; RECV_READ_BYTES];
        let mut control = Control::default();
        let mut replies = String::new();
        while let Ok((n, arrived)) = reader.read_stamped(&mut buf).await {
            if n == 0 {
                break;
            }
            on_chunk(&buf[..n], arrived, &mut replies);
            control.feed(&buf[..n], &mut replies);
            if !replies.is_empty() {
                let _ = writer.lock().await.write_all(replies.as_bytes()).await;
                replies.clear();
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_acks_and_pings_split_anywhere() {
        let stream = b"<message from='a' to='b'><body>x</body></message><r xmlns='urn:xmpp:sm:3'/><presence/><iq type='get' id='p1' from='localhost'><ping xmlns='urn:xmpp:ping'/></iq><r xmlns='urn:xmpp:sm:3'/>";
        for split in 0..stream.len() {
            let mut c = Control::default();
            let mut replies = String::new();
            c.feed(&stream[..split], &mut replies);
            c.feed(&stream[split..], &mut replies);
            assert_eq!(
                replies,
                "<a xmlns='urn:xmpp:sm:3' h='1'/><iq type='result' id='p1' to='localhost'/><a xmlns='urn:xmpp:sm:3' h='3'/>",
                "split at {split}"
            );
        }
    }
}
