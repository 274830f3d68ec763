-- What PostgreSQL alone does with the rows of 10 000 transfers in one transaction: the ceiling
-- of the batch endpoint on one backend. Run against a benchmark database after a run (it needs
-- at least 20 000 accounts), e.g.
--   psql -h 127.0.0.1 -U postgres zeta_bench -f crates/zeta-bench/sql/batch-ceiling.sql
-- and add up the timings. It rolls back, so the database stays as the run left it.
\timing on
BEGIN ISOLATION LEVEL REPEATABLE READ;
CREATE TEMP TABLE ids ON COMMIT DROP AS
  SELECT id, row_number() OVER () AS rn
    FROM (SELECT id FROM accounts ORDER BY random() LIMIT 20000) s;
CREATE TEMP TABLE pairs ON COMMIT DROP AS
  SELECT a.id AS f, b.id AS t, gen_random_uuid() AS tid, gen_random_uuid() AS did,
         gen_random_uuid() AS cid, a.rn
    FROM ids a JOIN ids b ON b.rn = a.rn + 10000
   WHERE a.rn <= 10000;
-- The timed part: lock, update both sides, insert the transfer, its two legs and its audit row.
SELECT count(*) FROM (SELECT 1 FROM accounts WHERE id IN (SELECT id FROM ids) ORDER BY id FOR UPDATE) s;
UPDATE accounts a SET balance = balance, version = version + 1, seq = seq + 1, updated_at = now()
  FROM pairs p WHERE a.id = p.f;
UPDATE accounts a SET balance = balance, version = version + 1, seq = seq + 1, updated_at = now()
  FROM pairs p WHERE a.id = p.t;
INSERT INTO transfers (id, from_account_id, to_account_id, amount, currency, status, debit_id,
                       credit_id, created_at, updated_at)
  SELECT tid, f, t, 1, 'USD', 'completed', did, cid, now(), now() FROM pairs;
INSERT INTO transactions (id, account_id, seq, posted_seq, type, amount, currency, status,
                          balance_after, transfer_id, created_at, posted_at, updated_at)
  SELECT did, f, 1000000 + rn, 1000000 + rn, 'debit', 1, 'USD', 'completed', 5, tid, now(), now(), now()
    FROM pairs
  UNION ALL
  SELECT cid, t, 1000000 + rn, 1000000 + rn, 'credit', 1, 'USD', 'completed', 5, tid, now(), now(), now()
    FROM pairs;
INSERT INTO audit_events (seq, at, action, resource_type, resource_id, details, prev_hash, hash)
  SELECT 100000000 + rn, now(), 'transfer.create', 'transfer', tid, repeat('x', 380),
         md5(tid::text) || md5(did::text), md5(cid::text) || md5(tid::text)
    FROM pairs;
ROLLBACK;
