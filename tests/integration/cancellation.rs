//! A client that leaves before its answer cancels the upstream call nobody would read: the
//! upstream connection closes at once, no further attempt is made, and the request is logged
//! as 499 — unless the answer is still wanted, for the cache (`complete_on_disconnect`) or for
//! identical requests waiting on it.

use crate::support::{client, get_text, h2c_client, Config, Gateway, MockUpstream, Route};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const CHAT: &str = "/openai/v1/chat/completions";

fn body(prompt: &str) -> String {
    format!(r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{prompt}"}}]}}"#)
}

/// Sends a POST with `headers`, waits `stay`, then closes the connection without reading
/// anything; returns when it closed.
async fn send_and_leave(
    addr: SocketAddr,
    headers: &'static [(&'static str, &'static str)],
    body: String,
    stay: Duration,
) -> Instant {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "POST {CHAT} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes()).await.unwrap();
    tokio::time::sleep(stay).await;
    let left = Instant::now();
    drop(s);
    left
}

/// Polls `probe` every 10 ms for at most `limit`.
async fn wait_for<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn openai(mock: &MockUpstream, route_fields: &str) -> Config {
    let route = Route::prefixed("openai").targets("[mock]");
    let route = if route_fields.is_empty() {
        route
    } else {
        route.with(route_fields)
    };
    Config::new().upstream("mock", &mock.url()).route(route)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_before_the_head_closes_the_upstream_connection_at_once() {
    let mock = MockUpstream::start().await;
    // The default retry policy (3 attempts): leaving must end them all.
    let gw = Gateway::start(openai(&mock, ""));
    let slow = &[("x-mock-delay-ms", "4000")];
    let left = send_and_leave(gw.addr, slow, body("leave"), Duration::from_secs(1)).await;
    let closed = wait_for(Duration::from_secs(3), || mock.abandoned().first().copied())
        .await
        .expect("the upstream never saw its connection closed");
    let lag = closed.saturating_duration_since(left);
    eprintln!("the upstream saw its connection closed {lag:?} after the client left");
    assert!(
        lag < Duration::from_millis(500),
        "the upstream saw the close {lag:?} after the client left"
    );
    assert!(gw.wait_for_log("status=499").await, "{}", gw.logs());
    assert!(gw.logs().contains("error=client_closed"), "{}", gw.logs());
    // Longer than the first backoff of the default policy (at most 1 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(mock.hits(), 1, "one attempt only");
    let metrics = get_text(&gw.admin_url("/metrics")).await;
    assert!(
        metrics.contains(
            r#"promptgate_client_disconnects_total{route="openai",waiting="upstream"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("promptgate_requests_total{") && l.contains(r#"status="499""#)),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_during_a_retry_backoff_stops_the_retries() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(openai(
        &mock,
        "retry: { attempts: 3, base: 100ms, max: 10s }",
    ));
    // A 429 asking for 2 s: the retry waits at least that long.
    let throttled = &[("x-mock-status", "429"), ("x-mock-retry-after", "2")];
    let started = Instant::now();
    send_and_leave(
        gw.addr,
        throttled,
        body("backoff"),
        Duration::from_millis(500),
    )
    .await;
    assert!(gw.wait_for_log("status=499").await, "{}", gw.logs());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the request ended when its client left, not after the backoff"
    );
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(started.elapsed())).await;
    assert_eq!(mock.hits(), 1, "no attempt after the client left");
    let metrics = get_text(&gw.admin_url("/metrics")).await;
    assert!(
        metrics
            .contains(r#"promptgate_client_disconnects_total{route="openai",waiting="backoff"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_client_leaves_still_answers_its_followers() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(openai(&mock, ""));
    let prompt = body("shared");
    let slow = &[("x-mock-delay-ms", "1500")];
    let leader = tokio::spawn(send_and_leave(
        gw.addr,
        slow,
        prompt.clone(),
        Duration::from_millis(600),
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let follower = client()
        .post(gw.url(CHAT))
        .header("content-type", "application/json")
        .body(prompt)
        .send()
        .await
        .unwrap();
    leader.await.unwrap();
    assert_eq!(follower.status(), 200);
    let text = follower.text().await.unwrap();
    assert!(text.contains("Hello from mock #1"), "{text}");
    assert_eq!(
        mock.hits(),
        1,
        "the follower was served by the leader's call"
    );
    assert!(mock.abandoned().is_empty(), "the leader's call was not cut");
    assert!(gw.wait_for_log("status=499").await, "{}", gw.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_on_disconnect_finishes_the_call_for_the_cache() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(openai(&mock, "cache: { complete_on_disconnect: true }"));
    let prompt = body("fill the cache");
    let slow = &[("x-mock-delay-ms", "800")];
    send_and_leave(gw.addr, slow, prompt.clone(), Duration::from_millis(300)).await;
    // The call goes on after the client left (the access line is written once it ended), and
    // its answer is stored.
    assert!(gw.wait_for_log("status=499").await, "{}", gw.logs());
    assert!(mock.abandoned().is_empty(), "the call was not cut");
    let again = client()
        .post(gw.url(CHAT))
        .header("content-type", "application/json")
        .body(prompt)
        .send()
        .await
        .unwrap();
    assert_eq!(again.headers()["x-promptgate-cache"], "HIT");
    assert_eq!(mock.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_client_that_resets_its_stream_cancels_too() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(openai(&mock, ""));
    let h2 = h2c_client();
    // A fast request first: an HTTP/2 request that ended its stream is not taken as gone.
    let ok = h2
        .post(gw.url(CHAT))
        .header("content-type", "application/json")
        .header("x-mock-delay-ms", "300")
        .body(body("h2 stays"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.version(), reqwest::Version::HTTP_2);
    // Then one the client gives up on: dropping the request resets its stream.
    let slow = h2
        .post(gw.url(CHAT))
        .header("content-type", "application/json")
        .header("x-mock-delay-ms", "4000")
        .body(body("h2 leaves"))
        .send();
    let _ = tokio::time::timeout(Duration::from_secs(1), slow).await;
    let left = Instant::now();
    let closed = wait_for(Duration::from_secs(3), || mock.abandoned().first().copied())
        .await
        .expect("the upstream never saw its connection closed");
    assert!(closed.saturating_duration_since(left) < Duration::from_millis(500));
    assert!(gw.wait_for_log("status=499").await, "{}", gw.logs());
    assert_eq!(mock.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_leaves_does_not_disturb_its_leader() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(openai(&mock, ""));
    let prompt = body("followed");
    let leader = tokio::spawn({
        let (url, prompt) = (gw.url(CHAT), prompt.clone());
        async move {
            client()
                .post(url)
                .header("content-type", "application/json")
                .header("x-mock-delay-ms", "1000")
                .body(prompt)
                .send()
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    send_and_leave(gw.addr, &[], prompt, Duration::from_millis(300)).await;
    let leader = leader.await.unwrap();
    assert_eq!(leader.status(), 200);
    assert_eq!(mock.hits(), 1);
    assert!(mock.abandoned().is_empty());
    assert!(gw.wait_for_log("status=499").await, "{}", gw.logs());
    let metrics = get_text(&gw.admin_url("/metrics")).await;
    assert!(
        metrics.contains(
            r#"promptgate_client_disconnects_total{route="openai",waiting="coalesced"} 1"#
        ),
        "{metrics}"
    );
}
