-- Zeta ledger schema (SQLite). The same tables, columns, CHECK constraints and indexes as the
-- PostgreSQL schema, in SQLite's types. STRICT tables make every column keep its declared type.
--
-- Encodings (the store crate writes and reads only these):
--   ids          TEXT, lowercase hyphenated UUID ("0190c0de-…"); text order = byte order = time
--                order for UUIDv7, the same order as PostgreSQL's uuid type.
--   timestamps   INTEGER, microseconds since 1970-01-01T00:00:00Z (UTC); sorts as time does.
--   money        INTEGER (signed 64-bit minor units).
--   metadata     TEXT holding a JSON object.
--   account_ids  TEXT holding a JSON array of ids, or NULL for an unscoped key.
--   hashes/body  BLOB.

CREATE TABLE accounts (
    id             TEXT    NOT NULL PRIMARY KEY,
    account_number TEXT    NOT NULL CHECK (length(account_number) BETWEEN 8 AND 34
                                           AND account_number NOT GLOB '*[^A-Z0-9]*'),
    owner_name     TEXT    NOT NULL,
    currency       TEXT    NOT NULL CHECK (length(currency) = 3 AND currency NOT GLOB '*[^A-Z]*'),
    balance        INTEGER NOT NULL DEFAULT 0 CHECK (balance >= 0),
    held           INTEGER NOT NULL DEFAULT 0 CHECK (held >= 0),
    status         TEXT    NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'frozen', 'closed')),
    version        INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),
    seq            INTEGER NOT NULL DEFAULT 0 CHECK (seq >= 0),
    metadata       TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(metadata) AND json_type(metadata) = 'object'),
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    CONSTRAINT accounts_held_within_balance CHECK (held <= balance)
) STRICT;
CREATE UNIQUE INDEX accounts_account_number_key ON accounts (account_number);
CREATE INDEX accounts_status_idx ON accounts (status, id);

CREATE TABLE transfers (
    id              TEXT    NOT NULL PRIMARY KEY,
    from_account_id TEXT    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    to_account_id   TEXT    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    amount          INTEGER NOT NULL CHECK (amount > 0),
    currency        TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('completed', 'failed', 'reversed')),
    debit_id        TEXT    NOT NULL,
    credit_id       TEXT,
    reverses_id     TEXT REFERENCES transfers (id) ON DELETE CASCADE,
    reversed_by_id  TEXT,
    description     TEXT,
    reference       TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    CONSTRAINT transfers_distinct_accounts CHECK (from_account_id <> to_account_id)
) STRICT;
CREATE INDEX transfers_from_account_idx ON transfers (from_account_id);
CREATE INDEX transfers_to_account_idx ON transfers (to_account_id);

CREATE TABLE transactions (
    id             TEXT    NOT NULL PRIMARY KEY,
    account_id     TEXT    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    seq            INTEGER NOT NULL,
    posted_seq     INTEGER,
    type           TEXT    NOT NULL CHECK (type IN ('credit', 'debit')),
    amount         INTEGER NOT NULL CHECK (amount > 0),
    currency       TEXT    NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN ('pending', 'completed', 'failed', 'reversed')),
    balance_after  INTEGER CHECK (balance_after >= 0),
    transfer_id    TEXT REFERENCES transfers (id) ON DELETE CASCADE,
    reverses_id    TEXT REFERENCES transactions (id) ON DELETE CASCADE,
    reversed_by_id TEXT,
    failure_reason TEXT CHECK (failure_reason IN ('insufficient_funds', 'voided')),
    description    TEXT,
    reference      TEXT,
    created_at     INTEGER NOT NULL,
    posted_at      INTEGER,
    updated_at     INTEGER NOT NULL,
    CONSTRAINT transactions_posted_shape CHECK (
        (status IN ('completed', 'reversed'))
        = (posted_at IS NOT NULL AND posted_seq IS NOT NULL AND balance_after IS NOT NULL)),
    CONSTRAINT transactions_failed_shape CHECK ((status = 'failed') = (failure_reason IS NOT NULL))
) STRICT;
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
    api_key_id   TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    request_hash BLOB    NOT NULL,
    status       INTEGER NOT NULL CHECK (status BETWEEN -32768 AND 32767), -- SMALLINT's range
    body         BLOB    NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (api_key_id, key)
) STRICT;
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

CREATE TABLE api_keys (
    id          TEXT    NOT NULL PRIMARY KEY,
    name        TEXT    NOT NULL,
    role        TEXT    NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    account_ids TEXT CHECK (account_ids IS NULL
                            OR (json_valid(account_ids) AND json_type(account_ids) = 'array')),
    secret_hash BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
) STRICT;
CREATE UNIQUE INDEX api_keys_secret_hash_key ON api_keys (secret_hash);
