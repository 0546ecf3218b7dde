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

/// An HTTP client that does not pool, so each test sees its own connections.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}

pub fn blake3_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
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
