-- Zeta ledger schema (PostgreSQL). Money is BIGINT minor units; every balance rule the ledger
-- keeps is also a CHECK here, so a bug cannot commit a negative balance.

CREATE TABLE accounts (
    id             UUID PRIMARY KEY,
    account_number TEXT        NOT NULL CHECK (account_number ~ '^[A-Z0-9]{8,34}$'),
    owner_name     TEXT        NOT NULL,
    currency       TEXT        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    balance        BIGINT      NOT NULL DEFAULT 0 CHECK (balance >= 0),
    held           BIGINT      NOT NULL DEFAULT 0 CHECK (held >= 0),
    status         TEXT        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'frozen', 'closed')),
    version        BIGINT      NOT NULL DEFAULT 1 CHECK (version >= 1),
    seq            BIGINT      NOT NULL DEFAULT 0 CHECK (seq >= 0),
    metadata       JSONB       NOT NULL DEFAULT '{}'::jsonb,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    CONSTRAINT accounts_held_within_balance CHECK (held <= balance)
);
CREATE UNIQUE INDEX accounts_account_number_key ON accounts (account_number);
CREATE INDEX accounts_status_idx ON accounts (status, id);

-- Foreign keys: a transaction references its account (ON DELETE CASCADE, as the seed asks).
-- The links between movements (transfer legs, reversals) are written by the ledger engine in
-- the same statement as the rows they link and are checked by `zeta verify`; declaring them as
-- foreign keys would add four index probes per transfer on the hot path.
CREATE TABLE transfers (
    id              UUID PRIMARY KEY,
    from_account_id UUID        NOT NULL,
    to_account_id   UUID        NOT NULL,
    amount          BIGINT      NOT NULL CHECK (amount > 0),
    currency        TEXT        NOT NULL,
    status          TEXT        NOT NULL CHECK (status IN ('completed', 'failed', 'reversed')),
    debit_id        UUID        NOT NULL,
    credit_id       UUID,
    reverses_id     UUID,
    reversed_by_id  UUID,
    description     TEXT,
    reference       TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    CONSTRAINT transfers_distinct_accounts CHECK (from_account_id <> to_account_id)
);
CREATE INDEX transfers_from_account_idx ON transfers (from_account_id);
CREATE INDEX transfers_to_account_idx ON transfers (to_account_id);

CREATE TABLE transactions (
    id             UUID PRIMARY KEY,
    account_id     UUID        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    seq            BIGINT      NOT NULL,
    posted_seq     BIGINT,
    type           TEXT        NOT NULL CHECK (type IN ('credit', 'debit')),
    amount         BIGINT      NOT NULL CHECK (amount > 0),
    currency       TEXT        NOT NULL,
    status         TEXT        NOT NULL CHECK (status IN ('pending', 'completed', 'failed', 'reversed')),
    balance_after  BIGINT CHECK (balance_after >= 0),
    transfer_id    UUID,
    reverses_id    UUID,
    reversed_by_id UUID,
    failure_reason TEXT CHECK (failure_reason IN ('insufficient_funds', 'voided')),
    description    TEXT,
    reference      TEXT,
    created_at     TIMESTAMPTZ NOT NULL,
    posted_at      TIMESTAMPTZ,
    updated_at     TIMESTAMPTZ NOT NULL,
    CONSTRAINT transactions_posted_shape CHECK (
        (status IN ('completed', 'reversed'))
        = (posted_at IS NOT NULL AND posted_seq IS NOT NULL AND balance_after IS NOT NULL)),
    CONSTRAINT transactions_failed_shape CHECK ((status = 'failed') = (failure_reason IS NOT NULL))
);
-- History listing (newest first) and the cursor.
CREATE UNIQUE INDEX transactions_account_seq_key ON transactions (account_id, seq);
CREATE INDEX transactions_account_created_idx ON transactions (account_id, created_at);
CREATE INDEX transactions_status_idx ON transactions (status);
CREATE INDEX transactions_created_idx ON transactions (created_at);
CREATE INDEX transactions_transfer_idx ON transactions (transfer_id) WHERE transfer_id IS NOT NULL;
-- Balance at an instant: one indexed lookup.
CREATE INDEX transactions_posted_idx ON transactions (account_id, posted_at DESC, posted_seq DESC)
    WHERE posted_at IS NOT NULL;

CREATE TABLE idempotency_keys (
    api_key_id   UUID        NOT NULL,
    key          TEXT        NOT NULL,
    request_hash BYTEA       NOT NULL,
    status       SMALLINT    NOT NULL,
    body         BYTEA       NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (api_key_id, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

CREATE TABLE api_keys (
    id          UUID PRIMARY KEY,
    name        TEXT        NOT NULL,
    role        TEXT        NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    account_ids UUID[],
    secret_hash BYTEA       NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ
);
CREATE UNIQUE INDEX api_keys_secret_hash_key ON api_keys (secret_hash);
