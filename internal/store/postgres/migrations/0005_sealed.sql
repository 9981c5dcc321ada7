-- The secret of a recoverable key, encrypted under the master key by the
-- caller (the store only keeps it); NULL for a key whose secret cannot be
-- shown again.
ALTER TABLE api_keys ADD COLUMN sealed bytea;
