//! How each provider reports the tokens a response used ([`Usage`]), merged from the documents
//! of a body as [`super::ResponseReader`] reads them.

use super::doc::Doc;

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
        let mut input = None;
        let mut output = None;
        if let Some(u) = self.usage.get() {
            input = u.prompt_tokens.0.or(u.input_tokens.0);
            output = u.completion_tokens.0.or(u.output_tokens.0);
        }
        if let Some(g) = self.usage_metadata.get() {
            input = g.prompt_token_count.0.or(input);
            output = match (g.candidates_token_count.0, g.thoughts_token_count.0) {
                (None, None) => output,
                (c, t) => Some(c.unwrap_or(0) + t.unwrap_or(0)),
            };
        }
        input = self.prompt_eval_count.0.or(input);
        output = self.eval_count.0.or(output);
        let model = self
            .model
            .get()
            .or(self.model_version.get())
            .filter(|m| !m.is_empty());
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
            u.model = model.map(str::to_owned);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ResponseReader;
    use bytes::Bytes;

    fn usage(content_type: &str, chunks: &[&str]) -> Option<Usage> {
        let mut r = ResponseReader::new(content_type, None);
        for c in chunks {
            r.observe(&Bytes::copy_from_slice(c.as_bytes()));
        }
        r.finish();
        r.into_usage()
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
}
