//! Only answers the provider vouches for are stored: errors inside a 200, streams that end
//! without the format's successful end, refusals and safety blocks are forwarded as they came
//! and never replayed; whole answers (Responses streams included, encoded bodies too) are.

use crate::support::{client, Config, Gateway, MockUpstream};
use serde_json::{json, Value};

/// One request: (status, x-promptgate-cache, content-encoding, body bytes).
async fn send(
    gw: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (u16, String, String, Vec<u8>) {
    let mut req = client().post(gw.url(path)).json(body);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let resp = req.send().await.unwrap();
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .map_or("-".to_string(), |v| v.to_str().unwrap().to_string())
    };
    let (cache, encoding) = (header("x-promptgate-cache"), header("content-encoding"));
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("a complete body").to_vec();
    (status, cache, encoding, bytes)
}

/// Every endpoint and wire format the mock shapes outcomes for: (name, path, body).
fn formats() -> Vec<(&'static str, &'static str, Value)> {
    let chat = |stream: bool| json!({"model": "gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
    let responses = |stream: bool| json!({"model": "gpt-4o-mini", "stream": stream, "input": "hi"});
    let messages = |stream: bool| json!({"model": "claude-sonnet-4-0", "max_tokens": 20, "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
    let gemini = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
    let ollama = |stream: bool| json!({"model": "llama3.2", "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
    vec![
        ("openai chat", "/openai/v1/chat/completions", chat(false)),
        ("openai chat SSE", "/openai/v1/chat/completions", chat(true)),
        ("responses", "/openai/v1/responses", responses(false)),
        ("responses SSE", "/openai/v1/responses", responses(true)),
        ("anthropic", "/anthropic/v1/messages", messages(false)),
        ("anthropic SSE", "/anthropic/v1/messages", messages(true)),
        (
            "gemini",
            "/gemini/v1beta/models/gemini-2.0-flash:generateContent",
            gemini.clone(),
        ),
        (
            "gemini SSE",
            "/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
            gemini.clone(),
        ),
        (
            "gemini JSON array",
            "/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent",
            gemini,
        ),
        ("ollama", "/ollama/api/chat", ollama(false)),
        ("ollama NDJSON", "/ollama/api/chat", ollama(true)),
    ]
}

/// Whether the mock has an answer of kind `outcome` in this format (others answer normally).
fn has_outcome(name: &str, outcome: &str) -> bool {
    let stream = name.contains("SSE") || name.contains("NDJSON");
    match outcome {
        "error" => true,
        // Gemini's non-SSE stream is one JSON array: its last candidate lacks finishReason.
        "partial" => stream || name == "gemini JSON array",
        "refusal" => !name.starts_with("ollama"),
        "prompt-blocked" => name.starts_with("gemini"),
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_answers_in_every_format_are_stored() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    for (name, path, body) in formats() {
        let first = send(&gw, path, &[], &body).await;
        let second = send(&gw, path, &[], &body).await;
        assert_eq!((first.0, first.1.as_str()), (200, "MISS"), "{name}");
        assert_eq!((second.0, second.1.as_str()), (200, "HIT"), "{name}");
        assert_eq!(second.3, first.3, "{name}: replayed byte for byte");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_partial_streams_and_refusals_are_never_stored() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    let mut checked = 0;
    for outcome in ["error", "partial", "refusal", "prompt-blocked"] {
        for (name, path, body) in formats() {
            if !has_outcome(name, outcome) {
                continue;
            }
            let headers = [("x-mock-outcome", outcome)];
            let before = mock.hits();
            let first = send(&gw, path, &headers, &body).await;
            let second = send(&gw, path, &headers, &body).await;
            assert_eq!(
                (first.0, first.1.as_str(), second.0, second.1.as_str()),
                (200, "MISS", 200, "MISS"),
                "{name} {outcome}: {}",
                String::from_utf8_lossy(&first.3)
            );
            assert_eq!(
                mock.hits() - before,
                2,
                "{name} {outcome}: both went upstream"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 11 + 6 + 9 + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_bodies_pass_as_they_came_and_are_judged_decoded() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    for (name, path, body) in formats() {
        for encoding in ["gzip", "br"] {
            let mut body = body.clone();
            body["x_case"] = json!(encoding);
            let headers = [("x-mock-encoding", encoding)];
            let first = send(&gw, path, &headers, &body).await;
            let second = send(&gw, path, &headers, &body).await;
            assert_eq!(
                first.2, encoding,
                "{name}: the client gets the encoded bytes"
            );
            assert_eq!(
                (first.1.as_str(), second.1.as_str()),
                ("MISS", "HIT"),
                "{name} {encoding}"
            );
            assert_eq!(second.3, first.3, "{name} {encoding}");
            // the same failure, encoded, is still a failure
            let failing = [("x-mock-encoding", encoding), ("x-mock-outcome", "error")];
            body["x_case"] = json!(format!("{encoding} error"));
            let first = send(&gw, path, &failing, &body).await;
            let second = send(&gw, path, &failing, &body).await;
            assert_eq!(
                (first.1.as_str(), second.1.as_str()),
                ("MISS", "MISS"),
                "{name} {encoding} error"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoding_promptgate_cannot_read_is_never_stored() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    let (_, path, body) = &formats()[0];
    // `compress` (LZW) is not read: promptgate cannot tell an error from an answer in it.
    let headers = [("x-mock-encoding", "compress")];
    let first = send(&gw, path, &headers, body).await;
    let second = send(&gw, path, &headers, body).await;
    assert_eq!(first.2, "compress");
    assert_eq!((first.1.as_str(), second.1.as_str()), ("MISS", "MISS"));
}
