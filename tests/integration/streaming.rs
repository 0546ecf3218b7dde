//! Streaming responses (SSE, NDJSON) pass through chunk by chunk, unbuffered.

use crate::support::{client, Config, Gateway, MockUpstream};
use futures_util::StreamExt;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_event_reaches_the_client_before_the_upstream_finishes() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    let resp = client()
        .post(gw.url("/openai/v1/chat/completions"))
        .header("x-mock-hold", "1")
        .json(&json!({"model": "gpt-4o", "stream": true, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut stream = resp.bytes_stream();
    // The upstream is holding everything after its first event until release().
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("first event arrives while the upstream is still holding")
        .unwrap()
        .unwrap();
    assert!(
        std::str::from_utf8(&first).unwrap().starts_with("data: "),
        "{first:?}"
    );
    assert_eq!(mock.completed_streams(), 0, "upstream has not finished yet");
    mock.release();
    let mut rest = Vec::new();
    while let Some(chunk) = stream.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    let all = String::from_utf8(rest).unwrap();
    assert!(all.trim_end().ends_with("data: [DONE]"), "{all}");
    assert_eq!(completed_streams(&mock, 1).await, 1);
}

/// The mock counts a stream as completed just after writing its last byte, which can be after
/// the client has read it: waits (briefly) for the count to reach `n`.
async fn completed_streams(mock: &MockUpstream, n: usize) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while mock.completed_streams() < n && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    mock.completed_streams()
}

async fn collect(resp: reqwest::Response) -> String {
    String::from_utf8(resp.bytes().await.unwrap().to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_providers_stream_arrives_complete() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    let c = client();
    let anthropic = c
        .post(gw.url("/anthropic/v1/messages"))
        .json(&json!({"model": "claude", "max_tokens": 5, "stream": true, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(anthropic.headers()["content-type"], "text/event-stream");
    assert!(collect(anthropic).await.contains("event: message_stop"));

    let gemini = c
        .post(gw.url("/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"))
        .json(&json!({"contents": []}))
        .send()
        .await
        .unwrap();
    assert!(collect(gemini).await.contains("finishReason"));

    let ollama = c
        .post(gw.url("/ollama/api/generate"))
        .json(&json!({"model": "llama3.2", "prompt": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ollama.headers()["content-type"], "application/x-ndjson");
    let text = collect(ollama).await;
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["done"], true);
    assert_eq!(completed_streams(&mock, 3).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_paced_stream_is_relayed_event_by_event() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    let resp = client()
        .post(gw.url("/openai/v1/chat/completions"))
        .header("x-mock-events", "20")
        .header("x-mock-chunk-delay-ms", "20")
        .json(&json!({"model": "gpt-4o", "stream": true, "messages": []}))
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    let mut reads = 0;
    let mut all = Vec::new();
    while let Some(chunk) = stream.next().await {
        reads += 1;
        all.extend_from_slice(&chunk.unwrap());
    }
    // Buffering would deliver the 20+ events in one or two reads.
    assert!(reads >= 10, "only {reads} reads");
    assert!(String::from_utf8(all).unwrap().contains("data: [DONE]"));
}
