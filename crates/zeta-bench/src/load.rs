//! The closed-loop load generator: N connections, each a task that sends a request, awaits the
//! whole response, records its latency and sends the next, until the deadline.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use hyper::{Method, Uri};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::BoxError;
use crate::http::{self, Conn, REQUEST_TIMEOUT, Target};

/// What every request of a scenario does.
#[derive(Clone)]
pub enum Workload {
    /// `POST /v1/transfers` between two distinct random accounts, amount 1..=100.
    Transfers { accounts: Arc<Vec<String>> },
    /// `POST /v1/accounts/{id}/debits` of 1 on one account.
    Debit { account: String },
    /// `POST /v1/transfers/batch` with `size` random transfers.
    Batch {
        accounts: Arc<Vec<String>>,
        size: usize,
    },
    /// `GET /v1/accounts/{id}` of a random account.
    Reads { accounts: Arc<Vec<String>> },
}

impl Workload {
    fn is_batch(&self) -> bool {
        matches!(self, Workload::Batch { .. })
    }

    /// Transfers (or debits) a successful request stands for; `None` for reads.
    fn moves_money(&self) -> bool {
        !matches!(self, Workload::Reads { .. })
    }
}

/// Writes a small unsigned integer in decimal.
fn put_u64(buf: &mut BytesMut, mut n: u64) {
    let mut digits = [0_u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.put_slice(&digits[i..]);
}

fn two_distinct(rng: &mut SmallRng, n: usize) -> (usize, usize) {
    let a = rng.random_range(0..n);
    let mut b = rng.random_range(0..n - 1);
    if b >= a {
        b += 1;
    }
    (a, b)
}

fn put_transfer(buf: &mut BytesMut, from: &str, to: &str, amount: u64) {
    buf.put_slice(b"{\"from_account_id\":\"");
    buf.put_slice(from.as_bytes());
    buf.put_slice(b"\",\"to_account_id\":\"");
    buf.put_slice(to.as_bytes());
    buf.put_slice(b"\",\"amount\":");
    put_u64(buf, amount);
    buf.put_u8(b'}');
}

/// Per-task request factory: preallocated body buffer and precomputed URIs.
struct Generator {
    workload: Workload,
    rng: SmallRng,
    buf: BytesMut,
    path: String,
    fixed_uri: Option<Uri>,
}

impl Generator {
    fn new(workload: Workload, seed: u64) -> Self {
        let (capacity, fixed_uri) = match &workload {
            Workload::Transfers { .. } => (256, Some(Uri::from_static("/v1/transfers"))),
            Workload::Debit { account } => (
                64,
                format!("/v1/accounts/{account}/debits").parse::<Uri>().ok(),
            ),
            Workload::Batch { size, .. } => (
                size * 128 + 64,
                Some(Uri::from_static("/v1/transfers/batch")),
            ),
            Workload::Reads { .. } => (0, None),
        };
        Self {
            workload,
            rng: SmallRng::seed_from_u64(seed),
            buf: BytesMut::with_capacity(capacity),
            path: String::with_capacity(64),
            fixed_uri,
        }
    }

    /// The next request: method, URI and body.
    fn next(&mut self) -> Result<(Method, Uri, Option<Bytes>), BoxError> {
        let buf = &mut self.buf;
        match &self.workload {
            Workload::Transfers { accounts } => {
                let (a, b) = two_distinct(&mut self.rng, accounts.len());
                let amount = self.rng.random_range(1..=100);
                put_transfer(buf, &accounts[a], &accounts[b], amount);
            }
            Workload::Debit { .. } => buf.put_slice(b"{\"amount\":1}"),
            Workload::Batch { accounts, size } => {
                buf.put_slice(b"{\"transfers\":[");
                for i in 0..*size {
                    if i > 0 {
                        buf.put_u8(b',');
                    }
                    let (a, b) = two_distinct(&mut self.rng, accounts.len());
                    let amount = self.rng.random_range(1..=100);
                    put_transfer(buf, &accounts[a], &accounts[b], amount);
                }
                buf.put_slice(b"]}");
            }
            Workload::Reads { accounts } => {
                let id = &accounts[self.rng.random_range(0..accounts.len())];
                self.path.clear();
                let _ = write!(self.path, "/v1/accounts/{id}");
                return Ok((Method::GET, self.path.parse()?, None));
            }
        }
        let uri = self.fixed_uri.clone().ok_or("no URI")?;
        // `split` leaves the allocation to be reused once the sent body is dropped.
        Ok((Method::POST, uri, Some(buf.split().freeze())))
    }
}

/// What one scenario measured.
pub struct LoadStats {
    pub elapsed: Duration,
    pub histogram: Histogram<u64>,
    pub requests: u64,
    /// 2xx responses (for a batch: items with status 201).
    pub succeeded_moves: u64,
    pub by_status: BTreeMap<u16, u64>,
    pub by_code: BTreeMap<String, u64>,
    pub transport_errors: u64,
    pub last_transport_error: Option<String>,
    pub moves_money: bool,
}

impl LoadStats {
    fn new(moves_money: bool) -> Self {
        Self {
            elapsed: Duration::ZERO,
            histogram: new_histogram(),
            requests: 0,
            succeeded_moves: 0,
            by_status: BTreeMap::new(),
            by_code: BTreeMap::new(),
            transport_errors: 0,
            last_transport_error: None,
            moves_money,
        }
    }

    fn merge(&mut self, other: LoadStats) {
        let _ = self.histogram.add(&other.histogram);
        self.requests += other.requests;
        self.succeeded_moves += other.succeeded_moves;
        for (k, v) in other.by_status {
            *self.by_status.entry(k).or_default() += v;
        }
        for (k, v) in other.by_code {
            *self.by_code.entry(k).or_default() += v;
        }
        self.transport_errors += other.transport_errors;
        if other.last_transport_error.is_some() {
            self.last_transport_error = other.last_transport_error;
        }
    }

    /// 5xx responses plus transport errors.
    pub fn errors(&self) -> u64 {
        self.transport_errors
            + self
                .by_status
                .iter()
                .filter(|(s, _)| **s >= 500)
                .map(|(_, n)| n)
                .sum::<u64>()
    }
}

fn new_histogram() -> Histogram<u64> {
    // Microseconds, 1 µs .. 120 s, 3 significant digits.
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// One request and its response, classified into `stats`.
async fn exchange(
    conn: &mut Conn,
    generator: &mut Generator,
    stats: &mut LoadStats,
) -> Result<(), BoxError> {
    let (method, uri, body) = generator.next()?;
    let batch = generator.workload.is_batch();
    let started = Instant::now();
    let response = conn.send(method, uri, body, true).await?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) && !batch {
        http::drain(response.into_body()).await?;
        if stats.moves_money {
            stats.succeeded_moves += 1;
        }
    } else {
        let bytes = http::collect(response.into_body()).await?;
        if batch && status == 200 {
            stats.succeeded_moves += http::created_items(&bytes) as u64;
            for code in http::problem_codes(&bytes) {
                *stats.by_code.entry(format!("item:{code}")).or_default() += 1;
            }
        } else if status >= 400 {
            let code = http::problem_code(&bytes).unwrap_or("(no code)");
            *stats.by_code.entry(code.to_string()).or_default() += 1;
        }
    }
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    stats.histogram.saturating_record(micros.max(1));
    stats.requests += 1;
    *stats.by_status.entry(status).or_default() += 1;
    Ok(())
}

/// Runs `workload` over `connections` keep-alive connections for `duration`.
pub async fn run(
    target: &Arc<Target>,
    workload: &Workload,
    connections: usize,
    duration: Duration,
    seed: u64,
) -> Result<LoadStats, BoxError> {
    // Connect first, so that the measured window holds no handshakes.
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut conn = Conn::new(target.clone());
        conn.connect().await?;
        conns.push(conn);
    }
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut conn)| {
            let workload = workload.clone();
            tokio::spawn(async move {
                let mut generator = Generator::new(workload, seed.wrapping_add(i as u64));
                let mut stats = LoadStats::new(generator.workload.moves_money());
                while Instant::now() < deadline {
                    let result = tokio::time::timeout(
                        REQUEST_TIMEOUT,
                        exchange(&mut conn, &mut generator, &mut stats),
                    )
                    .await
                    .unwrap_or_else(|_| Err("request timed out".into()));
                    if let Err(e) = result {
                        stats.transport_errors += 1;
                        stats.last_transport_error = Some(e.to_string());
                        conn.reset();
                        // Do not spin on a refused connection.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                stats
            })
        })
        .collect();
    let mut total = LoadStats::new(workload.moves_money());
    for task in tasks {
        total.merge(task.await?);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_numbers() {
        for n in [0_u64, 7, 10, 99, 100, 123_456_789, u64::MAX] {
            let mut b = BytesMut::new();
            put_u64(&mut b, n);
            assert_eq!(std::str::from_utf8(&b).unwrap(), n.to_string());
        }
    }

    #[test]
    fn batch_bodies_are_json() {
        let accounts = Arc::new(vec!["a".repeat(36), "b".repeat(36), "c".repeat(36)]);
        let mut g = Generator::new(Workload::Batch { accounts, size: 5 }, 1);
        for _ in 0..3 {
            let (_, uri, body) = g.next().unwrap();
            assert_eq!(uri.path(), "/v1/transfers/batch");
            let v: serde_json::Value = serde_json::from_slice(&body.unwrap()).unwrap();
            let items = v["transfers"].as_array().unwrap();
            assert_eq!(items.len(), 5);
            for item in items {
                assert_ne!(item["from_account_id"], item["to_account_id"]);
                let amount = item["amount"].as_u64().unwrap();
                assert!((1..=100).contains(&amount));
            }
        }
    }

    #[test]
    fn distinct_pairs() {
        let mut rng = SmallRng::seed_from_u64(3);
        for _ in 0..1000 {
            let (a, b) = two_distinct(&mut rng, 2);
            assert_ne!(a, b);
        }
    }
}
