//! `zeta verify` on PostgreSQL: every invariant of the API recomputed in SQL on one snapshot.

use sqlx::{AssertSqlSafe, ConnectOptions, Connection, PgConnection, Row};
use zeta_ledger::audit::{ChainHead, check_chain};
use zeta_store::{StoreResult, VerifyReport};

use crate::{PgStore, classify};

/// Each check returns rows of (kind, id) that break it.
const CHECKS: &[(&str, &str)] = &[
    (
        "account balance or held amount differs from its transactions",
        "WITH sums AS (
           SELECT account_id,
                  SUM(CASE WHEN status IN ('completed', 'reversed')
                           THEN CASE type WHEN 'credit' THEN amount ELSE -amount END
                           ELSE 0 END) AS posted,
                  SUM(CASE WHEN status = 'pending' AND type = 'debit' THEN amount ELSE 0 END) AS pending
             FROM transactions GROUP BY account_id)
         SELECT 'account', a.id::text
           FROM accounts a LEFT JOIN sums s ON s.account_id = a.id
          WHERE a.balance <> COALESCE(s.posted, 0) OR a.held <> COALESCE(s.pending, 0)
             OR a.balance < 0 OR a.held < 0 OR a.held > a.balance",
    ),
    (
        "balance_after chain is broken",
        "SELECT DISTINCT 'account', account_id::text FROM (
           SELECT account_id, balance_after,
                  CASE type WHEN 'credit' THEN amount ELSE -amount END AS delta,
                  LAG(balance_after) OVER (PARTITION BY account_id ORDER BY posted_seq) AS prev
             FROM transactions WHERE posted_seq IS NOT NULL) t
          WHERE balance_after <> COALESCE(prev, 0) + delta",
    ),
    (
        "transfer legs do not match the transfer",
        "SELECT 'transfer', t.id::text
           FROM transfers t
           LEFT JOIN transactions d ON d.id = t.debit_id
           LEFT JOIN transactions c ON c.id = t.credit_id
          WHERE d.id IS NULL OR d.transfer_id <> t.id OR d.account_id <> t.from_account_id
             OR d.type <> 'debit' OR d.amount <> t.amount
             OR (t.status IN ('completed', 'reversed') AND (
                    c.id IS NULL OR c.transfer_id <> t.id OR c.account_id <> t.to_account_id
                 OR c.type <> 'credit' OR c.amount <> t.amount
                 OR d.status NOT IN ('completed', 'reversed')
                 OR c.status NOT IN ('completed', 'reversed')
                 OR (t.status = 'reversed') <> (t.reversed_by_id IS NOT NULL)))
             OR (t.status = 'failed' AND (t.credit_id IS NOT NULL OR d.status <> 'failed'))",
    ),
    (
        "transaction claims a transfer that does not list it",
        "SELECT 'transaction', x.id::text
           FROM transactions x JOIN transfers t ON t.id = x.transfer_id
          WHERE x.id <> t.debit_id AND x.id IS DISTINCT FROM t.credit_id",
    ),
    (
        "reversal link is inconsistent",
        "SELECT 'transaction', o.id::text
           FROM transactions o LEFT JOIN transactions r ON r.id = o.reversed_by_id
          WHERE (o.status = 'reversed') <> (o.reversed_by_id IS NOT NULL)
             OR (o.reversed_by_id IS NOT NULL AND (r.id IS NULL OR r.reverses_id <> o.id
                 OR r.amount <> o.amount OR r.type = o.type OR r.account_id <> o.account_id))",
    ),
];

/// Audit events checked per round trip.
const AUDIT_PAGE: u32 = 10_000;

pub(crate) async fn run(store: &PgStore) -> StoreResult<VerifyReport> {
    // The checks read whole tables, so they outlast any statement timeout meant for the API's
    // statements and would each log a slow-statement warning: they run on a connection of
    // their own, without either.
    let options = store.options.clone().disable_statement_logging();
    let mut conn = PgConnection::connect_with(&options)
        .await
        .map_err(classify)?;
    let begin = store.begin_statement("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    let mut tx = conn
        .begin_with(AssertSqlSafe(format!(
            "{begin}; SET LOCAL statement_timeout = 0"
        )))
        .await
        .map_err(classify)?;
    let totals = store
        .query(
            "SELECT (SELECT count(*) FROM accounts), (SELECT count(*) FROM transactions),
                (SELECT COALESCE(SUM(balance), 0)::text FROM accounts),
                (SELECT count(*) FROM audit_events)",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(classify)?;
    let mut report = VerifyReport {
        accounts: totals.try_get(0).map_err(classify)?,
        transactions: totals.try_get(1).map_err(classify)?,
        audit_events: totals.try_get(3).map_err(classify)?,
        total_balance: totals
            .try_get::<String, _>(2)
            .map_err(classify)?
            .parse()
            .unwrap_or_default(),
        problems: Vec::new(),
    };
    for (what, sql) in CHECKS {
        for row in store
            .query(sql)
            .fetch_all(&mut *tx)
            .await
            .map_err(classify)?
        {
            let kind: String = row.try_get(0).map_err(classify)?;
            let id: String = row.try_get(1).map_err(classify)?;
            report.problems.push(format!("{kind} {id}: {what}"));
        }
    }
    // The audit hash chain, page by page in `seq` order; the first broken link is named.
    let mut head = ChainHead::genesis();
    loop {
        let page =
            crate::rows::audit_events(&mut tx, store.pool_mode(), head.seq, AUDIT_PAGE).await?;
        if page.is_empty() {
            break;
        }
        match check_chain(&head, &page) {
            Ok(next) => head = next,
            Err(problem) => {
                report.problems.push(problem);
                break;
            }
        }
    }
    tx.commit().await.map_err(classify)?;
    // The report is complete: a failed goodbye to the server changes nothing in it.
    let _ = conn.close().await;
    Ok(report)
}
