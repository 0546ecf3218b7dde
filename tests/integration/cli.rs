//! `promptgate check`, `promptgate key`, `promptgate warm` and `--help` against real processes.

use crate::support::gateway::binary;
use crate::support::redis::RedisServer;
use crate::support::{client, Config, Gateway, MockUpstream};
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn key(config: &std::path::Path, args: &[&str], body: &str) -> Output {
    let mut child = Command::new(binary())
        .arg("key")
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn key_line(out: &Output, label: &str) -> String {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label} in {text}"))
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_matches_what_the_proxy_stores() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let gw = Gateway::start(Config::providers(&mock.url()).section(format!(
        "cache: {{ backend: redis, redis: {{ url: \"{}\", timeout: 1s }} }}",
        redis.url()
    )));
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    let resp = client()
        .post(gw.url("/openai/v1/chat/completions"))
        .header("authorization", "Bearer sk-test")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-promptgate-cache"], "MISS");
    resp.bytes().await.unwrap();

    let cfg = gw.config_path();
    let args = [
        "--route",
        "openai",
        "--path",
        "/openai/v1/chat/completions",
        "-H",
        "Authorization: Bearer sk-test",
    ];
    let reordered = r#"{ "messages": [{"content":"hi","role":"user"}], "model": "gpt-4o" }"#;
    let out = key(&cfg, &args, reordered);
    let redis_key = key_line(&out, "redis key:");
    assert_eq!(
        key_line(&out, "scope:"),
        "credential",
        "the scope is written as the config writes it"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while redis.keys("promptgate:*").is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        redis.keys("promptgate:*"),
        vec![redis_key],
        "the printed key is the stored one"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(r#"{"messages":[{"content":"hi","role":"user"}],"model":"gpt-4o"}"#),
        "{stdout}"
    );
    assert!(
        !stdout.contains("sk-test"),
        "the credential is hashed, never printed"
    );
    assert!(!stdout.contains("not a cacheable operation"), "{stdout}");
    let batches = key(
        &cfg,
        &["--route", "openai", "--path", "/openai/v1/batches"],
        "{}",
    );
    let stdout = String::from_utf8_lossy(&batches.stdout);
    assert!(stdout.contains("not a cacheable operation"), "{stdout}");
    assert!(!stdout.contains("hint:"), "a path was given: {stdout}");
    // Without --path the route's prefix is keyed: never cacheable, and the output says why.
    let no_path = key(&cfg, &["--route", "openai"], body);
    let stdout = String::from_utf8_lossy(&no_path.stdout);
    assert!(
        stdout.contains("hint:      no --path given, so /openai was keyed")
            && stdout.contains("--path /openai/v1/chat/completions"),
        "{stdout}"
    );

    let other = key(
        &cfg,
        &[
            "--route",
            "openai",
            "--path",
            "/openai/v1/chat/completions",
            "-H",
            "Authorization: Bearer sk-other",
        ],
        body,
    );
    assert_ne!(key_line(&other, "key:"), key_line(&out, "key:"));
    let unknown = key(&cfg, &["--route", "nope"], body);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no route \"nope\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_fills_the_cache_and_reports_each_line() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("warm.jsonl");
    std::fs::write(
        &file,
        r#"# common prompts
{"route": "openai", "path": "/v1/chat/completions", "body": {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}}
{"path": "/anthropic/v1/messages", "headers": {"anthropic-version": "2023-06-01"}, "body": {"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": "hello"}]}}
{"path": "/openai/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "hello"}], "model": "gpt-4o"}}
"#,
    )
    .unwrap();
    let warm = |file: &std::path::Path| {
        Command::new(binary())
            .args(["warm", "--concurrency", "1", "--config"])
            .arg(gw.config_path())
            .arg(file)
            .output()
            .unwrap()
    };
    let out = warm(&file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("warmed 2, already cached 1, failed 0"),
        "{stdout}"
    );
    assert_eq!(mock.hits(), 2);

    let resp = client()
        .post(gw.url("/openai/v1/chat/completions"))
        .json(&serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-promptgate-cache"], "HIT");

    std::fs::write(&file, "{\"path\": \"/nowhere\", \"body\": {}}\n").unwrap();
    let out = warm(&file);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 1") && stderr.contains("404"),
        "{stderr}"
    );

    // A line that is not a cacheable operation stores nothing: a failure, not "warmed".
    std::fs::write(
        &file,
        "{\"path\": \"/openai/v1/batches\", \"body\": {\"input_file_id\": \"file-1\"}}\n",
    )
    .unwrap();
    let out = warm(&file);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 1") && stderr.contains("not a cacheable operation"),
        "{stderr}"
    );
}

/// Runs `promptgate check` on `text`; returns (success, stderr).
fn check(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(binary())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).replace(path.to_str().unwrap(), "c.yaml"),
    )
}

#[test]
fn check_points_at_the_line_and_full_path_of_each_mistake() {
    // The issue's report: a typo inside a route was reported at the route's line.
    let config = "\
upstreams:
  openai:
    url: https://api.openai.com
    timeouts:
      read: 30 seconds please
routes:
  - name: openai
    match:
      path_prefix: /openai
    strip_prefx: true
    targets:
      - upstream: openai
        modle: gpt-4o
limits:
  max_body_bytes: 32 MiB
cache:
  replay: orignal
  memory: { max_bytes: lots }
";
    let (ok, err) = check(config);
    assert!(!ok, "{err}");
    for line in [
        "invalid config c.yaml: 5 problems",
        "c.yaml:5: upstreams.openai.timeouts.read: \"30 seconds please\" is not a duration",
        "c.yaml:10: routes[0].strip_prefx: unknown field `strip_prefx`; did you mean `strip_prefix`?",
        "c.yaml:13: routes[0].targets[0].modle: unknown field `modle`; did you mean `model`?",
        "c.yaml:17: cache.replay: unknown value `orignal`; did you mean `original`?",
        "c.yaml:18: cache.memory.max_bytes: \"lots\" is not a size: expected a size in bytes, like 33554432 or 32MiB",
    ] {
        assert!(err.contains(line), "{line:?} not in:\n{err}");
    }
    // `32 MiB` is a size: no problem reported for limits.
    assert!(!err.contains("max_body_bytes"), "{err}");

    let (ok, err) = check("upstreams:\n  a: {url: \"http://x\"\nroutes: []\n");
    assert!(!ok);
    assert!(
        err.contains("c.yaml:3: not valid YAML at line 3, column 1"),
        "{err}"
    );
    assert!(
        err.contains("mapping `{` opened on line 2 is not closed"),
        "{err}"
    );

    let (ok, err) = check("# nothing yet\n");
    assert!(!ok);
    assert!(err.contains("the config file is empty"), "{err}");
    let (ok, err) = check("listen: \"127.0.0.1:8080\"\n");
    assert!(!ok);
    assert!(
        err.contains("c.yaml: routes: no routes are configured"),
        "{err}"
    );
}

/// `--help` (the long description) says what `-h` (the short one) says: it caches.
#[test]
fn help_says_it_caches_short_and_long() {
    let help = |args: &[&str]| {
        let out = Command::new(binary()).args(args).output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    for args in [["-h"], ["--help"]] {
        let text = help(&args);
        let first = text.lines().next().unwrap();
        assert!(first.contains("caching reverse proxy"), "{args:?}: {first}");
    }
    let long = help(&["--help"]);
    assert!(long.contains("from its cache"), "{long}");
    assert!(long.contains("RUST_LOG"), "{long}");
    for args in [["run", "-h"], ["run", "--help"]] {
        let text = help(&args);
        assert!(
            text.lines().next().unwrap().contains("caching proxy"),
            "{text}"
        );
    }
    assert!(help(&["run", "--help"]).contains("shutdown_grace"));
}
