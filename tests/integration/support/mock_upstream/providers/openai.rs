//! OpenAI wire format: chat completions (JSON, SSE with optional usage chunk, tool calls, JSON
//! mode), embeddings and the model list; automatic prompt caching ([`PromptCache`]).

use std::collections::HashSet;
use std::sync::Mutex;

use serde_json::{json, Value};

use super::super::dates::unix_now;
use super::super::reply::{json_reply, sse_data, stream_reply, Reply};
use super::Ctx;

pub(super) fn answer(c: &Ctx) -> Option<Reply> {
    Some(match (c.method(), c.path) {
        ("POST", "/v1/chat/completions") => chat(c),
        ("POST", "/v1/embeddings") => embeddings(c),
        ("GET", "/v1/models") => models(),
        _ => return None,
    })
}

fn chat(c: &Ctx) -> Reply {
    let model = c.model("gpt-4o-mini");
    let id = format!("chatcmpl-mock-{}", c.hit);
    let created = unix_now();
    let (prompt, completion) = (c.prompt_tokens(), c.completion_tokens());
    let cached = c.state.openai.cached_tokens(&c.req.body);
    let usage = json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
    });
    let tool = c.json["tools"].as_array().and_then(|t| t.first()).map(|t| {
        t["function"]["name"]
            .as_str()
            .or(t["name"].as_str())
            .unwrap_or("tool")
            .to_owned()
    });
    let call_id = format!("call_mock_{}", c.hit);
    let finish = if tool.is_some() { "tool_calls" } else { "stop" };

    if !c.stream(false) {
        let message = match &tool {
            Some(name) => json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [{
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": "{}"},
                }],
            }),
            None => json!({"role": "assistant", "content": c.text}),
        };
        return json_reply(
            200,
            &json!({
                "id": id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": message,
                    "logprobs": null,
                    "finish_reason": finish,
                }],
                "usage": usage,
                "system_fingerprint": "fp_mock",
            }),
        );
    }

    let chunk = |delta: Value, finish_reason: Value| {
        sse_data(&json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "delta": delta,
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
        }))
    };
    let mut events = Vec::new();
    match &tool {
        Some(name) => {
            events.push(chunk(
                json!({
                    "role": "assistant",
                    "content": null,
                    "tool_calls": [{
                        "index": 0,
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": ""},
                    }],
                }),
                Value::Null,
            ));
            events.push(chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
                Value::Null,
            ));
        }
        None => {
            for (i, piece) in c.pieces.iter().enumerate() {
                let delta = if i == 0 {
                    json!({"role": "assistant", "content": piece})
                } else {
                    json!({"content": piece})
                };
                events.push(chunk(delta, Value::Null));
            }
        }
    }
    events.push(chunk(json!({}), json!(finish)));
    if c.json["stream_options"]["include_usage"].as_bool() == Some(true) {
        events.push(sse_data(&json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage,
        })));
    }
    events.push("data: [DONE]\n\n".to_owned());
    stream_reply("text/event-stream", events)
}

/// Each embedding is `[hit, h0, h1, h2]` where `h*` come from the input's BLAKE3 hash, so the
/// vector identifies its input and also which upstream hit produced it.
fn embeddings(c: &Ctx) -> Reply {
    let inputs: Vec<String> = match &c.json["input"] {
        Value::Null => Vec::new(),
        Value::String(s) => vec![s.clone()],
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .collect(),
        other => vec![other.to_string()],
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let hash = blake3::hash(input.as_bytes());
            let mut embedding = vec![c.hit as f64];
            embedding.extend(hash.as_bytes()[..3].iter().map(|b| f64::from(*b) / 255.0));
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let tokens = c.prompt_tokens();
    json_reply(
        200,
        &json!({
            "object": "list",
            "data": data,
            "model": c.model("text-embedding-3-small"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }),
    )
}

fn models() -> Reply {
    let data: Vec<Value> = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]
        .iter()
        .map(
            |id| json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": "mock"}),
        )
        .collect();
    json_reply(200, &json!({"object": "list", "data": data}))
}

/// OpenAI's automatic prompt caching, as the provider reports it: a chat request of 1024
/// tokens or more whose leading 1024 + 128·k tokens were seen before reports them as
/// `prompt_tokens_details.cached_tokens` (included in `prompt_tokens`). Tokens are body bytes
/// / 4, so the prefixes are the body's first 4096 + 512·k bytes.
#[derive(Default)]
pub(crate) struct PromptCache {
    prefixes: Mutex<HashSet<[u8; 32]>>,
}

impl PromptCache {
    const MIN_BYTES: usize = 1024 * 4;
    const STEP_BYTES: usize = 128 * 4;

    /// The cached tokens of a request with this body, remembering its prefixes.
    pub(crate) fn cached_tokens(&self, body: &[u8]) -> usize {
        let mut seen = self.prefixes.lock().unwrap_or_else(|e| e.into_inner());
        let mut cached = 0;
        let mut end = Self::MIN_BYTES;
        while end <= body.len() {
            let hash = *blake3::hash(&body[..end]).as_bytes();
            if !seen.insert(hash) {
                cached = end / 4;
            }
            end += Self::STEP_BYTES;
        }
        cached
    }
}
