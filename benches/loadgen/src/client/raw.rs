//! The raw protocol of benches/relay (`--protocol raw`): no XMPP, the same connection
//! pattern. A session is a TCP connection that said `HELLO <user>@<domain>`; a message is
//! the line `<to> <the XMPP message>`, which the relay delivers as `<the XMPP message>`,
//! so the receiver finds the same mark in it and the bytes on the wire are about the same.
//! A room is the relay's group: `JOIN <group> <ack>`, answered with `<ack>`, and a line to
//! the group goes to every member.

use std::io;

use tokio::io::AsyncWriteExt;

use super::{stream, Account, Session};

pub async fn hello(acct: &Account<'_>) -> io::Result<Session> {
    let tcp = super::connect(acct).await?;
    tcp.set_nodelay(true)?;
    let (reader, mut writer) = stream::split_tcp(tcp);
    writer.write_all(format!("HELLO {}@{}\n", acct.user, acct.domain).as_bytes()).await?;
    Ok(Session { reader, writer })
}

/// `payload` (one line: the XMPP message has no newline) addressed to `to`.
pub fn frame(to: &str, payload: &str) -> String {
    format!("{to} {payload}\n")
}

/// Joins `group`; the relay answers with `ack` (one line: an XMPP stanza has no newline)
/// once lines to the group reach this connection.
pub fn join(group: &str, ack: &str) -> String {
    format!("JOIN {group} {ack}\n")
}
