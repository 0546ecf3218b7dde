//! Anthropic Messages wire format: messages (JSON, and SSE with named events) and the model
//! list; prompt caching billed as Anthropic bills it ([`PromptCache`]).

use std::collections::HashSet;
use std::sync::Mutex;

use serde_json::{json, Value};

use super::super::faults::Outcome;
use super::super::reply::{json_reply, sse_event, stream_reply, Reply};
use super::Ctx;

pub(super) fn answer(c: &Ctx) -> Option<Reply> {
    Some(match (c.method(), c.path) {
        ("POST", "/v1/messages") => messages(c),
        // Shares the path with OpenAI's; Anthropic's SDKs always send `anthropic-version`.
        ("GET", "/v1/models") if c.req.header("anthropic-version").is_some() => models(),
        _ => return None,
    })
}

fn messages(c: &Ctx) -> Reply {
    let model = c.model("claude-3-5-haiku-latest");
    let id = format!("msg_mock_{}", c.hit);
    let output = c.completion_tokens();
    let billed = c.state.anthropic.bill(&c.json, c.prompt_tokens());
    let usage = |output: usize| {
        json!({
            "input_tokens": billed.input,
            "cache_creation_input_tokens": billed.cache_write,
            "cache_read_input_tokens": billed.cache_read,
            "output_tokens": output,
        })
    };
    let stop_reason = match c.outcome {
        Outcome::Refusal => "refusal",
        _ => "end_turn",
    };
    if !c.stream(false) {
        if c.outcome == Outcome::Error {
            return json_reply(200, &overloaded());
        }
        return json_reply(
            200,
            &json!({
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": c.text}],
                "stop_reason": stop_reason,
                "stop_sequence": null,
                "usage": usage(output),
            }),
        );
    }
    let mut events = vec![
        sse_event(
            "message_start",
            &json!({
                "type": "message_start",
                "message": {
                    "id": id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": usage(1),
                },
            }),
        ),
        sse_event(
            "content_block_start",
            &json!({
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            }),
        ),
    ];
    for (i, piece) in c.pieces.iter().enumerate() {
        if c.outcome == Outcome::Error && i == c.pieces.len() / 2 {
            // Overloaded mid-stream: an `error` event ends it.
            events.push(sse_event("error", &overloaded()));
            return stream_reply("text/event-stream", events);
        }
        events.push(sse_event(
            "content_block_delta",
            &json!({
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": piece},
            }),
        ));
    }
    if c.outcome == Outcome::Partial {
        // Cut short between events, the connection closed cleanly.
        return stream_reply("text/event-stream", events);
    }
    events.push(sse_event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(sse_event(
        "message_delta",
        &json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": {"output_tokens": output},
        }),
    ));
    events.push(sse_event("message_stop", &json!({"type": "message_stop"})));
    stream_reply("text/event-stream", events)
}

/// Anthropic's error shape, as an `error` event or a body.
fn overloaded() -> Value {
    json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
}

fn models() -> Reply {
    let data: Vec<Value> = ["claude-3-5-haiku-latest", "claude-sonnet-4-0"]
        .iter()
        .map(|id| {
            json!({
                "type": "model",
                "id": id,
                "display_name": id,
                "created_at": "2025-01-01T00:00:00Z",
            })
        })
        .collect();
    json_reply(
        200,
        &json!({
            "data": data,
            "has_more": false,
            "first_id": data[0]["id"],
            "last_id": data[data.len() - 1]["id"],
        }),
    )
}

/// Anthropic's prompt cache as the provider bills it: a request's prefix up to a block marked
/// `cache_control` is cached (when at least the model's minimum: 2048 tokens for Haiku models,
/// else 1024); a later request whose prefix up to one of its block boundaries (at most 20
/// blocks before one of its breakpoints) was cached reads it. The prefix is tools, system,
/// then messages, block by block (string content counts as one text block, as Anthropic reads
/// it), `cache_control` left out; a block is (its bytes) / 4 tokens, and `input_tokens` is
/// what is left of the request's `prompt_tokens` (body bytes / 4).
#[derive(Default)]
pub(crate) struct PromptCache {
    /// The hashes of the prefixes cached so far (model included).
    prefixes: Mutex<HashSet<[u8; 32]>>,
}

/// How one request's prompt tokens are billed.
pub(crate) struct Billed {
    pub input: usize,
    pub cache_read: usize,
    pub cache_write: usize,
}

/// How far back from a breakpoint Anthropic looks for a cached prefix, in blocks.
const LOOKBACK_BLOCKS: usize = 20;

impl PromptCache {
    pub(crate) fn bill(&self, body: &Value, prompt_tokens: usize) -> Billed {
        let model = body["model"].as_str().unwrap_or_default();
        let min_tokens = if model.contains("haiku") { 2048 } else { 1024 };
        // After each block: the chained hash of the prefix, its tokens, and whether the block
        // is a breakpoint.
        let mut boundaries: Vec<([u8; 32], usize, bool)> = Vec::new();
        let mut hash = *blake3::hash(model.as_bytes()).as_bytes();
        let mut bytes = 0;
        for (role, block, marked) in blocks(body) {
            let canonical = serde_json::to_vec(&block).unwrap_or_default();
            let mut h = blake3::Hasher::new();
            h.update(&hash);
            h.update(role.unwrap_or("-").as_bytes());
            h.update(&canonical);
            hash = *h.finalize().as_bytes();
            bytes += canonical.len();
            boundaries.push((hash, bytes / 4, marked));
        }
        let breakpoints: Vec<usize> = (0..boundaries.len()).filter(|&i| boundaries[i].2).collect();
        let mut cached = self.prefixes.lock().unwrap_or_else(|e| e.into_inner());
        let read = breakpoints
            .iter()
            .filter_map(|&b| {
                (b.saturating_sub(LOOKBACK_BLOCKS - 1)..=b)
                    .rev()
                    .find(|&i| cached.contains(&boundaries[i].0))
            })
            .max();
        let read_tokens = read.map_or(0, |i| boundaries[i].1);
        let mut write_tokens = 0;
        if let Some(&last) = breakpoints.last() {
            let last_tokens = boundaries[last].1;
            if last_tokens >= min_tokens && read.is_none_or(|r| r < last) {
                write_tokens = last_tokens - read_tokens;
            }
            for &b in &breakpoints {
                if boundaries[b].1 >= min_tokens {
                    cached.insert(boundaries[b].0);
                }
            }
        }
        let (read_tokens, write_tokens) = (
            read_tokens.min(prompt_tokens),
            write_tokens.min(prompt_tokens - read_tokens.min(prompt_tokens)),
        );
        Billed {
            input: prompt_tokens - read_tokens - write_tokens,
            cache_read: read_tokens,
            cache_write: write_tokens,
        }
    }
}

/// The request's blocks in caching order — each tool, each system block, each message's
/// content blocks (with the message's role) — without their `cache_control`, and whether
/// each had one.
fn blocks(body: &Value) -> Vec<(Option<&str>, Value, bool)> {
    let mut out = Vec::new();
    let mut push = |mut block: Value, role| {
        let marked = block
            .as_object_mut()
            .and_then(|o| o.remove("cache_control"))
            .is_some();
        out.push((role, block, marked));
    };
    let as_blocks = |content: &Value| match content {
        Value::String(s) => vec![json!({"type": "text", "text": s})],
        Value::Array(items) => items.clone(),
        _ => Vec::new(),
    };
    for tool in body["tools"].as_array().into_iter().flatten() {
        push(tool.clone(), None);
    }
    for block in as_blocks(&body["system"]) {
        push(block, Some("system"));
    }
    for message in body["messages"].as_array().into_iter().flatten() {
        for block in as_blocks(&message["content"]) {
            push(block, message["role"].as_str());
        }
    }
    out
}
