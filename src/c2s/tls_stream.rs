//! TLS over a glommio TCP stream, with rustls's unbuffered connection (issue 13: memory
//! per idle session).
//!
//! rustls's buffered `ServerConnection` (what futures-rustls wraps) owns a deframer buffer
//! that never shrinks below 4 KiB once a record has been read, so every idle TLS session
//! held 4 KiB plus its allocator's share for as long as it lived. Here the buffers are
//! ours, and each is given back the moment it is empty: an idle TLS session holds rustls's
//! state (keys, the traffic state machine) and no buffer. glommio's TCP reads are
//! readiness-based (the buffer is only lent for the `recv` itself), so a socket read goes
//! into the stack and only the bytes that arrived are copied to the heap.
//!
//! The costs: decrypted bytes are copied once more (rustls hands a record's plaintext as a
//! slice of its own), and a busy stream allocates its buffers per read and per flush
//! instead of keeping them; both are small next to the record's AES-GCM.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::ServerConfig;

/// Bytes taken from the socket per read: rustls's own read size. On the stack, so a read
/// that finds nothing holds no heap.
const SOCKET_READ_BYTES: usize = 4096;
/// Received bytes held before they make a complete message: a handshake message may span
/// records up to 64 KiB (rustls's own limit for its buffered connection), plus one record
/// in flight behind it (16 KiB of payload and 2 KiB of expansion, 5 B of header).
const INCOMING_BYTES_MAX: usize = 64 * 1024 + 18 * 1024 + 5;
/// Largest plaintext one TLS record carries (RFC 8446 §5.1).
const RECORD_PAYLOAD_BYTES_MAX: usize = 16 * 1024;
/// Plaintext encrypted per write call: one full record, so a long write is cut into
/// records as it goes rather than encrypted whole into one buffer.
const WRITE_CHUNK_BYTES: usize = RECORD_PAYLOAD_BYTES_MAX;
/// Encrypted bytes waiting for the socket past which a write waits for it to drain (the
/// backpressure a plain TCP write gets from the kernel).
const OUTGOING_BYTES_HIGH: usize = 64 * 1024;
/// Record framing a TLS record adds to its payload at most (header, content type, AEAD
/// tag, TLS 1.2 explicit nonce): the first guess of the room an encryption needs.
const RECORD_OVERHEAD_BYTES: usize = 64;
/// rustls messages (an alert after a failure) collected before giving up on the rest.
const ALERT_MESSAGES_MAX: usize = 4;

pub struct TlsStream {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// Received TLS bytes not yet processed: a partial record, or a handshake message
    /// still arriving. No capacity while empty.
    incoming: Vec<u8>,
    /// Decrypted bytes the reader has not taken; `plain_taken` of them it has.
    plaintext: Vec<u8>,
    plain_taken: usize,
    /// Encrypted bytes the socket has not taken; `sent` of them it has.
    outgoing: Vec<u8>,
    sent: usize,
    /// The peer sent close_notify: reads end once `plaintext` is drained.
    peer_closed: bool,
    /// Our close_notify is queued (it is sent once).
    close_queued: bool,
}

/// Where processing stopped.
enum Processed {
    /// Waiting for more bytes from the peer; `wrote` says whether the plaintext given was
    /// encrypted (the handshake must be over for that).
    Open { wrote: bool },
    /// Both sides have closed.
    Closed,
}

fn tls_error(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Appends what `encode` writes to `out`, growing `out` to the size rustls asks for.
/// `guess` is the room tried first.
fn append(out: &mut Vec<u8>, guess: usize, mut encode: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>) -> io::Result<()> {
    let start = out.len();
    let mut room = guess;
    // At most twice: rustls names the exact size when the first guess is short.
    for _ in 0..2 {
        out.resize(start + room, 0);
        match encode(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(Some(required)) if required > room => room = required,
            Err(_) => break,
        }
    }
    out.truncate(start);
    Err(tls_error("rustls could not encode a record"))
}

/// The room rustls asks for when an encoding did not fit, for `append`.
fn encode_room(e: EncodeError) -> Option<usize> {
    match e {
        EncodeError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
    }
}

/// The room rustls asks for when an encryption did not fit, for `append`.
fn encrypt_room(e: EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
    }
}

impl TlsStream {
    /// The server's side of a TLS handshake on `tcp`. An end of stream before the
    /// handshake is over is `UnexpectedEof` (a port probe, for the caller to ignore).
    pub async fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<TlsStream> {
        let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut stream = TlsStream {
            tcp,
            conn,
            incoming: Vec::new(),
            plaintext: Vec::new(),
            plain_taken: 0,
            outgoing: Vec::new(),
            sent: 0,
            peer_closed: false,
            close_queued: false,
        };
        futures_lite::future::poll_fn(|cx| stream.poll_handshake(cx)).await?;
        Ok(stream)
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            // Our flight goes before we wait for the client's answer to it.
            if let Err(e) = std::task::ready!(self.poll_flush_out(cx)) {
                return Poll::Ready(Err(e));
            }
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if self.peer_closed {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            match std::task::ready!(self.poll_read_socket(cx)) {
                Ok(true) => {}
                Ok(false) => {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed during the TLS handshake")));
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Ready when a read would not wait on the socket: decrypted bytes, the peer's close or
    /// records of ours to send are pending, or the socket has bytes.
    pub fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.plain_taken < self.plaintext.len() || self.peer_closed || self.sent < self.outgoing.len() {
            return Poll::Ready(Ok(()));
        }
        self.tcp.poll_readable(cx)
    }

    /// Reads what the socket has into `incoming` and processes it. `Ok(false)` at the end
    /// of the TCP stream.
    fn poll_read_socket(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let mut chunk = [0u8; SOCKET_READ_BYTES];
        let n = match std::task::ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut chunk)) {
            Ok(0) => return Poll::Ready(Ok(false)),
            Ok(n) => n,
            Err(e) => return Poll::Ready(Err(e)),
        };
        if self.incoming.len() + n > INCOMING_BYTES_MAX {
            return Poll::Ready(Err(tls_error(format!("TLS message larger than {INCOMING_BYTES_MAX} bytes"))));
        }
        self.incoming.extend_from_slice(&chunk[..n]);
        let result = self.process(None, false);
        if self.incoming.is_empty() {
            self.incoming = Vec::new();
        }
        match result {
            Ok(_) => Poll::Ready(Ok(true)),
            Err(e) => {
                // The alert rustls queued goes out if the socket takes it now; no waiting
                // on a peer that sent garbage.
                self.queue_alert();
                let _ = self.poll_flush_out(cx);
                Poll::Ready(Err(e))
            }
        }
    }

    /// Runs rustls over `incoming` until it needs more bytes: decrypted data goes to
    /// `plaintext`, records rustls wants sent to `outgoing`; `app` is encrypted and a
    /// close_notify queued (`close`) once the connection may send.
    fn process(&mut self, mut app: Option<&[u8]>, mut close: bool) -> io::Result<Processed> {
        let mut wrote = false;
        loop {
            let UnbufferedStatus { discard, state } = self.conn.process_tls_records(&mut self.incoming);
            let state = state.map_err(tls_error)?;
            let mut done = None;
            match state {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        self.plaintext.extend_from_slice(record.map_err(tls_error)?.payload);
                    }
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    append(&mut self.outgoing, SOCKET_READ_BYTES, |out| encode.encode(out).map_err(encode_room))?;
                }
                // The records are in `outgoing`, which the callers flush before they wait.
                ConnectionState::TransmitTlsData(transmit) => transmit.done(),
                ConnectionState::WriteTraffic(mut traffic) => {
                    if let Some(data) = app.take() {
                        let records = data.len() / RECORD_PAYLOAD_BYTES_MAX + 1;
                        append(&mut self.outgoing, data.len() + records * RECORD_OVERHEAD_BYTES, |out| {
                            traffic.encrypt(data, out).map_err(encrypt_room)
                        })?;
                        wrote = true;
                    }
                    if close && !self.close_queued {
                        append(&mut self.outgoing, RECORD_OVERHEAD_BYTES, |out| traffic.queue_close_notify(out).map_err(encrypt_room))?;
                        self.close_queued = true;
                        close = false;
                    }
                    done = Some(Processed::Open { wrote });
                }
                ConnectionState::BlockedHandshake => done = Some(Processed::Open { wrote }),
                ConnectionState::PeerClosed => self.peer_closed = true,
                ConnectionState::Closed => {
                    self.peer_closed = true;
                    done = Some(Processed::Closed);
                }
                // Early data is off (`max_early_data_size` is 0), and later states are
                // not ours to guess at.
                _ => return Err(tls_error("unexpected TLS connection state")),
            }
            self.incoming.drain(..discard);
            if let Some(processed) = done {
                return Ok(processed);
            }
        }
    }

    /// After a failure rustls queues an alert for the peer; moves it to `outgoing`.
    fn queue_alert(&mut self) {
        self.incoming = Vec::new();
        for _ in 0..ALERT_MESSAGES_MAX {
            let UnbufferedStatus { state, .. } = self.conn.process_tls_records(&mut []);
            let Ok(ConnectionState::EncodeTlsData(mut encode)) = state else {
                return;
            };
            let encoded = append(&mut self.outgoing, SOCKET_READ_BYTES, |out| encode.encode(out).map_err(encode_room));
            if encoded.is_err() {
                return;
            }
        }
    }

    /// Writes `outgoing` to the socket; its memory is given back once it is all sent.
    fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.outgoing.len() {
            match std::task::ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.sent..])) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.sent += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        self.outgoing = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if this.plain_taken < this.plaintext.len() {
                let n = buf.len().min(this.plaintext.len() - this.plain_taken);
                buf[..n].copy_from_slice(&this.plaintext[this.plain_taken..this.plain_taken + n]);
                this.plain_taken += n;
                if this.plain_taken == this.plaintext.len() {
                    this.plaintext = Vec::new();
                    this.plain_taken = 0;
                }
                return Poll::Ready(Ok(n));
            }
            if this.peer_closed {
                return Poll::Ready(Ok(0));
            }
            // What rustls queued while reading (a key update's answer) goes out without
            // holding the read up: a socket that takes nothing now wakes us later.
            if let Poll::Ready(Err(e)) = this.poll_flush_out(cx) {
                return Poll::Ready(Err(e));
            }
            match std::task::ready!(this.poll_read_socket(cx)) {
                Ok(true) => {}
                // The TCP stream ended without close_notify: the end of the stream all the same.
                Ok(false) => return Poll::Ready(Ok(0)),
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.outgoing.len() - this.sent >= OUTGOING_BYTES_HIGH {
            if let Err(e) = std::task::ready!(this.poll_flush_out(cx)) {
                return Poll::Ready(Err(e));
            }
        }
        let data = &buf[..buf.len().min(WRITE_CHUNK_BYTES)];
        match this.process(Some(data), false)? {
            Processed::Open { wrote: true } => {}
            Processed::Open { wrote: false } => return Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
            Processed::Closed => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
        // Out at once if the socket takes it; otherwise with the next write or the flush.
        if let Poll::Ready(Err(e)) = this.poll_flush_out(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_flush_out(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_queued {
            // A connection already closed both ways has nothing more to say.
            this.process(None, true)?;
            this.close_queued = true;
        }
        std::task::ready!(this.poll_flush_out(cx))?;
        Pin::new(&mut this.tcp).poll_close(cx)
    }
}
