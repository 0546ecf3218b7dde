//! What a provider handler returns, and the builders for JSON bodies and event streams.

use bytes::Bytes;
use serde_json::Value;

/// A response before the server writes it (and before faults such as truncation apply).
pub(super) struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    /// Written after the mock's standard headers.
    pub extra_headers: Vec<(&'static str, String)>,
    pub body: Body,
}

pub(super) enum Body {
    /// Sent with `content-length`.
    Full(Vec<u8>),
    /// Sent chunked, one HTTP chunk per event.
    Stream(Vec<Bytes>),
}

pub(super) fn json_reply(status: u16, body: &Value) -> Reply {
    Reply {
        status,
        content_type: "application/json",
        extra_headers: Vec::new(),
        body: Body::Full(body.to_string().into_bytes()),
    }
}

/// A 200 whose `events` are written one chunk each.
pub(super) fn stream_reply(content_type: &'static str, events: Vec<String>) -> Reply {
    Reply {
        status: 200,
        content_type,
        extra_headers: Vec::new(),
        body: Body::Stream(events.into_iter().map(Bytes::from).collect()),
    }
}

/// An SSE event with only a `data:` line (OpenAI).
pub(super) fn sse_data(data: &Value) -> String {
    format!("data: {data}\n\n")
}

/// An SSE event with an `event:` name and a `data:` line (Anthropic).
pub(super) fn sse_event(event: &str, data: &Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}
