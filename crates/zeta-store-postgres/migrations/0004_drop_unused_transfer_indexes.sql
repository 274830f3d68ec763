-- No query looks transfers up by account: a transfer is read by its id, and an account's
-- movements are its transactions (indexed by account). The two indexes below only cost every
-- transfer two index insertions at random places. Transfers declare no foreign keys here (see
-- 0001), so no constraint uses them either. A release that still had them runs the same
-- queries without them. (SQLite: migration 0003.)
DROP INDEX IF EXISTS transfers_from_account_idx;
DROP INDEX IF EXISTS transfers_to_account_idx;
