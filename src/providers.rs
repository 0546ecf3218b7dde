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

    /// True once the end marker was seen. An NDJSON stream's last object may arrive without a
    /// trailing newline, so the unfinished last line counts as it stands — judged here, not as
    /// chunks arrive, so the verdict never depends on where the network cut the bytes.
    pub fn seen(&self) -> bool {
        self.seen
            || (self.format == StreamFormat::Ndjson
                && !self.overlong
                && !self.line.is_empty()
                && ndjson_done(&self.line))
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
                if ndjson_done(line) {
                    self.seen = true;
                }
            }
        }
    }
}

/// Ollama's last object: `"done": true` at the top level of a JSON line.
fn ndjson_done(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    serde_json::from_slice::<serde_json::Value>(line)
        .is_ok_and(|v| v.get("done") == Some(&serde_json::Value::Bool(true)))
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
}
