-- Key usage, recorded in batches off the verification path (RecordUsage).
-- Like the quota count, it is not part of a key's content: it lives outside
-- api_keys, never bumps the key's version, and goes with its key.

-- Verifications per key, hour and outcome (a keyward.v1 reason name).
CREATE TABLE api_key_usage (
    key_id text COLLATE "C" NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    hour   timestamptz NOT NULL, -- the start of the hour, UTC
    reason text        NOT NULL,
    count  bigint      NOT NULL,
    PRIMARY KEY (key_id, hour, reason)
);

-- When each key was last used; no row: never. keys.Key.LastUsed is read from
-- here, so api_keys.last_used_time is no longer written or read: it stays,
-- unused, so that a binary from before this migration still runs against the
-- schema during a rolling upgrade. Its values, if any, move here.
CREATE TABLE api_key_last_used (
    key_id         text COLLATE "C" PRIMARY KEY REFERENCES api_keys (id) ON DELETE CASCADE,
    last_used_time timestamptz NOT NULL
);

INSERT INTO api_key_last_used (key_id, last_used_time)
    SELECT id, last_used_time FROM api_keys WHERE last_used_time IS NOT NULL;
