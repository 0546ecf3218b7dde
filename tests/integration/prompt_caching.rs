//! Provider prompt caching: `prompt_caching: auto` adds Anthropic `cache_control` breakpoints
//! (and only there), the mock bills cache writes and reads as Anthropic does, and every
//! provider's cached tokens are counted and priced.

use crate::support::{client, get_json, metric, Config, Gateway, MockUpstream, Route};
use serde_json::{json, Value};

const MESSAGES: &str = "/anthropic/v1/messages";
const CHAT: &str = "/openai/v1/chat/completions";
const ANTHROPIC: &[(&str, &str)] = &[("anthropic-version", "2023-06-01")];

/// About `tokens` tokens of text (4 bytes a token).
fn text(tokens: usize) -> String {
    "The quick brown fox jumps over the lazy dog. ".repeat(tokens * 4 / 45 + 1)
}

/// An `anthropic` upstream (the mock, declared as Anthropic's API) behind `/anthropic` with
/// `prompt_caching: auto`, and the plain `/openai` route.
fn config(mock: &MockUpstream) -> Config {
    Config::new()
        .upstream_with("claude", &mock.url(), "provider: anthropic")
        .upstream("mock", &mock.url())
        .route(
            Route::prefixed("anthropic")
                .targets("[claude]")
                .with("retry: { attempts: 1 }")
                .with("prompt_caching: auto"),
        )
        .route(
            Route::prefixed("openai")
                .targets("[mock]")
                .with("retry: { attempts: 1 }"),
        )
}

/// Posts `body` and returns (status, `x-promptgate-cache`, the JSON answer or the stream text).
async fn post(
    gw: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    let mut req = client()
        .post(gw.url(path))
        .header("content-type", "application/json");
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let resp = req.body(body.to_vec()).send().await.unwrap();
    let status = resp.status().as_u16();
    let cache = resp
        .headers()
        .get("x-promptgate-cache")
        .map_or("-".to_string(), |v| v.to_str().unwrap().to_string());
    (status, cache, resp.text().await.unwrap())
}

fn question(system: &str, q: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "system": system,
        "messages": [{"role": "user", "content": q}],
    }))
    .unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_system_prompt_is_cached_by_the_provider_and_read_by_the_next_question() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(config(&mock));
    let system = text(1500);

    let (status, cache, first) = post(&gw, MESSAGES, ANTHROPIC, &question(&system, "First?")).await;
    assert_eq!((status, cache.as_str()), (200, "MISS"), "{first}");
    // Upstream, the string system became one text block with a breakpoint; nothing else moved.
    let sent: Value = serde_json::from_slice(&mock.last_request().unwrap().body).unwrap();
    assert_eq!(
        sent["system"],
        json!([{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}])
    );
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": "First?"}])
    );
    let first: Value = serde_json::from_str(&first).unwrap();
    let written = first["usage"]["cache_creation_input_tokens"]
        .as_u64()
        .unwrap();
    assert!(written >= 1024, "{first}");
    assert_eq!(first["usage"]["cache_read_input_tokens"], 0, "{first}");

    // Another question on the same system prompt: the provider reads the cached prefix.
    let (status, cache, second) =
        post(&gw, MESSAGES, ANTHROPIC, &question(&system, "Second?")).await;
    assert_eq!((status, cache.as_str()), (200, "MISS"));
    let second: Value = serde_json::from_str(&second).unwrap();
    assert_eq!(
        second["usage"]["cache_read_input_tokens"], written,
        "{second}"
    );
    assert_eq!(
        second["usage"]["cache_creation_input_tokens"], 0,
        "{second}"
    );
    let uncached: u64 = [&first, &second]
        .iter()
        .map(|a| a["usage"]["input_tokens"].as_u64().unwrap())
        .sum();
    let output: u64 = [&first, &second]
        .iter()
        .map(|a| a["usage"]["output_tokens"].as_u64().unwrap())
        .sum();

    let series = |kind: &str| {
        format!(
            r#"promptgate_tokens_total{{cache="miss",kind="{kind}",model="claude-sonnet-4",route="anthropic"}}"#
        )
    };
    let text = gw
        .metrics_until(&series("cache_read"), written as f64)
        .await;
    let m = |s: &str| metric(&text, s).unwrap_or_else(|| panic!("{s} missing:\n{text}"));
    assert_eq!(m(&series("cache_write")), written as f64);
    assert_eq!(m(&series("input")), uncached as f64);
    assert_eq!(m(&series("output")), output as f64);
    // claude-sonnet-4's shipped prices: $3 input, $0.30 cache read, $3.75 cache write, $15 output.
    let w = written as f64;
    let cost = (uncached as f64 * 3.0 + w * 0.30 + w * 3.75 + output as f64 * 15.0) / 1e6;
    let spent = m(r#"promptgate_cost_usd_total{model="claude-sonnet-4",route="anthropic"}"#);
    assert!(close(spent, cost), "{spent} vs {cost}");
    let saved =
        m(r#"promptgate_prompt_cache_saved_usd_total{model="claude-sonnet-4",route="anthropic"}"#);
    assert!(close(saved, w * (3.0 - 0.30) / 1e6), "{saved}");
    let premium = m(
        r#"promptgate_prompt_cache_write_premium_usd_total{model="claude-sonnet-4",route="anthropic"}"#,
    );
    assert!(close(premium, w * (3.75 - 3.0) / 1e6), "{premium}");
    assert_eq!(
        m(r#"promptgate_prompt_cache_breakpoints_total{route="anthropic"}"#),
        2.0
    );

    // Both savings in /cache/stats and GET /stats: the prompt cache's net of the write premium.
    let net = saved - premium;
    let stats = get_json(&gw.admin_url("/cache/stats")).await;
    assert!(
        close(stats["saved_usd"]["prompt_cache"].as_f64().unwrap(), net),
        "{stats}"
    );
    assert_eq!(stats["saved_usd"]["response_cache"], 0.0, "{stats}");
    assert!(close(
        stats["routes"]["anthropic"]["saved_usd"]["prompt_cache"]
            .as_f64()
            .unwrap(),
        net
    ));
    let snapshot = get_json(&gw.admin_url("/stats")).await;
    assert!(close(
        snapshot["cost_usd"]["saved_prompt_cache"].as_f64().unwrap(),
        net
    ));
    assert_eq!(snapshot["tokens"]["cache_read"]["paid"], written);
    assert_eq!(snapshot["tokens"]["cache_write"]["paid"], written);

    // The response cache still answers the client's exact repeat, from the client's own body.
    let (status, cache, _) = post(&gw, MESSAGES, ANTHROPIC, &question(&system, "Second?")).await;
    assert_eq!((status, cache.as_str()), (200, "HIT"));
    assert_eq!(mock.hits(), 2);
    let text = gw
        .metrics_until(
            r#"promptgate_cache_lookups_total{result="hit",route="anthropic"}"#,
            1.0,
        )
        .await;
    let hit_saved = metric(
        &text,
        r#"promptgate_cost_saved_usd_total{model="claude-sonnet-4",route="anthropic"}"#,
    )
    .unwrap();
    let second_cost = (second["usage"]["input_tokens"].as_u64().unwrap() as f64 * 3.0
        + w * 0.30
        + second["usage"]["output_tokens"].as_u64().unwrap() as f64 * 15.0)
        / 1e6;
    assert!(
        close(hit_saved, second_cost),
        "{hit_saved} vs {second_cost}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_reads_its_earlier_turns_and_streams_report_the_cache() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(config(&mock));
    let system = text(1200);
    let mut messages = vec![json!({"role": "user", "content": text(300)})];
    let mut reads = Vec::new();
    for turn in 0..3 {
        let body = serde_json::to_vec(&json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 64,
            "stream": true,
            "system": system,
            "messages": messages,
        }))
        .unwrap();
        let (status, _, stream) = post(&gw, MESSAGES, ANTHROPIC, &body).await;
        assert_eq!(status, 200, "{stream}");
        let start: Value = stream
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .find(|v: &Value| v["type"] == "message_start")
            .expect("message_start");
        reads.push(
            start["message"]["usage"]["cache_read_input_tokens"]
                .as_u64()
                .unwrap(),
        );
        let sent: Value = serde_json::from_slice(&mock.last_request().unwrap().body).unwrap();
        if turn > 0 {
            // The turn before the new question carries the conversation's breakpoint.
            let before = &sent["messages"][messages.len() - 2];
            assert_eq!(before["role"], "assistant");
            assert_eq!(
                before["content"][0]["cache_control"]["type"], "ephemeral",
                "{sent}"
            );
        }
        messages
            .push(json!({"role": "assistant", "content": format!("Answer {turn}. {}", text(100))}));
        messages.push(json!({"role": "user", "content": format!("Question {turn}?")}));
    }
    // Turn 1 writes the system; turn 2 reads it; turn 3 reads it and the earlier turns too.
    assert_eq!(reads[0], 0);
    assert!(reads[1] >= 1200, "{reads:?}");
    assert!(reads[2] > reads[1] + 300, "{reads:?}");
    let total: u64 = reads.iter().sum();
    gw.metrics_until(r#"promptgate_tokens_total{cache="miss",kind="cache_read",model="claude-sonnet-4",route="anthropic"}"#,
        total as f64,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_breakpoints_and_short_prompts_are_forwarded_byte_identical() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(config(&mock));
    let system = text(2000);
    // Odd spacing and key order: any re-serialization would show.
    let own = format!(
        r#"{{ "system" : [{{"type":"text","text":"{system}","cache_control":{{"type":"ephemeral","ttl":"1h"}}}}],
            "model":"claude-sonnet-4-5", "max_tokens" : 64,
            "messages":[{{"role":"user","content":"Q"}}] }}"#
    );
    let short = r#"{"model": "claude-sonnet-4-5", "max_tokens": 64,  "system": "Be brief.",
        "messages": [{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello"},{"role":"user","content":"Bye"}]}"#;
    for body in [own.as_bytes(), short.as_bytes()] {
        let (status, _, answer) = post(&gw, MESSAGES, ANTHROPIC, body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(&mock.last_request().unwrap().body[..], body);
    }
    // The mock billed the client's own breakpoint as a write; asked again (past the response
    // cache), the provider reads it.
    let bypass = [ANTHROPIC[0], ("x-promptgate-cache", "bypass")];
    let answer: Value =
        serde_json::from_str(&post(&gw, MESSAGES, &bypass, own.as_bytes()).await.2).unwrap();
    assert!(
        answer["usage"]["cache_read_input_tokens"].as_u64().unwrap() >= 1024,
        "{answer}"
    );
    let text = gw.metrics_until(r#"promptgate_requests_total{cache="miss",route="anthropic",status="200",upstream="claude"}"#,
        2.0,
    )
    .await;
    assert_eq!(
        metric(
            &text,
            r#"promptgate_prompt_cache_breakpoints_total{route="anthropic"}"#
        ),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_added_for_a_target_that_is_not_anthropic() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(
        Config::new()
            // Refuses connections: the route fails over to the next target.
            .upstream_with("claude", "http://127.0.0.1:1", "provider: anthropic")
            .upstream("compatible", &mock.url())
            .route(
                Route::prefixed("failover")
                    .targets("[claude, {upstream: compatible, model: claude-sonnet-4-5-compat}]")
                    .with("retry: { attempts: 1 }")
                    .with("prompt_caching: auto"),
            )
            .route(
                Route::prefixed("other")
                    .targets("[compatible]")
                    .with("prompt_caching: auto"),
            ),
    );
    let body = question(&text(3000), "Q?");
    let (status, _, answer) = post(&gw, "/failover/v1/messages", ANTHROPIC, &body).await;
    assert_eq!(status, 200, "{answer}");
    // Only the target's model rewrite: no cache_control, the system still a string.
    let mut expected: serde_json::Map<String, Value> = serde_json::from_slice(&body).unwrap();
    expected.insert("model".into(), json!("claude-sonnet-4-5-compat"));
    assert_eq!(
        mock.last_request().unwrap().body,
        serde_json::to_vec(&expected).unwrap()
    );
    // A route whose only target is not Anthropic's API: the body as the client sent it.
    let (status, _, _) = post(&gw, "/other/v1/messages", ANTHROPIC, &body).await;
    assert_eq!(status, 200);
    assert_eq!(mock.last_request().unwrap().body, body);
    assert_eq!(mock.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_cached_tokens_are_counted_and_priced() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(config(&mock));
    let long = text(2000);
    let chat = |q: &str| {
        serde_json::to_vec(&json!({
            "model": "gpt-4o-mini",
            "messages": [{"role": "system", "content": long}, {"role": "user", "content": q}],
        }))
        .unwrap()
    };
    let mut usage = Vec::new();
    for q in ["First?", "Second?"] {
        let (status, cache, answer) = post(&gw, CHAT, &[], &chat(q)).await;
        assert_eq!((status, cache.as_str()), (200, "MISS"), "{answer}");
        // Nothing is added for OpenAI: its caching is automatic.
        assert_eq!(mock.last_request().unwrap().body, chat(q));
        let answer: Value = serde_json::from_str(&answer).unwrap();
        usage.push(answer["usage"].clone());
    }
    assert_eq!(usage[0]["prompt_tokens_details"]["cached_tokens"], 0);
    let cached = usage[1]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(cached >= 1024, "{usage:?}");
    // prompt_tokens includes the cached tokens: counted once, as cache_read.
    let prompt: u64 = usage
        .iter()
        .map(|u| u["prompt_tokens"].as_u64().unwrap())
        .sum();
    let output: u64 = usage
        .iter()
        .map(|u| u["completion_tokens"].as_u64().unwrap())
        .sum();
    let series = |kind: &str| {
        format!(
            r#"promptgate_tokens_total{{cache="miss",kind="{kind}",model="gpt-4o-mini",route="openai"}}"#
        )
    };
    let text = gw.metrics_until(&series("cache_read"), cached as f64).await;
    let m = |s: &str| metric(&text, s).unwrap_or_else(|| panic!("{s} missing:\n{text}"));
    assert_eq!(m(&series("input")), (prompt - cached) as f64);
    assert_eq!(m(&series("cache_write")), 0.0);
    // gpt-4o-mini: $0.15 input, $0.075 cached input, $0.60 output.
    let cost =
        ((prompt - cached) as f64 * 0.15 + cached as f64 * 0.075 + output as f64 * 0.60) / 1e6;
    let spent = m(r#"promptgate_cost_usd_total{model="gpt-4o-mini",route="openai"}"#);
    assert!(close(spent, cost), "{spent} vs {cost}");
    let saved = m(r#"promptgate_prompt_cache_saved_usd_total{model="gpt-4o-mini",route="openai"}"#);
    assert!(close(saved, cached as f64 * 0.075 / 1e6), "{saved}");

    // The Responses API reports them as input_tokens_details.cached_tokens, inside input_tokens.
    let respond = |q: &str| {
        serde_json::to_vec(&json!({"model": "gpt-4o-mini", "instructions": long, "input": q}))
            .unwrap()
    };
    let mut read = 0;
    for q in ["Third?", "Fourth?"] {
        let (status, _, answer) = post(&gw, "/openai/v1/responses", &[], &respond(q)).await;
        assert_eq!(status, 200, "{answer}");
        let answer: Value = serde_json::from_str(&answer).unwrap();
        read = answer["usage"]["input_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap();
    }
    assert!(read >= 1024, "{read}");
    gw.metrics_until(&series("cache_read"), (cached + read) as f64)
        .await;
}
