//! Provider replies: picks the wire format a request speaks (one file per provider) and
//! answers in it; any other path gets an echo of the request.
//!
//! Each provider's `answer` returns `None` for requests it does not own. To answer a new
//! endpoint, add a match arm there; a new provider is a new file and a line in [`PROVIDERS`].

mod anthropic;
mod gemini;
mod ollama;
mod openai;

use serde_json::{json, Value};

use super::faults::Outcome;
use super::reply::{json_reply, Reply};
use super::RecordedRequest;

/// What the providers remember between requests: their prompt caches.
#[derive(Default)]
pub(super) struct State {
    pub anthropic: anthropic::PromptCache,
    pub openai: openai::PromptCache,
}

/// Asked in this order; the first `Some` answers. Anthropic comes before OpenAI because both
/// serve `GET /v1/models` (Anthropic's is told apart by its `anthropic-version` header).
const PROVIDERS: &[fn(&Ctx) -> Option<Reply>] = &[
    gemini::answer,
    anthropic::answer,
    openai::answer,
    ollama::answer,
];

/// What every provider handler needs to know about the request being answered.
struct Ctx<'a> {
    req: &'a RecordedRequest,
    /// The request target without its query string.
    path: &'a str,
    /// The query string, without `?` (empty when there is none).
    query: &'a str,
    hit: usize,
    /// Parsed request body (`Null` when it is not JSON; the mock is lenient).
    json: Value,
    /// `"Hello from mock #N"` (in OpenAI JSON mode, `{"text":"Hello from mock #N"}`)
    text: String,
    /// `text` split over the stream's content events.
    pieces: Vec<String>,
    /// The kind of answer asked for (`x-mock-outcome`).
    outcome: Outcome,
    state: &'a State,
}

impl Ctx<'_> {
    fn method(&self) -> &str {
        &self.req.method
    }

    fn model(&self, default: &str) -> String {
        self.json["model"].as_str().unwrap_or(default).to_owned()
    }

    fn stream(&self, default: bool) -> bool {
        self.json["stream"].as_bool().unwrap_or(default)
    }

    fn prompt_tokens(&self) -> usize {
        (self.req.body.len() / 4).max(1)
    }

    fn completion_tokens(&self) -> usize {
        self.pieces.len()
    }
}

/// The reply to `req`, the `hit`-th request, streamed (where it streams) over `events` content
/// events, of the kind `outcome` asks for; `state` is what the providers remember (their prompt
/// caches).
pub(super) fn answer(
    req: &RecordedRequest,
    hit: usize,
    events: usize,
    outcome: Outcome,
    state: &State,
) -> Reply {
    let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
    let json: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let mut text = format!("Hello from mock #{hit}");
    if json["response_format"]["type"] == "json_object" {
        // OpenAI JSON mode: the answer is a JSON object.
        text = json!({ "text": text }).to_string();
    }
    let ctx = Ctx {
        req,
        path,
        query,
        hit,
        json,
        pieces: split_text(&text, events),
        text,
        outcome,
        state,
    };
    PROVIDERS
        .iter()
        .find_map(|provider| provider(&ctx))
        .unwrap_or_else(|| echo(&ctx))
}

/// Splits `text` into `n` pieces along word boundaries ("Hello", " from", ...); extra events
/// beyond the number of words carry empty text.
fn split_text(text: &str, n: usize) -> Vec<String> {
    let words: Vec<String> = text
        .split(' ')
        .enumerate()
        .map(|(i, w)| {
            if i == 0 {
                w.to_owned()
            } else {
                format!(" {w}")
            }
        })
        .collect();
    let len = words.len();
    if n >= len {
        let mut pieces = words;
        pieces.resize(n, String::new());
        return pieces;
    }
    (0..n)
        .map(|i| words[i * len / n..(i + 1) * len / n].concat())
        .collect()
}

/// Fallback for any other path: describes the request back (repeated headers joined by ", ").
fn echo(c: &Ctx) -> Reply {
    let mut headers = serde_json::Map::new();
    for (name, value) in &c.req.headers {
        match headers.get_mut(name) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(value);
            }
            _ => {
                headers.insert(name.clone(), json!(value));
            }
        }
    }
    json_reply(
        200,
        &json!({
            "method": c.req.method,
            "path": c.req.path,
            "body_len": c.req.body.len(),
            "body_blake3": blake3::hash(&c.req.body).to_hex().as_str(),
            "headers": headers,
            "hit": c.hit,
        }),
    )
}
