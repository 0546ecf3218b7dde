//! The response cache (memory backend) seen from outside: hits proven by the upstream's
//! hit counter, request controls, what is never stored.

use crate::support::{client, Config, Gateway, MockUpstream, Route};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use std::time::Duration;

const CHAT: &str = "/openai/v1/chat/completions";

fn chat(prompt: &str) -> Value {
    json!({"model": "gpt-4o-mini", "temperature": 0, "messages": [{"role": "user", "content": prompt}]})
}

struct Reply {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn cache(&self) -> &str {
        self.headers
            .get("x-promptgate-cache")
            .map_or("-", |v| v.to_str().unwrap())
    }
}

async fn post(
    gw: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> Reply {
    let mut req = client()
        .post(gw.url(path))
        .header("content-type", "application/json");
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let resp = req.body(body).send().await.unwrap();
    Reply {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.text().await.unwrap(),
    }
}

async fn post_json(gw: &Gateway, headers: &[(&str, &str)], body: &Value) -> Reply {
    post(gw, CHAT, headers, serde_json::to_vec(body).unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_request_is_served_from_cache() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    let first = post_json(&gw, &[], &chat("hi")).await;
    assert_eq!((first.status, first.cache()), (200, "MISS"));
    let second = post_json(&gw, &[], &chat("hi")).await;
    assert_eq!((second.status, second.cache()), (200, "HIT"));
    assert_eq!(second.body, first.body, "byte-identical body");
    assert_eq!(mock.hits(), 1, "the upstream was called once");
    assert!(second.headers.get("age").is_some());
    assert_eq!(second.headers["content-type"], "application/json");
    // per-exchange headers are not replayed as if fresh (a hit gets its own fresh `date`)
    for h in ["x-request-id", "x-ratelimit-remaining-requests"] {
        assert!(first.headers.contains_key(h), "upstream sent {h}");
        assert!(!second.headers.contains_key(h), "{h} replayed");
    }
    assert!(gw.wait_for_log("cache=HIT").await, "{}", gw.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_order_and_whitespace_do_not_matter_but_content_does() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    let a =
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"temperature":0}"#;
    let b = "{ \"temperature\" : 0,\n  \"messages\": [ {\"content\": \"hi\", \"role\": \"user\"} ],\n  \"model\": \"gpt-4o-mini\", \"user\": \"end-user-7\" }";
    assert_eq!(post(&gw, CHAT, &[], a).await.cache(), "MISS");
    assert_eq!(post(&gw, CHAT, &[], b).await.cache(), "HIT");
    let c = a.replace("\"temperature\":0", "\"temperature\":1");
    assert_eq!(post(&gw, CHAT, &[], c).await.cache(), "MISS");
    assert_eq!(mock.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_credential_never_reads_anothers_entries() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    let alice = [("authorization", "Bearer sk-alice")];
    let bob = [("authorization", "Bearer sk-bob")];
    assert_eq!(post_json(&gw, &alice, &chat("hi")).await.cache(), "MISS");
    assert_eq!(post_json(&gw, &bob, &chat("hi")).await.cache(), "MISS");
    assert_eq!(post_json(&gw, &alice, &chat("hi")).await.cache(), "HIT");
    assert_eq!(post_json(&gw, &bob, &chat("hi")).await.cache(), "HIT");
    // a vary header changes the answer, so it changes the key
    let beta = [
        ("authorization", "Bearer sk-alice"),
        ("anthropic-beta", "tools-2024"),
    ];
    assert_eq!(post_json(&gw, &beta, &chat("hi")).await.cache(), "MISS");
    assert_eq!(mock.hits(), 3);
    assert!(!gw.logs().contains("sk-alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_controls() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    // no-store: neither looked up nor stored
    assert_eq!(
        post_json(&gw, &[("cache-control", "no-store")], &chat("a"))
            .await
            .cache(),
        "BYPASS"
    );
    assert_eq!(post_json(&gw, &[], &chat("a")).await.cache(), "MISS");
    // no-cache: not looked up, but stored (refreshes the entry)
    assert_eq!(
        post_json(&gw, &[("cache-control", "no-cache")], &chat("b"))
            .await
            .cache(),
        "BYPASS"
    );
    assert_eq!(post_json(&gw, &[], &chat("b")).await.cache(), "HIT");
    // explicit bypass
    assert_eq!(
        post_json(&gw, &[("x-promptgate-cache", "bypass")], &chat("b"))
            .await
            .cache(),
        "BYPASS"
    );
    // on a second line of the field too
    let twice = [
        ("x-promptgate-cache", "please"),
        ("x-promptgate-cache", "bypass"),
    ];
    assert_eq!(post_json(&gw, &twice, &chat("b")).await.cache(), "BYPASS");
    assert_eq!(mock.hits(), 5);
    // per-request TTL
    assert_eq!(
        post_json(&gw, &[("x-promptgate-ttl", "1")], &chat("c"))
            .await
            .cache(),
        "MISS"
    );
    assert_eq!(post_json(&gw, &[], &chat("c")).await.cache(), "HIT");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        post_json(&gw, &[], &chat("c")).await.cache(),
        "MISS",
        "expired after its TTL"
    );
    // several TTL lines: the shortest holds, so a 0 on any of them stores nothing
    let ttls = [("x-promptgate-ttl", "3600"), ("x-promptgate-ttl", "0")];
    assert_eq!(post_json(&gw, &ttls, &chat("d")).await.cache(), "MISS");
    assert_eq!(post_json(&gw, &[], &chat("d")).await.cache(), "MISS");
    let bad = post_json(&gw, &[("x-promptgate-ttl", "soon")], &chat("c")).await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("x-promptgate-ttl"), "{}", bad.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_rate_limits_are_never_cached() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    for status in ["500", "429", "503"] {
        let h = [("x-mock-status", status)];
        for _ in 0..2 {
            let r = post_json(&gw, &h, &chat(status)).await;
            assert_eq!((r.status.to_string().as_str(), r.cache()), (status, "MISS"));
        }
    }
    assert_eq!(mock.hits(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_repeats_never_pay_twice() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    for i in 0..20 {
        let prompt = format!("question {i}");
        assert_eq!(post_json(&gw, &[], &chat(&prompt)).await.cache(), "MISS");
        assert_eq!(
            post_json(&gw, &[], &chat(&prompt)).await.cache(),
            "HIT",
            "repeat of {i}"
        );
    }
    assert_eq!(mock.hits(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_entries_and_disabled_routes_go_upstream() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(
        Config::new()
            .section("cache: { max_entry_bytes: 100 }")
            .upstream("mock", &mock.url())
            .route(
                Route::prefixed("uncached")
                    .targets("[mock]")
                    .with("cache: { enabled: false }"),
            )
            .route(Route::prefixed("openai").targets("[mock]")),
    );
    // a chat completion (~400 bytes) is over max_entry_bytes
    for _ in 0..2 {
        let r = post_json(&gw, &[], &chat("x")).await;
        assert!(r.body.len() > 100);
        assert_eq!((r.status, r.cache()), (200, "MISS"));
    }
    for _ in 0..2 {
        let r = post(
            &gw,
            "/uncached/v1/chat/completions",
            &[],
            serde_json::to_vec(&chat("x")).unwrap(),
        )
        .await;
        assert_eq!((r.status, r.cache()), (200, "-"));
    }
    assert_eq!(mock.hits(), 4);
}

/// An audio upload as an SDK sends it: `multipart/form-data` with this boundary.
fn upload(boundary: &str, file: &[u8]) -> (String, Vec<u8>) {
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\
         Content-Type: audio/wav\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_keyed_by_their_parts_not_their_random_boundary() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    let send = |(content_type, body): (String, Vec<u8>)| {
        let req = client()
            .post(gw.url("/openai/v1/audio/transcriptions"))
            .header("content-type", content_type)
            .body(body);
        async move {
            let resp = req.send().await.unwrap();
            Reply {
                status: resp.status().as_u16(),
                headers: resp.headers().clone(),
                body: resp.text().await.unwrap(),
            }
        }
    };
    let first = send(upload("4f1c2a", b"RIFF audio")).await;
    let second = send(upload("9b8e7d6c5b4a", b"RIFF audio")).await;
    assert_eq!((first.status, first.cache()), (200, "MISS"));
    assert_eq!((second.status, second.cache()), (200, "HIT"));
    assert_eq!(second.body, first.body);
    // another file is another answer, whatever the boundary
    let other = send(upload("4f1c2a", b"RIFF other")).await;
    assert_eq!(other.cache(), "MISS");
    assert_eq!(mock.hits(), 2);
    // the upstream got the upload byte for byte
    let (_, sent) = upload("4f1c2a", b"RIFF other");
    assert_eq!(mock.last_request().unwrap().body, sent);
}
