//! The PostgreSQL backend, for clusters: every node reads and writes the same database.
//! Each `Store` call is one statement or one transaction on a pooled connection, committed
//! before the call returns, so an acknowledged write is as durable as the server makes it.
//! The schema is in `postgres_migrations/`, applied on open by [`super::postgres_migrate`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use postgres::{Row, Transaction};
use tokio_postgres_rustls::MakeRustlsConnect;
use r2d2::{Pool, PooledConnection};
use r2d2_postgres::PostgresConnectionManager;

use super::postgres_migrate::{backend, migrate};
use super::postgres_tls;
use crate::config::StorageConfig;
use super::{ArchivePage, ArchiveQuery, ArchiveRow, Credentials, DefaultMode, MamPrefs, RosterItem, ScramKeys, StorageError, Store, Subscription};

type Manager = PostgresConnectionManager<MakeRustlsConnect>;

/// How long a call waits for a pooled connection (the database down or every connection
/// busy) before it fails; the caller answers its client with an error, never hangs.
const CONNECTION_WAIT: Duration = Duration::from_secs(10);

pub struct PostgresStore {
    pool: Pool<Manager>,
}

impl PostgresStore {
    /// Connects (`connections_max` pooled connections at most, with TLS as `cfg` says),
    /// then applies migrations.
    pub fn open(cfg: &StorageConfig, connections_max: u32) -> Result<PostgresStore, StorageError> {
        let url = &cfg.postgres_url;
        let mut config: postgres::Config = url.parse().map_err(|e| open_error(url, format!("{e}")))?;
        let (tls, ssl_mode) = postgres_tls::connector(cfg).map_err(|e| open_error(url, e))?;
        config.ssl_mode(ssl_mode);
        // One connection first, for its error: the pool's says only that it timed out.
        config.connect(tls.clone()).map_err(|e| open_error(url, with_causes(&e)))?;
        let pool = Pool::builder()
            .max_size(connections_max)
            .connection_timeout(CONNECTION_WAIT)
            .build(PostgresConnectionManager::new(config, tls))
            .map_err(|e| open_error(url, e.to_string()))?;
        let store = PostgresStore { pool };
        migrate(&mut *store.connection()?).map_err(|e| open_error(url, e.to_string()))?;
        Ok(store)
    }

    fn connection(&self) -> Result<PooledConnection<Manager>, StorageError> {
        self.pool.get().map_err(|e| StorageError::Backend(format!("PostgreSQL connection: {e}")))
    }

    /// Runs `op` in one transaction, committed only if `op` succeeds.
    fn transaction<T>(&self, op: impl FnOnce(&mut Transaction) -> Result<T, postgres::Error>) -> Result<T, StorageError> {
        let mut conn = self.connection()?;
        let mut txn = conn.transaction().map_err(backend)?;
        let value = op(&mut txn).map_err(backend)?;
        txn.commit().map_err(backend)?;
        Ok(value)
    }

    /// Rows changed by one statement, outside any explicit transaction.
    fn execute(&self, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> Result<u64, StorageError> {
        self.connection()?.execute(sql, params).map_err(backend)
    }

    fn query(&self, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> Result<Vec<Row>, StorageError> {
        self.connection()?.query(sql, params).map_err(backend)
    }
}

/// The URL without its password, for error messages and logs.
/// An error and what caused it ("error performing TLS handshake: invalid peer
/// certificate: UnknownIssuer"), so an operator sees the reason, not its wrapper.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

fn open_error(url: &str, reason: String) -> StorageError {
    let shown = match url.parse::<postgres::Config>() {
        Ok(c) => format!(
            "postgresql://{}@{:?}:{:?}/{}",
            c.get_user().unwrap_or(""),
            c.get_hosts(),
            c.get_ports(),
            c.get_dbname().unwrap_or("")
        ),
        Err(_) => "postgresql (unparsable URL)".into(),
    };
    StorageError::Open { path: PathBuf::from(shown), reason }
}

fn iterations(n: u32) -> i32 {
    // Config caps nothing here, but PBKDF2 rounds beyond i32 would take days per login.
    i32::try_from(n).unwrap_or(i32::MAX)
}

const UPSERT_CREDENTIALS: &str = "sha1_salt = $2, sha1_iterations = $3, sha1_stored_key = $4, sha1_server_key = $5, \
     sha256_salt = $6, sha256_iterations = $7, sha256_stored_key = $8, sha256_server_key = $9";

fn credentials_params<'a>(jid: &'a &str, c: &'a Credentials, rounds: &'a [i32; 2]) -> [&'a (dyn postgres::types::ToSql + Sync); 9] {
    let (a, b) = (&c.sha1, &c.sha256);
    [jid, &a.salt, &rounds[0], &a.stored_key, &a.server_key, &b.salt, &rounds[1], &b.stored_key, &b.server_key]
}

fn subscription_of(text: &str) -> Result<Subscription, StorageError> {
    Ok(match text {
        "none" => Subscription::None,
        "to" => Subscription::To,
        "from" => Subscription::From,
        "both" => Subscription::Both,
        other => return Err(StorageError::Corrupt(format!("roster subscription {other:?}"))),
    })
}

fn mam_prefs_of(rows: &[Row]) -> Result<MamPrefs, StorageError> {
    let Some(row) = rows.first() else { return Ok(MamPrefs::default()) };
    let mode: &str = row.get("default_mode");
    Ok(MamPrefs {
        default: DefaultMode::parse(mode).ok_or_else(|| StorageError::Corrupt(format!("archive default {mode:?}")))?,
        always: row.get("always_jids"),
        never: row.get("never_jids"),
    })
}

/// Archive ids fit in BIGINT: micros << 10 stays below 2^63 until the year 2262.
fn archive_id(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

/// Adds `added` new rows to the owner's count and drops its oldest rows past `max`. The
/// count's row stays locked to the end of the transaction, so appends for one owner from
/// several nodes count and trim in turn, each seeing the rows of those before.
fn count_and_trim(txn: &mut Transaction, owner: &str, added: i64, max: i64) -> Result<(), postgres::Error> {
    let count: i64 = txn
        .query_one(
            "INSERT INTO mam_archive_counts (owner, messages) VALUES ($1, $2) \
             ON CONFLICT (owner) DO UPDATE SET messages = mam_archive_counts.messages + $2 RETURNING messages",
            &[&owner, &added],
        )?
        .get(0);
    if count > max {
        let sql = "DELETE FROM mam_archive WHERE owner = $1 AND id IN \
                   (SELECT id FROM mam_archive WHERE owner = $1 ORDER BY id LIMIT $2)";
        let dropped = txn.execute(sql, &[&owner, &(count - max)])? as i64;
        txn.execute("UPDATE mam_archive_counts SET messages = messages - $2 WHERE owner = $1", &[&owner, &dropped])?;
    }
    Ok(())
}

const UPSERT_DOCUMENT: &str =
    "INSERT INTO user_documents (owner, key, value) VALUES ($1, $2, $3) ON CONFLICT (owner, key) DO UPDATE SET value = $3";

fn roster_item(row: &Row) -> Result<RosterItem, StorageError> {
    Ok(RosterItem {
        jid: row.get("contact"),
        name: row.get("name"),
        groups: row.get("groups"),
        subscription: subscription_of(row.get("subscription"))?,
        ask_out: row.get("ask_out"),
        pending_in: row.get("pending_in"),
        listed: row.get("listed"),
    })
}

impl Store for PostgresStore {
    fn create_user(&self, jid: &str, credentials: &Credentials) -> Result<bool, StorageError> {
        let rounds = [iterations(credentials.sha1.iterations), iterations(credentials.sha256.iterations)];
        let sql = "INSERT INTO users (jid, sha1_salt, sha1_iterations, sha1_stored_key, sha1_server_key, sha256_salt, \
                   sha256_iterations, sha256_stored_key, sha256_server_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                   ON CONFLICT (jid) DO NOTHING";
        Ok(self.execute(sql, &credentials_params(&jid, credentials, &rounds))? == 1)
    }

    fn set_credentials(&self, jid: &str, credentials: &Credentials) -> Result<bool, StorageError> {
        let rounds = [iterations(credentials.sha1.iterations), iterations(credentials.sha256.iterations)];
        let sql = format!("UPDATE users SET {UPSERT_CREDENTIALS} WHERE jid = $1");
        Ok(self.execute(&sql, &credentials_params(&jid, credentials, &rounds))? == 1)
    }

    fn delete_user(&self, jid: &str) -> Result<bool, StorageError> {
        self.transaction(|txn| {
            let existed = txn.execute("DELETE FROM users WHERE jid = $1", &[&jid])? == 1;
            txn.execute("DELETE FROM roster_items WHERE owner = $1", &[&jid])?;
            txn.execute("DELETE FROM offline_messages WHERE owner = $1", &[&jid])?;
            txn.execute("DELETE FROM mam_archive WHERE owner = $1", &[&jid])?;
            txn.execute("DELETE FROM mam_archive_counts WHERE owner = $1", &[&jid])?;
            txn.execute("DELETE FROM mam_prefs WHERE owner = $1", &[&jid])?;
            txn.execute("DELETE FROM user_documents WHERE owner = $1", &[&jid])?;
            Ok(existed)
        })
    }

    fn list_users(&self) -> Result<Vec<String>, StorageError> {
        // COLLATE "C": byte order, as the embedded store sorts.
        let rows = self.query(r#"SELECT jid FROM users ORDER BY jid COLLATE "C""#, &[])?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn credentials(&self, jid: &str) -> Result<Option<Credentials>, StorageError> {
        let rows = self.query("SELECT * FROM users WHERE jid = $1", &[&jid])?;
        let Some(row) = rows.first() else { return Ok(None) };
        let rounds = |column: &str| {
            u32::try_from(row.get::<_, i32>(column)).map_err(|_| StorageError::Corrupt(format!("{jid}: {column}")))
        };
        let keys = |mech: &str| -> Result<ScramKeys, StorageError> {
            Ok(ScramKeys {
                salt: row.get(format!("{mech}_salt").as_str()),
                iterations: rounds(&format!("{mech}_iterations"))?,
                stored_key: row.get(format!("{mech}_stored_key").as_str()),
                server_key: row.get(format!("{mech}_server_key").as_str()),
            })
        };
        Ok(Some(Credentials { sha1: keys("sha1")?, sha256: keys("sha256")? }))
    }

    fn roster(&self, jid: &str) -> Result<Vec<RosterItem>, StorageError> {
        let sql = r#"SELECT * FROM roster_items WHERE owner = $1 ORDER BY contact COLLATE "C""#;
        self.query(sql, &[&jid])?.iter().map(roster_item).collect()
    }

    fn roster_put(&self, jid: &str, item: &RosterItem) -> Result<(), StorageError> {
        let sql = "INSERT INTO roster_items (owner, contact, name, groups, subscription, ask_out, pending_in, listed) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                   ON CONFLICT (owner, contact) DO UPDATE SET name = $3, groups = $4, subscription = $5, \
                   ask_out = $6, pending_in = $7, listed = $8";
        let subscription = item.subscription.as_str();
        self.execute(
            sql,
            &[&jid, &item.jid, &item.name, &item.groups, &subscription, &item.ask_out, &item.pending_in, &item.listed],
        )?;
        Ok(())
    }

    fn roster_remove(&self, jid: &str, contact: &str) -> Result<bool, StorageError> {
        Ok(self.execute("DELETE FROM roster_items WHERE owner = $1 AND contact = $2", &[&jid, &contact])? == 1)
    }

    fn offline_push(&self, jid: &str, stanza_xml: &str, max: usize) -> Result<bool, StorageError> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        self.transaction(|txn| {
            // Per-recipient lock, so concurrent pushes from several nodes cannot pass `max`
            // together; it ends with the transaction.
            txn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&jid])?;
            let count: i64 = txn.query_one("SELECT count(*) FROM offline_messages WHERE owner = $1", &[&jid])?.get(0);
            if count >= max {
                return Ok(false);
            }
            txn.execute("INSERT INTO offline_messages (owner, stanza) VALUES ($1, $2)", &[&jid, &stanza_xml])?;
            Ok(true)
        })
    }

    fn offline_take(&self, jid: &str) -> Result<Vec<String>, StorageError> {
        let sql = "WITH taken AS (DELETE FROM offline_messages WHERE owner = $1 RETURNING id, stanza) \
                   SELECT stanza FROM taken ORDER BY id";
        Ok(self.query(sql, &[&jid])?.iter().map(|r| r.get(0)).collect())
    }

    fn offline_count(&self, jid: &str) -> Result<usize, StorageError> {
        let count: i64 = self.query("SELECT count(*) FROM offline_messages WHERE owner = $1", &[&jid])?[0].get(0);
        Ok(count as usize)
    }

    fn archive_append(&self, rows: &[ArchiveRow], per_owner_max: usize) -> Result<(), StorageError> {
        let mut prefs_of: HashMap<&str, MamPrefs> = HashMap::new();
        // Written owner by owner in one order on every node, so writers that lock the same
        // owners' count rows take them in the same order and never deadlock.
        let mut admitted: BTreeMap<&str, Vec<&ArchiveRow>> = BTreeMap::new();
        let conn = &mut *self.connection()?;
        for row in rows {
            if !prefs_of.contains_key(row.owner.as_str()) {
                let found = conn.query("SELECT * FROM mam_prefs WHERE owner = $1", &[&row.owner]).map_err(backend)?;
                prefs_of.insert(&row.owner, mam_prefs_of(&found)?);
            }
            let in_roster = || {
                let sql = "SELECT 1 FROM roster_items WHERE owner = $1 AND contact = $2";
                conn.query(sql, &[&row.owner, &row.with]).is_ok_and(|r| !r.is_empty())
            };
            if prefs_of[row.owner.as_str()].admits(&row.with, in_roster) {
                admitted.entry(&row.owner).or_default().push(row);
            }
        }
        let max = i64::try_from(per_owner_max).unwrap_or(i64::MAX);
        let mut txn = conn.transaction().map_err(backend)?;
        let insert = txn
            .prepare("INSERT INTO mam_archive (owner, id, with_jid, xml) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
            .map_err(backend)?;
        for (owner, rows) in admitted {
            let mut added = 0;
            for row in rows {
                added += txn.execute(&insert, &[&row.owner, &archive_id(row.id), &row.with, &row.xml]).map_err(backend)?;
            }
            if added > 0 {
                count_and_trim(&mut txn, owner, added as i64, max).map_err(backend)?;
            }
        }
        txn.commit().map_err(backend)
    }

    fn archive_query(&self, owner: &str, query: &ArchiveQuery) -> Result<ArchivePage, StorageError> {
        let order = if query.from_end { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT id, with_jid, xml FROM mam_archive WHERE owner = $1 AND id > $2 AND id < $3 \
             AND ($4::TEXT IS NULL OR with_jid = $4) ORDER BY id {order} LIMIT $5"
        );
        let after = query.after_id.map_or(-1, archive_id);
        let before = query.before_id.map_or(i64::MAX, archive_id);
        let limit = i64::try_from(query.max + 1).unwrap_or(i64::MAX);
        let rows = self.query(&sql, &[&owner, &after, &before, &query.with, &limit])?;
        let items = rows.iter().map(|r| (r.get::<_, i64>(0) as u64, r.get(1), r.get(2))).collect();
        Ok(ArchivePage::from_scan(items, query))
    }

    fn mam_prefs(&self, owner: &str) -> Result<MamPrefs, StorageError> {
        mam_prefs_of(&self.query("SELECT * FROM mam_prefs WHERE owner = $1", &[&owner])?)
    }

    fn set_mam_prefs(&self, owner: &str, prefs: &MamPrefs) -> Result<(), StorageError> {
        let sql = "INSERT INTO mam_prefs (owner, default_mode, always_jids, never_jids) VALUES ($1, $2, $3, $4) \
                   ON CONFLICT (owner) DO UPDATE SET default_mode = $2, always_jids = $3, never_jids = $4";
        self.execute(sql, &[&owner, &prefs.default.as_str(), &prefs.always, &prefs.never])?;
        Ok(())
    }

    fn doc_get(&self, owner: &str, key: &str) -> Result<Option<String>, StorageError> {
        let rows = self.query("SELECT value FROM user_documents WHERE owner = $1 AND key = $2", &[&owner, &key])?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    fn docs_put(&self, owner: &str, docs: &[(String, Option<String>)]) -> Result<(), StorageError> {
        self.transaction(|txn| {
            for (key, value) in docs {
                match value {
                    Some(v) => txn.execute(UPSERT_DOCUMENT, &[&owner, key, v])?,
                    None => txn.execute("DELETE FROM user_documents WHERE owner = $1 AND key = $2", &[&owner, key])?,
                };
            }
            Ok(())
        })
    }

    fn docs_under(&self, owner: &str, prefix: &str, max: usize) -> Result<Vec<(String, String)>, StorageError> {
        let rows = self.query(
            "SELECT key, value FROM user_documents WHERE owner = $1 AND starts_with(key, $2) ORDER BY key LIMIT $3",
            &[&owner, &prefix, &(max as i64)],
        )?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn doc_put_capped(&self, owner: &str, key: &str, value: &str, prefix: &str, max: usize) -> Result<bool, StorageError> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        self.transaction(|txn| {
            // Per-owner lock, so sets from several nodes cannot pass `max` together; the
            // two-key form keeps it apart from offline_push's one-key locks.
            txn.execute("SELECT pg_advisory_xact_lock(hashtext('user_documents'), hashtext($1))", &[&owner])?;
            let sql = "SELECT bool_or(key = $3), count(*) FROM user_documents WHERE owner = $1 AND starts_with(key, $2)";
            let row = txn.query_one(sql, &[&owner, &prefix, &key])?;
            let (exists, count): (Option<bool>, i64) = (row.get(0), row.get(1));
            if !exists.unwrap_or(false) && count >= max {
                return Ok(false);
            }
            txn.execute(UPSERT_DOCUMENT, &[&owner, &key, &value])?;
            Ok(true)
        })
    }

    fn server_secret(&self, name: &str, fresh: &[u8]) -> Result<Vec<u8>, StorageError> {
        // The first node to insert wins; every other node reads what it inserted.
        self.execute("INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING", &[&name, &fresh])?;
        let rows = self.query("SELECT value FROM server_secrets WHERE name = $1", &[&name])?;
        rows.first().map(|r| r.get(0)).ok_or_else(|| StorageError::Corrupt(format!("server secret {name:?} vanished")))
    }
}
