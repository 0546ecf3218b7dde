//! HTTPS upstreams: h2 negotiated by ALPN and multiplexed, HTTP/1.1 fallback, `pool` limits,
//! `tls.ca_file` for a private CA, against a real nginx terminating TLS in front of the mock.

use crate::support::{self, client, get_json, Config, Gateway, MockUpstream, Route, TlsUpstream};
use futures_util::StreamExt;
use serde_json::json;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// An upstream `tls` at `url` trusting `upstream`'s CA, with more fields, and a route `/openai`
/// to it (cache off unless `cached`).
fn config(upstream: &TlsUpstream, url: &str, fields: &str, cached: bool) -> Config {
    let ca = format!("tls: {{ ca_file: \"{}\" }}", upstream.ca_file().display());
    let fields = if fields.is_empty() {
        ca
    } else {
        format!("{ca}, {fields}")
    };
    let cache = if cached {
        "cache: { enabled: true }"
    } else {
        "cache: { enabled: false }"
    };
    Config::new().upstream_with("tls", url, &fields).route(
        Route::prefixed("openai")
            .targets("[tls]")
            .with("retry: { attempts: 1 }")
            .with(cache),
    )
}

/// Sends `n` chat requests at once (each its own prompt), each with `headers`; returns the
/// answers' statuses and texts.
async fn concurrently(gw: &Gateway, n: usize, headers: &[(&str, &str)]) -> Vec<(u16, String)> {
    let c = client();
    let calls = (0..n).map(|i| {
        let mut req = c.post(gw.url("/openai/v1/chat/completions")).json(
            &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": format!("q{i}")}]}),
        );
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    });
    futures_util::future::join_all(calls).await
}

fn connections(log: &[crate::support::tls_upstream::Logged]) -> HashSet<u64> {
    log.iter().map(|l| l.connection).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_is_negotiated_and_concurrent_requests_share_one_connection() {
    let mock = MockUpstream::start().await;
    let tls = TlsUpstream::start(mock.addr());
    let gw = Gateway::start(config(&tls, &tls.h2_url(), "", false));
    // Held upstream for a while, so that all 60 are in flight together.
    let answers = concurrently(&gw, 60, &[("x-mock-delay-ms", "300")]).await;
    for (status, text) in &answers {
        assert_eq!(*status, 200, "{text}");
        assert!(text.contains("Hello from mock #"), "{text}");
    }
    let log = tls.wait_for_log(60).await;
    assert_eq!(log.len(), 60, "{log:?}");
    assert!(
        log.iter()
            .all(|l| l.protocol == "HTTP/2.0" && l.port == tls.h2_port && l.status == 200),
        "{log:?}"
    );
    assert_eq!(
        connections(&log).len(),
        1,
        "60 concurrent requests ride one h2 connection: {log:?}"
    );
    assert_eq!(opened(&gw).await, (Some("h2".to_string()), 1));
}

/// `GET /stats`'s `protocol` and `connections_opened` of the (first) upstream.
async fn opened(gw: &Gateway) -> (Option<String>, u64) {
    let stats = get_json(&gw.admin_url("/stats")).await;
    let up = &stats["upstreams"][0];
    (
        up["protocol"].as_str().map(str::to_string),
        up["connections_opened"].as_u64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_concurrent_requests_than_max_streams_open_another_h2_connection() {
    let mock = MockUpstream::start().await;
    let tls = TlsUpstream::start(mock.addr());
    let gw = Gateway::start(config(
        &tls,
        &tls.h2_url(),
        "pool: { max_streams: 10 }",
        false,
    ));
    let answers = concurrently(&gw, 30, &[("x-mock-delay-ms", "300")]).await;
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    let log = tls.wait_for_log(30).await;
    assert!(log.iter().all(|l| l.protocol == "HTTP/2.0"), "{log:?}");
    let opened = connections(&log).len();
    assert!(
        (3..=4).contains(&opened),
        "30 at once at 10 streams a connection need 3 connections, got {opened}: {log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_without_h2_is_spoken_to_over_http1() {
    let mock = MockUpstream::start().await;
    let tls = TlsUpstream::start(mock.addr());
    let gw = Gateway::start(config(&tls, &tls.h1_url(), "", false));
    let answers = concurrently(&gw, 8, &[("x-mock-delay-ms", "200")]).await;
    for (status, text) in &answers {
        assert_eq!(*status, 200, "{text}");
        assert!(text.contains("Hello from mock #"), "{text}");
    }
    let log = tls.wait_for_log(8).await;
    assert_eq!(log.len(), 8);
    assert!(
        log.iter()
            .all(|l| l.protocol == "HTTP/1.1" && l.port == tls.h1_port),
        "{log:?}"
    );
    // HTTP/1.1 carries one request at a time: 8 at once need 8 connections.
    assert_eq!(connections(&log).len(), 8, "{log:?}");
    assert_eq!(opened(&gw).await, (Some("h1".to_string()), 8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_version_h1_keeps_an_h2_capable_upstream_on_http1() {
    let mock = MockUpstream::start().await;
    let tls = TlsUpstream::start(mock.addr());
    let gw = Gateway::start(config(&tls, &tls.h2_url(), "http_version: h1", false));
    let answers = concurrently(&gw, 2, &[]).await;
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    let log = tls.wait_for_log(2).await;
    assert!(
        log.iter()
            .all(|l| l.protocol == "HTTP/1.1" && l.port == tls.h2_port),
        "{log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_version_h2_speaks_h2_with_prior_knowledge_to_a_plain_http_upstream() {
    let mock = MockUpstream::start().await;
    let tls = TlsUpstream::start(mock.addr());
    let gw = Gateway::start(
        Config::new()
            .upstream_with("h2c", &tls.h2c_url(), "http_version: h2")
            .route(
                Route::prefixed("openai")
                    .targets("[h2c]")
                    .with("cache: { enabled: false }"),
            ),
    );
    let answers = concurrently(&gw, 10, &[("x-mock-delay-ms", "200")]).await;
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    let log = tls.wait_for_log(10).await;
    assert!(
        log.iter()
            .all(|l| l.protocol == "HTTP/2.0" && l.port == tls.h2c_port),
        "{log:?}"
    );
    assert_eq!(connections(&log).len(), 1, "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_sni_names_the_certificate_to_verify() {
    let mock = MockUpstream::start().await;
    let tls = TlsUpstream::start(mock.addr());
    // The certificate is for 127.0.0.1 and localhost.
    let gw = Gateway::start(
        config(&tls, &tls.h2_url(), "", false)
            .upstream_with(
                "wrong",
                &tls.h2_url(),
                &format!(
                    "tls: {{ ca_file: \"{}\", sni: elsewhere.example }}",
                    tls.ca_file().display()
                ),
            )
            .route(
                Route::prefixed("wrong")
                    .targets("[wrong]")
                    .with("retry: { attempts: 1 }"),
            ),
    );
    let c = client();
    let body = json!({"model": "gpt-4o", "messages": []});
    let wrong = c
        .post(gw.url("/wrong/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 502);
    let message = wrong.text().await.unwrap();
    assert!(
        message.contains("not valid for name \\\"elsewhere.example\\\"")
            && message.contains("upstreams.wrong.tls.sni")
            && !message.contains("ca_file"),
        "{message}"
    );
    let right = config(&tls, &tls.h2_url(), "", false)
        .to_string()
        .replace("tls: { ca_file", "tls: { sni: localhost, ca_file");
    let gw = Gateway::start(right);
    let ok = c
        .post(gw.url("/openai/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_caps_the_connections_open_at_once() {
    let mock = MockUpstream::start().await;
    let tls = TlsUpstream::start(mock.addr());
    let fields = "pool: { max_connections: 2, max_idle: 2 }";
    let gw = Gateway::start(config(&tls, &tls.h1_url(), fields, false));
    // 8 requests of 200 ms each through 2 connections: they queue (within queue_timeout).
    let answers = concurrently(&gw, 8, &[("x-mock-delay-ms", "200")]).await;
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    let log = tls.wait_for_log(8).await;
    assert_eq!(log.len(), 8);
    assert!(
        connections(&log).len() <= 2,
        "at most 2 connections: {log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_before_the_first_h2_connection_shares_it_within_max_connections() {
    let mock = MockUpstream::start().await;
    let tls = TlsUpstream::start(mock.addr());
    // One connection of 100 streams: 20 requests at once from a cold start all fit on it
    // (were they counted as HTTP/1.1 until the protocol is known, 19 would wait and fail).
    let fields = "pool: { max_connections: 1, max_idle: 1 }, queue_timeout: 100ms";
    let gw = Gateway::start(config(&tls, &tls.h2_url(), fields, false));
    let answers = concurrently(&gw, 20, &[("x-mock-delay-ms", "500")]).await;
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    let log = tls.wait_for_log(20).await;
    assert_eq!(connections(&log).len(), 1, "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_answers_503_after_queue_timeout() {
    let mock = MockUpstream::start().await;
    let tls = TlsUpstream::start(mock.addr());
    let fields = "pool: { max_connections: 1, max_idle: 1 }, queue_timeout: 100ms";
    let gw = Gateway::start(config(&tls, &tls.h1_url(), fields, false));
    let answers = concurrently(&gw, 2, &[("x-mock-delay-ms", "1000")]).await;
    let mut statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 503], "{answers:?}");
    let busy = &answers.iter().find(|(s, _)| *s == 503).unwrap().1;
    assert!(
        busy.contains("upstream_busy") && busy.contains("pool.max_connections"),
        "{busy}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_fails_clearly_unless_its_ca_file_is_given() {
    let mock = MockUpstream::start().await;
    let tls = TlsUpstream::start(mock.addr());
    let ca = tls.ca_file();
    let gw = Gateway::start(
        Config::new()
            .upstream("private", &tls.h2_url())
            .upstream_with(
                "trusted",
                &tls.h2_url(),
                &format!("tls: {{ ca_file: \"{}\" }}", ca.display()),
            )
            .route(
                Route::prefixed("private")
                    .targets("[private]")
                    .with("retry: { attempts: 1 }"),
            )
            .route(
                Route::prefixed("trusted")
                    .targets("[trusted]")
                    .with("retry: { attempts: 1 }"),
            ),
    );
    let c = client();
    let body = json!({"model": "gpt-4o", "messages": []});
    let refused = c
        .post(gw.url("/private/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 502);
    let error: serde_json::Value = refused.json().await.unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert_eq!(error["error"]["type"], "upstream_unreachable", "{error}");
    for words in [
        "upstream private",
        &format!("127.0.0.1:{}", tls.h2_port),
        "UnknownIssuer",
        "upstreams.private.tls.ca_file",
    ] {
        assert!(message.contains(words), "{words:?} not in {message:?}");
    }
    assert!(tls.log().is_empty(), "no request got through");

    let trusted = c
        .post(gw.url("/trusted/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(trusted.status(), 200);
    assert!(trusted.text().await.unwrap().contains("Hello from mock #1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_h2_are_relayed_as_they_come_and_cached_like_http1() {
    let mock = MockUpstream::start().await;
    let tls = TlsUpstream::start(mock.addr());
    let gw = Gateway::start(config(&tls, &tls.h2_url(), "", true));
    let c = client();
    let body =
        json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let resp = c
        .post(gw.url("/openai/v1/chat/completions"))
        .header("x-mock-hold", "1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-promptgate-cache"], "MISS");
    let mut stream = resp.bytes_stream();
    // The mock holds everything after its first event: it must arrive on its own.
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the first event arrives while the upstream holds the rest")
        .unwrap()
        .unwrap();
    assert!(first.starts_with(b"data: "), "{first:?}");
    mock.release();
    let mut streamed = first.to_vec();
    while let Some(chunk) = stream.next().await {
        streamed.extend_from_slice(&chunk.unwrap());
    }
    let streamed = String::from_utf8(streamed).unwrap();
    assert!(streamed.trim_end().ends_with("data: [DONE]"), "{streamed}");

    let again = c
        .post(gw.url("/openai/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(again.headers()["x-promptgate-cache"], "HIT");
    assert_eq!(again.text().await.unwrap(), streamed);
    assert_eq!(mock.hits(), 1);
    let log = tls.wait_for_log(1).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].protocol, "HTTP/2.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_stream_cut_short_is_not_cached_and_the_client_sees_the_cut() {
    let mock = MockUpstream::start().await;
    let tls = TlsUpstream::start(mock.addr());
    let gw = Gateway::start(config(&tls, &tls.h2_url(), "", true));
    let c = client();
    let body = json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "cut"}]});
    let send = || {
        c.post(gw.url("/openai/v1/chat/completions"))
            .header("x-mock-fault", "truncate")
            .json(&body)
            .send()
    };
    let resp = send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut failed = false;
    let mut got = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => got.extend_from_slice(&c),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    let got = String::from_utf8_lossy(&got);
    assert!(
        failed || !got.contains("[DONE]"),
        "a cut stream never looks complete: {got}"
    );
    let again = send().await.unwrap();
    assert_eq!(again.headers()["x-promptgate-cache"], "MISS");
    assert_eq!(mock.hits(), 2);
}

/// RFC 9113 §8.1: an h2 server may answer before it has read the whole request and stop the
/// stream; nginx's `return` does. The answer is relayed (not a 502), and the upstream is not
/// marked failing for it. A 512 KiB body cannot fit the stream's first 64 KiB window, so the
/// answer always comes first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_answer_given_before_the_whole_body_was_read_is_relayed() {
    let mock = MockUpstream::start().await;
    let tls = TlsUpstream::start(mock.addr());
    let h2c = Config::new()
        .upstream_with(
            "h2c",
            &format!("{}/early", tls.h2c_url()),
            "http_version: h2",
        )
        .route(
            Route::prefixed("openai")
                .targets("[h2c]")
                .with("retry: { attempts: 1 }")
                .with("cache: { enabled: false }"),
        );
    let h2 = config(&tls, &format!("{}/early", tls.h2_url()), "", false);
    let big = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x".repeat(512 << 10)}]});
    for (protocol, config) in [("h2c", h2c), ("h2 over TLS", h2)] {
        let gw = Gateway::start(config);
        let c = client();
        for round in 0..2 {
            let calls = (0..8).map(|_| {
                let req = c.post(gw.url("/openai/v1/chat/completions")).json(&big);
                async move {
                    let resp = req.send().await.unwrap();
                    (resp.status().as_u16(), resp.text().await.unwrap())
                }
            });
            for (status, text) in futures_util::future::join_all(calls).await {
                assert_eq!(status, 400, "{protocol}, round {round}: {text}");
                assert!(text.contains("answered early"), "{protocol}: {text}");
            }
        }
        assert!(
            !gw.logs().contains("skipping it"),
            "{protocol}: {}",
            gw.logs()
        );
    }
}

/// An answer given before the whole request was read is not an answer to that request as
/// sent: relayed, never stored, however whole and successful it looks (a cached route, a 200
/// chat completion with `finish_reason: stop`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_answer_given_before_the_whole_body_was_read_is_never_stored() {
    let mock = MockUpstream::start().await;
    let tls = TlsUpstream::start(mock.addr());
    let gw = Gateway::start(
        Config::new()
            .upstream_with(
                "h2c",
                &format!("{}/early-ok", tls.h2c_url()),
                "http_version: h2",
            )
            .route(
                Route::prefixed("openai")
                    .targets("[h2c]")
                    .with("retry: { attempts: 1 }")
                    .with("cache: { enabled: true }"),
            ),
    );
    let big = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x".repeat(512 << 10)}]});
    for round in 0..3 {
        let resp = client()
            .post(gw.url("/openai/v1/chat/completions"))
            .json(&big)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "round {round}");
        assert_eq!(
            resp.headers()["x-promptgate-cache"],
            "MISS",
            "round {round}"
        );
        assert!(resp.text().await.unwrap().contains("answered early"));
    }
    assert_eq!(
        tls.wait_for_log(3).await.len(),
        3,
        "every round reached the upstream"
    );
}

/// A plain-TCP upstream that refuses every h2 stream with `HTTP_1_1_REQUIRED` and answers
/// HTTP/1.1 requests with a chat completion (one per connection). Counts both.
async fn h1_required() -> (
    tokio::task::JoinHandle<()>,
    String,
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
) {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (refused, answered) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (r, a) = (refused.clone(), answered.clone());
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (r, a) = (r.clone(), a.clone());
            tokio::spawn(async move {
                let mut first = [0u8; 3];
                if stream.peek(&mut first).await.is_err() {
                    return;
                }
                if &first == b"PRI" {
                    let Ok(mut h2) = h2::server::handshake(stream).await else {
                        return;
                    };
                    while let Some(Ok((_, mut respond))) = h2.accept().await {
                        r.fetch_add(1, Ordering::SeqCst);
                        respond.send_reset(h2::Reason::HTTP_1_1_REQUIRED);
                    }
                    return;
                }
                if support::read_request(&mut stream).await.is_none() {
                    return;
                }
                a.fetch_add(1, Ordering::SeqCst);
                let body = r#"{"id":"x","object":"chat.completion","choices":[],"answer":"over http/1.1"}"#;
                let _ = stream
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    (task, addr, refused, answered)
}

/// An h2 server that refuses a stream with `HTTP_1_1_REQUIRED` has the request sent again at
/// once over HTTP/1.1 (unseen by the client, where the route retries nothing), and is spoken
/// to in HTTP/1.1 from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_1_required_moves_the_upstream_to_http1() {
    let (server, addr, refused, answered) = h1_required().await;
    let gw = Gateway::start(
        Config::new()
            .upstream_with("picky", &format!("http://{addr}"), "http_version: h2")
            .route(
                Route::prefixed("openai")
                    .targets("[picky]")
                    .with("retry: { attempts: 1 }")
                    .with("cache: { enabled: false }"),
            ),
    );
    for round in 0..3 {
        let resp = client()
            .post(gw.url("/openai/v1/chat/completions"))
            .json(&json!({"model": "gpt-4o", "messages": []}))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(status, 200, "round {round}: {text}");
        assert!(text.contains("over http/1.1"), "{text}");
    }
    assert_eq!(refused.load(Ordering::SeqCst), 1, "h2 was tried once");
    assert_eq!(answered.load(Ordering::SeqCst), 3);
    assert_eq!(opened(&gw).await.0.as_deref(), Some("h1"));
    server.abort();
}

/// An h2 server that accepts streams and never reads their bodies (so never opens its
/// flow-control window): a body larger than the window stops moving, and `timeouts.write`
/// ends the request — not `first_byte`, far longer here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_body_the_server_does_not_take_is_a_write_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut h2) = h2::server::handshake(stream).await else {
                    return;
                };
                let mut unread = Vec::new();
                while let Some(Ok(stream)) = h2.accept().await {
                    unread.push(stream);
                }
            });
        }
    });
    support::stalled_write("stuck", addr, "http_version: h2, ", 1 << 20).await;
    server.abort();
}
