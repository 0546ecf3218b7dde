//! Requests reach the right upstream intact: routing, path and header rewriting, bodies of
//! every allowed size, model rewrite, clear errors for bad input.

use crate::support::{self, blake3_hex, client, Config, Gateway, MockUpstream, Route};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn chat(model: &str, prompt: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": prompt}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_request_is_forwarded_with_prefix_stripped() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    let resp = client()
        .post(gw.url("/openai/v1/chat/completions?trace=1"))
        .header("authorization", "Bearer sk-client")
        .json(&chat("gpt-4o-mini", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello from mock #1"
    );
    let seen = mock.last_request().unwrap();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/v1/chat/completions?trace=1");
    assert_eq!(seen.header("host"), Some(mock.addr().to_string().as_str()));
    // bring-your-own-key: the client's credential passes through untouched
    assert_eq!(seen.header("authorization"), Some("Bearer sk-client"));
    assert_eq!(seen.header("accept-encoding"), Some("identity"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_provider_wire_format_passes_through() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    let c = client();
    let cases = [
        (
            "/anthropic/v1/messages",
            json!({"model": "claude-3-5-haiku-latest", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
            "/v1/messages",
        ),
        (
            "/gemini/v1beta/models/gemini-2.0-flash:generateContent",
            json!({"contents": [{"parts": [{"text": "hi"}]}]}),
            "/v1beta/models/gemini-2.0-flash:generateContent",
        ),
        (
            "/ollama/api/chat",
            json!({"model": "llama3.2", "stream": false, "messages": [{"role": "user", "content": "hi"}]}),
            "/api/chat",
        ),
        (
            "/openai/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": "hi"}),
            "/v1/embeddings",
        ),
    ];
    for (path, body, upstream_path) in cases {
        let resp = c.post(gw.url(path)).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let text = resp.text().await.unwrap();
        assert!(
            serde_json::from_str::<Value>(&text).is_ok(),
            "{path}: {text}"
        );
        assert_eq!(mock.last_request().unwrap().path, upstream_path);
    }
    let models = c.get(gw.url("/openai/v1/models")).send().await.unwrap();
    assert_eq!(models.status(), 200);
    let seen = mock.last_request().unwrap();
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("GET", "/v1/models")
    );
    assert!(
        seen.header("content-length").is_none(),
        "a GET gains no body"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mib_prompt_reaches_the_upstream_intact() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    // Far beyond Pingora's 64 KiB retry buffer, where the stock path would lose the body.
    let prompt: String = (0..(1 << 20))
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let body = serde_json::to_vec(&chat("gpt-4o", &prompt)).unwrap();
    assert!(body.len() > 1 << 20);
    let resp = client()
        .post(gw.url("/openai/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = mock.last_request().unwrap();
    assert_eq!(seen.body.len(), body.len());
    assert_eq!(blake3_hex(&seen.body), blake3_hex(&body));
    assert_eq!(
        seen.header("content-length"),
        Some(body.len().to_string().as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_of_several_mib_is_forwarded_with_a_length() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    let payload: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        payload.chunks(100_000).map(|c| Ok(c.to_vec())).collect();
    let resp = client()
        .post(gw.url("/openai/echo"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(echo["body_len"], payload.len());
    assert_eq!(echo["body_blake3"], blake3_hex(&payload));
    let seen = mock.last_request().unwrap();
    assert_eq!(seen.header("transfer-encoding"), None);
    assert_eq!(
        seen.header("content-length"),
        Some(payload.len().to_string().as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_headers_replace_the_clients_and_model_is_rewritten() {
    let mock = MockUpstream::start().await;
    let config = Config::new()
        .upstream_with(
            "mock",
            &format!("{}/base", mock.url()),
            r#"headers: { authorization: "Bearer ${TEST_INJECTED_KEY}" }"#,
        )
        .route(
            Route::new("cheap")
                .prefix("/openai")
                .model("gpt-4*")
                .targets("[{ upstream: mock, model: llama3.2 }]"),
        )
        .route(
            Route::new("passthrough")
                .prefix("/openai")
                .targets("[mock]"),
        );
    let gw = Gateway::start_with_env(config, &[("TEST_INJECTED_KEY", "sk-injected-secret")]);
    let c = client();
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"temperature":0}"#;
    let resp = c
        .post(gw.url("/openai/chat"))
        .header("authorization", "Bearer sk-client")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = mock.last_request().unwrap();
    assert_eq!(seen.path, "/base/chat");
    assert_eq!(
        seen.header("authorization"),
        Some("Bearer sk-injected-secret")
    );
    let forwarded: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(forwarded["model"], "llama3.2");
    assert_eq!(forwarded["temperature"], 0);
    assert_eq!(
        seen.header("content-length"),
        Some(seen.body.len().to_string().as_str())
    );
    // Field order is kept; only the model changed.
    assert_eq!(
        std::str::from_utf8(&seen.body).unwrap(),
        body.replace("gpt-4o", "llama3.2")
    );

    // A model the first route does not match falls through to the second, untouched.
    let other = r#"{"model":"claude-3","messages":[]}"#;
    c.post(gw.url("/openai/chat"))
        .body(other)
        .send()
        .await
        .unwrap();
    assert_eq!(mock.last_request().unwrap().body, other.as_bytes());

    // The injected key never shows up in the logs.
    assert!(!gw.logs().contains("sk-injected-secret"), "{}", gw.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_path_gets_a_json_404() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    let resp = client()
        .post(gw.url("/openaix/v1/chat?key=secret-in-query"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "no_route");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("/openaix/v1/chat") && !msg.contains("secret-in-query"),
        "{msg}"
    );
    assert_eq!(mock.hits(), 0);
    assert!(!gw.logs().contains("secret-in-query"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_gets_413_and_the_proxy_keeps_serving() {
    let mock = MockUpstream::start().await;
    let gw =
        Gateway::start(Config::providers(&mock.url()).section("limits: { max_body_bytes: 1000 }"));
    let c = reqwest::Client::new(); // pooled: the second request reuses the connection
    let resp = c
        .post(gw.url("/openai/v1/chat/completions"))
        .body(vec![b'x'; 5000])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "request_too_large");
    // Chunked, so the limit is found while reading rather than from Content-Length.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..10).map(|_| Ok(vec![b'y'; 500])).collect();
    let resp = c
        .post(gw.url("/openai/v1/chat/completions"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let ok = c
        .post(gw.url("/openai/v1/chat/completions"))
        .body(r#"{"model":"m"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(mock.hits(), 1, "oversized bodies never reach the upstream");
}

/// Reads one response whose body has a `Content-Length`: (head, body).
fn read_response(s: &mut TcpStream) -> (String, String) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(len) = support::message_len(&seen) {
            let text = String::from_utf8_lossy(&seen[..len]);
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            return (head.to_ascii_lowercase(), body.to_string());
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => panic!(
                "connection ended mid-response: {:?}",
                String::from_utf8_lossy(&seen)
            ),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_oversized_body_gets_its_413_at_once_without_being_sent() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(
        Config::providers(&mock.url()).section("limits: { max_body_bytes: 1048576 }"),
    );
    let addr = gw.addr;
    tokio::task::spawn_blocking(move || {
        // With and without `Expect: 100-continue`: neither client sends a byte of its body.
        for expect in ["", "expect: 100-continue\r\n"] {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let head = format!(
                "POST /openai/v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n{expect}\r\n",
                2 << 20
            );
            let started = Instant::now();
            s.write_all(head.as_bytes()).unwrap();
            let (head, body) = read_response(&mut s);
            let took = started.elapsed();
            eprintln!("413 for a declared 2 MiB body ({expect:?}) after {took:?}");
            assert!(head.starts_with("http/1.1 413"), "{expect:?}: {head}");
            assert!(
                took < Duration::from_millis(100),
                "{expect:?}: 413 after {took:?}"
            );
            assert!(body.contains("request_too_large"), "{body}");
            assert!(head.contains("connection: close"), "{head}");
            // Nothing follows; the connection closes once the short linger is over.
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
            assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
            assert!(started.elapsed() < Duration::from_secs(5), "closed late");
        }
    })
    .await
    .unwrap();
    assert_eq!(mock.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_keeps_sending_after_its_413_is_cut_off_after_a_bounded_drain() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(
        Config::providers(&mock.url()).section("limits: { max_body_bytes: 1048576 }"),
    );
    let addr = gw.addr;
    let (sent, took) = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        let head = format!(
            "POST /openai/v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
            1u64 << 30
        );
        s.write_all(head.as_bytes()).unwrap();
        let (head, _) = read_response(&mut s);
        assert!(head.starts_with("http/1.1 413"), "{head}");
        // A client that ignores the answer and sends its whole gigabyte.
        let chunk = vec![b'x'; 64 * 1024];
        let started = Instant::now();
        let mut sent = 0usize;
        while sent < 1 << 30 {
            match s.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        (sent, started.elapsed())
    })
    .await
    .unwrap();
    eprintln!("after its 413, the client could send {sent} bytes in {took:?}");
    // A few MiB drained, plus what the two sockets' buffers hold.
    assert!(sent < 32 << 20, "the client could send {sent} bytes");
    assert!(took < Duration::from_secs(6), "cut off after {took:?}");
    assert_eq!(mock.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_is_forwarded_untouched_even_where_the_model_is_rewritten() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(
        Config::new()
            .upstream("mock", &mock.url())
            .route(Route::new("rewrite").targets("[{ upstream: mock, model: llama3.2 }]")),
    );
    // The upstream decides what to make of it; promptgate neither rewrites nor rejects it.
    let broken = "{\"model\": \"gpt-4o\", ";
    let resp = client()
        .post(gw.url("/echo"))
        .body(broken)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.last_request().unwrap().body, broken.as_bytes());
}

/// Sends raw bytes and returns what came back until the server closed or `until` appeared.
fn raw_exchange(addr: std::net::SocketAddr, steps: &[&[u8]], until: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut seen = Vec::new();
    for step in steps {
        s.write_all(step).unwrap();
        // After the head, wait for the interim 100 before sending the body.
        if step.ends_with(b"\r\n\r\n") && seen.is_empty() && steps.len() > 1 {
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).unwrap();
            seen.extend_from_slice(&buf[..n]);
        }
    }
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(until) {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_and_hop_by_hop_headers() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    let addr = gw.addr;
    let body = br#"{"model":"gpt-4o","messages":[]}"#;
    let head = format!(
        "POST /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: keep-alive, x-hop\r\nX-Hop: drop-me\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nConnection: X-Second-Hop\r\nX-Second-Hop: drop-me-too\r\n\r\n",
        body.len()
    );
    let out = tokio::task::spawn_blocking(move || {
        raw_exchange(addr, &[head.as_bytes(), body], "Hello from mock")
    })
    .await
    .unwrap();
    assert!(out.starts_with("HTTP/1.1 100 Continue\r\n"), "{out}");
    assert!(out.contains("HTTP/1.1 200"), "{out}");
    let seen = mock.last_request().unwrap();
    assert_eq!(seen.body, &body[..]);
    for gone in [
        "expect",
        "x-hop",
        "x-second-hop",
        "keep-alive",
        "te",
        "connection",
    ] {
        assert!(
            seen.header(gone).is_none(),
            "{gone} forwarded: {:?}",
            seen.headers
        );
    }
}

/// An upstream answering with hop-by-hop fields (the standard ones and one its `Connection`
/// nominates) among end-to-end ones: none of the former reach the client, the latter do (a
/// repeated one in its order) on the miss and on the hits replayed from the cache, to an
/// HTTP/1.1 and an h2c client alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_headers_stay_with_the_upstream() {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let body = r#"{"id":"c1","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
                while support::read_request(&mut stream).await.is_some() {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nConnection: X-Hop-Response, keep-alive\r\nX-Request-Id: req-1\r\nX-Region: eu\r\nKeep-Alive: timeout=5\r\nX-Hop-Response: secret\r\nX-Multi: one\r\nProxy-Authenticate: Basic\r\nContent-Type: application/json\r\nTrailer: X-Checksum\r\nX-Multi: two\r\nConnection: X-Second-Hop\r\nX-Second-Hop: also\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    if stream
                        .write_all(format!("{head}{body}").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    let gw = Gateway::start(
        Config::new()
            .upstream("raw", &format!("http://{addr}"))
            .route(Route::prefixed("openai").targets("[raw]")),
    );
    let h2c = support::h2c_client();
    for (round, (c, cache)) in [(client(), "MISS"), (client(), "HIT"), (h2c, "HIT")]
        .into_iter()
        .enumerate()
    {
        let resp = c
            .post(gw.url("/openai/v1/chat/completions"))
            .json(&chat("gpt-4o", "hop"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "round {round}");
        let h = resp.headers();
        assert_eq!(h["x-promptgate-cache"], cache, "round {round}");
        for gone in [
            "x-hop-response",
            "x-second-hop",
            "keep-alive",
            "proxy-authenticate",
            "trailer",
        ] {
            assert!(
                h.get(gone).is_none(),
                "round {round}: {gone} relayed: {h:?}"
            );
        }
        if let Some(connection) = h.get("connection") {
            // Only the client connection's own (HTTP/1.1), never the upstream's nominations.
            assert!(
                !connection
                    .to_str()
                    .unwrap()
                    .to_ascii_lowercase()
                    .contains("x-hop"),
                "round {round}: {h:?}"
            );
        }
        assert_eq!(h["x-region"], "eu", "round {round}");
        // The upstream's request id belongs to its exchange: relayed, never replayed.
        let request_id = h.get("x-request-id").map(|v| v.to_str().unwrap());
        assert_eq!(request_id, (round == 0).then_some("req-1"), "round {round}");
        assert_eq!(h["content-type"], "application/json", "round {round}");
        let multi: Vec<_> = h.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["one", "two"], "round {round}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            body["choices"][0]["message"]["content"], "hi",
            "round {round}"
        );
    }
    upstream.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_pooled() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    let c = client();
    for i in 0..5 {
        let resp = c
            .post(gw.url("/openai/v1/chat/completions"))
            .json(&chat("m", &format!("hi {i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    assert_eq!(mock.hits(), 5);
    assert_eq!(mock.connections(), 1, "keep-alive to the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_clients_are_served() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    let c = support::h2c_client();
    let resp = c
        .post(gw.url("/openai/v1/chat/completions"))
        .json(&chat("m", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello from mock #1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_host_names_resolve_asynchronously() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(
        Config::new()
            .upstream("local", &format!("http://localhost:{}", mock.addr().port()))
            .upstream("nowhere", "http://promptgate-test.invalid:80")
            .route(Route::prefixed("local").targets("[local]"))
            .route(
                Route::prefixed("nowhere")
                    .keep_prefix()
                    .targets("[nowhere]"),
            ),
    );
    let c = client();
    let ok = c
        .post(gw.url("/local/v1/chat/completions"))
        .json(&chat("m", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        mock.last_request().unwrap().header("host"),
        Some(format!("localhost:{}", mock.addr().port()).as_str())
    );
    let bad = c
        .post(gw.url("/nowhere"))
        .json(&chat("m", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 502);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["error"]["type"], "upstream_unresolvable");
    // the process is still serving
    let again = c
        .post(gw.url("/local/v1/chat/completions"))
        .json(&chat("m", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
}
