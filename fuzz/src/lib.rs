//! What the targets share: the panic known and being fixed elsewhere, which a run may be
//! told to step over (`MARTLET_FUZZ_KNOWN_PANIC`: its messages, `|`-separated; see
//! scripts/fuzz.sh) so that it goes on looking for the unknown ones.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the panic hook when the panic under way is the known one.
static KNOWN: AtomicBool = AtomicBool::new(false);

fn known_message() -> Option<String> {
    std::env::var("MARTLET_FUZZ_KNOWN_PANIC").ok().filter(|m| !m.is_empty())
}

/// For a target's `init:`, after libFuzzer installed its hook (which aborts on any panic):
/// a panic whose message holds one of `MARTLET_FUZZ_KNOWN_PANIC`'s is let unwind instead.
pub fn tolerate_known_panic() {
    let Some(known) = known_message() else { return };
    let abort = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        let message = info.payload_as_str().unwrap_or_default();
        if known.split('|').any(|k| message.contains(k)) {
            KNOWN.store(true, Ordering::Relaxed);
        } else {
            abort(info);
        }
    }));
}

/// Runs `f`; a known panic is counted on stderr, once, and the input is let pass.
pub fn unless_known_panic(f: impl FnOnce()) {
    if panic::catch_unwind(AssertUnwindSafe(f)).is_err() && KNOWN.swap(false, Ordering::Relaxed) {
        static REPORTED: AtomicBool = AtomicBool::new(false);
        if !REPORTED.swap(true, Ordering::Relaxed) {
            eprintln!("martlet-fuzz: known panic stepped over (MARTLET_FUZZ_KNOWN_PANIC); later ones silently");
        }
    }
}
