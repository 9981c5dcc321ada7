-- Keys, one row each. id and start use the "C" collation so that ordering,
-- id > $after and prefix matching are bytewise, as in SQLite and Go, whatever
-- collation the database was created with (and so a plain btree serves LIKE
-- 'abc%').
CREATE TABLE api_keys (
    id             text COLLATE "C" PRIMARY KEY,
    name           text        NOT NULL,
    -- strings.ToLower(name), computed in Go so both backends fold case alike
    -- (lower() here would depend on the database's ctype).
    name_fold      text        NOT NULL,
    description    text        NOT NULL,
    environment    text        NOT NULL,
    state          integer     NOT NULL,
    hash           bytea       NOT NULL UNIQUE,
    start          text COLLATE "C" NOT NULL,
    last4          text        NOT NULL,
    scopes         text[]      NOT NULL, -- in the order written
    metadata       jsonb       NOT NULL,
    create_time    timestamptz NOT NULL,
    update_time    timestamptz NOT NULL,
    expire_time    timestamptz,          -- NULL: never expires
    last_used_time timestamptz,          -- NULL: never used
    version        bigint      NOT NULL,
    -- The AIP-155 request_id of the Create that made the row; NULLs are
    -- distinct, so keys created without one never collide.
    request_id     text UNIQUE
);

CREATE INDEX api_keys_start ON api_keys (start);
