//! The admin listener: health now; metrics, stats and reload endpoints as they arrive.
//! It binds to localhost by default and is never reachable through the proxy port.

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

pub struct Admin;

fn json(status: StatusCode, body: serde_json::Value) -> Response<Vec<u8>> {
    let body = body.to_string().into_bytes();
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .expect("static response parts are valid")
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        match (req.method.as_str(), req.uri.path()) {
            ("GET", "/healthz") => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
            (_, path) => json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": {"type": "not_found", "message": format!("no admin endpoint {path}")}}),
            ),
        }
    }
}
