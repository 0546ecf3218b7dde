//! What a semantic lookup compares: the text of a request's last user message, split from the
//! rest of the body (which must match exactly, through the context key).
//!
//! Known operations, by the request path: OpenAI chat completions, Anthropic Messages, Gemini
//! `generateContent`/`streamGenerateContent`, Ollama `/api/chat` and `/api/generate`, OpenAI
//! Responses. The last item of the conversation must be the user's and carry only text (strings
//! or text parts); images, audio, files, tool results and anything unrecognised make the request
//! ineligible, so it is only exactly cached. Embedding endpoints and legacy completions are never
//! eligible: a reworded input there needs its own answer.

use serde_json::{Map, Value};

/// What replaces each compared string in the rest of the body. Any fixed string would do: the
/// rest is hashed into a context key, never sent anywhere.
pub const PLACEHOLDER: &str = "\u{0}promptgate:compared-text\u{0}";

/// The wire formats whose last user message can be compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    OpenAiChat,
    AnthropicMessages,
    GeminiContents,
    OllamaChat,
    OllamaGenerate,
    OpenAiResponses,
}

impl Operation {
    /// The operation of a request path (without its query), if it is one the semantic cache
    /// knows.
    pub fn of_path(path: &str) -> Option<Operation> {
        let path = path.trim_end_matches('/');
        if path.ends_with("/chat/completions") {
            Some(Operation::OpenAiChat)
        } else if path.ends_with("/messages") {
            Some(Operation::AnthropicMessages)
        } else if path.contains(":generateContent") || path.contains(":streamGenerateContent") {
            Some(Operation::GeminiContents)
        } else if path.ends_with("/api/chat") {
            Some(Operation::OllamaChat)
        } else if path.ends_with("/api/generate") {
            Some(Operation::OllamaGenerate)
        } else if path.ends_with("/responses") {
            Some(Operation::OpenAiResponses)
        } else {
            None
        }
    }
}

/// Why a request is not semantically cached (it is still exactly cached).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ineligible {
    #[error("not an operation the semantic cache compares (chat, Messages, Gemini contents, Ollama chat/generate, Responses)")]
    Operation,
    #[error("the body is not a JSON object")]
    NotJson,
    #[error("the last message is not the user's")]
    NotUser,
    #[error("the last user message has non-text parts ({0})")]
    NonText(String),
    #[error("the last user message has no text")]
    Empty,
    #[error("the compared text is {chars} characters, over the limit of {max}")]
    TooLong { chars: usize, max: usize },
}

/// A request split in two: the compared text, and the body with that text replaced by
/// [`PLACEHOLDER`] (serialized JSON; the context key hashes its canonical form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub text: String,
    pub rest: Vec<u8>,
}

/// Splits `body` of a request to `path`; texts longer than `max_chars` characters are not
/// compared (an embedder that truncates its input would not see their end).
pub fn split(path: &str, body: &[u8], max_chars: usize) -> Result<Split, Ineligible> {
    let op = Operation::of_path(path).ok_or(Ineligible::Operation)?;
    let mut root: Value = serde_json::from_slice(body).map_err(|_| Ineligible::NotJson)?;
    let object = root.as_object_mut().ok_or(Ineligible::NotJson)?;
    let mut texts = Vec::new();
    match op {
        Operation::OpenAiChat | Operation::AnthropicMessages | Operation::OllamaChat => {
            let last = last_item(object, "messages")?;
            if last.get("role").and_then(Value::as_str) != Some("user") {
                return Err(Ineligible::NotUser);
            }
            if op == Operation::OllamaChat {
                refuse_images(last)?;
            }
            take_content(last, "content", &["text"], &mut texts)?;
        }
        Operation::GeminiContents => {
            let last = last_item(object, "contents")?;
            // Gemini's role defaults to the user's.
            if last.get("role").is_some_and(|r| r.as_str() != Some("user")) {
                return Err(Ineligible::NotUser);
            }
            let parts = last
                .get_mut("parts")
                .and_then(Value::as_array_mut)
                .ok_or(Ineligible::Empty)?;
            for part in parts {
                let part = part
                    .as_object_mut()
                    .ok_or_else(|| Ineligible::NonText("a part that is not an object".into()))?;
                let kind = part.keys().find(|k| *k != "text").cloned();
                let text = part.get_mut("text").filter(|t| t.is_string());
                match (text, kind) {
                    (Some(text), None) => texts.push(replace(text)),
                    (_, kind) => {
                        return Err(Ineligible::NonText(kind.unwrap_or_else(|| "text".into())))
                    }
                }
            }
        }
        Operation::OllamaGenerate => {
            refuse_images(object)?;
            match object.get_mut("prompt") {
                Some(prompt) if prompt.is_string() => texts.push(replace(prompt)),
                _ => return Err(Ineligible::Empty),
            }
        }
        Operation::OpenAiResponses => match object.get_mut("input") {
            Some(input) if input.is_string() => texts.push(replace(input)),
            Some(Value::Array(items)) => {
                let last = items
                    .last_mut()
                    .and_then(Value::as_object_mut)
                    .ok_or(Ineligible::Empty)?;
                let message = last
                    .get("type")
                    .is_none_or(|t| t.as_str() == Some("message"));
                if !message || last.get("role").and_then(Value::as_str) != Some("user") {
                    return Err(Ineligible::NotUser);
                }
                take_content(last, "content", &["input_text", "text"], &mut texts)?;
            }
            _ => return Err(Ineligible::Empty),
        },
    }
    let text = texts.join("\n");
    if text.trim().is_empty() {
        return Err(Ineligible::Empty);
    }
    let chars = text.chars().count();
    if chars > max_chars {
        return Err(Ineligible::TooLong {
            chars,
            max: max_chars,
        });
    }
    let rest = serde_json::to_vec(&root).expect("a JSON value always serializes");
    Ok(Split { text, rest })
}

/// The last element of the array `field`, which must be an object.
fn last_item<'a>(
    object: &'a mut Map<String, Value>,
    field: &str,
) -> Result<&'a mut Map<String, Value>, Ineligible> {
    object
        .get_mut(field)
        .and_then(Value::as_array_mut)
        .and_then(|items| items.last_mut())
        .and_then(Value::as_object_mut)
        .ok_or(Ineligible::Empty)
}

/// Ollama puts images beside the text: `images: [...]`.
fn refuse_images(object: &Map<String, Value>) -> Result<(), Ineligible> {
    match object.get("images") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Array(images)) if images.is_empty() => Ok(()),
        Some(_) => Err(Ineligible::NonText("images".into())),
    }
}

/// A message's `content`: a string, or parts each `{"type": <one of text_types>, "text": …}`
/// (other fields of a part, such as Anthropic's `cache_control`, stay in the context).
fn take_content(
    message: &mut Map<String, Value>,
    field: &str,
    text_types: &[&str],
    texts: &mut Vec<String>,
) -> Result<(), Ineligible> {
    match message.get_mut(field) {
        Some(content) if content.is_string() => texts.push(replace(content)),
        Some(Value::Array(parts)) => {
            for part in parts {
                let kind = part
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if !text_types.contains(&kind.as_str()) {
                    return Err(Ineligible::NonText(if kind.is_empty() {
                        "a part without a type".into()
                    } else {
                        kind
                    }));
                }
                match part.get_mut("text") {
                    Some(text) if text.is_string() => texts.push(replace(text)),
                    _ => return Err(Ineligible::NonText(format!("{kind} without text"))),
                }
            }
        }
        _ => return Err(Ineligible::Empty),
    }
    Ok(())
}

/// Takes the string out of `value`, leaving the placeholder.
fn replace(value: &mut Value) -> String {
    match std::mem::replace(value, Value::String(PLACEHOLDER.into())) {
        Value::String(s) => s,
        other => unreachable!("callers check for a string, got {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(path: &str, body: Value) -> Result<String, Ineligible> {
        split(path, body.to_string().as_bytes(), 1000).map(|s| s.text)
    }

    fn rest(path: &str, body: Value) -> Value {
        serde_json::from_slice(&split(path, body.to_string().as_bytes(), 1000).unwrap().rest)
            .unwrap()
    }

    #[test]
    fn finds_the_last_user_text_of_each_format() {
        let chat = json!({"model": "m", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "What's the tempo?"}]});
        assert_eq!(
            text("/openai/v1/chat/completions", chat.clone()).unwrap(),
            "What's the tempo?"
        );
        assert_eq!(text("/ollama/api/chat", chat).unwrap(), "What's the tempo?");
        let parts = json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "a"}, {"type": "text", "text": "b", "cache_control": {"type": "ephemeral"}}]}]});
        assert_eq!(
            text("/anthropic/v1/messages", parts.clone()).unwrap(),
            "a\nb"
        );
        assert_eq!(
            rest("/anthropic/v1/messages", parts)["messages"][0]["content"][1],
            json!({"type": "text", "text": PLACEHOLDER, "cache_control": {"type": "ephemeral"}})
        );
        let gemini = json!({"contents": [
            {"role": "user", "parts": [{"text": "hi"}]},
            {"role": "model", "parts": [{"text": "hello"}]},
            {"parts": [{"text": "How loud?"}]}]});
        assert_eq!(
            text(
                "/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent",
                gemini
            )
            .unwrap(),
            "How loud?"
        );
        assert_eq!(
            text(
                "/ollama/api/generate",
                json!({"model": "m", "prompt": "Why?", "system": "s"})
            )
            .unwrap(),
            "Why?"
        );
        assert_eq!(
            text("/v1/responses", json!({"input": "Tell me"})).unwrap(),
            "Tell me"
        );
        let responses = json!({"input": [
            {"role": "user", "content": "earlier"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "now"}]}]});
        assert_eq!(text("/v1/responses", responses).unwrap(), "now");
    }

    #[test]
    fn everything_but_the_compared_text_stays_in_the_rest() {
        let body = json!({"model": "m", "temperature": 0.2, "messages": [
            {"role": "system", "content": "sys"}, {"role": "user", "content": "q"}]});
        let r = rest("/v1/chat/completions", body);
        assert_eq!(r["messages"][0]["content"], "sys");
        assert_eq!(r["messages"][1]["content"], PLACEHOLDER);
        assert_eq!(r["temperature"], 0.2);
    }

    #[test]
    fn refuses_what_it_cannot_compare() {
        let user = |content: Value| json!({"messages": [{"role": "user", "content": content}]});
        let p = "/v1/chat/completions";
        assert_eq!(
            text(
                p,
                user(json!([{"type": "image_url", "image_url": {"url": "x"}}]))
            ),
            Err(Ineligible::NonText("image_url".into()))
        );
        assert_eq!(
            text(
                p,
                user(json!([{"type": "text", "text": "a"}, {"type": "input_audio"}]))
            ),
            Err(Ineligible::NonText("input_audio".into()))
        );
        assert_eq!(
            text(
                "/v1/messages",
                user(json!([{"type": "tool_result", "content": "x"}]))
            ),
            Err(Ineligible::NonText("tool_result".into()))
        );
        assert_eq!(text(p, user(json!("  "))), Err(Ineligible::Empty));
        assert_eq!(text(p, user(json!(5))), Err(Ineligible::Empty));
        assert_eq!(
            text(
                p,
                json!({"messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "r"}]})
            ),
            Err(Ineligible::NotUser)
        );
        assert_eq!(
            text(
                "/api/chat",
                json!({"messages": [{"role": "user", "content": "q", "images": ["aGk="]}]})
            ),
            Err(Ineligible::NonText("images".into()))
        );
        assert_eq!(
            text("/api/generate", json!({"prompt": "q", "images": ["aGk="]})),
            Err(Ineligible::NonText("images".into()))
        );
        assert_eq!(
            text(
                "/v1beta/models/g:generateContent",
                json!({"contents": [{"parts": [{"inlineData": {}}]}]})
            ),
            Err(Ineligible::NonText("inlineData".into()))
        );
        assert_eq!(
            text(
                "/v1/responses",
                json!({"input": [{"role": "user", "content": [{"type": "input_image"}]}]})
            ),
            Err(Ineligible::NonText("input_image".into()))
        );
        assert_eq!(
            text(
                "/v1/responses",
                json!({"input": [{"type": "function_call_output", "output": "x"}]})
            ),
            Err(Ineligible::NotUser)
        );
        assert_eq!(
            text("/v1/embeddings", json!({"input": "q"})),
            Err(Ineligible::Operation)
        );
        assert_eq!(
            text("/v1/completions", json!({"prompt": "q"})),
            Err(Ineligible::Operation)
        );
        assert_eq!(split(p, b"[1]", 10), Err(Ineligible::NotJson));
        assert_eq!(split(p, b"nope", 10), Err(Ineligible::NotJson));
        assert_eq!(
            split(p, user(json!("ééé")).to_string().as_bytes(), 2),
            Err(Ineligible::TooLong { chars: 3, max: 2 })
        );
    }
}
