//! Integration tests: the real promptgate binary on loopback, in front of a mock upstream.
//! One test binary, so Pingora links once.

mod support;

mod cache;
mod cache_redis;
mod cacheable_operations;
mod cancellation;
mod cli;
mod dashboard;
mod error_headers;
mod forwarding;
mod hostile_input;
mod http_semantics;
mod lifecycle;
mod logs;
mod metrics;
mod operations;
mod prompt_caching;
mod rate_limits;
mod redis_store;
mod reload;
mod resilience;
mod secrets;
mod semantic;
mod stream_cache;
mod streaming;
mod upstream_faults;
mod upstream_tls;
mod verdicts;
mod websocket;
