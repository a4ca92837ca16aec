//! The embedded backend: one redb file, `martlet.redb`, under
//! `storage.path`. Every write is one committed redb transaction, which redb
//! makes durable (fsync) before `commit` returns, so an acknowledged write
//! survives a crash. Values are postcard-encoded; the `meta` table records the
//! schema version so a future layout change is detected, not misread.

use std::fs;
use std::ops::RangeInclusive;
use std::path::Path;

use redb::{Database, ReadOnlyTable, ReadableTable, Table, TableDefinition, WriteTransaction};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use std::collections::{BTreeMap, HashMap};

use super::{ArchivePage, ArchiveQuery, ArchiveRow, Credentials, MamPrefs, RosterItem, ScramHash, ScramKeys, StorageError, Store};

const FILE_NAME: &str = "martlet.redb";

/// Bump when any table layout or value encoding changes. 2 added `archive_counts`; a
/// version 1 file is upgraded on open (`count_archives`), and older builds then refuse it
/// rather than archive without counting. 3 keeps SCRAM keys instead of salted passwords
/// (`salted_passwords_to_keys`).
const SCHEMA_VERSION: u64 = 3;
const SCHEMA_VERSION_KEY: &str = "schema_version";

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// user -> `CredentialsRecord`
const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
/// (user, contact) -> `RosterItem`
const ROSTER: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("roster");
/// (user, arrival sequence number) -> stanza XML
const OFFLINE: TableDefinition<(&str, u64), &str> = TableDefinition::new("offline");
/// (owner, archive id) -> `ArchivedRecord` (XEP-0313)
const ARCHIVE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("archive");
/// owner -> rows that owner has in `ARCHIVE`, so the cap is kept without counting them
const ARCHIVE_COUNTS: TableDefinition<&str, u64> = TableDefinition::new("archive_counts");
/// owner -> `MamPrefs`
const MAM_PREFS: TableDefinition<&str, &[u8]> = TableDefinition::new("mam_prefs");
/// (owner, key) -> document text
const DOCS: TableDefinition<(&str, &str), &str> = TableDefinition::new("documents");
/// name -> server-wide secret (the key behind made-up SCRAM salts for unknown users). A new
/// table older builds never open, so the schema version stays.
const SERVER_SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("server_secrets");

#[derive(Serialize, Deserialize)]
struct ArchivedRecord {
    with: String,
    xml: String,
}

/// On-disk form of one mechanism's `ScramKeys`.
#[derive(Serialize, Deserialize)]
struct KeysRecord {
    salt: Vec<u8>,
    iterations: u32,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct CredentialsRecord {
    sha1: KeysRecord,
    sha256: KeysRecord,
}

impl From<&ScramKeys> for KeysRecord {
    fn from(k: &ScramKeys) -> Self {
        KeysRecord { salt: k.salt.clone(), iterations: k.iterations, stored_key: k.stored_key.clone(), server_key: k.server_key.clone() }
    }
}

impl From<KeysRecord> for ScramKeys {
    fn from(r: KeysRecord) -> Self {
        ScramKeys { salt: r.salt, iterations: r.iterations, stored_key: r.stored_key, server_key: r.server_key }
    }
}

impl From<&Credentials> for CredentialsRecord {
    fn from(c: &Credentials) -> Self {
        CredentialsRecord { sha1: (&c.sha1).into(), sha256: (&c.sha256).into() }
    }
}

impl From<CredentialsRecord> for Credentials {
    fn from(r: CredentialsRecord) -> Self {
        Credentials { sha1: r.sha1.into(), sha256: r.sha256.into() }
    }
}

/// Schema 2 and before: the salted password itself (`digest`), which is enough to log in.
#[derive(Serialize, Deserialize)]
struct SaltedPasswordRecord {
    salt: Vec<u8>,
    iterations: u32,
    digest: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct SaltedCredentialsRecord {
    sha1: SaltedPasswordRecord,
    sha256: SaltedPasswordRecord,
}

/// Schema 2 to 3: every account's salted passwords become StoredKey and ServerKey, so the
/// accounts keep working and nothing that logs in is left on disk.
fn salted_passwords_to_keys(txn: &WriteTransaction) -> Result<(), StorageError> {
    let mut users = txn.open_table(USERS)?;
    let old = users
        .iter()?
        .map(|entry| {
            let (jid, value) = entry?;
            Ok((jid.value().to_owned(), decode::<SaltedCredentialsRecord>(value.value(), "schema 2 credentials")?))
        })
        .collect::<Result<Vec<_>, StorageError>>()?;
    for (jid, r) in old {
        let keys = |hash: ScramHash, p: SaltedPasswordRecord| hash.keys_from_salted(&p.digest, p.salt, p.iterations);
        let credentials = Credentials { sha1: keys(ScramHash::Sha1, r.sha1), sha256: keys(ScramHash::Sha256, r.sha256) };
        users.insert(jid.as_str(), encode(&CredentialsRecord::from(&credentials))?.as_slice())?;
    }
    Ok(())
}

/// redb's error types all become `StorageError::Backend`, so `?` works on each.
macro_rules! backend_errors {
    ($($error:ty),*) => {$(
        impl From<$error> for StorageError {
            fn from(e: $error) -> Self {
                StorageError::Backend(e.to_string())
            }
        }
    )*};
}
backend_errors!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

fn encode(value: &impl Serialize) -> Result<Vec<u8>, StorageError> {
    postcard::to_allocvec(value).map_err(|e| StorageError::Backend(format!("encoding: {e}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StorageError> {
    postcard::from_bytes(bytes).map_err(|e| StorageError::Corrupt(format!("{what}: {e}")))
}

/// Every key of `user` in a table keyed by (user, sequence).
fn user_keys(user: &str) -> RangeInclusive<(&str, u64)> {
    (user, 0)..=(user, u64::MAX)
}

/// Schema 1 to 2: counts every owner's archive rows once, as `archive_append` then keeps them.
fn count_archives(txn: &WriteTransaction) -> Result<(), StorageError> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for entry in txn.open_table(ARCHIVE)?.iter()? {
        *counts.entry(entry?.0.value().0.to_owned()).or_default() += 1;
    }
    let mut table = txn.open_table(ARCHIVE_COUNTS)?;
    for (owner, count) in &counts {
        table.insert(owner.as_str(), count)?;
    }
    Ok(())
}

/// Drops `owner`'s oldest rows beyond `max` of the `count` it has (ids sort by time);
/// returns how many are left.
fn trim_oldest(archive: &mut Table<(&str, u64), &[u8]>, owner: &str, count: u64, max: u64) -> Result<u64, StorageError> {
    let excess = count.saturating_sub(max);
    if excess == 0 {
        return Ok(count);
    }
    let oldest = archive
        .range(user_keys(owner))?
        .take(excess as usize)
        .map(|entry| Ok(entry?.0.value().1))
        .collect::<Result<Vec<u64>, StorageError>>()?;
    for id in &oldest {
        archive.remove((owner, *id))?;
    }
    Ok(count - oldest.len() as u64)
}

/// `user`'s roster entries as (contact, encoded item), sorted by contact.
/// The range has no exact upper bound, so it stops at the first other user.
fn roster_entries(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    user: &str,
) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
    let mut entries = Vec::new();
    for entry in table.range((user, "")..)? {
        let (key, value) = entry?;
        let (owner, contact) = key.value();
        if owner != user {
            break;
        }
        entries.push((contact.to_owned(), value.value().to_vec()));
    }
    Ok(entries)
}

pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    /// Opens `<dir>/martlet.redb`, creating the directory and file if missing, with at most
    /// `cache_bytes_max` of its pages cached in memory.
    pub fn open(dir: &Path, cache_bytes_max: usize) -> Result<RedbStore, StorageError> {
        let path = dir.join(FILE_NAME);
        let open_error = |reason: String| StorageError::Open {
            path: path.clone(),
            reason,
        };
        fs::create_dir_all(dir).map_err(|e| open_error(e.to_string()))?;
        let db = redb::Builder::new().set_cache_size(cache_bytes_max).create(&path).map_err(|e| {
            open_error(match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    "in use by another process (is the server running?)".into()
                }
                other => other.to_string(),
            })
        })?;
        let store = RedbStore { db };
        store
            .prepare_schema()
            .map_err(|e| open_error(e.to_string()))?;
        Ok(store)
    }

    /// Creates the tables of a new file and refuses a file of another schema.
    fn prepare_schema(&self) -> Result<(), StorageError> {
        self.write(|txn| {
            txn.open_table(USERS)?;
            txn.open_table(ROSTER)?;
            txn.open_table(OFFLINE)?;
            txn.open_table(ARCHIVE)?;
            txn.open_table(ARCHIVE_COUNTS)?;
            txn.open_table(MAM_PREFS)?;
            txn.open_table(DOCS)?;
            txn.open_table(SERVER_SECRETS)?;
            let mut meta = txn.open_table(META)?;
            let found = meta.get(SCHEMA_VERSION_KEY)?.map(|v| v.value());
            match found {
                None => {
                    meta.insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION)?;
                    Ok(())
                }
                Some(SCHEMA_VERSION) => Ok(()),
                Some(old @ (1 | 2)) => {
                    if old == 1 {
                        count_archives(txn)?;
                    }
                    salted_passwords_to_keys(txn)?;
                    meta.insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION)?;
                    Ok(())
                }
                Some(other) => Err(StorageError::Corrupt(format!(
                    "schema version {other}; this build reads version {SCHEMA_VERSION}"
                ))),
            }
        })
    }

    /// Runs `op` in one write transaction, committed only if `op` succeeds.
    fn write<T>(
        &self,
        op: impl FnOnce(&WriteTransaction) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let txn = self.db.begin_write()?;
        let value = op(&txn)?;
        txn.commit()?;
        Ok(value)
    }

    /// A consistent snapshot of one table.
    fn read<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        table: TableDefinition<K, V>,
    ) -> Result<ReadOnlyTable<K, V>, StorageError> {
        Ok(self.db.begin_read()?.open_table(table)?)
    }

    /// Writes credentials only if the user's existence is `must_exist`;
    /// returns whether it wrote.
    fn put_credentials(
        &self,
        jid: &str,
        credentials: &Credentials,
        must_exist: bool,
    ) -> Result<bool, StorageError> {
        let value = encode(&CredentialsRecord::from(credentials))?;
        self.write(|txn| {
            let mut users = txn.open_table(USERS)?;
            let exists = users.get(jid)?.is_some();
            if exists != must_exist {
                return Ok(false);
            }
            users.insert(jid, value.as_slice())?;
            Ok(true)
        })
    }
}

impl Store for RedbStore {
    fn create_user(&self, jid: &str, credentials: &Credentials) -> Result<bool, StorageError> {
        self.put_credentials(jid, credentials, false)
    }

    fn set_credentials(&self, jid: &str, credentials: &Credentials) -> Result<bool, StorageError> {
        self.put_credentials(jid, credentials, true)
    }

    fn delete_user(&self, jid: &str) -> Result<bool, StorageError> {
        self.write(|txn| {
            let existed = txn.open_table(USERS)?.remove(jid)?.is_some();
            let mut roster = txn.open_table(ROSTER)?;
            for (contact, _) in roster_entries(&roster, jid)? {
                roster.remove((jid, contact.as_str()))?;
            }
            txn.open_table(OFFLINE)?
                .retain_in(user_keys(jid), |_, _| false)?;
            txn.open_table(ARCHIVE)?.retain_in(user_keys(jid), |_, _| false)?;
            txn.open_table(ARCHIVE_COUNTS)?.remove(jid)?;
            txn.open_table(MAM_PREFS)?.remove(jid)?;
            txn.open_table(DOCS)?.retain(|(owner, _), _| owner != jid)?;
            Ok(existed)
        })
    }

    fn list_users(&self) -> Result<Vec<String>, StorageError> {
        // redb iterates keys in byte order, which is the sorted order wanted.
        self.read(USERS)?
            .iter()?
            .map(|entry| Ok(entry?.0.value().to_owned()))
            .collect()
    }

    fn credentials(&self, jid: &str) -> Result<Option<Credentials>, StorageError> {
        match self.read(USERS)?.get(jid)? {
            Some(value) => Ok(Some(
                decode::<CredentialsRecord>(value.value(), "credentials")?.into(),
            )),
            None => Ok(None),
        }
    }

    fn roster(&self, jid: &str) -> Result<Vec<RosterItem>, StorageError> {
        roster_entries(&self.read(ROSTER)?, jid)?
            .iter()
            .map(|(_, value)| decode(value, "roster item"))
            .collect()
    }

    fn roster_put(&self, jid: &str, item: &RosterItem) -> Result<(), StorageError> {
        let value = encode(item)?;
        self.write(|txn| {
            txn.open_table(ROSTER)?
                .insert((jid, item.jid.as_str()), value.as_slice())?;
            Ok(())
        })
    }

    fn roster_remove(&self, jid: &str, contact: &str) -> Result<bool, StorageError> {
        self.write(|txn| Ok(txn.open_table(ROSTER)?.remove((jid, contact))?.is_some()))
    }

    fn offline_push(&self, jid: &str, stanza_xml: &str, max: usize) -> Result<bool, StorageError> {
        self.write(|txn| {
            let mut offline = txn.open_table(OFFLINE)?;
            let (mut count, mut last) = (0, None);
            for entry in offline.range(user_keys(jid))? {
                count += 1;
                last = Some(entry?.0.value().1);
            }
            if count >= max {
                return Ok(false);
            }
            // Keys sort by this number, so delivery keeps arrival order.
            let sequence = last.map_or(0, |n| n + 1);
            offline.insert((jid, sequence), stanza_xml)?;
            Ok(true)
        })
    }

    fn offline_take(&self, jid: &str) -> Result<Vec<String>, StorageError> {
        self.write(|txn| {
            txn.open_table(OFFLINE)?
                .extract_from_if(user_keys(jid), |_, _| true)?
                .map(|entry| Ok(entry?.1.value().to_owned()))
                .collect()
        })
    }

    fn offline_count(&self, jid: &str) -> Result<usize, StorageError> {
        let mut count = 0;
        for entry in self.read(OFFLINE)?.range(user_keys(jid))? {
            entry?;
            count += 1;
        }
        Ok(count)
    }

    fn archive_append(&self, rows: &[ArchiveRow], per_owner_max: usize) -> Result<(), StorageError> {
        self.write(|txn| {
            let mut archive = txn.open_table(ARCHIVE)?;
            let prefs_table = txn.open_table(MAM_PREFS)?;
            let roster = txn.open_table(ROSTER)?;
            let mut prefs: HashMap<&str, MamPrefs> = HashMap::new();
            let mut added: HashMap<&str, u64> = HashMap::new();
            for row in rows {
                if !prefs.contains_key(row.owner.as_str()) {
                    let p = match prefs_table.get(row.owner.as_str())? {
                        Some(v) => decode(v.value(), "archive preferences")?,
                        None => MamPrefs::default(),
                    };
                    prefs.insert(&row.owner, p);
                }
                let in_roster = || matches!(roster.get((row.owner.as_str(), row.with.as_str())), Ok(Some(_)));
                if prefs[row.owner.as_str()].admits(&row.with, in_roster) {
                    let record = encode(&ArchivedRecord { with: row.with.clone(), xml: row.xml.clone() })?;
                    // An id stored before (a message sent again) replaces its row: no new one.
                    if archive.insert((row.owner.as_str(), row.id), record.as_slice())?.is_none() {
                        *added.entry(&row.owner).or_default() += 1;
                    }
                }
            }
            let mut counts = txn.open_table(ARCHIVE_COUNTS)?;
            for (owner, n) in added {
                let count = counts.get(owner)?.map_or(0, |c| c.value()) + n;
                let left = trim_oldest(&mut archive, owner, count, per_owner_max as u64)?;
                counts.insert(owner, left)?;
            }
            Ok(())
        })
    }

    fn archive_query(&self, owner: &str, query: &ArchiveQuery) -> Result<ArchivePage, StorageError> {
        let lo = query.after_id.map_or(0, |a| a.saturating_add(1));
        let hi = query.before_id.map_or(u64::MAX, |b| b.saturating_sub(1));
        if lo > hi {
            return Ok(ArchivePage { items: Vec::new(), complete: true });
        }
        let table = self.read(ARCHIVE)?;
        let range = table.range((owner, lo)..=(owner, hi))?;
        let entries: Box<dyn Iterator<Item = _>> = if query.from_end { Box::new(range.rev()) } else { Box::new(range) };
        let mut items = Vec::new();
        for entry in entries {
            let (key, value) = entry?;
            let record: ArchivedRecord = decode(value.value(), "archived message")?;
            if query.with.as_ref().is_some_and(|w| *w != record.with) {
                continue;
            }
            items.push((key.value().1, record.with, record.xml));
            if items.len() > query.max {
                break;
            }
        }
        Ok(ArchivePage::from_scan(items, query))
    }

    fn mam_prefs(&self, owner: &str) -> Result<MamPrefs, StorageError> {
        match self.read(MAM_PREFS)?.get(owner)? {
            Some(v) => decode(v.value(), "archive preferences"),
            None => Ok(MamPrefs::default()),
        }
    }

    fn set_mam_prefs(&self, owner: &str, prefs: &MamPrefs) -> Result<(), StorageError> {
        let value = encode(prefs)?;
        self.write(|txn| {
            txn.open_table(MAM_PREFS)?.insert(owner, value.as_slice())?;
            Ok(())
        })
    }

    fn doc_get(&self, owner: &str, key: &str) -> Result<Option<String>, StorageError> {
        Ok(self.read(DOCS)?.get((owner, key))?.map(|v| v.value().to_owned()))
    }

    fn docs_put(&self, owner: &str, docs: &[(String, Option<String>)]) -> Result<(), StorageError> {
        self.write(|txn| {
            let mut table = txn.open_table(DOCS)?;
            for (key, value) in docs {
                match value {
                    Some(v) => table.insert((owner, key.as_str()), v.as_str())?,
                    None => table.remove((owner, key.as_str()))?,
                };
            }
            Ok(())
        })
    }

    fn docs_under(&self, owner: &str, prefix: &str, max: usize) -> Result<Vec<(String, String)>, StorageError> {
        let table = self.read(DOCS)?;
        let mut found = Vec::new();
        // Keys sort by owner, then bytes: the owner's keys under `prefix` are one run.
        for entry in table.range((owner, prefix)..)? {
            let (key, value) = entry?;
            let (o, k) = key.value();
            if o != owner || !k.starts_with(prefix) || found.len() >= max {
                break;
            }
            found.push((k.to_owned(), value.value().to_owned()));
        }
        Ok(found)
    }

    fn doc_put_capped(&self, owner: &str, key: &str, value: &str, prefix: &str, max: usize) -> Result<bool, StorageError> {
        self.write(|txn| {
            let mut docs = txn.open_table(DOCS)?;
            if docs.get((owner, key))?.is_none() {
                // Keys sort by owner, then bytes: the owner's keys under `prefix` are one run.
                let mut under = 0;
                for entry in docs.range((owner, prefix)..)? {
                    let (key, _) = entry?;
                    let (o, k) = key.value();
                    if o != owner || !k.starts_with(prefix) || under >= max {
                        break;
                    }
                    under += 1;
                }
                if under >= max {
                    return Ok(false);
                }
            }
            docs.insert((owner, key), value)?;
            Ok(true)
        })
    }

    fn server_secret(&self, name: &str, fresh: &[u8]) -> Result<Vec<u8>, StorageError> {
        self.write(|txn| {
            let mut secrets = txn.open_table(SERVER_SECRETS)?;
            if let Some(kept) = secrets.get(name)? {
                return Ok(kept.value().to_vec());
            }
            secrets.insert(name, fresh)?;
            Ok(fresh.to_vec())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes 3,000 documents of 200 bytes and reads them back: redb's cache evictions.
    fn evictions_with_cache_of(cache_bytes_max: usize) -> u64 {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path(), cache_bytes_max).unwrap();
        let value = "x".repeat(200);
        let docs: Vec<(String, Option<String>)> = (0..3000).map(|i| (format!("doc{i}"), Some(value.clone()))).collect();
        store.docs_put("owner@localhost", &docs).unwrap();
        for (key, _) in &docs {
            assert!(store.doc_get("owner@localhost", key).unwrap().is_some());
        }
        store.db.cache_stats().evictions()
    }

    #[test]
    fn the_page_cache_stays_within_cache_bytes_max() {
        assert!(evictions_with_cache_of(16 * 1024) > 0);
        assert_eq!(evictions_with_cache_of(crate::config::StorageConfig::default().cache_bytes_max), 0);
    }
}
