//! HTTP caching semantics the upstream asks for: `Vary` (each variant stored and served on its
//! own, `Vary: *` never stored) and `Cache-Control: no-store` / `private` (never stored).

use crate::support::redis::RedisServer;
use crate::support::{client, Config, Gateway, MockUpstream, Route};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHAT: &str = "/openai/v1/chat/completions";

struct Reply {
    cache: String,
    allow_origin: Option<String>,
    body: String,
}

async fn post(gw: &Gateway, prompt: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = client()
        .post(gw.url(CHAT))
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
    };
    Reply {
        cache: header("x-promptgate-cache").unwrap_or_default(),
        allow_origin: header("access-control-allow-origin"),
        body: resp.text().await.unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_origin_gets_its_own_answer_from_an_upstream_that_varies_on_it() {
    // `origin` is in the default `cache.vary`, so the key alone would keep origins apart:
    // with `vary: []` only the upstream's `Vary: Origin` does.
    for vary in [None, Some("cache: { vary: [] }")] {
        let mock = MockUpstream::start().await;
        let config = Config::providers(&mock.url());
        let gw = Gateway::start(match vary {
            Some(section) => config.section(section),
            None => config,
        });
        origins_get_their_own_answers(&gw, &mock).await;
    }
}

async fn origins_get_their_own_answers(gw: &Gateway, mock: &MockUpstream) {
    let a = [("origin", "https://a.example")];
    let b = [("origin", "https://b.example")];

    let first_a = post(gw, "cors", &a).await;
    assert_eq!(first_a.cache, "MISS");
    assert_eq!(first_a.allow_origin.as_deref(), Some("https://a.example"));
    // Another origin is another variant: its own upstream call, its own header.
    let first_b = post(gw, "cors", &b).await;
    assert_eq!(first_b.cache, "MISS", "a's answer was served to b");
    assert_eq!(first_b.allow_origin.as_deref(), Some("https://b.example"));
    // No Origin at all is a variant too.
    let none = post(gw, "cors", &[]).await;
    assert_eq!((none.cache.as_str(), none.allow_origin), ("MISS", None));
    assert_eq!(mock.hits(), 3);

    // Both variants are kept side by side: each origin now hits its own.
    let again_a = post(gw, "cors", &a).await;
    let again_b = post(gw, "cors", &b).await;
    assert_eq!(
        (again_a.cache.as_str(), again_b.cache.as_str()),
        ("HIT", "HIT")
    );
    assert_eq!(again_a.allow_origin.as_deref(), Some("https://a.example"));
    assert_eq!(again_b.allow_origin.as_deref(), Some("https://b.example"));
    assert_eq!((again_a.body, again_b.body), (first_a.body, first_b.body));
    assert_eq!(mock.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variants_stored_in_redis_are_served_per_origin_by_another_process() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    // No memory layer and no `origin` in the key: only the variants marker and the variant
    // entries read back from Redis keep the origins apart.
    let config = Config::new()
        .section(format!(
            "cache:\n  vary: []\n  backend: redis\n  redis: {{ url: \"{}\", timeout: 1s, l1: false }}",
            redis.url()
        ))
        .upstream("mock", &mock.url())
        .route(Route::prefixed("openai").targets("[mock]"));
    let a = [("origin", "https://a.example")];
    let b = [("origin", "https://b.example")];
    let gw = Gateway::start(&config);
    let first_a = post(&gw, "shared", &a).await;
    let first_b = post(&gw, "shared", &b).await;
    assert_eq!(
        (first_a.cache.as_str(), first_b.cache.as_str()),
        ("MISS", "MISS")
    );
    // The marker and the two variants; the Redis writes happen in the background.
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis.keys("promptgate:*").len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(redis.keys("promptgate:*").len(), 3, "log:\n{}", gw.logs());
    drop(gw);

    let gw = Gateway::start(&config);
    let again_b = post(&gw, "shared", &b).await;
    let again_a = post(&gw, "shared", &a).await;
    assert_eq!(
        (again_a.cache.as_str(), again_b.cache.as_str()),
        ("HIT", "HIT")
    );
    assert_eq!(again_a.allow_origin.as_deref(), Some("https://a.example"));
    assert_eq!(again_b.allow_origin.as_deref(), Some("https://b.example"));
    assert_eq!((again_a.body, again_b.body), (first_a.body, first_b.body));
    let other = post(&gw, "shared", &[("origin", "https://c.example")]).await;
    assert_eq!(other.cache, "MISS");
    assert_eq!(other.allow_origin.as_deref(), Some("https://c.example"));
    assert_eq!(mock.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coalesced_request_from_another_origin_makes_its_own_call() {
    let mock = MockUpstream::start().await;
    // Without `origin` in the key (`vary: []`), both requests share one key and flight.
    let gw = Arc::new(Gateway::start(
        Config::providers(&mock.url()).section("cache: { vary: [] }"),
    ));
    let slow = ("x-mock-delay-ms", "300");
    let leader = {
        let gw = gw.clone();
        tokio::spawn(async move {
            post(&gw, "together", &[("origin", "https://a.example"), slow]).await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let follower = post(&gw, "together", &[("origin", "https://b.example"), slow]).await;
    let leader = leader.await.unwrap();
    assert_eq!(leader.allow_origin.as_deref(), Some("https://a.example"));
    assert_eq!(follower.allow_origin.as_deref(), Some("https://b.example"));
    assert_eq!(mock.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_star_no_store_and_private_answers_are_never_stored() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    let cases: [(&str, &[(&str, &str)]); 4] = [
        ("vary star", &[("x-mock-vary", "*")]),
        ("no-store", &[("x-mock-cache-control", "no-store")]),
        (
            "private",
            &[("x-mock-cache-control", "private, max-age=60")],
        ),
        ("accept-encoding", &[("x-mock-vary", "Accept-Encoding")]),
    ];
    for (prompt, headers) in cases {
        let before = mock.hits();
        assert_eq!(post(&gw, prompt, headers).await.cache, "MISS", "{prompt}");
        let second = post(&gw, prompt, headers).await.cache;
        if prompt == "accept-encoding" {
            // promptgate always asks the upstream for identity: that Vary cannot split answers.
            assert_eq!(second, "HIT", "{prompt}");
            assert_eq!(mock.hits() - before, 1, "{prompt}");
        } else {
            assert_eq!(second, "MISS", "{prompt}");
            assert_eq!(mock.hits() - before, 2, "{prompt}");
        }
    }
}
