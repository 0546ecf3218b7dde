//! Secret hygiene: distinctive fake keys — the client's (`Authorization`, `x-api-key`,
//! `x-goog-api-key`, `?key=`) and the injected ones (`${ENV}` in `upstreams.*.headers`) — are
//! driven through every path (miss, hit, stream, upstream error, reset, timeout, unreachable
//! upstream, no route, 413, refused framing and paths, reload and `check` errors,
//! `promptgate key`) and must appear nowhere: not in the process output at debug level, not in
//! a response body or header, not in `/metrics` or `/stats`.
//!
//! (`/config` does not exist yet; when it does, add its body to `seen` below.)

use crate::support::gateway::binary;
use crate::support::{client, free_port, get_text, Config, Gateway, MockUpstream, Route};
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Every fake key contains this, so one search finds any of them, whole or in part.
const MARK: &str = "pgleak";
const BEARER: &str = "sk-pgleak-bearer-4f9a1c";
const X_API_KEY: &str = "sk-ant-pgleak-xapi-77c1d0";
const GOOG_KEY: &str = "AIza-pgleak-goog-2b8e44";
const QUERY_KEY: &str = "pgleak-query-5d2e9a";
const ENV_KEY: &str = "sk-pgleak-env-9b3c7f";

fn config(mock: &str, dead_port: u16) -> Config {
    Config::new()
        .section("limits: { max_body_bytes: 65536 }")
        .upstream_with(
            "mock",
            mock,
            r#"headers: { x-injected-key: "${PG_SECRET_KEY}" }"#,
        )
        .upstream_with(
            "slow",
            mock,
            r#"headers: { authorization: "Bearer ${PG_SECRET_KEY}" }, timeouts: { first_byte: 300ms }"#,
        )
        .upstream_with(
            "dead",
            &format!("http://127.0.0.1:{dead_port}"),
            r#"headers: { x-api-key: "${PG_SECRET_KEY}" }, timeouts: { connect: 500ms }"#,
        )
        .route(Route::prefixed("openai").targets("[mock]"))
        .route(Route::prefixed("anthropic").targets("[mock]"))
        .route(Route::prefixed("gemini").targets("[mock]"))
        .route(Route::prefixed("slow").targets("[slow]"))
        .route(Route::prefixed("dead").targets("[dead]"))
}

/// A config that fails validation in every way that could echo an `${ENV}` value: the key put
/// where a URL, a duration, an enum, a header name and a number belong.
const BROKEN: &str = r#"
upstreams:
  mock:
    url: "${PG_SECRET_KEY}"
    headers: { "bad header ${PG_SECRET_KEY}": "x", x-ok: "${PG_SECRET_KEY}\u0001" }
    timeouts: { read: "${PG_SECRET_KEY}" }
  other:
    url: "http://${PG_SECRET_KEY}:99999"
routes:
  - name: r
    strategy: "${PG_SECRET_KEY}"
    match: { path_prefix: "${PG_SECRET_KEY}", model: 7 }
    targets: ["${PG_SECRET_KEY}"]
cache: { ttl: "${PG_SECRET_KEY}", scope: "${PG_SECRET_KEY}" }
limits: { max_body_bytes: "${PG_SECRET_KEY}" }
"#;

/// One request with every client credential; returns all the client sees of the answer.
async fn exchange(
    method: reqwest::Method,
    url: String,
    headers: &[(&str, &str)],
    body: String,
) -> (u16, String) {
    let mut req = client()
        .request(method, url)
        .header("authorization", format!("Bearer {BEARER}"))
        .header("x-api-key", X_API_KEY)
        .header("x-goog-api-key", GOOG_KEY)
        .header("content-type", "application/json")
        .body(body);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let mut seen = format!("{status} {:?}\n", resp.headers());
            match resp.bytes().await {
                Ok(b) => seen.push_str(&String::from_utf8_lossy(&b)),
                Err(e) => seen.push_str(&format!("(body broke off: {e})")),
            }
            (status, seen)
        }
        Err(e) => (0, format!("(no response: {e})")),
    }
}

fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn chat(stream: bool) -> String {
    json!({"model": "gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_never_appear_in_output_errors_or_metrics() {
    let mock = MockUpstream::start().await;
    let dead_port = free_port();
    let gw = Gateway::start_with_env(
        config(&mock.url(), dead_port),
        // Everything an operator can ask for without naming Pingora's request crates.
        &[
            ("PG_SECRET_KEY", ENV_KEY),
            ("RUST_LOG", "debug,pingora=debug"),
        ],
    );
    let post = reqwest::Method::POST;
    let mut seen = String::new();
    let mut statuses = Vec::new();
    let mut run = |(status, text): (u16, String)| {
        statuses.push(status);
        seen.push_str(&text);
        seen.push('\n');
    };

    // Misses then hits, JSON and streams, each provider's credential style.
    for _ in 0..2 {
        let url = gw.url("/openai/v1/chat/completions");
        run(exchange(post.clone(), url.clone(), &[], chat(false)).await);
        run(exchange(post.clone(), url, &[], chat(true)).await);
        let url = gw.url("/anthropic/v1/messages");
        run(exchange(
            post.clone(),
            url,
            &[("anthropic-version", "2023-06-01")],
            chat(false),
        )
        .await);
        let url = gw.url(&format!(
            "/gemini/v1beta/models/gemini-pro:generateContent?key={QUERY_KEY}"
        ));
        run(exchange(post.clone(), url, &[], r#"{"contents":[]}"#.into()).await);
    }
    // Upstream errors, a reset, a truncated stream, a timeout, an unreachable upstream.
    let url = gw.url(&format!("/openai/v1/chat/completions?key={QUERY_KEY}"));
    for fault in [
        ("x-mock-status", "500"),
        ("x-mock-status", "429"),
        ("x-mock-fault", "reset"),
        ("x-mock-fault", "truncate"),
    ] {
        run(exchange(post.clone(), url.clone(), &[fault], chat(true)).await);
    }
    let slow = gw.url(&format!("/slow/v1/chat/completions?key={QUERY_KEY}"));
    run(exchange(
        post.clone(),
        slow,
        &[("x-mock-delay-ms", "2000")],
        chat(false),
    )
    .await);
    let dead = gw.url(&format!("/dead/v1/chat/completions?key={QUERY_KEY}"));
    run(exchange(post.clone(), dead, &[], chat(false)).await);
    // Requests promptgate itself refuses: no route, too large, bad controls.
    let nowhere = gw.url(&format!("/nowhere?key={QUERY_KEY}"));
    run(exchange(reqwest::Method::GET, nowhere, &[], String::new()).await);
    let big = "x".repeat(100_000);
    run(exchange(
        post.clone(),
        gw.url("/openai/v1/chat/completions"),
        &[],
        big,
    )
    .await);
    let url = gw.url("/openai/v1/chat/completions");
    run(exchange(
        post.clone(),
        url,
        &[("x-promptgate-ttl", "soon")],
        chat(false),
    )
    .await);

    // Raw requests refused before routing, each carrying the client's key: ambiguous framing,
    // a malformed head (Pingora logs the head of those at debug level), a path trick.
    let auth = format!("Authorization: Bearer {BEARER}\r\nx-api-key: {X_API_KEY}\r\n");
    for head in [
        format!("POST /openai/v1/chat/completions?key={QUERY_KEY} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        format!("POST /openai/v1/chat/completions?key={QUERY_KEY} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 2\r\nContent-Length: 3\r\n\r\n{{}}"),
        format!("POST /openai/v1/chat/completions?key={QUERY_KEY} HTTP/1.1\r\nHost: x\r\n{auth}X-Bad: a\rb\r\nContent-Length: 2\r\n\r\n{{}}"),
        format!("POST /openai/%2e%2e/%2e%2e/x?key={QUERY_KEY} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 2\r\n\r\n{{}}"),
        format!("POST /openai/v1/chat/completions?key={QUERY_KEY} HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"),
    ] {
        let answer = raw(gw.addr, head.as_bytes());
        statuses.push(answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0));
        seen.push_str(&answer);
    }

    // A broken config, through POST /reload and `promptgate check`.
    std::fs::write(gw.config_path(), gw.config_text(BROKEN)).unwrap();
    let reload = client().post(gw.admin_url("/reload")).send().await.unwrap();
    assert_eq!(reload.status(), 422);
    seen.push_str(&reload.text().await.unwrap());
    let check = Command::new(binary())
        .args(["check", "--config"])
        .arg(gw.config_path())
        .env("PG_SECRET_KEY", ENV_KEY)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(!check.status.success());
    let check_out = String::from_utf8_lossy(&check.stderr).into_owned()
        + &String::from_utf8_lossy(&check.stdout);
    assert!(check_out.contains("problem"), "{check_out}");

    // `promptgate key` hashes the credential; it never prints it.
    let key_config = gw.config_path().with_file_name("key.yaml");
    std::fs::write(&key_config, config(&mock.url(), dead_port).to_string()).unwrap();
    let mut child = Command::new(binary())
        .args(["key", "--config"])
        .arg(&key_config)
        .args(["--route", "openai", "--path", "/openai/v1/chat/completions"])
        .args(["-H", &format!("Authorization: Bearer {BEARER}")])
        .args(["-H", &format!("x-api-key: {X_API_KEY}")])
        .env("PG_SECRET_KEY", ENV_KEY)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(chat(false).as_bytes())
        .unwrap();
    let key_out = child.wait_with_output().unwrap();
    assert!(
        key_out.status.success(),
        "{}",
        String::from_utf8_lossy(&key_out.stderr)
    );
    let key_out = String::from_utf8_lossy(&key_out.stdout).into_owned()
        + &String::from_utf8_lossy(&key_out.stderr);

    let metrics = get_text(&gw.admin_url("/metrics")).await;
    // The dashboard's data: recent requests, the last (failed) reload's error.
    let stats = get_text(&gw.admin_url("/stats")).await;
    assert!(stats.contains("\"last_reload\":{"), "{stats}");
    // Let the last access-log lines reach the log file.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = gw.logs();

    // The traffic really went where it should: hits, and each kind of failure.
    for want in [200, 500, 429, 502, 504, 404, 413, 400] {
        assert!(statuses.contains(&want), "no {want} among {statuses:?}");
    }
    assert!(seen.contains("HIT"), "no cache hit: {seen}");
    assert!(logs.contains("DEBUG"), "not logging at debug level");
    assert!(metrics.contains("promptgate_"), "{metrics}");
    // And the keys really were used: the injected one and the client's reached the upstream.
    let upstream_got = mock.requests();
    assert!(upstream_got
        .iter()
        .any(|r| r.header("x-injected-key") == Some(ENV_KEY)));
    assert!(upstream_got
        .iter()
        .any(|r| r.header("authorization") == Some(format!("Bearer {BEARER}").as_str())));
    assert!(upstream_got
        .iter()
        .any(|r| r.path.contains(&format!("key={QUERY_KEY}"))));

    let mut leaks = Vec::new();
    for (what, text) in [
        ("responses", &seen),
        ("process output at debug level", &logs),
        ("POST /reload and `promptgate check`", &check_out),
        ("`promptgate key`", &key_out),
        ("/metrics", &metrics),
        ("/stats", &stats),
    ] {
        for line in text.lines().filter(|l| l.contains(MARK)) {
            let at = line.find(MARK).unwrap_or(0);
            let from = line[..at]
                .char_indices()
                .rev()
                .nth(200)
                .map_or(0, |(i, _)| i);
            let mut to = (at + 100).min(line.len());
            while !line.is_char_boundary(to) {
                to += 1;
            }
            leaks.push(format!("{what}: …{}…", &line[from..to]));
        }
    }
    assert!(leaks.is_empty(), "keys leaked:\n{}", leaks.join("\n"));
}
