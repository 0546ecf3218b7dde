//! OpenAI wire format: chat completions (JSON, SSE with optional usage chunk, tool calls, JSON
//! mode), embeddings (including the deterministic bag-of-words model `mock-bow` that the
//! semantic cache tests use as their embedder) and the model list.

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
    let usage = json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
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

/// Dimensions of a `mock-bow` embedding.
const BOW_DIMS: usize = 256;

/// Model `mock-bow`: a hashed bag of words — each lowercased run of letters and digits adds 1
/// to the dimension its BLAKE3 hash picks — scaled to unit length. Deterministic, and close for
/// rewordings: "What's the tempo of this loop?" and "what is the TEMPO of this loop" share 6 of
/// 7 words (cosine ≈ 0.857).
fn bag_of_words(text: &str) -> Vec<f64> {
    let mut v = vec![0.0; BOW_DIMS];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let hash = blake3::hash(word.to_lowercase().as_bytes());
        let bucket = u16::from_le_bytes([hash.as_bytes()[0], hash.as_bytes()[1]]) as usize;
        v[bucket % BOW_DIMS] += 1.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// Each embedding is `[hit, h0, h1, h2]` where `h*` come from the input's BLAKE3 hash, so the
/// vector identifies its input and also which upstream hit produced it — except for model
/// `mock-bow`, whose vectors are [`bag_of_words`].
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
            if c.json["model"] == "mock-bow" {
                return json!({"object": "embedding", "index": index, "embedding": bag_of_words(input)});
            }
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
