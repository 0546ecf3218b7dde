//! `promptgate warm`: send a JSONL file of requests through a running promptgate, so the
//! prompts an app asks most are cached before users ask them.
//!
//! One request per line: `{"path": "/openai/v1/chat/completions", "body": {…}}`, or
//! `{"route": "openai", "path": "/v1/chat/completions", "body": …}` where `path` is then
//! relative to the route's `path_prefix`. Optional: `"method"` (default POST) and
//! `"headers": {"name": "value"}`. A string `body` is sent as is; anything else as JSON.

use crate::runtime::Runtime;
use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WarmRequest {
    route: Option<String>,
    path: Option<String>,
    method: Option<String>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    body: serde_json::Value,
}

/// How each line fared.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub warmed: usize,
    pub already_cached: usize,
    pub failed: usize,
}

/// The full request path for one line.
fn request_path(req: &WarmRequest, runtime: &Runtime) -> anyhow::Result<String> {
    let Some(route) = &req.route else {
        return req.path.clone().context("needs \"path\" or \"route\"");
    };
    let found = runtime
        .routes
        .iter()
        .find(|r| &r.name == route)
        .with_context(|| format!("no route named {route:?} in the config"))?;
    let prefix = found.matcher.path_prefix.as_deref().unwrap_or("");
    let rest = req.path.as_deref().unwrap_or("");
    Ok(format!(
        "{}/{}",
        prefix.trim_end_matches('/'),
        rest.trim_start_matches('/')
    ))
}

/// Sends every line of `file` to `proxy` (e.g. `http://127.0.0.1:8080`), `concurrency` at a
/// time, and reports how each went. Lines that fail are listed on stderr.
pub async fn run(
    file: &Path,
    proxy: &str,
    runtime: &Runtime,
    concurrency: usize,
) -> anyhow::Result<Summary> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut lines = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let req: WarmRequest = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a warm request", file.display(), n + 1))?;
        let path =
            request_path(&req, runtime).with_context(|| format!("{}:{}", file.display(), n + 1))?;
        lines.push((n + 1, path, req));
    }
    if lines.is_empty() {
        bail!("{} has no requests", file.display());
    }
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(600))
        .build()
        .context("cannot build the HTTP client")?;
    let bar = ProgressBar::new(lines.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .expect("static progress template"),
    );
    let base = proxy.trim_end_matches('/').to_string();
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (line, path, req) in lines {
        let client = client.clone();
        let url = format!("{base}{path}");
        let permit = semaphore
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closes");
        tasks.spawn(async move {
            let _permit = permit;
            (line, send(&client, &url, req).await)
        });
    }
    let mut summary = Summary::default();
    while let Some(joined) = tasks.join_next().await {
        let (line, outcome) = joined.context("a warm request task panicked")?;
        match outcome {
            Ok(true) => summary.already_cached += 1,
            Ok(false) => summary.warmed += 1,
            Err(e) => {
                summary.failed += 1;
                bar.suspend(|| eprintln!("line {line}: {e:#}"));
            }
        }
        bar.set_message(format!(
            "warmed {} · cached {} · failed {}",
            summary.warmed, summary.already_cached, summary.failed
        ));
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(summary)
}

/// Sends one request; `Ok(true)` when it was already cached.
async fn send(client: &reqwest::Client, url: &str, req: WarmRequest) -> anyhow::Result<bool> {
    let method = req.method.as_deref().unwrap_or("POST");
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .with_context(|| format!("bad method {method:?}"))?;
    let mut builder = client.request(method, url);
    for (name, value) in &req.headers {
        builder = builder.header(name, value);
    }
    let body = match req.body {
        serde_json::Value::String(s) => s.into_bytes(),
        serde_json::Value::Null => Vec::new(),
        other => {
            builder = builder.header(http::header::CONTENT_TYPE, "application/json");
            serde_json::to_vec(&other).expect("a JSON value serializes")
        }
    };
    let resp = builder
        .body(body)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = resp.status();
    let cache = resp
        .headers()
        .get("x-promptgate-cache")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // Read the whole body: the answer is stored once it has been received completely.
    resp.bytes().await.context("the response broke off")?;
    if !status.is_success() {
        bail!("{url} answered {status}");
    }
    match cache.as_deref() {
        Some("HIT") => Ok(true),
        // Nothing was stored: not a cacheable operation, or the line's headers skip the cache.
        Some("BYPASS") => bail!(
            "{url} was not stored (BYPASS): not a cacheable operation (cache.operations), or its headers skip the cache"
        ),
        Some(_) => Ok(false),
        None => bail!("{url} is not on a cached route (no x-promptgate-cache header)"),
    }
}
