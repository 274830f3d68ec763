//! The real binary as a person runs it: the quick start on the embedded SQLite default, a crash
//! (kill -9) in the middle of idempotent transfers, and a graceful SIGTERM under load.

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
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
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

    let (status, account) = http(
        addr2,
        "POST",
        "/v1/accounts",
        Some(&key),
        &[],
        Some(&json!({"owner_name": "Ada", "currency": "EUR"})),
    )
    .expect("create");
    assert_eq!(status, 201, "{account}");
    let id = account["id"].as_str().expect("id").to_string();
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
    let create = |name: &str| {
        let (s, a) = http(
            addr,
            "POST",
            "/v1/accounts",
            Some(key),
            &[],
            Some(&json!({"owner_name": name, "currency": "USD"})),
        )
        .expect("create");
        assert_eq!(s, 201);
        a["id"].as_str().expect("id").to_string()
    };
    let (from, to) = (create("from"), create("to"));
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
    let (s, a) = http(
        addr,
        "POST",
        "/v1/accounts",
        Some(key),
        &[],
        Some(&json!({"owner_name": "t", "currency": "USD"})),
    )
    .expect("create");
    assert_eq!(s, 201);
    let id = a["id"].as_str().expect("id").to_string();
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
