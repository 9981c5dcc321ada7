-- Key policies (IP allow-list, rate limit, quota) and the secret a rotation
-- replaced, still accepted until prev_expire_time.
--
-- policy holds the allow-list, rate limit and quota as one JSON object, in
-- the form internal/store's EncodePolicy writes for both backends:
-- {"allowed_cidrs": [...], "rate_limit": {...}, "quota": {...}}, members of
-- unset policies omitted.
ALTER TABLE api_keys ADD COLUMN policy           TEXT NOT NULL DEFAULT '{}';
ALTER TABLE api_keys ADD COLUMN prev_hash        BLOB;    -- NULL: no previous secret
ALTER TABLE api_keys ADD COLUMN prev_start       TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN prev_last4       TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN prev_expire_time INTEGER; -- Unix microseconds, UTC; NULL: none

-- Lookups by secret match hash OR prev_hash, each side with its index. Only
-- rotated keys have a prev_hash, so the index is partial.
CREATE UNIQUE INDEX api_keys_prev_hash ON api_keys (prev_hash) WHERE prev_hash IS NOT NULL;

-- Quota usage: one count per key, for its current counting period ('' for a
-- quota that never refills). It is a counter, not part of the key's content,
-- so it lives outside api_keys and never bumps the key's version. The
-- connection enables foreign keys (the DSN's foreign_keys pragma), so the
-- count goes with its key.
CREATE TABLE api_key_quota (
    key_id TEXT    NOT NULL PRIMARY KEY REFERENCES api_keys (id) ON DELETE CASCADE,
    period TEXT    NOT NULL,
    used   INTEGER NOT NULL
) STRICT;
