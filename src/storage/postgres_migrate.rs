//! Versioned schema migrations for the PostgreSQL backend, applied by martlet itself when
//! it opens the database. Each migration is a SQL file in `postgres_migrations/`, run once
//! in its own transaction and recorded in `martlet_schema_migrations`; nodes of a cluster
//! starting together serialise on an advisory lock, so each migration runs exactly once.

use postgres::Client;

use super::StorageError;

/// (version, name, SQL), in the order they apply. Append only: a released migration is
/// never edited, a change is a new file.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "accounts_rosters_offline", include_str!("postgres_migrations/0001_accounts_rosters_offline.sql")),
    (2, "message_archive", include_str!("postgres_migrations/0002_message_archive.sql")),
    (3, "user_documents", include_str!("postgres_migrations/0003_user_documents.sql")),
    (4, "archive_counts", include_str!("postgres_migrations/0004_archive_counts.sql")),
    (5, "server_secrets", include_str!("postgres_migrations/0005_server_secrets.sql")),
];

/// Key of the transaction-scoped advisory lock taken while migrating ("martlet" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x006d_6172_746c_6574;

/// Brings the schema to the newest version; refuses a database written by a newer build.
/// Returns the versions it applied.
pub fn migrate(client: &mut Client) -> Result<Vec<i32>, StorageError> {
    let mut applied = Vec::new();
    for &(version, name, sql) in MIGRATIONS {
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
        txn.batch_execute(sql).map_err(|e| StorageError::Backend(format!("migration {version} ({name}): {e}")))?;
        txn.execute("INSERT INTO martlet_schema_migrations (version, name) VALUES ($1, $2)", &[&version, &name])
            .map_err(backend)?;
        txn.commit().map_err(backend)?;
        log::info!("storage: applied PostgreSQL migration {version} ({name})");
        applied.push(version);
    }
    Ok(applied)
}

pub fn backend(e: postgres::Error) -> StorageError {
    StorageError::Backend(e.to_string())
}
