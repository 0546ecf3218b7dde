//! Only cacheable operations are cached: state reads and calls with side effects reach the
//! upstream every time, as `BYPASS` (a background job polled through promptgate finishes),
//! and a route's `cache.operations` widens or narrows the list.

use crate::support::{client, get_text, Config, Gateway, MockUpstream, Route};
use serde_json::{json, Value};

struct Reply {
    cache: String,
    json: Value,
}

async fn send(gw: &Gateway, method: &str, path: &str, body: Option<Value>) -> Reply {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client().request(method, gw.url(path));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    Reply {
        cache: resp
            .headers()
            .get("x-promptgate-cache")
            .map_or("-".into(), |v| v.to_str().unwrap().to_string()),
        json: resp.json().await.unwrap_or(Value::Null),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_job_polled_through_promptgate_completes() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    let job = json!({"model": "gpt-4o-mini", "input": "a long task", "background": true});
    let created = send(&gw, "POST", "/openai/v1/responses", Some(job.clone())).await;
    assert_eq!(
        created.cache, "BYPASS",
        "a background job is created, not cached"
    );
    assert_eq!(created.json["status"], "queued");
    let id = created.json["id"].as_str().unwrap().to_string();

    let mut statuses = Vec::new();
    for _ in 0..5 {
        let poll = send(&gw, "GET", &format!("/openai/v1/responses/{id}"), None).await;
        assert_eq!(poll.cache, "BYPASS");
        let status = poll.json["status"].as_str().unwrap().to_string();
        statuses.push(status.clone());
        if status == "completed" {
            let text = poll.json["output"][0]["content"][0]["text"]
                .as_str()
                .unwrap();
            assert!(text.starts_with("Hello from mock"), "{text}");
            break;
        }
    }
    assert_eq!(statuses, ["in_progress", "completed"]);
    assert_eq!(mock.hits(), 3, "the creation and every poll went upstream");

    // The same background request again is a new job.
    let again = send(&gw, "POST", "/openai/v1/responses", Some(job)).await;
    assert_ne!(again.json["id"], created.json["id"]);
    // Not a cache lookup: nothing counted as one.
    let metrics = get_text(&gw.admin_url("/metrics")).await;
    assert!(
        !metrics.contains(r#"promptgate_cache_lookups_total{result="bypass",route="openai"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_reads_and_model_loads_always_reach_the_upstream() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    let load = json!({"model": "llama3.2", "prompt": ""});
    let unload = json!({"model": "llama3.2", "prompt": "hi", "keep_alive": 0});
    let calls: [(&str, &str, Option<Value>); 5] = [
        ("GET", "/openai/v1/models", None),
        ("GET", "/ollama/api/tags", None),
        ("GET", "/gemini/v1beta/models", None),
        ("POST", "/ollama/api/generate", Some(load)),
        ("POST", "/ollama/api/generate", Some(unload)),
    ];
    for (method, path, body) in calls {
        let before = mock.hits();
        for _ in 0..2 {
            let r = send(&gw, method, path, body.clone()).await;
            assert_eq!(r.cache, "BYPASS", "{method} {path} {body:?}");
        }
        assert_eq!(
            mock.hits() - before,
            2,
            "{method} {path}: both went upstream"
        );
    }
    // A generation with a prompt is cached.
    let gen = json!({"model": "llama3.2", "prompt": "hi", "stream": false});
    let first = send(&gw, "POST", "/ollama/api/generate", Some(gen.clone())).await;
    let second = send(&gw, "POST", "/ollama/api/generate", Some(gen)).await;
    assert_eq!(
        (first.cache.as_str(), second.cache.as_str()),
        ("MISS", "HIT")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_widens_or_narrows_its_cacheable_operations() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(
        Config::new()
            .upstream("mock", &mock.url())
            .route(
                Route::prefixed("custom")
                    .targets("[mock]")
                    .with(r#"cache: { operations: ["POST /v1/rerank", "GET /v1/models"] }"#),
            )
            .route(
                Route::prefixed("narrow")
                    .targets("[mock]")
                    .with("cache: { operations: [anthropic] }"),
            ),
    );
    let rerank = json!({"query": "q", "documents": ["a", "b"]});
    let chat = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let cases: [(&str, &str, Option<Value>, [&str; 2]); 4] = [
        ("POST", "/custom/v1/rerank", Some(rerank), ["MISS", "HIT"]),
        ("GET", "/custom/v1/models", None, ["MISS", "HIT"]),
        (
            "POST",
            "/custom/v1/chat/completions",
            Some(chat.clone()),
            ["BYPASS", "BYPASS"],
        ),
        (
            "POST",
            "/narrow/v1/chat/completions",
            Some(chat),
            ["BYPASS", "BYPASS"],
        ),
    ];
    for (method, path, body, expected) in cases {
        let first = send(&gw, method, path, body.clone()).await.cache;
        let second = send(&gw, method, path, body).await.cache;
        assert_eq!(
            [first.as_str(), second.as_str()],
            expected,
            "{method} {path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_operation_entry_is_a_config_error_at_its_line() {
    let mock = MockUpstream::start().await;
    let config = Config::providers(&mock.url())
        .section(r#"cache: { operations: [default, "post /v1/rerank", openia] }"#)
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(crate::support::gateway::binary())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("bad.yaml:1: cache.operations[1]"), "{text}");
    assert!(text.contains("bad.yaml:1: cache.operations[2]"), "{text}");
    assert!(text.contains("preset"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_as_json_that_does_not_parse_is_never_stored() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    // Cut short, a scalar, and a typo: forwarded untouched each time, never a cache entry
    // (a self-hosted server may answer such a body with a 200 promptgate cannot judge).
    for body in [
        &br#"{"model":"gpt-4o-mini","messages":["#[..],
        br#""just a string""#,
        br#"{"model": "gpt-4o-mini",, "messages": []}"#,
    ] {
        for round in 0..2 {
            let resp = client()
                .post(gw.url("/openai/v1/chat/completions"))
                .header("content-type", "application/json; charset=utf-8")
                .body(body.to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(
                resp.headers()["x-promptgate-cache"],
                "BYPASS",
                "{} (round {round})",
                String::from_utf8_lossy(body)
            );
        }
    }
    assert_eq!(mock.hits(), 6, "every one reached the upstream");
    // Sent without a content type, such a body is keyed as raw bytes (and cached); the key
    // memo then knows those bytes, and that they do not parse. Declared JSON by a content type
    // the key reads as absent (not UTF-8), the same bytes are still a BYPASS, never the raw
    // bytes' entry (the mock upstream drops the connection on that header: the answer is a
    // 502, which still says BYPASS).
    let cut = &br#"{"model":"gpt-4o-mini","messages":[1"#[..];
    let untyped = |_| async {
        let resp = client()
            .post(gw.url("/openai/v1/chat/completions"))
            .body(cut.to_vec())
            .send()
            .await
            .unwrap();
        resp.headers()["x-promptgate-cache"].clone()
    };
    assert_eq!(untyped(0).await, "MISS");
    assert_eq!(untyped(1).await, "HIT");
    for round in 0..2 {
        let resp = client()
            .post(gw.url("/openai/v1/chat/completions"))
            .header(
                "content-type",
                reqwest::header::HeaderValue::from_bytes(b"application/json; x=\xff").unwrap(),
            )
            .body(cut.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.headers()["x-promptgate-cache"],
            "BYPASS",
            "round {round}"
        );
    }
    // The same bytes as well-formed JSON are cached as usual.
    let ok = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let first = send(&gw, "POST", "/openai/v1/chat/completions", Some(ok.clone())).await;
    let again = send(&gw, "POST", "/openai/v1/chat/completions", Some(ok)).await;
    assert_eq!(
        (first.cache.as_str(), again.cache.as_str()),
        ("MISS", "HIT")
    );
}
