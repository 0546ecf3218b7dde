//! Retries with backoff, failover, priority routing, passive health, concurrency caps and bad
//! input — everything an upstream or a client can throw before the response starts.

use crate::support::{client, free_port, Config, Gateway, MockUpstream, Route};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const FAST_RETRY: &str = "retry: { attempts: 3, base: 20ms, max: 2s }";

/// The `upstreams` (name, URL) and one route `chat` over `targets`, with fast retries and no
/// cache.
fn one_route(targets: &str, upstreams: &[(&str, String)]) -> Config {
    let mut config = Config::new();
    for (name, url) in upstreams {
        config = config.upstream(name, url);
    }
    config.route(
        Route::new("chat")
            .targets(targets)
            .with(FAST_RETRY)
            .with("cache: { enabled: false }"),
    )
}

fn chat() -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
}

async fn post(
    gw: &Gateway,
    headers: &[(&str, &str)],
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, String) {
    post_to(gw, "/v1/chat/completions", headers, body).await
}

async fn post_to(
    gw: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = client().post(gw.url(path)).json(body);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let resp = req.send().await.unwrap();
    (
        resp.status().as_u16(),
        resp.headers().clone(),
        resp.text().await.unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_500s_then_a_200_is_a_200() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(one_route("[mock]", &[("mock", mock.url())]));
    let h = [
        ("x-mock-fail-first", "2"),
        ("x-mock-status", "500"),
        ("x-mock-id", "a"),
    ];
    let (status, _, body) = post(&gw, &h, &chat()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(mock.hits(), 3);
    // every attempt carried the whole body
    assert!(mock
        .requests()
        .iter()
        .all(|r| r.body == mock.requests()[0].body));
    assert!(!mock.requests()[0].body.is_empty());
    let metrics = gw
        .metrics_after("promptgate_upstream_retries_total{route=\"chat\"} 2")
        .await;
    assert!(
        metrics.contains("promptgate_upstream_retries_total{route=\"chat\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(one_route("[mock]", &[("mock", mock.url())]));
    let h = [
        ("x-mock-fail-first", "1"),
        ("x-mock-status", "429"),
        ("x-mock-retry-after", "1"),
        ("x-mock-id", "b"),
    ];
    let started = Instant::now();
    let (status, _, _) = post(&gw, &h, &chat()).await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "retried after {:?}",
        started.elapsed()
    );
    assert_eq!(mock.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_is_retried() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(one_route("[mock]", &[("mock", mock.url())]));
    let h = [
        ("x-mock-fault", "reset"),
        ("x-mock-fault-first", "1"),
        ("x-mock-id", "c"),
    ];
    let (status, _, _) = post(&gw, &h, &chat()).await;
    assert_eq!(status, 200);
    assert_eq!(mock.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_first_target_fails_over_to_the_second_at_once() {
    let mock = MockUpstream::start().await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let gw = Gateway::start(one_route(
        "[dead, live]",
        &[("dead", dead), ("live", mock.url())],
    ));
    let started = Instant::now();
    let (status, _, _) = post(&gw, &[], &chat()).await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "no backoff before failing over"
    );
    assert_eq!(mock.hits(), 1);
    assert!(gw.wait_for_log("failovers=1").await, "{}", gw.logs());
    let metrics = gw
        .metrics_after("promptgate_upstream_failovers_total{route=\"chat\"} 1")
        .await;
    assert!(
        metrics.contains("promptgate_upstream_failovers_total{route=\"chat\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_everything_fails_the_client_gets_the_last_answer_or_a_clear_error() {
    let (a, b) = (MockUpstream::start().await, MockUpstream::start().await);
    let gw = Gateway::start(one_route("[a, b]", &[("a", a.url()), ("b", b.url())]));
    // both answer 503 every time: the last upstream answer is passed on, as it is
    let (status, headers, body) = post(&gw, &[("x-mock-status", "503")], &chat()).await;
    assert_eq!(status, 503);
    assert!(body.contains("mock_error"), "{body}");
    assert!(headers.get("x-promptgate-cache").is_none());
    assert_eq!((a.hits(), b.hits()), (3, 3), "3 attempts on each target");

    // nothing answers at all: 502 naming the route and what was tried
    let dead = (
        format!("http://127.0.0.1:{}", free_port()),
        format!("http://127.0.0.1:{}", free_port()),
    );
    let gw = Gateway::start(one_route("[x, y]", &[("x", dead.0), ("y", dead.1)]));
    let (status, _, body) = post(&gw, &[], &chat()).await;
    assert_eq!(status, 502);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["type"], "upstream_unreachable");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("route chat")
            && msg.contains("x upstream_unreachable")
            && msg.contains("y upstream_unreachable"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_generation_is_retried_only_where_the_route_asks() {
    let mock = MockUpstream::start().await;
    // The same slow upstream behind the default policy, and behind one that lists `timeout`.
    let gw = Gateway::start(
        Config::new()
            .upstream_with("slow", &mock.url(), "timeouts: { first_byte: 200ms }")
            .route(
                Route::prefixed("default")
                    .targets("[slow]")
                    .with("retry: { attempts: 3, base: 10ms, max: 50ms }"),
            )
            .route(Route::prefixed("resend").targets("[slow]").with(
                "retry: { attempts: 3, base: 10ms, max: 50ms, on: [connect, timeout, reset, 503] }",
            )),
    );
    let slow = [("x-mock-delay-ms", "1500")];
    let (status, _, body) = post_to(&gw, "/default/v1/chat/completions", &slow, &chat()).await;
    assert_eq!(status, 504, "{body}");
    assert!(
        body.contains("upstream_timeout") && body.contains("first_byte"),
        "{body}"
    );
    assert_eq!(
        mock.hits(),
        1,
        "sent once: the upstream may still be generating it"
    );
    let (status, _, body) = post_to(&gw, "/resend/v1/chat/completions", &slow, &chat()).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(
        mock.hits(),
        1 + 3,
        "`timeout` in retry.on: every attempt made"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_picks_the_group_and_rewrites_the_model() {
    let (speed, quality, fallback) = (
        MockUpstream::start().await,
        MockUpstream::start().await,
        MockUpstream::start().await,
    );
    let gw = Gateway::start(
        Config::new()
            .upstream("ollama", &speed.url())
            .upstream("claude", &quality.url())
            .upstream("openai", &fallback.url())
            .route(
                Route::new("chat")
                    .group("speed", "[{ upstream: ollama, model: llama3.2 }]")
                    .group(
                        "quality",
                        "[{ upstream: claude, model: claude-sonnet-4-5 }]",
                    )
                    .group("fallback", "[{ upstream: openai, model: gpt-4o-mini }]")
                    .with("retry: { attempts: 1 }"),
            ),
    );
    let (status, _, _) = post(&gw, &[("x-promptgate-priority", "speed")], &chat()).await;
    assert_eq!(status, 200);
    let seen: Value = serde_json::from_slice(&speed.last_request().unwrap().body).unwrap();
    assert_eq!(seen["model"], "llama3.2");

    let alias = json!({"model": "auto:quality", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(post(&gw, &[], &alias).await.0, 200);
    let seen: Value = serde_json::from_slice(&quality.last_request().unwrap().body).unwrap();
    assert_eq!(seen["model"], "claude-sonnet-4-5");

    // no priority: the fallback group; a failing group falls back too
    assert_eq!(post(&gw, &[], &chat()).await.0, 200);
    assert_eq!(fallback.hits(), 1);
    let (status, _, _) = post(
        &gw,
        &[
            ("x-promptgate-priority", "speed"),
            ("x-mock-fault", "reset"),
        ],
        &json!({"model": "x", "messages": []}),
    )
    .await;
    assert_eq!(status, 502, "reset on every upstream");
    // (a reset on a pooled connection is also tried once on a fresh one, so count loosely)
    assert!(
        fallback.hits() >= 2,
        "speed failed, then the fallback group was tried"
    );

    // the same body with another priority is another cache entry
    let (_, h1, b1) = post(
        &gw,
        &[("x-promptgate-priority", "speed")],
        &json!({"model": "m", "messages": []}),
    )
    .await;
    let (_, h2, b2) = post(
        &gw,
        &[("x-promptgate-priority", "quality")],
        &json!({"model": "m", "messages": []}),
    )
    .await;
    assert_eq!(
        (
            h1["x-promptgate-cache"].to_str().unwrap(),
            h2["x-promptgate-cache"].to_str().unwrap()
        ),
        ("MISS", "MISS")
    );
    assert_ne!(b1, b2);

    let (status, _, body) = post(&gw, &[("x-promptgate-priority", "fastest")], &chat()).await;
    assert_eq!(status, 400);
    assert!(body.contains("bad_priority"));
    let (status, _, _) = post(&gw, &[("x-promptgate-priority", "cost")], &chat()).await;
    assert_eq!(status, 400, "no cost group on this route");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_target_is_ejected_then_put_back() {
    let b = MockUpstream::start().await;
    let a_port = free_port();
    let gw = Gateway::start(
        Config::new()
            .upstream_with(
                "a",
                &format!("http://127.0.0.1:{a_port}"),
                "health: { failures: 2, cooldown: 2s }",
            )
            .upstream("b", &b.url())
            .route(
                Route::new("chat")
                    .targets("[a, b]")
                    .with("retry: { attempts: 1 }")
                    .with("cache: { enabled: false }"),
            ),
    );
    // a refuses twice (each time b answers): a is ejected
    for _ in 0..2 {
        assert_eq!(post(&gw, &[], &chat()).await.0, 200);
    }
    assert_eq!(b.hits(), 2);
    assert!(gw.wait_for_log("skipping it for").await, "{}", gw.logs());
    // a comes back, but while ejected it is not tried first
    let a = MockUpstream::start_on(a_port).await;
    assert_eq!(post(&gw, &[], &chat()).await.0, 200);
    assert_eq!((a.hits(), b.hits()), (0, 3));
    // after the cool-down it is first again
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(post(&gw, &[], &chat()).await.0, 200);
    assert_eq!((a.hits(), b.hits()), (1, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_upstream_answers_503_after_its_queue_timeout() {
    let mock = MockUpstream::start().await;
    let gw = std::sync::Arc::new(Gateway::start(
        Config::new()
            .upstream_with(
                "mock",
                &mock.url(),
                "max_concurrent: 1, queue_timeout: 200ms",
            )
            .route(
                Route::new("chat")
                    .targets("[mock]")
                    .with("retry: { attempts: 1 }")
                    .with("cache: { enabled: false }"),
            ),
    ));
    let slow = {
        let gw = gw.clone();
        tokio::spawn(async move { post(&gw, &[("x-mock-delay-ms", "1000")], &chat()).await.0 })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _, body) = post(&gw, &[], &json!({"model": "other"})).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("upstream_busy"));
    assert_eq!(slow.await.unwrap(), 200);
    assert_eq!(
        post(&gw, &[], &chat()).await.0,
        200,
        "the slot is free again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_socket_does_not_disturb_anyone() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(one_route("[mock]", &[("mock", mock.url())]));
    let addr = gw.addr;
    let reply = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n")
            .unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .unwrap();
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 400"),
        "{reply:?}"
    );
    assert_eq!(post(&gw, &[], &chat()).await.0, 200, "still serving");
    assert_eq!(mock.hits(), 1, "garbage never reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_mib_against_a_one_mib_limit_is_413_either_way() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(
        one_route("[mock]", &[("mock", mock.url())]).section("limits: { max_body_bytes: 1048576 }"),
    );
    let big = vec![b'x'; 2 << 20];
    let c = client();
    let resp = c
        .post(gw.url("/v1/chat/completions"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let resp = c
        .post(gw.url("/v1/chat/completions"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(mock.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_or_too_large_headers_are_refused_without_harm() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(one_route("[mock]", &[("mock", mock.url())]));
    let addr = gw.addr;
    let send = move |head: String| {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // The server may close while we are still writing an oversized head.
        let _ = s.write_all(head.as_bytes());
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    let many: String = (0..300).map(|i| format!("x-h{i}: v\r\n")).collect();
    let huge = format!("x-big: {}\r\n", "a".repeat(2 << 20));
    for extra in [many, huge] {
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n{extra}\r\n{{}}"
        );
        let reply = tokio::task::spawn_blocking(move || send(head))
            .await
            .unwrap();
        assert!(
            reply.is_empty() || reply.starts_with("HTTP/1.1 400"),
            "{:?}",
            &reply[..reply.len().min(200)]
        );
    }
    assert_eq!(mock.hits(), 0, "nothing was forwarded");
    assert_eq!(post(&gw, &[], &chat()).await.0, 200, "still serving");
}

/// An upstream whose response head hyper cannot read — over its 100 header fields, a status
/// that is no status, a field name with a space, not HTTP at all — gets a 502 that says what
/// was wrong (never quoting the head), is stored nowhere, and leaves the route serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_response_head_is_a_clear_502_and_nothing_is_stored() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                while let Some(request) = crate::support::read_request(&mut stream).await {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let request = String::from_utf8_lossy(&request);
                    let body = r#"{"id":"c1","object":"chat.completion","model":"gpt-4o","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#;
                    let fields = |n: usize| -> String {
                        (0..n)
                            .map(|i| format!("X-Field-{i}: secret-{i}\r\n"))
                            .collect()
                    };
                    let head = if request.contains("many-fields") {
                        format!("HTTP/1.1 200 OK\r\n{}", fields(150))
                    } else if request.contains("bad-status") {
                        "HTTP/1.1 2000 OK\r\nX-Secret: secret-status\r\n".to_string()
                    } else if request.contains("bad-name") {
                        "HTTP/1.1 200 OK\r\nX Secret: secret-name\r\n".to_string()
                    } else if request.contains("not-http") {
                        "SECRET-PROTOCOL 1.0 200\r\n".to_string()
                    } else {
                        // just under the limit: read and relayed as usual
                        format!("HTTP/1.1 200 OK\r\n{}", fields(95))
                    };
                    let answer = format!(
                        "{head}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let gw = Gateway::start(
        Config::new()
            .upstream("raw", &format!("http://{addr}"))
            .route(Route::new("chat").targets("[raw]").with(FAST_RETRY)),
    );
    let ask = |prompt: &str| json!({"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}]});
    let cases = [
        (
            "many-fields",
            "its response head is too large (over 100 header fields or 408 KiB)",
        ),
        (
            "bad-status",
            "its response head is not valid HTTP/1.1: invalid HTTP status-code parsed",
        ),
        (
            "bad-name",
            "its response head is not valid HTTP/1.1: invalid HTTP header parsed",
        ),
        (
            "not-http",
            "its response head is not valid HTTP/1.1: invalid HTTP version parsed",
        ),
    ];
    for (prompt, says) in cases {
        for round in 0..2 {
            let before = hits.load(Ordering::SeqCst);
            let (status, headers, body) = post(&gw, &[], &ask(prompt)).await;
            assert_eq!(status, 502, "{prompt} round {round}: {body}");
            assert_eq!(
                headers["x-promptgate-cache"], "MISS",
                "{prompt}: never stored"
            );
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["error"]["type"], "upstream_error", "{body}");
            let message = v["error"]["message"].as_str().unwrap();
            assert!(
                message.starts_with(&format!(
                    "upstream raw (127.0.0.1:{}) failed: ",
                    addr.port()
                )) && message.contains(says),
                "{prompt}: {message}"
            );
            assert!(
                !body.contains("secret") && !body.contains("SECRET"),
                "{body}"
            );
            // not retried: the same upstream would answer the same again
            assert_eq!(hits.load(Ordering::SeqCst), before + 1, "{prompt}");
        }
        // the route still serves, on a new connection
        let (status, headers, body) = post(
            &gw,
            &[],
            &ask(&format!("fine {}", hits.load(Ordering::SeqCst))),
        )
        .await;
        assert_eq!(status, 200, "after {prompt}: {body}");
        assert_eq!(headers["x-field-94"], "secret-94");
    }
    let log = gw.logs();
    assert!(
        log.contains("failed: its response head is too large"),
        "{log}"
    );
    assert!(!log.contains("secret-"), "the log never quotes the head");
}
