//! Every answer on a cached route says what the cache did — errors included: `MISS` when the
//! request was a cache candidate (a cached method, no control skipping the lookup), `BYPASS`
//! when it was not. Routes without cache, and requests no route takes, carry no header.

use crate::support::{client, free_port, Config, Gateway, MockUpstream, Route};
use serde_json::{json, Value};
use std::time::Duration;

/// Status, `x-promptgate-cache` (`-` when absent) and the JSON error's type (`-` for none).
async fn send(
    gw: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, String, String) {
    let mut req = client()
        .post(gw.url(path))
        .header("content-type", "application/json");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = req.body(body).send().await.unwrap();
    let status = resp.status().as_u16();
    let cache = resp
        .headers()
        .get("x-promptgate-cache")
        .map_or("-".to_string(), |v| v.to_str().unwrap().to_string());
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    let kind = body["error"]["type"].as_str().unwrap_or("-").to_string();
    (status, cache, kind)
}

fn chat(prompt: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"model": "m", "messages": [{"role": "user", "content": prompt}]}))
        .unwrap()
}

fn setup(mock: &MockUpstream) -> Config {
    let once = "retry: { attempts: 1 }";
    Config::new()
        .section("limits: { max_body_bytes: 2KiB }")
        .upstream("live", &mock.url())
        .upstream_with(
            "dead",
            &format!("http://127.0.0.1:{}", free_port()),
            "timeouts: { connect: 300ms }",
        )
        .upstream_with("slow", &mock.url(), "timeouts: { first_byte: 300ms }")
        .upstream_with(
            "narrow",
            &mock.url(),
            "max_concurrent: 1, queue_timeout: 100ms",
        )
        .route(Route::prefixed("openai").targets("[live]").with(once))
        .route(Route::prefixed("dead").targets("[dead]").with(once))
        .route(Route::prefixed("slow").targets("[slow]").with(once))
        .route(Route::prefixed("narrow").targets("[narrow]").with(once))
        .route(
            Route::prefixed("limited")
                .targets("[live]")
                .with("rate_limit: { key: route, requests_per_minute: 1, count_hits: true }"),
        )
        .route(
            Route::prefixed("plain")
                .targets("[dead]")
                .with("cache: { enabled: false }"),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_answers_on_cached_routes_say_miss_or_bypass() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(setup(&mock));
    let big = chat(&"x".repeat(4096));
    let path = "/openai/v1/chat/completions";

    // 413, before the route is chosen on the body: from the candidates.
    assert_eq!(
        send(&gw, path, &[], big.clone()).await,
        (413, "MISS".into(), "request_too_large".into())
    );
    assert_eq!(
        send(&gw, path, &[("cache-control", "no-store")], big.clone()).await,
        (413, "BYPASS".into(), "request_too_large".into())
    );
    // ...judged by method and path: an upload is no cacheable operation.
    assert_eq!(
        send(&gw, "/openai/v1/files", &[], big.clone()).await,
        (413, "BYPASS".into(), "request_too_large".into())
    );
    // 400: a malformed cache control makes the request no cache candidate.
    assert_eq!(
        send(&gw, path, &[("x-promptgate-ttl", "soon")], chat("a")).await,
        (400, "BYPASS".into(), "bad_request".into())
    );
    // 502, 504: upstream failures.
    let dead = send(&gw, "/dead/v1/chat/completions", &[], chat("b")).await;
    assert_eq!(dead, (502, "MISS".into(), "upstream_unreachable".into()));
    assert!(gw.wait_for_log("status=502").await);
    assert!(
        gw.logs()
            .contains("status=502 route=dead upstream=- cache=MISS"),
        "{}",
        gw.logs()
    );
    let slow = [("x-mock-delay-ms", "2000")];
    assert_eq!(
        send(&gw, "/slow/v1/chat/completions", &slow, chat("c")).await,
        (504, "MISS".into(), "upstream_timeout".into())
    );
    assert_eq!(
        send(
            &gw,
            "/slow/v1/chat/completions",
            &[("cache-control", "no-cache"), slow[0]],
            chat("c")
        )
        .await,
        (504, "BYPASS".into(), "upstream_timeout".into())
    );
    // 429: the rate limit checked before the lookup (count_hits) still says MISS.
    let limited = "/limited/v1/chat/completions";
    assert_eq!(send(&gw, limited, &[], chat("d")).await.0, 200);
    assert_eq!(
        send(&gw, limited, &[], chat("e")).await,
        (429, "MISS".into(), "rate_limit_exceeded".into())
    );
    // 503: the upstream's one slot is taken.
    let narrow = "/narrow/v1/chat/completions";
    let holder = {
        let url = gw.url(narrow);
        tokio::spawn(async move {
            client()
                .post(url)
                .header("x-mock-delay-ms", "1500")
                .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hold"}]}))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    while !mock
        .requests()
        .iter()
        .any(|r| r.header("x-mock-delay-ms") == Some("1500"))
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        send(&gw, narrow, &[], chat("f")).await,
        (503, "MISS".into(), "upstream_busy".into())
    );
    assert_eq!(holder.await.unwrap(), 200);

    // A method that is never cached, on a cached route: BYPASS, success or not.
    let deleted = client()
        .delete(gw.url("/openai/v1/files/file-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.headers()["x-promptgate-cache"], "BYPASS");
    let refused = client()
        .delete(gw.url("/dead/v1/files/file-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 502);
    assert_eq!(refused.headers()["x-promptgate-cache"], "BYPASS");

    // No route, or a route without cache: no header.
    assert_eq!(
        send(&gw, "/nowhere", &[], chat("g")).await,
        (404, "-".into(), "no_route".into())
    );
    assert_eq!(
        send(&gw, "/plain/v1/chat/completions", &[], big).await,
        (413, "-".into(), "request_too_large".into())
    );
    assert_eq!(
        send(&gw, "/plain/v1/chat/completions", &[], chat("h")).await,
        (502, "-".into(), "upstream_unreachable".into())
    );
}
