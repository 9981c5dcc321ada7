-- Key usage, recorded in batches off the verification path (RecordUsage).
-- Like the quota count, it is not part of a key's content: it lives outside
-- api_keys, never bumps the key's version, and goes with its key (the
-- connection enables foreign keys).

-- Verifications per key, hour and outcome (a keyward.v1 reason name).
CREATE TABLE api_key_usage (
    key_id TEXT    NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    hour   INTEGER NOT NULL, -- the start of the hour, Unix microseconds, UTC
    reason TEXT    NOT NULL,
    count  INTEGER NOT NULL,
    PRIMARY KEY (key_id, hour, reason)
) STRICT, WITHOUT ROWID;

-- When each key was last used; no row: never. keys.Key.LastUsed is read from
-- here, so api_keys.last_used_time is no longer written or read: it stays,
-- unused, so that a binary from before this migration still runs against the
-- schema. Its values, if any, move here.
CREATE TABLE api_key_last_used (
    key_id         TEXT    NOT NULL PRIMARY KEY REFERENCES api_keys (id) ON DELETE CASCADE,
    last_used_time INTEGER NOT NULL -- Unix microseconds, UTC
) STRICT;

INSERT INTO api_key_last_used (key_id, last_used_time)
    SELECT id, last_used_time FROM api_keys WHERE last_used_time IS NOT NULL;
