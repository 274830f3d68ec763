//! A lean HTTP/1.1 keep-alive client: one hyper connection per load task, no pool, no TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, Response, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::BoxError;

/// Longest a single request may take before it counts as a transport error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where requests go and how they authenticate.
pub struct Target {
    pub addr: SocketAddr,
    host: HeaderValue,
    auth: HeaderValue,
}

impl Target {
    pub fn new(addr: SocketAddr, api_key: &str) -> Result<Arc<Self>, BoxError> {
        Ok(Arc::new(Self {
            addr,
            host: HeaderValue::from_str(&addr.to_string())?,
            auth: HeaderValue::from_str(&format!("Bearer {api_key}"))?,
        }))
    }

    /// Parses `http://HOST:PORT` (no path) into a socket address.
    pub fn parse_url(url: &str) -> Result<SocketAddr, BoxError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or("--target-url must start with http://")?;
        let hostport = rest.trim_end_matches('/');
        let hostport = hostport.replace("localhost", "127.0.0.1");
        Ok(hostport
            .parse()
            .map_err(|e| format!("--target-url {url:?}: {e}"))?)
    }
}

/// One keep-alive connection; reconnects lazily after a failure.
pub struct Conn {
    target: Arc<Target>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    pub fn new(target: Arc<Target>) -> Self {
        Self {
            target,
            sender: None,
        }
    }

    /// Opens the connection now (so that handshakes are not measured).
    pub async fn connect(&mut self) -> Result<(), BoxError> {
        let stream = TcpStream::connect(self.target.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        self.sender = Some(sender);
        Ok(())
    }

    /// Drops the connection; the next request opens a new one.
    pub fn reset(&mut self) {
        self.sender = None;
    }

    /// Sends one request and returns the response head (the body still to be read).
    pub async fn send(
        &mut self,
        method: Method,
        uri: Uri,
        body: Option<Bytes>,
        authorized: bool,
    ) -> Result<Response<Incoming>, BoxError> {
        if self.sender.as_ref().is_none_or(SendRequest::is_closed) {
            self.connect().await?;
        }
        let sender = self.sender.as_mut().ok_or("no connection")?;
        if let Err(e) = sender.ready().await {
            self.reset();
            return Err(e.into());
        }
        let sender = self.sender.as_mut().ok_or("no connection")?;
        let has_body = body.is_some();
        let mut request = Request::new(Full::new(body.unwrap_or_default()));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.insert(HOST, self.target.host.clone());
        if authorized {
            headers.insert(AUTHORIZATION, self.target.auth.clone());
        }
        if has_body {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let result = sender.send_request(request).await;
        if result.is_err() {
            self.reset();
        }
        Ok(result?)
    }

    /// A whole request/response exchange with the body collected (setup and health checks).
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(u16, Bytes), BoxError> {
        let uri: Uri = path.parse()?;
        let exchange = async {
            let response = self.send(method, uri, body, true).await?;
            let status = response.status().as_u16();
            let bytes = collect(response.into_body()).await?;
            Ok::<_, BoxError>((status, bytes))
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.reset();
                Err(e)
            }
            Err(_) => {
                self.reset();
                Err("request timed out".into())
            }
        }
    }
}

/// Reads a body to its end and keeps it.
pub async fn collect(body: Incoming) -> Result<Bytes, hyper::Error> {
    Ok(body.collect().await?.to_bytes())
}

/// Reads a body to its end and throws it away (keeps the connection reusable).
pub async fn drain(mut body: Incoming) -> Result<(), hyper::Error> {
    while let Some(frame) = body.frame().await {
        frame?;
    }
    Ok(())
}

/// `GET /health/ready` on a fresh connection: the status, or an error when nothing answers.
pub async fn ready_status(addr: SocketAddr) -> Result<u16, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut request = Request::new(Empty::<Bytes>::new());
    *request.uri_mut() = Uri::from_static("/health/ready");
    request
        .headers_mut()
        .insert(HOST, HeaderValue::from_str(&addr.to_string())?);
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let _ = collect(response.into_body()).await;
    Ok(status)
}

/// The problem `code` of an error body (`"code":"…"`), if any.
pub fn problem_code(body: &[u8]) -> Option<&str> {
    const NEEDLE: &[u8] = b"\"code\":\"";
    let start = memchr::memmem::find(body, NEEDLE)? + NEEDLE.len();
    let len = memchr::memchr(b'"', &body[start..])?;
    std::str::from_utf8(&body[start..start + len]).ok()
}

/// Every problem `code` in a body (the items of a batch response).
pub fn problem_codes(body: &[u8]) -> impl Iterator<Item = &str> {
    const NEEDLE: &[u8] = b"\"code\":\"";
    memchr::memmem::find_iter(body, NEEDLE).filter_map(move |at| {
        let start = at + NEEDLE.len();
        let len = memchr::memchr(b'"', &body[start..])?;
        std::str::from_utf8(&body[start..start + len]).ok()
    })
}

/// Items of a batch response that succeeded (`"status":201`).
pub fn created_items(body: &[u8]) -> usize {
    memchr::memmem::find_iter(body, b"\"status\":201").count()
}

/// The `"id":"…"` of a created object.
pub fn object_id(body: &[u8]) -> Option<String> {
    const NEEDLE: &[u8] = b"\"id\":\"";
    let start = memchr::memmem::find(body, NEEDLE)? + NEEDLE.len();
    let id = body.get(start..start + 36)?;
    std::str::from_utf8(id).ok().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_codes_and_counts_items() {
        let body = br#"{"results":[{"status":201,"transfer":{"status":"completed"}},{"error":{"code":"insufficient_funds","status":422},"status":422},{"status":201,"transfer":{}}]}"#;
        assert_eq!(created_items(body), 2);
        assert_eq!(
            problem_codes(body).collect::<Vec<_>>(),
            vec!["insufficient_funds"]
        );
        assert_eq!(
            problem_code(br#"{"code":"not_found","status":404}"#),
            Some("not_found")
        );
        assert_eq!(problem_code(b"{}"), None);
    }

    #[test]
    fn finds_ids() {
        let body = br#"{"account_number":"X","id":"0190c0de-0000-7000-8000-000000000001","owner_name":"a"}"#;
        assert_eq!(
            object_id(body).as_deref(),
            Some("0190c0de-0000-7000-8000-000000000001")
        );
    }

    #[test]
    fn parses_target_urls() {
        assert_eq!(
            Target::parse_url("http://127.0.0.1:8080/").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert!(Target::parse_url("https://x").is_err());
    }
}
