//! Gemini wire format: generateContent, streamGenerateContent (SSE with `alt=sse`, else a
//! streamed JSON array) and the model list.

use serde_json::{json, Value};

use super::super::faults::Outcome;
use super::super::reply::{json_reply, stream_reply, Reply};
use super::Ctx;

pub(super) fn answer(c: &Ctx) -> Option<Reply> {
    if c.method() == "POST" {
        if let Some((model, action)) = target(c.path) {
            let sse = c.query.split('&').any(|kv| kv == "alt=sse");
            match action {
                "generateContent" => return Some(generate(c, model, None)),
                "streamGenerateContent" => return Some(generate(c, model, Some(sse))),
                _ => {}
            }
        }
    }
    match (c.method(), c.path) {
        ("GET", "/v1beta/models") => Some(models()),
        _ => None,
    }
}

/// `/v1beta/models/{model}:{action}` (or `/v1/...`) -> `(model, action)`.
fn target(path: &str) -> Option<(&str, &str)> {
    path.strip_prefix("/v1beta/models/")
        .or_else(|| path.strip_prefix("/v1/models/"))?
        .rsplit_once(':')
}

/// `stream`: `None` = generateContent, `Some(true)` = SSE, `Some(false)` = streamed JSON array.
/// Outcomes: `error` puts Gemini's error object in the 200 (a stream: as its last chunk),
/// `partial` leaves the last chunk without `finishReason`, `refusal` ends the candidate with
/// `SAFETY` (and no text), `prompt-blocked` answers only `promptFeedback.blockReason`.
fn generate(c: &Ctx, model: &str, stream: Option<bool>) -> Reply {
    let (prompt, completion) = (c.prompt_tokens(), c.completion_tokens());
    let usage = json!({
        "promptTokenCount": prompt,
        "candidatesTokenCount": completion,
        "totalTokenCount": prompt + completion,
    });
    let safety = json!([
        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": true},
    ]);
    let response = |text: &str, last: bool| {
        let mut response = json!({
            "modelVersion": model,
            "responseId": format!("mock-{}", c.hit),
        });
        if c.outcome == Outcome::PromptBlocked {
            response["promptFeedback"] = json!({"blockReason": "SAFETY", "safetyRatings": safety});
            response["usageMetadata"] =
                json!({"promptTokenCount": prompt, "totalTokenCount": prompt});
            return response;
        }
        let mut candidate = json!({
            "content": {"parts": [{"text": text}], "role": "model"},
            "index": 0,
        });
        if last {
            match c.outcome {
                Outcome::Partial => {}
                Outcome::Refusal => {
                    candidate =
                        json!({"finishReason": "SAFETY", "index": 0, "safetyRatings": safety});
                }
                _ => candidate["finishReason"] = json!("STOP"),
            }
            response["usageMetadata"] = usage.clone();
        }
        response["candidates"] = json!([candidate]);
        response
    };
    let error =
        json!({"error": {"code": 500, "message": "mock internal error", "status": "INTERNAL"}});
    let Some(sse) = stream else {
        if c.outcome == Outcome::Error {
            return json_reply(200, &error);
        }
        return json_reply(200, &response(&c.text, true));
    };
    let last = c.pieces.len() - 1;
    let mut chunks: Vec<Value> = c
        .pieces
        .iter()
        .enumerate()
        .map(|(i, p)| response(p, i == last))
        .collect();
    match c.outcome {
        Outcome::Error => *chunks.last_mut().expect("one chunk at least") = error,
        Outcome::PromptBlocked => chunks.truncate(1),
        _ => {}
    }
    let chunks = chunks.into_iter();
    if sse {
        let events = chunks.map(|r| format!("data: {r}\r\n\r\n")).collect();
        stream_reply("text/event-stream", events)
    } else {
        let mut events: Vec<String> = chunks
            .enumerate()
            .map(|(i, r)| format!("{}{r}", if i == 0 { "[" } else { ",\r\n" }))
            .collect();
        events.push("]".to_owned());
        stream_reply("application/json", events)
    }
}

fn models() -> Reply {
    let models: Vec<Value> = ["gemini-2.0-flash", "gemini-1.5-pro"]
        .iter()
        .map(|m| {
            json!({
                "name": format!("models/{m}"),
                "displayName": m,
                "supportedGenerationMethods": ["generateContent", "streamGenerateContent"],
            })
        })
        .collect();
    json_reply(200, &json!({"models": models}))
}
