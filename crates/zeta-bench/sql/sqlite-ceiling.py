#!/usr/bin/env python3
"""What SQLite alone does with the rows of `transfers-uniform`: the ceiling of the SQLite backend.

One writer, as in the server, writes transactions of --per-tx random transfers among --accounts
accounts (32: with 64 connections in a closed loop, half of them wait for their replies while
the other half's batch runs) with the statements the store runs for them: the idempotency lookup,
the accounts read, the audit head, the two account UPDATEs over a JSON array, and the INSERTs
of transfers, their two legs, the idempotency keys and the audit events (one prepared statement
per row where the store sends multi-row ones); then COMMIT, in
WAL mode with synchronous=FULL as the server runs. No HTTP, no engine, no JSON bodies to parse, and
no checkpoint during the timed part (the server's runs on another connection beside the writer),
so it does less than the server does for the same transfers on the same machine.

    python3 crates/zeta-bench/sql/sqlite-ceiling.py [--per-tx 32] [--seconds 20] [--db PATH]

Needs only Python 3's standard library (its sqlite3 module uses the system's SQLite, not the
one built into the server). The database file is created afresh and removed at the end.
"""

import argparse
import json
import os
import random
import sqlite3
import time
import uuid

MIGRATIONS = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "zeta-store-sqlite", "migrations"
)


def uuid7() -> str:
    """A time-ordered id, as the server's (UUIDv7, lowercase hyphenated text)."""
    ms = time.time_ns() // 1_000_000
    rand = random.getrandbits(74)
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


def micros() -> int:
    return time.time_ns() // 1_000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", default="/tmp/zeta-sqlite-ceiling.db")
    p.add_argument("--accounts", type=int, default=100_000)
    p.add_argument("--per-tx", type=int, default=32)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"])
    args = p.parse_args()

    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(args.db + suffix):
            os.remove(args.db + suffix)
    db = sqlite3.connect(args.db, isolation_level=None)
    for pragma in ("journal_mode=WAL", f"synchronous={args.synchronous}", "foreign_keys=ON",
                   "temp_store=MEMORY", "wal_autocheckpoint=0"):
        db.execute(f"PRAGMA {pragma}")
    for name in sorted(os.listdir(MIGRATIONS)):
        db.executescript(open(os.path.join(MIGRATIONS, name)).read())

    ids = [uuid7() for _ in range(args.accounts)]
    now = micros()
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO accounts (id, account_number, owner_name, currency, balance, held, status, "
        "version, seq, metadata, created_at, updated_at) "
        "VALUES (?, ?, 'ceiling', 'EUR', 1000000000, 0, 'active', 1, 0, '{}', ?, ?)",
        ((a, f"ZC{i:010d}", now, now) for i, a in enumerate(ids)),
    )
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    body = b"x" * 700  # about a stored 201 response of one transfer
    chain = 0
    transfers = txs = 0
    in_statements = in_commit = 0.0
    start = time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        pairs = [random.sample(ids, 2) for _ in range(args.per_tx)]
        keys = [uuid7() for _ in pairs]
        touched = sorted({a for pair in pairs for a in pair})
        t0 = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "SELECT i.key FROM json_each(?1) AS k JOIN idempotency_keys i "
            "ON i.api_key_id = k.value ->> 0 AND i.key = k.value ->> 1",
            (json.dumps([["ceiling", k] for k in keys]),),
        ).fetchall()
        accounts = {
            row[0]: [row[1], row[2], row[3]]
            for row in db.execute(
                "SELECT id, balance, version, seq FROM accounts "
                "WHERE id IN (SELECT value FROM json_each(?1)) ORDER BY id",
                (json.dumps(touched),),
            )
        }
        db.execute("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1").fetchall()
        now = micros()
        transfer_rows, legs, keys_rows, events = [], [], [], []
        for (src, dst), key in zip(pairs, keys):
            tid, did, cid = uuid7(), uuid7(), uuid7()
            for account, delta in ((src, -1), (dst, 1)):
                state = accounts[account]
                state[0] += delta
                state[1] += 1
                state[2] += 1
            transfer_rows.append((tid, src, dst, did, cid, now, now))
            for leg, account, kind in ((did, src, "debit"), (cid, dst, "credit")):
                balance, _, seq = accounts[account]
                legs.append((leg, account, seq, seq, kind, balance, tid, now, now, now))
            keys_rows.append((key, os.urandom(32), body, now))
            chain += 1
            events.append((chain, now, tid, '{"amount":1}', "0" * 64, "1" * 64))
        update = json.dumps(
            [[a, "ceiling", s[0], 0, "active", s[1], s[2], "{}", now] for a, s in accounts.items()]
        )
        db.execute(
            "UPDATE accounts SET owner_name = u.value ->> 1, balance = u.value ->> 2, "
            "held = u.value ->> 3, version = u.value ->> 5, seq = u.value ->> 6, "
            "metadata = u.value ->> 7, updated_at = u.value ->> 8 "
            "FROM json_each(?1) AS u WHERE accounts.id = u.value ->> 0",
            (update,),
        )
        db.execute(
            "UPDATE accounts SET status = u.value ->> 4 FROM json_each(?1) AS u "
            "WHERE accounts.id = u.value ->> 0 AND accounts.status <> u.value ->> 4",
            (update,),
        )
        db.executemany(
            "INSERT INTO transfers (id, from_account_id, to_account_id, amount, currency, status, "
            "debit_id, credit_id, created_at, updated_at) "
            "VALUES (?, ?, ?, 1, 'EUR', 'completed', ?, ?, ?, ?)",
            transfer_rows,
        )
        db.executemany(
            "INSERT INTO transactions (id, account_id, seq, posted_seq, type, amount, currency, "
            "status, balance_after, transfer_id, created_at, posted_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, 1, 'EUR', 'completed', ?, ?, ?, ?, ?)",
            legs,
        )
        db.executemany(
            "INSERT INTO idempotency_keys (api_key_id, key, request_hash, status, body, created_at) "
            "VALUES ('ceiling', ?, ?, 201, ?, ?)",
            keys_rows,
        )
        db.executemany(
            "INSERT INTO audit_events (seq, at, action, resource_type, resource_id, details, "
            "prev_hash, hash) VALUES (?, ?, 'transfer.create', 'transfer', ?, ?, ?, ?)",
            events,
        )
        t1 = time.perf_counter()
        db.execute("COMMIT")
        t2 = time.perf_counter()
        in_statements += t1 - t0
        in_commit += t2 - t1
        transfers += args.per_tx
        txs += 1
    elapsed = time.perf_counter() - start
    frames = os.path.getsize(args.db + "-wal") // (4096 + 24)
    db.close()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(args.db + suffix):
            os.remove(args.db + suffix)
    print(
        f"SQLite {sqlite3.sqlite_version}, synchronous={args.synchronous}, {args.per_tx} "
        f"transfers per transaction: {transfers / elapsed:,.0f} transfers/s; per transaction "
        f"{elapsed / txs * 1000:.2f} ms (statements {in_statements / txs * 1000:.2f}, COMMIT "
        f"{in_commit / txs * 1000:.2f}); {frames / transfers:.1f} WAL frames per transfer"
    )


if __name__ == "__main__":
    main()
