//! A connection as every thread sees it, and the writing of one frame to it: straight to
//! the socket when nothing waits, else behind what waits in its outbox, which the owning
//! thread flushes when the socket is writable. Any thread may write to any connection
//! (under the outbox lock), so one frame is one write(2) wherever it was read.

use std::io::{self, Write};
use std::sync::Mutex;

use mio::net::TcpStream;

pub struct Conn {
    pub stream: TcpStream,
    outbox: Mutex<Vec<u8>>,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Self {
        Conn { stream, outbox: Mutex::new(Vec::new()) }
    }

    /// Writes the whole `frame`, or queues what the socket does not take. False when it is
    /// dropped: the outbox would pass `outbox_bytes_max`, or the socket failed.
    pub fn send(&self, frame: &[u8], outbox_bytes_max: usize) -> bool {
        let mut outbox = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
        // Frames keep their order: with bytes already waiting, this one waits behind them.
        let mut written = 0;
        if outbox.is_empty() {
            loop {
                match (&self.stream).write(&frame[written..]) {
                    Ok(n) => {
                        written += n;
                        if written == frame.len() {
                            return true;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return false,
                }
            }
        } else if outbox.len() + frame.len() > outbox_bytes_max {
            return false;
        }
        // A frame begun on the wire is always finished, so the stream stays framed.
        outbox.extend_from_slice(&frame[written..]);
        true
    }

    /// The owner's writable edge: what waits in the outbox goes out.
    pub fn flush(&self) {
        let mut outbox = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
        let mut written = 0;
        while written < outbox.len() {
            match (&self.stream).write(&outbox[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // The reading side sees the failure too and closes the connection.
                Err(_) => {
                    written = outbox.len();
                    break;
                }
            }
        }
        outbox.drain(..written);
    }
}
