-- martlet schema 4: how many rows each owner has in mam_archive, kept by the archive writer
-- in the transaction that appends, so the per-user cap (limits.mam_messages_per_user_max)
-- drops the oldest rows without counting the archive at every append. The row is also the
-- owner's lock: writers from several nodes appending for one owner take their turns on it.
CREATE TABLE mam_archive_counts (
    owner     TEXT   PRIMARY KEY,            -- bare JID whose archive this is
    messages  BIGINT NOT NULL CHECK (messages >= 0)
);
INSERT INTO mam_archive_counts (owner, messages)
    SELECT owner, count(*) FROM mam_archive GROUP BY owner;
