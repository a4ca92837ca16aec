//! SASL for load runs (RFC 6120 §6): PLAIN, or SCRAM-SHA-1 / SCRAM-SHA-256 through the
//! scram-rs client (the library martlet's server side uses), which also checks the
//! server's signature, so a server that skipped the proof would fail here.

use std::io;

use base64::Engine;
use clap::ValueEnum;
use scram_rs::scram_sync::SyncScramClient;
use scram_rs::{ScramAuthClient, ScramCbHelper, ScramHashing, ScramNonce, ScramResultClient, ScramSha1Ring, ScramSha256Ring};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::client::read_until;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mechanism {
    Plain,
    #[value(name = "scram-sha-1")]
    ScramSha1,
    #[value(name = "scram-sha-256")]
    ScramSha256,
}

const NS: &str = "urn:ietf:params:xml:ns:xmpp-sasl";

pub async fn authenticate(
    reader: &mut (impl AsyncRead + Unpin),
    writer: &mut (impl AsyncWrite + Unpin),
    buf: &mut Vec<u8>,
    mech: Mechanism,
    user: &str,
    password: &str,
) -> io::Result<()> {
    let creds = Credentials { user, password };
    match mech {
        Mechanism::Plain => {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
            writer.write_all(format!("<auth xmlns='{NS}' mechanism='PLAIN'>{token}</auth>").as_bytes()).await?;
            let reply = read_until(reader, buf, &["<success", "</failure>"]).await?;
            if reply.contains("<success") {
                Ok(())
            } else {
                Err(refused(user))
            }
        }
        // Boxed, like the TLS handshake: SCRAM's state inline would grow every login future.
        Mechanism::ScramSha1 => {
            let nonce = ScramNonce::none().map_err(other)?;
            Box::pin(scram::<ScramSha1Ring>(reader, writer, buf, "SCRAM-SHA-1", &creds, nonce)).await
        }
        Mechanism::ScramSha256 => {
            let nonce = ScramNonce::none().map_err(other)?;
            Box::pin(scram::<ScramSha256Ring>(reader, writer, buf, "SCRAM-SHA-256", &creds, nonce)).await
        }
    }
}

struct Credentials<'a> {
    user: &'a str,
    password: &'a str,
}

/// scram-rs wants `Debug`; the password stays out of it.
impl std::fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({})", self.user)
    }
}

impl ScramAuthClient for &Credentials<'_> {
    fn get_username(&self) -> &str {
        self.user
    }
    fn get_password(&self) -> &str {
        self.password
    }
}

impl ScramCbHelper for &Credentials<'_> {}

/// RFC 5802 §3 from the client's side; `nonce` is random except in the RFC's test vectors.
async fn scram<H: ScramHashing>(
    reader: &mut (impl AsyncRead + Unpin),
    writer: &mut (impl AsyncWrite + Unpin),
    buf: &mut Vec<u8>,
    name: &str,
    creds: &Credentials<'_>,
    nonce: ScramNonce,
) -> io::Result<()> {
    let mut client = SyncScramClient::<H, &Credentials, &Credentials>::new(creds, nonce, scram_rs::ChannelBindType::None, creds, false)
        .map_err(other)?;
    let first = client.init_client().encode_output_base64().map_err(other)?;
    writer.write_all(format!("<auth xmlns='{NS}' mechanism='{name}'>{first}</auth>").as_bytes()).await?;
    loop {
        // "/>" ends an empty <success/> and the condition inside <failure>; base64 never
        // holds it, so a <success> whose payload is still in flight is waited for.
        let reply = read_until(reader, buf, &["</challenge>", "</success>", "/>", "</failure>"]).await?;
        let (payload, success) = if let Some(p) = element_text(&reply, "challenge") {
            (p, false)
        } else if let Some(p) = element_text(&reply, "success") {
            (p, true)
        } else {
            return Err(refused(creds.user));
        };
        // scram-rs checks the server signature (v=) here and fails on a mismatch.
        match client.parse_response_base64(payload.trim()).map_err(other)? {
            ScramResultClient::Completed if success => return Ok(()),
            out @ ScramResultClient::Output(_) if !success => {
                let answer = out.encode_output_base64().map_err(other)?;
                writer.write_all(format!("<response xmlns='{NS}'>{answer}</response>").as_bytes()).await?;
            }
            _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "SCRAM exchange out of step")),
        }
    }
}

/// The text of `<name ...>TEXT</name>` in `xml`, or "" for `<name .../>`.
fn element_text<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{name}"))?;
    let open_end = start + xml[start..].find('>')?;
    if xml[..open_end].ends_with('/') {
        return Some("");
    }
    let close = xml[open_end..].find(&format!("</{name}>"))?;
    Some(&xml[open_end + 1..open_end + close])
}

fn refused(user: &str) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, format!("{user}: authentication failed"))
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use scram_rs::{ScramHashing, ScramNonce, ScramSha1Ring, ScramSha256Ring};
    use tokio::io::{AsyncWriteExt, DuplexStream};

    use super::{element_text, scram, Credentials, NS};
    use crate::client::read_until;

    const CREDS: Credentials = Credentials { user: "user", password: "pencil" };

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    fn unb64(text: &str) -> String {
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(text.trim()).unwrap()).unwrap()
    }

    /// One exchange of an RFC's example: the client's nonce and the four messages.
    struct Vector {
        mechanism: &'static str,
        nonce: &'static str,
        client_first: &'static str,
        server_first: &'static str,
        client_final: &'static str,
        server_final: &'static str,
    }

    /// RFC 5802 §5.
    const SHA1: Vector = Vector {
        mechanism: "SCRAM-SHA-1",
        nonce: "fyko+d2lbbFgONRv9qkxdawL",
        client_first: "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
        server_first: "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
        client_final: "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
        server_final: "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
    };

    /// RFC 7677 §3.
    const SHA256: Vector = Vector {
        mechanism: "SCRAM-SHA-256",
        nonce: "rOprNGfwEbeRWgbNEkqO",
        client_first: "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
        server_first: "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        client_final: "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        server_final: "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
    };

    /// A server that plays `v`: it checks the client's two messages and answers with the
    /// vector's, ending in `server_final`.
    async fn serve(mut io: DuplexStream, v: &Vector, server_final: &str) {
        let mut buf = Vec::new();
        let auth = read_until(&mut io, &mut buf, &["</auth>"]).await.unwrap();
        assert!(auth.contains(&format!("mechanism='{}'", v.mechanism)));
        assert_eq!(unb64(element_text(&auth, "auth").unwrap()), v.client_first);
        io.write_all(format!("<challenge xmlns='{NS}'>{}</challenge>", b64(v.server_first)).as_bytes()).await.unwrap();
        let response = read_until(&mut io, &mut buf, &["</response>"]).await.unwrap();
        assert_eq!(unb64(element_text(&response, "response").unwrap()), v.client_final);
        io.write_all(format!("<success xmlns='{NS}'>{}</success>", b64(server_final)).as_bytes()).await.unwrap();
    }

    /// The client side of `v` against `serve`.
    async fn exchange<H: ScramHashing>(v: &Vector, server_final: &str) -> std::io::Result<()> {
        let (client, server) = tokio::io::duplex(4096);
        let (mut r, mut w) = tokio::io::split(client);
        let mut buf = Vec::new();
        let nonce = ScramNonce::base64(v.nonce).unwrap();
        let client = scram::<H>(&mut r, &mut w, &mut buf, v.mechanism, &CREDS, nonce);
        tokio::join!(serve(server, v, server_final), client).1
    }

    #[tokio::test]
    async fn scram_sha1_follows_rfc_5802() {
        exchange::<ScramSha1Ring>(&SHA1, SHA1.server_final).await.unwrap();
    }

    #[tokio::test]
    async fn scram_sha256_follows_rfc_7677() {
        exchange::<ScramSha256Ring>(&SHA256, SHA256.server_final).await.unwrap();
    }

    #[tokio::test]
    async fn a_wrong_server_signature_fails_the_login() {
        // RFC 7677's signature with its first character changed: a server without the
        // password's secrets could not have made the right one.
        let forged = SHA256.server_final.replacen("v=6", "v=7", 1);
        let err = exchange::<ScramSha256Ring>(&SHA256, &forged).await.unwrap_err();
        assert!(err.to_string().contains("server signature mismatch"), "{err}");
    }

    #[test]
    fn element_text_of_full_and_empty_elements() {
        let x = "<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>cj1h</challenge>";
        assert_eq!(element_text(x, "challenge"), Some("cj1h"));
        assert_eq!(element_text("<success xmlns='x'/>", "success"), Some(""));
        assert_eq!(element_text("<failure/>", "success"), None);
    }
}
