//! Rate limits and budgets (`routes[].rate_limit`): 429s with OpenAI's headers, hits that do
//! not count, budgets charged after the answer, counters shared through a real Redis and kept
//! across reloads, and failing open when Redis is gone.

use crate::support::redis::{RedisCluster, RedisServer};
use crate::support::{client, get_json, metric, Config, Gateway, MockUpstream, Route};
use promptgate::cache::redis::RedisStore;
use promptgate::config::schema::RedisSpec;
use promptgate::config::secret::Secret;
use promptgate::limits::gcra::{self, Op, Params, State};
use promptgate::limits::redis as limit_redis;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const CHAT: &str = "/openai/v1/chat/completions";

struct Reply {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }
}

async fn ask(gw: &Gateway, key: &str, prompt: &str) -> Reply {
    let resp = client()
        .post(gw.url(CHAT))
        .header("authorization", format!("Bearer {key}"))
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}))
        .send()
        .await
        .unwrap();
    Reply {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.text().await.unwrap(),
    }
}

/// The openai route over `mock` with `rate_limit` given as YAML flow-style fields.
fn limited(mock: &MockUpstream, rate_limit: &str) -> Config {
    Config::new().upstream("mock", &mock.url()).route(
        Route::prefixed("openai")
            .targets("[mock]")
            .with("retry: { attempts: 1 }")
            .with(&format!("rate_limit: {{ {rate_limit} }}")),
    )
}

/// Waits (bounded) until `GET /limits` satisfies `done`; returns the last answer.
async fn wait_for_limits(gw: &Gateway, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = get_json(&gw.admin_url("/limits")).await;
        if done(&v) || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_per_minute_refuses_the_seventh_and_eighth_of_one_credential_only() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(limited(&mock, "requests_per_minute: 6"));
    for i in 0..6 {
        let r = ask(&gw, "sk-alice", &format!("q{i}")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-ratelimit-limit-requests"), Some("6"));
        // Ours replace the upstream's own (the mock says 99).
        let remaining = (5 - i).to_string();
        assert_eq!(
            r.header("x-ratelimit-remaining-requests"),
            Some(remaining.as_str())
        );
        assert!(r
            .header("x-ratelimit-reset-requests")
            .unwrap()
            .ends_with('s'));
        assert!(r.header("retry-after").is_none());
    }
    for i in 6..8 {
        let r = ask(&gw, "sk-alice", &format!("q{i}")).await;
        assert_eq!(r.status, 429, "request {}: {}", i + 1, r.body);
        let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((9..=10).contains(&wait), "retry-after {wait}");
        let wait_ms: u64 = r.header("retry-after-ms").unwrap().parse().unwrap();
        assert!(wait_ms <= wait * 1000 && wait_ms > (wait - 1) * 1000);
        assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("0"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        let body = r.json();
        assert_eq!(body["error"]["type"], "rate_limit_exceeded");
        assert_eq!(body["error"]["limit"], "requests_per_minute");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limit of 6"));
    }
    let bob = ask(&gw, "sk-bob", "q0").await;
    assert_eq!(bob.status, 200, "another credential is unaffected");
    assert_eq!(bob.header("x-ratelimit-remaining-requests"), Some("5"));
    assert_eq!(mock.hits(), 7, "refused requests never reach the upstream");

    let m = gw
        .metrics_until(
            r#"promptgate_requests_total{cache="miss",route="openai",status="429",upstream="none"}"#,
            2.0,
        )
        .await;
    assert_eq!(
        metric(
            &m,
            r#"promptgate_rate_limited_total{limit="requests_per_minute",route="openai"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &m,
            r#"promptgate_requests_total{cache="miss",route="openai",status="429",upstream="none"}"#
        ),
        Some(2.0),
        "{m}"
    );
    let limits = get_json(&gw.admin_url("/limits")).await;
    let route = &limits["routes"]["openai"];
    assert_eq!(limits["backend"], "memory");
    assert_eq!(route["limits"]["requests_per_minute"], 6.0);
    let buckets = route["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 2, "{limits}");
    let remaining: Vec<i64> = buckets
        .iter()
        .map(|b| b["requests"]["remaining"].as_i64().unwrap())
        .collect();
    assert!(remaining.contains(&0) && remaining.contains(&5), "{limits}");
    for b in buckets {
        assert_eq!(b["credential"].as_str().unwrap().len(), 64, "a hash");
    }
    let text = limits.to_string() + &m + &gw.logs();
    assert!(!text.contains("sk-alice") && !text.contains("sk-bob"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_hits_are_free_unless_count_hits() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(limited(&mock, "requests_per_minute: 2"));
    assert_eq!(ask(&gw, "sk-a", "same").await.status, 200);
    for _ in 0..10 {
        let r = ask(&gw, "sk-a", "same").await;
        assert_eq!(
            (r.status, r.header("x-promptgate-cache")),
            (200, Some("HIT"))
        );
        assert!(
            r.header("x-ratelimit-remaining-requests").is_none(),
            "a hit never reaches the limiter"
        );
    }
    assert_eq!(ask(&gw, "sk-a", "other").await.status, 200);
    assert_eq!(ask(&gw, "sk-a", "third").await.status, 429);
    assert_eq!(mock.hits(), 2);
    drop(gw);

    let gw = Gateway::start(limited(&mock, "requests_per_minute: 3, count_hits: true"));
    assert_eq!(ask(&gw, "sk-a", "same").await.status, 200);
    // Each hit carries its own request's limit headers (a hit's head is built once per entry:
    // the second must not repeat the first's).
    for remaining in ["1", "0"] {
        let hit = ask(&gw, "sk-a", "same").await;
        assert_eq!(hit.header("x-promptgate-cache"), Some("HIT"));
        assert_eq!(hit.headers.get_all("x-promptgate-cache").iter().count(), 1);
        assert_eq!(
            hit.header("x-ratelimit-remaining-requests"),
            Some(remaining)
        );
        assert_eq!(
            hit.headers
                .get_all("x-ratelimit-remaining-requests")
                .iter()
                .count(),
            1
        );
    }
    let refused = ask(&gw, "sk-a", "same").await;
    assert_eq!(refused.status, 429, "hits count with count_hits: true");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_usd_budget_stops_the_next_request_once_spent() {
    let mock = MockUpstream::start().await;
    // One dollar a token: the first answer (a dozen tokens or more) spends the 5-dollar budget.
    let cfg = limited(&mock, "usd_per_day: 5").section(
        "pricing:\n  \"gpt-4o-mini*\": { input_per_mtok: 1000000, output_per_mtok: 1000000 }",
    );
    let gw = Gateway::start(&cfg);
    let first = ask(&gw, "sk-a", "spend").await;
    assert_eq!(first.status, 200);
    assert!(first.header("x-ratelimit-limit-requests").is_none());
    // The charge follows the answer: wait until it is in.
    let limits = wait_for_limits(&gw, |v| {
        v["routes"]["openai"]["buckets"][0]["usd"]["spent"].as_f64() > Some(5.0)
    })
    .await;
    let usd = &limits["routes"]["openai"]["buckets"][0]["usd"];
    assert_eq!(usd["remaining"], 0.0, "{limits}");
    let next = ask(&gw, "sk-a", "more").await;
    assert_eq!(next.status, 429, "{}", next.body);
    assert_eq!(next.json()["error"]["limit"], "usd_per_day");
    let wait: u64 = next.header("retry-after").unwrap().parse().unwrap();
    let until_midnight = 86_400
        - std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            % 86_400;
    assert!(
        wait.abs_diff(until_midnight) <= 2,
        "{wait} vs {until_midnight}"
    );
    assert_eq!(ask(&gw, "sk-b", "other key").await.status, 200);
    assert_eq!(mock.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_per_minute_counts_the_answers_usage() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(limited(
        &mock,
        "key: route, tokens_per_minute: 20, requests_per_minute: 100",
    ));
    let first = ask(
        &gw,
        "sk-a",
        "a prompt long enough to use twenty tokens or more, surely",
    )
    .await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-ratelimit-limit-tokens"), Some("20"));
    assert_eq!(first.header("x-ratelimit-remaining-tokens"), Some("20"));
    wait_for_limits(&gw, |v| {
        v["routes"]["openai"]["buckets"][0]["tokens"]["remaining"] == 0
    })
    .await;
    // key: route — another credential shares the bucket.
    let next = ask(&gw, "sk-b", "x").await;
    assert_eq!(next.status, 429, "{}", next.body);
    assert_eq!(next.json()["error"]["limit"], "tokens_per_minute");
    assert_eq!(next.header("x-ratelimit-remaining-tokens"), Some("0"));
    let m = gw
        .metrics_until(
            r#"promptgate_rate_limit_remaining{limit="requests_per_minute",route="openai"}"#,
            99.0,
        )
        .await;
    assert_eq!(
        metric(
            &m,
            r#"promptgate_rate_limit_remaining{limit="requests_per_minute",route="openai"}"#
        ),
        Some(99.0),
        "{m}"
    );
    crate::metrics::promtool_check(&m);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_survive_a_reload() {
    let mock = MockUpstream::start().await;
    let cfg = limited(&mock, "requests_per_minute: 2");
    let gw = Gateway::start(&cfg);
    assert_eq!(ask(&gw, "sk-a", "1").await.status, 200);
    assert_eq!(ask(&gw, "sk-a", "2").await.status, 200);
    // Same limit, one more route: a real reload that must not reset the bucket.
    let reloaded = cfg
        .clone()
        .route(Route::prefixed("extra").targets("[mock]"))
        .to_string();
    gw.rewrite_config(&reloaded);
    let resp = client().post(gw.admin_url("/reload")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(ask(&gw, "sk-a", "3").await.status, 429);
    // A reload that raises the limit applies at once, on the same counters.
    gw.rewrite_config(&limited(&mock, "requests_per_minute: 600").to_string());
    client().post(gw.admin_url("/reload")).send().await.unwrap();
    let r = ask(&gw, "sk-a", "4").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-limit-requests"), Some("600"));
}

fn redis_config(mock: &MockUpstream, redis: &RedisServer, rate_limit: &str) -> Config {
    limited(mock, rate_limit).section(format!(
        "cache:\n  backend: redis\n  redis: {{ url: \"{}\", timeout: 1s, breaker: 300ms }}",
        redis.url()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_redis_share_a_limit_exactly() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let cfg = redis_config(&mock, &redis, "requests_per_minute: 6");
    let a = Gateway::start(&cfg);
    let b = Gateway::start(&cfg);
    let mut admitted = 0;
    for i in 0..12 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let r = ask(gw, "sk-shared", &format!("q{i}")).await;
        match r.status {
            200 => admitted += 1,
            429 => {}
            s => panic!("status {s}: {}", r.body),
        }
    }
    assert_eq!(admitted, 6, "six in total across both processes");
    assert_eq!(mock.hits(), 6);
    let keys = redis.keys("limits:*");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys[0].starts_with("limits:promptgate:v1:openai:"),
        "{keys:?}"
    );
    let ttl = redis.ttl(&keys[0]);
    assert!(
        (59..=61).contains(&ttl),
        "the key expires on its own: {ttl}"
    );
    let limits = get_json(&a.admin_url("/limits")).await;
    assert_eq!(limits["backend"], "redis");
    assert_eq!(
        limits["routes"]["openai"]["buckets"][0]["requests"]["remaining"], 0,
        "{limits}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_admits_and_counts_or_refuses_when_told() {
    let mock = MockUpstream::start().await;
    let mut redis = RedisServer::start();
    let cfg = redis_config(&mock, &redis, "requests_per_minute: 1").route(
        Route::prefixed("strict")
            .targets("[mock]")
            .with("rate_limit: { requests_per_minute: 1, on_store_error: deny }"),
    );
    let gw = Gateway::start(&cfg);
    assert_eq!(ask(&gw, "sk-a", "up").await.status, 200);
    assert_eq!(ask(&gw, "sk-a", "up again").await.status, 429);
    redis.stop();
    for i in 0..3 {
        let r = ask(&gw, "sk-a", &format!("down {i}")).await;
        assert_eq!(r.status, 200, "fail open: {}", r.body);
        // No count to report: the upstream's own header (the mock's 99) passes through.
        assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("99"));
    }
    let strict = client()
        .post(gw.url("/strict/v1/chat/completions"))
        .json(&json!({"model": "gpt-4o-mini", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(strict.status(), 503);
    assert_eq!(strict.headers()["retry-after"], "1");
    let body: Value = strict.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_unavailable");
    gw.metrics_after(
        r#"promptgate_rate_limit_store_errors_total{decision="admitted",route="openai"} 3"#,
    )
    .await;
    let m = gw
        .metrics_after(
            r#"promptgate_rate_limit_store_errors_total{decision="refused",route="strict"} 1"#,
        )
        .await;
    assert_eq!(
        metric(
            &m,
            r#"promptgate_rate_limit_store_errors_total{decision="admitted",route="openai"}"#
        ),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            r#"promptgate_rate_limit_store_errors_total{decision="refused",route="strict"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_works_on_redis_cluster() {
    let mock = MockUpstream::start().await;
    let cluster = RedisCluster::start();
    let urls: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let cfg = limited(&mock, "requests_per_minute: 3").section(format!(
        "cache:\n  backend: redis\n  redis: {{ cluster: [{}], timeout: 1s }}",
        urls.join(", ")
    ));
    let gw = Gateway::start(&cfg);
    // Credentials whose buckets land on different masters (keys spread by slot).
    for key in ["sk-1", "sk-2", "sk-3", "sk-4", "sk-5"] {
        let prompts: Vec<String> = (0..4).map(|i| format!("{key} {i}")).collect();
        let statuses: Vec<u16> =
            futures_util::future::join_all(prompts.iter().map(|p| ask(&gw, key, p)))
                .await
                .iter()
                .map(|r| r.status)
                .collect();
        let mut sorted = statuses.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            [200, 200, 200, 429],
            "{key}: {statuses:?}\n{}",
            gw.logs()
        );
    }
    assert_eq!(cluster.keys("limits:*").len(), 5);
    assert!(
        cluster.sizes().iter().filter(|&&n| n > 0).count() >= 2,
        "buckets spread over masters"
    );
}

/// The Lua script and the in-memory arithmetic agree exactly, step by step, on a real Redis
/// (time given explicitly to both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_script_computes_what_memory_does() {
    let redis = RedisServer::start();
    let store = RedisStore::new(&RedisSpec {
        url: Secret::new(redis.url()),
        timeout: Duration::from_secs(2),
        ..RedisSpec::default()
    })
    .unwrap();
    let params = [
        Params {
            rpm: 7,
            tpm: 1_000,
            budget_nano_usd: 5_000,
        },
        Params {
            rpm: 600,
            tpm: 0,
            budget_nano_usd: 0,
        },
        Params {
            rpm: 0,
            tpm: 33,
            budget_nano_usd: 1,
        },
    ];
    let mut rng = fastrand::Rng::with_seed(19);
    // Just before a UTC midnight, so the day changes on the way.
    let mut now = 1_750_032_000_000_000 - 30_000_000;
    for (i, first) in params.iter().enumerate() {
        let key = format!("limits:test:{i}");
        let mut state = State::default();
        let mut p = first;
        for step in 0..400 {
            now += rng.i64(0..400_000);
            // Now and then a reload changes the limits under the same counters.
            if rng.u8(0..40) == 0 {
                p = &params[rng.usize(0..params.len())];
            }
            let op = match rng.u8(0..4) {
                0 => Op::Peek,
                1 => Op::Charge {
                    tokens: rng.u64(0..300),
                    nano_usd: rng.u64(0..2_000),
                },
                _ => Op::Check,
            };
            // As the memory store does: keep the state only when it changed.
            let mut next = state;
            let (memory, changed) = gcra::apply(&mut next, p, op, now);
            if changed {
                state = next;
            }
            let shared = limit_redis::apply(&store, &key, p, op, Some(now), true)
                .await
                .unwrap();
            assert_eq!(memory, shared, "params {p:?}, step {step}, {op:?}");
        }
    }
}
