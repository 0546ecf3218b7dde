//! The admin listener: `GET /healthz`, `GET /metrics`, `POST /reload`.
//! It binds to localhost by default and is never reachable through the proxy port.

use crate::config::ConfigError;
use crate::metrics::{self, Metrics};
use crate::reload::{Reloader, Trigger};
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;

pub struct Admin {
    pub reloader: Arc<Reloader>,
    pub metrics: Arc<Metrics>,
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .expect("static response parts are valid")
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Vec<u8>> {
    respond(status, "application/json", body.to_string().into_bytes())
}

fn error(status: StatusCode, kind: &str, message: String) -> Response<Vec<u8>> {
    json(
        status,
        serde_json::json!({"error": {"type": kind, "message": message}}),
    )
}

fn method_not_allowed(path: &str, allow: &'static str) -> Response<Vec<u8>> {
    let mut resp = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{path} accepts {allow} only"),
    );
    resp.headers_mut()
        .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
    resp
}

impl Admin {
    fn reload(&self) -> Response<Vec<u8>> {
        match self.reloader.reload(Trigger::AdminApi) {
            Ok(done) => {
                let mut body = serde_json::json!({"status": "reloaded", "routes": done.routes});
                if !done.needs_restart.is_empty() {
                    body["needs_restart"] = done
                        .needs_restart
                        .iter()
                        .map(|n| serde_json::Value::from(n.field))
                        .collect();
                }
                json(StatusCode::OK, body)
            }
            Err(e) => reload_failed(&e),
        }
    }
}

/// The reload failed and nothing changed. An invalid file is the caller's to fix (422, with
/// each problem also as data); an unreadable one is the server's side (500).
fn reload_failed(e: &ConfigError) -> Response<Vec<u8>> {
    match e {
        ConfigError::Invalid { problems, .. } => {
            let problems: Vec<_> = problems
                .iter()
                .map(|p| serde_json::json!({"line": p.line, "path": p.path, "message": p.message}))
                .collect();
            json(
                StatusCode::UNPROCESSABLE_ENTITY,
                serde_json::json!({"error": {
                    "type": "invalid_config",
                    "message": e.to_string(),
                    "problems": problems,
                }}),
            )
        }
        ConfigError::Read { source, .. } => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "config_unreadable",
            format!("{e}: {source}"),
        ),
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.as_str().to_owned();
        let path = session.req_header().uri.path().to_owned();
        match (path.as_str(), method.as_str()) {
            ("/healthz", "GET") => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
            ("/healthz", _) => method_not_allowed(&path, "GET"),
            ("/metrics", "GET") => respond(
                StatusCode::OK,
                metrics::CONTENT_TYPE,
                self.metrics.render().into_bytes(),
            ),
            ("/metrics", _) => method_not_allowed(&path, "GET"),
            ("/reload", "POST") => {
                // Any body is ignored; read it off the connection so keep-alive stays in sync.
                let _ = session.drain_request_body().await;
                self.reload()
            }
            ("/reload", _) => method_not_allowed(&path, "POST"),
            _ => error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no admin endpoint {path}"),
            ),
        }
    }
}
