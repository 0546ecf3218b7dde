//! Hot reload: file change, SIGHUP and `POST /reload` swap the routing table; invalid configs
//! keep the running one; requests and streams under way are never disturbed.

use crate::support::gateway::binary;
use crate::support::{client, Gateway, MockUpstream};
use serde_json::{json, Value};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a file change may take to be served (debounce is 250 ms).
const RELOAD_BOUND: Duration = Duration::from_secs(2);

/// Two upstreams, `a` and `b`; the one route sends to `target` and rewrites the model to
/// `model-<target>`, so every answer (the mock echoes the model) names the upstream it came from.
fn routes_to(a: &MockUpstream, b: &MockUpstream, target: &str, extra: &str) -> String {
    format!(
        r#"{extra}
upstreams:
  a:
    url: "{}"
  b:
    url: "{}"
routes:
  - name: chat
    match: {{ path_prefix: /openai }}
    strip_prefix: true
    targets: [{{ upstream: {target}, model: model-{target} }}]
"#,
        a.url(),
        b.url()
    )
}

const NO_WATCH: &str = "reload: { watch: false }";
const INVALID_YAML: &str = "routes: [ { name: chat, targets: [a }\n";

/// The upstream (`a` or `b`) that answered one plain chat request.
async fn answered_by(gw: &Gateway) -> String {
    let resp = client()
        .post(gw.url("/openai/v1/chat/completions"))
        .json(&json!({"model": "client-model", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let model = body["model"].as_str().unwrap();
    model.strip_prefix("model-").unwrap().to_string()
}

/// Polls until requests are answered by `want`, for at most `bound`.
async fn wait_for_upstream(gw: &Gateway, want: &str, bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        if answered_by(gw).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The value of the counter series `series` (name and labels) as the admin listener reports it.
async fn counter(gw: &Gateway, series: &str) -> u64 {
    let resp = client().get(gw.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain; version=0.0.4");
    let text = resp.text().await.unwrap();
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {text}"))
        .parse()
        .unwrap()
}

/// `promptgate_config_reloads_total{result=...}`.
async fn reloads(gw: &Gateway, result: &str) -> u64 {
    counter(
        gw,
        &format!("promptgate_config_reloads_total{{result=\"{result}\"}}"),
    )
    .await
}

/// `promptgate_config_watch_events_total{file=...}`: `config` or `other`.
async fn watch_events(gw: &Gateway, file: &str) -> u64 {
    counter(
        gw,
        &format!("promptgate_config_watch_events_total{{file=\"{file}\"}}"),
    )
    .await
}

async fn wait_for_reloads(gw: &Gateway, result: &str, at_least: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if reloads(gw, result).await >= at_least {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn post_reload(gw: &Gateway) -> (u16, Value) {
    let resp = client().post(gw.admin_url("/reload")).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_is_served_within_two_seconds() {
    let (a, b) = (MockUpstream::start().await, MockUpstream::start().await);
    let gw = Gateway::start(routes_to(&a, &b, "a", ""));
    assert_eq!(answered_by(&gw).await, "a");

    // written in place (truncate + write), as `echo > file` does
    std::fs::write(
        gw.config_path(),
        gw.config_text(&routes_to(&a, &b, "b", "")),
    )
    .unwrap();
    assert!(
        wait_for_upstream(&gw, "b", RELOAD_BOUND).await,
        "{}",
        gw.logs()
    );
    // written to a temp file and renamed over the config, as editors do
    gw.rewrite_config(&routes_to(&a, &b, "a", ""));
    assert!(
        wait_for_upstream(&gw, "a", RELOAD_BOUND).await,
        "{}",
        gw.logs()
    );
    assert!(a
        .requests()
        .iter()
        .all(|r| r.body.windows(7).any(|w| w == b"model-a")));
    assert!(b
        .requests()
        .iter()
        .all(|r| r.body.windows(7).any(|w| w == b"model-b")));
    assert!(
        gw.wait_for_log("reloaded (file changed)").await,
        "{}",
        gw.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_style_symlink_flip_is_picked_up() {
    // Kubernetes mounts promptgate.yaml -> ..data/promptgate.yaml, ..data -> ..<version>/,
    // and publishes a new version by atomically renaming a new ..data symlink into place.
    let (a, b) = (MockUpstream::start().await, MockUpstream::start().await);
    let gw = Gateway::start(routes_to(&a, &b, "a", ""));
    let dir = gw.config_path().parent().unwrap().to_path_buf();
    let publish = |version: &str, body: String| {
        std::fs::create_dir(dir.join(version)).unwrap();
        std::fs::write(dir.join(version).join("promptgate.yaml"), body).unwrap();
        std::os::unix::fs::symlink(version, dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    };
    publish("..v1", gw.config_text(&routes_to(&a, &b, "a", "")));
    std::os::unix::fs::symlink("..data/promptgate.yaml", dir.join("link.tmp")).unwrap();
    std::fs::rename(dir.join("link.tmp"), gw.config_path()).unwrap();
    assert!(wait_for_upstream(&gw, "a", RELOAD_BOUND).await);

    publish("..v2", gw.config_text(&routes_to(&a, &b, "b", "")));
    assert!(
        wait_for_upstream(&gw, "b", RELOAD_BOUND).await,
        "{}",
        gw.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_with_the_watcher_off() {
    let (a, b) = (MockUpstream::start().await, MockUpstream::start().await);
    let gw = Gateway::start(routes_to(&a, &b, "a", NO_WATCH));
    gw.rewrite_config(&routes_to(&a, &b, "b", NO_WATCH));
    // Longer than the debounce: with the watcher off, nothing has reloaded yet.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(answered_by(&gw).await, "a", "the watcher is off");

    gw.signal("HUP");
    assert!(
        wait_for_upstream(&gw, "b", RELOAD_BOUND).await,
        "{}",
        gw.logs()
    );
    assert!(gw.wait_for_log("reloaded (SIGHUP)").await, "{}", gw.logs());
    assert_eq!(reloads(&gw, "success").await, 1);
    // Not merely ignored: the watcher never ran.
    let logs = gw.logs();
    assert!(logs.contains("(not watched: reload with SIGHUP"), "{logs}");
    assert!(!logs.contains("for config changes"), "{logs}");
    assert_eq!(watch_events(&gw, "config").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_starts_and_stops_with_reload_watch() {
    let (a, b) = (MockUpstream::start().await, MockUpstream::start().await);
    let gw = Gateway::start(routes_to(&a, &b, "a", NO_WATCH));
    // Turned on by a reload: from then on, file changes are picked up.
    gw.rewrite_config(&routes_to(&a, &b, "b", ""));
    gw.signal("HUP");
    assert!(
        wait_for_upstream(&gw, "b", RELOAD_BOUND).await,
        "{}",
        gw.logs()
    );
    assert!(gw.wait_for_log("for config changes").await, "{}", gw.logs());
    gw.rewrite_config(&routes_to(&a, &b, "a", ""));
    assert!(
        wait_for_upstream(&gw, "a", RELOAD_BOUND).await,
        "{}",
        gw.logs()
    );

    // Turned off by a file change: that change applies, later ones wait for a trigger.
    gw.rewrite_config(&routes_to(&a, &b, "b", NO_WATCH));
    assert!(
        wait_for_upstream(&gw, "b", RELOAD_BOUND).await,
        "{}",
        gw.logs()
    );
    assert!(gw.wait_for_log("stopped watching").await, "{}", gw.logs());
    let seen = watch_events(&gw, "config").await;
    gw.rewrite_config(&routes_to(&a, &b, "a", NO_WATCH));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(answered_by(&gw).await, "b", "the watcher is off");
    assert_eq!(watch_events(&gw, "config").await, seen, "{}", gw.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_log_beside_the_config_never_wakes_the_watcher() {
    // The gateway's own log (the access log included) is written beside its config, and so
    // is another file here: before, every line woke the watcher (6-10 µs per request).
    let (a, b) = (MockUpstream::start().await, MockUpstream::start().await);
    let gw = Gateway::start(routes_to(&a, &b, "a", ""));
    // The start-up line comes once the watcher runs.
    assert!(gw.wait_for_log("(watched)").await, "{}", gw.logs());
    let log_dir = gw.config_path().parent().unwrap().to_path_buf();
    assert!(log_dir.join("promptgate.log").exists());
    let mut other = std::fs::File::create(log_dir.join("app.log")).unwrap();
    // Creating a file is an event in the directory (seen, and dropped by name); writing
    // to it is not.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(watch_events(&gw, "other").await, 1, "{}", gw.logs());
    for i in 0..200 {
        assert_eq!(answered_by(&gw).await, "a");
        std::io::Write::write_all(&mut other, format!("line {i}\n").as_bytes()).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let logs = gw.logs();
    assert!(logs.matches("promptgate::access").count() >= 200, "{logs}");
    assert_eq!(watch_events(&gw, "other").await, 1, "{}", gw.logs());
    assert_eq!(watch_events(&gw, "config").await, 0);
    assert_eq!(
        reloads(&gw, "success").await + reloads(&gw, "error").await,
        0
    );

    // The config itself is still seen.
    gw.rewrite_config(&routes_to(&a, &b, "b", ""));
    assert!(
        wait_for_upstream(&gw, "b", RELOAD_BOUND).await,
        "{}",
        gw.logs()
    );
    assert!(watch_events(&gw, "config").await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_reload_swaps_at_once_and_reports_problems() {
    let (a, b) = (MockUpstream::start().await, MockUpstream::start().await);
    let gw = Gateway::start(routes_to(&a, &b, "a", NO_WATCH));
    gw.rewrite_config(&routes_to(&a, &b, "b", NO_WATCH));
    let (status, body) = post_reload(&gw).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"status": "reloaded", "routes": 1}));
    // synchronous: the very next request uses the new table
    assert_eq!(answered_by(&gw).await, "b");

    // an unknown upstream: 422 naming file, line and field; the running table stays
    gw.rewrite_config(&routes_to(&a, &b, "c", NO_WATCH));
    let (status, body) = post_reload(&gw).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["type"], "invalid_config");
    let message = body["error"]["message"].as_str().unwrap();
    let config = gw.config_path().display().to_string();
    let line = 1 + std::fs::read_to_string(gw.config_path())
        .unwrap()
        .lines()
        .position(|l| l.contains("targets:"))
        .unwrap();
    assert!(
        message.contains(&format!(
            "{config}:{line}: routes[0].targets[0]: unknown upstream \"c\""
        )),
        "{message}"
    );
    assert_eq!(body["error"]["problems"][0]["line"], line);
    assert_eq!(answered_by(&gw).await, "b");

    // `promptgate check` reports exactly the same problems
    let out = Command::new(binary())
        .args(["check", "--config"])
        .arg(gw.config_path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains(message), "{stderr}\nvs\n{message}");

    let resp = client().get(gw.admin_url("/reload")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
    assert_eq!(reloads(&gw, "success").await, 1);
    assert_eq!(reloads(&gw, "error").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configs_keep_the_running_table() {
    let (a, b) = (MockUpstream::start().await, MockUpstream::start().await);
    let mut gw = Gateway::start(routes_to(&a, &b, "a", ""));
    assert_eq!(reloads(&gw, "error").await, 0);

    gw.rewrite_config(INVALID_YAML);
    assert!(wait_for_reloads(&gw, "error", 1).await, "{}", gw.logs());
    assert_eq!(answered_by(&gw).await, "a");

    // valid YAML, but the target names an upstream that does not exist
    gw.rewrite_config(&routes_to(&a, &b, "nowhere", ""));
    assert!(wait_for_reloads(&gw, "error", 2).await, "{}", gw.logs());
    assert_eq!(answered_by(&gw).await, "a");
    assert!(gw.is_running());
    assert!(
        gw.wait_for_log("unknown upstream \"nowhere\"").await,
        "{}",
        gw.logs()
    );
    let logs = gw.logs();
    assert!(
        logs.contains("failed, the running config stays in force")
            && logs.contains("routes[0].targets[0]: unknown upstream \"nowhere\""),
        "{logs}"
    );
    assert_eq!(reloads(&gw, "success").await, 0);

    // and a fixed file is picked up again
    gw.rewrite_config(&routes_to(&a, &b, "b", ""));
    assert!(wait_for_upstream(&gw, "b", RELOAD_BOUND).await);
    assert!(reloads(&gw, "success").await >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_only_fields_are_reported_and_kept() {
    let mock = MockUpstream::start().await;
    let body = format!(
        "{NO_WATCH}\nupstreams:\n  m:\n    url: \"{}\"\nroutes:\n  - name: r\n    targets: [m]\n",
        mock.url()
    );
    let gw = Gateway::start(&body);
    let send = || async {
        let resp = client()
            .post(gw.url("/v1/chat/completions"))
            .json(&json!({"model": "m", "messages": []}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    };
    send().await;
    // A new listen address (only the first `listen:` line is the gateway's own header, so
    // replace it in the full text) and a route renamed: the route applies, listen does not.
    let text = gw
        .config_text(&body.replace("name: r", "name: renamed"))
        .replacen(&gw.addr.to_string(), "127.0.0.1:1", 1);
    std::fs::write(gw.config_path(), text).unwrap();
    let (status, reply) = post_reload(&gw).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["needs_restart"], json!(["listen"]));
    assert!(
        gw.wait_for_log("listen changed from").await,
        "{}",
        gw.logs()
    );
    // still listening where it was, on the same pooled upstream connection
    send().await;
    assert_eq!(mock.hits(), 2);
    assert_eq!(
        mock.connections(),
        1,
        "the upstream connection pool survives a reload"
    );
}

/// One request's outcome during the storm: which upstream answered, or what went wrong.
#[derive(Debug)]
enum Outcome {
    Plain(String),
    Stream(String),
    Failed(String),
}

async fn plain_request(gw_url: &str) -> Outcome {
    let resp = match client()
        .post(gw_url)
        .json(&json!({"model": "client-model", "messages": []}))
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("send: {e}")),
    };
    if resp.status() != 200 {
        return Outcome::Failed(format!("status {}", resp.status()));
    }
    match resp.json::<Value>().await {
        Ok(v) => match v["model"].as_str() {
            Some(m) => Outcome::Plain(m.to_string()),
            None => Outcome::Failed(format!("no model in {v}")),
        },
        Err(e) => Outcome::Failed(format!("body: {e}")),
    }
}

async fn stream_request(gw_url: &str) -> Outcome {
    let resp = match client()
        .post(gw_url)
        .header("x-mock-chunk-delay-ms", "40")
        .header("x-mock-events", "8")
        .json(&json!({"model": "client-model", "stream": true, "messages": []}))
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("send: {e}")),
    };
    if resp.status() != 200 {
        return Outcome::Failed(format!("status {}", resp.status()));
    }
    let text = match resp.text().await {
        Ok(t) => t,
        Err(e) => return Outcome::Failed(format!("stream cut: {e}")),
    };
    if !text.trim_end().ends_with("data: [DONE]") {
        return Outcome::Failed(format!("stream incomplete: {text}"));
    }
    // Every event of one stream names the same model: one upstream served it whole.
    let models: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["model"].as_str().map(String::from))
        .collect();
    match models.len() {
        1 => Outcome::Stream(models.into_iter().next().unwrap()),
        _ => Outcome::Failed(format!("one stream, models {models:?}: {text}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_storm_never_fails_a_request() {
    let (a, b) = (MockUpstream::start().await, MockUpstream::start().await);
    let mut gw = Gateway::start(routes_to(&a, &b, "a", ""));
    let url = gw.url("/openai/v1/chat/completions");
    let stop = Arc::new(AtomicBool::new(false));

    // Clients: 3 sending plain requests, 2 sending slow streams (~300 ms each, so each spans
    // several reloads). Each stops at the end of the storm or after 3000 requests.
    let mut clients = Vec::new();
    for i in 0..5 {
        let (url, stop) = (url.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            while !stop.load(Ordering::Relaxed) && outcomes.len() < 3000 {
                outcomes.push(if i < 3 {
                    plain_request(&url).await
                } else {
                    stream_request(&url).await
                });
            }
            outcomes
        }));
    }

    // 60 reloads alternating a/b, every 6th config invalid (bad YAML or an unknown upstream),
    // triggered by POST /reload, every 10th by SIGHUP — and the file watcher joins in.
    let (mut posted_invalid, mut posted_valid) = (0, 0);
    for i in 0..60 {
        let body = match i % 6 {
            5 if i % 12 == 5 => INVALID_YAML.to_string(),
            5 => routes_to(&a, &b, "nowhere", ""),
            _ => routes_to(&a, &b, if i % 2 == 0 { "b" } else { "a" }, ""),
        };
        gw.rewrite_config(&body);
        if i % 10 == 9 {
            gw.signal("HUP");
        } else {
            let (status, reply) = post_reload(&gw).await;
            if i % 6 == 5 {
                assert_eq!(status, 422, "{reply}");
                posted_invalid += 1;
            } else {
                assert_eq!(status, 200, "{reply}");
                posted_valid += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // let the last streams overlap the end of the storm, then stop
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);

    let mut outcomes = Vec::new();
    for c in clients {
        outcomes.extend(c.await.unwrap());
    }
    let failed: Vec<&String> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Failed(why) => Some(why),
            _ => None,
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:#?}",
        failed.len(),
        outcomes.len()
    );
    for o in &outcomes {
        if let Outcome::Plain(m) | Outcome::Stream(m) = o {
            assert!(m == "model-a" || m == "model-b", "{o:?}");
        }
    }
    let streams = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Stream(_)))
        .count();
    assert!(streams >= 4, "{streams} streams completed");
    eprintln!(
        "storm: {} requests ({streams} streams), a: {} hits, b: {} hits",
        outcomes.len(),
        a.hits(),
        b.hits()
    );
    // Each upstream only ever saw its own model: target and rewrite came from one snapshot.
    for (mock, model) in [(&a, "model-a"), (&b, "model-b")] {
        assert!(mock.hits() > 0, "both upstreams served during the storm");
        for r in mock.requests() {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(body["model"], model);
        }
    }
    assert!(reloads(&gw, "error").await >= posted_invalid);
    assert!(reloads(&gw, "success").await >= posted_valid);
    assert!(gw.is_running());
}
