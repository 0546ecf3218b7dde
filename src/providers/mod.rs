//! What differs per provider in a response: how each one's stream says it is complete
//! ([`StreamEnd`]), and how it reports the tokens it used ([`UsageObserver`]).
//!
//! A stream is stored only once its end marker was seen, so a stream cut short — even one
//! whose connection closed cleanly — is never replayed as if whole.

use bytes::Bytes;
use serde::Deserialize;

/// Lines longer than this are not inspected (no end marker is that long); bounds memory.
const MAX_LINE: usize = 1 << 20;

/// Watches a streamed body, line by line across chunk boundaries, for the provider's end marker:
/// OpenAI `data: [DONE]`, Anthropic `event: message_stop`, Gemini's final chunk (the one with
/// `finishReason`), Ollama's `"done": true`.
#[derive(Debug)]
pub struct StreamEnd {
    format: StreamFormat,
    lines: LineSplitter,
    seen: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamFormat {
    /// `text/event-stream`: OpenAI, Anthropic, Gemini (`alt=sse`).
    Sse,
    /// `application/x-ndjson`: Ollama.
    Ndjson,
}

impl StreamEnd {
    /// A watcher for a streaming content type, or `None` when the response is not a stream.
    pub fn for_content_type(content_type: &str) -> Option<StreamEnd> {
        let ct = content_type.trim().to_ascii_lowercase();
        let format = if ct.starts_with("text/event-stream") {
            StreamFormat::Sse
        } else if ct.starts_with("application/x-ndjson") || ct.starts_with("application/ndjson") {
            StreamFormat::Ndjson
        } else {
            return None;
        };
        Some(StreamEnd {
            format,
            lines: LineSplitter::default(),
            seen: false,
        })
    }

    /// True once the end marker was seen. An NDJSON stream's last object may arrive without a
    /// trailing newline, so the unfinished last line counts as it stands — judged here, not as
    /// chunks arrive, so the verdict never depends on where the network cut the bytes (a case
    /// the `stream_end` fuzz target found).
    pub fn seen(&self) -> bool {
        self.seen
            || (self.format == StreamFormat::Ndjson
                && self
                    .lines
                    .pending()
                    .is_some_and(|l| line_ends_stream(self.format, l)))
    }

    pub fn observe(&mut self, chunk: &[u8]) {
        let (format, seen) = (self.format, &mut self.seen);
        self.lines.feed(chunk, |line| {
            if line_ends_stream(format, line) {
                *seen = true;
            }
        });
    }
}

/// True when `line` (without its newline) is the provider's end-of-stream marker.
fn line_ends_stream(format: StreamFormat, line: &[u8]) -> bool {
    match format {
        StreamFormat::Sse => {
            sse_field(line, b"data") == Some(b"[DONE]")
                || sse_field(line, b"event") == Some(b"message_stop")
                || sse_field(line, b"data").is_some_and(|d| contains(d, b"\"finishReason\""))
        }
        StreamFormat::Ndjson => serde_json::from_slice::<serde_json::Value>(line)
            .is_ok_and(|v| v.get("done") == Some(&serde_json::Value::Bool(true))),
    }
}

/// The value of an SSE field line `name: value` (one optional space after the colon).
fn sse_field<'l>(line: &'l [u8], name: &[u8]) -> Option<&'l [u8]> {
    let rest = line.strip_prefix(name)?.strip_prefix(b":")?;
    Some(rest.strip_prefix(b" ").unwrap_or(rest))
}

/// Splits a body arriving in chunks into lines, across chunk boundaries, holding at most
/// [`MAX_LINE`] bytes: longer lines are skipped whole.
#[derive(Debug, Default)]
struct LineSplitter {
    line: Vec<u8>,
    overlong: bool,
}

impl LineSplitter {
    /// Calls `on_line` with each complete line of `chunk` (without `\n` or `\r`).
    fn feed(&mut self, chunk: &[u8], mut on_line: impl FnMut(&[u8])) {
        for piece in chunk.split_inclusive(|b| *b == b'\n') {
            let (content, ends_line) = match piece.strip_suffix(b"\n") {
                Some(c) => (c, true),
                None => (piece, false),
            };
            if !self.overlong {
                if self.line.len() + content.len() > MAX_LINE {
                    self.overlong = true;
                    self.line = Vec::new();
                } else {
                    self.line.extend_from_slice(content);
                }
            }
            if ends_line {
                if !self.overlong {
                    on_line(self.line.strip_suffix(b"\r").unwrap_or(&self.line));
                    self.line.clear();
                }
                self.overlong = false;
            }
        }
    }

    /// The unfinished last line, if any (an NDJSON stream may end without a newline).
    fn pending(&self) -> Option<&[u8]> {
        (!self.overlong && !self.line.is_empty())
            .then(|| self.line.strip_suffix(b"\r").unwrap_or(&self.line))
    }
}

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
        let ct = content_type.trim().to_ascii_lowercase();
        let mode = if ct.starts_with("text/event-stream") {
            ObserveMode::Lines(StreamFormat::Sse, LineSplitter::default())
        } else if ct.starts_with("application/x-ndjson") || ct.starts_with("application/ndjson") {
            ObserveMode::Lines(StreamFormat::Ndjson, LineSplitter::default())
        } else if ct.starts_with("application/json") {
            ObserveMode::Json {
                chunks: Vec::new(),
                size: 0,
            }
        } else {
            ObserveMode::Off
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

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(content_type: &str, chunks: &[&str]) -> bool {
        let mut w = StreamEnd::for_content_type(content_type).unwrap();
        for c in chunks {
            w.observe(c.as_bytes());
        }
        w.seen()
    }

    #[test]
    fn recognises_each_providers_end() {
        let sse = "text/event-stream; charset=utf-8";
        assert!(ends(
            sse,
            &["data: {\"choices\":[]}\n\n", "data: [DONE]\n\n"]
        ));
        assert!(ends(
            sse,
            &[
                "event: message_delta\ndata: {}\n\n",
                "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
            ]
        ));
        assert!(ends(
            sse,
            &["data: {\"candidates\":[{\"finishReason\":\"STOP\"}]}\r\n\r\n"]
        ));
        assert!(ends(
            "application/x-ndjson",
            &[
                "{\"done\":false}\n",
                "{\"done\": true, \"eval_count\": 3}\n"
            ]
        ));
        assert!(ends(
            "application/x-ndjson",
            &["{\"done\":false}\n{\"done\":true}"]
        ));
    }

    #[test]
    fn markers_split_across_chunks_are_found() {
        assert!(ends("text/event-stream", &["da", "ta: [DO", "NE]\n", "\n"]));
        assert!(ends("text/event-stream", &["event: message_", "stop\r\n"]));
    }

    /// Found by the `stream_end` fuzz target: a partial last NDJSON line that parsed as JSON so
    /// far (`{"done":true}`) was judged complete at the end of each chunk, so byte-by-byte
    /// delivery said "ended" where the same bytes in one chunk (`{"done":true}` + NULs) did not.
    #[test]
    fn verdict_does_not_depend_on_chunk_boundaries() {
        let input: &[u8] = b"{Ynee}\n{\"done\":true}\0\0\0\0\0\0\0\0\0\0";
        for data in [input, b"{\"done\":true} x\n", b"{\"done\":true}"] {
            let whole = ends_bytes("application/x-ndjson", &[data]);
            let bytewise: Vec<&[u8]> = data.chunks(1).collect();
            assert_eq!(
                whole,
                ends_bytes("application/x-ndjson", &bytewise),
                "{}",
                String::from_utf8_lossy(data)
            );
        }
        // and an unterminated last line still ends a stream when it is the marker
        assert!(ends_bytes("application/x-ndjson", &[b"{\"done\":true}"]));
        assert!(!ends_bytes(
            "application/x-ndjson",
            &[b"{\"done\":true} x\n"]
        ));
    }

    fn ends_bytes(content_type: &str, chunks: &[&[u8]]) -> bool {
        let mut w = StreamEnd::for_content_type(content_type).unwrap();
        for c in chunks {
            w.observe(c);
        }
        w.seen()
    }

    #[test]
    fn truncated_streams_and_lookalikes_are_not_ends() {
        let sse = "text/event-stream";
        assert!(!ends(
            sse,
            &["data: {\"choices\":[{\"finish_reason\":\"stop\"}]}\n\n"]
        ));
        // the marker's text inside a message is not the marker
        assert!(!ends(sse, &["data: {\"content\":\"data: [DONE]\"}\n\n"]));
        assert!(!ends(
            sse,
            &["data: {\"content\":\"say \\\"finishReason\\\"\"}\n\n"]
        ));
        assert!(!ends(
            "application/x-ndjson",
            &["{\"message\":{\"content\":\"\\\"done\\\":true\"},\"done\":false}\n"]
        ));
        assert!(StreamEnd::for_content_type("application/json").is_none());
    }

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
