-- The audit log: one row per state change, chained by SHA-256 (see zeta_ledger::audit). `seq`
-- has no gaps; a duplicate `seq` means another instance appended first, and the batch re-runs.
-- `details` holds the canonical (RFC 8785) JSON text that was hashed.
CREATE TABLE audit_events (
    seq           BIGINT PRIMARY KEY CHECK (seq > 0),
    at            TIMESTAMPTZ NOT NULL,
    actor_key_id  UUID,
    request_id    TEXT,
    action        TEXT        NOT NULL,
    resource_type TEXT        NOT NULL,
    resource_id   UUID        NOT NULL,
    details       TEXT        NOT NULL,
    prev_hash     TEXT        NOT NULL,
    hash          TEXT        NOT NULL
);
