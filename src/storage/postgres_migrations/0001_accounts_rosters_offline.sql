-- martlet schema 1: what the embedded store holds, one table per kind of record.

-- SCRAM salted passwords for SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC 7677);
-- the plaintext is never stored.
CREATE TABLE users (
    jid              TEXT PRIMARY KEY,       -- normalised bare JID
    sha1_salt        BYTEA   NOT NULL,
    sha1_iterations  INTEGER NOT NULL CHECK (sha1_iterations > 0),
    sha1_digest      BYTEA   NOT NULL,
    sha256_salt      BYTEA   NOT NULL,
    sha256_iterations INTEGER NOT NULL CHECK (sha256_iterations > 0),
    sha256_digest    BYTEA   NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- RFC 6121 roster items with their subscription state.
CREATE TABLE roster_items (
    owner        TEXT    NOT NULL,           -- bare JID whose roster this is
    contact      TEXT    NOT NULL,           -- the contact's bare JID
    name         TEXT,
    groups       TEXT[]  NOT NULL DEFAULT '{}',
    subscription TEXT    NOT NULL CHECK (subscription IN ('none', 'to', 'from', 'both')),
    ask_out      BOOLEAN NOT NULL,           -- ask="subscribe"
    pending_in   BOOLEAN NOT NULL,           -- the contact's request awaits an answer
    listed       BOOLEAN NOT NULL,           -- shown in the roster (false: state only)
    PRIMARY KEY (owner, contact)
);

-- XEP-0160 offline messages; `id` keeps arrival order per owner.
CREATE TABLE offline_messages (
    id        BIGSERIAL PRIMARY KEY,
    owner     TEXT NOT NULL,
    stanza    TEXT NOT NULL,
    stored_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX offline_messages_owner_id ON offline_messages (owner, id);
