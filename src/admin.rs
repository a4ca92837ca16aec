//! Account administration while the server runs. The embedded store admits one process, so
//! `martlet user ...` sends its request over a UNIX socket in the storage directory (mode
//! 0600: the server's user and root only) and core 0 carries it out with the server's own
//! storage handle. With the server stopped, the CLI runs [`execute`] on the store itself.
//! One JSON request line in, one JSON response line out.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use futures_lite::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use serde::{Deserialize, Serialize};

use jid::BareJid;

use crate::config::Config;
use crate::router::{CoreState, Revocation, RoomAdminOp, UserMsg};
use crate::storage::{Storage, WhenBusy};

/// Longest request line read, in bytes: a bulk request of ~100k accounts fits.
const REQUEST_BYTES_MAX: usize = 8 << 20;

#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    Add { jid: String, password: String },
    Del { jid: String },
    Passwd { jid: String, password: String },
    List,
    BulkAdd { jids: Vec<String>, password: String },
    /// Members, states and ring shares; only a running clustered server can answer.
    ClusterStatus,
    /// The member owning a bare JID on the ring as this node sees it.
    ClusterOwner { jid: String },
    /// XEP-0045 rooms: the persistent ones (from storage, the whole cluster's) and the live
    /// ones this node knows; `room` below is `name` or `name@<muc domain>`.
    RoomList,
    /// A room's configuration, occupants and affiliations, from its actor.
    RoomInfo { room: String },
    /// A persistent room, open at once, owned by `owner`.
    RoomCreate { room: String, owner: String, name: String, public: bool },
    /// Destroys a room; its occupants are told, with `reason`.
    RoomDestroy { room: String, reason: Option<String> },
}

/// Rooms `martlet room list` prints at most.
const LISTED_ROOMS_MAX: usize = 100_000;

#[derive(Debug, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    pub text: String,
}

fn reply(ok: bool, text: impl Into<String>) -> Reply {
    Reply { ok, text: text.into() }
}

pub fn socket_path(cfg: &Config) -> PathBuf {
    cfg.storage.path.join("admin.sock")
}

impl Request {
    /// The account whose sessions must end once this request succeeds, and why.
    fn revokes(&self) -> Option<(&str, Revocation)> {
        match self {
            Request::Del { jid } => Some((jid, Revocation::AccountDeleted)),
            Request::Passwd { jid, .. } => Some((jid, Revocation::PasswordChanged)),
            _ => None,
        }
    }
}

/// Carries out one request on `storage`.
pub async fn execute(storage: &Storage, request: Request) -> Reply {
    let result = match request {
        Request::Add { jid, password } => storage
            .create_user(jid.clone(), password, WhenBusy::Wait)
            .await
            .map(|added| if added { reply(true, format!("added {jid}")) } else { reply(false, format!("{jid} exists")) }),
        Request::Del { jid } => storage.delete_user(jid.clone()).await.map(|deleted| {
            if deleted {
                reply(true, format!("deleted {jid}"))
            } else {
                reply(false, format!("{jid} does not exist"))
            }
        }),
        Request::Passwd { jid, password } => storage.set_password(jid.clone(), password, WhenBusy::Wait).await.map(|changed| {
            if changed {
                reply(true, format!("changed password of {jid}"))
            } else {
                reply(false, format!("{jid} does not exist"))
            }
        }),
        Request::List => storage.list_users().await.map(|users| reply(true, users.join("\n"))),
        Request::BulkAdd { jids, password } => bulk_add(storage, &jids, &password).await,
        Request::ClusterStatus
        | Request::ClusterOwner { .. }
        | Request::RoomList
        | Request::RoomInfo { .. }
        | Request::RoomCreate { .. }
        | Request::RoomDestroy { .. } => Ok(reply(false, "the server is not running")),
    };
    result.unwrap_or_else(|e| reply(false, e.to_string()))
}

/// Accounts created concurrently: both storage workers stay busy deriving credentials.
const BULK_IN_FLIGHT: usize = 16;

async fn bulk_add(storage: &Storage, jids: &[String], password: &str) -> Result<Reply, crate::storage::StorageError> {
    let mut added = 0;
    for chunk in jids.chunks(BULK_IN_FLIGHT) {
        let jobs: Vec<_> = chunk.iter().map(|jid| Box::pin(storage.create_user(jid.clone(), password.to_owned(), WhenBusy::Wait))).collect();
        for created in join_all(jobs).await {
            added += created? as usize;
        }
    }
    Ok(reply(true, format!("added {added} of {} accounts", jids.len())))
}

/// Polls all futures together (each storage call only starts its job when first polled).
async fn join_all<F: std::future::Future + Unpin>(mut futures: Vec<F>) -> Vec<F::Output> {
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in futures.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match std::pin::Pin::new(f).poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    out.into_iter().map(|v| v.expect("every future finished")).collect()
}

/// `martlet room ...`, on core 0 of a running server.
async fn rooms(core: &Rc<CoreState>, request: Request) -> Reply {
    let Some(service) = core.cfg.muc_domain() else { return reply(false, "group chat is off: [muc] enabled = false") };
    let room_key = |room: &str| -> Result<Arc<str>, String> {
        let full = if room.contains('@') { room.to_owned() } else { format!("{room}@{service}") };
        let jid = BareJid::new(&full).map_err(|e| format!("{full}: {e}"))?;
        if jid.domain().as_str() != service || jid.node().is_none() {
            return Err(format!("{full} is not a room of {service}"));
        }
        Ok(jid.to_string().into())
    };
    let (room, op) = match request {
        Request::RoomList => return room_list(core, service).await,
        Request::RoomInfo { room } => (room, RoomAdminOp::Info),
        Request::RoomDestroy { room, reason } => (room, RoomAdminOp::Destroy { reason }),
        Request::RoomCreate { room, owner, name, public } => match BareJid::new(&owner) {
            Ok(owner) => (room, RoomAdminOp::Create { owner: owner.to_string(), name, public }),
            Err(e) => return reply(false, format!("owner {owner}: {e}")),
        },
        _ => return reply(false, "not a room request"),
    };
    match room_key(&room) {
        Ok(key) => {
            let answer = core.ask_room(key, op).await;
            reply(answer.ok, answer.text)
        }
        Err(e) => reply(false, e),
    }
}

/// One line per room: JID, persistent or live, public or hidden, name. Persistent rooms
/// come from storage (every node's); a temporary room is listed by the node that owns it.
async fn room_list(core: &Rc<CoreState>, service: &str) -> Reply {
    let stored = match core.storage.docs_under(service.to_owned(), crate::muc::service::INDEX_PREFIX.into(), LISTED_ROOMS_MAX).await {
        Ok(stored) => stored,
        Err(e) => return reply(false, format!("reading the room index: {e}")),
    };
    let mut rooms: std::collections::BTreeMap<String, (bool, crate::muc::service::Listing)> = Default::default();
    for (jid, listing) in core.muc_directory.rooms(LISTED_ROOMS_MAX) {
        rooms.insert(jid, (false, listing));
    }
    for (key, json) in stored {
        let (Some(jid), Ok(listing)) = (key.strip_prefix(crate::muc::service::INDEX_PREFIX), serde_json::from_str(&json)) else { continue };
        rooms.insert(jid.to_owned(), (true, listing));
    }
    let mut text = String::new();
    for (jid, (persistent, l)) in &rooms {
        let kind = if *persistent { "persistent" } else { "temporary" };
        text.push_str(&format!("{jid}\t{kind}\t{}\t{}\n", if l.public { "public" } else { "hidden" }, l.name));
    }
    text.push_str(&format!("{} rooms\n", rooms.len()));
    reply(true, text)
}

/// Sends `request` to a running server; `None` when no server listens on the socket.
pub fn call(cfg: &Config, request: &Request) -> Option<std::io::Result<Reply>> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket_path(cfg)).ok()?;
    Some((|| {
        let mut line = serde_json::to_vec(request)?;
        line.push(b'\n');
        stream.write_all(&line)?;
        let mut answer = String::new();
        if BufReader::new(stream).read_line(&mut answer)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into()); // closed without answering
        }
        serde_json::from_str(&answer).map_err(std::io::Error::other)
    })())
}

/// Binds the admin socket, replacing a stale one left by a server that died.
pub fn bind(cfg: &Config) -> std::io::Result<glommio::net::UnixListener> {
    let path = socket_path(cfg);
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "another server is running on this storage"));
        }
        std::fs::remove_file(&path)?;
    }
    let listener = glommio::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves admin requests, one connection at a time (they are rare and short).
pub async fn serve(listener: glommio::net::UnixListener, core: Rc<CoreState>, cluster: Option<(shards::cluster::Cluster, usize)>) {
    let cfg = &core.cfg;
    loop {
        let Ok(stream) = listener.accept().await else { continue };
        let mut reader = futures_lite::io::BufReader::new(stream);
        let mut line = String::new();
        let answer = match (&mut reader).take(REQUEST_BYTES_MAX as u64).read_line(&mut line).await {
            Ok(_) => match serde_json::from_str::<Request>(&line) {
                Ok(request @ (Request::ClusterStatus | Request::ClusterOwner { .. })) => match (&cluster, request) {
                    (Some((c, cores)), Request::ClusterStatus) => reply(true, crate::cluster::status_text(cfg, c, *cores)),
                    (Some((c, cores)), Request::ClusterOwner { jid }) => match crate::cluster::owner_text(cfg, c, *cores, &jid) {
                        Ok(text) => reply(true, text),
                        Err(e) => reply(false, e),
                    },
                    _ => reply(false, "this server runs alone: [cluster] listen is not set"),
                },
                Ok(request @ (Request::RoomList | Request::RoomInfo { .. } | Request::RoomCreate { .. } | Request::RoomDestroy { .. })) => {
                    rooms(&core, request).await
                }
                Ok(request) => {
                    let revokes = request.revokes().and_then(|(jid, why)| Some((BareJid::new(jid).ok()?.to_string(), why)));
                    let answer = execute(&core.storage, request).await;
                    if let (true, Some((jid, why))) = (answer.ok, revokes) {
                        // To the user's UserChannel, on whichever core or node owns it.
                        core.send_to_user(jid.into(), UserMsg::EndSessions(why)).await;
                    }
                    answer
                }
                Err(e) => reply(false, format!("bad request: {e}")),
            },
            Err(e) => reply(false, format!("reading request: {e}")),
        };
        let mut out = serde_json::to_vec(&answer).expect("a reply serialises");
        out.push(b'\n');
        let mut stream = reader.into_inner();
        let _ = stream.write_all(&out).await;
        let _ = stream.close().await;
    }
}
