//! The process: start-up errors, `check`, admin health, graceful shutdown.

use crate::support::gateway::binary;
use crate::support::{client, free_port, Config, Gateway, MockUpstream};
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn check_lists_every_problem_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "listen: nowhere\nupstreams:\n  a: { url: \"http://127.0.0.1:1\", headers: { authorization: \"Bearer ${PG_TEST_UNSET}\" } }\nroutes:\n  - name: r\n    targets: [opnai]\n",
    )
    .unwrap();
    let out = Command::new(binary())
        .args(["check", "--config"])
        .arg(&path)
        .env_remove("PG_TEST_UNSET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("3 problems"), "{err}");
    assert!(err.contains("bad.yaml:1: listen"), "{err}");
    assert!(err.contains("PG_TEST_UNSET"), "{err}");
    assert!(
        err.contains("routes[0].targets[0]: unknown upstream \"opnai\""),
        "{err}"
    );
}

#[test]
fn check_accepts_the_shipped_config_via_the_environment() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/promptgate.yaml");
    let out = Command::new(binary())
        .arg("check")
        .env("PROMPTGATE_CONFIG", shipped)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .contains("4 route(s)"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("warning"),
        "the shipped config is up to date: {err}"
    );
}

#[test]
fn check_accepts_the_old_read_timeout_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.yaml");
    std::fs::write(
        &path,
        "upstreams:\n  ollama: { url: \"http://127.0.0.1:11434\", timeouts: { read: 120s } }\nroutes: [{ name: r, targets: [ollama] }]\n",
    )
    .unwrap();
    let out = Command::new(binary())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: ") && err.contains("upstreams.ollama.timeouts.read: deprecated"),
        "{err}"
    );
}

#[test]
fn the_priority_example_is_valid_once_its_keys_are_set() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/priority.yaml");
    let check = |keys: &[(&str, &str)]| {
        Command::new(binary())
            .args(["check", "--config", example])
            .env_remove("GEMINI_API_KEY")
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("OPENAI_API_KEY")
            .envs(keys.iter().copied())
            .output()
            .unwrap()
    };
    let missing = check(&[]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("GEMINI_API_KEY is not set"));
    let ok = check(&[
        ("GEMINI_API_KEY", "g"),
        ("ANTHROPIC_API_KEY", "a"),
        ("OPENAI_API_KEY", "o"),
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

#[test]
fn port_in_use_fails_fast_with_a_clear_message() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: \"{}\"\nadmin: \"127.0.0.1:{}\"\n{}",
            taken.local_addr().unwrap(),
            free_port(),
            Config::providers("http://127.0.0.1:9")
        ),
    )
    .unwrap();
    let started = Instant::now();
    let out = Command::new(binary())
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(5));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("already in use") && err.contains("(listen)"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_answers_health() {
    let gw = Gateway::start(Config::providers("http://127.0.0.1:9"));
    let resp = client().get(gw.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // and the proxy port does not serve admin routes
    let resp = client().get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_streams_then_exits() {
    let mock = MockUpstream::start().await;
    let mut gw = Gateway::start(Config::providers(&mock.url()));
    let url = gw.url("/openai/v1/chat/completions");
    let inflight = tokio::spawn(async move {
        let resp = client()
            .post(url)
            .header("x-mock-hold", "1")
            .json(&json!({"model": "m", "stream": true, "messages": []}))
            .send()
            .await
            .unwrap();
        String::from_utf8(resp.bytes().await.unwrap().to_vec()).unwrap()
    });
    while mock.hits() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gw.signal("TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        gw.wait_exit(Duration::from_millis(10)).is_none(),
        "exited with a request in flight"
    );
    mock.release();
    let body = inflight.await.unwrap();
    assert!(
        body.contains("data: [DONE]"),
        "in-flight stream completed: {body}"
    );
    let status = tokio::task::spawn_blocking(move || {
        gw.wait_exit(Duration::from_secs(5)).map(|s| (s, gw.logs()))
    })
    .await
    .unwrap();
    let (status, _) = status.expect("exits soon after the last request");
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sigterm_exits_promptly() {
    let mut gw = Gateway::start(Config::providers("http://127.0.0.1:9"));
    let started = Instant::now();
    gw.signal("TERM");
    let status = gw.wait_exit(Duration::from_secs(5)).expect("exits");
    assert!(status.success());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
}
