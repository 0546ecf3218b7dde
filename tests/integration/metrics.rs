//! Metrics, admin endpoints, token and cost accounting, and the promise that no credential
//! ever shows up in logs, metrics or `/config`.

use crate::support::{client, get_json, get_text, metric, Config, Gateway, MockUpstream, Route};
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

const CHAT: &str = "/openai/v1/chat/completions";
const ADMIN_TOKEN: &str = "adm-TOKEN-9c1f";

/// Checks each line of `expected`, written as `/metrics` writes it (`name{labels} value`):
/// `text` has that exact series with exactly that value.
fn assert_metrics(text: &str, expected: &str) {
    let mut checked = 0;
    for line in expected.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let value: f64 = value.parse().expect("a number");
        assert_eq!(metric(text, series), Some(value), "{series}:\n{text}");
        checked += 1;
    }
    assert!(checked > 0, "no series in {expected:?}");
}

/// `promtool check metrics` on `text`: no errors, no lint warnings.
pub(crate) fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool not found: `bash scripts/install-deps.sh test` installs it (Debian package prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{text}"
    );
}

/// Every `promptgate_*` name the dashboard queries.
fn dashboard_metric_names() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/grafana/promptgate.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .expect("the dashboard is well-formed JSON");
    let mut exprs = Vec::new();
    fn collect(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr", Value::String(e)) => out.push(e.clone()),
                        _ => collect(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    collect(&dashboard, &mut exprs);
    assert!(exprs.len() >= 8, "{exprs:?}");
    let mut names: Vec<String> = exprs
        .iter()
        .flat_map(|e| {
            e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("promptgate_"))
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_mix_is_counted_exactly() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    // 3 misses, then 3 hits of each: 9 hits.
    let bodies: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            serde_json::to_vec(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": format!("prompt number {i}")}]}))
                .unwrap()
        })
        .collect();
    for body in &bodies {
        assert_eq!(gw.post_json(CHAT, &[], body).await, (200, "MISS".into()));
    }
    for _ in 0..3 {
        for body in &bodies {
            assert_eq!(gw.post_json(CHAT, &[], body).await, (200, "HIT".into()));
        }
    }
    assert_eq!(mock.hits(), 3);
    gw.metrics_until(
        r#"promptgate_requests_total{cache="hit",route="openai",status="200",upstream="none"}"#,
        9.0,
    )
    .await;
    // A request leaves the in-flight gauge just after it is counted: wait for that too.
    let text = gw.metrics_until("promptgate_inflight_requests", 0.0).await;
    assert_metrics(
        &text,
        r#"
        promptgate_requests_total{cache="miss",route="openai",status="200",upstream="mock"} 3
        promptgate_cache_lookups_total{result="hit",route="openai"} 9
        promptgate_cache_lookups_total{result="miss",route="openai"} 3
        promptgate_cache_lookups_total{result="error",route="openai"} 0
        promptgate_request_duration_seconds_count{cache="hit",route="openai"} 9
        promptgate_request_duration_seconds_count{cache="miss",route="openai"} 3
        promptgate_upstream_ttfb_seconds_count{upstream="mock"} 3
        promptgate_upstream_retries_total{route="openai"} 0
        promptgate_cache_entries 3
        promptgate_inflight_requests 0
        promptgate_cache_store_errors_total{backend="redis"} 0
        "#,
    );
    assert_metrics(
        &text,
        &format!(
            r#"promptgate_build_info{{version="{}"}} 1"#,
            env!("CARGO_PKG_VERSION")
        ),
    );
    let m = |series: &str| metric(&text, series).unwrap_or_else(|| panic!("{series}:\n{text}"));
    assert!(m(r#"promptgate_request_duration_seconds_sum{cache="miss",route="openai"}"#) > 0.0);
    assert!(m("promptgate_cache_bytes") > 0.0);

    // The mock reports prompt_tokens = body bytes / 4 and 4 completion tokens per answer.
    let input: u64 = bodies.iter().map(|b| (b.len() / 4).max(1) as u64).sum();
    let output = 3 * 4;
    for (cache, kind, want) in [
        ("miss", "input", input),
        ("miss", "output", output),
        ("hit", "input", 3 * input),
        ("hit", "output", 3 * output),
    ] {
        let series = format!(
            r#"promptgate_tokens_total{{cache="{cache}",kind="{kind}",model="gpt-4o-mini",route="openai"}}"#
        );
        assert_eq!(m(&series), want as f64, "{series}");
    }
    // gpt-4o-mini's shipped price: $0.15 / $0.60 per million tokens
    let cost = (input as f64 * 0.15 + output as f64 * 0.60) / 1e6;
    let spent = m(r#"promptgate_cost_usd_total{model="gpt-4o-mini",route="openai"}"#);
    let saved = m(r#"promptgate_cost_saved_usd_total{model="gpt-4o-mini",route="openai"}"#);
    assert!((spent - cost).abs() < 1e-12, "{spent} vs {cost}");
    assert!(
        (saved - 3.0 * cost).abs() < 1e-12,
        "{saved} vs {}",
        3.0 * cost
    );

    let stats = get_json(&gw.admin_url("/cache/stats")).await;
    assert_eq!(
        (stats["hits"].as_u64(), stats["misses"].as_u64()),
        (Some(9), Some(3))
    );
    assert_eq!(stats["hit_ratio"], 0.75);
    assert_eq!(stats["routes"]["openai"]["hit_ratio"], 0.75);
    assert_eq!(stats["memory"]["entries"], 3);
    assert_eq!(stats["redis"], Value::Null);

    promtool_check(&text);
    for name in dashboard_metric_names() {
        assert!(
            text.contains(&name),
            "the dashboard queries {name}, which /metrics lacks"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_answers_report_their_tokens() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    let body = serde_json::to_vec(&json!({"model": "claude-sonnet-4-0", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "stream please"}]})).unwrap();
    let headers = [("anthropic-version", "2023-06-01"), ("x-mock-events", "6")];
    assert_eq!(
        gw.post_json("/anthropic/v1/messages", &headers, &body)
            .await,
        (200, "MISS".into())
    );
    assert_eq!(
        gw.post_json("/anthropic/v1/messages", &headers, &body)
            .await,
        (200, "HIT".into())
    );
    let ollama = serde_json::to_vec(
        &json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .unwrap();
    assert_eq!(
        gw.post_json("/ollama/api/chat", &[], &ollama).await,
        (200, "MISS".into())
    );
    let text = gw.metrics_until(r#"promptgate_tokens_total{cache="hit",kind="output",model="claude-sonnet-4",route="anthropic"}"#,
        6.0,
    )
    .await;
    let m = |series: &str| metric(&text, series).unwrap_or_else(|| panic!("{series}:\n{text}"));
    let input = (body.len() / 4) as f64;
    for (kind, want) in [("input", input), ("output", 6.0)] {
        let series = format!(
            r#"promptgate_tokens_total{{cache="miss",kind="{kind}",model="claude-sonnet-4",route="anthropic"}}"#
        );
        assert_eq!(m(&series), want, "{series}");
    }
    let cost = (input * 3.0 + 6.0 * 15.0) / 1e6;
    assert!(
        (m(r#"promptgate_cost_saved_usd_total{model="claude-sonnet-4",route="anthropic"}"#) - cost)
            .abs()
            < 1e-12
    );
    let ollama_input = (ollama.len() / 4) as f64;
    let series =
        r#"promptgate_tokens_total{cache="miss",kind="input",model="llama",route="ollama"}"#;
    let text = gw.metrics_until(series, ollama_input).await;
    assert_metrics(
        &text,
        r#"promptgate_cost_usd_total{model="llama",route="ollama"} 0"#,
    );
}

/// Streamed Responses answers carry their usage in `response.completed`; an encoded body is
/// decoded to read it (the client still gets the encoded bytes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_streams_and_encoded_bodies_report_their_tokens() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    let responses =
        serde_json::to_vec(&json!({"model": "gpt-4o-mini", "stream": true, "input": "stream it"}))
            .unwrap();
    let events = [("x-mock-events", "5")];
    assert_eq!(
        gw.post_json("/openai/v1/responses", &events, &responses)
            .await,
        (200, "MISS".into())
    );
    let series = |kind: &str| {
        format!(
            r#"promptgate_tokens_total{{cache="miss",kind="{kind}",model="gpt-4o-mini",route="openai"}}"#
        )
    };
    let input = (responses.len() / 4) as f64;
    gw.metrics_until(&series("input"), input).await;
    gw.metrics_until(&series("output"), 5.0).await;

    let mut chats = 0.0;
    for encoding in ["gzip", "br"] {
        let body = serde_json::to_vec(
            &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": encoding}]}),
        )
        .unwrap();
        assert_eq!(
            gw.post_json(CHAT, &[("x-mock-encoding", encoding)], &body)
                .await,
            (200, "MISS".into())
        );
        chats += (body.len() / 4) as f64;
    }
    gw.metrics_until(&series("input"), input + chats).await;
    gw.metrics_until(&series("output"), 5.0 + 2.0 * 4.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_answer_and_mutations_need_the_token() {
    let mock = MockUpstream::start().await;
    let body = Config::providers(&mock.url()).section(r#"admin_token: "${PG_TEST_ADMIN_TOKEN}""#);
    let gw = Gateway::start_with_env(&body, &[("PG_TEST_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let get = |path: &str| client().get(gw.admin_url(path)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    let ready = get("/readyz").await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap()["status"], "ready");
    let config: Value = get("/config").await.unwrap().json().await.unwrap();
    assert_eq!(config["admin_token"], "*****");
    assert_eq!(config["routes"][0]["name"], "openai");
    assert_eq!(config["cache"]["backend"], "memory");

    let chat = serde_json::to_vec(
        &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "purge me"}]}),
    )
    .unwrap();
    assert_eq!(gw.post_json(CHAT, &[], &chat).await.1, "MISS");
    assert_eq!(gw.post_json(CHAT, &[], &chat).await.1, "HIT");

    let purge = |token: Option<&str>, body: Value| {
        let mut req = client().post(gw.admin_url("/cache/purge")).json(&body);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        req.send()
    };
    // An authorised purge: it is answered 200, with what it purged.
    let purged = |body: Value| {
        let sent = purge(Some(ADMIN_TOKEN), body);
        async move {
            let answer = sent.await.unwrap();
            assert_eq!(answer.status(), 200);
            answer.json::<Value>().await.unwrap()
        }
    };
    let denied = purge(None, json!({"route": "openai"})).await.unwrap();
    assert_eq!(denied.status(), 401);
    assert_eq!(denied.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        purge(Some("wrong"), json!({"route": "openai"}))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        gw.post_json(CHAT, &[], &chat).await.1,
        "HIT",
        "a refused purge purges nothing"
    );
    assert_eq!(
        purge(Some(ADMIN_TOKEN), json!({"nothing": 1}))
            .await
            .unwrap()
            .status(),
        400
    );
    // another route's purge leaves this entry alone
    let other = purged(json!({"route": "anthropic"})).await;
    assert_eq!(other["purged"]["memory"], 0);
    assert_eq!(other["route_configured"], true);
    // a name no route has (a typo, or a route since removed): purged all the same, and said so
    let unknown = purged(json!({"route": "opneai"})).await;
    assert_eq!(unknown["purged"]["memory"], 0);
    assert_eq!(unknown["route_configured"], false);
    assert!(gw.wait_for_log("no configured route has that name").await);
    let done = purged(json!({"route": "openai"})).await;
    assert_eq!(done["purged"]["memory"], 1);
    assert_eq!(done["route_configured"], true);
    assert_eq!(gw.post_json(CHAT, &[], &chat).await.1, "MISS", "purged");
    // by key prefix, as `promptgate key` prints keys: {prefix}:{route}:{hex}
    let by_prefix = purged(json!({"prefix": "promptgate:v1:openai:"})).await;
    assert_eq!(by_prefix["purged"]["memory"], 1);
    assert!(by_prefix.get("route_configured").is_none(), "{by_prefix}");
    assert_eq!(gw.post_json(CHAT, &[], &chat).await.1, "MISS");

    let reload = |token: Option<&str>| {
        let mut req = client().post(gw.admin_url("/reload"));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        req.send()
    };
    assert_eq!(reload(None).await.unwrap().status(), 401);
    assert_eq!(reload(Some(ADMIN_TOKEN)).await.unwrap().status(), 200);
    assert_eq!(get("/cache/stats").await.unwrap().status(), 200);
    assert_eq!(
        client()
            .post(gw.admin_url("/cache/stats"))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_requires_redis_when_configured() {
    let dead_port = crate::support::free_port();
    let gw = Gateway::start(Config::providers("http://127.0.0.1:9").section(format!(
        "cache:\n  backend: redis\n  require_redis: true\n  redis: {{url: \"redis://127.0.0.1:{dead_port}\", timeout: 100ms}}"
    )));
    let ready = client().get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["redis"], "down", "{body}");
    let stats = get_json(&gw.admin_url("/cache/stats")).await;
    assert!(stats["redis"]["state"].is_string(), "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_ever_appears_in_logs_metrics_or_config() {
    const UPSTREAM_KEY: &str = "sk-upstream-SECRET-1b2c";
    const CLIENT_KEY: &str = "sk-client-SECRET-3d4e";
    const ANTHROPIC_KEY: &str = "sk-ant-SECRET-5f6a";
    const GOOG_KEY: &str = "AIza-SECRET-7b8c";
    const QUERY_KEY: &str = "AIza-query-SECRET-9d0e";
    const REDIS_PASSWORD: &str = "redis-SECRET-pw";
    let mock = MockUpstream::start().await;
    let body = Config::new()
        .section(r#"admin_token: "${PG_TEST_ADMIN_TOKEN}""#)
        .section("log: {format: json}")
        .section(format!(
            r#"cache: {{ redis: {{url: "redis://:{REDIS_PASSWORD}@127.0.0.1:1"}} }}"#
        ))
        .upstream("mock", &mock.url())
        .upstream_with(
            "injected",
            &mock.url(),
            r#"headers: { authorization: "Bearer ${PG_TEST_UPSTREAM_KEY}" }"#,
        )
        .route(Route::prefixed("openai").targets("[mock]"))
        .route(Route::prefixed("injected").targets("[injected]"))
        .route(Route::prefixed("anthropic").targets("[mock]"))
        .route(Route::prefixed("gemini").targets("[mock]"));
    let gw = Gateway::start_with_env(
        &body,
        &[
            ("PG_TEST_ADMIN_TOKEN", ADMIN_TOKEN),
            ("PG_TEST_UPSTREAM_KEY", UPSTREAM_KEY),
        ],
    );
    // A client may put anything in `model`; it is priced as `other`, never a label.
    let chat = serde_json::to_vec(
        &json!({"model": CLIENT_KEY, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .unwrap();
    let bearer = format!("Bearer {CLIENT_KEY}");
    for _ in 0..2 {
        // a miss, then a hit
        gw.post_json(CHAT, &[("authorization", &bearer)], &chat)
            .await;
        gw.post_json("/injected/v1/chat/completions", &[], &chat)
            .await;
        gw.post_json(
            "/anthropic/v1/messages",
            &[
                ("x-api-key", ANTHROPIC_KEY),
                ("anthropic-version", "2023-06-01"),
            ],
            &chat,
        )
        .await;
        gw.post_json(
            &format!("/gemini/v1beta/models/gemini-2.0-flash:generateContent?key={QUERY_KEY}"),
            &[("x-goog-api-key", GOOG_KEY)],
            b"{}",
        )
        .await;
    }
    // errors: upstream 500, 429, no route, a malformed rewrite target
    let (status, _) = gw
        .post_json(
            CHAT,
            &[("authorization", &bearer), ("x-mock-status", "500")],
            b"{\"x\":1}",
        )
        .await;
    assert_eq!(status, 500);
    gw.post_json(
        CHAT,
        &[("authorization", &bearer), ("x-mock-status", "429")],
        b"{\"x\":2}",
    )
    .await;
    let (status, _) = gw
        .post_json(
            &format!("/nowhere?key={QUERY_KEY}"),
            &[("authorization", &bearer)],
            b"{}",
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = gw
        .post_json(
            CHAT,
            &[("authorization", &bearer), ("x-mock-fault", "reset")],
            b"{\"x\":3}",
        )
        .await;
    assert_eq!(status, 502);
    // admin, with wrong and right tokens
    client()
        .post(gw.admin_url("/reload"))
        .header("authorization", format!("Bearer {CLIENT_KEY}"))
        .send()
        .await
        .unwrap();
    client()
        .post(gw.admin_url("/reload"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();

    let metrics = gw
        .metrics_until(
            r#"promptgate_requests_total{cache="none",route="none",status="404",upstream="none"}"#,
            1.0,
        )
        .await;
    let config = get_text(&gw.admin_url("/config")).await;
    let stats = get_text(&gw.admin_url("/cache/stats")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let logs = gw.logs();
    for secret in [
        UPSTREAM_KEY,
        CLIENT_KEY,
        ANTHROPIC_KEY,
        GOOG_KEY,
        QUERY_KEY,
        REDIS_PASSWORD,
        ADMIN_TOKEN,
    ] {
        for (what, text) in [
            ("logs", &logs),
            ("metrics", &metrics),
            ("/config", &config),
            ("/cache/stats", &stats),
        ] {
            assert!(!text.contains(secret), "{secret} in {what}:\n{text}");
        }
    }
    // the access log is JSON, one object per line, with the structured fields
    let access: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "promptgate::access")
        .collect();
    assert!(access.len() >= 12, "{logs}");
    let hit = access
        .iter()
        .find(|v| v["cache"] == "HIT")
        .expect("a logged hit");
    for field in [
        "status",
        "route",
        "upstream",
        "duration_ms",
        "input_tokens",
        "output_tokens",
        "retries",
    ] {
        assert!(hit.get(field).is_some(), "{field} missing in {hit}");
    }
    assert!(
        access
            .iter()
            .all(|v| !v["msg"].as_str().unwrap().contains('?')),
        "query strings are never logged"
    );
}
