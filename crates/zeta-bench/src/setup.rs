//! Accounts and money for the scenarios, made through the API itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;

use crate::BoxError;
use crate::http::{self, Conn, Target};

/// Most transfers in one batch request (the API's limit).
pub const BATCH_ITEMS: usize = 1000;

/// A setup call that is retried while the server is overloaded (503) or a connection drops.
async fn call_retrying(
    conn: &mut Conn,
    method: Method,
    path: &str,
    body: Bytes,
) -> Result<(u16, Bytes), BoxError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match conn.call(method.clone(), path, Some(body.clone())).await {
            Ok((503 | 429, _)) | Err(_) if attempt < 5 => {
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            other => return other,
        }
    }
}

fn excerpt(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    s.chars().take(300).collect()
}

/// Creates `count` USD accounts with `concurrency` connections; returns their ids.
pub async fn create_accounts(
    target: &Arc<Target>,
    label: &str,
    count: usize,
    concurrency: usize,
) -> Result<Vec<String>, BoxError> {
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency.clamp(1, count.max(1)))
        .map(|_| {
            let target = target.clone();
            let next = next.clone();
            let label = label.to_string();
            tokio::spawn(async move {
                let mut conn = Conn::new(target);
                let mut ids = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let body = Bytes::from(format!(
                        "{{\"owner_name\":\"bench {label} {i}\",\"currency\":\"USD\"}}"
                    ));
                    let (status, bytes) =
                        call_retrying(&mut conn, Method::POST, "/v1/accounts", body).await?;
                    if status != 201 {
                        return Err(format!(
                            "POST /v1/accounts answered {status}: {}",
                            excerpt(&bytes)
                        )
                        .into());
                    }
                    ids.push(http::object_id(&bytes).ok_or("created account without id")?);
                }
                Ok::<_, BoxError>(ids)
            })
        })
        .collect();
    let mut ids = Vec::with_capacity(count);
    for worker in workers {
        ids.extend(worker.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "  created {count} {label} account(s) in {secs:.1} s ({:.0}/s)",
        count as f64 / secs.max(1e-9)
    );
    Ok(ids)
}

/// Credits `amount` to an account.
pub async fn credit(target: &Arc<Target>, account: &str, amount: u64) -> Result<(), BoxError> {
    let mut conn = Conn::new(target.clone());
    let (status, bytes) = call_retrying(
        &mut conn,
        Method::POST,
        &format!("/v1/accounts/{account}/credits"),
        Bytes::from(format!("{{\"amount\":{amount}}}")),
    )
    .await?;
    if status != 201 {
        return Err(format!("credit answered {status}: {}", excerpt(&bytes)).into());
    }
    Ok(())
}

/// Moves `amount` from `treasury` to each of `accounts` with batch requests of 1000 transfers,
/// `concurrency` requests at a time; every item must succeed.
pub async fn distribute(
    target: &Arc<Target>,
    treasury: &str,
    accounts: &[(String, u64)],
    concurrency: usize,
) -> Result<(), BoxError> {
    let started = Instant::now();
    let bodies: Vec<(usize, Bytes)> = accounts
        .chunks(BATCH_ITEMS)
        .map(|chunk| {
            let items: Vec<String> = chunk
                .iter()
                .map(|(to, amount)| {
                    format!(
                        "{{\"from_account_id\":\"{treasury}\",\"to_account_id\":\"{to}\",\"amount\":{amount}}}"
                    )
                })
                .collect();
            (
                chunk.len(),
                Bytes::from(format!("{{\"transfers\":[{}]}}", items.join(","))),
            )
        })
        .collect();
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let target = target.clone();
            let next = next.clone();
            let bodies = bodies.clone();
            tokio::spawn(async move {
                let mut conn = Conn::new(target);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((len, body)) = bodies.get(i) else {
                        break;
                    };
                    let (status, bytes) =
                        call_retrying(&mut conn, Method::POST, "/v1/transfers/batch", body.clone())
                            .await?;
                    let created = http::created_items(&bytes);
                    if status != 200 || created != *len {
                        return Err(format!(
                            "funding batch answered {status} with {created}/{len} transfers \
                             created: {}",
                            excerpt(&bytes)
                        )
                        .into());
                    }
                }
                Ok::<_, BoxError>(())
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    eprintln!(
        "  funded {} account(s) in {:.1} s",
        accounts.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
