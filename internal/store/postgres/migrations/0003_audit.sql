-- The audit trail: one row per event, appended in the transaction of the
-- change it records and never updated. Each row is sealed into a hash chain
-- (internal/audit: hash covers every other column and the previous event's
-- hash), so an edited, removed or reordered row no longer verifies.
--
-- before, after and changed are json, not jsonb: json keeps the text exactly
-- as written (jsonb would reorder and respace it, and refuses \u0000), and it
-- is that text which reads back to the values the hash was computed over.
-- key_id is not a foreign key: events outlive their keys ('' for none).
CREATE TABLE audit_events (
    seq        bigint      PRIMARY KEY, -- consecutive from 1
    event_time timestamptz NOT NULL,
    actor      text        NOT NULL,
    action     text        NOT NULL,
    key_id     text COLLATE "C" NOT NULL,
    source     text        NOT NULL,
    before     json,                    -- audit.Snapshot; NULL: no key before
    after      json,                    -- audit.Snapshot; NULL: no key after
    changed    json        NOT NULL,    -- array of field names, or null
    detail     text        NOT NULL,
    prev_hash  bytea,                   -- NULL for the first event
    hash       bytea       NOT NULL
);

-- One key's history, newest first.
CREATE INDEX audit_events_key ON audit_events (key_id, seq);

-- The chain's head: the latest event's seq and hash, in one row that every
-- append reads FOR UPDATE and rewrites in its transaction. That row lock is
-- what serialises appenders across instances (reading the newest event
-- FOR UPDATE would not: an empty table has no row to lock), and it keeps
-- the next event linked to the last one written, so removing the newest
-- events shows up as a gap once another is appended.
CREATE TABLE audit_head (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    seq  bigint  NOT NULL,
    hash bytea
);
INSERT INTO audit_head (seq, hash) VALUES (0, NULL);
