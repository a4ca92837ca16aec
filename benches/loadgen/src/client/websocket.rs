//! `--transport websocket`: where to connect (`--ws-url`), and the HTTP/1.1 upgrade of
//! RFC 6455 §4 asking for the `xmpp` subprotocol (RFC 7395 §3.2), tungstenite making the
//! key and checking the server's accept value. After it the connection carries frames
//! (client/ws_stream.rs); plain ws:// only: TLS on this transport is a proxy's.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest HTTP answer head read before the frames, in bytes.
const RESPONSE_HEAD_BYTES_MAX: usize = 8192;
/// Headers parsed at most in that head.
const RESPONSE_HEADERS_MAX: usize = 32;

/// What a session connects to over WebSocket.
#[derive(Clone, Debug)]
pub struct WsUrl {
    pub addr: SocketAddr,
    /// `host[:port]` as given, for the Host header.
    host: String,
    path: String,
}

impl WsUrl {
    /// `ws://HOST:PORT/PATH` (PATH "/" when left out).
    pub fn parse(url: &str) -> Result<WsUrl, String> {
        let rest = url.strip_prefix("ws://").ok_or_else(|| format!("{url}: only ws:// URLs (no TLS on this transport)"))?;
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let addr = host
            .to_socket_addrs()
            .map_err(|e| format!("{url}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url}: no address for {host}"))?;
        let path = if path.is_empty() { "/" } else { path };
        Ok(WsUrl { addr, host: host.to_owned(), path: path.to_owned() })
    }
}

/// Asks for the upgrade on `tcp` and checks the answer; returns the bytes that came after
/// the answer's head (the first frames, if the server was quick).
pub async fn upgrade(tcp: &mut TcpStream, url: &WsUrl) -> io::Result<Vec<u8>> {
    let key = tungstenite::handshake::client::generate_key();
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n",
        url.path, url.host
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(1024);
    loop {
        if tcp.read_buf(&mut head).await? == 0 {
            return Err(refused("the server closed the connection during the upgrade"));
        }
        let mut headers = [httparse::EMPTY_HEADER; RESPONSE_HEADERS_MAX];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&head) {
            Ok(httparse::Status::Complete(len)) => {
                check(&response, &key)?;
                return Ok(head.split_off(len));
            }
            Ok(httparse::Status::Partial) if head.len() < RESPONSE_HEAD_BYTES_MAX => continue,
            Ok(httparse::Status::Partial) => return Err(refused("an upgrade answer head past its bound")),
            Err(e) => return Err(refused(&format!("an upgrade answer that is not HTTP: {e}"))),
        }
    }
}

/// 101, the accept value the key calls for, and the `xmpp` subprotocol.
fn check(response: &httparse::Response, key: &str) -> io::Result<()> {
    if response.code != Some(101) {
        return Err(refused(&format!("upgrade answered {:?} {:?}", response.code, response.reason)));
    }
    let header = |name: &str| {
        response.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).and_then(|h| std::str::from_utf8(h.value).ok()).map(str::trim)
    };
    if header("sec-websocket-accept") != Some(tungstenite::handshake::derive_accept_key(key.as_bytes()).as_str()) {
        return Err(refused("a Sec-WebSocket-Accept that does not match the key"));
    }
    if !header("sec-websocket-protocol").is_some_and(|p| p.eq_ignore_ascii_case("xmpp")) {
        return Err(refused("the server did not take the xmpp subprotocol"));
    }
    Ok(())
}

fn refused(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionRefused, format!("WebSocket: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ws_urls_only() {
        let url = WsUrl::parse("ws://127.0.0.1:5280/xmpp-websocket").unwrap();
        assert_eq!((url.addr.port(), url.host.as_str(), url.path.as_str()), (5280, "127.0.0.1:5280", "/xmpp-websocket"));
        assert_eq!(WsUrl::parse("ws://127.0.0.1:5280").unwrap().path, "/");
        assert!(WsUrl::parse("wss://127.0.0.1:5281/xmpp-websocket").is_err());
    }
}
