-- No query looks transfers up by account: a transfer is read by its id, and an account's
-- movements are its transactions (indexed by account). The two indexes below only cost every
-- transfer two index insertions at random places, i.e. two more pages written to the WAL and
-- checkpointed. They would serve a cascading DELETE of an account, which Zeta never issues (an
-- account is closed, never deleted). A release that still had them runs the same queries
-- without them. (PostgreSQL: migration 0004.)
DROP INDEX IF EXISTS transfers_from_account_idx;
DROP INDEX IF EXISTS transfers_to_account_idx;
