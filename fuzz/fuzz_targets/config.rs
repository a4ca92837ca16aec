//! The operator's TOML (src/config.rs): any text is a config or an error naming the key,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = martlet::config::Config::parse(text);
});
