//! Streams are cached live and replayed exactly; identical requests in flight at once share one
//! upstream call (single-flight), and a failed leader never fails its followers.

use crate::support::{client, Config, Gateway, MockUpstream, Route};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

struct Streamed {
    status: u16,
    cache: String,
    content_type: String,
    body: Vec<u8>,
    /// Arrival time of each read, from the response head.
    arrivals: Vec<Duration>,
}

async fn stream(gw: &Gateway, path: &str, headers: &[(&str, &str)], body: &Value) -> Streamed {
    let mut req = client().post(gw.url(path)).json(body);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let resp = req.send().await.unwrap();
    let start = Instant::now();
    let status = resp.status().as_u16();
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .map_or("-".to_string(), |v| v.to_str().unwrap().to_string())
    };
    let (cache, content_type) = (header("x-promptgate-cache"), header("content-type"));
    let mut body = Vec::new();
    let mut arrivals = Vec::new();
    let mut s = resp.bytes_stream();
    while let Some(chunk) = s.next().await {
        body.extend_from_slice(&chunk.expect("a complete stream"));
        arrivals.push(start.elapsed());
    }
    Streamed {
        status,
        cache,
        content_type,
        body,
        arrivals,
    }
}

fn chat(stream: bool, prompt: &str) -> Value {
    json!({"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": prompt}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_format_is_replayed_byte_for_byte() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    let cases = [
        (
            "/openai/v1/chat/completions",
            json!({"model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true}, "messages": []}),
        ),
        (
            "/anthropic/v1/messages",
            json!({"model": "claude", "max_tokens": 5, "stream": true, "messages": []}),
        ),
        (
            "/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
            json!({"contents": []}),
        ),
        (
            // (with no messages it would only load the model: not cacheable)
            "/ollama/api/chat",
            json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}),
        ),
    ];
    for (i, (path, body)) in cases.iter().enumerate() {
        let first = stream(&gw, path, &[], body).await;
        assert_eq!(
            (first.status, first.cache.as_str()),
            (200, "MISS"),
            "{path}"
        );
        let second = stream(&gw, path, &[], body).await;
        assert_eq!(second.cache, "HIT", "{path}");
        assert_eq!(second.content_type, first.content_type, "{path}");
        assert_eq!(second.body, first.body, "{path}: byte-identical replay");
        assert_eq!(mock.hits(), i + 1, "{path}: one upstream call");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_stream_is_never_stored() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    let resp = client()
        .post(gw.url("/openai/v1/chat/completions"))
        .header("x-mock-fault", "truncate")
        .json(&chat(true, "cut"))
        .send()
        .await
        .unwrap();
    assert!(resp.bytes().await.is_err(), "the client sees the break");
    let again = stream(&gw, "/openai/v1/chat/completions", &[], &chat(true, "cut")).await;
    assert_eq!(again.cache, "MISS");
    assert!(String::from_utf8_lossy(&again.body).contains("[DONE]"));
    assert_eq!(mock.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn original_pacing_reproduces_the_gaps() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()).section("cache: { replay: original }"));
    let paced = [("x-mock-chunk-delay-ms", "120"), ("x-mock-events", "5")];
    let first = stream(
        &gw,
        "/openai/v1/chat/completions",
        &paced,
        &chat(true, "slow"),
    )
    .await;
    let recorded = *first.arrivals.last().unwrap();
    assert!(
        recorded >= Duration::from_millis(500),
        "upstream took {recorded:?}"
    );
    let replay = stream(&gw, "/openai/v1/chat/completions", &[], &chat(true, "slow")).await;
    assert_eq!(replay.cache, "HIT");
    assert_eq!(replay.body, first.body);
    let replayed = *replay.arrivals.last().unwrap();
    assert!(
        replayed >= recorded.mul_f64(0.7) && replayed <= recorded + Duration::from_millis(1500),
        "replay took {replayed:?}, the original {recorded:?}"
    );
    assert!(
        replay.arrivals.len() >= 4,
        "arrived in {} reads",
        replay.arrivals.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_requests_make_one_upstream_call() {
    let mock = MockUpstream::start().await;
    let gw = std::sync::Arc::new(Gateway::start(Config::providers(&mock.url())));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let gw = gw.clone();
        tasks.push(tokio::spawn(async move {
            // 10 plain and 10 streaming requests, each group identical, all against a slow upstream
            let streaming = i % 2 == 1;
            let headers = [("x-mock-delay-ms", "400"), ("x-mock-chunk-delay-ms", "50")];
            let r = stream(
                &gw,
                "/openai/v1/chat/completions",
                &headers,
                &chat(streaming, "together"),
            )
            .await;
            (streaming, r)
        }));
    }
    let mut plain = Vec::new();
    let mut streamed = Vec::new();
    let mut statuses = [Vec::new(), Vec::new()];
    for t in tasks {
        let (streaming, r) = t.await.unwrap();
        assert_eq!(r.status, 200);
        statuses[usize::from(streaming)].push(r.cache);
        if streaming {
            streamed.push(r.body)
        } else {
            plain.push(r.body)
        }
    }
    assert_eq!(mock.hits(), 2, "one upstream call per group");
    // The leader's answer is the MISS; its followers', plain or streamed, are HITs.
    for mut group in statuses {
        group.sort();
        let mut want = vec!["HIT".to_string(); 9];
        want.push("MISS".into());
        assert_eq!(group, want);
    }
    assert!(
        plain.windows(2).all(|w| w[0] == w[1]),
        "identical plain bodies"
    );
    assert!(
        streamed.windows(2).all(|w| w[0] == w[1]),
        "identical streams"
    );
    assert!(String::from_utf8_lossy(&streamed[0]).contains("data: [DONE]"));
    let v: Value = serde_json::from_slice(&plain[0]).unwrap();
    assert!(v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .starts_with("Hello from mock"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_of_a_failed_leader_still_succeed() {
    let mock = MockUpstream::start().await;
    let gw = std::sync::Arc::new(Gateway::start(Config::providers(&mock.url())));
    let leader = {
        let gw = gw.clone();
        tokio::spawn(async move {
            // the fault headers are not part of the key: followers join this flight
            let h = [("x-mock-delay-ms", "400"), ("x-mock-fault", "reset")];
            stream(
                &gw,
                "/openai/v1/chat/completions",
                &h,
                &chat(false, "doomed"),
            )
            .await
            .status
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut followers = Vec::new();
    for _ in 0..5 {
        let gw = gw.clone();
        followers.push(tokio::spawn(async move {
            stream(
                &gw,
                "/openai/v1/chat/completions",
                &[],
                &chat(false, "doomed"),
            )
            .await
        }));
    }
    assert_eq!(leader.await.unwrap(), 502);
    for f in followers {
        let r = f.await.unwrap();
        assert_eq!(r.status, 200, "a follower inherited the leader's failure");
        assert!(String::from_utf8_lossy(&r.body).contains("Hello from mock"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_leaving_early_drops_the_recording_unless_asked_to_complete() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(
        Config::new()
            .upstream("mock", &mock.url())
            .route(
                Route::prefixed("complete")
                    .targets("[mock]")
                    .with("cache: { complete_on_disconnect: true }"),
            )
            .route(Route::prefixed("openai").targets("[mock]")),
    );
    for (prefix, stored) in [("/openai", false), ("/complete", true)] {
        let path = format!("{prefix}/v1/chat/completions");
        let resp = client()
            .post(gw.url(&path))
            .header("x-mock-chunk-delay-ms", "100")
            .json(&chat(true, "leaving"))
            .send()
            .await
            .unwrap();
        let mut s = resp.bytes_stream();
        s.next().await.unwrap().unwrap();
        drop(s); // the client leaves after the first event
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let again = stream(&gw, &path, &[], &chat(true, "leaving")).await;
        assert_eq!(again.cache, if stored { "HIT" } else { "MISS" }, "{prefix}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_the_entry_limit_are_relayed_but_not_stored() {
    let mock = MockUpstream::start().await;
    let gw =
        Gateway::start(Config::providers(&mock.url()).section("cache: { max_entry_bytes: 500 }"));
    let long = [("x-mock-events", "40")];
    for _ in 0..2 {
        let r = stream(
            &gw,
            "/openai/v1/chat/completions",
            &long,
            &chat(true, "long"),
        )
        .await;
        assert_eq!(r.cache, "MISS");
        assert!(r.body.len() > 500 && String::from_utf8_lossy(&r.body).contains("[DONE]"));
    }
    assert_eq!(mock.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_gets_the_whole_answer_even_when_it_is_too_large_to_store() {
    let mock = MockUpstream::start().await;
    let gw = std::sync::Arc::new(Gateway::start(
        Config::providers(&mock.url()).section("cache: { max_entry_bytes: 100 }"),
    ));
    for streaming in [false, true] {
        let before = mock.hits();
        let body = chat(streaming, "too large to store");
        let headers = [
            ("x-mock-delay-ms", "300"),
            ("x-mock-chunk-delay-ms", "20"),
            ("x-mock-events", "30"),
        ];
        let path = "/openai/v1/chat/completions";
        let follower = {
            let (gw, body) = (gw.clone(), body.clone());
            tokio::spawn(async move {
                // joins while the leader waits for the upstream's head
                tokio::time::sleep(Duration::from_millis(100)).await;
                stream(&gw, path, &headers, &body).await
            })
        };
        let leader = stream(&gw, path, &headers, &body).await;
        let follower = follower.await.unwrap();
        assert_eq!((leader.status, follower.status), (200, 200));
        assert!(leader.body.len() > 100, "the answer is over the limit");
        assert_eq!(leader.body, follower.body, "streaming: {streaming}");
        if streaming {
            assert!(String::from_utf8_lossy(&follower.body).contains("[DONE]"));
        }
        assert_eq!(
            mock.hits() - before,
            1,
            "one upstream call (streaming: {streaming})"
        );
    }
}

/// An upstream whose SSE answer ends cleanly (the last chunk of a chunked body) but without
/// the provider's end marker (`data: [DONE]`) at all: complete as HTTP, not as an answer.
/// Counts the requests it answers. (The mock's `partial` outcome still sends `[DONE]`.)
async fn unfinished_stream_upstream(
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> String {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let hits = hits.clone();
            tokio::spawn(async move {
                if crate::support::read_request(&mut stream).await.is_none() {
                    return;
                }
                hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")
                    .await;
                for word in ["Hello", " from", " a", " cut", " answer"] {
                    let event = format!(
                        "data: {}\n\n",
                        json!({"choices": [{"index": 0, "delta": {"content": word}}]})
                    );
                    let framed = format!("{:x}\r\n{event}\r\n", event.len());
                    let _ = stream.write_all(framed.as_bytes()).await;
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
                let _ = stream.write_all(b"0\r\n\r\n").await;
                let _ = stream.shutdown().await;
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_gets_the_whole_answer_when_the_stream_is_not_storable() {
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let url = unfinished_stream_upstream(hits.clone()).await;
    let gw = std::sync::Arc::new(Gateway::start(Config::providers(&url)));
    let path = "/openai/v1/chat/completions";
    let body = chat(true, "never finished");
    let follower = {
        let (gw, body) = (gw.clone(), body.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            stream(&gw, path, &[], &body).await
        })
    };
    let leader = stream(&gw, path, &[], &body).await;
    // `stream` fails the test on a broken body: both ended cleanly.
    let follower = follower.await.unwrap();
    assert_eq!((leader.status, follower.status), (200, 200));
    assert_eq!(leader.body, follower.body, "every byte the leader got");
    assert!(String::from_utf8_lossy(&follower.body).contains("answer"));
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one upstream call"
    );
    // Not stored: without its end marker the answer is not known to be whole.
    let again = stream(&gw, path, &[], &body).await;
    assert_eq!(again.cache, "MISS");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_gets_the_whole_answer_the_provider_did_not_finish_well() {
    // An error inside the 200, a partial answer, a refusal: ended cleanly by the upstream but
    // never stored. The follower still gets every byte its leader got, and a clean end.
    let mock = MockUpstream::start().await;
    let gw = std::sync::Arc::new(Gateway::start(Config::providers(&mock.url())));
    let path = "/openai/v1/chat/completions";
    for outcome in ["error", "partial", "refusal"] {
        for streaming in [false, true] {
            if outcome == "partial" && !streaming {
                continue; // a partial answer is a stream's
            }
            let before = mock.hits();
            let body = chat(streaming, &format!("{outcome} {streaming}"));
            let headers = [("x-mock-outcome", outcome), ("x-mock-delay-ms", "300")];
            let follower = {
                let (gw, body) = (gw.clone(), body.clone());
                tokio::spawn(async move {
                    // joins while the leader waits for the upstream's head
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    stream(&gw, path, &headers, &body).await
                })
            };
            // `stream` fails the test on a broken body: both end cleanly.
            let leader = stream(&gw, path, &headers, &body).await;
            let follower = follower.await.unwrap();
            let case = format!("{outcome}, streaming: {streaming}");
            assert_eq!((leader.status, follower.status), (200, 200), "{case}");
            assert!(!leader.body.is_empty(), "{case}");
            assert_eq!(
                leader.body, follower.body,
                "every byte the leader got: {case}"
            );
            assert_eq!(mock.hits() - before, 1, "one upstream call: {case}");

            let again = stream(&gw, path, &headers, &body).await;
            assert_eq!(again.cache, "MISS", "not stored: {case}");
            assert_eq!(mock.hits() - before, 2, "{case}");
        }
    }
}
