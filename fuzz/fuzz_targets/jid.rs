//! RFC 7622 JIDs as the server reads them from stanzas: what parses prints to a JID that
//! parses to the same.
#![no_main]

use jid::Jid;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(jid) = Jid::new(text) else { return };
    let printed = jid.to_string();
    assert_eq!(Jid::new(&printed).as_ref(), Ok(&jid), "{text:?} printed as {printed:?}");
    let _ = jid.to_bare().to_string();
});
