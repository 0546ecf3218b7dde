//! OpenAI wire format: chat completions (JSON, SSE with optional usage chunk, tool calls, JSON
//! mode), the Responses API (JSON, and SSE with named events; background jobs polled to
//! completion), audio transcriptions and translations (multipart uploads), embeddings (including
//! the deterministic bag-of-words model `mock-bow` that the semantic cache tests use as their
//! embedder) and the model list; automatic prompt caching ([`PromptCache`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use serde_json::{json, Value};

use super::super::dates::unix_now;
use super::super::faults::Outcome;
use super::super::reply::{json_reply, sse_data, sse_event, stream_reply, Reply};
use super::Ctx;

pub(super) fn answer(c: &Ctx) -> Option<Reply> {
    Some(match (c.method(), c.path) {
        ("POST", "/v1/chat/completions") => chat(c),
        ("POST", "/v1/responses") if c.json["background"] == true => background_create(c),
        ("POST", "/v1/responses") => responses(c),
        ("POST", "/v1/audio/transcriptions" | "/v1/audio/translations") => audio(c),
        ("POST", "/v1/embeddings") => embeddings(c),
        ("GET", "/v1/models") => models(),
        ("GET", path) if path.starts_with("/v1/responses/") => {
            background_poll(&path["/v1/responses/".len()..])
        }
        _ => return None,
    })
}

/// The error an OpenAI-compatible server (vLLM and others) puts inside a 200.
fn engine_error() -> Value {
    json!({"error": {"message": "mock engine error", "type": "internal_error", "code": 500}})
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
    let finish = match (c.outcome, &tool) {
        (Outcome::Refusal, _) => "content_filter",
        (_, Some(_)) => "tool_calls",
        (_, None) => "stop",
    };

    if !c.stream(false) {
        if c.outcome == Outcome::Error {
            return json_reply(200, &engine_error());
        }
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
            None if c.outcome == Outcome::Refusal => json!({"role": "assistant", "content": null}),
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
    match c.outcome {
        // An engine failing mid-stream: the error as an event, then the usual end.
        Outcome::Error => events.push(sse_data(&engine_error())),
        // Cut short, yet ended with [DONE]: no choice carries a finish_reason.
        Outcome::Partial => {}
        _ => events.push(chunk(json!({}), json!(finish))),
    }
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

/// `POST /v1/responses`: one message output; streamed as the Responses API's named events,
/// ending with `response.completed` (no `[DONE]`). Outcomes: `error` fails the response
/// (`response.failed`, or an `error` event mid-stream), `partial` ends it `incomplete`,
/// `refusal` answers with a refusal part.
fn responses(c: &Ctx) -> Reply {
    let id = format!("resp_mock_{}", c.hit);
    let msg_id = format!("msg_mock_{}", c.hit);
    let (input, output) = (c.prompt_tokens(), c.completion_tokens());
    let usage = json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": c.state.openai.cached_tokens(&c.req.body)},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input + output,
    });
    let part = match c.outcome {
        Outcome::Refusal => json!({"type": "refusal", "refusal": "I can't help with that."}),
        _ => json!({"type": "output_text", "text": c.text, "annotations": []}),
    };
    let item = |status: &str, content: Value| {
        json!({
            "id": msg_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content,
        })
    };
    let response = |status: &str, output: Value, usage: Value| {
        let mut r = json!({
            "id": id,
            "object": "response",
            "created_at": unix_now(),
            "status": status,
            "error": null,
            "incomplete_details": null,
            "instructions": null,
            "model": c.model("gpt-4o-mini"),
            "output": output,
            "parallel_tool_calls": true,
            "tool_choice": "auto",
            "tools": [],
            "usage": usage,
            "metadata": {},
        });
        match (c.outcome, status) {
            (Outcome::Error, "failed") => {
                r["error"] = json!({"code": "server_error", "message": "mock engine error"});
            }
            (Outcome::Partial, "incomplete") => {
                r["incomplete_details"] = json!({"reason": "max_output_tokens"});
            }
            _ => {}
        }
        r
    };
    let end_status = match c.outcome {
        Outcome::Error => "failed",
        Outcome::Partial => "incomplete",
        _ => "completed",
    };
    if !c.stream(false) {
        let output = match c.outcome {
            Outcome::Error => json!([]),
            _ => json!([item(end_status, json!([part]))]),
        };
        return json_reply(200, &response(end_status, output, usage));
    }
    let mut seq = 0;
    let mut events = Vec::new();
    let mut event = |kind: &str, mut data: Value| {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(seq);
        seq += 1;
        events.push(sse_event(kind, &data));
    };
    event(
        "response.created",
        json!({"response": response("in_progress", json!([]), Value::Null)}),
    );
    event(
        "response.in_progress",
        json!({"response": response("in_progress", json!([]), Value::Null)}),
    );
    event(
        "response.output_item.added",
        json!({"output_index": 0, "item": item("in_progress", json!([]))}),
    );
    let empty_part = match c.outcome {
        Outcome::Refusal => json!({"type": "refusal", "refusal": ""}),
        _ => json!({"type": "output_text", "text": "", "annotations": []}),
    };
    event(
        "response.content_part.added",
        json!({"item_id": msg_id, "output_index": 0, "content_index": 0, "part": empty_part}),
    );
    let (delta_kind, done_kind, field) = match c.outcome {
        Outcome::Refusal => ("response.refusal.delta", "response.refusal.done", "refusal"),
        _ => (
            "response.output_text.delta",
            "response.output_text.done",
            "text",
        ),
    };
    let at = |extra: Value| {
        let mut v = json!({"item_id": msg_id, "output_index": 0, "content_index": 0});
        for (k, x) in extra.as_object().expect("an object") {
            v[k] = x.clone();
        }
        v
    };
    for (i, piece) in c.pieces.iter().enumerate() {
        if c.outcome == Outcome::Error && i == c.pieces.len() / 2 {
            // The stream fails partway: an `error` event is its last.
            event(
                "error",
                json!({"code": "server_error", "message": "mock engine error", "param": null}),
            );
            return stream_reply("text/event-stream", events);
        }
        event(delta_kind, at(json!({"delta": piece, "logprobs": []})));
    }
    let full = match c.outcome {
        Outcome::Refusal => "I can't help with that.".to_owned(),
        _ => c.text.clone(),
    };
    event(done_kind, at(json!({ field: full, "logprobs": [] })));
    event("response.content_part.done", at(json!({"part": part})));
    event(
        "response.output_item.done",
        json!({"output_index": 0, "item": item(end_status, json!([part]))}),
    );
    let end_event = format!("response.{end_status}");
    event(
        &end_event,
        json!({"response": response(end_status, json!([item(end_status, json!([part]))]), usage)}),
    );
    stream_reply("text/event-stream", events)
}

/// `POST /v1/audio/transcriptions` and `/translations`: a multipart upload, answered with the
/// mock text (`{"text": ...}`, or the bare text for `response_format=text`). The upload's
/// BLAKE3 goes in `x-mock-body-blake3` so a test can see what was sent.
fn audio(c: &Ctx) -> Reply {
    let body = String::from_utf8_lossy(&c.req.body);
    let wants_text = body.contains("name=\"response_format\"\r\n\r\ntext\r\n");
    let mut reply = if wants_text {
        Reply {
            status: 200,
            content_type: "text/plain; charset=utf-8",
            extra_headers: Vec::new(),
            body: super::super::reply::Body::Full(c.text.clone().into_bytes()),
        }
    } else {
        json_reply(
            200,
            &json!({"text": c.text, "usage": {"type": "duration", "seconds": 1}}),
        )
    };
    reply.extra_headers.push((
        "x-mock-body-blake3",
        blake3::hash(&c.req.body).to_hex().to_string(),
    ));
    reply
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

// ---------------------------------------------------------------------------------------------
// Background Responses (`"background": true`): a job, created queued, whose status advances on
// every poll (`GET /v1/responses/{id}`): in_progress, then completed with the answer. Only an
// upstream call can advance it, so a poll answered from a cache would never see it finish.
// ---------------------------------------------------------------------------------------------

/// A background job: its model, its answer, and how many times it was polled.
struct Job {
    model: String,
    text: String,
    created_at: u64,
    polls: u32,
}

/// Jobs by id, for every mock in the process (ids are unique across them).
fn jobs() -> &'static Mutex<HashMap<String, Job>> {
    static JOBS: OnceLock<Mutex<HashMap<String, Job>>> = OnceLock::new();
    JOBS.get_or_init(Mutex::default)
}

fn background_create(c: &Ctx) -> Reply {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = format!("resp_bg_{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let job = Job {
        model: c.model("gpt-4o-mini"),
        text: c.text.clone(),
        created_at: unix_now(),
        polls: 0,
    };
    let body = response_object(&id, &job, "queued");
    jobs()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, job);
    json_reply(200, &body)
}

fn background_poll(id: &str) -> Reply {
    let mut jobs = jobs().lock().unwrap_or_else(|e| e.into_inner());
    let Some(job) = jobs.get_mut(id) else {
        return json_reply(
            404,
            &json!({"error": {"message": format!("No response with id '{id}'."), "type": "invalid_request_error", "code": null, "param": null}}),
        );
    };
    job.polls += 1;
    let status = if job.polls < 2 {
        "in_progress"
    } else {
        "completed"
    };
    json_reply(200, &response_object(id, job, status))
}

/// A Responses API `response` object in `status`; completed ones carry the answer and usage.
fn response_object(id: &str, job: &Job, status: &str) -> Value {
    let done = status == "completed";
    let output = if done {
        json!([{
            "type": "message",
            "id": format!("msg_{id}"),
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": job.text, "annotations": []}],
        }])
    } else {
        json!([])
    };
    json!({
        "id": id,
        "object": "response",
        "created_at": job.created_at,
        "status": status,
        "background": true,
        "model": job.model,
        "output": output,
        "usage": if done { json!({"input_tokens": 5, "output_tokens": 4, "total_tokens": 9, "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}) } else { Value::Null },
        "error": null,
        "incomplete_details": null,
        "instructions": null,
        "metadata": {},
        "parallel_tool_calls": true,
        "temperature": 1.0,
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
    })
}

/// OpenAI's automatic prompt caching, as the provider reports it: a chat or Responses request
/// of 1024 tokens or more whose leading 1024 + 128·k tokens were seen before reports them as
/// `prompt_tokens_details.cached_tokens` (Responses: `input_tokens_details.cached_tokens`),
/// included in the prompt count. Tokens are body bytes
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
