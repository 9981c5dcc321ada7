-- The audit trail: one row per event, appended in the transaction of the
-- change it records and never updated. Each row is sealed into a hash chain
-- (internal/audit: hash covers every other column and the previous event's
-- hash), so an edited, removed or reordered row no longer verifies.
--
-- before, after and changed hold JSON exactly as written, which reads back
-- to the values the hash was computed over. key_id is not a foreign key:
-- events outlive their keys ('' for none).
CREATE TABLE audit_events (
    seq        INTEGER NOT NULL PRIMARY KEY, -- consecutive from 1
    event_time INTEGER NOT NULL,             -- Unix microseconds, UTC
    actor      TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    key_id     TEXT    NOT NULL,
    source     TEXT    NOT NULL,
    before     TEXT,                         -- audit.Snapshot; NULL: no key before
    after      TEXT,                         -- audit.Snapshot; NULL: no key after
    changed    TEXT    NOT NULL,             -- JSON array of field names, or null
    detail     TEXT    NOT NULL,
    prev_hash  BLOB,                         -- NULL for the first event
    hash       BLOB    NOT NULL
) STRICT;

-- One key's history, newest first.
CREATE INDEX audit_events_key ON audit_events (key_id, seq);

-- The chain's head: the latest event's seq and hash, rewritten by every
-- append in its transaction. Write transactions are exclusive already
-- (BEGIN IMMEDIATE), so this row is not needed as a lock, as it is in
-- PostgreSQL; it keeps the next event linked to the last one written, so
-- removing the newest events shows up as a gap once another is appended.
CREATE TABLE audit_head (
    one  INTEGER NOT NULL PRIMARY KEY CHECK (one = 1),
    seq  INTEGER NOT NULL,
    hash BLOB
) STRICT;
INSERT INTO audit_head (one, seq, hash) VALUES (1, 0, NULL);
