//! RFC 7622 JIDs as the server reads them from stanzas (`martlet::stanza::stable_jid`): what
//! it accepts prints to a JID that it accepts again, unchanged. (`jid::Jid::new` alone does
//! not always hold to that: see `fuzz/corpus/jid/unstable-final-sigma`.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use martlet::stanza::stable_jid;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Some(jid) = stable_jid(text) else { return };
    let printed = jid.to_string();
    assert_eq!(stable_jid(&printed).as_ref(), Some(&jid), "{text:?} printed as {printed:?}");
    let _ = jid.to_bare().to_string();
});
