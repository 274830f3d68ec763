//! The real binary as a person runs it: the quick start on the embedded SQLite default, a crash
//! (kill -9) in the middle of idempotent transfers, a graceful SIGTERM under load, PostgreSQL
//! stopped under load, and three processes on one PostgreSQL database.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A minimal HTTP/1.1 client (one request per connection), so the test needs no HTTP crate.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    extra: &[(&str, &str)],
    body: Option<&Value>,
) -> std::io::Result<(u16, Value)> {
    http_full(addr, method, path, key, extra, body).map(|(status, _, body)| (status, body))
}

/// Like [`http`], also returning the response head (status line and headers) as text.
fn http_full(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    extra: &[(&str, &str)],
    body: Option<&Value>,
) -> std::io::Result<(u16, String, Value)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(key) = key {
        request.push_str(&format!("Authorization: Bearer {key}\r\n"));
    }
    for (name, value) in extra {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {text:?}")))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((
        status,
        head.to_ascii_lowercase(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    ))
}

/// Opens an account through the API and returns its id (asserting the 201).
fn open_account(addr: SocketAddr, key: &str, owner: &str, currency: &str) -> String {
    let (status, account) = http(
        addr,
        "POST",
        "/v1/accounts",
        Some(key),
        &[],
        Some(&json!({"owner_name": owner, "currency": currency})),
    )
    .expect("create");
    assert_eq!(status, 201, "{account}");
    account["id"].as_str().expect("id").to_string()
}

fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    /// Starts `zeta` in `dir` with `env`, and waits (polling) until it is ready.
    fn start(dir: &Path, env: &[(&str, &str)]) -> Self {
        let addr = free_addr();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_zeta"));
        cmd.current_dir(dir)
            .env_remove("DATABASE_URL")
            .env("ZETA_LISTEN", addr.to_string())
            .env("ZETA_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start zeta");
        let server = Self { child, addr };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = http(addr, "GET", "/health/ready", None, &[], None) {
                return server;
            }
            assert!(Instant::now() < deadline, "server did not become ready");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr(&mut self) -> String {
        let mut err = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = pipe.read_to_string(&mut err);
        }
        err
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("zeta-{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn verify(dir: &Path, database_url: Option<&str>) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_zeta"));
    cmd.arg("verify")
        .current_dir(dir)
        .env_remove("DATABASE_URL");
    if let Some(url) = database_url {
        cmd.env("DATABASE_URL", url);
    }
    let out = cmd.output().expect("verify");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The README's quick start: no DATABASE_URL, a fresh directory, the key printed once.
#[test]
fn quick_start_on_the_embedded_default() {
    let dir = temp_dir("quickstart");
    let mut server = Server::start(&dir, &[]);
    assert!(dir.join("zeta.db").exists(), "./zeta.db is created");
    let addr = server.addr;
    // Stop it to read what it printed, then start again: the key is printed only once.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(server.child.id().to_string())
        .status();
    let status = server.child.wait().expect("wait");
    assert!(status.success(), "SIGTERM exits 0");
    let first = server.stderr();
    let key = first
        .split_whitespace()
        .find(|w| w.starts_with("zeta_") && w.len() == 69)
        .unwrap_or_else(|| panic!("no key printed: {first}"))
        .to_string();
    drop(server);
    let mut server = Server::start(&dir, &[]);
    let addr2 = server.addr;
    assert_ne!(addr, SocketAddr::from(([0, 0, 0, 0], 0)));

    let id = open_account(addr2, &key, "Ada", "EUR");
    let (status, credit) = http(
        addr2,
        "POST",
        &format!("/v1/accounts/{id}/credits"),
        Some(&key),
        &[("Idempotency-Key", "pay-1")],
        Some(&json!({"amount": 1500})),
    )
    .expect("credit");
    assert_eq!(status, 201, "{credit}");
    assert_eq!(credit["balance_after"], 1500);
    let (status, read) = http(
        addr2,
        "GET",
        &format!("/v1/accounts/{id}"),
        Some(&key),
        &[],
        None,
    )
    .expect("get");
    assert_eq!(status, 200);
    assert_eq!(read["balance"], 1500);
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(server.child.id().to_string())
        .status();
    assert!(server.child.wait().expect("wait").success());
    assert!(
        !server.stderr().contains(&key),
        "the key is printed only at the first start"
    );
    // A clean stop folds SQLite's WAL into the database file.
    assert!(!dir.join("zeta.db-wal").exists(), "the WAL is left behind");
    let (code, report) = verify(&dir, None);
    assert_eq!(code, 0, "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// kill -9 during idempotent transfers on SQLite, restart, retry every request: each transfer
/// happened exactly once and every invariant holds.
#[test]
fn crash_during_idempotent_transfers_is_exactly_once() {
    const TRANSFERS: usize = 120;
    const CLIENTS: usize = 8;
    let dir = temp_dir("crash");
    let env = [("ZETA_BOOTSTRAP_API_KEY", "crash-test-key")];
    let key = "crash-test-key";
    let server = Server::start(&dir, &env);
    let addr = server.addr;
    let (from, to) = (
        open_account(addr, key, "from", "USD"),
        open_account(addr, key, "to", "USD"),
    );
    let (s, _) = http(
        addr,
        "POST",
        &format!("/v1/accounts/{from}/credits"),
        Some(key),
        &[],
        Some(&json!({"amount": 1_000_000})),
    )
    .expect("fund");
    assert_eq!(s, 201);

    let acknowledged = Arc::new(Mutex::new(Vec::<(usize, Value)>::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let server = Arc::new(Mutex::new(Some(server)));
    let mut threads = Vec::new();
    for _ in 0..CLIENTS {
        let (acknowledged, next, server) = (acknowledged.clone(), next.clone(), server.clone());
        let (from, to) = (from.clone(), to.clone());
        threads.push(std::thread::spawn(move || {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= TRANSFERS {
                    return;
                }
                let body = json!({"from_account_id": from, "to_account_id": to, "amount": i + 1});
                match http(
                    addr,
                    "POST",
                    "/v1/transfers",
                    Some(key),
                    &[("Idempotency-Key", &format!("t-{i}"))],
                    Some(&body),
                ) {
                    Ok((201, transfer)) => {
                        let mut acked = acknowledged.lock().expect("lock");
                        acked.push((i, transfer));
                        if acked.len() == TRANSFERS / 3 {
                            // The crash: SIGKILL while the other clients are mid-request.
                            if let Some(mut s) = server.lock().expect("lock").take() {
                                let _ = s.child.kill();
                                let _ = s.child.wait();
                            }
                        }
                    }
                    Ok((status, body)) => panic!("unexpected {status}: {body}"),
                    Err(_) => {} // connection refused or reset by the crash: not acknowledged
                }
            }
        }));
    }
    for t in threads {
        t.join().expect("client");
    }
    assert!(
        server.lock().expect("lock").is_none(),
        "the server was killed mid-run"
    );
    let acked = acknowledged.lock().expect("lock").clone();
    assert!(
        acked.len() >= TRANSFERS / 3 && acked.len() < TRANSFERS,
        "crash hit mid-run: {}",
        acked.len()
    );

    // Restart on the same file and retry every request with its key.
    let server = Server::start(&dir, &env);
    let addr = server.addr;
    let mut expected_total = 0;
    for i in 0..TRANSFERS {
        let body = json!({"from_account_id": from, "to_account_id": to, "amount": i + 1});
        let (status, transfer) = http(
            addr,
            "POST",
            "/v1/transfers",
            Some(key),
            &[("Idempotency-Key", &format!("t-{i}"))],
            Some(&body),
        )
        .expect("retry");
        assert_eq!(status, 201, "{transfer}");
        if let Some((_, first)) = acked.iter().find(|(j, _)| *j == i) {
            assert_eq!(
                &transfer, first,
                "an acknowledged transfer replays, not re-applies"
            );
        }
        expected_total += i as i64 + 1;
    }
    let (_, account) = http(
        addr,
        "GET",
        &format!("/v1/accounts/{to}"),
        Some(key),
        &[],
        None,
    )
    .expect("get");
    assert_eq!(
        account["balance"], expected_total,
        "each transfer exactly once"
    );
    let (_, page) = http(
        addr,
        "GET",
        &format!("/v1/accounts/{to}/transactions?limit=200"),
        Some(key),
        &[],
        None,
    )
    .expect("list");
    assert_eq!(page["data"].as_array().map(Vec::len), Some(TRANSFERS));
    drop(server);
    let (code, report) = verify(&dir, None);
    assert_eq!(code, 0, "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGTERM while money commands are in flight: all of them complete and are committed, the
/// process exits 0.
#[test]
fn sigterm_finishes_in_flight_commands_and_exits_zero() {
    let dir = temp_dir("sigterm");
    let env = [("ZETA_BOOTSTRAP_API_KEY", "term-key")];
    let key = "term-key";
    let mut server = Server::start(&dir, &env);
    let addr = server.addr;
    let id = open_account(addr, key, "t", "USD");
    let ok = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for _ in 0..16 {
        let (ok, started, id) = (ok.clone(), started.clone(), id.clone());
        threads.push(std::thread::spawn(move || {
            for _ in 0..20 {
                started.fetch_add(1, Ordering::SeqCst);
                match http(
                    addr,
                    "POST",
                    &format!("/v1/accounts/{id}/credits"),
                    Some(key),
                    &[],
                    Some(&json!({"amount": 1})),
                ) {
                    Ok((201, _)) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok((status, body)) => panic!("unexpected {status}: {body}"),
                    Err(_) => return, // the listener closed: no more requests accepted
                }
            }
        }));
    }
    while started.load(Ordering::SeqCst) < 40 {
        std::thread::yield_now();
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(server.child.id().to_string())
        .status();
    let status = server.child.wait().expect("wait");
    assert!(status.success(), "exit 0 after SIGTERM: {status:?}");
    for t in threads {
        t.join().expect("client");
    }
    let acknowledged = ok.load(Ordering::SeqCst);
    assert!(acknowledged > 0);
    // Every acknowledged credit is committed.
    let server = Server::start(&dir, &env);
    let (_, account) = http(
        server.addr,
        "GET",
        &format!("/v1/accounts/{id}"),
        Some(key),
        &[],
        None,
    )
    .expect("get");
    assert_eq!(
        account["balance"].as_i64(),
        Some(acknowledged as i64),
        "every acknowledged credit, and only those"
    );
    drop(server);
    let (code, report) = verify(&dir, None);
    assert_eq!(code, 0, "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A PostgreSQL cluster of the test's own (initdb in a temp dir, its own port), so it can be
/// stopped and started without touching the machine's cluster or other tests.
struct PrivatePg {
    bin: std::path::PathBuf,
    dir: std::path::PathBuf,
    port: u16,
}

impl PrivatePg {
    fn run(&self, program: &str, args: &[&str]) -> bool {
        let path = self.bin.join(program);
        let as_root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let mut cmd = if as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        cmd.args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn start() -> Self {
        let root = std::path::Path::new("/usr/lib/postgresql");
        let version = std::fs::read_dir(root)
            .expect("PostgreSQL server binaries under /usr/lib/postgresql are required")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .max()
            .expect("a PostgreSQL version directory");
        let dir = temp_dir("pg");
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status();
        let pg = Self {
            bin: version.join("bin"),
            port: free_addr().port(),
            dir,
        };
        let data = pg.dir.join("data");
        assert!(
            pg.run(
                "initdb",
                &[
                    "-D",
                    data.to_str().expect("path"),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8"
                ]
            ),
            "initdb failed"
        );
        pg.start_again();
        pg
    }

    fn start_again(&self) {
        let data = self.dir.join("data");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log");
        assert!(
            self.run(
                "pg_ctl",
                &[
                    "-D",
                    data.to_str().expect("path"),
                    "-o",
                    &options,
                    "-l",
                    log.to_str().expect("path"),
                    "-w",
                    "start"
                ]
            ),
            "pg_ctl start failed"
        );
    }

    fn stop(&self) {
        let data = self.dir.join("data");
        assert!(
            self.run(
                "pg_ctl",
                &[
                    "-D",
                    data.to_str().expect("path"),
                    "-m",
                    "fast",
                    "-w",
                    "stop"
                ]
            ),
            "pg_ctl stop failed"
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap_or(""),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Clone, Debug)]
struct Outcome {
    key: String,
    status: u16,
    retry_after: bool,
    elapsed: Duration,
    at: Instant,
}

/// PostgreSQL stops under load: requests turn into fast 503s with Retry-After once the breaker
/// opens, readiness says 503, nothing is a 500 or hangs; when PostgreSQL returns, everything
/// recovers by itself, and retrying the refused requests applies each exactly once.
#[test]
fn postgres_outage_under_load_fails_fast_and_recovers() {
    let pg = PrivatePg::start();
    let dir = temp_dir("outage");
    let url = pg.url();
    let key = "outage-key";
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("ZETA_BOOTSTRAP_API_KEY", key),
        ("ZETA_BREAKER_FAILURES", "3"),
        ("ZETA_BREAKER_OPEN_MS", "500"),
        ("ZETA_DB_ACQUIRE_TIMEOUT_MS", "500"),
        ("ZETA_DB_STATEMENT_TIMEOUT_MS", "2000"),
        // This test measures the breaker, not the rate limiter.
        ("ZETA_RATE_LIMIT_RPS", "1000000"),
        ("ZETA_RATE_LIMIT_BURST", "1000000"),
    ];
    let server = Server::start(&dir, &env);
    let addr = server.addr;
    let id = open_account(addr, key, "o", "USD");

    let outcomes = Arc::new(Mutex::new(Vec::<Outcome>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut threads = Vec::new();
    for t in 0..6 {
        let (outcomes, stop, id) = (outcomes.clone(), stop.clone(), id.clone());
        threads.push(std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) && i < 20_000 {
                let key_i = format!("c-{t}-{i}");
                let started = Instant::now();
                let result = http_full(
                    addr,
                    "POST",
                    &format!("/v1/accounts/{id}/credits"),
                    Some(key),
                    &[("Idempotency-Key", &key_i)],
                    Some(&json!({"amount": 1})),
                );
                let (status, head, _) =
                    result.unwrap_or_else(|e| panic!("request {key_i} failed or hung: {e}"));
                outcomes.lock().expect("lock").push(Outcome {
                    key: key_i,
                    status,
                    retry_after: head.contains("\r\nretry-after: "),
                    elapsed: started.elapsed(),
                    at: Instant::now(),
                });
                i += 1;
                if status == 503 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }));
    }
    let wait_for = |what: &str, limit: Duration, check: &dyn Fn(&[Outcome]) -> bool| {
        let deadline = Instant::now() + limit;
        while !check(&outcomes.lock().expect("lock")) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for("traffic", Duration::from_secs(30), &|o| {
        o.iter().filter(|x| x.status == 201).count() >= 50
    });

    pg.stop();
    let stopped = Instant::now();
    wait_for("503s", Duration::from_secs(30), &|o| {
        o.iter()
            .filter(|x| x.at > stopped && x.status == 503)
            .count()
            >= 300
    });
    let (ready, _) = http(addr, "GET", "/health/ready", None, &[], None).expect("ready");
    assert_eq!(ready, 503, "readiness reports the outage");

    pg.start_again();
    let restarted = Instant::now();
    wait_for("recovery", Duration::from_secs(60), &|o| {
        o.iter()
            .filter(|x| x.at > restarted && x.status == 201)
            .count()
            >= 20
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while http(addr, "GET", "/health/ready", None, &[], None)
        .map(|r| r.0)
        .unwrap_or(0)
        != 200
    {
        assert!(Instant::now() < deadline, "readiness never recovered");
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("client");
    }

    let all = outcomes.lock().expect("lock").clone();
    let unexpected: Vec<_> = all
        .iter()
        .filter(|o| o.status != 201 && o.status != 503)
        .collect();
    assert!(
        unexpected.is_empty(),
        "only 201 and 503, never a 500: {unexpected:?}"
    );
    assert!(
        all.iter()
            .filter(|o| o.status == 503)
            .all(|o| o.retry_after),
        "every 503 has Retry-After"
    );
    // Once the breaker is open, refusals are immediate: the outage's 503s are mostly fast ones.
    let mut fast: Vec<Duration> = all
        .iter()
        .filter(|o| o.status == 503 && o.at > stopped && o.at < restarted)
        .map(|o| o.elapsed)
        .collect();
    fast.sort();
    assert!(!fast.is_empty(), "503s while the breaker was open");
    let median = fast[fast.len() / 2];
    assert!(
        median < Duration::from_millis(100),
        "open breaker answers in well under 100 ms: median {median:?}"
    );

    // Retrying every refused request applies each exactly once.
    for o in all.iter().filter(|o| o.status == 503) {
        let (status, body) = http(
            addr,
            "POST",
            &format!("/v1/accounts/{id}/credits"),
            Some(key),
            &[("Idempotency-Key", &o.key)],
            Some(&json!({"amount": 1})),
        )
        .expect("retry");
        assert_eq!(status, 201, "{body}");
    }
    let (_, account) = http(
        addr,
        "GET",
        &format!("/v1/accounts/{id}"),
        Some(key),
        &[],
        None,
    )
    .expect("get");
    assert_eq!(
        account["balance"].as_i64(),
        Some(all.len() as i64),
        "each request applied exactly once"
    );
    drop(server);
    let (code, report) = verify(&dir, Some(&url));
    assert_eq!(code, 0, "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

impl PrivatePg {
    /// A hot standby of this cluster, streaming from it: `pg_basebackup -R` into a data directory
    /// of its own, started on its own port. PostgreSQL's defaults are enough on the primary
    /// (`wal_level=replica`, `max_wal_senders=10`, and initdb's `replication` line in pg_hba).
    fn standby(&self) -> Self {
        let dir = temp_dir("pg-standby");
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status();
        let standby = Self {
            bin: self.bin.clone(),
            port: free_addr().port(),
            dir,
        };
        let data = standby.dir.join("data");
        assert!(
            self.run(
                "pg_basebackup",
                &[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-D",
                    data.to_str().expect("path"),
                    "-R",
                    "-X",
                    "stream",
                    "-c",
                    "fast"
                ]
            ),
            "pg_basebackup failed"
        );
        standby.start_again();
        standby
    }
}

/// One statement on `url`, its first column as text; `$1` is `arg` when given.
fn sql_text(url: &str, sql: &'static str, arg: Option<&str>) -> String {
    use sqlx::Connection;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut conn = sqlx::PgConnection::connect(url)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        let mut query = sqlx::query_scalar::<_, String>(sql);
        if let Some(arg) = arg {
            query = query.bind(arg);
        }
        let value = query
            .fetch_one(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = conn.close().await;
        value
    })
}

/// Polls until the standby has replayed everything the primary has written so far.
fn wait_replayed(primary: &PrivatePg, standby: &PrivatePg) {
    let target = sql_text(&primary.url(), "SELECT pg_current_wal_lsn()::text", None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while sql_text(
        &standby.url(),
        "SELECT (pg_last_wal_replay_lsn() >= $1::pg_lsn)::text",
        Some(&target),
    ) != "true"
    {
        assert!(
            Instant::now() < deadline,
            "the standby never replayed up to {target}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads go to a real streaming replica (ZETA_DATABASE_READ_URL), decisions to the primary:
/// with replay paused on the standby, GETs show the old state while a debit that needs the
/// newest credit succeeds, an idempotent request replays, a PATCH with the fresh version
/// applies and a stale one is refused; after resuming, reads catch up. With the replica down,
/// reads answer 503 problem+json, money still moves, readiness stays 200 and names the replica.
#[test]
fn read_replica_serves_reads_while_decisions_stay_on_the_primary() {
    let primary = PrivatePg::start();
    let standby = primary.standby();
    let dir = temp_dir("replica");
    let (primary_url, standby_url) = (primary.url(), standby.url());
    let key = "replica-key";
    let env = [
        ("DATABASE_URL", primary_url.as_str()),
        ("ZETA_DATABASE_READ_URL", standby_url.as_str()),
        ("ZETA_BOOTSTRAP_API_KEY", key),
        // How long a read waits for the stopped replica before its 503.
        ("ZETA_DB_ACQUIRE_TIMEOUT_MS", "1000"),
    ];
    let server = Server::start(&dir, &env);
    let addr = server.addr;
    let call = |method: &str, path: &str, extra: &[(&str, &str)], body: Option<&Value>| {
        http_full(addr, method, path, Some(key), extra, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    };
    let (status, ready) = http(addr, "GET", "/health/ready", None, &[], None).expect("ready");
    assert_eq!(status, 200);
    assert_eq!(
        ready,
        json!({"status": "ready", "checks": {"database": "ok", "read_replica": "ok"}})
    );

    let create = |name: &str| {
        let (status, _, account) = call(
            "POST",
            "/v1/accounts",
            &[],
            Some(&json!({"owner_name": name, "currency": "EUR"})),
        );
        assert_eq!(status, 201, "{account}");
        account["id"].as_str().expect("id").to_string()
    };
    let (a, b) = (create("a"), create("b"));
    let account_path = format!("/v1/accounts/{a}");
    let (status, _, first) = call(
        "POST",
        &format!("{account_path}/credits"),
        &[("Idempotency-Key", "credit-1")],
        Some(&json!({"amount": 1000})),
    );
    assert_eq!((status, &first["balance_after"]), (201, &json!(1000)));
    wait_replayed(&primary, &standby);
    let (status, head, account) = call("GET", &account_path, &[], None);
    assert_eq!(status, 200);
    assert_eq!(
        (&account["balance"], &account["version"]),
        (&json!(1000), &json!(2))
    );
    assert!(head.contains("\r\netag: \"2\""), "{head}");

    // Replay paused: the replica keeps showing the state above.
    sql_text(&standby_url, "SELECT pg_wal_replay_pause()::text", None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while sql_text(&standby_url, "SELECT pg_get_wal_replay_pause_state()", None) != "paused" {
        assert!(Instant::now() < deadline, "replay never paused");
        std::thread::sleep(Duration::from_millis(10));
    }
    let credit_body = json!({"amount": 500});
    let (status, _, credit) = call(
        "POST",
        &format!("{account_path}/credits"),
        &[("Idempotency-Key", "credit-2")],
        Some(&credit_body),
    );
    assert_eq!(
        (status, &credit["balance_after"]),
        (201, &json!(1500)),
        "{credit}"
    );
    let credit_id = credit["id"].as_str().expect("id").to_string();

    // Reads come from the replica: the old balance, no new transaction.
    let (status, head, account) = call("GET", &account_path, &[], None);
    assert_eq!(status, 200);
    assert_eq!(
        (&account["balance"], &account["version"]),
        (&json!(1000), &json!(2))
    );
    assert!(head.contains("\r\netag: \"2\""), "{head}");
    let (status, _, balance) = call("GET", &format!("{account_path}/balance"), &[], None);
    assert_eq!((status, &balance["balance"]), (200, &json!(1000)));
    let (status, _, page) = call("GET", &format!("{account_path}/transactions"), &[], None);
    assert_eq!(status, 200);
    assert_eq!(page["data"].as_array().map(Vec::len), Some(1), "{page}");
    let (status, _, missing) = call("GET", &format!("/v1/transactions/{credit_id}"), &[], None);
    assert_eq!((status, &missing["code"]), (404, &json!("not_found")));

    // Decisions are made on the primary: this debit needs the credit the replica does not show.
    let (status, _, debit) = call(
        "POST",
        &format!("{account_path}/debits"),
        &[],
        Some(&json!({"amount": 1200})),
    );
    assert_eq!(
        (status, &debit["balance_after"]),
        (201, &json!(300)),
        "{debit}"
    );
    let (status, _, transfer) = call(
        "POST",
        "/v1/transfers",
        &[],
        Some(&json!({"from_account_id": a, "to_account_id": b, "amount": 100})),
    );
    assert_eq!(
        (status, &transfer["debit"]["balance_after"]),
        (201, &json!(200)),
        "{transfer}"
    );
    let transfer_id = transfer["id"].as_str().expect("id").to_string();
    let (status, _, _) = call("GET", &format!("/v1/transfers/{transfer_id}"), &[], None);
    assert_eq!(status, 404, "the replica has not seen the transfer");
    // The idempotent request made during the pause replays (not applied twice).
    let (status, head, replayed) = call(
        "POST",
        &format!("{account_path}/credits"),
        &[("Idempotency-Key", "credit-2")],
        Some(&credit_body),
    );
    assert_eq!(status, 201);
    assert!(head.contains("\r\nidempotent-replayed: true"), "{head}");
    assert_eq!(replayed, credit);
    // The ETag the replica gave is stale: refused, never applied over the newer changes. The
    // fresh one (created 1, credit 2, credit 3, debit 4, transfer 5) applies.
    let patch = json!({"owner_name": "a renamed"});
    let (status, _, stale) = call(
        "PATCH",
        &account_path,
        &[("If-Match", "\"2\"")],
        Some(&patch),
    );
    assert_eq!((status, &stale["code"]), (412, &json!("version_mismatch")));
    let (status, head, patched) = call(
        "PATCH",
        &account_path,
        &[("If-Match", "\"5\"")],
        Some(&patch),
    );
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        (
            &patched["balance"],
            &patched["version"],
            &patched["owner_name"]
        ),
        (&json!(200), &json!(6), &json!("a renamed"))
    );
    assert!(head.contains("\r\netag: \"6\""), "{head}");
    // An account created during the pause: not yet readable, but a PATCH without If-Match is
    // answered from the primary (428, not 404).
    let c = create("c");
    let (status, _, _) = call("GET", &format!("/v1/accounts/{c}"), &[], None);
    assert_eq!(status, 404, "the replica has not seen the new account");
    let (status, _, precondition) = call("PATCH", &format!("/v1/accounts/{c}"), &[], Some(&patch));
    assert_eq!(
        (status, &precondition["code"]),
        (428, &json!("precondition_required"))
    );

    // Replay resumed: reads catch up.
    sql_text(&standby_url, "SELECT pg_wal_replay_resume()::text", None);
    wait_replayed(&primary, &standby);
    let (status, head, account) = call("GET", &account_path, &[], None);
    assert_eq!(status, 200);
    assert_eq!(
        (&account["balance"], &account["version"]),
        (&json!(200), &json!(6))
    );
    assert!(head.contains("\r\netag: \"6\""), "{head}");
    let (status, _, page) = call("GET", &format!("{account_path}/transactions"), &[], None);
    assert_eq!(status, 200);
    assert_eq!(page["data"].as_array().map(Vec::len), Some(4), "{page}");
    let (status, _, read) = call("GET", &format!("/v1/transactions/{credit_id}"), &[], None);
    assert_eq!((status, &read), (200, &credit));
    let (status, _, read) = call("GET", &format!("/v1/transfers/{transfer_id}"), &[], None);
    assert_eq!((status, &read["id"]), (200, &json!(transfer_id)));
    let (status, _, _) = call("GET", &format!("/v1/accounts/{c}"), &[], None);
    assert_eq!(status, 200);

    // The replica down: reads are 503 problem+json with Retry-After; money still moves on the
    // primary (API key and idempotency lookups included); readiness stays 200 and reports the
    // replica down.
    standby.stop();
    let (status, head, problem) = call("GET", &account_path, &[], None);
    assert_eq!(
        (status, &problem["code"]),
        (503, &json!("service_unavailable")),
        "{problem}"
    );
    assert!(
        head.contains("\r\ncontent-type: application/problem+json"),
        "{head}"
    );
    assert!(head.contains("\r\nretry-after: 1"), "{head}");
    let (status, _, credit) = call(
        "POST",
        &format!("/v1/accounts/{b}/credits"),
        &[("Idempotency-Key", "credit-3")],
        Some(&json!({"amount": 5})),
    );
    assert_eq!(
        (status, &credit["balance_after"]),
        (201, &json!(105)),
        "{credit}"
    );
    let (status, ready) = http(addr, "GET", "/health/ready", None, &[], None).expect("ready");
    assert_eq!(status, 200);
    assert_eq!(
        ready,
        json!({"status": "ready", "checks": {"database": "ok", "read_replica": "down"}})
    );

    // Back up: reads work again, by themselves.
    standby.start_again();
    wait_replayed(&primary, &standby);
    let (status, _, account) = call("GET", &format!("/v1/accounts/{b}"), &[], None);
    assert_eq!((status, &account["balance"]), (200, &json!(105)));

    drop(server);
    let (code, report) = verify(&dir, Some(&primary_url));
    assert_eq!(code, 0, "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// JSON log lines carry the request id, method, route template, status and latency; one line
/// per money command outcome; secrets never appear.
#[test]
fn logs_are_json_lines_with_the_request_id_and_no_secrets() {
    let dir = temp_dir("logs");
    let key = "log-test-secret-key";
    let mut server = Server::start(
        &dir,
        &[
            ("ZETA_BOOTSTRAP_API_KEY", key),
            ("RUST_LOG", "info"),
            ("ZETA_LOG_FORMAT", "json"),
        ],
    );
    let addr = server.addr;
    let (s, account) = http(
        addr,
        "POST",
        "/v1/accounts",
        Some(key),
        &[("X-Request-Id", "trace-me-42")],
        Some(&json!({"owner_name": "L", "currency": "USD"})),
    )
    .expect("create");
    assert_eq!(s, 201);
    let id = account["id"].as_str().expect("id");
    let (s, _) = http(
        addr,
        "POST",
        &format!("/v1/accounts/{id}/debits"),
        Some(key),
        &[("X-Request-Id", "trace-me-43")],
        Some(&json!({"amount": 5})),
    )
    .expect("debit");
    assert_eq!(s, 422);
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(server.child.id().to_string())
        .status();
    assert!(server.child.wait().expect("wait").success());
    let logs = server.stderr();
    assert!(!logs.contains(key), "the API key never appears in logs");
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let finished = lines
        .iter()
        .find(|l| {
            l["fields"]["message"] == "request finished" && l["span"]["request_id"] == "trace-me-42"
        })
        .unwrap_or_else(|| panic!("no request line for trace-me-42 in {logs}"));
    assert_eq!(finished["fields"]["status"], 201);
    assert_eq!(finished["span"]["method"], "POST");
    assert_eq!(finished["span"]["route"], "/v1/accounts");
    assert!(finished["fields"]["latency_ms"].as_f64().is_some());
    let refused = lines
        .iter()
        .find(|l| {
            l["fields"]["message"] == "command refused" && l["span"]["request_id"] == "trace-me-43"
        })
        .unwrap_or_else(|| panic!("no outcome line for trace-me-43 in {logs}"));
    assert!(
        refused["fields"]["refused"]
            .as_str()
            .is_some_and(|r| r.contains("available balance 0"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A request that outlasts ZETA_REQUEST_TIMEOUT_SECS (here: a body that never finishes arriving)
/// is answered 503 with Retry-After, and the server goes on serving.
#[test]
fn a_request_slower_than_the_timeout_is_503() {
    let dir = temp_dir("timeout");
    let key = "timeout-test-secret-key";
    let server = Server::start(
        &dir,
        &[
            ("ZETA_BOOTSTRAP_API_KEY", key),
            ("ZETA_REQUEST_TIMEOUT_SECS", "1"),
        ],
    );
    let mut stream = TcpStream::connect(server.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let started = Instant::now();
    let head = format!(
        "POST /v1/accounts HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"owner",
        server.addr
    );
    stream.write_all(head.as_bytes()).expect("send");
    let mut response = [0_u8; 4096];
    let n = stream.read(&mut response).expect("read");
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&response[..n]).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 503"), "{text}");
    assert!(text.contains("retry-after: 1"), "{text}");
    assert!(text.contains("\"code\":\"service_unavailable\""), "{text}");
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(10),
        "{elapsed:?}"
    );
    // Nothing was created, and the next request is served normally.
    let (status, page) =
        http(server.addr, "GET", "/v1/accounts", Some(key), &[], None).expect("list");
    assert_eq!(status, 200);
    assert_eq!(page["data"], json!([]));
    let _ = std::fs::remove_dir_all(&dir);
}

/// One request's outcome in the three-process test.
struct Sent {
    /// `(from, to)` account indexes of a transfer, or `(account, None)` of a debit.
    from: usize,
    to: Option<usize>,
    amount: i64,
    status: u16,
    body: Value,
}

/// Three `zeta` processes on one PostgreSQL database (`TEST_DATABASE_URL`: the server itself,
/// or PgBouncer in transaction pooling mode, see `tests/pgbouncer.sh`). Clients spread over the
/// three send random concurrent transfers and debits among a few hot accounts, and each of a set
/// of idempotency keys is sent to all three instances at the same moment. Afterwards: each key
/// had exactly one effect (one first answer; the others replay it or are 409
/// `idempotency_key_in_use`), every balance is exactly what the 2xx answers add up to, the rows
/// in the database match the answers one for one, `zeta verify` exits 0, and nothing was a 5xx.
#[test]
fn three_processes_on_one_database_keep_every_invariant() {
    const INSTANCES: usize = 3;
    const HOT: usize = 4;
    // Low enough that some transfers and debits find too little money.
    const START: i64 = 2_000;
    const SOURCE_START: i64 = 1_000_000;
    const CLIENTS: usize = 12;
    const REQUESTS_PER_CLIENT: usize = 30;
    const KEYS: usize = 20;
    const DEBIT: i64 = 37;

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let db = runtime.block_on(zeta_testkit::TestDb::create());
    let dir = temp_dir("three");
    let key = "three-processes-key";
    // Migrated once, before the instances start (as in a rolling deploy).
    let migrate = Command::new(env!("CARGO_BIN_EXE_zeta"))
        .arg("migrate")
        .env("DATABASE_URL", &db.url)
        .output()
        .expect("zeta migrate");
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("ZETA_BOOTSTRAP_API_KEY", key),
        // Nobody reads the servers' stderr until they exit: keep it short.
        ("RUST_LOG", "error"),
        // This test counts every answer; the rate limiter is not what it measures.
        ("ZETA_RATE_LIMIT_RPS", "1000000"),
        ("ZETA_RATE_LIMIT_BURST", "1000000"),
    ];
    let servers: Vec<Server> = (0..INSTANCES).map(|_| Server::start(&dir, &env)).collect();
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let post = |addr: SocketAddr, path: &str, idem: Option<&str>, body: &Value| {
        let extra: Vec<(&str, &str)> = idem.map(|k| ("Idempotency-Key", k)).into_iter().collect();
        http_full(addr, "POST", path, Some(key), &extra, Some(body))
            .unwrap_or_else(|e| panic!("POST {path} to {addr}: {e}"))
    };

    // The hot accounts and a well-funded source for the idempotent transfers, each made and
    // funded through a different instance.
    let mut accounts = Vec::new();
    for i in 0..=HOT {
        let addr = addrs[i % INSTANCES];
        let (status, _, account) = post(
            addr,
            "/v1/accounts",
            None,
            &json!({"owner_name": format!("hot {i}"), "currency": "USD"}),
        );
        assert_eq!(status, 201, "{account}");
        let id = account["id"].as_str().expect("id").to_string();
        let amount = if i == HOT { SOURCE_START } else { START };
        let (status, _, credit) = post(
            addrs[(i + 1) % INSTANCES],
            &format!("/v1/accounts/{id}/credits"),
            None,
            &json!({ "amount": amount }),
        );
        assert_eq!(status, 201, "{credit}");
        accounts.push(id);
    }
    let accounts = Arc::new(accounts);
    let source = HOT;

    // Random transfers and debits among the hot accounts, through all three instances.
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (accounts, addr) = (accounts.clone(), addrs[client % INSTANCES]);
        clients.push(std::thread::spawn(move || {
            let mut seed = 0x2545_F491_4F6C_DD1D_u64 ^ (client as u64 + 1);
            let mut sent = Vec::new();
            for _ in 0..REQUESTS_PER_CLIENT {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let from = (seed % HOT as u64) as usize;
                let (path, to, amount) = if (seed >> 32).is_multiple_of(5) {
                    let path = format!("/v1/accounts/{}/debits", accounts[from]);
                    (path, None, DEBIT)
                } else {
                    let to = (from + 1 + ((seed >> 8) % (HOT as u64 - 1)) as usize) % HOT;
                    let amount = 1 + ((seed >> 16) % 900) as i64;
                    ("/v1/transfers".to_string(), Some(to), amount)
                };
                let body = match to {
                    None => json!({ "amount": amount }),
                    Some(to) => json!({
                        "from_account_id": accounts[from],
                        "to_account_id": accounts[to],
                        "amount": amount,
                    }),
                };
                let (status, _, body) = http_full(addr, "POST", &path, Some(key), &[], Some(&body))
                    .unwrap_or_else(|e| panic!("POST {path} to {addr}: {e}"));
                sent.push(Sent {
                    from,
                    to,
                    amount,
                    status,
                    body,
                });
            }
            sent
        }));
    }

    // Meanwhile, each idempotency key goes to the three instances at once.
    let idempotent = {
        let (accounts, addrs) = (accounts.clone(), addrs.clone());
        std::thread::spawn(move || {
            (0..KEYS)
                .map(|k| {
                    let barrier = Arc::new(std::sync::Barrier::new(INSTANCES));
                    let racers: Vec<_> = addrs
                        .iter()
                        .map(|&addr| {
                            let (barrier, accounts) = (barrier.clone(), accounts.clone());
                            std::thread::spawn(move || {
                                let body = json!({
                                    "from_account_id": accounts[source],
                                    "to_account_id": accounts[k % HOT],
                                    "amount": k + 1,
                                });
                                let idem = format!("three-{k}");
                                barrier.wait();
                                http_full(
                                    addr,
                                    "POST",
                                    "/v1/transfers",
                                    Some(key),
                                    &[("Idempotency-Key", &idem)],
                                    Some(&body),
                                )
                                .unwrap_or_else(|e| panic!("POST {idem} to {addr}: {e}"))
                            })
                        })
                        .collect();
                    racers
                        .into_iter()
                        .map(|r| r.join().expect("racer"))
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        })
    };

    let sent: Vec<Sent> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client"))
        .collect();
    let raced = idempotent.join().expect("idempotent clients");

    // Every answer of the random load: 201, or 422 insufficient_funds; never a 5xx.
    let mut expected = vec![START; HOT];
    expected.push(SOURCE_START);
    let (mut transfers_ok, mut transfers_failed, mut debits_ok, mut debits_failed) =
        (0i64, 0i64, 0i64, 0i64);
    let mut debited = 0;
    for s in &sent {
        match (s.status, s.body["code"].as_str(), s.to) {
            (201, _, Some(to)) => {
                assert_eq!(s.body["status"], "completed", "{}", s.body);
                expected[s.from] -= s.amount;
                expected[to] += s.amount;
                transfers_ok += 1;
            }
            (201, _, None) => {
                assert_eq!(s.body["status"], "completed", "{}", s.body);
                expected[s.from] -= s.amount;
                debited += s.amount;
                debits_ok += 1;
            }
            (422, Some("insufficient_funds"), Some(_)) => transfers_failed += 1,
            (422, Some("insufficient_funds"), None) => debits_failed += 1,
            (status, _, _) => panic!("unexpected answer {status}: {}", s.body),
        }
    }
    assert_eq!(sent.len(), CLIENTS * REQUESTS_PER_CLIENT);
    assert!(
        transfers_ok as usize > sent.len() / 2,
        "most transfers succeed: {transfers_ok}"
    );

    // Each key: exactly one first answer; the others replay it byte for byte (JSON-equal here)
    // or are 409 idempotency_key_in_use. Sent again now, every instance replays the same transfer.
    let mut first_answers = Vec::new();
    for (k, answers) in raced.iter().enumerate() {
        let firsts: Vec<&Value> = answers
            .iter()
            .filter(|(status, head, _)| {
                *status == 201 && !head.contains("\r\nidempotent-replayed: true")
            })
            .map(|(_, _, body)| body)
            .collect();
        assert_eq!(firsts.len(), 1, "key {k}: one first answer: {answers:?}");
        let first = firsts[0].clone();
        assert_eq!(first["amount"], k + 1);
        for (status, head, body) in answers {
            match status {
                201 => assert_eq!(body, &first, "key {k}: a replay is the first answer"),
                409 => assert_eq!(body["code"], "idempotency_key_in_use", "key {k}: {body}"),
                other => panic!("key {k}: unexpected answer {other}: {body} ({head})"),
            }
        }
        for &addr in &addrs {
            let body = json!({
                "from_account_id": accounts[source],
                "to_account_id": accounts[k % HOT],
                "amount": k + 1,
            });
            let (status, head, again) =
                post(addr, "/v1/transfers", Some(&format!("three-{k}")), &body);
            assert_eq!(status, 201, "key {k} again: {again}");
            assert!(head.contains("\r\nidempotent-replayed: true"), "{head}");
            assert_eq!(again, first, "key {k} again on {addr}");
        }
        expected[source] -= k as i64 + 1;
        expected[k % HOT] += k as i64 + 1;
        first_answers.push(first);
    }
    let in_use = raced
        .iter()
        .flatten()
        .filter(|(status, _, _)| *status == 409)
        .count();
    eprintln!(
        "random load: {transfers_ok} transfers, {transfers_failed} refused, {debits_ok} debits, \
         {debits_failed} refused; {KEYS} keys raced on {INSTANCES} instances: \
         {} replays, {in_use} in use",
        KEYS * (INSTANCES - 1) - in_use
    );
    let ids: std::collections::HashSet<&str> = first_answers
        .iter()
        .map(|t| t["id"].as_str().expect("transfer id"))
        .collect();
    assert_eq!(ids.len(), KEYS, "one transfer per key");

    // Exact balances, read through every instance.
    for (i, id) in accounts.iter().enumerate() {
        let (status, account) = http(
            addrs[i % INSTANCES],
            "GET",
            &format!("/v1/accounts/{id}"),
            Some(key),
            &[],
            None,
        )
        .expect("get account");
        assert_eq!(status, 200, "{account}");
        assert_eq!(account["balance"], expected[i], "account {i}: {account}");
        assert_eq!(account["available_balance"], expected[i], "account {i}");
    }
    assert_eq!(
        expected.iter().sum::<i64>(),
        HOT as i64 * START + SOURCE_START - debited
    );

    // The rows match the answers one for one.
    let count = |sql: &str| runtime.block_on(db.scalar(sql));
    assert_eq!(
        count("SELECT count(*) FROM transfers WHERE status = 'completed'"),
        transfers_ok + KEYS as i64
    );
    assert_eq!(
        count("SELECT count(*) FROM transfers WHERE status = 'failed'"),
        transfers_failed
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM transactions
              WHERE type = 'debit' AND transfer_id IS NULL AND status = 'completed'"
        ),
        debits_ok
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM transactions
              WHERE type = 'debit' AND transfer_id IS NULL AND status = 'failed'"
        ),
        debits_failed
    );
    assert_eq!(count("SELECT count(*) FROM idempotency_keys"), KEYS as i64);
    runtime.block_on(db.assert_ledger_invariants(HOT as i64 * START + SOURCE_START - debited));

    for server in &servers {
        let (ready, _) = http(server.addr, "GET", "/health/ready", None, &[], None).expect("ready");
        assert_eq!(ready, 200);
    }
    drop(servers);
    let (code, report) = verify(&dir, Some(&db.url));
    assert_eq!(code, 0, "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}
