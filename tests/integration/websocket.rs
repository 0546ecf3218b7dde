//! WebSocket upgrades are tunnelled to the routed upstream (101, then frames both ways, never
//! cached, counted in metrics), or refused at once with a JSON error on a route that does not
//! allow them. Driven by a raw client over TCP, against the mock's Realtime-like endpoint.

use crate::support::{get_text, Config, Gateway, MockUpstream, Route};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The RFC 6455 example key and the accept value it must produce.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A raw WebSocket client: the connection and the bytes read past what was parsed.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    /// Sends the upgrade request; returns the client and the response head (lowercased).
    async fn connect(gw: &Gateway, path: &str, extra: &str) -> (Client, String) {
        Client::connect_with(gw, path, &format!("Sec-WebSocket-Key: {KEY}\r\n{extra}")).await
    }

    /// Like [`Client::connect`], with `headers` (CRLF-terminated lines) instead of the key.
    async fn connect_with(gw: &Gateway, path: &str, headers: &str) -> (Client, String) {
        let addr = gw
            .url("")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nAuthorization: Bearer sk-client\r\n{headers}\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut client = Client {
            stream,
            buf: Vec::new(),
        };
        let head = loop {
            if let Some(end) = client.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&client.buf[..end]).to_ascii_lowercase();
                client.buf.drain(..end + 4);
                break head;
            }
            client.read_more().await;
        };
        (client, head)
    }

    async fn read_more(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk))
            .await
            .expect("read timed out")
            .unwrap();
        assert!(n > 0, "connection closed early");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// One server frame (unmasked, payload < 64 KiB): opcode and payload.
    async fn frame(&mut self) -> (u8, Vec<u8>) {
        loop {
            if self.buf.len() >= 2 {
                let (len, header) = match self.buf[1] & 0x7F {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    126 => (usize::MAX, 4),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.buf.len() >= header + len {
                    let opcode = self.buf[0] & 0x0F;
                    let payload = self.buf[header..header + len].to_vec();
                    self.buf.drain(..header + len);
                    return (opcode, payload);
                }
            }
            self.read_more().await;
        }
    }

    /// The JSON body of a plain (not upgraded) answer whose head was `head`.
    async fn json_body(&mut self, head: &str) -> Value {
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .expect("a content-length")
            .trim()
            .parse()
            .unwrap();
        while self.buf.len() < len {
            self.read_more().await;
        }
        serde_json::from_slice(&self.buf[..len]).unwrap()
    }

    async fn event(&mut self) -> Value {
        let (opcode, payload) = self.frame().await;
        assert_eq!(opcode, 1, "a text frame");
        serde_json::from_slice(&payload).unwrap()
    }

    /// Sends one masked client frame (RFC 6455 requires clients to mask).
    async fn send(&mut self, opcode: u8, payload: &[u8]) {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![0x80 | opcode];
        if payload.len() < 126 {
            out.push(0x80 | payload.len() as u8);
        } else {
            out.push(0x80 | 126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&out).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_is_tunnelled_both_ways_and_never_cached() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    for round in 1..=2 {
        let (mut ws, head) =
            Client::connect(&gw, "/openai/v1/realtime?model=gpt-realtime", "").await;
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(head.contains(&format!(
            "sec-websocket-accept: {}",
            ACCEPT.to_ascii_lowercase()
        )));
        assert!(head.contains("upgrade: websocket"), "{head}");
        assert!(head.contains("connection: upgrade"), "{head}");
        assert!(
            !head.contains("x-promptgate-cache"),
            "a tunnel is not a cache answer: {head}"
        );
        // Sent by the upstream in the same write as its 101: handed on all the same.
        assert_eq!(ws.event().await["type"], "session.created");

        let update = json!({"type": "session.update", "session": {"instructions": format!("round {round}")}});
        ws.send(1, update.to_string().as_bytes()).await;
        let updated = ws.event().await;
        assert_eq!(updated["type"], "session.updated");
        assert_eq!(updated["session"]["instructions"], format!("round {round}"));
        // A larger frame, in both directions.
        let big = json!({"type": "input_audio_buffer.append", "audio": "A".repeat(20_000)});
        ws.send(1, big.to_string().as_bytes()).await;
        assert_eq!(ws.event().await["event"], big);
        ws.send(9, b"ping").await;
        assert_eq!(ws.frame().await, (0xA, b"ping".to_vec()));
        if round == 2 {
            // Open longer than the 1 s bucket the request's duration must still fall in.
            tokio::time::sleep(Duration::from_millis(1200)).await;
        }
        ws.send(8, &[0x03, 0xE8]).await;
        assert_eq!(ws.frame().await, (0x8, vec![0x03, 0xE8]));
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), ws.stream.read_to_end(&mut rest)).await;
        assert!(
            closed.is_ok_and(|r| r.is_ok()),
            "the tunnel closes with the upstream"
        );
        assert_eq!(mock.hits(), round, "every upgrade goes upstream");
    }
    let seen = mock.last_request().unwrap();
    assert_eq!(seen.path, "/v1/realtime?model=gpt-realtime");
    assert_eq!(seen.header("upgrade"), Some("websocket"));
    assert!(seen
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("upgrade")));
    assert_eq!(seen.header("sec-websocket-key"), Some(KEY));
    assert_eq!(seen.header("authorization"), Some("Bearer sk-client"));

    let metrics = get_text(&gw.admin_url("/metrics")).await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("promptgate_requests_total{") && l.contains(r#"status="101""#))
        .unwrap_or_else(|| panic!("no 101 series:\n{metrics}"));
    assert!(line.ends_with(" 2"), "{line}");
    // Its duration is the time to the 101, not the tunnel's life: under 1 s here.
    let fast = metrics
        .lines()
        .find(|l| {
            l.starts_with("promptgate_request_duration_seconds_bucket{")
                && l.contains(r#"le="1""#)
                && l.contains(r#"route="openai""#)
                && l.contains(r#"cache="none""#)
        })
        .unwrap_or_else(|| {
            panic!(
                "no duration series:
{metrics}"
            )
        });
    assert!(fast.ends_with(" 2"), "{fast}");
    let sent = metrics
        .lines()
        .find(|l| {
            l.starts_with("promptgate_websocket_bytes_total{")
                && l.contains(r#"direction="to_upstream""#)
        })
        .unwrap_or_else(|| panic!("no tunnel bytes:\n{metrics}"));
    let bytes: f64 = sent.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(bytes > 40_000.0, "{sent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_refusing_the_upgrade_is_relayed_as_an_answer() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    // The mock refuses an upgrade without a Sec-WebSocket-Key.
    let (mut ws, head) = Client::connect_with(&gw, "/openai/v1/realtime", "").await;
    assert!(head.starts_with("http/1.1 400"), "{head}");
    let body = ws.json_body(&head).await;
    assert_eq!(body["error"]["message"], "missing Sec-WebSocket-Key");
    assert_eq!(mock.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_that_does_not_allow_websocket_refuses_at_once() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(
        Config::new().upstream("mock", &mock.url()).route(
            Route::new("plain")
                .prefix("/openai")
                .targets("[mock]")
                .with("websocket: false"),
        ),
    );
    let (mut ws, head) = Client::connect(&gw, "/openai/v1/realtime", "").await;
    assert!(head.starts_with("http/1.1 403"), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    let body = ws.json_body(&head).await;
    assert_eq!(body["error"]["type"], "websocket_refused");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("plain") && message.contains("websocket"),
        "{message}"
    );
    assert_eq!(mock.hits(), 0, "refused before any upstream call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_on_a_rate_limited_route_counts_as_a_request() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(
        Config::new().upstream("mock", &mock.url()).route(
            Route::prefixed("openai")
                .targets("[mock]")
                .with("rate_limit: { requests_per_minute: 1 }"),
        ),
    );
    // A Realtime session costs as much as any call: the limit step is not skipped for it.
    let (mut ws, head) = Client::connect(&gw, "/openai/v1/realtime", "").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("x-ratelimit-limit-requests: 1"),
        "the 101 carries the limit's headers: {head}"
    );
    assert!(head.contains("x-ratelimit-remaining-requests: 0"), "{head}");
    assert_eq!(ws.event().await["type"], "session.created");
    ws.send(8, &[0x03, 0xE8]).await;
    assert_eq!(ws.frame().await, (0x8, vec![0x03, 0xE8]));

    let (mut refused, head) = Client::connect(&gw, "/openai/v1/realtime", "").await;
    assert!(head.starts_with("http/1.1 429"), "{head}");
    assert!(head.contains("retry-after: "), "{head}");
    let body = refused.json_body(&head).await;
    assert_eq!(body["error"]["limit"], "requests_per_minute");
    assert_eq!(
        mock.hits(),
        1,
        "the refused upgrade never reached the upstream"
    );
}
