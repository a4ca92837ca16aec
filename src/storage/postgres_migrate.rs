//! Versioned schema migrations for the PostgreSQL backend, applied by martlet itself when
//! it opens the database. Each migration is a SQL file in `postgres_migrations/`, run once
//! in its own transaction and recorded in `martlet_schema_migrations`; nodes of a cluster
//! starting together serialise on an advisory lock, so each migration runs exactly once.

use postgres::{Client, Transaction};

use super::{ScramHash, StorageError};

/// Work a migration needs beyond SQL, run after its SQL in the same transaction.
type Step = fn(&mut Transaction) -> Result<(), postgres::Error>;

/// (version, name, SQL, step), in the order they apply. Append only: a released migration
/// is never edited, a change is a new file.
const MIGRATIONS: &[(i32, &str, &str, Option<Step>)] = &[
    (1, "accounts_rosters_offline", include_str!("postgres_migrations/0001_accounts_rosters_offline.sql"), None),
    (2, "message_archive", include_str!("postgres_migrations/0002_message_archive.sql"), None),
    (3, "user_documents", include_str!("postgres_migrations/0003_user_documents.sql"), None),
    (4, "archive_counts", include_str!("postgres_migrations/0004_archive_counts.sql"), None),
    (5, "server_secrets", include_str!("postgres_migrations/0005_server_secrets.sql"), None),
    (6, "scram_keys", include_str!("postgres_migrations/0006_scram_keys.sql"), Some(salted_passwords_to_keys)),
];

/// Key of the transaction-scoped advisory lock taken while migrating ("martlet" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x006d_6172_746c_6574;

/// Brings the schema to the newest version; refuses a database written by a newer build.
/// Returns the versions it applied.
pub fn migrate(client: &mut Client) -> Result<Vec<i32>, StorageError> {
    let mut applied = Vec::new();
    for &(version, name, sql, step) in MIGRATIONS {
        let mut txn = client.transaction().map_err(backend)?;
        txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY]).map_err(backend)?;
        // "already exists, skipping" is no news at every start after the first.
        txn.batch_execute("SET LOCAL client_min_messages = warning").map_err(backend)?;
        txn.batch_execute(
            "CREATE TABLE IF NOT EXISTS martlet_schema_migrations (
                 version    INTEGER PRIMARY KEY,
                 name       TEXT NOT NULL,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .map_err(backend)?;
        let newest: Option<i32> = txn
            .query_one("SELECT max(version) FROM martlet_schema_migrations", &[])
            .map_err(backend)?
            .get(0);
        let newest_known = MIGRATIONS.last().map_or(0, |m| m.0);
        if let Some(newest) = newest.filter(|&v| v > newest_known) {
            return Err(StorageError::Corrupt(format!(
                "database schema version {newest}; this build knows up to {newest_known}"
            )));
        }
        if newest.is_some_and(|v| v >= version) {
            continue;
        }
        let failed = |e: postgres::Error| StorageError::Backend(format!("migration {version} ({name}): {e}"));
        txn.batch_execute(sql).map_err(failed)?;
        if let Some(step) = step {
            step(&mut txn).map_err(failed)?;
        }
        txn.execute("INSERT INTO martlet_schema_migrations (version, name) VALUES ($1, $2)", &[&version, &name])
            .map_err(backend)?;
        txn.commit().map_err(backend)?;
        log::info!("storage: applied PostgreSQL migration {version} ({name})");
        applied.push(version);
    }
    Ok(applied)
}

/// Migration 6: each account's StoredKey and ServerKey from its salted passwords, then the
/// salted passwords go.
fn salted_passwords_to_keys(txn: &mut Transaction) -> Result<(), postgres::Error> {
    for row in txn.query("SELECT jid, sha1_digest, sha256_digest FROM users", &[])? {
        let (jid, sha1, sha256): (String, Vec<u8>, Vec<u8>) = (row.get(0), row.get(1), row.get(2));
        let keys = |hash: ScramHash, salted: &[u8]| hash.keys_from_salted(salted, Vec::new(), 0);
        let (k1, k256) = (keys(ScramHash::Sha1, &sha1), keys(ScramHash::Sha256, &sha256));
        txn.execute(
            "UPDATE users SET sha1_stored_key = $2, sha1_server_key = $3, sha256_stored_key = $4, sha256_server_key = $5 WHERE jid = $1",
            &[&jid, &k1.stored_key, &k1.server_key, &k256.stored_key, &k256.server_key],
        )?;
    }
    txn.batch_execute(
        "ALTER TABLE users DROP COLUMN sha1_digest, DROP COLUMN sha256_digest,
             ALTER COLUMN sha1_stored_key SET NOT NULL, ALTER COLUMN sha1_server_key SET NOT NULL,
             ALTER COLUMN sha256_stored_key SET NOT NULL, ALTER COLUMN sha256_server_key SET NOT NULL",
    )
}

pub fn backend(e: postgres::Error) -> StorageError {
    StorageError::Backend(e.to_string())
}
