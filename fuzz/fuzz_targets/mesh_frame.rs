//! The cluster mesh's wire from an unauthenticated peer: frames (shards::cluster::frame)
//! and the handshake's hellos (shards::cluster::handshake), answered as a listener does.
#![no_main]

use std::io::{self, Read, Write};

use libfuzzer_sys::fuzz_target;
use shards::cluster::frame;
use shards::cluster::handshake::{self, Identity};

/// A peer that says `data` and hears nothing.
struct Peer<'a>(&'a [u8]);

impl Read for Peer<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Peer<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    // Frames one after another, as a connection's reader takes them; each read frame
    // encodes back to the bytes it came from.
    let mut rest = data;
    while let Ok(f) = frame::read(&mut rest, 1024) {
        let consumed = data.len() - rest.len();
        let wire = frame::encode(f.kind, f.core, &f.payload);
        assert_eq!(wire[..], data[consumed - wire.len()..consumed]);
    }
    let me = Identity { name: "fuzz".into(), addr: "127.0.0.1:5270".parse().unwrap(), incarnation: 1 };
    let _ = handshake::respond(&mut Peer(data), b"secret", &me, b"");
    let _ = handshake::initiate(&mut Peer(data), b"secret", &me, b"");
});
