//! Mock LLM provider (OpenAI, Anthropic, Gemini, Ollama) speaking hand-parsed HTTP/1.1 on
//! 127.0.0.1: it records every request and injects faults on demand, so integration tests can
//! put the proxy in front of a fully controlled upstream.
//!
//! Every answer's text is `"Hello from mock #N"` (N = 1-based hit number), so a test can tell a
//! fresh upstream answer from a cached one; in OpenAI JSON mode it is `{"text":"Hello from mock
//! #N"}`. Faults are driven by `x-mock-*` request headers, listed in [`faults`]. Prompt
//! caching is billed as the providers bill it: Anthropic's from `cache_control` breakpoints,
//! OpenAI's automatically on repeated prefixes (the caches live in [`providers::State`]).
//!
//! Layout, one seam a file:
//! - [`http`]: reading a request off the socket (head, content-length or chunked body);
//! - [`faults`]: the `x-mock-*` controls, parsed once per request, and the forced error reply;
//! - [`providers`]: one file per wire format, each answering the paths it owns;
//! - [`reply`]: what a provider returns ([`reply::Reply`]) and the JSON/SSE builders;
//! - [`server`]: accept loop, keep-alive, and writing a reply with the faults applied;
//! - [`dates`]: HTTP and RFC 3339 dates without a date crate;
//! - [`websocket`]: a Realtime-like WebSocket endpoint for `Upgrade: websocket` requests.
//!
//! To answer a new endpoint, add a match arm (and a function) to its provider's `answer`; a
//! new provider is a new file plus one line in [`providers::PROVIDERS`]. To add a fault, add a
//! field to [`faults::Controls`], parse its header in `Controls::from_request` (and give it a
//! row in the table there), and act on it in [`server`]'s `respond` at the phase it belongs to.
//!
//! The example `examples/mock_upstream.rs` compiles this folder too (via `#[path]`), so
//! `tests/python/` drives the same mock as a process.

mod dates;
mod faults;
mod http;
mod providers;
mod reply;
mod server;
mod websocket;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running mock upstream; the server stops (all tasks aborted) when this is dropped.
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: JoinHandle<()>,
}

/// One request as the mock received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Request target as received, including the query string.
    pub path: String,
    /// Header names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
    /// Body with any chunked transfer-encoding already decoded.
    pub body: Bytes,
}

impl RecordedRequest {
    /// Value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[allow(dead_code)] // not every test binary uses every accessor
impl MockUpstream {
    /// Binds 127.0.0.1:0 and serves on the current tokio runtime.
    pub async fn start() -> MockUpstream {
        Self::start_on(0).await
    }

    /// Binds 127.0.0.1:`port` (0 = any free port) and serves on the current tokio runtime.
    pub async fn start_on(port: u16) -> MockUpstream {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("mock upstream: bind 127.0.0.1:{port}: {e}"));
        let addr = listener.local_addr().expect("mock upstream: local_addr");
        let shared = Arc::new(Shared {
            connections: AtomicUsize::new(0),
            completed_streams: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            per_id: Mutex::new(HashMap::new()),
            abandoned: Mutex::new(Vec::new()),
            released: watch::Sender::new(false),
            providers: providers::State::default(),
        });
        let accept_task = tokio::spawn(server::accept_loop(listener, Arc::clone(&shared)));
        MockUpstream {
            addr,
            shared,
            accept_task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Number of complete requests received so far.
    pub fn hits(&self) -> usize {
        lock(&self.shared.requests).len()
    }

    /// Number of TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    pub fn last_request(&self) -> Option<RecordedRequest> {
        lock(&self.shared.requests).last().cloned()
    }

    /// Streaming responses written up to and including the terminating zero-length chunk.
    pub fn completed_streams(&self) -> usize {
        self.shared.completed_streams.load(Ordering::SeqCst)
    }

    /// When the mock saw a client close its connection while an `x-mock-delay-ms` answer was
    /// still pending, one instant per such request, in order.
    pub fn abandoned(&self) -> Vec<Instant> {
        lock(&self.shared.abandoned).clone()
    }

    /// Lets every current and future `x-mock-hold` response proceed.
    pub fn release(&self) {
        self.shared.released.send_replace(true);
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        // The accept task owns the JoinSet of connection tasks, so they are aborted with it.
        self.accept_task.abort();
    }
}

/// State shared by the handle and every connection task.
struct Shared {
    connections: AtomicUsize,
    completed_streams: AtomicUsize,
    requests: Mutex<Vec<RecordedRequest>>,
    /// Per-`x-mock-id` request counters, keyed by the fault that counts them (see
    /// [`Shared::count`]).
    per_id: Mutex<HashMap<String, usize>>,
    /// See [`MockUpstream::abandoned`].
    abandoned: Mutex<Vec<Instant>>,
    released: watch::Sender<bool>,
    /// The providers' prompt caches.
    providers: providers::State,
}

impl Shared {
    /// Stores the request and returns its 1-based hit number.
    fn record(&self, req: RecordedRequest) -> usize {
        let mut requests = lock(&self.requests);
        requests.push(req);
        requests.len()
    }

    /// Counts one more request under `key` and returns the new count (1 for the first).
    fn count(&self, key: String) -> usize {
        let mut per_id = lock(&self.per_id);
        let n = per_id.entry(key).or_insert(0);
        *n += 1;
        *n
    }

    fn record_abandoned(&self) {
        lock(&self.abandoned).push(Instant::now());
    }

    /// Returns once [`MockUpstream::release`] has been called (at once if it already was).
    async fn wait_release(&self) {
        let mut rx = self.released.subscribe();
        // Cannot fail: `self` keeps the sender alive.
        let _ = rx.wait_for(|released| *released).await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test must not turn every later assertion into a poison error.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
