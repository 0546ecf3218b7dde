//! What promptgate logs about itself at the default level: one line at start-up, one per
//! reload, and shutdown lines that state the grace in force; Pingora's own lines only when
//! `RUST_LOG` asks for them; access lines as `RUST_LOG` selects them.

use crate::support::{Config, Gateway, MockUpstream};
use std::time::{Duration, Instant};

/// The log's lines without their `[timestamp LEVEL target] ` prefix, as `(level target, msg)`.
fn lines(logs: &str) -> Vec<(String, String)> {
    logs.lines()
        .map(|line| {
            let (head, msg) = line.split_once("] ").unwrap_or(("", line));
            let head = head
                .split_whitespace()
                .skip(1)
                .collect::<Vec<_>>()
                .join(" ");
            (head, msg.to_string())
        })
        .collect()
}

async fn wait_for_exit(mut gw: Gateway) -> (std::process::ExitStatus, String) {
    tokio::task::spawn_blocking(move || {
        let status = gw.wait_exit(Duration::from_secs(10)).expect("exits");
        (status, gw.logs())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_level_says_start_reload_and_stop_in_one_line_each() {
    let mock = MockUpstream::start().await;
    let config = Config::providers(&mock.url());
    let gw = Gateway::start_with_rust_log(config.clone(), None);
    assert!(gw.wait_for_log("listening on").await, "{}", gw.logs());
    let started = lines(&gw.logs());
    assert_eq!(
        started,
        vec![(
            "INFO promptgate::server".to_string(),
            format!(
                "promptgate {} listening on {} (admin {}), 4 routes, cache: memory, config {} (watched)",
                env!("CARGO_PKG_VERSION"),
                gw.addr,
                gw.admin,
                gw.config_path().display()
            )
        )],
        "{}",
        gw.logs()
    );

    // A reload (here by a file change) that sets another shutdown_grace: one line.
    let text = gw
        .config_text(&config.to_string())
        .replace("shutdown_grace: 5s", "shutdown_grace: 7s");
    assert!(text.contains("shutdown_grace: 7s"));
    let tmp = gw.config_path().with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, gw.config_path()).unwrap();
    assert!(gw.wait_for_log("reloaded").await, "{}", gw.logs());
    let reloaded = lines(&gw.logs());
    assert_eq!(reloaded.len(), 2, "{}", gw.logs());
    assert_eq!(
        reloaded[1].1,
        format!(
            "config {} reloaded (file changed): 4 routes, cache: memory",
            gw.config_path().display()
        )
    );

    // SIGTERM: the grace in force (the reloaded one), not Pingora's internal 0 s.
    gw.signal("TERM");
    let (status, logs) = wait_for_exit(gw).await;
    assert!(status.success(), "{status:?}");
    let all = lines(&logs);
    let messages: Vec<&str> = all.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(
        messages[2..],
        [
            "SIGTERM: draining 0 in-flight request(s), at most 7s (shutdown_grace)",
            "promptgate stopped"
        ],
        "{logs}"
    );
    assert!(!logs.contains("pingora"), "{logs}");
    assert!(!logs.contains("exited"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_log_pingora_info_adds_pingoras_lines_to_ours() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start_with_rust_log(
        Config::providers(&mock.url()).section("reload: { watch: false }"),
        Some("pingora=info"),
    );
    assert!(gw.wait_for_log("listening on").await, "{}", gw.logs());
    let logs = gw.logs();
    assert!(logs.contains("INFO  pingora_core::server"), "{logs}");
    assert!(
        logs.contains("config ")
            && logs.contains("(not watched: reload with SIGHUP or POST /reload)"),
        "{logs}"
    );
    gw.signal("TERM");
    let (status, logs) = wait_for_exit(gw).await;
    assert!(status.success(), "{status:?}");
    // Ours first, with the real grace; Pingora's own (zero) grace period follows the drain.
    let ours = logs
        .find("SIGTERM: draining 0 in-flight request(s), at most 5s (shutdown_grace)")
        .unwrap_or_else(|| panic!("{logs}"));
    let pingoras = logs
        .find("Graceful shutdown: grace period")
        .unwrap_or_else(|| panic!("{logs}"));
    assert!(ours < pingoras, "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_says_it_does_not_drain() {
    let mock = MockUpstream::start().await;
    let mut gw = Gateway::start_with_rust_log(Config::providers(&mock.url()), None);
    assert!(gw.wait_for_log("listening on").await, "{}", gw.logs());
    let started = Instant::now();
    gw.signal("INT");
    assert!(gw.wait_exit(Duration::from_secs(5)).is_some());
    assert!(started.elapsed() < Duration::from_secs(3));
    let logs = gw.logs();
    let messages: Vec<String> = lines(&logs).into_iter().map(|(_, m)| m).collect();
    assert_eq!(
        messages[1..],
        ["SIGINT: stopping now", "promptgate stopped"],
        "{logs}"
    );
}

/// Access lines follow `RUST_LOG` as documented (docs/operations.md): on by default, off with
/// `promptgate::access=off` while other lines stay, and under a regex only those whose message
/// (`METHOD PATH`) matches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_log_decides_which_access_lines_are_written() {
    let mock = MockUpstream::start().await;
    let config = Config::providers(&mock.url()).section("reload: { watch: false }");
    let chat =
        serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    for (rust_log, chat_line, models_line) in [
        (None, true, true),
        (Some("info,promptgate::access=off"), false, false),
        (Some("info/completions"), true, false),
    ] {
        let gw = Gateway::start_with_rust_log(config.clone(), rust_log);
        let c = crate::support::client();
        // The models line, then lines that come after it on the queue: a second chat line,
        // and a reload's (which the regex case does not write), so waiting for the last one
        // each setting writes means the models line had its chance.
        for (method, path) in [
            (reqwest::Method::POST, "/openai/v1/chat/completions"),
            (reqwest::Method::GET, "/openai/v1/models"),
            (reqwest::Method::POST, "/openai/v1/chat/completions"),
        ] {
            let mut req = c.request(method.clone(), gw.url(path));
            if method == reqwest::Method::POST {
                req = req.json(&chat);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200, "{rust_log:?}: {method} {path}");
            resp.bytes().await.unwrap();
        }
        let reload = c.post(gw.admin_url("/reload")).send().await.unwrap();
        assert_eq!(reload.status(), 200, "{rust_log:?}");
        let last = |logs: &str| match rust_log {
            Some("info/completions") => {
                logs.matches("POST /openai/v1/chat/completions").count() == 2
            }
            _ => logs.contains(" reloaded ("),
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !last(&gw.logs()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(last(&gw.logs()), "{rust_log:?}: {}", gw.logs());
        let logs = gw.logs();
        let access = |path: &str| {
            lines(&logs)
                .iter()
                .any(|(head, msg)| head.ends_with("promptgate::access") && msg.contains(path))
        };
        assert_eq!(
            access("/v1/chat/completions"),
            chat_line,
            "{rust_log:?}: {logs}"
        );
        assert_eq!(access("/v1/models"), models_line, "{rust_log:?}: {logs}");
        if rust_log == Some("info,promptgate::access=off") {
            // Start-up's line is written once a probe finds both listeners accepting, which a
            // busy machine can delay past the requests above.
            assert!(
                gw.wait_for_log("listening on").await,
                "other lines stay: {}",
                gw.logs()
            );
        }
    }
}
