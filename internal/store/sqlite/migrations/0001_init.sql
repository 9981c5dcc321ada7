-- Keys, one row each. STRICT makes SQLite refuse a value of the wrong type
-- instead of storing it, so a bug in the Go mapping fails loudly.
CREATE TABLE api_keys (
    id             TEXT    NOT NULL PRIMARY KEY,
    name           TEXT    NOT NULL,
    -- strings.ToLower(name), computed in Go: SQLite's lower() and LIKE fold
    -- ASCII only, and the Postgres backend must match names the same way.
    name_fold      TEXT    NOT NULL,
    description    TEXT    NOT NULL,
    environment    TEXT    NOT NULL,
    state          INTEGER NOT NULL,
    hash           BLOB    NOT NULL UNIQUE,
    start          TEXT    NOT NULL,
    last4          TEXT    NOT NULL,
    scopes         TEXT    NOT NULL, -- JSON array of strings, in the order written
    metadata       TEXT    NOT NULL, -- JSON object of strings
    -- Times are Unix microseconds, UTC; NULL for "never".
    create_time    INTEGER NOT NULL,
    update_time    INTEGER NOT NULL,
    expire_time    INTEGER,
    last_used_time INTEGER,
    version        INTEGER NOT NULL,
    -- The AIP-155 request_id of the Create that made the row; NULLs are
    -- distinct, so keys created without one never collide.
    request_id     TEXT UNIQUE
) STRICT;

-- Prefix search on the visible start (GLOB 'abc*' can use it).
CREATE INDEX api_keys_start ON api_keys (start);
