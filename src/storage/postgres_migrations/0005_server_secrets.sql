-- martlet schema 5: server-wide secrets, the same for every node of a cluster: the key
-- behind the SCRAM salts made up for unknown users, so that every node answers a probe for
-- a name with the same salt, as it would for a real account.
CREATE TABLE server_secrets (
    name   TEXT PRIMARY KEY,
    value  BYTEA NOT NULL
);
