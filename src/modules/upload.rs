//! XEP-0363 HTTP File Upload at `[upload] domain` (`upload.<domain>`), its files served by
//! the `[http]` listener.
//!
//! A slot is an HMAC, not a record: the PUT URL carries the slot's expiry and a token
//! over (account directory, id, file name, size, content type, expiry) under the server's
//! secret, so any core (or node sharing the storage path) can check a PUT without a lookup.
//! Files go under `<upload dir>/<account dir>/<id>/<name>` (the account dir is a keyed hash
//! of the JID, so paths reveal no JIDs), streamed to disk in chunks on glommio's blocking
//! pool, never whole in memory, next to a `.meta` with the content type and time. GET URLs
//! are the path alone (the id is 128 random bits). Files older than `expiry_secs` are
//! purged hourly. An upload has no total time limit (a large file on a slow link is slow),
//! but once past `RATE_GRACE` it must average `[upload] bytes_per_sec_min`, and each read
//! of its body and each write of a download must make progress within `send_stall_secs`,
//! as any client write does. In a cluster every node sees the same upload
//! dir (a shared mount) and the same secret (shared storage), so every node serves every
//! file; the README says why this and not redirects, and why no S3 store.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use minidom::Element;

use crate::router::CoreState;
use crate::stanza::{build, text_el, StanzaError};
use crate::xml::ns;

pub const NS: &str = "urn:xmpp:http:upload:0";
/// How long a slot's PUT URL works.
const SLOT_SECS: u64 = 300;
/// Longest file name kept, in bytes, after sanitising.
const NAME_BYTES_MAX: usize = 100;
/// Bytes moved per disk write or read.
const CHUNK_BYTES: usize = 64 * 1024;
/// How often expired files are looked for.
/// How long an upload may run before `[upload] bytes_per_sec_min` applies: a connection's
/// slow start, and a client that asks then pauses before the body (as some do for a
/// `100 Continue` they will not get).
const RATE_GRACE: Duration = Duration::from_secs(10);
pub const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// An IQ to the upload service: its disco#info (§3, with `max-file-size`) and slot
/// requests (§4).
pub async fn answer_iq(core: &Rc<CoreState>, user: &jid::FullJid, payload: &Element, type_: &str) -> Result<Option<Element>, StanzaError> {
    match (type_, payload.ns().as_str(), payload.name()) {
        ("get", ns::DISCO_INFO, "query") if payload.attr("node").is_none() => Ok(Some(disco_info(core.cfg.upload.file_bytes_max))),
        ("get", ns::DISCO_ITEMS, "query") => Ok(Some(build("query", ns::DISCO_ITEMS, &[], vec![]))),
        ("get", NS, "request") => slot(core, user, payload).await.map(Some),
        ("get", ns::PING, "ping") => Ok(None),
        _ => Err(StanzaError::ServiceUnavailable),
    }
}

fn disco_info(max: u64) -> Element {
    let identity = build("identity", ns::DISCO_INFO, &[("category", "store"), ("type", "file"), ("name", "HTTP File Upload")], vec![]);
    let feature = build("feature", ns::DISCO_INFO, &[("var", NS)], vec![]);
    let field = |var: &str, value: &str, hidden: bool| {
        let mut attrs = vec![("var", var)];
        if hidden {
            attrs.push(("type", "hidden"));
        }
        build("field", ns::DATA_FORMS, &attrs, vec![text_el("value", ns::DATA_FORMS, value)])
    };
    let form = build("x", ns::DATA_FORMS, &[("type", "result")], vec![field("FORM_TYPE", NS, true), field("max-file-size", &max.to_string(), false)]);
    build("query", ns::DISCO_INFO, &[], vec![identity, feature, form])
}

/// §4: a PUT and a GET URL for the file the client describes.
async fn slot(core: &Rc<CoreState>, user: &jid::FullJid, request: &Element) -> Result<Element, StanzaError> {
    let cfg = &core.cfg.upload;
    let size: u64 = request.attr("size").and_then(|s| s.trim().parse().ok()).ok_or(StanzaError::BadRequest)?;
    let name = sanitise_name(request.attr("filename").unwrap_or("")).ok_or(StanzaError::BadRequest)?;
    let content_type = sanitise_type(request.attr("content-type").unwrap_or("application/octet-stream"));
    if size > cfg.file_bytes_max {
        return Err(StanzaError::FileTooLarge(cfg.file_bytes_max));
    }
    let account = account_dir(core, &user.to_bare().to_string());
    let dir = core.cfg.upload_dir().join(&account);
    let used = glommio::executor().spawn_blocking(move || bytes_under(&dir)).await;
    if used + size > cfg.quota_bytes_per_user {
        return Err(StanzaError::ResourceConstraint);
    }
    let id: String = (0..16).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    let expires = now_secs() + SLOT_SECS;
    let token = token(core, &account, &id, &name, size, &content_type, expires);
    // Sanitised names hold only URL-safe characters.
    let path = format!("{}/upload/{account}/{id}/{name}", core.cfg.upload_base_url());
    let put_url = format!("{path}?size={size}&expires={expires}&token={token}");
    let put = build("put", NS, &[("url", &put_url)], vec![]);
    let get = build("get", NS, &[("url", &path)], vec![]);
    Ok(build("slot", NS, &[], vec![put, get]))
}

fn account_dir(core: &CoreState, bare: &str) -> String {
    core.storage.keyed_id(&["upload-account", bare])
}

fn token(core: &CoreState, account: &str, id: &str, name: &str, size: u64, content_type: &str, expires: u64) -> String {
    core.storage.keyed_id(&["upload-put", account, id, name, &size.to_string(), content_type, &expires.to_string()])
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A file name as stored and served: letters, digits, `.`, `-`, `_` kept, the rest `_`, no
/// leading dot, at most `NAME_BYTES_MAX`; `None` when nothing is left.
fn sanitise_name(name: &str) -> Option<String> {
    let kept: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
        .collect::<String>()
        .trim_start_matches('.')
        .chars()
        .take(NAME_BYTES_MAX)
        .collect();
    (!kept.is_empty()).then_some(kept)
}

/// A content type served back as given only when it is a plain `type/subtype`; anything
/// else is served as bytes (and never as HTML to sniff: `nosniff` goes with every file).
fn sanitise_type(t: &str) -> String {
    let t = t.trim().to_ascii_lowercase();
    let ok = t.split_once('/').is_some_and(|(a, b)| {
        let token = |s: &str| !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'));
        token(a) && token(b)
    });
    if ok {
        t
    } else {
        "application/octet-stream".into()
    }
}

fn bytes_under(dir: &Path) -> u64 {
    let Ok(ids) = std::fs::read_dir(dir) else { return 0 };
    ids.flatten()
        .filter_map(|id| std::fs::read_dir(id.path()).ok())
        .flat_map(|files| files.flatten())
        .filter_map(|f| f.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// A request the HTTP listener hands over: `/upload/<account>/<id>/<name>`.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub content_type: Option<&'a str>,
    pub content_length: Option<u64>,
}

/// Whether `path` is ours.
pub fn handles(path: &str) -> bool {
    path.starts_with("/upload/")
}

/// Serves one PUT or GET (or HEAD), then the connection closes.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(core: &Rc<CoreState>, tcp: &mut S, req: Request<'_>, body_start: Vec<u8>) {
    let answer = match req.method {
        "PUT" => put(core, tcp, &req, body_start).await,
        "GET" | "HEAD" => return get(core, tcp, &req).await,
        _ => Err(("405 Method Not Allowed", "PUT, GET or HEAD")),
    };
    let (status, text) = match answer {
        Ok(()) => ("201 Created", "stored"),
        Err(e) => e,
    };
    let _ = respond(tcp, status, "text/plain", text.as_bytes()).await;
}

async fn respond<S: AsyncRead + AsyncWrite + Unpin>(tcp: &mut S, status: &str, content_type: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await?;
    tcp.write_all(body).await
}

/// `(account, id, name)` of a path, each checked to be what we make: no way out of the dir.
fn parse_path(path: &str) -> Option<(String, String, String)> {
    let mut parts = path.split('?').next()?.strip_prefix("/upload/")?.split('/');
    let (account, id, name) = (parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| s.len() == len && s.chars().all(|c| c.is_ascii_hexdigit());
    if parts.next().is_some() || !hex(account, 32) || !hex(id, 32) || sanitise_name(name).as_deref() != Some(name) {
        return None;
    }
    Some((account.into(), id.into(), name.into()))
}

fn query_param<'a>(path: &'a str, name: &str) -> Option<&'a str> {
    path.split_once('?')?.1.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

type HttpError = (&'static str, &'static str);

async fn put<S: AsyncRead + AsyncWrite + Unpin>(core: &Rc<CoreState>, tcp: &mut S, req: &Request<'_>, mut body_start: Vec<u8>) -> Result<(), HttpError> {
    let (account, id, name) = parse_path(req.path).ok_or(("404 Not Found", "no such slot"))?;
    let size: u64 = query_param(req.path, "size").and_then(|s| s.parse().ok()).ok_or(("403 Forbidden", "not a slot's URL"))?;
    let expires: u64 = query_param(req.path, "expires").and_then(|s| s.parse().ok()).ok_or(("403 Forbidden", "not a slot's URL"))?;
    let given = query_param(req.path, "token").ok_or(("403 Forbidden", "not a slot's URL"))?;
    let content_type = sanitise_type(req.content_type.unwrap_or("application/octet-stream"));
    let expected = token(core, &account, &id, &name, size, &content_type, expires);
    if !bool::from(subtle::ConstantTimeEq::ct_eq(given.as_bytes(), expected.as_bytes())) || now_secs() > expires {
        return Err(("403 Forbidden", "the slot's token does not match, or it expired"));
    }
    if req.content_length != Some(size) || size > core.cfg.upload.file_bytes_max {
        return Err(("413 Payload Too Large", "Content-Length must be the slot's size"));
    }
    let dir = core.cfg.upload_dir().join(&account).join(&id);
    let (file_path, meta) = (dir.join(&name), dir.join(".meta"));
    let created = glommio::executor()
        .spawn_blocking({
            let dir = dir.clone();
            move || std::fs::create_dir_all(dir.parent().expect("an id dir has a parent")).and_then(|_| std::fs::create_dir(&dir))
        })
        .await;
    if created.is_err() {
        return Err(("409 Conflict", "this slot was used already"));
    }
    let part = dir.join(".part");
    let started = Instant::now();
    let mut written = 0u64;
    let mut chunk = vec![0u8; CHUNK_BYTES];
    body_start.truncate(size as usize);
    let mut pending = body_start;
    loop {
        if !pending.is_empty() {
            let (path, data) = (part.clone(), std::mem::take(&mut pending));
            written += data.len() as u64;
            let ok = glommio::executor().spawn_blocking(move || append(&path, &data)).await;
            if ok.is_err() {
                return Err(("500 Internal Server Error", "the file could not be written"));
            }
        }
        if written >= size {
            break;
        }
        let want = CHUNK_BYTES.min((size - written) as usize);
        let stall = Duration::from_secs(core.cfg.limits.send_stall_secs);
        let read = futures_lite::future::or(async { Some(tcp.read(&mut chunk[..want]).await) }, async {
            glommio::timer::sleep(stall).await;
            None
        });
        let refusal = match read.await {
            None | Some(Ok(0)) | Some(Err(_)) => Some(("400 Bad Request", "the body ended early")),
            Some(Ok(n)) => {
                pending.extend_from_slice(&chunk[..n]);
                let received = written + pending.len() as u64;
                too_slow(started.elapsed(), received, core.cfg.upload.bytes_per_sec_min)
                    .then_some(("408 Request Timeout", "the body came slower than the server's minimum rate"))
            }
        };
        if let Some(refusal) = refusal {
            let path = dir.clone();
            glommio::executor().spawn_blocking(move || std::fs::remove_dir_all(path)).await.ok();
            return Err(refusal);
        }
    }
    let meta_json = serde_json::json!({ "content_type": content_type, "created": now_secs() }).to_string();
    let done = glommio::executor()
        .spawn_blocking(move || std::fs::write(&meta, meta_json).and_then(|_| std::fs::rename(&part, &file_path)))
        .await;
    done.map_err(|_| ("500 Internal Server Error", "the file could not be stored"))
}

/// Past `RATE_GRACE`, an upload that has averaged less than `bytes_per_sec_min` since it
/// started: one byte now and then would otherwise hold its connection for as long as
/// each read comes within `send_stall_secs`.
fn too_slow(elapsed: Duration, received: u64, bytes_per_sec_min: u64) -> bool {
    elapsed > RATE_GRACE && (received as f64) < bytes_per_sec_min as f64 * elapsed.as_secs_f64()
}

fn append(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(data)
}

async fn get<S: AsyncRead + AsyncWrite + Unpin>(core: &Rc<CoreState>, tcp: &mut S, req: &Request<'_>) {
    let Some((account, id, name)) = parse_path(req.path) else {
        let _ = respond(tcp, "404 Not Found", "text/plain", b"no such file").await;
        return;
    };
    let dir = core.cfg.upload_dir().join(account).join(id);
    let (file_path, meta_path) = (dir.join(&name), dir.join(".meta"));
    let found = glommio::executor()
        .spawn_blocking({
            let file_path = file_path.clone();
            move || -> Option<(u64, String)> {
                let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(meta_path).ok()?).ok()?;
                let len = std::fs::metadata(&file_path).ok()?.len();
                Some((len, meta["content_type"].as_str().unwrap_or("application/octet-stream").to_owned()))
            }
        })
        .await;
    let Some((len, content_type)) = found else {
        let _ = respond(tcp, "404 Not Found", "text/plain", b"no such file").await;
        return;
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\nContent-Disposition: inline; filename=\"{name}\"\r\nX-Content-Type-Options: nosniff\r\nContent-Security-Policy: default-src 'none'\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n"
    );
    if tcp.write_all(head.as_bytes()).await.is_err() || req.method == "HEAD" {
        return;
    }
    let mut offset = 0u64;
    while offset < len {
        let path = file_path.clone();
        let chunk = glommio::executor().spawn_blocking(move || read_chunk(&path, offset)).await;
        match chunk {
            Ok(bytes) if !bytes.is_empty() => {
                offset += bytes.len() as u64;
                let stall = Duration::from_secs(core.cfg.limits.send_stall_secs);
                let wrote = futures_lite::future::or(async { tcp.write_all(&bytes).await.is_ok() }, async {
                    glommio::timer::sleep(stall).await;
                    false
                });
                if !wrote.await {
                    return;
                }
            }
            _ => return,
        }
    }
}

fn read_chunk(path: &Path, offset: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(CHUNK_BYTES);
    f.take(CHUNK_BYTES as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Deletes files uploaded more than `expiry_secs` ago (and slots whose PUT never finished,
/// after as long); runs on the blocking pool, hourly, on core 0.
pub async fn purge_forever(core: Rc<CoreState>) {
    loop {
        glommio::timer::sleep(PURGE_INTERVAL).await;
        let (dir, expiry) = (core.cfg.upload_dir(), core.cfg.upload.expiry_secs);
        let removed = glommio::executor().spawn_blocking(move || purge(&dir, expiry, now_secs())).await;
        if removed > 0 {
            log::info!("upload: {removed} expired files deleted");
        }
    }
}

fn purge(root: &Path, expiry_secs: u64, now: u64) -> usize {
    let mut removed = 0;
    let accounts = std::fs::read_dir(root).into_iter().flatten().flatten();
    for id_dir in accounts.filter_map(|a| std::fs::read_dir(a.path()).ok()).flat_map(|ids| ids.flatten()) {
        let path: PathBuf = id_dir.path();
        let created = std::fs::read_to_string(path.join(".meta"))
            .ok()
            .and_then(|m| serde_json::from_str::<serde_json::Value>(&m).ok())
            .and_then(|m| m["created"].as_u64())
            .or_else(|| id_dir.metadata().ok()?.modified().ok()?.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs()));
        if created.is_some_and(|c| c + expiry_secs <= now) && std::fs::remove_dir_all(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_is_too_slow_only_past_the_grace_and_below_the_rate() {
        let secs = Duration::from_secs;
        assert!(!too_slow(secs(9), 0, 1024), "nothing yet, within the grace");
        assert!(too_slow(secs(11), 11 * 1024 - 1, 1024));
        assert!(!too_slow(secs(11), 11 * 1024, 1024));
        assert!(!too_slow(secs(3600), 0, 0), "0 turns the check off");
    }

    #[test]
    fn names_and_types_are_sanitised() {
        assert_eq!(sanitise_name("../../etc/passwd").as_deref(), Some("_.._etc_passwd"));
        assert_eq!(sanitise_name("photo 1.jpg").as_deref(), Some("photo_1.jpg"));
        assert_eq!(sanitise_name("...").as_deref(), None);
        assert_eq!(sanitise_type("image/JPEG"), "image/jpeg");
        assert_eq!(sanitise_type("text/html; charset=utf-8"), "application/octet-stream");
    }

    #[test]
    fn paths_hold_only_what_the_server_makes() {
        let (a, i) = ("0".repeat(32), "f".repeat(32));
        assert!(parse_path(&format!("/upload/{a}/{i}/x.jpg?size=1")).is_some());
        assert!(parse_path(&format!("/upload/{a}/{i}/../x")).is_none());
        assert!(parse_path(&format!("/upload/{a}/../{i}/x")).is_none());
        assert!(parse_path(&format!("/upload/{a}/{i}/.meta")).is_none());
    }

    #[test]
    fn purge_takes_only_what_expired() {
        let root = std::env::temp_dir().join(format!("martlet-upload-test-{}", rand::random::<u64>()));
        for (id, created) in [("old", 100u64), ("new", 10_000)] {
            let d = root.join("acct").join(id);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(".meta"), format!("{{\"created\":{created}}}")).unwrap();
        }
        assert_eq!(purge(&root, 1000, 5000), 1);
        assert!(!root.join("acct/old").exists() && root.join("acct/new").exists());
        std::fs::remove_dir_all(root).unwrap();
    }
}
