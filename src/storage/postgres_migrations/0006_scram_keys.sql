-- martlet schema 6: SCRAM StoredKey and ServerKey (RFC 5802 §3) instead of the salted
-- passwords, which are enough to log in. PostgreSQL has no built-in HMAC-SHA-1, so the
-- keys of existing accounts are computed by martlet in the same transaction
-- (`postgres_migrate::salted_passwords_to_keys`), which then drops the digests and
-- makes the key columns NOT NULL.
ALTER TABLE users
    ADD COLUMN sha1_stored_key   BYTEA,
    ADD COLUMN sha1_server_key   BYTEA,
    ADD COLUMN sha256_stored_key BYTEA,
    ADD COLUMN sha256_server_key BYTEA;
