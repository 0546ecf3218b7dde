//! Hostile requests over raw TCP: ambiguous framing (smuggling), path tricks, absolute-form
//! targets and client routing headers (SSRF), header injection — each checked at the mock
//! upstream, which records exactly what reached it.

use crate::support::gateway::binary;
use crate::support::{Config, Gateway, MockUpstream, Route};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

/// Two upstreams on one mock, told apart by their base paths.
fn config(mock: &str) -> Config {
    Config::new()
        .upstream("openai_up", &format!("{mock}/base"))
        .upstream("anthropic_up", &format!("{mock}/anth"))
        .route(Route::prefixed("openai").targets("[openai_up]"))
        .route(Route::prefixed("anthropic").targets("[anthropic_up]"))
}

/// What came back on one raw connection.
struct Reply {
    text: String,
    /// The server closed the connection (EOF) after its answer.
    closed: bool,
}

impl Reply {
    fn status(&self) -> u16 {
        self.text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    fn body(&self) -> &str {
        self.text.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }
}

/// Sends `raw` on a fresh connection and reads until the server closes it, or until nothing
/// more arrives for a while (a connection kept alive).
fn send_raw(addr: SocketAddr, raw: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    // The server may close before reading everything we send; that is its right.
    let _ = s.write_all(raw);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(10);
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    Reply {
        text: String::from_utf8_lossy(&out).into_owned(),
        closed,
    }
}

/// A complete POST with a JSON body, closing the connection after the answer. It skips the
/// cache, so every accepted request reaches the upstream and can be inspected there.
fn post(target: &str, extra_headers: &str) -> Vec<u8> {
    let body = r#"{"model":"gpt-4o-mini","messages":[]}"#;
    format!(
        "POST {target} HTTP/1.1\r\nHost: promptgate.test\r\nx-promptgate-cache: bypass\r\n{extra_headers}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Lets anything the proxy might still forward reach the mock before counting.
fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_is_refused_closed_and_never_forwarded() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(config(&mock.url()));
    let head = "POST /openai/v1/chat/completions HTTP/1.1\r\nHost: promptgate.test\r\nx-promptgate-cache: bypass\r\n";
    // Each body hides a second request that a hop reading the other framing would see.
    let smuggled = "GET /openai/v1/models HTTP/1.1\r\nHost: promptgate.test\r\n\r\n";
    let cases: Vec<(&str, String)> = vec![
        (
            "Content-Length then Transfer-Encoding",
            format!("{head}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "Transfer-Encoding then Content-Length",
            format!("{head}Transfer-Encoding: chunked\r\nContent-Length: 60\r\n\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "identical duplicate Content-Length",
            format!("{head}Content-Length: 2\r\nContent-Length: 2\r\n\r\n{{}}{smuggled}"),
        ),
        (
            "identical duplicate Content-Length, names in another case",
            format!("{head}Content-Length: 2\r\ncontent-LENGTH: 2\r\n\r\n{{}}{smuggled}"),
        ),
        (
            "Content-Length list",
            format!("{head}Content-Length: 2, 2\r\n\r\n{{}}{smuggled}"),
        ),
        (
            "differing duplicate Content-Length",
            format!("{head}Content-Length: 2\r\nContent-Length: 60\r\n\r\n{{}}{smuggled}"),
        ),
        (
            "non-numeric Content-Length",
            format!("{head}Content-Length: +2\r\n\r\n{{}}{smuggled}"),
        ),
        (
            "Transfer-Encoding twice",
            format!("{head}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "Transfer-Encoding with another coding",
            format!("{head}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "Transfer-Encoding not chunked",
            format!("{head}Transfer-Encoding: identity\r\n\r\n{smuggled}"),
        ),
        (
            "chunk size not hex",
            format!("{head}Transfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "chunk size overflows",
            format!("{head}Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\n{{}}\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "chunk data longer than its size",
            format!("{head}Transfer-Encoding: chunked\r\n\r\n1\r\n{{}}\r\n0\r\n\r\n{smuggled}"),
        ),
    ];
    for (name, raw) in &cases {
        let reply = send_raw(gw.addr, raw.as_bytes());
        assert_eq!(reply.status(), 400, "{name}: {}", reply.text);
        assert!(reply.closed, "{name}: connection left open: {}", reply.text);
        assert_eq!(
            reply.text.matches("HTTP/1.1 ").count(),
            1,
            "{name}: the hidden request was answered: {}",
            reply.text
        );
    }
    settle();
    assert_eq!(
        mock.hits(),
        0,
        "forwarded: {:?}",
        mock.requests().iter().map(|r| &r.path).collect::<Vec<_>>()
    );

    // The same requests, framed plainly, do go through: the refusals above are about framing.
    let chunked = format!(
        "{head}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"
    );
    assert_eq!(send_raw(gw.addr, chunked.as_bytes()).status(), 200);
    let plain = format!("{head}Content-Length: 2\r\nConnection: close\r\n\r\n{{}}");
    assert_eq!(send_raw(gw.addr, plain.as_bytes()).status(), 200);
    assert_eq!(mock.hits(), 2);
    assert!(mock.requests().iter().all(|r| r.body.as_ref() == b"{}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_on_the_normalised_path_and_never_escapes_the_base_path() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(config(&mock.url()));
    // (client path, path the upstream must get)
    let forwarded = [
        ("/openai/v1/chat/completions", "/base/v1/chat/completions"),
        ("/openai/v1/../chat/completions", "/base/chat/completions"),
        (
            "/openai//v1///chat/completions",
            "/base/v1/chat/completions",
        ),
        ("/openai/./v1/chat/completions", "/base/v1/chat/completions"),
        ("//openai/v1/chat/completions", "/base/v1/chat/completions"),
        // routed by where the path really leads, not by how it starts
        ("/openai/../anthropic/v1/messages", "/anth/v1/messages"),
        ("/openai/%2e%2e/anthropic/v1/messages", "/anth/v1/messages"),
        ("/openai/%2E./anthropic/v1/messages", "/anth/v1/messages"),
        ("/openai/v1/%63hat?x=1", "/base/v1/chat?x=1"),
    ];
    for (client_path, want) in forwarded {
        let before = mock.hits();
        let reply = send_raw(gw.addr, &post(client_path, ""));
        assert_eq!(reply.status(), 200, "{client_path}: {}", reply.text);
        assert_eq!(mock.hits(), before + 1, "{client_path}");
        assert_eq!(mock.last_request().unwrap().path, want, "{client_path}");
    }
    let sent = mock.hits();

    // Refused before routing: 400, JSON, connection closed, nothing forwarded.
    let refused = [
        "/openai/..%2f..%2fadmin",
        "/openai%2f..%2fadmin",
        "/openai/..%5c..%5cadmin",
        "/openai/../../etc/passwd",
        "/openai/%2e%2e/%2e%2e/etc/passwd",
        "/openai/..;/anthropic/v1/messages",
        "/openai/v1/%00",
        "/openai/v1/%0d%0aX-Injected:%201",
        "/openai/v1/%zz",
    ];
    for client_path in refused {
        let reply = send_raw(gw.addr, &post(client_path, ""));
        assert_eq!(reply.status(), 400, "{client_path}: {}", reply.text);
        assert!(reply.closed, "{client_path}");
        let body: serde_json::Value = serde_json::from_str(reply.body())
            .unwrap_or_else(|e| panic!("{client_path}: {e}: {}", reply.text));
        assert_eq!(body["error"]["type"], "bad_request", "{client_path}");
    }
    // Leads outside every route once normalised: no route, nothing forwarded.
    for client_path in ["/openai/../admin", "/openai/%2e%2e/metrics", "/openai/.."] {
        let reply = send_raw(gw.addr, &post(client_path, ""));
        assert_eq!(reply.status(), 404, "{client_path}: {}", reply.text);
    }
    settle();
    assert_eq!(mock.hits(), sent, "{:?}", mock.last_request());
    for r in mock.requests() {
        assert!(
            r.path.starts_with("/base/") || r.path.starts_with("/anth/"),
            "escaped its base path: {}",
            r.path
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_host_forwarded_headers_and_absolute_urls_never_pick_the_upstream() {
    let mock = MockUpstream::start().await;
    // A listener standing in for an attacker's target: nothing may ever connect to it.
    let evil = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    evil.set_nonblocking(true).unwrap();
    let evil_addr = evil.local_addr().unwrap();
    let gw = Gateway::start(config(&mock.url()));
    let mock_host = mock.addr().to_string();

    let requests = [
        // absolute-form target (its authority must then match Host)
        format!(
            "POST http://{evil_addr}/openai/v1/chat/completions HTTP/1.1\r\nHost: {evil_addr}\r\nx-promptgate-cache: bypass\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        ),
        format!(
            "POST http://{evil_addr}/openai/v1/chat/completions HTTP/1.1\r\nx-promptgate-cache: bypass\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        ),
        String::from_utf8(post(
            "/openai/v1/chat/completions",
            &format!(
                "X-Forwarded-Host: {evil_addr}\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Port: {}\r\nForwarded: host={evil_addr};proto=http\r\nX-Original-URL: http://{evil_addr}/\r\nX-Rewrite-URL: /admin\r\n",
                evil_addr.port()
            ),
        ))
        .unwrap(),
        format!(
            "POST /openai/v1/chat/completions HTTP/1.1\r\nHost: {evil_addr}\r\nx-promptgate-cache: bypass\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        ),
    ];
    for raw in &requests {
        let before = mock.hits();
        let reply = send_raw(gw.addr, raw.as_bytes());
        assert_eq!(reply.status(), 200, "{raw}\n→ {}", reply.text);
        assert_eq!(mock.hits(), before + 1, "{raw}");
        let got = mock.last_request().unwrap();
        assert_eq!(got.path, "/base/v1/chat/completions", "{raw}");
        assert_eq!(got.header("host"), Some(mock_host.as_str()), "{raw}");
        assert_eq!(
            got.headers.iter().filter(|(n, _)| n == "host").count(),
            1,
            "{raw}"
        );
    }
    settle();
    assert!(
        evil.accept().is_err(),
        "promptgate connected to a host the client named"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_in_client_headers_never_split_a_header_upstream() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(config(&mock.url()));
    let attempts: [&[u8]; 5] = [
        b"X-Evil: a\rX-Injected: 1\r\n",
        b"X-Evil: a\0X-Injected: 1\r\n",
        b"X-Evil: a\r\n X-Injected: 1\r\n",
        b"X-Evil: a\r\n\tX-Injected: 1\r\n",
        b"X-Evil\r\nX-Injected: 1\r\n",
    ];
    for extra in attempts {
        let mut raw =
            b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: promptgate.test\r\n".to_vec();
        raw.extend_from_slice(extra);
        raw.extend_from_slice(b"Content-Length: 2\r\nConnection: close\r\n\r\n{}");
        let reply = send_raw(gw.addr, &raw);
        assert_eq!(
            reply.status(),
            400,
            "{:?} → {}",
            String::from_utf8_lossy(extra),
            reply.text
        );
    }
    settle();
    // Nothing got through; and had anything, no header would have been split.
    assert_eq!(mock.hits(), 0);
    for r in mock.requests() {
        assert!(r.header("x-injected").is_none(), "{:?}", r.headers);
        for (n, v) in &r.headers {
            assert!(
                !format!("{n}{v}").contains(['\r', '\n', '\0']),
                "{n}: {v:?}"
            );
        }
    }
}

#[test]
fn control_characters_in_env_values_are_refused_without_echoing_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        "upstreams:\n  a:\n    url: \"http://127.0.0.1:1\"\n    headers: { authorization: \"Bearer ${PG_EVIL_KEY}\" }\nroutes:\n  - { name: r, targets: [a] }\n",
    )
    .unwrap();
    for evil in [
        "sk-crlf-93f1\r\nX-Injected: 1",
        "sk-lf-93f1\nX-Injected: 1",
        "sk-nul-93f1\0tail",
    ] {
        let out = Command::new(binary())
            .args(["check", "--config"])
            .arg(&path)
            .env("PG_EVIL_KEY", evil.replace('\0', "\u{1}"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{evil:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("upstreams.a.headers.authorization"),
            "{evil:?}: {err}"
        );
        assert!(!err.contains("93f1"), "the value was echoed: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_port_serves_no_admin_route_and_admin_defaults_to_localhost() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(config(&mock.url()));
    for (method, path) in [
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("POST", "/reload"),
        ("GET", "/openai/../metrics"),
        ("GET", "/openai/%2e%2e/healthz"),
    ] {
        let raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            gw.admin
        );
        let reply = send_raw(gw.addr, raw.as_bytes());
        assert_eq!(reply.status(), 404, "{method} {path}: {}", reply.text);
        assert!(!reply.text.contains("promptgate_"), "{}", reply.text);
    }
    // The admin listener is the one that answers them.
    let reply = send_raw(
        gw.admin,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(reply.status(), 200);
    settle();
    assert_eq!(mock.hits(), 0);

    let default_admin: SocketAddr = promptgate::config::schema::default_admin().parse().unwrap();
    assert!(default_admin.ip().is_loopback(), "{default_admin}");
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/promptgate.yaml"))
            .unwrap();
    for line in shipped.lines().filter(|l| l.starts_with("admin:")) {
        assert!(line.contains("127.0.0.1"), "shipped config: {line}");
    }
}

/// A head that is not HTTP gets a plain 400 and a closed connection; CONNECT (promptgate is no
/// tunnel) a 405; neither reaches the upstream, and the next request is served as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_head_is_400_and_connect_is_405_and_neither_is_forwarded() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(config(&mock.url()));
    for (name, raw, status) in [
        (
            "not HTTP",
            "HELLO THERE, THIS IS NOT HTTP AT ALL\r\n\r\n",
            400,
        ),
        (
            "bad header line",
            "GET /openai/v1/models HTTP/1.1\r\nHost promptgate.test\r\n\r\n",
            400,
        ),
        (
            "CONNECT",
            "CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n",
            405,
        ),
    ] {
        let reply = send_raw(gw.addr, raw.as_bytes());
        assert_eq!(reply.status(), status, "{name}: {}", reply.text);
        assert!(reply.closed, "{name}: the connection stays open");
    }
    settle();
    assert_eq!(mock.hits(), 0, "{:?}", mock.last_request());
    assert_eq!(
        send_raw(gw.addr, &post("/openai/v1/chat/completions", "")).status(),
        200
    );
    assert_eq!(mock.hits(), 1);
}

/// A whole request shorter than the 24-byte h2 preface is answered at once: the port decides
/// HTTP/1.x at the first byte that is not the preface's (`src/proxy/port.rs`). Pingora's own
/// detection waited for 24 bytes, so these hung until the client gave up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_shorter_than_the_h2_preface_are_answered_at_once() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(config(&mock.url()));
    for (name, raw, status) in [
        ("HTTP/1.0 GET, 18 bytes", "GET / HTTP/1.0\r\n\r\n", 404),
        (
            "a load balancer's check, 22 bytes",
            "OPTIONS / HTTP/1.0\r\n\r\n",
            404,
        ),
        ("not HTTP, 9 bytes", "HELLO\r\n\r\n", 400),
    ] {
        let started = Instant::now();
        let reply = send_raw(gw.addr, raw.as_bytes());
        assert_eq!(reply.status(), status, "{name}: {:?}", reply.text);
        assert!(reply.closed, "{name}: the connection stays open");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{name}: {:?}",
            started.elapsed()
        );
    }
    // Byte by byte: the decision and the bytes read for it survive partial reads.
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_nodelay(true).unwrap();
    for b in "GET /openai/v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".bytes() {
        s.write_all(&[b]).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert_eq!(mock.hits(), 1, "{:?}", mock.last_request());
}

/// The h2 preface split across reads is still h2c: the server answers with its SETTINGS frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_preface_split_across_reads_is_still_h2c() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(config(&mock.url()));
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(b"\r\nSM\r\n\r\n").unwrap();
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
    let mut frame = [0u8; 9];
    s.read_exact(&mut frame).unwrap();
    assert_eq!(
        frame[3], 4,
        "the first frame is the server's SETTINGS: {frame:?}"
    );
}
