//! RFC 6120 §4 stream parser fed arbitrary bytes in chunks whose sizes come from the input;
//! every element it hands out must survive what a session does with it: seal (stamp
//! from/to, serialise), read back, compare.
#![no_main]

use jid::Jid;
use libfuzzer_sys::fuzz_target;
use martlet::stanza::{Kind, Stanza};
use martlet::xml::stream_parser::{ParserLimits, StreamEvent, StreamParser};
use minidom::Element;

/// Parser limits for the run: small, so the size and depth checks are reached too.
const LIMITS: ParserLimits = ParserLimits { stream_header_bytes_max: 1024, stanza_bytes_max: 4096, stanza_depth_max: 16 };

fuzz_target!(init: martlet_fuzz::tolerate_known_panic(), |data: &[u8]| {
    // The first byte picks the chunk size (1..=64): split points vary with the input.
    let Some((&step, bytes)) = data.split_first() else { return };
    let step = usize::from(step % 64) + 1;
    let mut parser = StreamParser::new(LIMITS);
    for chunk in bytes.chunks(step) {
        if parser.feed(chunk).is_err() {
            return;
        }
        while let Some(event) = parser.next_event() {
            if let StreamEvent::Element(el) = event {
                martlet_fuzz::unless_known_panic(|| round_trip(el));
            }
        }
    }
});

/// As a session does with a stanza (anything else is refused before it is sealed).
fn round_trip(el: Element) {
    let Some(kind) = Kind::of(&el) else { return };
    let (from, to) = (Jid::new("a@localhost/r").unwrap(), Jid::new("b@localhost").unwrap());
    let mut stamped = el.clone();
    martlet::stanza::set_attr(&mut stamped, "from", Some(from.to_string()));
    martlet::stanza::set_attr(&mut stamped, "to", Some(to.to_string()));
    let sealed = Stanza::seal(kind, el, from, to);
    let back: Element = match sealed.xml.parse() {
        Ok(back) => back,
        Err(e) => panic!("sealed stanza does not parse again: {e}\n{}", sealed.xml),
    };
    assert_eq!(back, stamped, "sealed stanza reads back different:\n{}", sealed.xml);
}
