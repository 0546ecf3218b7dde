//! Recording a response while it is relayed to the client, to store it once complete.

use super::entry::{is_replayable, unix_now, Entry};
use super::key::CacheKey;
use super::Cache;
use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use std::sync::Arc;
use std::time::Duration;

/// Content types that are streamed event by event; stored and replayed by the streaming cache,
/// not here.
const STREAMING_TYPES: &[&str] = &["text/event-stream", "application/x-ndjson"];

/// Where and how a response would be stored, decided before the upstream answers.
pub struct RecordPlan {
    pub cache: Arc<Cache>,
    /// The route's name (part of the Redis key).
    pub route: String,
    pub key: CacheKey,
    pub ttl: Duration,
    /// `cache.max_entry_bytes`.
    pub limit: usize,
}

/// Collects the body chunks (reference-counted, not copied) of a storable response.
pub struct Recorder {
    plan: RecordPlan,
    status: u16,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    chunks: Vec<Bytes>,
    size: usize,
    overflowed: bool,
}

impl Recorder {
    /// Starts recording if `head` (the response as sent to the client) may be stored: a 2xx,
    /// not a stream, not marked `no-store` by the upstream, and not declared larger than `limit`.
    pub fn start(plan: RecordPlan, head: &ResponseHeader) -> Option<Recorder> {
        if !head.status.is_success() {
            return None;
        }
        let header = |name| head.headers.get(name).and_then(|v| v.to_str().ok());
        let content_type = header(http::header::CONTENT_TYPE).unwrap_or("");
        if STREAMING_TYPES.iter().any(|t| content_type.starts_with(t)) {
            return None;
        }
        if header(http::header::CACHE_CONTROL).is_some_and(|v| v.contains("no-store")) {
            return None;
        }
        let declared = header(http::header::CONTENT_LENGTH).and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|len| len > plan.limit) {
            return None;
        }
        let headers = head
            .headers
            .iter()
            .filter(|(n, _)| is_replayable(n))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        Some(Recorder {
            plan,
            status: head.status.as_u16(),
            headers,
            chunks: Vec::new(),
            size: 0,
            overflowed: false,
        })
    }

    pub fn push(&mut self, chunk: &Bytes) {
        if self.overflowed {
            return;
        }
        self.size += chunk.len();
        if self.size > self.plan.limit {
            // Too large to store: stop holding memory for it.
            self.overflowed = true;
            self.chunks = Vec::new();
            return;
        }
        self.chunks.push(chunk.clone());
    }

    /// Stores the complete response. Call only after the upstream ended cleanly, and before
    /// the client is given the end of the response.
    pub fn commit(self) {
        if self.overflowed {
            return;
        }
        let body = match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks[0].clone(),
            _ => {
                let mut buf = BytesMut::with_capacity(self.size);
                for c in &self.chunks {
                    buf.extend_from_slice(c);
                }
                buf.freeze()
            }
        };
        let entry = Entry {
            status: self.status,
            headers: self.headers,
            body,
            stored_at: unix_now(),
            ttl: self.plan.ttl,
        };
        self.plan
            .cache
            .store(&self.plan.route, self.plan.key, entry);
    }
}
