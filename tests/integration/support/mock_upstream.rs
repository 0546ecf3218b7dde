//! Mock LLM provider (OpenAI, Anthropic, Gemini, Ollama) speaking hand-parsed HTTP/1.1 on
//! 127.0.0.1: it records every request and injects faults on demand, so integration tests can
//! put the proxy in front of a fully controlled upstream.
//!
//! Every answer's text is `"Hello from mock #N"` (N = 1-based hit number), so a test can tell a
//! fresh upstream answer from a cached one; in OpenAI JSON mode it is `{"text":"Hello from mock
//! #N"}`. Faults are driven by request headers:
//! `x-mock-delay-ms`, `x-mock-chunk-delay-ms`, `x-mock-status` (+ `x-mock-retry-after`),
//! `x-mock-fail-first` + `x-mock-id`, `x-mock-fault: reset|truncate|close` (`x-mock-fault-first`
//! limits it to the first N requests of an `x-mock-id`), `x-mock-hold`
//! (held until [`MockUpstream::release`]) and `x-mock-events` (content events per stream).
//! A WebSocket upgrade is answered by a Realtime-like endpoint (`websocket.rs`). A request
//! with `Origin` gets `Vary: Origin` and its own `Access-Control-Allow-Origin`;
//! `x-mock-vary` and `x-mock-cache-control` set those response headers.

#[path = "mock_upstream/websocket.rs"]
mod websocket;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Upper bound for a request head or a chunk-size line; anything larger drops the connection.
const MAX_HEAD: usize = 1 << 20;
/// Content events per stream unless `x-mock-events` says otherwise.
const DEFAULT_EVENTS: usize = 4;

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
            failures: Mutex::new(HashMap::new()),
            released: watch::Sender::new(false),
        });
        let accept_task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
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

struct Shared {
    connections: AtomicUsize,
    completed_streams: AtomicUsize,
    requests: Mutex<Vec<RecordedRequest>>,
    /// `x-mock-id` -> number of requests seen carrying it (for `x-mock-fail-first`).
    failures: Mutex<HashMap<String, usize>>,
    released: watch::Sender<bool>,
}

impl Shared {
    /// Stores the request and returns its 1-based hit number.
    fn record(&self, req: RecordedRequest) -> usize {
        let mut requests = lock(&self.requests);
        requests.push(req);
        requests.len()
    }

    /// Status forced by `x-mock-status` / `x-mock-fail-first`, if this request should fail.
    fn forced_status(&self, req: &RecordedRequest) -> Option<u16> {
        let status = req.header("x-mock-status").and_then(|v| v.parse().ok());
        let Some(fail_first) = req
            .header("x-mock-fail-first")
            .and_then(|v| v.parse::<usize>().ok())
        else {
            return status;
        };
        let id = req.header("x-mock-id").unwrap_or_default().to_owned();
        let mut failures = lock(&self.failures);
        let seen = failures.entry(id).or_insert(0);
        *seen += 1;
        (*seen <= fail_first).then(|| status.unwrap_or(503))
    }

    /// With `x-mock-fault-first: N` (and `x-mock-id`), `x-mock-fault` hits only the first N
    /// requests carrying that id; without it, every request.
    fn fault_applies(&self, req: &RecordedRequest) -> bool {
        let Some(first) = req
            .header("x-mock-fault-first")
            .and_then(|v| v.parse::<usize>().ok())
        else {
            return true;
        };
        let id = format!("fault:{}", req.header("x-mock-id").unwrap_or_default());
        let mut seen = lock(&self.failures);
        let n = seen.entry(id).or_insert(0);
        *n += 1;
        *n <= first
    }

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

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    conns.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                // e.g. EMFILE: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// What to do with the connection after a response.
enum After {
    KeepAlive,
    Close,
    Reset,
}

async fn serve_connection(mut stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(8 * 1024);
    loop {
        let Ok(Some((req, client_close))) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        let hit = shared.record(req.clone());
        if websocket::is_upgrade(&req) {
            let _ = websocket::serve(&mut stream, &mut buf, &req).await;
            return;
        }
        match respond(&mut stream, &shared, &req, hit, client_close).await {
            Ok(After::KeepAlive) => {}
            Ok(After::Close) => {
                let _ = stream.shutdown().await;
                return;
            }
            Ok(After::Reset) => {
                // SO_LINGER 0: dropping the socket sends RST instead of FIN.
                let _ = stream.set_zero_linger();
                return;
            }
            Err(_) => return,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Request parsing
// ---------------------------------------------------------------------------------------------

/// Reads one request; `Ok(None)` on a clean EOF between requests. The flag is true when the
/// client asked for the connection to be closed afterwards.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
) -> io::Result<Option<(RecordedRequest, bool)>> {
    let head_len = loop {
        while buf.starts_with(b"\r\n") {
            buf.advance(2);
        }
        if let Some(pos) = find(buf, b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > MAX_HEAD {
            return Err(invalid("request head too large"));
        }
        if stream.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
    };
    let head = buf.split_to(head_len + 4);
    let head = std::str::from_utf8(&head[..head_len]).map_err(|_| invalid("non-UTF-8 head"))?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split_whitespace();
    let (Some(method), Some(path), Some(version)) = (
        request_line.next(),
        request_line.next(),
        request_line.next(),
    ) else {
        return Err(invalid("bad request line"));
    };
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut req = RecordedRequest {
        method: method.to_owned(),
        path: path.to_owned(),
        headers,
        body: Bytes::new(),
    };

    let has_token = |name: &str, token: &str| {
        req.headers
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let client_close = has_token("connection", "close")
        || (version == "HTTP/1.0" && !has_token("connection", "keep-alive"));
    let chunked = has_token("transfer-encoding", "chunked");
    if has_token("expect", "100-continue") {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }

    req.body = if chunked {
        read_chunked_body(stream, buf).await?
    } else if let Some(len) = req.header("content-length") {
        let len: usize = len.parse().map_err(|_| invalid("bad content-length"))?;
        fill(stream, buf, len).await?;
        buf.split_to(len).freeze()
    } else {
        Bytes::new()
    };
    Ok(Some((req, client_close)))
}

async fn read_chunked_body(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<Bytes> {
    let mut body = BytesMut::new();
    loop {
        let line = read_line(stream, buf).await?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| invalid("bad chunk size"))?;
        if size == 0 {
            // Skip trailers up to the blank line that ends the message.
            while !read_line(stream, buf).await?.is_empty() {}
            return Ok(body.freeze());
        }
        fill(stream, buf, size + 2).await?;
        body.extend_from_slice(&buf[..size]);
        buf.advance(size + 2);
    }
}

/// Reads one CRLF-terminated line (without the CRLF).
async fn read_line(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<String> {
    loop {
        if let Some(pos) = find(buf, b"\r\n") {
            let line = buf.split_to(pos + 2);
            return Ok(String::from_utf8_lossy(&line[..pos]).into_owned());
        }
        if buf.len() > MAX_HEAD {
            return Err(invalid("line too long"));
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Reads until `buf` holds at least `len` bytes.
async fn fill(stream: &mut TcpStream, buf: &mut BytesMut, len: usize) -> io::Result<()> {
    buf.reserve(len.saturating_sub(buf.len()));
    while buf.len() < len {
        if stream.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

// ---------------------------------------------------------------------------------------------
// Fault controls and response writing
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    Reset,
    Truncate,
    Close,
}

/// The `x-mock-*` request headers, parsed.
struct Controls {
    delay: Duration,
    chunk_delay: Duration,
    fault: Option<Fault>,
    hold: bool,
    events: usize,
}

impl Controls {
    fn from_request(req: &RecordedRequest) -> Self {
        let millis = |name| {
            Duration::from_millis(req.header(name).and_then(|v| v.parse().ok()).unwrap_or(0))
        };
        let fault = match req
            .header("x-mock-fault")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("reset") => Some(Fault::Reset),
            Some("truncate") => Some(Fault::Truncate),
            Some("close") => Some(Fault::Close),
            _ => None,
        };
        Controls {
            delay: millis("x-mock-delay-ms"),
            chunk_delay: millis("x-mock-chunk-delay-ms"),
            fault,
            hold: req
                .header("x-mock-hold")
                .is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false")),
            events: req
                .header("x-mock-events")
                .and_then(|v| v.parse().ok())
                .unwrap_or(DEFAULT_EVENTS)
                .max(1),
        }
    }
}

enum Body {
    Full(Vec<u8>),
    /// One HTTP chunk per event.
    Stream(Vec<Bytes>),
}

struct Reply {
    status: u16,
    content_type: &'static str,
    extra_headers: Vec<(&'static str, String)>,
    body: Body,
}

async fn respond(
    stream: &mut TcpStream,
    shared: &Shared,
    req: &RecordedRequest,
    hit: usize,
    client_close: bool,
) -> io::Result<After> {
    let mut ctl = Controls::from_request(req);
    if ctl.fault.is_some() && !shared.fault_applies(req) {
        ctl.fault = None;
    }
    if !ctl.delay.is_zero() {
        tokio::time::sleep(ctl.delay).await;
    }
    if ctl.fault == Some(Fault::Reset) {
        return Ok(After::Reset);
    }
    let reply = match shared.forced_status(req) {
        Some(status) => error_reply(req, status),
        None => route(req, hit, ctl.events),
    };
    let truncate = ctl.fault == Some(Fault::Truncate);
    let close = client_close || ctl.fault == Some(Fault::Close);

    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\nx-mock-hit: {hit}\r\nx-request-id: req-{hit}\r\n\
         date: {}\r\nx-ratelimit-remaining-requests: 99\r\nserver: mock-upstream\r\n",
        reply.status,
        reason(reply.status),
        reply.content_type,
        http_date(unix_now()),
    );
    for (name, value) in &reply.extra_headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    // Like a CORS-aware server: the answer names the caller's origin, so it varies on Origin.
    if let Some(origin) = req.header("origin") {
        head.push_str(&format!(
            "vary: Origin\r\naccess-control-allow-origin: {origin}\r\n"
        ));
    }
    if let Some(vary) = req.header("x-mock-vary") {
        head.push_str(&format!("vary: {vary}\r\n"));
    }
    if let Some(cc) = req.header("x-mock-cache-control") {
        head.push_str(&format!("cache-control: {cc}\r\n"));
    }
    if close {
        head.push_str("connection: close\r\n");
    }

    match reply.body {
        Body::Full(body) => {
            if ctl.hold {
                shared.wait_release().await;
            }
            // Truncation advertises the full length but sends only half of the bytes.
            let sent = if truncate { body.len() / 2 } else { body.len() };
            let sent = if req.method == "HEAD" { 0 } else { sent };
            head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
            let mut out = head.into_bytes();
            out.extend_from_slice(&body[..sent]);
            stream.write_all(&out).await?;
            stream.flush().await?;
        }
        Body::Stream(events) => {
            head.push_str("transfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n");
            stream.write_all(head.as_bytes()).await?;
            let end = if truncate {
                (events.len() / 2).max(1)
            } else {
                events.len()
            };
            for (i, event) in events[..end].iter().enumerate() {
                if i > 0 && !ctl.chunk_delay.is_zero() {
                    tokio::time::sleep(ctl.chunk_delay).await;
                }
                let mut chunk = format!("{:x}\r\n", event.len()).into_bytes();
                chunk.extend_from_slice(event);
                chunk.extend_from_slice(b"\r\n");
                stream.write_all(&chunk).await?;
                stream.flush().await?;
                if i == 0 && ctl.hold {
                    shared.wait_release().await;
                }
            }
            if !truncate {
                stream.write_all(b"0\r\n\r\n").await?;
                stream.flush().await?;
                shared.completed_streams.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    Ok(if truncate || close {
        After::Close
    } else {
        After::KeepAlive
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        529 => "Overloaded",
        _ => "Mock Status",
    }
}

// ---------------------------------------------------------------------------------------------
// Provider wire formats
// ---------------------------------------------------------------------------------------------

/// What every provider handler needs to know about the request being answered.
struct Ctx<'a> {
    req: &'a RecordedRequest,
    hit: usize,
    /// Parsed request body (`Null` when it is not JSON; the mock is lenient).
    json: Value,
    /// `"Hello from mock #N"` (in OpenAI JSON mode, `{"text":"Hello from mock #N"}`)
    text: String,
    /// `text` split over the stream's content events.
    pieces: Vec<String>,
}

impl Ctx<'_> {
    fn model(&self, default: &str) -> String {
        self.json["model"].as_str().unwrap_or(default).to_owned()
    }

    fn stream(&self, default: bool) -> bool {
        self.json["stream"].as_bool().unwrap_or(default)
    }

    fn prompt_tokens(&self) -> usize {
        (self.req.body.len() / 4).max(1)
    }

    fn completion_tokens(&self) -> usize {
        self.pieces.len()
    }
}

fn route(req: &RecordedRequest, hit: usize, events: usize) -> Reply {
    let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
    let json: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let mut text = format!("Hello from mock #{hit}");
    if json["response_format"]["type"] == "json_object" {
        // OpenAI JSON mode: the answer is a JSON object.
        text = json!({ "text": text }).to_string();
    }
    let ctx = Ctx {
        req,
        hit,
        json,
        pieces: split_text(&text, events),
        text,
    };
    let method = req.method.as_str();
    if method == "POST" {
        if let Some((model, action)) = gemini_target(path) {
            let sse = query.split('&').any(|kv| kv == "alt=sse");
            match action {
                "generateContent" => return gemini(&ctx, model, None),
                "streamGenerateContent" => return gemini(&ctx, model, Some(sse)),
                _ => {}
            }
        }
    }
    match (method, path) {
        ("POST", "/v1/chat/completions") => openai_chat(&ctx),
        ("POST", "/v1/embeddings") => openai_embeddings(&ctx),
        ("GET", "/v1/models") if req.header("anthropic-version").is_some() => anthropic_models(),
        ("GET", "/v1/models") => openai_models(),
        ("POST", "/v1/messages") => anthropic_messages(&ctx),
        ("GET", "/v1beta/models") => gemini_models(),
        ("POST", "/api/chat") => ollama(&ctx, true),
        ("POST", "/api/generate") => ollama(&ctx, false),
        ("GET", "/api/tags") => ollama_tags(),
        _ => echo(&ctx),
    }
}

/// Splits `text` into `n` pieces along word boundaries ("Hello", " from", ...); extra events
/// beyond the number of words carry empty text.
fn split_text(text: &str, n: usize) -> Vec<String> {
    let words: Vec<String> = text
        .split(' ')
        .enumerate()
        .map(|(i, w)| {
            if i == 0 {
                w.to_owned()
            } else {
                format!(" {w}")
            }
        })
        .collect();
    let len = words.len();
    if n >= len {
        let mut pieces = words;
        pieces.resize(n, String::new());
        return pieces;
    }
    (0..n)
        .map(|i| words[i * len / n..(i + 1) * len / n].concat())
        .collect()
}

fn json_reply(status: u16, body: &Value) -> Reply {
    Reply {
        status,
        content_type: "application/json",
        extra_headers: Vec::new(),
        body: Body::Full(body.to_string().into_bytes()),
    }
}

fn stream_reply(content_type: &'static str, events: Vec<String>) -> Reply {
    Reply {
        status: 200,
        content_type,
        extra_headers: Vec::new(),
        body: Body::Stream(events.into_iter().map(Bytes::from).collect()),
    }
}

fn sse_data(data: &Value) -> String {
    format!("data: {data}\n\n")
}

fn sse_event(event: &str, data: &Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

fn error_reply(req: &RecordedRequest, status: u16) -> Reply {
    let message = format!("mock status {status}");
    let anthropic =
        req.path.starts_with("/v1/messages") || req.header("anthropic-version").is_some();
    let body = if anthropic {
        json!({"type": "error", "error": {"type": "mock_error", "message": message}})
    } else {
        json!({"error": {"type": "mock_error", "message": message}})
    };
    let mut reply = json_reply(status, &body);
    if status == 429 {
        let retry_after = req.header("x-mock-retry-after").unwrap_or("1");
        reply
            .extra_headers
            .push(("retry-after", retry_after.to_owned()));
    }
    reply
}

fn openai_chat(c: &Ctx) -> Reply {
    let model = c.model("gpt-4o-mini");
    let id = format!("chatcmpl-mock-{}", c.hit);
    let created = unix_now();
    let (prompt, completion) = (c.prompt_tokens(), c.completion_tokens());
    let usage = json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    });
    let tool = c.json["tools"].as_array().and_then(|t| t.first()).map(|t| {
        t["function"]["name"]
            .as_str()
            .or(t["name"].as_str())
            .unwrap_or("tool")
            .to_owned()
    });
    let call_id = format!("call_mock_{}", c.hit);
    let finish = if tool.is_some() { "tool_calls" } else { "stop" };

    if !c.stream(false) {
        let message = match &tool {
            Some(name) => json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [{
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": "{}"},
                }],
            }),
            None => json!({"role": "assistant", "content": c.text}),
        };
        return json_reply(
            200,
            &json!({
                "id": id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": message,
                    "logprobs": null,
                    "finish_reason": finish,
                }],
                "usage": usage,
                "system_fingerprint": "fp_mock",
            }),
        );
    }

    let chunk = |delta: Value, finish_reason: Value| {
        sse_data(&json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "delta": delta,
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
        }))
    };
    let mut events = Vec::new();
    match &tool {
        Some(name) => {
            events.push(chunk(
                json!({
                    "role": "assistant",
                    "content": null,
                    "tool_calls": [{
                        "index": 0,
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": ""},
                    }],
                }),
                Value::Null,
            ));
            events.push(chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
                Value::Null,
            ));
        }
        None => {
            for (i, piece) in c.pieces.iter().enumerate() {
                let delta = if i == 0 {
                    json!({"role": "assistant", "content": piece})
                } else {
                    json!({"content": piece})
                };
                events.push(chunk(delta, Value::Null));
            }
        }
    }
    events.push(chunk(json!({}), json!(finish)));
    if c.json["stream_options"]["include_usage"].as_bool() == Some(true) {
        events.push(sse_data(&json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage,
        })));
    }
    events.push("data: [DONE]\n\n".to_owned());
    stream_reply("text/event-stream", events)
}

/// Each embedding is `[hit, h0, h1, h2]` where `h*` come from the input's BLAKE3 hash, so the
/// vector identifies its input and also which upstream hit produced it.
fn openai_embeddings(c: &Ctx) -> Reply {
    let inputs: Vec<String> = match &c.json["input"] {
        Value::Null => Vec::new(),
        Value::String(s) => vec![s.clone()],
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .collect(),
        other => vec![other.to_string()],
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let hash = blake3::hash(input.as_bytes());
            let mut embedding = vec![c.hit as f64];
            embedding.extend(hash.as_bytes()[..3].iter().map(|b| f64::from(*b) / 255.0));
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let tokens = c.prompt_tokens();
    json_reply(
        200,
        &json!({
            "object": "list",
            "data": data,
            "model": c.model("text-embedding-3-small"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }),
    )
}

fn openai_models() -> Reply {
    let data: Vec<Value> = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]
        .iter()
        .map(
            |id| json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": "mock"}),
        )
        .collect();
    json_reply(200, &json!({"object": "list", "data": data}))
}

fn anthropic_models() -> Reply {
    let data: Vec<Value> = ["claude-3-5-haiku-latest", "claude-sonnet-4-0"]
        .iter()
        .map(|id| {
            json!({
                "type": "model",
                "id": id,
                "display_name": id,
                "created_at": "2025-01-01T00:00:00Z",
            })
        })
        .collect();
    json_reply(
        200,
        &json!({
            "data": data,
            "has_more": false,
            "first_id": data[0]["id"],
            "last_id": data[data.len() - 1]["id"],
        }),
    )
}

fn anthropic_messages(c: &Ctx) -> Reply {
    let model = c.model("claude-3-5-haiku-latest");
    let id = format!("msg_mock_{}", c.hit);
    let (input, output) = (c.prompt_tokens(), c.completion_tokens());
    if !c.stream(false) {
        return json_reply(
            200,
            &json!({
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": c.text}],
                "stop_reason": "end_turn",
                "stop_sequence": null,
                "usage": {"input_tokens": input, "output_tokens": output},
            }),
        );
    }
    let mut events = vec![
        sse_event(
            "message_start",
            &json!({
                "type": "message_start",
                "message": {
                    "id": id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": {"input_tokens": input, "output_tokens": 1},
                },
            }),
        ),
        sse_event(
            "content_block_start",
            &json!({
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            }),
        ),
    ];
    for piece in &c.pieces {
        events.push(sse_event(
            "content_block_delta",
            &json!({
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": piece},
            }),
        ));
    }
    events.push(sse_event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(sse_event(
        "message_delta",
        &json!({
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": output},
        }),
    ));
    events.push(sse_event("message_stop", &json!({"type": "message_stop"})));
    stream_reply("text/event-stream", events)
}

/// `/v1beta/models/{model}:{action}` (or `/v1/...`) -> `(model, action)`.
fn gemini_target(path: &str) -> Option<(&str, &str)> {
    path.strip_prefix("/v1beta/models/")
        .or_else(|| path.strip_prefix("/v1/models/"))?
        .rsplit_once(':')
}

/// `stream`: `None` = generateContent, `Some(true)` = SSE, `Some(false)` = streamed JSON array.
fn gemini(c: &Ctx, model: &str, stream: Option<bool>) -> Reply {
    let (prompt, completion) = (c.prompt_tokens(), c.completion_tokens());
    let usage = json!({
        "promptTokenCount": prompt,
        "candidatesTokenCount": completion,
        "totalTokenCount": prompt + completion,
    });
    let response = |text: &str, last: bool| {
        let mut candidate = json!({
            "content": {"parts": [{"text": text}], "role": "model"},
            "index": 0,
        });
        let mut response = json!({
            "modelVersion": model,
            "responseId": format!("mock-{}", c.hit),
        });
        if last {
            candidate["finishReason"] = json!("STOP");
            response["usageMetadata"] = usage.clone();
        }
        response["candidates"] = json!([candidate]);
        response
    };
    let Some(sse) = stream else {
        return json_reply(200, &response(&c.text, true));
    };
    let last = c.pieces.len() - 1;
    let chunks = c
        .pieces
        .iter()
        .enumerate()
        .map(|(i, p)| response(p, i == last));
    if sse {
        let events = chunks.map(|r| format!("data: {r}\r\n\r\n")).collect();
        stream_reply("text/event-stream", events)
    } else {
        let mut events: Vec<String> = chunks
            .enumerate()
            .map(|(i, r)| format!("{}{r}", if i == 0 { "[" } else { ",\r\n" }))
            .collect();
        events.push("]".to_owned());
        stream_reply("application/json", events)
    }
}

fn gemini_models() -> Reply {
    let models: Vec<Value> = ["gemini-2.0-flash", "gemini-1.5-pro"]
        .iter()
        .map(|m| {
            json!({
                "name": format!("models/{m}"),
                "displayName": m,
                "supportedGenerationMethods": ["generateContent", "streamGenerateContent"],
            })
        })
        .collect();
    json_reply(200, &json!({"models": models}))
}

/// `/api/chat` (`chat == true`, `message{role,content}`) or `/api/generate` (`response`).
fn ollama(c: &Ctx, chat: bool) -> Reply {
    let model = c.model("llama3.2");
    let created_at = rfc3339(unix_now());
    let object = |text: &str, done: bool| {
        let mut o = json!({"model": model, "created_at": created_at, "done": done});
        if chat {
            o["message"] = json!({"role": "assistant", "content": text});
        } else {
            o["response"] = json!(text);
        }
        if done {
            o["done_reason"] = json!("stop");
            o["total_duration"] = json!(1_000_000);
            o["load_duration"] = json!(100_000);
            o["prompt_eval_count"] = json!(c.prompt_tokens());
            o["prompt_eval_duration"] = json!(200_000);
            o["eval_count"] = json!(c.completion_tokens());
            o["eval_duration"] = json!(700_000);
        }
        o
    };
    if !c.stream(true) {
        return json_reply(200, &object(&c.text, true));
    }
    let mut events: Vec<String> = c
        .pieces
        .iter()
        .map(|p| format!("{}\n", object(p, false)))
        .collect();
    events.push(format!("{}\n", object("", true)));
    stream_reply("application/x-ndjson", events)
}

fn ollama_tags() -> Reply {
    json_reply(
        200,
        &json!({"models": [{
            "name": "llama3.2:latest",
            "model": "llama3.2:latest",
            "modified_at": "2025-01-01T00:00:00Z",
            "size": 2_019_393_189_u64,
            "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
            "details": {
                "format": "gguf",
                "family": "llama",
                "parameter_size": "3.2B",
                "quantization_level": "Q4_K_M",
            },
        }]}),
    )
}

/// Fallback for any other path: describes the request back (repeated headers joined by ", ").
fn echo(c: &Ctx) -> Reply {
    let mut headers = serde_json::Map::new();
    for (name, value) in &c.req.headers {
        match headers.get_mut(name) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(value);
            }
            _ => {
                headers.insert(name.clone(), json!(value));
            }
        }
    }
    json_reply(
        200,
        &json!({
            "method": c.req.method,
            "path": c.req.path,
            "body_len": c.req.body.len(),
            "body_blake3": blake3::hash(&c.req.body).to_hex().as_str(),
            "headers": headers,
            "hit": c.hit,
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// Time formatting (no chrono available)
// ---------------------------------------------------------------------------------------------

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `(year, month, day, hour, minute, second, weekday with 0 = Sunday)` in UTC.
fn civil(secs: u64) -> (i64, u64, u64, u64, u64, u64, u64) {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u64;
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = (days + 4) % 7;
    (
        year,
        month,
        day,
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        weekday,
    )
}

/// IMF-fixdate, e.g. `Thu, 01 Jan 1970 00:00:00 GMT`.
fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s, wd) = civil(secs);
    format!(
        "{}, {d:02} {} {y} {h:02}:{mi:02}:{s:02} GMT",
        DAYS[wd as usize],
        MONTHS[mo as usize - 1]
    )
}

fn rfc3339(secs: u64) -> String {
    let (y, mo, d, h, mi, s, _) = civil(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}
