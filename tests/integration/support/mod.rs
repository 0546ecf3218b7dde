//! Shared helpers for the integration tests: the mock upstream, the gateway process, its
//! config, and Redis.

pub mod browser;
pub mod config;
pub mod gateway;
pub mod mock_upstream;
pub mod redis;
pub mod scrape;
pub mod tls_upstream;

pub use config::{Config, Route};
pub use gateway::{free_port, Gateway};
pub use mock_upstream::MockUpstream;
pub use scrape::metric;
pub use tls_upstream::TlsUpstream;

/// Sends a chat request whose message is `content_bytes` long through a gateway whose one
/// upstream, `name` at `addr` (`settings`, then a 300 ms write timeout), takes none of it, and
/// checks the answer: a 504 naming the write timeout, within 10 s. Returns the gateway and the
/// error's type and message.
pub async fn stalled_write(
    name: &str,
    addr: std::net::SocketAddr,
    settings: &str,
    content_bytes: usize,
) -> (Gateway, String, String) {
    let gw = Gateway::start(
        Config::new()
            .upstream_with(
                name,
                &format!("http://{addr}"),
                &format!("{settings}timeouts: {{ write: 300ms, first_byte: 20s }}"),
            )
            .route(
                Route::prefixed("openai")
                    .targets(&format!("[{name}]"))
                    .with("retry: { attempts: 1 }"),
            ),
    );
    let content = "x".repeat(content_bytes);
    let big =
        serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": content}]});
    let started = std::time::Instant::now();
    let resp = client()
        .post(gw.url("/openai/v1/chat/completions"))
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    let body: serde_json::Value = resp.json().await.unwrap();
    let field = |f: &str| body["error"][f].as_str().unwrap().to_string();
    let (kind, message) = (field("type"), field("message"));
    assert_eq!(
        message,
        format!("upstream {name} ({addr}) timed out after 300ms (write timeout)")
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    (gw, kind, message)
}

/// An HTTP client that does not pool, so each test sees its own connections.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}

/// An HTTP/2 client that speaks h2c by prior knowledge (promptgate's listener serves h2c).
pub fn h2c_client() -> reqwest::Client {
    reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap()
}

pub fn blake3_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// The length of the HTTP/1.1 message `seen` starts with, once all of it is in: its head and
/// the body its `Content-Length` announces (none without one).
pub fn message_len(seen: &[u8]) -> Option<usize> {
    let end = seen.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    (seen.len() >= end + 4 + length).then_some(end + 4 + length)
}

/// Reads one whole HTTP/1.1 request off a raw upstream connection: its head, then the body its
/// `Content-Length` announces. `None` when the connection ends first.
pub async fn read_request<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        if message_len(&seen).is_some() {
            return Some(seen);
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => seen.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The body of a GET, as text (admin endpoints: `/metrics`, `/config`, …).
pub async fn get_text(url: &str) -> String {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The body of a GET, parsed as JSON (admin endpoints: `/cache/stats`, `/config`, …).
pub async fn get_json(url: &str) -> serde_json::Value {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
