//! Anthropic Messages wire format: messages (JSON, and SSE with named events) and the model
//! list.

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
    let (input, output) = (c.prompt_tokens(), c.completion_tokens());
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
                "usage": {"input_tokens": input, "output_tokens": output},
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
                    "usage": {"input_tokens": input, "output_tokens": 1},
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
