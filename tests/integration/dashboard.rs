//! The built-in dashboard: `GET /stats` agrees with `/metrics`, needs the admin token when one
//! is set, reports reloads and the time series; and the page itself, in headless Chromium
//! (driven through chromedriver), shows the hit rate and the money saved.

use crate::support::browser::Browser;
use crate::support::config::Config;
use crate::support::{client, Gateway, MockUpstream};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const CHAT: &str = "/openai/v1/chat/completions";
const ADMIN_TOKEN: &str = "adm-dash-TOKEN-5e1b";

fn chat(prompt: &str) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}),
    )
    .unwrap()
}

async fn stats_with(gw: &Gateway, token: Option<&str>) -> reqwest::Response {
    let mut req = client().get(gw.admin_url("/stats"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    req.send().await.unwrap()
}

async fn stats(gw: &Gateway) -> Value {
    let resp = stats_with(gw, None).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// Polls `/stats` until `done` holds (the logging phase runs just after each response, the
/// sampler every 2 s), at most `within`.
async fn stats_until(gw: &Gateway, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let s = stats(gw).await;
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "never reached: {s:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The sum of every series of `name` whose labels include all of `labels`.
fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .sum()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_equal_the_metrics_after_hits_and_misses() {
    const QUERY_KEY: &str = "AIza-dash-query-SECRET-c4d1";
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    // Two prompts: a miss then three hits each; one bypass; one Gemini call with its key in the
    // query string; one request no route matches.
    for prompt in ["first prompt", "second prompt"] {
        assert_eq!(
            gw.post_json(CHAT, &[], &chat(prompt)).await,
            (200, "MISS".into())
        );
        for _ in 0..3 {
            assert_eq!(
                gw.post_json(CHAT, &[], &chat(prompt)).await,
                (200, "HIT".into())
            );
        }
    }
    let bypass = [("x-promptgate-cache", "bypass")];
    assert_eq!(
        gw.post_json(CHAT, &bypass, &chat("first prompt")).await.1,
        "BYPASS"
    );
    let gemini = format!("/gemini/v1beta/models/gemini-2.0-flash:generateContent?key={QUERY_KEY}");
    assert_eq!(
        gw.post_json(&gemini, &[], b"{}").await,
        (200, "MISS".into())
    );
    assert_eq!(gw.post_json("/nowhere?key=x", &[], b"{}").await.0, 404);
    assert_eq!(mock.hits(), 4);

    let s = stats_until(&gw, Duration::from_secs(5), |s| {
        s["requests"]["total"] == 11
    })
    .await;
    let text = client()
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let m = |name: &str, labels: &[(&str, &str)]| metric_sum(&text, name, labels);
    let n = |v: &Value| v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"));

    assert_eq!(
        n(&s["requests"]["total"]),
        m("promptgate_requests_total", &[])
    );
    let c = &s["cache"];
    for (field, result) in [
        ("hits", "hit"),
        ("misses", "miss"),
        ("bypasses", "bypass"),
        ("coalesced", "coalesced"),
        ("errors", "error"),
    ] {
        let want = m("promptgate_cache_lookups_total", &[("result", result)]);
        assert_eq!(n(&c[field]), want, "{field}");
    }
    assert_eq!(
        (c["hits"].clone(), c["misses"].clone()),
        (json!(6), json!(3))
    );
    assert_eq!(c["semantic_hits"], 0);
    assert!(close(n(&c["hit_ratio"]), 6.0 / 9.0), "{c}");
    assert_eq!(c["memory"]["entries"], 3);
    assert_eq!(
        n(&c["memory"]["entries"]),
        m("promptgate_cache_entries", &[])
    );
    assert_eq!(c["redis"], Value::Null);

    for cache in ["hit", "miss", "bypass", "none"] {
        let q = &s["latency_seconds"][cache];
        let want = m(
            "promptgate_request_duration_seconds_count",
            &[("cache", cache)],
        );
        assert_eq!(n(&q["count"]), want, "{cache}");
        assert!(
            n(&q["p50"]) <= n(&q["p95"]) && n(&q["p95"]) <= n(&q["p99"]),
            "{q}"
        );
    }
    for kind in ["input", "output"] {
        let t = &s["tokens"][kind];
        let hit = m(
            "promptgate_tokens_total",
            &[("kind", kind), ("cache", "hit")],
        );
        let all = m("promptgate_tokens_total", &[("kind", kind)]);
        assert_eq!(n(&t["saved"]), hit, "{kind}");
        assert_eq!(n(&t["paid"]), all - hit, "{kind}");
    }
    let cost = &s["cost_usd"];
    assert!(close(
        n(&cost["spent"]),
        m("promptgate_cost_usd_total", &[])
    ));
    assert!(close(
        n(&cost["saved"]),
        m("promptgate_cost_saved_usd_total", &[])
    ));
    assert!(n(&cost["saved"]) > 0.0);
    assert_eq!(cost["saved_prompt_cache"], 0.0);

    let routes: Vec<&str> = s["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(routes, ["openai", "anthropic", "gemini", "ollama", "none"]);
    let openai = &s["routes"][0];
    assert_eq!(
        n(&openai["requests"]),
        m("promptgate_requests_total", &[("route", "openai")])
    );
    assert_eq!(
        (openai["hits"].clone(), openai["misses"].clone()),
        (json!(6), json!(2))
    );
    assert!(close(n(&openai["hit_ratio"]), 0.75));
    assert!(close(
        n(&openai["saved_usd"]),
        m("promptgate_cost_saved_usd_total", &[("route", "openai")])
    ));

    let up = &s["upstreams"][0];
    assert_eq!(
        (up["name"].as_str(), up["state"].as_str()),
        (Some("mock"), Some("healthy"))
    );
    assert_eq!(
        (up["inflight"].clone(), up["failures"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(up["max_concurrent"], Value::Null);
    assert!(n(&up["ttfb_ms"]) > 0.0, "{up}");

    let recent = s["recent"].as_array().unwrap();
    assert_eq!(recent.len(), 11);
    assert_eq!(recent[0]["path"], "/nowhere");
    assert_eq!(recent[0]["status"], 404);
    assert_eq!(recent[1]["route"], "gemini");
    assert_eq!(
        recent[1]["path"],
        "/gemini/v1beta/models/gemini-2.0-flash:generateContent"
    );
    assert_eq!(recent[2]["cache"], "BYPASS");
    assert_eq!(recent[3]["cache"], "HIT");
    assert_eq!(recent[3]["upstream"], Value::Null);
    assert_eq!(recent[10]["cache"], "MISS");
    assert_eq!(recent[10]["upstream"], "mock");
    let body = s.to_string();
    assert!(
        !body.contains(QUERY_KEY) && !body.contains("?key"),
        "{body}"
    );
    assert!(!body.contains("first prompt"), "prompt text leaked: {body}");

    assert_eq!(s["config"]["routes"], 4);
    assert_eq!(s["config"]["last_reload"], Value::Null);
    assert!(n(&s["config"]["loaded_at"]) > 1.0e9);
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_time_series_is_sampled_every_two_seconds() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(Config::providers(&mock.url()));
    gw.post_json(CHAT, &[], &chat("series")).await;
    // Once a sample exists, the sampler has its baseline: hits sent now land in a later one.
    stats_until(&gw, Duration::from_secs(8), |s| {
        !s["series"]["time"].as_array().unwrap().is_empty()
    })
    .await;
    for _ in 0..4 {
        assert_eq!(gw.post_json(CHAT, &[], &chat("series")).await.1, "HIT");
    }
    let s = stats_until(&gw, Duration::from_secs(8), |s| {
        let series = &s["series"];
        let rps = series["requests_per_second"].as_array().unwrap();
        let hits = series["hit_ratio"].as_array().unwrap();
        rps.iter()
            .zip(hits)
            .any(|(r, h)| r.as_f64() > Some(0.0) && *h == 1.0)
    })
    .await;
    let series = &s["series"];
    assert_eq!(series["interval_seconds"], 2);
    let len = series["time"].as_array().unwrap().len();
    for column in [
        "requests_per_second",
        "hit_ratio",
        "p95_hit_seconds",
        "p95_miss_seconds",
    ] {
        assert_eq!(series[column].as_array().unwrap().len(), len, "{column}");
    }
    let times: Vec<f64> = series["time"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_f64().unwrap())
        .collect();
    assert!(
        times
            .windows(2)
            .all(|w| w[1] - w[0] > 1.5 && w[1] - w[0] < 3.5),
        "{times:?}"
    );
    // Every request is in exactly one interval (up to the float rounding of rate × seconds).
    let counted: f64 = series["requests_per_second"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_f64().unwrap() * 2.0)
        .sum();
    assert!(counted <= 5.5, "{counted} of 5 requests, {series}");
    assert!(s["requests"]["per_second"].as_f64().unwrap() >= 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_need_the_admin_token_when_one_is_set() {
    let mock = MockUpstream::start().await;
    let body = format!(
        "admin_token: \"${{PG_DASH_TOKEN}}\"\n{}",
        Config::providers(&mock.url())
    );
    let gw = Gateway::start_with_env(&body, &[("PG_DASH_TOKEN", ADMIN_TOKEN)]);
    gw.post_json(CHAT, &[], &chat("needs a token")).await;

    for token in [None, Some("wrong"), Some(&ADMIN_TOKEN[1..])] {
        let resp = stats_with(&gw, token).await;
        assert_eq!(resp.status(), 401, "{token:?}");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        let body = resp.text().await.unwrap();
        assert!(
            body.contains("unauthorized") && !body.contains("requests"),
            "{body}"
        );
    }
    let resp = stats_with(&gw, Some(ADMIN_TOKEN)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let s: Value = resp.json().await.unwrap();
    assert!(s["cache"]["hit_ratio"].is_number(), "{s}");
    assert!(!s.to_string().contains(ADMIN_TOKEN));

    // The page is served without the token (it holds no data) and asks for it.
    let page = client().get(gw.admin_url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let html = page.text().await.unwrap();
    assert!(html.contains("<form id=\"login\"") && !html.contains(ADMIN_TOKEN));
    let script = client()
        .get(gw.admin_url("/dashboard/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(script.text().await.unwrap().contains("sessionStorage"));
    let chart = client()
        .get(gw.admin_url("/dashboard/uPlot.iife.min.js"))
        .send()
        .await
        .unwrap();
    assert!(chart.text().await.unwrap().contains("uPlot"));

    let post_stats = client().post(gw.admin_url("/stats")).send().await.unwrap();
    assert_eq!(post_stats.status(), 405);
    let missing = client()
        .get(gw.admin_url("/dashboard/nothing.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_report_the_last_reload() {
    let mock = MockUpstream::start().await;
    let routes = Config::providers(&mock.url()).to_string();
    let mut routes_config = routes.clone();
    routes_config.push_str("reload: {watch: false}\n");
    let gw = Gateway::start(&routes_config);
    std::fs::write(gw.config_path(), gw.config_text("routes: [unclosed\n")).unwrap();
    let reload = client().post(gw.admin_url("/reload")).send().await.unwrap();
    assert_eq!(reload.status(), 422);
    let s = stats(&gw).await;
    let last = &s["config"]["last_reload"];
    assert_eq!(
        (last["result"].as_str(), last["trigger"].as_str()),
        (Some("error"), Some("POST /reload"))
    );
    assert!(
        last["error"].as_str().unwrap().contains("promptgate.yaml"),
        "{last}"
    );
    assert_eq!(
        (
            s["config"]["reloads_failed"].clone(),
            s["config"]["routes"].clone()
        ),
        (json!(1), json!(4))
    );

    let mut fewer = routes.replace("  - name: ollama\n", "  - name: llama\n");
    fewer.push_str("reload: {watch: false}\n");
    std::fs::write(gw.config_path(), gw.config_text(&fewer)).unwrap();
    let reload = client().post(gw.admin_url("/reload")).send().await.unwrap();
    assert_eq!(reload.status(), 200);
    let s = stats(&gw).await;
    let last = &s["config"]["last_reload"];
    assert_eq!(
        (last["result"].as_str(), last["error"].clone()),
        (Some("success"), Value::Null)
    );
    assert_eq!(s["config"]["reloads_succeeded"], 1);
    assert_eq!(s["routes"][3]["name"], "llama");
}

/// Formats US dollars the way the page does for amounts of a dollar or more.
fn dollars(x: f64) -> String {
    assert!(
        (1.0..1000.0).contains(&x),
        "{x}: pick prices that make it a few dollars"
    );
    format!("${x:.2}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_hit_rate_and_savings_in_headless_chromium() {
    let mock = MockUpstream::start().await;
    // Prices that make the saving a few dollars: $0.10 a token.
    let pricing = "pricing:\n  gpt-4o-mini*: {input_per_mtok: 100000, output_per_mtok: 100000}\n";
    let gw = Gateway::start(format!("{}{pricing}", Config::providers(&mock.url())));
    let body = chat("show me on the dashboard");
    assert_eq!(gw.post_json(CHAT, &[], &body).await.1, "MISS");
    for _ in 0..3 {
        assert_eq!(gw.post_json(CHAT, &[], &body).await.1, "HIT");
    }
    let s = stats_until(&gw, Duration::from_secs(5), |s| s["requests"]["total"] == 4).await;
    // The mock reports body bytes / 4 input tokens and 4 output tokens per answer.
    let tokens = (body.len() / 4) as f64 + 4.0;
    let saved = s["cost_usd"]["saved"].as_f64().unwrap();
    assert!(close(saved, 3.0 * tokens * 0.1), "{saved}");

    let browser = Browser::start().await;
    browser.goto(&gw.admin_url("/")).await;
    let shown = browser
        .wait_for(
            "return document.getElementById('hit-ratio').textContent",
            |v| *v == "75%",
        )
        .await;
    assert_eq!(shown, "75%");
    let text = browser.script("return document.body.innerText").await;
    let text = text.as_str().unwrap();
    assert!(
        text.contains(&dollars(saved)),
        "no {} in:\n{text}",
        dollars(saved)
    );
    assert!(text.contains("3 exact"), "{text}");
    assert!(text.contains("/openai/v1/chat/completions"), "{text}");
    let shot = browser.screenshot().await;
    assert!(
        shot.starts_with(b"\x89PNG\r\n\x1a\n") && shot.len() > 10_000,
        "{} bytes",
        shot.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dashboard.png");
    std::fs::write(&path, &shot).unwrap();
    eprintln!(
        "dashboard screenshot: {} ({} bytes)",
        path.display(),
        shot.len()
    );

    // With an admin token, the page asks for it, refuses a wrong one, then shows the data.
    let token_gw = Gateway::start_with_env(
        format!(
            "admin_token: \"${{PG_DASH_TOKEN}}\"\n{}",
            Config::providers(&mock.url())
        ),
        &[("PG_DASH_TOKEN", ADMIN_TOKEN)],
    );
    browser.goto(&token_gw.admin_url("/")).await;
    browser
        .wait_for("return !document.getElementById('login').hidden", |v| {
            *v == true
        })
        .await;
    assert_eq!(
        browser
            .script("return document.getElementById('board').hidden")
            .await,
        true
    );
    browser.type_into("#token", "not-the-token").await;
    browser.click("#login button[type=submit]").await;
    browser
        .wait_for(
            "return document.getElementById('login-error').textContent",
            |v| v.as_str().is_some_and(|t| t.contains("not accepted")),
        )
        .await;
    browser.type_into("#token", ADMIN_TOKEN).await;
    browser.click("#login button[type=submit]").await;
    browser
        .wait_for("return !document.getElementById('board').hidden", |v| {
            *v == true
        })
        .await;
    assert_eq!(
        browser
            .script("return sessionStorage.getItem('promptgate.admin_token')")
            .await,
        ADMIN_TOKEN
    );
    browser.quit().await;
}
