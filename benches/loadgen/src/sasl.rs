//! SASL for load runs (RFC 6120 §6): PLAIN, or SCRAM-SHA-1 / SCRAM-SHA-256 through the
//! scram-rs client (the library martlet's server side uses), which also checks the
//! server's signature, so a server that skipped the proof would fail here.

use std::io;

use base64::Engine;
use clap::ValueEnum;
use scram_rs::scram_sync::SyncScramClient;
use scram_rs::{ScramAuthClient, ScramCbHelper, ScramHashing, ScramNonce, ScramResultClient, ScramSha1Ring, ScramSha256Ring};
use tokio::io::AsyncWriteExt;

use crate::client::{read_until, Session};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mechanism {
    Plain,
    #[value(name = "scram-sha-1")]
    ScramSha1,
    #[value(name = "scram-sha-256")]
    ScramSha256,
}

const NS: &str = "urn:ietf:params:xml:ns:xmpp-sasl";

pub async fn authenticate(s: &mut Session, buf: &mut Vec<u8>, mech: Mechanism, user: &str, password: &str) -> io::Result<()> {
    match mech {
        Mechanism::Plain => {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
            s.writer.write_all(format!("<auth xmlns='{NS}' mechanism='PLAIN'>{token}</auth>").as_bytes()).await?;
            let reply = read_until(&mut s.reader, buf, &["<success", "</failure>"]).await?;
            if reply.contains("<success") {
                Ok(())
            } else {
                Err(refused(user))
            }
        }
        Mechanism::ScramSha1 => scram::<ScramSha1Ring>(s, buf, "SCRAM-SHA-1", user, password).await,
        Mechanism::ScramSha256 => scram::<ScramSha256Ring>(s, buf, "SCRAM-SHA-256", user, password).await,
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

async fn scram<H: ScramHashing>(s: &mut Session, buf: &mut Vec<u8>, name: &str, user: &str, password: &str) -> io::Result<()> {
    let creds = Credentials { user, password };
    let mut client = SyncScramClient::<H, &Credentials, &Credentials>::new(
        &creds,
        ScramNonce::none().map_err(other)?,
        scram_rs::ChannelBindType::None,
        &creds,
        false,
    )
    .map_err(other)?;
    let first = client.init_client().encode_output_base64().map_err(other)?;
    s.writer.write_all(format!("<auth xmlns='{NS}' mechanism='{name}'>{first}</auth>").as_bytes()).await?;
    loop {
        let reply = read_until(&mut s.reader, buf, &["</challenge>", "</success>", "<success", "</failure>"]).await?;
        let (payload, success) = if let Some(p) = element_text(&reply, "challenge") {
            (p, false)
        } else if let Some(p) = element_text(&reply, "success") {
            (p, true)
        } else {
            return Err(refused(user));
        };
        match client.parse_response_base64(payload.trim()).map_err(other)? {
            ScramResultClient::Completed if success => return Ok(()),
            out @ ScramResultClient::Output(_) if !success => {
                let answer = out.encode_output_base64().map_err(other)?;
                s.writer.write_all(format!("<response xmlns='{NS}'>{answer}</response>").as_bytes()).await?;
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
    use super::element_text;

    #[test]
    fn element_text_of_full_and_empty_elements() {
        let x = "<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>cj1h</challenge>";
        assert_eq!(element_text(x, "challenge"), Some("cj1h"));
        assert_eq!(element_text("<success xmlns='x'/>", "success"), Some(""));
        assert_eq!(element_text("<failure/>", "success"), None);
    }
}
