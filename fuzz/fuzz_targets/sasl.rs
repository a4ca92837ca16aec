//! RFC 6120 §6 / XEP-0388 / XEP-0484: what a client sends to log in. The input is a SASL2
//! `<authenticate/>` element, then a NUL, then a SCRAM client-final message (base64); the
//! element's initial response goes through PLAIN, SCRAM (scram-rs) and FAST's token proof.
#![no_main]

use libfuzzer_sys::fuzz_target;
use martlet::xml::stream_parser::{ParserLimits, StreamEvent, StreamParser};

const HEADER: &[u8] = b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

fuzz_target!(|data: &[u8]| {
    let (element, last) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &b""[..]),
    };
    let Ok(last) = std::str::from_utf8(last) else { return };
    // Parsed as a session parses it, so the element is what the code really gets.
    let defaults = martlet::config::Limits::default();
    let limits = ParserLimits { stream_header_bytes_max: defaults.stream_header_bytes_max, stanza_bytes_max: 1 << 16, stanza_depth_max: defaults.stanza_depth_max };
    let mut parser = StreamParser::new(limits);
    if parser.feed(HEADER).is_err() || parser.feed(element).is_err() {
        return;
    }
    while let Some(event) = parser.next_event() {
        if let StreamEvent::Element(el) = event {
            martlet::c2s::sasl2::fuzzing::authenticate(&el, last);
        }
    }
});
