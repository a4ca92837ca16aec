-- martlet schema 2: XEP-0313 message archives and their preferences.

-- One row per message per owner. `id` is the archive id clients see: micros << 10 | low
-- bits, so it sorts by time and a time range is an id range.
CREATE TABLE mam_archive (
    owner     TEXT   NOT NULL,               -- bare JID whose archive this is
    id        BIGINT NOT NULL,
    with_jid  TEXT   NOT NULL,               -- the other party's bare JID
    xml       TEXT   NOT NULL,
    PRIMARY KEY (owner, id)
);
CREATE INDEX mam_archive_with ON mam_archive (owner, with_jid, id);

-- XEP-0313 §6 preferences; no row means the defaults (always).
CREATE TABLE mam_prefs (
    owner         TEXT PRIMARY KEY,
    default_mode  TEXT   NOT NULL CHECK (default_mode IN ('always', 'never', 'roster')),
    always_jids   TEXT[] NOT NULL DEFAULT '{}',
    never_jids    TEXT[] NOT NULL DEFAULT '{}'
);
