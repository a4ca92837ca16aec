//! The two halves of a WebSocket session's connection, as the byte stream the rest of
//! loadgen reads and writes (client/stream.rs holds them as its third kind of half):
//! frames in, translated messages out as stream bytes; stream bytes in, cut into elements,
//! sent as masked text frames (RFC 6455 §5.3: every client frame is masked). tungstenite
//! reads and writes the frame headers. What is counted for the process is the wire's
//! bytes, frame headers included: the transport's cost per message is part of the figure.
//!
//! Bounds: one message (`MESSAGE_BYTES_MAX`, whether in one frame or several), and frames
//! written wait for the socket before more is taken (as a TCP write would).

use std::io::{self, Cursor};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use super::stream::{READ, WRITTEN};
use super::ws_framing::{inbound, Cutter, MESSAGE_BYTES_MAX};

/// Wire bytes read per call.
const WIRE_READ_BYTES: usize = 4096;

pub struct WsReader {
    tcp: OwnedReadHalf,
    /// Wire bytes read and not yet a whole frame.
    wire: Vec<u8>,
    /// The text of a message whose frames are still arriving.
    message: Vec<u8>,
    /// Stream bytes of whole messages, from `ready_from` on not yet read.
    ready: Vec<u8>,
    ready_from: usize,
    /// The server sent its Close frame: the stream has ended.
    closed: bool,
}

pub struct WsWriter {
    tcp: OwnedWriteHalf,
    cutter: Cutter,
    /// Frames not yet taken by the socket, from `frames_from` on.
    frames: Vec<u8>,
    frames_from: usize,
    /// Bytes of the caller's write already framed, reported written once the frames are out.
    owed: usize,
}

pub fn halves(tcp: tokio::net::TcpStream, first_bytes: Vec<u8>) -> (WsReader, WsWriter) {
    let (r, w) = tcp.into_split();
    let reader = WsReader { tcp: r, wire: first_bytes, message: Vec::new(), ready: Vec::new(), ready_from: 0, closed: false };
    let writer = WsWriter { tcp: w, cutter: Cutter::default(), frames: Vec::new(), frames_from: 0, owed: 0 };
    (reader, writer)
}

/// What the wire buffer held.
enum Decoded {
    /// A frame, taken.
    Frame,
    /// Not yet a whole frame.
    Partial,
}

impl WsReader {
    /// Takes the first whole frame of `wire`: a message's text goes to `ready` once its
    /// last frame is in.
    fn decode(&mut self) -> io::Result<Decoded> {
        let mut cursor = Cursor::new(&self.wire);
        let Some((header, len)) = FrameHeader::parse(&mut cursor).map_err(|e| invalid(&e.to_string()))? else {
            return Ok(Decoded::Partial);
        };
        if len > (MESSAGE_BYTES_MAX - self.message.len()) as u64 {
            return Err(invalid("a message longer than MESSAGE_BYTES_MAX"));
        }
        let start = cursor.position() as usize;
        let end = start + len as usize;
        if self.wire.len() < end {
            return Ok(Decoded::Partial);
        }
        if header.mask.is_some() {
            return Err(invalid("a masked frame from the server (RFC 6455 §5.1)"));
        }
        match header.opcode {
            OpCode::Data(Data::Text) | OpCode::Data(Data::Continue) => {
                self.message.extend_from_slice(&self.wire[start..end]);
                if header.is_final {
                    let text = std::str::from_utf8(&self.message).map_err(|_| invalid("a text message that is not UTF-8"))?;
                    self.ready.extend_from_slice(inbound(text).as_bytes());
                    self.message.clear();
                }
            }
            OpCode::Control(Control::Close) => self.closed = true,
            // martlet's keepalives are XMPP pings (answered in client/control.rs); it sends
            // no WebSocket pings, and a pong answers none of ours.
            OpCode::Control(Control::Ping) | OpCode::Control(Control::Pong) => {}
            _ => return Err(invalid("a binary or reserved frame (RFC 7395 §3.3.3: text only)")),
        }
        self.wire.drain(..end);
        Ok(Decoded::Frame)
    }
}

impl AsyncRead for WsReader {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready_from < this.ready.len() {
                let n = buf.remaining().min(this.ready.len() - this.ready_from);
                buf.put_slice(&this.ready[this.ready_from..this.ready_from + n]);
                this.ready_from += n;
                if this.ready_from == this.ready.len() {
                    this.ready.clear();
                    this.ready_from = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.closed {
                return Poll::Ready(Ok(()));
            }
            if let Decoded::Frame = this.decode()? {
                continue;
            }
            let mut chunk = [0u8; WIRE_READ_BYTES];
            let mut chunk_buf = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.tcp).poll_read(cx, &mut chunk_buf))?;
            if chunk_buf.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
            READ.fetch_add(chunk_buf.filled().len() as u64, Ordering::Relaxed);
            this.wire.extend_from_slice(chunk_buf.filled());
        }
    }
}

impl WsWriter {
    /// One masked text frame of `message`.
    fn frame(&mut self, message: &str) -> io::Result<()> {
        let mask: [u8; 4] = rand::random();
        let header = FrameHeader { opcode: OpCode::Data(Data::Text), mask: Some(mask), ..FrameHeader::default() };
        header.format(message.len() as u64, &mut self.frames).map_err(|e| invalid(&e.to_string()))?;
        self.frames.extend(message.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        Ok(())
    }

    /// Writes the frames not yet taken by the socket.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.frames_from < self.frames.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.frames[self.frames_from..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            WRITTEN.fetch_add(n as u64, Ordering::Relaxed);
            self.frames_from += n;
        }
        self.frames.clear();
        self.frames_from = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for WsWriter {
    /// Frames the whole of `buf` at once, and reports it written only when the frames are
    /// out: loadgen never flushes, so a write that returned with frames still queued could
    /// leave them there. A caller that was told to wait must then offer the same bytes
    /// again, as `write_all` (loadgen's only way of writing) does.
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.owed == 0 {
            ready!(this.poll_drain(cx))?;
            for message in this.cutter.push(buf)? {
                this.frame(&message)?;
            }
            this.owed = buf.len();
        }
        ready!(this.poll_drain(cx))?;
        Poll::Ready(Ok(std::mem::take(&mut this.owed)))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("WebSocket: {why}"))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A frame as the server sends it: unmasked.
    fn server_frame(opcode: OpCode, is_final: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        FrameHeader { opcode, is_final, ..FrameHeader::default() }.format(payload.len() as u64, &mut out).unwrap();
        out.extend_from_slice(payload);
        out
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        (client, listener.accept().await.unwrap().0)
    }

    #[tokio::test]
    async fn frames_read_as_the_stream_and_writes_go_out_masked_one_element_each() {
        let (client, mut server) = pair().await;
        let open = server_frame(OpCode::Data(Data::Text), true, b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' from='localhost' id='1' version='1.0'/>");
        // The first frame came with the upgrade answer; a message in two frames, a ping.
        let (mut reader, mut writer) = halves(client, open);
        server.write_all(&server_frame(OpCode::Data(Data::Text), false, b"<message><body>a")).await.unwrap();
        server.write_all(&server_frame(OpCode::Control(Control::Ping), true, b"")).await.unwrap();
        server.write_all(&server_frame(OpCode::Data(Data::Continue), true, b"b</body></message>")).await.unwrap();
        server.write_all(&server_frame(OpCode::Data(Data::Text), true, b"<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>")).await.unwrap();
        server.write_all(&server_frame(OpCode::Control(Control::Close), true, b"")).await.unwrap();
        let mut got = String::new();
        reader.read_to_string(&mut got).await.unwrap();
        assert_eq!(
            got,
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' from='localhost' id='1' version='1.0'><message><body>ab</body></message></stream:stream>"
        );

        // An element written in two parts goes out as one message.
        writer.write_all(b"<presence><status>x").await.unwrap();
        writer.write_all(b"</status></presence>").await.unwrap();
        let mut wire = vec![0u8; 64];
        let n = server.read(&mut wire).await.unwrap();
        let mut cursor = Cursor::new(&wire[..n]);
        let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
        let mask = header.mask.expect("a client frame is masked");
        let start = cursor.position() as usize;
        let text: Vec<u8> = wire[start..start + len as usize].iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
        assert_eq!((header.opcode, header.is_final, start + len as usize), (OpCode::Data(Data::Text), true, n));
        assert_eq!(text, b"<presence><status>x</status></presence>");
    }

    #[tokio::test]
    async fn an_oversized_message_ends_the_read() {
        let (client, mut server) = pair().await;
        let (mut reader, _writer) = halves(client, Vec::new());
        let mut header = Vec::new();
        FrameHeader::default().format(MESSAGE_BYTES_MAX as u64 + 1, &mut header).unwrap();
        server.write_all(&header).await.unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(reader.read(&mut buf).await.unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
