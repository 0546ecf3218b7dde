//! How each stream format says it is complete: a stream is stored only once its end marker
//! was seen, so a stream cut short — even one whose connection closed cleanly — is never
//! replayed as if whole.

use super::format::{BodyFormat, StreamFormat};
use super::lines::{contains, sse_field, LineSplitter};

/// Watches a streamed body, line by line across chunk boundaries, for the provider's end marker:
/// OpenAI `data: [DONE]`, Anthropic `event: message_stop`, Gemini's final chunk (the one with
/// `finishReason`), Ollama's `"done": true`.
#[derive(Debug)]
pub struct StreamEnd {
    format: StreamFormat,
    lines: LineSplitter,
    seen: bool,
}

impl StreamEnd {
    /// A watcher for a streaming content type, or `None` when the response is not a stream.
    pub fn for_content_type(content_type: &str) -> Option<StreamEnd> {
        let BodyFormat::Stream(format) = BodyFormat::of(content_type) else {
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
