//! A data frame's payload from another node: postcard-decoded into a `CoreMsg`
//! (router::envelope), whose stanzas travel as `WireStanza`. What decodes must encode and
//! decode to the same message; a stanza that decodes must be one its receiver can read
//! (the actors call `Stanza::element` on what they are handed).
#![no_main]

use libfuzzer_sys::fuzz_target;
use martlet::router::node_link::{decode, encode};
use martlet::stanza::Stanza;

fuzz_target!(|data: &[u8]| {
    if let Ok(stanza) = postcard::from_bytes::<Stanza>(data) {
        let _ = stanza.element();
    }
    let Ok(msg) = decode(data) else { return };
    let once = encode(&msg);
    let again = decode(&once).expect("what we encode decodes");
    assert_eq!(encode(&again), once);
});
