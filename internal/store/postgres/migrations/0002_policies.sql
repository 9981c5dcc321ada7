-- Key policies (IP allow-list, rate limit, quota) and the secret a rotation
-- replaced, still accepted until prev_expire_time.
--
-- policy holds the allow-list, rate limit and quota as one JSON object, in
-- the form internal/store's EncodePolicy writes for both backends:
-- {"allowed_cidrs": [...], "rate_limit": {...}, "quota": {...}}, members of
-- unset policies omitted. Adding a column with a constant default rewrites
-- no rows.
ALTER TABLE api_keys
    ADD COLUMN policy           jsonb       NOT NULL DEFAULT '{}',
    ADD COLUMN prev_hash        bytea,                  -- NULL: no previous secret
    ADD COLUMN prev_start       text        NOT NULL DEFAULT '',
    ADD COLUMN prev_last4       text        NOT NULL DEFAULT '',
    ADD COLUMN prev_expire_time timestamptz;            -- NULL: none

-- Lookups by secret match hash OR prev_hash; each side has its index (a
-- BitmapOr). Only rotated keys have a prev_hash, so the index is partial.
CREATE UNIQUE INDEX api_keys_prev_hash ON api_keys (prev_hash) WHERE prev_hash IS NOT NULL;

-- Quota usage: one count per key, for its current counting period ('' for a
-- quota that never refills). It is a counter, not part of the key's content,
-- so it lives outside api_keys and never bumps the key's version.
CREATE TABLE api_key_quota (
    key_id text COLLATE "C" PRIMARY KEY REFERENCES api_keys (id) ON DELETE CASCADE,
    period text   NOT NULL,
    used   bigint NOT NULL
);
