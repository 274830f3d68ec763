-- The audit log: one row per state change, chained by SHA-256 (see zeta_ledger::audit).
-- `details` holds the canonical (RFC 8785) JSON text that was hashed; `at` is microseconds
-- since the Unix epoch, like every time here.
CREATE TABLE audit_events (
    seq           INTEGER PRIMARY KEY CHECK (seq > 0),
    at            INTEGER NOT NULL,
    actor_key_id  TEXT,
    request_id    TEXT,
    action        TEXT    NOT NULL,
    resource_type TEXT    NOT NULL,
    resource_id   TEXT    NOT NULL,
    details       TEXT    NOT NULL,
    prev_hash     TEXT    NOT NULL,
    hash          TEXT    NOT NULL
) STRICT;
