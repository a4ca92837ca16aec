//! Deliberate failures for the tests that prove containment, compiled only with
//! `--features test-hooks` (scripts/test.sh builds that variant as
//! `target/release/martlet-test-hooks`; the binary users run has none of this).
//!
//! A stanza carrying `<panic xmlns='urn:martlet:test-hooks' in='ACTOR'/>` makes that actor's
//! step panic: `session` (the sender's session, on reading it) or `user` (the recipient's
//! UserChannel, on routing it), standing in for any bug a client's input might reach.

/// Panics if `xml` asks `actor` to.
pub fn panic_if_asked(xml: &str, actor: &str) {
    let ask = format!("<panic xmlns='urn:martlet:test-hooks' in='{actor}'/>");
    if xml.contains(&ask) {
        panic!("test hook: the {actor} actor panics as asked");
    }
}
