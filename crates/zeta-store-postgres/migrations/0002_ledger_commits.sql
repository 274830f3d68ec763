-- One row per committed engine batch: after a COMMIT whose answer was lost, the engine asks
-- whether its batch committed (see PgStore::resolve_batch). Purged with idempotency keys.
CREATE TABLE ledger_commits (
    id         UUID PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX ledger_commits_created_idx ON ledger_commits (created_at);
