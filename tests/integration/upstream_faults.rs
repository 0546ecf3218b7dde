//! Upstream failures become clear JSON errors (before the response starts) or a cut connection
//! (after it started), and never take the proxy down.

use crate::support::{client, free_port, Config, Gateway, MockUpstream, Route};
use futures_util::StreamExt;
use serde_json::{json, Value};
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
    let body: Value = resp.json().await.unwrap();
    body["error"]["type"].as_str().unwrap().to_string()
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
    assert_eq!(error_type(resp).await, "upstream_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "timed out by the first_byte timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_is_a_502() {
    let gw = Gateway::start(routes(
        &format!("http://127.0.0.1:{}", free_port()),
        "first_byte: 1s",
    ));
    let resp = client()
        .post(gw.url("/openai/v1/chat/completions"))
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(error_type(resp).await, "upstream_unreachable");
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
    assert_eq!(error_type(resp).await, "upstream_error");
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
