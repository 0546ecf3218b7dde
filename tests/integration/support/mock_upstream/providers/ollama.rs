//! Ollama wire format: `/api/chat` and `/api/generate` (JSON, or NDJSON streams, which are
//! Ollama's default) and the model list (`/api/tags`).

use serde_json::json;

use super::super::dates::{rfc3339, unix_now};
use super::super::faults::Outcome;
use super::super::reply::{json_reply, stream_reply, Reply};
use super::Ctx;

pub(super) fn answer(c: &Ctx) -> Option<Reply> {
    Some(match (c.method(), c.path) {
        ("POST", "/api/chat") => generate(c, true),
        ("POST", "/api/generate") => generate(c, false),
        ("GET", "/api/tags") => tags(),
        _ => return None,
    })
}

/// `/api/chat` (`chat == true`, `message{role,content}`) or `/api/generate` (`response`).
fn generate(c: &Ctx, chat: bool) -> Reply {
    let model = c.model("llama3.2");
    let created_at = rfc3339(unix_now());
    let object = |text: &str, done: bool| {
        let mut o = json!({"model": model, "created_at": created_at, "done": done});
        if chat {
            o["message"] = json!({"role": "assistant", "content": text});
        } else {
            o["response"] = json!(text);
        }
        if done {
            o["done_reason"] = json!("stop");
            o["total_duration"] = json!(1_000_000);
            o["load_duration"] = json!(100_000);
            o["prompt_eval_count"] = json!(c.prompt_tokens());
            o["prompt_eval_duration"] = json!(200_000);
            o["eval_count"] = json!(c.completion_tokens());
            o["eval_duration"] = json!(700_000);
        }
        o
    };
    // Ollama's runner dying: an `error` object (a stream: its last line).
    let error = json!({"error": "model runner has unexpectedly stopped"});
    if !c.stream(true) {
        if c.outcome == Outcome::Error {
            return json_reply(200, &error);
        }
        return json_reply(200, &object(&c.text, true));
    }
    let mut events: Vec<String> = c
        .pieces
        .iter()
        .map(|p| format!("{}\n", object(p, false)))
        .collect();
    match c.outcome {
        Outcome::Error => events.push(format!("{error}\n")),
        // Cut short between objects: no `"done": true`.
        Outcome::Partial => {}
        _ => events.push(format!("{}\n", object("", true))),
    }
    stream_reply("application/x-ndjson", events)
}

fn tags() -> Reply {
    json_reply(
        200,
        &json!({"models": [{
            "name": "llama3.2:latest",
            "model": "llama3.2:latest",
            "modified_at": "2025-01-01T00:00:00Z",
            "size": 2_019_393_189_u64,
            "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
            "details": {
                "format": "gguf",
                "family": "llama",
                "parameter_size": "3.2B",
                "quantization_level": "Q4_K_M",
            },
        }]}),
    )
}
