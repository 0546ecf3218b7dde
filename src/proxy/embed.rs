//! The embedding call of a semantic lookup: `POST {model, input}` to the embedder upstream
//! through that upstream's connection pool — its address, injected headers (the key) and timeouts —
//! bounded as a whole by the semantic `timeout`.
//!
//! Every failure is an [`EmbedError`]; the caller treats it as a miss (fail open).

use super::errors::{Named, ProxyError};
use super::exchange;
use super::heads::{self, RequestHead};
use crate::cache::semantic::{BadVector, Vector};
use crate::routing::upstream::Upstream;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use serde::Deserialize;
use std::time::Duration;

/// Largest embeddings response read, in bytes (3,072 floats as JSON are ~70 KB).
const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// Why no vector came back.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Upstream(ProxyError),
    #[error("answered with status {0}")]
    Status(u16),
    #[error("answer unreadable: {0}")]
    Invalid(String),
}

impl EmbedError {
    /// The `reason` label of `promptgate_semantic_embed_errors_total`.
    pub fn label(&self) -> &'static str {
        match self {
            EmbedError::Timeout(_) => "timeout",
            EmbedError::Upstream(_) => "connect",
            EmbedError::Status(_) => "status",
            EmbedError::Invalid(_) => "invalid",
        }
    }
}

impl From<BadVector> for EmbedError {
    fn from(e: BadVector) -> Self {
        EmbedError::Invalid(e.to_string())
    }
}

/// The embedding of `text` by `model`, from `upstream` at `path` (joined to the upstream's base
/// path), within `timeout`.
pub async fn embed(
    upstream: &Upstream,
    path: &str,
    model: &str,
    text: &str,
    timeout: Duration,
) -> Result<Vector, EmbedError> {
    let call = async {
        let body = Bytes::from(
            serde_json::to_vec(&serde_json::json!({ "model": model, "input": text }))
                .expect("a JSON value always serializes"),
        );
        let req = request(upstream, path, body.len()).map_err(EmbedError::Upstream)?;
        // A slot like any exchange with the upstream: its max_concurrent and its connections.
        let mut slot = upstream.slot(false).await.map_err(|busy| {
            EmbedError::Upstream(ProxyError::Busy {
                upstream: Named::of(upstream),
                limit: busy.limit,
            })
        })?;
        // A head per try (rarely more than one): the embedder's small request, copied.
        let response = exchange::send(upstream, || Ok(req.clone()), &body, false, &mut slot)
            .await
            .map_err(EmbedError::Upstream)?;
        let status = response.header().status.as_u16();
        let answer = response
            .read_body(upstream, MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| EmbedError::Invalid(e.to_string()))?;
        if !(200..300).contains(&status) {
            return Err(EmbedError::Status(status));
        }
        Ok(Vector::new(parse(&answer)?)?)
    };
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or(Err(EmbedError::Timeout(timeout)))
}

/// The embeddings request head: `Host`, JSON framing and the upstream's injected headers.
fn request(upstream: &Upstream, path: &str, body_len: usize) -> Result<RequestHead, ProxyError> {
    let invalid = |_| ProxyError::BadRequest(format!("embedder path {path:?} is not valid"));
    let mut req = heads::request(
        http::Method::POST,
        upstream.path_for(path),
        4 + upstream.headers.len(),
    )
    .map_err(invalid)?;
    let headers = &mut req.headers;
    let json = HeaderValue::from_static("application/json");
    let identity = HeaderValue::from_static("identity");
    heads::insert(headers, header::HOST, upstream.host_header.clone()).map_err(invalid)?;
    heads::insert(headers, header::CONTENT_TYPE, json).map_err(invalid)?;
    heads::insert(headers, header::CONTENT_LENGTH, body_len.into()).map_err(invalid)?;
    heads::insert(headers, header::ACCEPT_ENCODING, identity).map_err(invalid)?;
    for (name, value) in &upstream.headers {
        heads::insert(headers, name, value.expose().clone()).map_err(invalid)?;
    }
    Ok(req)
}

/// The first vector of an embeddings answer: OpenAI's `{"data":[{"embedding":[…]}]}` (which
/// Ollama, vLLM, LM Studio … also speak), Ollama's `{"embeddings":[[…]]}` or
/// `{"embedding":[…]}`.
fn parse(body: &[u8]) -> Result<Vec<f32>, EmbedError> {
    #[derive(Deserialize)]
    struct Datum {
        embedding: Vec<f32>,
    }
    #[derive(Deserialize)]
    struct Answer {
        data: Option<Vec<Datum>>,
        embeddings: Option<Vec<Vec<f32>>>,
        embedding: Option<Vec<f32>>,
    }
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|e| EmbedError::Invalid(format!("not an embeddings answer: {e}")))?;
    answer
        .data
        .and_then(|d| d.into_iter().next().map(|d| d.embedding))
        .or_else(|| answer.embeddings.and_then(|e| e.into_iter().next()))
        .or(answer.embedding)
        .ok_or_else(|| EmbedError::Invalid("no embedding in the answer".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_embedding_shapes_it_knows() {
        let v = |s: &str| parse(s.as_bytes()).unwrap();
        assert_eq!(
            v(
                r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5,-1]}],"model":"m"}"#
            ),
            vec![0.5, -1.0]
        );
        assert_eq!(v(r#"{"embeddings":[[1,2]]}"#), vec![1.0, 2.0]);
        assert_eq!(v(r#"{"embedding":[3]}"#), vec![3.0]);
        for garbage in [
            "",
            "null",
            "{}",
            r#"{"data":[]}"#,
            r#"{"data":[{"embedding":"AAAA"}]}"#,
            r#"{"data":[{"embedding":[1,"x"]}]}"#,
            "<html>",
        ] {
            assert!(parse(garbage.as_bytes()).is_err(), "{garbage:?}");
        }
    }
}
