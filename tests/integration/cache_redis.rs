//! The response cache with `backend: redis`: entries outlive the proxy process, a dead or slow
//! Redis never fails a request (fail open), and caching resumes when Redis returns.

use crate::support::redis::{cli, RedisCluster, RedisServer};
use crate::support::{client, Config, Gateway, MockUpstream, Route};
use serde_json::json;
use std::time::{Duration, Instant};

/// A config whose cache is Redis. Lookups wait up to 1 s: a freshly started proxy's first lookup
/// also connects, and a loaded CI machine must not turn that into a miss.
fn config(upstream: &str, redis: &str, l1: bool) -> Config {
    Config::new()
        .section(format!(
            "cache:\n  backend: redis\n  redis: {{ {redis}, timeout: 1s, breaker: 300ms, l1: {l1} }}"
        ))
        .upstream("mock", upstream)
        .route(Route::prefixed("openai").targets("[mock]"))
}

async fn ask(gw: &Gateway, prompt: &str) -> (u16, String, String) {
    let resp = client()
        .post(gw.url("/openai/v1/chat/completions"))
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let cache = resp.headers()["x-promptgate-cache"]
        .to_str()
        .unwrap()
        .to_string();
    (status, cache, resp.text().await.unwrap())
}

/// Waits (bounded) until `redis` holds `n` promptgate keys.
fn wait_for_keys(keys: impl Fn() -> Vec<String>, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let k = keys();
        if k.len() >= n || Instant::now() > deadline {
            return k;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_outlive_the_proxy_process() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let cfg = config(&mock.url(), &format!("url: \"{}\"", redis.url()), false);
    let gw = Gateway::start(&cfg);
    let (status, cache, first) = ask(&gw, "hi").await;
    assert_eq!((status, cache.as_str()), (200, "MISS"));
    // The Redis write happens in the background: wait for it before stopping this process.
    let keys = wait_for_keys(|| redis.keys("promptgate:v1:*"), 1);
    assert_eq!(keys.len(), 1, "{keys:?}; log:\n{}", gw.logs());
    drop(gw);
    let key = &keys[0];
    assert!(
        key.starts_with("promptgate:v1:openai:") && key.len() == "promptgate:v1:openai:".len() + 64,
        "{key}"
    );
    let ttl = redis.ttl(key);
    assert!(
        ttl > 6 * 24 * 3600 && ttl <= 7 * 24 * 3600,
        "default TTL is 7 days, got {ttl}"
    );

    // A new process has an empty memory: the hit can only come from Redis.
    let gw = Gateway::start(&cfg);
    let (status, cache, body) = ask(&gw, "hi").await;
    assert_eq!((status, cache.as_str()), (200, "HIT"));
    assert_eq!(body, first);
    assert_eq!(mock.hits(), 1);
    drop(gw);

    // An entry written by a version from before provider verdicts (encoding PGE1) may hold an
    // error inside a 200: it is a miss, never served, and the next store replaces it.
    let out = cli(redis.port, &["setrange", key, "0", "PGE1"]);
    assert!(out.status.success(), "{out:?}");
    let gw = Gateway::start(&cfg);
    let (status, cache, _) = ask(&gw, "hi").await;
    assert_eq!(
        (status, cache.as_str()),
        (200, "MISS"),
        "log:\n{}",
        gw.logs()
    );
    assert_eq!(mock.hits(), 2);
    assert!(
        !gw.logs().contains("unreadable"),
        "an outdated entry is not an error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_open_and_caching_resumes_when_it_returns() {
    let mock = MockUpstream::start().await;
    let mut redis = RedisServer::start();
    let gw = Gateway::start(config(
        &mock.url(),
        &format!("url: \"{}\"", redis.url()),
        false,
    ));
    assert_eq!(ask(&gw, "before").await.1, "MISS");
    wait_for_keys(|| redis.keys("promptgate:*"), 1);

    redis.stop();
    for i in 0..20 {
        let started = Instant::now();
        let (status, _, _) = ask(&gw, &format!("while down {i}")).await;
        assert_eq!(status, 200, "request {i} failed with Redis down");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "request {i} took {:?}",
            started.elapsed()
        );
    }

    redis.restart();
    // After the breaker period, new responses are stored in Redis again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut i = 0;
    while redis.keys("promptgate:*").is_empty() {
        assert!(
            Instant::now() < deadline,
            "caching did not resume; log:\n{}",
            gw.logs()
        );
        i += 1;
        assert_eq!(ask(&gw, &format!("after {i}")).await.0, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_absent_from_the_start_never_fails_a_request() {
    let mock = MockUpstream::start().await;
    let port = crate::support::free_port();
    let gw = Gateway::start(config(
        &mock.url(),
        &format!("url: \"redis://127.0.0.1:{port}\""),
        true,
    ));
    for i in 0..5 {
        let (status, cache, _) = ask(&gw, &format!("q{i}")).await;
        assert_eq!((status, cache.as_str()), (200, "MISS"));
        // with L1, the in-memory copy still serves repeats
        assert_eq!(ask(&gw, &format!("q{i}")).await.1, "HIT");
    }
    assert_eq!(mock.hits(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_round_trip() {
    let mock = MockUpstream::start().await;
    let cluster = RedisCluster::start();
    let urls: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let cfg = config(
        &mock.url(),
        &format!("cluster: [{}]", urls.join(", ")),
        false,
    );
    let first = Gateway::start(&cfg);
    for i in 0..12 {
        assert_eq!(ask(&first, &format!("c{i}")).await.1, "MISS");
    }
    let keys = wait_for_keys(|| cluster.keys("promptgate:v1:*"), 12);
    assert_eq!(keys.len(), 12, "log:\n{}", first.logs());
    drop(first);
    assert!(
        cluster.sizes().iter().filter(|&&n| n > 0).count() >= 2,
        "keys spread over masters"
    );
    let gw = Gateway::start(&cfg);
    for i in 0..12 {
        assert_eq!(ask(&gw, &format!("c{i}")).await.1, "HIT", "c{i}");
    }
    assert_eq!(mock.hits(), 12);
}
