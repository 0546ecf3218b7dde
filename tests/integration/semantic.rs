//! The semantic cache seen from outside: reworded questions hit, different contexts and
//! literals never do, the embedder is skipped on exact hits and fails open, streams replay
//! byte for byte, and two processes sharing a Redis share semantic entries.
//!
//! The embedder is a second mock upstream answering model `mock-bow`: a hashed bag of words,
//! so "What's the tempo of this loop?" and "what is the TEMPO of this loop" score 6/7 ≈ 0.857.

use crate::support::redis::RedisServer;
use crate::support::{client, free_port, metric, Config, Gateway, MockUpstream, Route};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const CHAT: &str = "/openai/v1/chat/completions";
const ASKED: &str = "What's the tempo of this loop?";
const REWORDED: &str = "what is the TEMPO of this loop";

fn chat(prompt: &str) -> Value {
    json!({"model": "gpt-4o-mini", "temperature": 0, "messages": [
        {"role": "system", "content": "You are a music production assistant."},
        {"role": "user", "content": prompt}]})
}

/// The usual setup: route `openai` → `mock`, semantic cache through upstream `embed`
/// (`embed_fields` in YAML flow style, e.g. injected headers), `semantic` extra fields, and
/// `sections` (e.g. a Redis cache).
fn config(mock: &str, embed: &str, embed_fields: &str, semantic: &str, sections: &str) -> Config {
    let more = if semantic.is_empty() {
        String::new()
    } else {
        format!(", {semantic}")
    };
    let mut config = Config::new()
        .upstream("mock", mock)
        .upstream_with("embed", embed, embed_fields)
        .route(Route::prefixed("openai").targets("[mock]").with(&format!(
            "cache: {{ semantic: {{ upstream: embed, model: mock-bow, threshold: 0.8, timeout: 500ms{more} }} }}"
        )));
    if !sections.is_empty() {
        config = config.section(sections);
    }
    config
}

struct Reply {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("-", |v| v.to_str().unwrap())
    }

    fn cache(&self) -> &str {
        self.header("x-promptgate-cache")
    }

    fn matched(&self) -> &str {
        self.header("x-promptgate-cache-match")
    }
}

async fn post(gw: &Gateway, headers: &[(&str, &str)], body: &Value) -> Reply {
    let mut req = client().post(gw.url(CHAT)).json(body);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let resp = req.send().await.unwrap();
    Reply {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.text().await.unwrap(),
    }
}

/// Embedding calls the embedder mock received.
fn embeds(embedder: &MockUpstream) -> usize {
    embedder
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/embeddings")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reworded_question_is_answered_from_the_cache() {
    let (mock, embedder) = (MockUpstream::start().await, MockUpstream::start().await);
    // The embedder upstream's injected key goes with every embedding call.
    let gw = Gateway::start(config(
        &mock.url(),
        &embedder.url(),
        "headers: { authorization: \"Bearer sk-embed\" }",
        "",
        "",
    ));
    let client_key = [("authorization", "Bearer sk-client")];
    let first = post(&gw, &client_key, &chat(ASKED)).await;
    assert_eq!((first.status, first.cache()), (200, "MISS"));
    let second = post(&gw, &client_key, &chat(REWORDED)).await;
    assert_eq!(
        (second.status, second.cache()),
        (200, "HIT"),
        "{}",
        gw.logs()
    );
    assert_eq!(second.matched(), "semantic");
    assert_eq!(second.header("x-promptgate-similarity"), "0.8571");
    assert_eq!(second.body, first.body, "the stored answer, byte for byte");
    assert_eq!(mock.hits(), 1, "one upstream call for both");
    assert_eq!(embeds(&embedder), 2);
    // The semantic hit became the reworded request's own exact entry: no embedding needed.
    let third = post(&gw, &client_key, &chat(REWORDED)).await;
    assert_eq!((third.cache(), third.matched()), ("HIT", "-"));
    assert_eq!(third.body, first.body);
    assert_eq!(embeds(&embedder), 2);
    // The embedder saw its own key and the compared text only: never the client's key.
    let calls = embedder.requests();
    let (a, b) = (&calls[0], &calls[1]);
    for call in [a, b] {
        assert_eq!(call.header("authorization"), Some("Bearer sk-embed"));
        assert!(
            !call.headers.iter().any(|(_, v)| v.contains("sk-client")),
            "{:?}",
            call.headers
        );
    }
    let sent: Value = serde_json::from_slice(&b.body).unwrap();
    assert_eq!(sent, json!({"model": "mock-bow", "input": REWORDED}));
    // An unrelated question of the same context: the nearest candidate is below the threshold.
    let other = post(
        &gw,
        &client_key,
        &chat("How do I export stems from Ableton?"),
    )
    .await;
    assert_eq!(other.cache(), "MISS");
    let text = gw
        .metrics_at_least(
            r#"promptgate_cache_lookups_total{result="semantic_hit",route="openai"}"#,
            1.0,
        )
        .await;
    gw.metrics_at_least(
        r#"promptgate_semantic_similarity_count{outcome="below_threshold",route="openai"}"#,
        1.0,
    )
    .await;
    for series in [
        r#"promptgate_semantic_similarity_count{outcome="served",route="openai"}"#,
        r#"promptgate_semantic_embed_duration_seconds_count{upstream="embed"}"#,
    ] {
        assert!(
            metric(&text, series).is_some_and(|v| v >= 1.0),
            "{series}:\n{text}"
        );
    }
    let stats: Value = client()
        .get(gw.admin_url("/cache/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["semantic_hits"], 1, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_without_semantic_settings_stays_exact() {
    let (mock, embedder) = (MockUpstream::start().await, MockUpstream::start().await);
    // The embedder upstream exists, but the route does not opt in.
    let gw = Gateway::start(
        Config::new()
            .upstream("mock", &mock.url())
            .upstream("embed", &embedder.url())
            .route(Route::prefixed("openai").targets("[mock]")),
    );
    assert_eq!(post(&gw, &[], &chat(ASKED)).await.cache(), "MISS");
    let reply = post(&gw, &[], &chat(REWORDED)).await;
    assert_eq!((reply.cache(), reply.matched()), ("MISS", "-"));
    assert_eq!(post(&gw, &[], &chat(ASKED)).await.cache(), "HIT");
    assert_eq!(
        embedder.requests().len(),
        0,
        "no embedding without cache.semantic"
    );
    assert_eq!(mock.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_semantic_hit_is_kept_only_as_long_as_the_request_allows() {
    let (mock, embedder) = (MockUpstream::start().await, MockUpstream::start().await);
    let gw = Gateway::start(config(&mock.url(), &embedder.url(), "", "", ""));
    post(&gw, &[], &chat(ASKED)).await;
    // `x-promptgate-ttl: 0` may read the cache but not store: the hit is served, not copied.
    let hit = post(&gw, &[("x-promptgate-ttl", "0")], &chat(REWORDED)).await;
    assert_eq!((hit.cache(), hit.matched()), ("HIT", "semantic"));
    let exact = [("x-promptgate-cache-match", "exact")];
    assert_eq!(post(&gw, &exact, &chat(REWORDED)).await.cache(), "MISS");
    assert_eq!(mock.hits(), 2);
    // `x-promptgate-ttl: 3`: the copy ends 3 s from now, however long the original lives.
    let other = "what's the tempo of this loop, please";
    let hit = post(&gw, &[("x-promptgate-ttl", "3")], &chat(other)).await;
    assert_eq!((hit.cache(), hit.matched()), ("HIT", "semantic"));
    assert_eq!(post(&gw, &exact, &chat(other)).await.cache(), "HIT");
    tokio::time::sleep(Duration::from_millis(4100)).await;
    assert_eq!(post(&gw, &exact, &chat(other)).await.cache(), "MISS");
    assert_eq!(mock.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exact_hit_never_calls_the_embedder() {
    let (mock, embedder) = (MockUpstream::start().await, MockUpstream::start().await);
    let gw = Gateway::start(config(&mock.url(), &embedder.url(), "", "", ""));
    assert_eq!(post(&gw, &[], &chat(ASKED)).await.cache(), "MISS");
    assert_eq!(
        embeds(&embedder),
        1,
        "the miss was embedded (to look up and to index)"
    );
    for _ in 0..3 {
        let hit = post(&gw, &[], &chat(ASKED)).await;
        assert_eq!((hit.cache(), hit.matched()), ("HIT", "-"));
    }
    assert_eq!(embeds(&embedder), 1, "exact hits skip the embedder");
    assert_eq!(mock.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_but_the_compared_text_may_differ() {
    let (mock, embedder) = (MockUpstream::start().await, MockUpstream::start().await);
    let gw = Gateway::start(config(&mock.url(), &embedder.url(), "", "", ""));
    let base = |prompt: &str| chat(prompt);
    let first = post(
        &gw,
        &[("authorization", "Bearer sk-a")],
        &base("Can you speed this loop up to 90 bpm?"),
    )
    .await;
    assert_eq!(first.cache(), "MISS");
    let reworded = "could you speed this loop up to 90 BPM";
    let mut other_system = base(reworded);
    other_system["messages"][0]["content"] = json!("You are a cooking assistant.");
    let mut other_model = base(reworded);
    other_model["model"] = json!("gpt-4o");
    let mut other_temperature = base(reworded);
    other_temperature["temperature"] = json!(0.7);
    let mut with_tools = base(reworded);
    with_tools["tools"] = json!([{"type": "function", "function": {"name": "set_tempo",
        "parameters": {"type": "object", "properties": {"bpm": {"type": "number"}}}}}]);
    let mut json_mode = base(reworded);
    json_mode["response_format"] = json!({"type": "json_object"});
    let mut earlier_turn = base(reworded);
    earlier_turn["messages"]
        .as_array_mut()
        .unwrap()
        .insert(1, json!({"role": "user", "content": "hello"}));
    let cases: [(&str, &str, Value); 8] = [
        ("credential", "Bearer sk-b", base(reworded)),
        ("system prompt", "Bearer sk-a", other_system),
        ("model", "Bearer sk-a", other_model),
        ("parameter", "Bearer sk-a", other_temperature),
        ("tools", "Bearer sk-a", with_tools),
        ("response_format", "Bearer sk-a", json_mode),
        ("earlier turn", "Bearer sk-a", earlier_turn),
        (
            "a differing number",
            "Bearer sk-a",
            // 8 of 9 words shared (cosine 0.889, over the threshold): the literal guard's case.
            base("Can you speed this loop up to 120 bpm?"),
        ),
    ];
    for (what, auth, body) in &cases {
        let reply = post(&gw, &[("authorization", auth)], body).await;
        assert_eq!((reply.status, reply.cache()), (200, "MISS"), "{what}");
    }
    // The control: the same rewording with everything else equal does hit.
    let same = post(&gw, &[("authorization", "Bearer sk-a")], &base(reworded)).await;
    assert_eq!(
        (same.cache(), same.matched()),
        ("HIT", "semantic"),
        "{}",
        gw.logs()
    );
    assert_eq!(same.body, first.body);
    assert_eq!(mock.hits(), 1 + cases.len());
    // The 120 bpm request was similar enough; the literal guard refused it.
    gw.metrics_at_least(
        r#"promptgate_semantic_similarity_count{outcome="guard_refused",route="openai"}"#,
        1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_replayed_byte_for_byte() {
    let (mock, embedder) = (MockUpstream::start().await, MockUpstream::start().await);
    let gw = Gateway::start(config(&mock.url(), &embedder.url(), "", "", ""));
    let streaming = |prompt: &str| {
        let mut body = chat(prompt);
        body["stream"] = json!(true);
        body
    };
    let first = post(&gw, &[], &streaming(ASKED)).await;
    assert_eq!(first.cache(), "MISS");
    assert!(first.body.contains("data: [DONE]"), "{}", first.body);
    // A non-streaming rewording is another context: not served the stream.
    assert_eq!(post(&gw, &[], &chat(REWORDED)).await.cache(), "MISS");
    let second = post(&gw, &[], &streaming(REWORDED)).await;
    assert_eq!((second.cache(), second.matched()), ("HIT", "semantic"));
    assert_eq!(second.header("content-type"), "text/event-stream");
    assert_eq!(second.body, first.body, "replayed byte for byte");
    assert_eq!(mock.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_answers_stored_whole_are_served_to_a_rewording() {
    let (mock, embedder) = (MockUpstream::start().await, MockUpstream::start().await);
    let gw = Gateway::start(config(&mock.url(), &embedder.url(), "", "", ""));
    for (i, outcome) in ["error", "partial", "refusal"].into_iter().enumerate() {
        // A context of its own per case (the temperature), streamed.
        let ask = |prompt: &str| {
            let mut body = chat(prompt);
            body["stream"] = json!(true);
            body["temperature"] = json!(i);
            body
        };
        let bad = post(&gw, &[("x-mock-outcome", outcome)], &ask(ASKED)).await;
        assert_eq!((bad.status, bad.cache()), (200, "MISS"), "{outcome}");
        // The rewording is looked up (embedded), finds nothing: the bad answer was not indexed.
        let before = embeds(&embedder);
        let reply = post(&gw, &[], &ask(REWORDED)).await;
        assert_eq!((reply.cache(), reply.matched()), ("MISS", "-"), "{outcome}");
        assert_eq!(embeds(&embedder), before + 1, "{outcome}");
        // The control: the rewording's whole answer does serve the first wording.
        let again = post(&gw, &[], &ask(ASKED)).await;
        assert_eq!(
            (again.cache(), again.matched()),
            ("HIT", "semantic"),
            "{outcome}"
        );
        assert_eq!(again.body, reply.body, "{outcome}");
    }
    assert_eq!(mock.hits(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exact_match_header_turns_the_semantic_lookup_off() {
    let (mock, embedder) = (MockUpstream::start().await, MockUpstream::start().await);
    let gw = Gateway::start(config(&mock.url(), &embedder.url(), "", "", ""));
    post(&gw, &[], &chat(ASKED)).await;
    let reply = post(
        &gw,
        &[("x-promptgate-cache-match", "exact")],
        &chat(REWORDED),
    )
    .await;
    assert_eq!(reply.cache(), "MISS");
    assert_eq!(
        embeds(&embedder),
        1,
        "no embedding for an exact-only request"
    );
    gw.metrics_at_least(
        r#"promptgate_semantic_skipped_total{reason="exact_only",route="openai"}"#,
        1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_counts_would_be_hits_without_serving_them() {
    let (mock, embedder) = (MockUpstream::start().await, MockUpstream::start().await);
    let gw = Gateway::start(config(&mock.url(), &embedder.url(), "", "shadow: true", ""));
    post(&gw, &[], &chat(ASKED)).await;
    let reply = post(&gw, &[], &chat(REWORDED)).await;
    assert_eq!(reply.cache(), "MISS");
    assert_eq!(mock.hits(), 2, "shadow mode never serves");
    let text = gw
        .metrics_at_least(
            r#"promptgate_semantic_shadow_hits_total{route="openai"}"#,
            1.0,
        )
        .await;
    assert_eq!(
        metric(
            &text,
            r#"promptgate_cache_lookups_total{result="semantic_hit",route="openai"}"#
        ),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_slow_or_garbled_embedder_fails_open_within_its_timeout() {
    let mock = MockUpstream::start().await;
    let embedder = MockUpstream::start().await;
    let (nothing, live) = (format!("http://127.0.0.1:{}", free_port()), embedder.url());
    let cases = [
        ("connect", nothing.as_str(), "", ""),
        (
            "timeout",
            live.as_str(),
            "headers: { x-mock-delay-ms: \"3000\" }",
            "",
        ),
        (
            "status",
            live.as_str(),
            "headers: { x-mock-status: \"500\" }",
            "",
        ),
        // Not an embeddings endpoint: the mock echoes the request as JSON.
        ("invalid", live.as_str(), "", "path: /v1/models"),
    ];
    for (reason, url, fields, semantic) in cases {
        let gw = Gateway::start(config(&mock.url(), url, fields, semantic, ""));
        for prompt in [ASKED, REWORDED] {
            let started = Instant::now();
            let reply = post(&gw, &[], &chat(prompt)).await;
            assert_eq!((reply.status, reply.cache()), (200, "MISS"), "{reason}");
            // The semantic timeout is 500 ms; the delayed embedder would take 3 s.
            assert!(
                started.elapsed() < Duration::from_millis(2000),
                "{reason}: {:?}",
                started.elapsed()
            );
        }
        gw.metrics_at_least(
            &format!(
                r#"promptgate_semantic_embed_errors_total{{reason="{reason}",upstream="embed"}}"#
            ),
            2.0,
        )
        .await;
        // One warning names the embedder and its address (each process warns once a minute).
        let logs = gw.logs();
        let warned = logs
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("embedder embed (127.0.0.1:"))
            .count();
        assert_eq!(warned, 1, "{reason}: {logs}");
        // Exact caching goes on.
        assert_eq!(
            post(&gw, &[], &chat(ASKED)).await.cache(),
            "HIT",
            "{reason}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_sharing_a_redis_share_semantic_entries() {
    let (mock, embedder) = (MockUpstream::start().await, MockUpstream::start().await);
    let mut redis = RedisServer::start();
    let section = format!(
        "cache:\n  backend: redis\n  redis: {{ url: \"{}\", timeout: 1s }}",
        redis.url()
    );
    let a = Gateway::start(config(&mock.url(), &embedder.url(), "", "", &section));
    let b = Gateway::start(config(&mock.url(), &embedder.url(), "", "", &section));
    assert_eq!(post(&a, &[], &chat(ASKED)).await.cache(), "MISS");
    // The entry and its vector reach Redis in the background.
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis.keys("promptgate:v1:openai:*").len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let keys = redis.keys("promptgate:v1:openai:*");
    assert_eq!(keys.len(), 2, "{keys:?}");
    let list = keys
        .iter()
        .find(|k| k.contains(":sem:"))
        .expect("a vector list");
    assert!(redis.ttl(list) > 0, "the vector list expires");
    let reply = post(&b, &[], &chat(REWORDED)).await;
    assert_eq!(
        (reply.cache(), reply.matched()),
        ("HIT", "semantic"),
        "{}",
        b.logs()
    );
    assert_eq!(mock.hits(), 1, "the other process's answer");
    // Redis gone: the semantic step fails open (counted as a store error), the request is
    // answered upstream.
    redis.stop();
    let reply = post(&b, &[], &chat("How do I export stems from Ableton?")).await;
    assert_eq!((reply.status, reply.cache()), (200, "MISS"), "{}", b.logs());
    assert_eq!(mock.hits(), 2);
    b.metrics_at_least(
        r#"promptgate_cache_store_errors_total{backend="redis"}"#,
        1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promptgate_key_shows_the_context_and_the_compared_text() {
    use crate::support::gateway::binary;
    use std::io::Write;
    use std::process::{Command, Stdio};
    let (mock, embedder) = (MockUpstream::start().await, MockUpstream::start().await);
    let redis = RedisServer::start();
    let section = format!(
        "cache:\n  backend: redis\n  redis: {{ url: \"{}\", timeout: 1s }}",
        redis.url()
    );
    let gw = Gateway::start(config(&mock.url(), &embedder.url(), "", "", &section));
    post(&gw, &[], &chat(ASKED)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let list = loop {
        let keys = redis.keys("promptgate:v1:openai:sem:*");
        if let Some(k) = keys.first() {
            break k.clone();
        }
        assert!(Instant::now() < deadline, "no vector list in Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let run = |body: &Value| {
        let mut child = Command::new(binary())
            .args(["key", "--config"])
            .arg(gw.config_path())
            .args(["--route", "openai", "--path", CHAT])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(body.to_string().as_bytes()).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let line = |text: &str, label: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label} in {text}"))
            .trim()
            .to_string()
    };
    // The reworded request has the stored one's context: the list key ends with it.
    let out = run(&chat(REWORDED));
    assert!(list.ends_with(&line(&out, "context:")), "{list}\n{out}");
    assert_eq!(line(&out, "compared:"), format!("{REWORDED:?}"));
    let out = run(&chat("Can you speed this loop up to 90 bpm in F# minor?"));
    assert_eq!(
        line(&out, "literals:"),
        r#"[note:"F# minor", number:"90 bpm"]"#
    );
    let mut image = chat(ASKED);
    image["messages"][1]["content"] = json!([{"type": "image_url", "image_url": {"url": "x"}}]);
    assert!(line(&run(&image), "semantic:").starts_with("not compared"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_never_share_semantic_entries() {
    let (mock, embedder) = (MockUpstream::start().await, MockUpstream::start().await);
    let semantic =
        "cache: { semantic: { upstream: embed, model: mock-bow, threshold: 0.8, timeout: 500ms } }";
    // Two routes to the same upstream with the same embedder; only the route differs.
    let gw = Gateway::start(
        Config::new()
            .upstream("mock", &mock.url())
            .upstream("embed", &embedder.url())
            .route(Route::prefixed("openai").targets("[mock]").with(semantic))
            .route(Route::prefixed("team").targets("[mock]").with(semantic)),
    );
    assert_eq!(post(&gw, &[], &chat(ASKED)).await.cache(), "MISS");
    let other_route = client()
        .post(gw.url("/team/v1/chat/completions"))
        .json(&chat(REWORDED))
        .send()
        .await
        .unwrap();
    assert_eq!(other_route.headers()["x-promptgate-cache"], "MISS");
    assert_eq!(embeds(&embedder), 2, "looked up, found nothing");
    // The control: the same rewording on the first route hits.
    let same_route = post(&gw, &[], &chat(REWORDED)).await;
    assert_eq!(
        (same_route.cache(), same_route.matched()),
        ("HIT", "semantic")
    );
    assert_eq!(mock.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_sharing_a_redis_cluster_share_semantic_entries() {
    use crate::support::redis::RedisCluster;
    let (mock, embedder) = (MockUpstream::start().await, MockUpstream::start().await);
    let cluster = RedisCluster::start();
    let urls: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let section = format!(
        "cache:\n  backend: redis\n  redis: {{ cluster: [{}], timeout: 1s }}",
        urls.join(", ")
    );
    let a = Gateway::start(config(&mock.url(), &embedder.url(), "", "", &section));
    let b = Gateway::start(config(&mock.url(), &embedder.url(), "", "", &section));
    // Several contexts (temperatures), so their lists spread over the cluster's nodes.
    let ask = |prompt: &str, i: usize| {
        let mut body = chat(prompt);
        body["temperature"] = json!(i);
        body
    };
    for i in 0..6 {
        assert_eq!(post(&a, &[], &ask(ASKED, i)).await.cache(), "MISS");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while cluster.keys("promptgate:v1:openai:sem:*").len() < 6 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cluster.keys("promptgate:v1:openai:sem:*").len(), 6);
    for i in 0..6 {
        let reply = post(&b, &[], &ask(REWORDED, i)).await;
        assert_eq!(
            (reply.cache(), reply.matched()),
            ("HIT", "semantic"),
            "context {i}: {}",
            b.logs()
        );
    }
    assert_eq!(mock.hits(), 6, "every answer came from the other process");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_semantic_hit_serves_only_the_variant_its_headers_select() {
    let (mock, embedder) = (MockUpstream::start().await, MockUpstream::start().await);
    // `vary: []`: origin is not in the key (nor the context), so only the upstream's
    // `Vary: Origin` keeps origins apart.
    let gw = Gateway::start(
        Config::new()
            .upstream("mock", &mock.url())
            .upstream("embed", &embedder.url())
            .route(Route::prefixed("openai").targets("[mock]").with(
                "cache: { vary: [], semantic: { upstream: embed, model: mock-bow, threshold: 0.8, timeout: 500ms } }",
            )),
    );
    let (a, b) = (
        [("origin", "https://a.example")],
        [("origin", "https://b.example")],
    );
    let first = post(&gw, &a, &chat(ASKED)).await;
    assert_eq!(first.cache(), "MISS");
    // Similar, same context, but another origin: a's variant is not b's answer.
    let other = post(&gw, &b, &chat(REWORDED)).await;
    assert_eq!((other.cache(), other.matched()), ("MISS", "-"));
    assert_eq!(
        other.header("access-control-allow-origin"),
        "https://b.example"
    );
    // The same origin is served a's answer, with a's header.
    let hit = post(&gw, &a, &chat(REWORDED)).await;
    assert_eq!(
        (hit.cache(), hit.matched()),
        ("HIT", "semantic"),
        "{}",
        gw.logs()
    );
    assert_eq!(
        hit.header("access-control-allow-origin"),
        "https://a.example"
    );
    assert_eq!(hit.body, first.body);
    assert_eq!(mock.hits(), 2);
    // The hit's copy is one more variant of the rewording: b's stays.
    let exact = |origin: [(&'static str, &'static str); 1]| {
        [origin[0], ("x-promptgate-cache-match", "exact")]
    };
    let again_a = post(&gw, &exact(a), &chat(REWORDED)).await;
    let again_b = post(&gw, &exact(b), &chat(REWORDED)).await;
    assert_eq!((again_a.cache(), again_b.cache()), ("HIT", "HIT"));
    assert_eq!(
        (
            again_a.header("access-control-allow-origin"),
            again_b.header("access-control-allow-origin")
        ),
        ("https://a.example", "https://b.example")
    );
    assert_eq!((again_a.body, again_b.body), (first.body, other.body));
    // `Vary: *`: never stored, so never indexed.
    let star = [("x-mock-vary", "*")];
    let q = "How do I export stems from Ableton?";
    assert_eq!(post(&gw, &star, &chat(q)).await.cache(), "MISS");
    let reply = post(&gw, &[], &chat("how do I export the stems from Ableton")).await;
    assert_eq!((reply.cache(), reply.matched()), ("MISS", "-"));
    assert_eq!(mock.hits(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_is_not_a_cacheable_operation_is_never_embedded() {
    let (mock, embedder) = (MockUpstream::start().await, MockUpstream::start().await);
    let gw = Gateway::start(config(&mock.url(), &embedder.url(), "", "", ""));
    // A background Responses job creates state: forwarded untouched, never compared.
    for input in [ASKED, REWORDED] {
        let resp = client()
            .post(gw.url("/openai/v1/responses"))
            .json(&json!({"model": "gpt-4o-mini", "background": true, "input": input}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["x-promptgate-cache"], "BYPASS");
    }
    assert_eq!(embeds(&embedder), 0);
    assert_eq!(mock.hits(), 2);
    // The control: a plain Responses call on the same route is compared.
    for input in [ASKED, REWORDED] {
        client()
            .post(gw.url("/openai/v1/responses"))
            .json(&json!({"model": "gpt-4o-mini", "input": input}))
            .send()
            .await
            .unwrap();
    }
    assert_eq!(embeds(&embedder), 2);
    assert_eq!(mock.hits(), 3, "the rewording was answered from the cache");
}

/// An embedding call costs money too: a client over its rate limit causes none. On a route
/// that counts only what costs (`count_hits: false`), the limit is asked before the embedding
/// call, so a semantic hit counts as a request; an exact hit stays free (no limiter, no call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_rate_limit_causes_no_embedding_call() {
    let (mock, embedder) = (MockUpstream::start().await, MockUpstream::start().await);
    let gw = Gateway::start(
        Config::new()
            .upstream("mock", &mock.url())
            .upstream_with("embed", &embedder.url(), "")
            .route(
                Route::prefixed("openai")
                    .targets("[mock]")
                    .with("cache: { semantic: { upstream: embed, model: mock-bow, threshold: 0.8, timeout: 500ms } }")
                    .with("rate_limit: { requests_per_minute: 2 }"),
            ),
    );
    let first = post(&gw, &[], &chat(ASKED)).await;
    assert_eq!((first.status, first.cache()), (200, "MISS"));
    let reworded = post(&gw, &[], &chat(REWORDED)).await;
    assert_eq!((reworded.status, reworded.matched()), (200, "semantic"));
    assert_eq!(reworded.header("x-ratelimit-remaining-requests"), "0");
    assert_eq!(embeds(&embedder), 2);
    // Over the limit: refused before the embedder is called.
    let other = post(&gw, &[], &chat("Which synth suits a warm bassline?")).await;
    assert_eq!(
        (other.status, other.cache()),
        (429, "MISS"),
        "{}",
        other.body
    );
    assert_eq!(
        embeds(&embedder),
        2,
        "no embedding call for a refused request"
    );
    assert_eq!(mock.hits(), 1);
    // An exact hit is still free.
    let exact = post(&gw, &[], &chat(ASKED)).await;
    assert_eq!(
        (exact.status, exact.cache(), exact.matched()),
        (200, "HIT", "-")
    );
    assert_eq!(embeds(&embedder), 2);
}
