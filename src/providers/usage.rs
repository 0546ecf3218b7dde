//! How each provider reports the tokens a response used ([`Usage`]), merged from the documents
//! of a body as [`super::ResponseReader`] reads them.

use super::doc::{CachedDetails, Counts, Doc};

/// Tokens one response used, as the provider reported them, in kinds that do not overlap:
/// the prompt is `input + cache_read + cache_write` tokens, each kind billed at its own price.
///
/// Providers count the prompt differently: OpenAI's `prompt_tokens` (Responses'
/// `input_tokens`) and Gemini's `promptTokenCount` *include* the cached tokens they report
/// apart, Anthropic's `input_tokens` *excludes* its cache reads and writes. Both are read into
/// this one shape, so nothing is counted twice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens neither read from nor written to the provider's prompt cache (OpenAI
    /// `prompt_tokens` less `cached_tokens`, Anthropic `input_tokens`, Gemini
    /// `promptTokenCount` less `cachedContentTokenCount`, Ollama `prompt_eval_count`).
    pub input: u64,
    /// Generated tokens (`completion_tokens`, `output_tokens`, `candidatesTokenCount` plus
    /// `thoughtsTokenCount`, `eval_count`).
    pub output: u64,
    /// Prompt tokens read from the provider's prompt cache (OpenAI
    /// `prompt_tokens_details.cached_tokens`, Responses `input_tokens_details.cached_tokens`,
    /// Anthropic `cache_read_input_tokens`, Gemini `cachedContentTokenCount`).
    pub cache_read: u64,
    /// Prompt tokens written to the provider's prompt cache (Anthropic
    /// `cache_creation_input_tokens`; the others bill no writes).
    pub cache_write: u64,
    /// The model the provider says answered, when it says (pricing falls back to the request's).
    pub model: Option<String>,
}

impl Usage {
    /// Every prompt token, however billed.
    pub fn prompt(&self) -> u64 {
        self.input
            .saturating_add(self.cache_read)
            .saturating_add(self.cache_write)
    }
}

/// Counts one document reports; `None`: not reported here (an earlier value stands).
#[derive(Default)]
struct Reported {
    input: Option<u64>,
    output: Option<u64>,
    cache_read: Option<u64>,
    cache_write: Option<u64>,
}

impl Reported {
    /// A prompt count that includes `cached` tokens: the uncached rest, and the cached.
    fn including_cached(&mut self, prompt: Option<u64>, cached: Option<u64>) {
        if let Some(prompt) = prompt {
            let cached = cached.unwrap_or(0).min(prompt);
            self.input = Some(prompt - cached);
            self.cache_read = Some(cached);
        }
    }
}

impl Counts {
    /// OpenAI chat's `prompt_tokens` and Responses' `input_tokens` (told apart from
    /// Anthropic's by its `input_tokens_details`) include their cached tokens; Anthropic's
    /// `input_tokens` excludes its cache reads and writes.
    fn reported(&self) -> Reported {
        let mut r = Reported {
            output: self.completion_tokens.0.or(self.output_tokens.0),
            ..Reported::default()
        };
        let cached = |d: Option<&CachedDetails>| d.and_then(|d| d.cached_tokens.0);
        if self.prompt_tokens.0.is_some() {
            r.including_cached(
                self.prompt_tokens.0,
                cached(self.prompt_tokens_details.get()),
            );
        } else if let Some(details) = self.input_tokens_details.get() {
            r.including_cached(self.input_tokens.0, cached(Some(details)));
        } else {
            r.input = self.input_tokens.0;
            r.cache_read = self.cache_read_input_tokens.0;
            r.cache_write = self.cache_creation_input_tokens.0;
        }
        r
    }
}

impl Doc<'_> {
    /// Adds what this document reports to `usage`. Counts a provider repeats during a stream
    /// are running totals (Anthropic's `message_delta`, Gemini's chunks), so a later value
    /// replaces an earlier one; the first model named is kept.
    pub(super) fn merge_usage(&self, usage: &mut Option<Usage>) {
        // Anthropic's `message_start` wraps the message; Responses events wrap the response.
        for inner in [self.message.get(), self.response.get()]
            .into_iter()
            .flatten()
        {
            inner.merge_usage(usage);
        }
        let mut r = self
            .usage
            .get()
            .map_or_else(Reported::default, Counts::reported);
        if let Some(g) = self.usage_metadata.get() {
            r.including_cached(g.prompt_token_count.0, g.cached_content_token_count.0);
            r.output = match (g.candidates_token_count.0, g.thoughts_token_count.0) {
                (None, None) => r.output,
                (c, t) => Some(c.unwrap_or(0) + t.unwrap_or(0)),
            };
        }
        r.input = self.prompt_eval_count.0.or(r.input);
        r.output = self.eval_count.0.or(r.output);
        let model = self
            .model
            .get()
            .or(self.model_version.get())
            .filter(|m| !m.is_empty());
        let counts = [r.input, r.output, r.cache_read, r.cache_write];
        if counts.iter().all(Option::is_none) && model.is_none() {
            return;
        }
        let u = usage.get_or_insert_with(Usage::default);
        for (field, value) in [
            (&mut u.input, r.input),
            (&mut u.output, r.output),
            (&mut u.cache_read, r.cache_read),
            (&mut u.cache_write, r.cache_write),
        ] {
            if let Some(n) = value {
                *field = n;
            }
        }
        if u.model.is_none() {
            u.model = model.map(str::to_owned);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ResponseReader;
    use bytes::Bytes;

    /// The usage read from `chunks`, after checking that reading only the usage
    /// ([`ResponseReader::usage_only`], which skims) reads the same as judging the body does.
    fn usage(content_type: &str, chunks: &[&str]) -> Option<Usage> {
        let read = |usage_only: bool| {
            let mut r = ResponseReader::new(content_type, None);
            if usage_only {
                r.usage_only();
            }
            for c in chunks {
                r.observe(&Bytes::copy_from_slice(c.as_bytes()));
            }
            r.finish();
            r.into_usage()
        };
        let judged = read(false);
        assert_eq!(read(true), judged, "usage only: {chunks:?}");
        judged
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
        // OpenAI Responses: the model in response.created, the counts in response.completed
        assert_eq!(
            counts(usage(sse, &[
                "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"object\":\"response\",\"model\":\"gpt-4.1-mini\",\"usage\":null}}\n\n",
                "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"hi\"}\n\n",
                "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"object\":\"response\",\"status\":\"completed\",\"model\":\"gpt-4.1-mini\",\"usage\":{\"input_tokens\":21,\"output_tokens\":6,\"total_tokens\":27}}}\n\n",
            ])),
            (21, 6, Some("gpt-4.1-mini".into()))
        );
        // a stream without usage reports the model only
        let u = usage(
            sse,
            &["data: {\"model\":\"gpt-4o\",\"choices\":[]}\n\ndata: [DONE]\n\n"],
        )
        .unwrap();
        assert_eq!((u.input, u.output), (0, 0));
    }

    /// (input, cache_read, cache_write, output)
    fn cached(u: Option<Usage>) -> (u64, u64, u64, u64) {
        let u = u.expect("usage found");
        (u.input, u.cache_read, u.cache_write, u.output)
    }

    #[test]
    fn cached_prompt_tokens_are_counted_once_whichever_way_a_provider_reports_them() {
        let json = "application/json";
        // OpenAI chat: prompt_tokens includes cached_tokens.
        assert_eq!(
            cached(usage(
                json,
                &[
                    r#"{"model":"gpt-4o","usage":{"prompt_tokens":2006,"completion_tokens":300,"prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0}}}"#
                ]
            )),
            (86, 1920, 0, 300)
        );
        // A cached count above the prompt (a broken report) cannot make input negative.
        assert_eq!(
            cached(usage(
                json,
                &[
                    r#"{"usage":{"prompt_tokens":5,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":9}}}"#
                ]
            )),
            (0, 5, 0, 1)
        );
        // Responses: input_tokens includes input_tokens_details.cached_tokens.
        assert_eq!(
            cached(usage(
                json,
                &[
                    r#"{"object":"response","model":"gpt-4.1","usage":{"input_tokens":1500,"input_tokens_details":{"cached_tokens":1024},"output_tokens":20,"output_tokens_details":{"reasoning_tokens":0}}}"#
                ]
            )),
            (476, 1024, 0, 20)
        );
        // Anthropic: input_tokens excludes the cache reads and writes.
        assert_eq!(
            cached(usage(
                json,
                &[
                    r#"{"type":"message","model":"claude-sonnet-4-5","usage":{"input_tokens":21,"cache_creation_input_tokens":188,"cache_read_input_tokens":1500,"output_tokens":393}}"#
                ]
            )),
            (21, 1500, 188, 393)
        );
        // Gemini: promptTokenCount includes cachedContentTokenCount.
        assert_eq!(
            cached(usage(
                json,
                &[
                    r#"{"modelVersion":"gemini-2.5-flash","usageMetadata":{"promptTokenCount":3000,"cachedContentTokenCount":2048,"candidatesTokenCount":7}}"#
                ]
            )),
            (952, 2048, 0, 7)
        );
        let sse = "text/event-stream";
        // Anthropic stream: the cache counts come in message_start, the output in message_delta.
        assert_eq!(
            cached(usage(sse, &[
                "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-0\",\"usage\":{\"input_tokens\":12,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":4000,\"output_tokens\":1}}}\n\n",
                "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9}}\n\n",
            ])),
            (12, 4000, 0, 9)
        );
        // OpenAI stream with include_usage.
        assert_eq!(
            cached(usage(sse, &[
                "data: {\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":1200,\"completion_tokens\":3,\"prompt_tokens_details\":{\"cached_tokens\":1152}}}\n\ndata: [DONE]\n\n",
            ])),
            (48, 1152, 0, 3)
        );
        // Without cache fields nothing changes: every prompt token is plain input.
        let u = usage(
            json,
            &[r#"{"usage":{"prompt_tokens":12,"completion_tokens":5}}"#],
        )
        .unwrap();
        assert_eq!(
            (u.input, u.cache_read, u.cache_write, u.prompt()),
            (12, 0, 0, 12)
        );
    }
}
