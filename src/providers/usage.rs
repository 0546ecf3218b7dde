//! How each provider reports the tokens a response used ([`Usage`]), read from the body as it
//! passes ([`UsageObserver`]).

use super::format::{BodyFormat, StreamFormat};
use super::lines::{contains, sse_field, LineSplitter};
use bytes::Bytes;
use serde::Deserialize;

/// Tokens one response used, as the provider reported them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens (OpenAI `prompt_tokens`, Anthropic `input_tokens`, Gemini
    /// `promptTokenCount`, Ollama `prompt_eval_count`).
    pub input: u64,
    /// Generated tokens (`completion_tokens`, `output_tokens`, `candidatesTokenCount` plus
    /// `thoughtsTokenCount`, `eval_count`).
    pub output: u64,
    /// The model the provider says answered, when it says (pricing falls back to the request's).
    pub model: Option<String>,
}

/// Largest non-streamed body parsed for its usage (the default `cache.max_entry_bytes`); the
/// usage of a larger one is not counted.
const MAX_USAGE_BODY: usize = 8 << 20;

/// Reads the usage out of a response body fed chunk by chunk: streams line by line (only the
/// lines that can carry usage or the model are parsed), other JSON bodies whole at the end, up
/// to [`MAX_USAGE_BODY`] (the chunks are kept by reference, not copied, until then).
#[derive(Debug)]
pub struct UsageObserver {
    mode: ObserveMode,
    usage: Option<Usage>,
}

#[derive(Debug)]
enum ObserveMode {
    Lines(StreamFormat, LineSplitter),
    Json { chunks: Vec<Bytes>, size: usize },
    Off,
}

impl UsageObserver {
    /// An observer for a response with this content type; non-JSON bodies are ignored.
    pub fn for_content_type(content_type: &str) -> UsageObserver {
        let mode = match BodyFormat::of(content_type) {
            BodyFormat::Stream(format) => ObserveMode::Lines(format, LineSplitter::default()),
            BodyFormat::Json => ObserveMode::Json {
                chunks: Vec::new(),
                size: 0,
            },
            BodyFormat::Other => ObserveMode::Off,
        };
        UsageObserver { mode, usage: None }
    }

    /// The usage of a complete body (a cache hit's stored response).
    pub fn of_body(content_type: &str, body: &Bytes) -> Option<Usage> {
        let mut o = UsageObserver::for_content_type(content_type);
        o.observe(body);
        o.finish()
    }

    pub fn observe(&mut self, chunk: &Bytes) {
        match &mut self.mode {
            ObserveMode::Lines(format, lines) => {
                let (format, usage) = (*format, &mut self.usage);
                lines.feed(chunk, |line| observe_line(format, line, usage));
            }
            ObserveMode::Json { chunks, size } => {
                *size += chunk.len();
                if *size > MAX_USAGE_BODY {
                    self.mode = ObserveMode::Off;
                } else {
                    chunks.push(chunk.clone());
                }
            }
            ObserveMode::Off => {}
        }
    }

    /// The usage seen, if the body reported any.
    pub fn finish(self) -> Option<Usage> {
        let mut usage = self.usage;
        if let ObserveMode::Lines(format @ StreamFormat::Ndjson, lines) = &self.mode {
            // The last NDJSON object (Ollama's, with the counts) may lack its newline.
            if let Some(line) = lines.pending() {
                observe_line(*format, line, &mut usage);
            }
        }
        if let ObserveMode::Json { chunks, size } = self.mode {
            let body = match chunks.len() {
                0 => return None,
                1 => chunks[0].to_vec(),
                _ => {
                    let mut buf = Vec::with_capacity(size);
                    chunks.iter().for_each(|c| buf.extend_from_slice(c));
                    buf
                }
            };
            // Gemini's streamed (non-SSE) answers are one JSON array of responses.
            if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
                for doc in serde_json::from_slice::<Vec<UsageDoc>>(&body).ok()? {
                    doc.merge_into(&mut usage);
                }
            } else {
                serde_json::from_slice::<UsageDoc>(&body)
                    .ok()?
                    .merge_into(&mut usage);
            }
        }
        usage
    }
}

/// Parses one stream line if it can carry usage (or the model, until it is known).
fn observe_line(format: StreamFormat, line: &[u8], usage: &mut Option<Usage>) {
    let json = match format {
        StreamFormat::Sse => match sse_field(line, b"data") {
            Some(data) => data,
            None => return,
        },
        StreamFormat::Ndjson => line,
    };
    let wanted = usage.as_ref().is_none_or(|u| u.model.is_none())
        || contains(json, b"usage")
        || contains(json, b"eval_count");
    if !wanted {
        return;
    }
    if let Ok(doc) = serde_json::from_slice::<UsageDoc>(json) {
        doc.merge_into(usage);
    }
}

/// The fields of a provider response (or stream event) that report usage; everything else is
/// skipped unparsed.
#[derive(Debug, Default, Deserialize)]
struct UsageDoc {
    model: Option<String>,
    /// Gemini.
    #[serde(rename = "modelVersion")]
    model_version: Option<String>,
    /// OpenAI, Anthropic.
    usage: Option<TokenCounts>,
    /// Gemini.
    #[serde(rename = "usageMetadata")]
    usage_metadata: Option<GeminiCounts>,
    /// Ollama.
    prompt_eval_count: Option<u64>,
    eval_count: Option<u64>,
    /// Anthropic's `message_start` event wraps the message (model and input usage); an Ollama
    /// chat's `message` has neither, which is fine.
    message: Option<Box<UsageDoc>>,
}

#[derive(Debug, Default, Deserialize)]
struct TokenCounts {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiCounts {
    prompt_token_count: Option<u64>,
    candidates_token_count: Option<u64>,
    thoughts_token_count: Option<u64>,
}

impl UsageDoc {
    /// Adds what this document reports to `usage`. Counts a provider repeats during a stream
    /// are running totals (Anthropic's `message_delta`, Gemini's chunks), so a later value
    /// replaces an earlier one; the first model named is kept.
    fn merge_into(self, usage: &mut Option<Usage>) {
        if let Some(message) = self.message {
            message.merge_into(usage);
        }
        let mut input = None;
        let mut output = None;
        if let Some(u) = self.usage {
            input = u.prompt_tokens.or(u.input_tokens);
            output = u.completion_tokens.or(u.output_tokens);
        }
        if let Some(g) = self.usage_metadata {
            input = g.prompt_token_count.or(input);
            output = match (g.candidates_token_count, g.thoughts_token_count) {
                (None, None) => output,
                (c, t) => Some(c.unwrap_or(0) + t.unwrap_or(0)),
            };
        }
        input = self.prompt_eval_count.or(input);
        output = self.eval_count.or(output);
        let model = self.model.or(self.model_version).filter(|m| !m.is_empty());
        if input.is_none() && output.is_none() && model.is_none() {
            return;
        }
        let u = usage.get_or_insert_with(Usage::default);
        if let Some(n) = input {
            u.input = n;
        }
        if let Some(n) = output {
            u.output = n;
        }
        if u.model.is_none() {
            u.model = model;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(content_type: &str, chunks: &[&str]) -> Option<Usage> {
        let mut o = UsageObserver::for_content_type(content_type);
        for c in chunks {
            o.observe(&Bytes::copy_from_slice(c.as_bytes()));
        }
        o.finish()
    }

    fn counts(u: Option<Usage>) -> (u64, u64, Option<String>) {
        let u = u.expect("usage found");
        (u.input, u.output, u.model)
    }

    #[test]
    fn reads_usage_from_json_answers() {
        let json = "application/json";
        assert_eq!(
            counts(usage(
                json,
                &[
                    r#"{"model":"gpt-4o-mini-2024-07-18","choices":[],"#,
                    r#""usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}"#
                ]
            )),
            (12, 5, Some("gpt-4o-mini-2024-07-18".into()))
        );
        assert_eq!(
            counts(usage(
                json,
                &[
                    r#"{"type":"message","model":"claude-sonnet-4-0","usage":{"input_tokens":7,"output_tokens":3}}"#
                ]
            )),
            (7, 3, Some("claude-sonnet-4-0".into()))
        );
        assert_eq!(
            counts(usage(
                json,
                &[
                    r#"{"candidates":[],"modelVersion":"gemini-2.5-flash","usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":6,"thoughtsTokenCount":2}}"#
                ]
            )),
            (4, 8, Some("gemini-2.5-flash".into()))
        );
        assert_eq!(
            counts(usage(
                json,
                &[
                    r#"{"model":"llama3.2","message":{"role":"assistant","content":"hi"},"done":true,"prompt_eval_count":9,"eval_count":4}"#
                ]
            )),
            (9, 4, Some("llama3.2".into()))
        );
        // Gemini's streamed JSON array: the last chunk carries the totals
        assert_eq!(
            counts(usage(
                json,
                &[
                    "[{\"modelVersion\":\"gemini-2.0-flash\"}",
                    ",\r\n{\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":2}}",
                    "]"
                ]
            )),
            (3, 2, Some("gemini-2.0-flash".into()))
        );
        assert_eq!(usage(json, &[r#"{"error":{"message":"no"}}"#]), None);
        assert_eq!(usage("text/plain", &["usage"]), None);
    }

    #[test]
    fn reads_usage_from_streams_across_chunks() {
        let sse = "text/event-stream";
        // OpenAI with stream_options.include_usage: the last chunk before [DONE]
        assert_eq!(
            counts(usage(sse, &[
                "data: {\"model\":\"gpt-4o\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n",
                "data: {\"model\":\"gpt-4o\",\"choices\":[],\"usa",
                "ge\":{\"prompt_tokens\":11,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n",
            ])),
            (11, 2, Some("gpt-4o".into()))
        );
        // Anthropic: input in message_start, the output total in message_delta
        assert_eq!(
            counts(usage(sse, &[
                "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-3-5-haiku-latest\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
                "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"x\"}}\n\n",
                "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n",
                "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
            ])),
            (25, 15, Some("claude-3-5-haiku-latest".into()))
        );
        // Gemini SSE: running totals, the last one wins
        assert_eq!(
            counts(usage(sse, &[
                "data: {\"modelVersion\":\"gemini-2.5-pro\",\"usageMetadata\":{\"promptTokenCount\":5,\"candidatesTokenCount\":1}}\r\n\r\n",
                "data: {\"usageMetadata\":{\"promptTokenCount\":5,\"candidatesTokenCount\":9}}\r\n\r\n",
            ])),
            (5, 9, Some("gemini-2.5-pro".into()))
        );
        // Ollama NDJSON, the last object without a trailing newline
        assert_eq!(
            counts(usage("application/x-ndjson", &[
                "{\"model\":\"llama3.2\",\"done\":false}\n",
                "{\"model\":\"llama3.2\",\"done\":true,\"prompt_eval_count\":8,\"eval_count\":3}",
            ])),
            (8, 3, Some("llama3.2".into()))
        );
        // a stream without usage reports the model only
        let u = usage(
            sse,
            &["data: {\"model\":\"gpt-4o\",\"choices\":[]}\n\ndata: [DONE]\n\n"],
        )
        .unwrap();
        assert_eq!((u.input, u.output), (0, 0));
    }
}
