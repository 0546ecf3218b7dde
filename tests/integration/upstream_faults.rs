//! Upstream failures become clear JSON errors (before the response starts) or a cut connection
//! (after it started), and never take the proxy down.

use crate::support::{self, client, free_port, Config, Gateway, MockUpstream, Route};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn routes(url: &str, timeouts: &str) -> Config {
    Config::new()
        .upstream_with(
            "mock",
            url,
            &format!("timeouts: {{ connect: 1s, write: 1s, {timeouts} }}"),
        )
        .route(
            Route::prefixed("openai")
                .targets("[mock]")
                .with("retry: { attempts: 1 }"),
        )
}

fn chat(stream: bool) -> Value {
    json!({"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

async fn error_type(resp: reqwest::Response) -> String {
    error_of(resp).await.0
}

/// The JSON error's `type` and `message`.
async fn error_of(resp: reqwest::Response) -> (String, String) {
    let body: Value = resp.json().await.unwrap();
    let field = |f: &str| body["error"][f].as_str().unwrap().to_string();
    (field("type"), field("message"))
}

/// Sends one plain chat request with `headers`; returns the status and the JSON error's type
/// and message.
async fn failing(gw: &Gateway, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut req = client().post(gw.url("/openai/v1/chat/completions"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = req.json(&chat(false)).send().await.unwrap();
    let status = resp.status().as_u16();
    let (kind, message) = error_of(resp).await;
    (status, kind, message)
}

/// The client's message is the log's too (the warning line of the failed request).
async fn logged(gw: &Gateway, message: &str) {
    assert!(
        gw.wait_for_log(&format!("POST /openai/v1/chat/completions: {message}"))
            .await,
        "{}",
        gw.logs()
    );
}

/// `127.0.0.1:PORT` of a URL.
fn address(url: &str) -> &str {
    url.trim_start_matches("http://")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_byte_timeout_is_a_504() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(routes(&mock.url(), "first_byte: 300ms"));
    let started = Instant::now();
    let resp = client()
        .post(gw.url("/openai/v1/chat/completions"))
        .header("x-mock-delay-ms", "3000")
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    let (kind, message) = error_of(resp).await;
    assert_eq!(kind, "upstream_timeout");
    assert_eq!(
        message,
        format!(
            "upstream mock ({}) timed out after 300ms (first_byte timeout)",
            address(&mock.url())
        )
    );
    logged(&gw, &message).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "timed out by the first_byte timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_is_a_502_naming_the_upstream_and_its_address() {
    let port = free_port();
    // Credentials in the URL are the upstream's business: never in a message.
    let gw = Gateway::start(routes(
        &format!("http://user:s3cret-userinfo@127.0.0.1:{port}/base"),
        "first_byte: 1s",
    ));
    let (status, kind, message) = failing(&gw, &[]).await;
    assert_eq!((status, kind.as_str()), (502, "upstream_unreachable"));
    assert_eq!(
        message,
        format!("cannot connect to upstream mock (127.0.0.1:{port}): connection refused")
    );
    logged(&gw, &message).await;
    assert!(!gw.logs().contains("s3cret"), "{}", gw.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresolvable_upstream_is_named_with_its_address() {
    // .invalid never resolves (RFC 6761).
    let gw = Gateway::start(routes(
        "http://no-such-upstream.invalid:8443",
        "first_byte: 1s",
    ));
    let (status, kind, message) = failing(&gw, &[]).await;
    assert_eq!((status, kind.as_str()), (502, "upstream_unresolvable"));
    let named = "cannot resolve upstream mock (no-such-upstream.invalid:8443): ";
    assert!(message.starts_with(named), "{message}");
    logged(&gw, &message).await;
}

/// A loopback port that never completes a TCP handshake: its accept queue (backlog 1) is full
/// and nothing accepts, so the kernel drops further SYNs. Keep the returned values alive.
async fn unanswered_port() -> (tokio::net::TcpListener, Vec<tokio::net::TcpStream>, u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    loop {
        let connect = tokio::net::TcpStream::connect(addr);
        match tokio::time::timeout(Duration::from_millis(300), connect).await {
            Ok(stream) => queued.push(stream.unwrap()),
            Err(_) => break, // the queue is full
        }
        assert!(queued.len() < 64, "the accept queue never filled");
    }
    (listener, queued, addr.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_timeout_is_a_504_naming_the_upstream_and_the_timeout() {
    let (_listener, _queued, port) = unanswered_port().await;
    let gw = Gateway::start(
        Config::new()
            .upstream_with(
                "mock",
                &format!("http://127.0.0.1:{port}"),
                "timeouts: { connect: 300ms }",
            )
            .route(
                Route::prefixed("openai")
                    .targets("[mock]")
                    .with("retry: { attempts: 1 }"),
            ),
    );
    let started = Instant::now();
    let (status, kind, message) = failing(&gw, &[]).await;
    assert_eq!(
        (status, kind.as_str()),
        (504, "upstream_timeout"),
        "{message}"
    );
    assert_eq!(
        message,
        format!("upstream mock (127.0.0.1:{port}) timed out after 300ms (connect timeout)")
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    logged(&gw, &message).await;
}

/// An upstream that accepts connections and never reads from them: a large request body fills
/// the socket buffers and the write stalls until `timeouts.write` gives up on it (not
/// `first_byte`, which is far longer here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_write_is_a_504_naming_the_write_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut unread = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            unread.push(stream);
        }
    });
    let (gw, kind, message) = support::stalled_write("mock", addr, "", 24 << 20).await;
    assert_eq!(kind, "upstream_timeout");
    logged(&gw, &message).await;
    held.abort();
}

/// An upstream that answers the first request on each connection (keep-alive) and closes the
/// connection, unanswered, when a second one comes on it: what a pooled connection the
/// upstream dropped while idle looks like when the drop and the next request cross. Counts the
/// connections it accepted.
async fn one_answer_per_connection() -> (tokio::task::JoinHandle<()>, String, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let body = r#"{"id":"x","object":"chat.completion","choices":[]}"#;
                // The whole first request: its head and Content-Length's worth of body.
                if support::read_request(&mut stream).await.is_none() {
                    return;
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(format!("{head}{body}").as_bytes()).await;
                // The next request on this connection is read, then the connection closed.
                let _ = stream.read(&mut [0u8; 1024]).await;
            });
        }
    });
    (task, addr, accepted)
}

/// A pooled connection that turns out closed when the next request is sent on it: the request
/// goes again on a new connection, unseen by the client, even where the route retries nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_found_closed_is_replaced_without_an_error() {
    let (server, addr, accepted) = one_answer_per_connection().await;
    let gw = Gateway::start(routes(&format!("http://{addr}"), "first_byte: 5s"));
    let c = client();
    for round in 0..4 {
        // A different prompt each round: all of them go upstream (none is a cache hit).
        let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": format!("round {round}")}]});
        let resp = c
            .post(gw.url("/openai/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        assert_eq!(status, 200, "round {round}: {}", resp.text().await.unwrap());
    }
    // Each request after the first found its pooled connection dead and opened another.
    assert_eq!(accepted.load(Ordering::SeqCst), 4);
    server.abort();
}

/// A loopback port that answers whatever it is sent with a plain-HTTP 400 and closes, as an
/// HTTP server does to a TLS client hello (an `https://` URL pointed at an `http://` port).
async fn plain_http_port() -> (tokio::task::JoinHandle<()>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            let _ = stream
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
        }
    });
    (task, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_tls_handshake_names_the_upstream_and_why() {
    let (server, addr) = plain_http_port().await;
    let gw = Gateway::start(routes(&format!("https://{addr}"), "first_byte: 1s"));
    let (status, kind, message) = failing(&gw, &[]).await;
    assert_eq!(
        (status, kind.as_str()),
        (502, "upstream_unreachable"),
        "{message}"
    );
    let named = format!("cannot connect to upstream mock ({addr}): TLS handshake failed: ");
    assert!(
        message.starts_with(&format!("{named}received corrupt message")),
        "{message}"
    );
    logged(&gw, &message).await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_is_a_502_and_upstream_errors_pass_through() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(routes(&mock.url(), "first_byte: 5s"));
    let c = client();
    let resp = c
        .post(gw.url("/openai/v1/chat/completions"))
        .header("x-mock-fault", "reset")
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let (kind, message) = error_of(resp).await;
    assert_eq!(kind, "upstream_error");
    assert_eq!(
        message,
        format!(
            "upstream mock ({}) closed the connection before answering",
            address(&mock.url())
        )
    );
    logged(&gw, &message).await;
    // The upstream's own errors are the upstream's answer: passed through as they are.
    let resp = c
        .post(gw.url("/openai/v1/chat/completions"))
        .header("x-mock-status", "429")
        .header("x-mock-retry-after", "7")
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    assert_eq!(error_type(resp).await, "mock_error");
    // still serving
    let ok = c
        .post(gw.url("/openai/v1/chat/completions"))
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_stream_is_never_presented_as_complete() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(routes(&mock.url(), "first_byte: 5s"));
    let resp = client()
        .post(gw.url("/openai/v1/chat/completions"))
        .header("x-mock-fault", "truncate")
        .json(&chat(true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut got = Vec::new();
    let mut failed = false;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => got.extend_from_slice(&c),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the client must see an error, not a clean end");
    assert!(!String::from_utf8_lossy(&got).contains("[DONE]"));
    // Too late for a JSON error: the log names the upstream that broke off.
    let broke_off = format!(
        "WARN  promptgate::proxy::serve] POST /openai/v1/chat/completions: upstream mock ({}) broke off \
         the response (connection closed); the answer had started, so the client's connection is cut",
        address(&mock.url())
    );
    assert!(gw.wait_for_log(&broke_off).await, "{}", gw.logs());
    assert!(
        !gw.logs().contains("Fail to"),
        "Pingora's line too: {}",
        gw.logs()
    );

    // Same for a JSON body cut short of its Content-Length.
    let resp = client()
        .post(gw.url("/openai/v1/chat/completions"))
        .header("x-mock-fault", "truncate")
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert!(resp.bytes().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_stalls_past_idle_is_cut() {
    let mock = MockUpstream::start().await;
    // A head at once, then 1.5 s between chunks: over `idle`, though the first byte was fast.
    let gw = Gateway::start(routes(&mock.url(), "first_byte: 5s, idle: 300ms"));
    let started = Instant::now();
    let resp = client()
        .post(gw.url("/openai/v1/chat/completions"))
        .header("x-mock-chunk-delay-ms", "1500")
        .json(&chat(true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().await;
    assert!(body.is_err(), "a stalled stream must not look complete");
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "cut by idle"
    );
    let stalled = format!(
        "POST /openai/v1/chat/completions: upstream mock ({}) sent nothing for 300ms (idle timeout)",
        address(&mock.url())
    );
    assert!(gw.wait_for_log(&stalled).await, "{}", gw.logs());
}

/// A reasoning model that thinks 35 s before its first byte, behind the defaults (no
/// `timeouts:`, no `retry:`): answered once, not cut and resent (was: three 30 s attempts and
/// a 504). The one test that waits this long; the defaults themselves are checked in
/// `config::schema`'s unit tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_35_second_first_byte_passes_with_the_shipped_defaults() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(
        Config::new()
            .upstream("mock", &mock.url())
            .route(Route::prefixed("openai").targets("[mock]")),
    );
    let patient = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let resp = patient
        .post(gw.url("/openai/v1/chat/completions"))
        .header("x-mock-delay-ms", "35000")
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("Hello from mock #1"));
    assert_eq!(mock.hits(), 1, "exactly one upstream call");
}
