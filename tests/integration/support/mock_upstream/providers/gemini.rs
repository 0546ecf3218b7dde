//! Gemini wire format: generateContent, streamGenerateContent (SSE with `alt=sse`, else a
//! streamed JSON array) and the model list.

use serde_json::{json, Value};

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
fn generate(c: &Ctx, model: &str, stream: Option<bool>) -> Reply {
    let (prompt, completion) = (c.prompt_tokens(), c.completion_tokens());
    let usage = json!({
        "promptTokenCount": prompt,
        "candidatesTokenCount": completion,
        "totalTokenCount": prompt + completion,
    });
    let response = |text: &str, last: bool| {
        let mut candidate = json!({
            "content": {"parts": [{"text": text}], "role": "model"},
            "index": 0,
        });
        let mut response = json!({
            "modelVersion": model,
            "responseId": format!("mock-{}", c.hit),
        });
        if last {
            candidate["finishReason"] = json!("STOP");
            response["usageMetadata"] = usage.clone();
        }
        response["candidates"] = json!([candidate]);
        response
    };
    let Some(sse) = stream else {
        return json_reply(200, &response(&c.text, true));
    };
    let last = c.pieces.len() - 1;
    let chunks = c
        .pieces
        .iter()
        .enumerate()
        .map(|(i, p)| response(p, i == last));
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
