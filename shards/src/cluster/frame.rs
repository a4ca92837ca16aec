//! The mesh's unit on the wire: an 8-byte header, then the payload.
//!
//! ```text
//! | version u8 | kind u8 | core u16 BE | payload length u32 BE | payload ... |
//! ```
//! The version is checked on every frame, so a node of an incompatible build is cut off
//! at its first frame instead of being misread; the length is checked against the
//! configured maximum before any payload is buffered.

use std::io::{self, Read};

/// Bumped whenever a frame's payload changes shape, the application's included: nodes of
/// builds that would misread each other are refused rather than left to garble messages.
/// 2: a session re-registering after a ring change carries its XEP-0186 invisibility.
/// 3: heartbeats vouch for the members their sender hears; relayed frames; and the
///    application's `CoreMsg::Reregister`.
/// 4: a heartbeat whose gossip is unchanged since the last on its connection carries only
///    `connection::GOSSIP_UNCHANGED`.
pub const PROTOCOL_VERSION: u8 = 4;
pub const HEADER_BYTES: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Handshake step (see `handshake`); only before the connection is authenticated.
    Hello = 0,
    /// Application payload for core `core`.
    Data = 1,
    /// Liveness and gossip: who the sender knows, and whom it hears (see `membership`).
    Heartbeat = 2,
    /// A `Data` frame for another node, which this one is to pass on: the payload starts
    /// with that node's id (u32 BE). For a node the sender cannot reach itself.
    Relay = 3,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        match b {
            0 => Some(Kind::Hello),
            1 => Some(Kind::Data),
            2 => Some(Kind::Heartbeat),
            3 => Some(Kind::Relay),
            _ => None,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub core: u16,
    pub payload: Vec<u8>,
}

/// Header and payload in one buffer, ready to queue for a writer.
pub fn encode(kind: Kind, core: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.push(PROTOCOL_VERSION);
    out.push(kind as u8);
    out.extend_from_slice(&core.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads one frame; `InvalidData` for another version, an unknown kind or a payload over
/// `payload_bytes_max` (the caller closes the connection: the stream is out of step).
pub fn read(r: &mut impl Read, payload_bytes_max: usize) -> io::Result<Frame> {
    let mut header = [0u8; HEADER_BYTES];
    r.read_exact(&mut header)?;
    if header[0] != PROTOCOL_VERSION {
        return Err(invalid(format!("mesh protocol version {}; this build speaks {PROTOCOL_VERSION}", header[0])));
    }
    let kind = Kind::from_u8(header[1]).ok_or_else(|| invalid(format!("unknown frame kind {}", header[1])))?;
    let core = u16::from_be_bytes([header[2], header[3]]);
    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if len > payload_bytes_max {
        return Err(invalid(format!("frame of {len} bytes; the limit is {payload_bytes_max}")));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Frame { kind, core, payload })
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out its bytes a few at a time, as a socket may.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn round_trip_whatever_the_read_sizes() {
        let mut wire = encode(Kind::Data, 3, b"hello");
        wire.extend(encode(Kind::Heartbeat, 0, b""));
        for step in 1..=wire.len() {
            let mut r = Trickle(&wire, step);
            assert_eq!(read(&mut r, 64).unwrap(), Frame { kind: Kind::Data, core: 3, payload: b"hello".to_vec() });
            assert_eq!(read(&mut r, 64).unwrap(), Frame { kind: Kind::Heartbeat, core: 0, payload: vec![] });
        }
    }

    #[test]
    fn oversize_wrong_version_and_unknown_kind_are_refused() {
        let big = encode(Kind::Data, 0, &[0; 65]);
        assert!(read(&mut &big[..], 64).unwrap_err().to_string().contains("limit is 64"));
        let mut old = encode(Kind::Data, 0, b"x");
        old[0] = 0;
        assert!(read(&mut &old[..], 64).unwrap_err().to_string().contains("version 0"));
        let mut odd = encode(Kind::Data, 0, b"x");
        odd[1] = 9;
        assert!(read(&mut &odd[..], 64).unwrap_err().to_string().contains("kind 9"));
    }

    #[test]
    fn a_cut_stream_is_an_error_not_a_frame() {
        let wire = encode(Kind::Data, 0, b"hello");
        assert_eq!(read(&mut &wire[..6], 64).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(read(&mut &wire[..10], 64).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
