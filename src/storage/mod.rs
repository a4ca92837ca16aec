//! Account data (credentials, rosters, offline messages) behind an async
//! facade. A backend (`Store`) is synchronous; `Storage` runs it on a few
//! worker threads fed through a bounded channel, so disk I/O and PBKDF2 never
//! block a core's event loop. The facade only awaits flume channels, which
//! works under any executor: glommio on the cores, and
//! `futures_lite::future::block_on` in the CLI.

mod archive;
mod kdf_pool;
mod model;
mod postgres_migrate;
mod postgres_store;
mod postgres_tls;
mod redb_store;
mod secrets;

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::config::{Backend, StorageConfig};

pub use archive::{ArchivePage, ArchiveQuery, ArchiveRow, DefaultMode, MamPrefs};
pub use kdf_pool::WhenBusy;
pub use model::{Credentials, RosterItem, ScramKeys, Subscription};
pub use secrets::{scram_keys, ScramHash};
pub use postgres_store::PostgresStore;
pub use redb_store::RedbStore;

/// The per-user document of XEP-0484 FAST tokens (`c2s::fast`), dropped with the password.
pub const FAST_TOKENS_DOC: &str = "fast-tokens";

/// Threads running backend calls. Two keep one slow PBKDF2 derivation from
/// stalling every other lookup, while writes serialise in the backend anyway.
const WORKERS: usize = 2;

/// Rows committed in one archive transaction at most. (The queues before the workers are
/// bounded by `[storage] job_queue_jobs_max` and `archive_queue_messages_max`: when full,
/// the asking actor awaits.)
const ARCHIVE_BATCH_ROWS_MAX: usize = 16_384;

#[derive(Debug)]
pub enum StorageError {
    /// The database could not be opened or created.
    Open { path: PathBuf, reason: String },
    /// The backend failed a read or a write.
    Backend(String),
    /// A stored value could not be decoded: corruption, or another schema.
    Corrupt(String),
    /// The password is refused by SASLprep (RFC 4013), e.g. control characters.
    InvalidPassword(String),
    /// No worker thread is left to run the call.
    Unavailable,
    /// Every PBKDF2 thread is busy and its queue full (`kdf_pool`): try again later.
    Busy,
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Open { path, reason } => write!(f, "{}: {reason}", path.display()),
            StorageError::Backend(reason) => write!(f, "storage: {reason}"),
            StorageError::Corrupt(reason) => write!(f, "storage corrupt: {reason}"),
            StorageError::InvalidPassword(reason) => write!(f, "invalid password: {reason}"),
            StorageError::Unavailable => write!(f, "storage workers unavailable"),
            StorageError::Busy => write!(f, "password hashing busy; try again later"),
        }
    }
}

impl std::error::Error for StorageError {}

/// A storage backend. Calls block; `Storage` keeps them off the cores.
/// Users are keyed by normalised bare JID strings ("alice@localhost").
/// Shared by the workers, hence `Sync`; each call is one atomic transaction.
pub trait Store: Send + Sync + 'static {
    /// Adds the user; false if it already exists.
    fn create_user(&self, jid: &str, credentials: &Credentials) -> Result<bool, StorageError>;
    /// Replaces the user's credentials; false if there is no such user.
    fn set_credentials(&self, jid: &str, credentials: &Credentials) -> Result<bool, StorageError>;
    /// Removes the user with roster and offline messages; false if unknown.
    fn delete_user(&self, jid: &str) -> Result<bool, StorageError>;
    /// All users, sorted.
    fn list_users(&self) -> Result<Vec<String>, StorageError>;
    fn credentials(&self, jid: &str) -> Result<Option<Credentials>, StorageError>;
    /// The roster, sorted by contact JID.
    fn roster(&self, jid: &str) -> Result<Vec<RosterItem>, StorageError>;
    /// Inserts the item, or replaces the one with the same contact JID.
    fn roster_put(&self, jid: &str, item: &RosterItem) -> Result<(), StorageError>;
    /// False if the contact was not in the roster.
    fn roster_remove(&self, jid: &str, contact: &str) -> Result<bool, StorageError>;
    /// Stores the stanza unless `max` are already stored (then false).
    fn offline_push(&self, jid: &str, stanza_xml: &str, max: usize) -> Result<bool, StorageError>;
    /// Removes and returns all stored stanzas, oldest first.
    fn offline_take(&self, jid: &str) -> Result<Vec<String>, StorageError>;
    fn offline_count(&self, jid: &str) -> Result<usize, StorageError>;
    /// Appends to each row's owner's archive (XEP-0313) in one transaction, skipping rows
    /// the owner's preferences refuse; an owner's oldest rows beyond `per_owner_max` go.
    /// Backends keep a count per owner, so this costs no scan of the archive.
    fn archive_append(&self, rows: &[ArchiveRow], per_owner_max: usize) -> Result<(), StorageError>;
    fn archive_query(&self, owner: &str, query: &ArchiveQuery) -> Result<ArchivePage, StorageError>;
    /// The owner's preferences; the defaults when none were set.
    fn mam_prefs(&self, owner: &str) -> Result<MamPrefs, StorageError>;
    fn set_mam_prefs(&self, owner: &str, prefs: &MamPrefs) -> Result<(), StorageError>;
    /// A small per-user document (blocklist, private XML, vCard) by key.
    fn doc_get(&self, owner: &str, key: &str) -> Result<Option<String>, StorageError>;
    /// Replaces the document, or (`None`) removes it.
    fn doc_put(&self, owner: &str, key: &str, value: Option<&str>) -> Result<(), StorageError> {
        self.docs_put(owner, &[(key.to_owned(), value.map(str::to_owned))])
    }
    /// Replaces or (`None`) removes each document, all in one transaction.
    fn docs_put(&self, owner: &str, docs: &[(String, Option<String>)]) -> Result<(), StorageError>;
    /// Stores the document unless `key` is new and `max` of the owner's keys already start
    /// with `prefix` (then false): replacing one always works. Atomic, so concurrent sets
    /// from several sessions or nodes cannot pass `max` together.
    fn doc_put_capped(&self, owner: &str, key: &str, value: &str, prefix: &str, max: usize) -> Result<bool, StorageError>;
    /// The owner's documents whose keys start with `prefix`, at most `max`, by key.
    fn docs_under(&self, owner: &str, prefix: &str, max: usize) -> Result<Vec<(String, String)>, StorageError>;
    /// The server-wide secret named `name`, storing `fresh` first if there is none yet.
    /// Atomic, so nodes of a cluster starting together all end up with the same one.
    fn server_secret(&self, name: &str, fresh: &[u8]) -> Result<Vec<u8>, StorageError>;
}

type Job = Box<dyn FnOnce(&dyn Store) + Send>;

/// Async handle on the storage workers; cheap to clone, one per core is fine.
/// Dropping the last handle lets queued jobs finish, then joins the workers,
/// which closes the backend (so the database can be opened again at once).
#[derive(Clone)]
pub struct Storage {
    jobs: flume::Sender<Job>,
    /// Rows, with the per-owner cap they are written under.
    archive_rows: flume::Sender<(Vec<ArchiveRow>, usize)>,
    scram_iterations: u32,
    kdf: kdf_pool::KdfPool,
    /// Keys the credentials made up for names that are no account (`secrets::unknown_user`);
    /// kept in the store, so every node of a cluster makes up the same.
    unknown_user_secret: Arc<[u8]>,
    // Declared after `jobs` so the last handle drops its sender before
    // joining: the workers leave their loop once every sender is gone.
    _workers: Arc<Workers>,
}

pub(self) struct Workers(Vec<JoinHandle<()>>);

impl Drop for Workers {
    fn drop(&mut self) {
        for worker in self.0.drain(..) {
            // A worker only ends by the channel closing; a panic was caught.
            let _ = worker.join();
        }
    }
}

impl Storage {
    /// Opens the configured backend and starts the workers.
    pub fn open(cfg: &StorageConfig) -> Result<Storage, StorageError> {
        let store: Arc<dyn Store> = match cfg.backend {
            Backend::Embedded => Arc::new(RedbStore::open(&cfg.path, cfg.cache_bytes_max)?),
            // One connection per worker: a worker runs one call at a time.
            Backend::Postgres => Arc::new(PostgresStore::open(cfg, WORKERS as u32)?),
        };
        let unknown_user_secret = store.server_secret(secrets::UNKNOWN_USER_SECRET, &secrets::fresh_server_secret())?.into();
        let kdf = kdf_pool::KdfPool::start(cfg.password_hash_threads, cfg.password_hash_queue_jobs_max)?;
        let (jobs, queue) = flume::bounded::<Job>(cfg.job_queue_jobs_max);
        let workers = (0..WORKERS)
            .map(|i| {
                let (store, queue) = (store.clone(), queue.clone());
                std::thread::Builder::new()
                    .name(format!("storage-{i}"))
                    .spawn(move || work(&*store, queue))
                    .map_err(|e| StorageError::Backend(format!("starting worker thread: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (archive_rows, archive_queue) = flume::bounded(cfg.archive_queue_messages_max);
        let archiver = std::thread::Builder::new()
            .name("storage-archive".into())
            .spawn(move || write_archive(&*store, archive_queue))
            .map_err(|e| StorageError::Backend(format!("starting archive thread: {e}")))?;
        let workers = workers.into_iter().chain([archiver]).collect();
        Ok(Storage {
            jobs,
            archive_rows,
            scram_iterations: cfg.scram_iterations,
            kdf,
            unknown_user_secret,
            _workers: Arc::new(Workers(workers)),
        })
    }

    /// Runs `op` on a worker and awaits its result.
    async fn run<T: Send + 'static>(
        &self,
        op: impl FnOnce(&dyn Store) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let (reply, result) = flume::bounded(1);
        let job: Job = Box::new(move |store| {
            // The caller may have given up waiting; nothing to do then.
            let _ = reply.send(op(store));
        });
        self.jobs
            .send_async(job)
            .await
            .map_err(|_| StorageError::Unavailable)?;
        result
            .recv_async()
            .await
            .map_err(|_| StorageError::Unavailable)?
    }

    /// Adds a user with SCRAM-SHA-1 and SCRAM-SHA-256 credentials made from
    /// `password`; false if the user exists.
    pub async fn create_user(&self, jid: String, password: String, when_busy: WhenBusy) -> Result<bool, StorageError> {
        let credentials = self.derive(password, when_busy).await?;
        self.run(move |s| s.create_user(&jid, &credentials)).await
    }

    /// False if there is no such user.
    /// Also drops the user's XEP-0484 tokens: a new password logs every client out.
    pub async fn set_password(&self, jid: String, password: String, when_busy: WhenBusy) -> Result<bool, StorageError> {
        let credentials = self.derive(password, when_busy).await?;
        self.run(move |s| {
            let known = s.set_credentials(&jid, &credentials)?;
            if known {
                s.doc_put(&jid, FAST_TOKENS_DOC, None)?;
            }
            Ok(known)
        })
        .await
    }

    /// SCRAM credentials for `password`, made on the KDF pool.
    async fn derive(&self, password: String, when_busy: WhenBusy) -> Result<Credentials, StorageError> {
        let iterations = self.scram_iterations;
        self.kdf.run(when_busy, move || secrets::derive(&password, iterations)).await
    }

    /// Also deletes the roster and offline messages; false if unknown.
    pub async fn delete_user(&self, jid: String) -> Result<bool, StorageError> {
        self.run(move |s| s.delete_user(&jid)).await
    }

    /// Sorted bare JIDs.
    pub async fn list_users(&self) -> Result<Vec<String>, StorageError> {
        self.run(|s| s.list_users()).await
    }

    pub async fn user_exists(&self, jid: String) -> Result<bool, StorageError> {
        self.run(move |s| Ok(s.credentials(&jid)?.is_some())).await
    }

    /// An identifier of `parts` that only this server can compute (HMAC-SHA-256 under the
    /// server's secret, hex): the same at every start, unlinkable to them by anyone else
    /// (XEP-0421 occupant ids).
    pub fn keyed_id(&self, parts: &[&str]) -> String {
        let message = parts.join("\0");
        let mac = secrets::ScramHash::Sha256.hmac(&self.unknown_user_secret, message.as_bytes());
        mac.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }

    /// The user's credentials, or for a name that is no account made-up ones that look
    /// the same to a client and are the same at every attempt (`secrets::unknown_user`).
    /// The flag says which.
    pub async fn credentials_or_made_up(&self, jid: String) -> Result<(Credentials, bool), StorageError> {
        let (secret, iterations) = (self.unknown_user_secret.clone(), self.scram_iterations);
        self.run(move |s| {
            Ok(match s.credentials(&jid)? {
                Some(c) => (c, true),
                None => (secrets::unknown_user(&secret, &jid, iterations), false),
            })
        })
        .await
    }

    /// SASL PLAIN check; false for a wrong password or an unknown user, which costs the
    /// same PBKDF2 work. `StorageError::Busy` when the KDF pool is saturated.
    pub async fn verify_plain(&self, jid: String, password: String) -> Result<bool, StorageError> {
        Ok(self.plain_credentials(jid, password).await?.is_some())
    }

    /// As [`Self::verify_plain`], returning the credentials the password matched: a stream
    /// holds them until it binds, to see that they did not change meanwhile.
    pub async fn plain_credentials(&self, jid: String, password: String) -> Result<Option<Credentials>, StorageError> {
        let (stored, known) = self.credentials_or_made_up(jid).await?;
        let checked = stored.clone();
        let matches = self.kdf.run(WhenBusy::Refuse, move || secrets::verify(&checked, &password)).await?;
        Ok((known && matches).then_some(stored))
    }

    /// The account's current credentials; `None` once it is deleted.
    pub async fn credentials(&self, jid: String) -> Result<Option<Credentials>, StorageError> {
        self.run(move |s| s.credentials(&jid)).await
    }

    /// Sorted by contact JID.
    pub async fn roster(&self, jid: String) -> Result<Vec<RosterItem>, StorageError> {
        self.run(move |s| s.roster(&jid)).await
    }

    /// Inserts the item or replaces the one with the same `item.jid`.
    pub async fn roster_put(&self, jid: String, item: RosterItem) -> Result<(), StorageError> {
        self.run(move |s| s.roster_put(&jid, &item)).await
    }

    /// False if the contact was not in the roster.
    pub async fn roster_remove(&self, jid: String, contact: String) -> Result<bool, StorageError> {
        self.run(move |s| s.roster_remove(&jid, &contact)).await
    }

    /// Stores a stanza for later delivery; false when `max` are already
    /// stored, so the caller answers the sender with <resource-constraint/>.
    pub async fn offline_push(
        &self,
        jid: String,
        stanza_xml: String,
        max: usize,
    ) -> Result<bool, StorageError> {
        self.run(move |s| s.offline_push(&jid, &stanza_xml, max))
            .await
    }

    /// Removes and returns the stored stanzas in arrival order, atomically.
    pub async fn offline_take(&self, jid: String) -> Result<Vec<String>, StorageError> {
        self.run(move |s| s.offline_take(&jid)).await
    }

    pub async fn offline_count(&self, jid: String) -> Result<usize, StorageError> {
        self.run(move |s| s.offline_count(&jid)).await
    }

    /// Queues rows for the archive writer, which commits what has queued up in one
    /// transaction (group commit): the message path never waits for the disk, only for
    /// room in the queue when the writer falls behind (backpressure). Each owner keeps
    /// its newest `per_owner_max` rows (a rolling archive).
    pub async fn archive(&self, rows: Vec<ArchiveRow>, per_owner_max: usize) {
        if self.archive_rows.send_async((rows, per_owner_max)).await.is_err() {
            log::error!("archive writer gone; messages not archived");
        }
    }

    pub async fn archive_query(&self, owner: String, query: ArchiveQuery) -> Result<ArchivePage, StorageError> {
        self.run(move |s| s.archive_query(&owner, &query)).await
    }

    pub async fn mam_prefs(&self, owner: String) -> Result<MamPrefs, StorageError> {
        self.run(move |s| s.mam_prefs(&owner)).await
    }

    pub async fn set_mam_prefs(&self, owner: String, prefs: MamPrefs) -> Result<(), StorageError> {
        self.run(move |s| s.set_mam_prefs(&owner, &prefs)).await
    }

    pub async fn doc_get(&self, owner: String, key: String) -> Result<Option<String>, StorageError> {
        self.run(move |s| s.doc_get(&owner, &key)).await
    }

    pub async fn doc_put(&self, owner: String, key: String, value: Option<String>) -> Result<(), StorageError> {
        self.run(move |s| s.doc_put(&owner, &key, value.as_deref())).await
    }

    /// Replaces or (`None`) removes each document, atomically: all or none.
    pub async fn docs_put(&self, owner: String, docs: Vec<(String, Option<String>)>) -> Result<(), StorageError> {
        self.run(move |s| s.docs_put(&owner, &docs)).await
    }

    /// The owner's documents whose keys start with `prefix`, at most `max`.
    pub async fn docs_under(&self, owner: String, prefix: String, max: usize) -> Result<Vec<(String, String)>, StorageError> {
        self.run(move |s| s.docs_under(&owner, &prefix, max)).await
    }

    /// False when `key` is new and the owner has `max` keys starting with `prefix`.
    pub async fn doc_put_capped(
        &self,
        owner: String,
        key: String,
        value: String,
        prefix: &'static str,
        max: usize,
    ) -> Result<bool, StorageError> {
        debug_assert!(key.starts_with(prefix), "{key:?} is not under {prefix:?}");
        self.run(move |s| s.doc_put_capped(&owner, &key, &value, prefix, max)).await
    }
}

/// The archive writer's loop: takes what is queued, up to a batch, and appends it in one
/// transaction; returns when every `Storage` handle is gone.
fn write_archive(store: &dyn Store, queue: flume::Receiver<(Vec<ArchiveRow>, usize)>) {
    while let Ok((mut rows, mut per_owner_max)) = queue.recv() {
        while rows.len() < ARCHIVE_BATCH_ROWS_MAX {
            match queue.try_recv() {
                // One configuration sends one cap; should two ever meet, the tighter holds.
                Ok((more, max)) => {
                    rows.extend(more);
                    per_owner_max = per_owner_max.min(max);
                }
                Err(_) => break,
            }
        }
        if let Err(e) = store.archive_append(&rows, per_owner_max) {
            log::error!("{} archive rows not written: {e}", rows.len());
        }
    }
}

/// A worker's loop; returns when every `Storage` handle is gone.
fn work(store: &dyn Store, queue: flume::Receiver<Job>) {
    for job in queue.iter() {
        // A panicking job drops its reply sender, so only its caller sees an
        // error (`Unavailable`); the worker stays up for everyone else.
        if catch_unwind(AssertUnwindSafe(|| job(store))).is_err() {
            log::error!("a storage job panicked");
        }
    }
}

#[cfg(test)]
mod tests;
