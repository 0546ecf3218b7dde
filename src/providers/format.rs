//! What a response body is, judged from its `Content-Type`: the one place content types are
//! read, so every per-format reader agrees on which bodies are streams.

/// The framing of a streamed body: what its lines are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    /// `text/event-stream`: OpenAI (chat, completions, Responses), Anthropic, Gemini (`alt=sse`).
    Sse,
    /// `application/x-ndjson` or `application/ndjson`: Ollama.
    Ndjson,
}

/// The kind of a response body, as far as promptgate reads into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// A stream, read line by line as it arrives.
    Stream(StreamFormat),
    /// `application/json`: one document (or, for Gemini's non-SSE stream, one array of them).
    Json,
    /// Anything else: not read.
    Other,
}

impl BodyFormat {
    /// The format of a body with this `Content-Type` value (parameters such as `charset` are
    /// ignored; matching is case-insensitive).
    pub fn of(content_type: &str) -> BodyFormat {
        let ct = content_type.trim();
        let is = |prefix: &str| {
            ct.as_bytes()
                .get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
        };
        if is("text/event-stream") {
            BodyFormat::Stream(StreamFormat::Sse)
        } else if is("application/x-ndjson") || is("application/ndjson") {
            BodyFormat::Stream(StreamFormat::Ndjson)
        } else if is("application/json") {
            BodyFormat::Json
        } else {
            BodyFormat::Other
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_map_to_formats() {
        let sse = BodyFormat::Stream(StreamFormat::Sse);
        let ndjson = BodyFormat::Stream(StreamFormat::Ndjson);
        for (ct, format) in [
            ("text/event-stream", sse),
            (" Text/Event-Stream; charset=utf-8 ", sse),
            ("application/x-ndjson", ndjson),
            ("application/ndjson", ndjson),
            ("application/json; charset=utf-8", BodyFormat::Json),
            ("APPLICATION/JSON", BodyFormat::Json),
            ("text/plain", BodyFormat::Other),
            ("", BodyFormat::Other),
            ("text/event", BodyFormat::Other),
            ("é", BodyFormat::Other),
        ] {
            assert_eq!(BodyFormat::of(ct), format, "{ct:?}");
        }
    }
}
