//! The Redis store against real `redis-server` processes: round trips, TTLs, fail-fast when
//! Redis is down or slow, recovery, Redis Cluster, purge and background writes.

use crate::support::redis::{RedisCluster, RedisServer};
use bytes::Bytes;
use promptgate::cache::redis::{RedisError, RedisState, RedisStore, MAX_BACKGROUND_WRITES};
use promptgate::config::schema::RedisSpec;
use promptgate::config::secret::Secret;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BREAKER: Duration = Duration::from_millis(300);

fn spec(url: String, timeout: Duration) -> RedisSpec {
    RedisSpec {
        url: Secret::new(url),
        timeout,
        breaker: BREAKER,
        ..RedisSpec::default()
    }
}

/// Polls `check` every 50 ms until it holds, for at most `limit`.
async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_get_round_trip_with_ttl() {
    let server = RedisServer::start();
    let store = RedisStore::new(&spec(server.url(), Duration::from_secs(2))).unwrap();

    store
        .set(
            "pg:a",
            Bytes::from_static(b"\x00binary\xff"),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(
        store.get("pg:a").await.unwrap(),
        Some(Bytes::from_static(b"\x00binary\xff"))
    );
    let ttl = server.ttl("pg:a");
    assert!((55..=60).contains(&ttl), "TTL {ttl}");

    // Below a second, the TTL is rounded up rather than meaning "no expiry" or an error.
    store
        .set(
            "pg:short",
            Bytes::from_static(b"x"),
            Duration::from_millis(10),
        )
        .await
        .unwrap();
    assert_eq!(server.ttl("pg:short"), 1);

    assert_eq!(store.get("pg:missing").await.unwrap(), None);
    store.ping().await.unwrap();
    assert_eq!(store.state(), RedisState::Up);
    assert_eq!(store.error_count(), 0);
    assert_eq!(server.keys("pg:*"), ["pg:a", "pg:short"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_fast_opens_the_circuit_and_recovers() {
    let mut server = RedisServer::start();
    server.stop();
    let store = RedisStore::new(&spec(server.url(), Duration::from_millis(200))).unwrap();

    // The very first use connects, to a dead server: an error, quickly.
    let started = Instant::now();
    let err = store.get("k").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(900), "{err}");
    assert!(
        matches!(err, RedisError::Redis(_) | RedisError::Timeout),
        "{err}"
    );
    assert_eq!(store.state(), RedisState::CircuitOpen);
    assert_eq!(store.error_count(), 1);

    // While open: fail fast, no I/O, not counted again.
    for _ in 0..50 {
        assert!(matches!(store.get("k").await, Err(RedisError::CircuitOpen)));
    }
    assert!(matches!(
        store
            .set("k", Bytes::from_static(b"v"), Duration::from_secs(5))
            .await,
        Err(RedisError::CircuitOpen)
    ));
    assert!(matches!(store.ping().await, Err(RedisError::CircuitOpen)));
    assert_eq!(store.error_count(), 1);

    // Redis comes back: after the breaker period the store finds it by itself.
    server.restart();
    let recovered = eventually(Duration::from_secs(10), || async {
        store.get("k").await.is_ok()
    })
    .await;
    assert!(
        recovered,
        "store did not recover; state {:?}",
        store.state()
    );
    assert_eq!(store.state(), RedisState::Up);
    store
        .set("k", Bytes::from_static(b"v"), Duration::from_secs(5))
        .await
        .unwrap();

    // Redis dies under an established connection: same story.
    server.stop();
    let started = Instant::now();
    let err = store.get("k").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(900), "{err}");
    assert_eq!(store.state(), RedisState::CircuitOpen);
    assert!(matches!(store.get("k").await, Err(RedisError::CircuitOpen)));

    server.restart();
    let recovered = eventually(Duration::from_secs(10), || async {
        matches!(store.get("k").await, Ok(None))
    })
    .await;
    assert!(
        recovered,
        "store did not recover; state {:?}",
        store.state()
    );
    assert_eq!(store.state(), RedisState::Up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_redis_times_out_at_the_lookup_timeout() {
    let server = RedisServer::start();
    let timeout = Duration::from_millis(200);
    let store = RedisStore::new(&spec(server.url(), timeout)).unwrap();
    store
        .set("k", Bytes::from_static(b"v"), Duration::from_secs(60))
        .await
        .unwrap();

    let pause = server.pause(Duration::from_millis(1500));
    let started = Instant::now();
    let err = store.get("k").await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, RedisError::Timeout), "{err}");
    assert!(
        took >= timeout - Duration::from_millis(20) && took < Duration::from_millis(900),
        "took {took:?}"
    );
    assert_eq!(store.state(), RedisState::CircuitOpen);
    assert_eq!(store.error_count(), 1);
    pause.join().unwrap();

    let recovered = eventually(Duration::from_secs(10), || async {
        store.get("k").await.ok().flatten().is_some()
    })
    .await;
    assert!(
        recovered,
        "store did not recover; state {:?}",
        store.state()
    );
    assert_eq!(store.state(), RedisState::Up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_writes_land_and_overflow_is_dropped() {
    let server = RedisServer::start();
    // Generous timeouts: this test is about the in-flight bound, not about timing.
    let store = Arc::new(RedisStore::new(&spec(server.url(), Duration::from_secs(5))).unwrap());

    for i in 0..20 {
        store.set_in_background(
            format!("bg:{i}"),
            Bytes::from(format!("v{i}")),
            Duration::from_secs(60),
        );
    }
    let landed = eventually(Duration::from_secs(5), || async {
        server.keys("bg:*").len() == 20
    })
    .await;
    assert!(landed, "keys: {:?}", server.keys("bg:*"));
    assert_eq!(
        store.get("bg:7").await.unwrap(),
        Some(Bytes::from_static(b"v7"))
    );
    assert_eq!(store.error_count(), 0);

    // With Redis paused, writes pile up: past the bound they are dropped and counted.
    let extra = 10;
    let pause = server.pause(Duration::from_millis(1000));
    for i in 0..MAX_BACKGROUND_WRITES + extra {
        store.set_in_background(
            format!("burst:{i}"),
            Bytes::from_static(b"x"),
            Duration::from_secs(60),
        );
    }
    assert_eq!(store.error_count(), extra as u64);
    pause.join().unwrap();
    let landed = eventually(Duration::from_secs(10), || async {
        server.keys("burst:*").len() == MAX_BACKGROUND_WRITES
    })
    .await;
    assert!(landed, "{} burst keys", server.keys("burst:*").len());
    assert_eq!(store.error_count(), extra as u64);
    assert_eq!(store.state(), RedisState::Up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_prefix_on_a_single_server() {
    let server = RedisServer::start();
    let store = RedisStore::new(&spec(server.url(), Duration::from_secs(2))).unwrap();
    for i in 0..1500 {
        store
            .set(
                &format!("gone:{i}"),
                Bytes::from_static(b"x"),
                Duration::from_secs(60),
            )
            .await
            .unwrap();
    }
    // Glob characters in the prefix are literal.
    store
        .set("gone*x", Bytes::from_static(b"x"), Duration::from_secs(60))
        .await
        .unwrap();
    store
        .set("kept:1", Bytes::from_static(b"x"), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(store.purge_prefix("gone*").await.unwrap(), 1);
    assert_eq!(store.purge_prefix("gone:").await.unwrap(), 1500);
    assert_eq!(server.keys("*"), ["kept:1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_round_trip_and_purge() {
    let cluster = RedisCluster::start();
    let spec = RedisSpec {
        cluster: cluster.urls().into_iter().map(Secret::new).collect(),
        timeout: Duration::from_secs(2),
        breaker: BREAKER,
        ..RedisSpec::default()
    };
    let store = RedisStore::new(&spec).unwrap();
    store.ping().await.unwrap();

    let n = 300;
    for i in 0..n {
        store
            .set(
                &format!("pg:v1:r:{i:04}"),
                Bytes::from(format!("value {i}")),
                Duration::from_secs(60),
            )
            .await
            .unwrap();
    }
    store
        .set("other:1", Bytes::from_static(b"o"), Duration::from_secs(60))
        .await
        .unwrap();
    for i in 0..n {
        assert_eq!(
            store.get(&format!("pg:v1:r:{i:04}")).await.unwrap(),
            Some(Bytes::from(format!("value {i}")))
        );
    }
    assert_eq!(store.get("pg:v1:r:missing").await.unwrap(), None);
    // The keys really are spread over the three masters.
    let sizes = cluster.sizes();
    assert!(sizes.iter().all(|s| *s > 0), "keys per node: {sizes:?}");
    assert_eq!(cluster.keys("pg:v1:*").len(), n);

    assert_eq!(store.purge_prefix("pg:v1:").await.unwrap(), n as u64);
    assert!(cluster.keys("pg:v1:*").is_empty());
    assert_eq!(cluster.keys("*"), ["other:1"]);
    assert_eq!(store.get("pg:v1:r:0001").await.unwrap(), None);
    assert_eq!(store.error_count(), 0);
    assert_eq!(store.state(), RedisState::Up);
}
