//! What differs per provider in a response: how each one's stream says it is complete.
//!
//! A stream is stored only once its end marker was seen, so a stream cut short — even one
//! whose connection closed cleanly — is never replayed as if whole.

/// Lines longer than this are not inspected (no end marker is that long); bounds memory.
const MAX_LINE: usize = 1 << 20;

/// Watches a streamed body, line by line across chunk boundaries, for the provider's end marker:
/// OpenAI `data: [DONE]`, Anthropic `event: message_stop`, Gemini's final chunk (the one with
/// `finishReason`), Ollama's `"done": true`.
#[derive(Debug)]
pub struct StreamEnd {
    format: StreamFormat,
    line: Vec<u8>,
    overlong: bool,
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
            line: Vec::new(),
            overlong: false,
            seen: false,
        })
    }

    pub fn seen(&self) -> bool {
        self.seen
    }

    pub fn observe(&mut self, chunk: &[u8]) {
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
                    let line = std::mem::take(&mut self.line);
                    self.check_line(&line);
                    self.line = line;
                    self.line.clear();
                }
                self.overlong = false;
            }
        }
        // An NDJSON stream's last object may arrive without a trailing newline.
        if self.format == StreamFormat::Ndjson && !self.line.is_empty() && !self.overlong {
            let line = std::mem::take(&mut self.line);
            if serde_json::from_slice::<serde_json::Value>(&line).is_ok() {
                self.check_line(&line);
            } else {
                self.line = line;
            }
        }
    }

    fn check_line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match self.format {
            StreamFormat::Sse => {
                let field = |name: &[u8]| -> Option<&[u8]> {
                    let rest = line.strip_prefix(name)?.strip_prefix(b":")?;
                    Some(rest.strip_prefix(b" ").unwrap_or(rest))
                };
                if field(b"data") == Some(b"[DONE]")
                    || field(b"event") == Some(b"message_stop")
                    || field(b"data").is_some_and(|d| contains(d, b"\"finishReason\""))
                {
                    self.seen = true;
                }
            }
            StreamFormat::Ndjson => {
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) {
                    if v.get("done") == Some(&serde_json::Value::Bool(true)) {
                        self.seen = true;
                    }
                }
            }
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
}
