-- martlet schema 3: small per-user documents, one per key: the XEP-0191 blocklist, XEP-0049
-- private XML, the XEP-0054 vCard.
CREATE TABLE user_documents (
    owner  TEXT NOT NULL,                    -- bare JID
    key    TEXT NOT NULL,                    -- e.g. 'blocklist', 'vcard', 'private:<namespace>'
    value  TEXT NOT NULL,
    PRIMARY KEY (owner, key)
);
