//! Reading a response body once as it passes, for both questions promptgate asks of it: is it
//! a whole answer ([`Verdict`]), and what did it cost ([`Usage`]). Encoded bodies are decoded
//! for reading only; streams are read line by line, other JSON bodies whole at the end. An
//! answer that will not be stored needs no verdict: [`ResponseReader::usage_only`] then reads
//! just its usage, skimming past the rest ([`super::skim`]).

use super::decode::{Coding, Decoder};
use super::doc::{parse_body, parse_doc};
use super::format::{BodyFormat, StreamFormat};
use super::lines::{sse_field, LineSplitter};
use super::skim::usage_doc;
use super::usage::Usage;
use super::verdict::{judge_body, StreamJudge, Verdict};
use bytes::{Bytes, BytesMut};

/// Largest non-streamed JSON body read by default (the default `cache.max_entry_bytes`); a
/// larger one is not judged (so not stored) and its usage not counted.
/// [`ResponseReader::read_json_up_to`] raises it to a route's own limit.
pub const DEFAULT_JSON_LIMIT: usize = 8 << 20;

/// The most bytes an encoded stream is decoded to; past it the stream is not read further
/// (not stored, usage as far as read). Bounds the work a compression bomb can cause.
const MAX_DECODED_STREAM: usize = 256 << 20;

/// Reads a response body fed chunk by chunk: [`ResponseReader::observe`] each chunk,
/// [`ResponseReader::finish`] at its end, then ask for the [`ResponseReader::verdict`] and
/// the usage.
#[derive(Debug)]
pub struct ResponseReader {
    input: Input,
    body: Body,
    usage: Option<Usage>,
    /// Set by `finish`.
    verdict: Option<Verdict>,
    json_limit: usize,
    /// Set by [`ResponseReader::usage_only`]: read the usage, judge nothing.
    usage_only: bool,
}

#[derive(Debug)]
enum Input {
    Plain,
    Decoding(Box<Decoder>),
    /// An encoding promptgate cannot read, corrupt encoded data, or past the decoding cap.
    Unreadable,
}

#[derive(Debug)]
enum Body {
    Lines(StreamFormat, LineSplitter, StreamJudge),
    /// The chunks (kept by reference when not decoded) until the end; `over` once past the
    /// limit, when they are dropped.
    Json {
        chunks: Vec<Bytes>,
        size: usize,
        over: bool,
    },
    Other,
}

impl ResponseReader {
    /// A reader for a response with these `Content-Type` and `Content-Encoding` values.
    pub fn new(content_type: &str, content_encoding: Option<&str>) -> ResponseReader {
        let format = BodyFormat::of(content_type);
        let body = match format {
            BodyFormat::Stream(f) => {
                Body::Lines(f, LineSplitter::default(), StreamJudge::default())
            }
            BodyFormat::Json => Body::Json {
                chunks: Vec::new(),
                size: 0,
                over: false,
            },
            BodyFormat::Other => Body::Other,
        };
        let cap = match format {
            BodyFormat::Stream(_) => MAX_DECODED_STREAM,
            _ => DEFAULT_JSON_LIMIT,
        };
        let input = match Coding::of(content_encoding) {
            // A body not read needs no decoding.
            _ if matches!(body, Body::Other) => Input::Plain,
            Some(coding) => match Decoder::new(coding, cap) {
                Ok(None) => Input::Plain,
                Ok(Some(d)) => Input::Decoding(Box::new(d)),
                Err(_) => Input::Unreadable,
            },
            None => Input::Unreadable,
        };
        ResponseReader {
            input,
            body,
            usage: None,
            verdict: None,
            json_limit: DEFAULT_JSON_LIMIT,
            usage_only: false,
        }
    }

    /// A reader for a response with these headers.
    pub fn for_headers<'h>(
        headers: impl IntoIterator<Item = (&'h http::HeaderName, &'h http::HeaderValue)>,
    ) -> ResponseReader {
        let mut content_type = "";
        let mut content_encoding = None;
        for (name, value) in headers {
            if name == http::header::CONTENT_TYPE {
                content_type = value.to_str().unwrap_or("");
            } else if name == http::header::CONTENT_ENCODING {
                // An unreadable value is an unreadable coding, never "none".
                content_encoding = Some(value.to_str().unwrap_or("?"));
            }
        }
        ResponseReader::new(content_type, content_encoding)
    }

    /// Reads non-streamed JSON bodies up to `limit` bytes (decoded) instead of
    /// [`DEFAULT_JSON_LIMIT`]: a route that stores larger answers must be able to judge them.
    pub fn read_json_up_to(&mut self, limit: usize) {
        self.json_limit = limit.max(DEFAULT_JSON_LIMIT);
        if let (Input::Decoding(d), Body::Json { .. }) = (&mut self.input, &self.body) {
            d.set_cap(self.json_limit);
        }
    }

    /// Reads only the usage from here on (call it before the first chunk): the body is not
    /// judged, and its verdict reads [`Verdict::Incomplete`], so nothing can be stored on it.
    /// For an answer that will not be recorded, whose body then is skimmed for its top-level
    /// usage fields instead of parsed whole ([`super::skim`]); the usage read is the same.
    pub fn usage_only(&mut self) {
        self.usage_only = true;
    }

    /// The complete body of a stored response.
    pub fn of_body<'h>(
        headers: impl IntoIterator<Item = (&'h http::HeaderName, &'h http::HeaderValue)>,
        body: &Bytes,
    ) -> ResponseReader {
        let mut r = ResponseReader::for_headers(headers);
        r.observe(body);
        r.finish();
        r
    }

    /// The usage of the complete body of a stored response ([`ResponseReader::usage_only`]).
    pub fn usage_of_body<'h>(
        headers: impl IntoIterator<Item = (&'h http::HeaderName, &'h http::HeaderValue)>,
        body: &Bytes,
    ) -> Option<Usage> {
        let mut r = ResponseReader::for_headers(headers);
        r.usage_only();
        r.observe(body);
        r.finish();
        r.into_usage()
    }

    /// Reads one chunk of the body as it arrives.
    pub fn observe(&mut self, chunk: &Bytes) {
        if self.verdict.is_some() {
            return;
        }
        match &mut self.input {
            Input::Plain => self.take(chunk.clone()),
            Input::Decoding(d) => match d.write(chunk) {
                Ok(decoded) if decoded.is_empty() => {}
                Ok(decoded) => self.take(Bytes::from(decoded)),
                Err(_) => self.input = Input::Unreadable,
            },
            Input::Unreadable => {}
        }
    }

    /// Ends the body: reads what was held back (an unterminated last line, a whole JSON body)
    /// and settles the verdict. Calling it again does nothing.
    pub fn finish(&mut self) {
        if self.verdict.is_some() {
            return;
        }
        if let Input::Decoding(d) = &mut self.input {
            match d.finish() {
                Ok(rest) if rest.is_empty() => {}
                Ok(rest) => self.take(Bytes::from(rest)),
                Err(_) => self.input = Input::Unreadable,
            }
        }
        let readable = !matches!(self.input, Input::Unreadable);
        let verdict = match &mut self.body {
            Body::Lines(format, lines, judge) => {
                // The last NDJSON object (Ollama's, with the counts) may lack its newline.
                if *format == StreamFormat::Ndjson && readable {
                    if let Some(line) = lines.pending() {
                        let judge = (!self.usage_only).then_some(&mut *judge);
                        read_line(*format, line, judge, &mut self.usage);
                    }
                }
                judge.verdict()
            }
            Body::Json { over: true, .. } => Verdict::Incomplete,
            Body::Json { chunks, size, .. } => {
                let whole = match chunks.len() {
                    1 => chunks[0].clone(),
                    _ => {
                        let mut buf = BytesMut::with_capacity(*size);
                        chunks.iter().for_each(|c| buf.extend_from_slice(c));
                        buf.freeze()
                    }
                };
                *chunks = Vec::new();
                if self.usage_only && !starts_array(&whole) {
                    if let Some(doc) = usage_doc(&whole) {
                        doc.merge_usage(&mut self.usage);
                    }
                    self.verdict = Some(Verdict::Incomplete);
                    return;
                }
                let parsed = parse_body(&whole);
                if let Some(body) = &parsed {
                    for doc in body.docs() {
                        doc.merge_usage(&mut self.usage);
                    }
                }
                judge_body(parsed.as_ref())
            }
            Body::Other => Verdict::Complete,
        };
        self.verdict = Some(if readable && !self.usage_only {
            verdict
        } else {
            Verdict::Incomplete
        });
    }

    /// The verdict: after [`ResponseReader::finish`], on the whole body; before, on a stream
    /// as far as it went (`Complete` once its successful end was seen), otherwise `Incomplete`.
    pub fn verdict(&self) -> Verdict {
        if let Some(v) = self.verdict {
            return v;
        }
        match (&self.input, &self.body) {
            _ if self.usage_only => Verdict::Incomplete,
            (Input::Unreadable, _) => Verdict::Incomplete,
            (_, Body::Lines(_, _, judge)) => judge.verdict(),
            _ => Verdict::Incomplete,
        }
    }

    /// The usage the body reported, as far as it was read.
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    pub fn into_usage(self) -> Option<Usage> {
        self.usage
    }

    /// Reads decoded bytes.
    fn take(&mut self, bytes: Bytes) {
        match &mut self.body {
            Body::Lines(format, lines, judge) => {
                let (format, usage) = (*format, &mut self.usage);
                let mut judge = (!self.usage_only).then_some(judge);
                lines.feed(&bytes, |line| {
                    read_line(format, line, judge.as_deref_mut(), usage)
                });
            }
            Body::Json { chunks, size, over } => {
                if *over {
                    return;
                }
                *size += bytes.len();
                if *size > self.json_limit {
                    *over = true;
                    *chunks = Vec::new();
                } else {
                    chunks.push(bytes);
                }
            }
            Body::Other => {}
        }
    }
}

/// True when a JSON body is an array (Gemini's non-SSE stream): parsed whole even for usage.
fn starts_array(json: &[u8]) -> bool {
    json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
}

/// Reads one stream line: an SSE field or an NDJSON object. Without a `judge` (usage only),
/// the usage is skimmed from the line ([`usage_doc`]).
fn read_line(
    format: StreamFormat,
    line: &[u8],
    judge: Option<&mut StreamJudge>,
    usage: &mut Option<Usage>,
) {
    let json = match format {
        StreamFormat::Sse => {
            if let Some(name) = sse_field(line, b"event") {
                if let Some(judge) = judge {
                    judge.event_name(name);
                }
                return;
            }
            match sse_field(line, b"data") {
                Some(b"[DONE]") => {
                    if let Some(judge) = judge {
                        judge.done_marker();
                    }
                    return;
                }
                Some(data) => data,
                None => return,
            }
        }
        StreamFormat::Ndjson => line,
    };
    let Some(judge) = judge else {
        if let Some(doc) = usage_doc(json) {
            doc.merge_usage(usage);
        }
        return;
    };
    let Some(doc) = parse_doc(json) else {
        return;
    };
    match format {
        StreamFormat::Sse => judge.sse_event(&doc),
        StreamFormat::Ndjson => judge.ndjson_object(&doc),
    }
    doc.merge_usage(usage);
}

#[cfg(test)]
mod tests {
    use super::super::decode::tests::{brotli, gzip};
    use super::*;

    fn read(
        content_type: &str,
        encoding: Option<&str>,
        body: &[u8],
        piece: usize,
    ) -> (Verdict, Option<(u64, u64, Option<String>)>) {
        read_as(false, content_type, encoding, body, piece)
    }

    /// `read`, or with `usage_only` only the usage read.
    fn read_as(
        usage_only: bool,
        content_type: &str,
        encoding: Option<&str>,
        body: &[u8],
        piece: usize,
    ) -> (Verdict, Option<(u64, u64, Option<String>)>) {
        let mut r = ResponseReader::new(content_type, encoding);
        if usage_only {
            r.usage_only();
        }
        for chunk in body.chunks(piece) {
            r.observe(&Bytes::copy_from_slice(chunk));
        }
        r.finish();
        let verdict = r.verdict();
        (
            verdict,
            r.into_usage().map(|u| (u.input, u.output, u.model)),
        )
    }

    #[test]
    fn usage_only_reads_the_same_usage_and_never_a_complete_verdict() {
        let chat = Some((12, 5, Some("gpt-4o".to_owned())));
        for (encoding, body) in [
            (None, CHAT.to_vec()),
            (Some("gzip"), gzip(CHAT)),
            (Some("br"), brotli(CHAT)),
        ] {
            for piece in [1, 7, body.len()] {
                assert_eq!(
                    read_as(true, "application/json", encoding, &body, piece),
                    (Verdict::Incomplete, chat.clone()),
                    "{encoding:?} in pieces of {piece}"
                );
            }
        }
        // the usage before the choices, and a decoy "usage" in the content
        let early = br#"{"usage":{"prompt_tokens":2,"completion_tokens":1},"choices":[{"message":{"content":"\"usage\":{\"prompt_tokens\":50}"},"finish_reason":"stop"}]}"#;
        assert_eq!(
            read_as(true, "application/json", Some("gzip"), &gzip(early), 5),
            (Verdict::Incomplete, Some((2, 1, None)))
        );
        assert_eq!(
            read("application/json", None, early, 5),
            (Verdict::Complete, Some((2, 1, None)))
        );
        // an error document: no usage, and nothing to store either way
        let error = br#"{"error":{"message":"no"}}"#;
        assert_eq!(
            read_as(true, "application/json", None, error, 3),
            (Verdict::Incomplete, None)
        );
        // a stream: the same usage, no verdict judged (it had its [DONE])
        let stream = b"data: {\"model\":\"gpt-4o\",\"choices\":[{\"delta\":{\"content\":\"\\\"usage\\\":{}\"},\"finish_reason\":\"stop\"}]}\n\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n";
        let usage = Some((7, 2, Some("gpt-4o".to_owned())));
        assert_eq!(
            read("text/event-stream", None, stream, 4),
            (Verdict::Complete, usage.clone())
        );
        assert_eq!(
            read_as(true, "text/event-stream", Some("gzip"), &gzip(stream), 4),
            (Verdict::Incomplete, usage)
        );
        // a Gemini array is parsed whole: the same usage
        let array = br#"[{"modelVersion":"g"},{"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2}}]"#;
        assert_eq!(
            read_as(true, "application/json", None, array, 8).1,
            Some((3, 2, Some("g".to_owned())))
        );
        // a truncated body has no usage
        assert_eq!(
            read_as(true, "application/json", None, &CHAT[..CHAT.len() - 1], 8),
            (Verdict::Incomplete, None)
        );
    }

    const CHAT: &[u8] = br#"{"model":"gpt-4o","choices":[{"message":{"content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":5}}"#;

    #[test]
    fn encoded_json_is_decoded_for_usage_and_verdict() {
        let expected = (Verdict::Complete, Some((12, 5, Some("gpt-4o".to_owned()))));
        for (encoding, body) in [("gzip", gzip(CHAT)), ("br", brotli(CHAT))] {
            for piece in [1, 5, body.len()] {
                assert_eq!(
                    read("application/json", Some(encoding), &body, piece),
                    expected,
                    "{encoding} in pieces of {piece}"
                );
            }
        }
        // an encoded error is still an error
        let error = gzip(br#"{"error":{"message":"no"}}"#);
        assert_eq!(
            read("application/json", Some("gzip"), &error, 4).0,
            Verdict::Failed(super::super::Failure::Error)
        );
    }

    #[test]
    fn encoded_streams_are_read_as_they_pass() {
        let stream = b"data: {\"model\":\"gpt-4o\",\"choices\":[{\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}\n\n\
data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n";
        let body = gzip(stream);
        assert_eq!(
            read("text/event-stream", Some("gzip"), &body, 9),
            (Verdict::Complete, Some((7, 2, Some("gpt-4o".to_owned()))))
        );
    }

    #[test]
    fn unreadable_encodings_are_never_complete() {
        // an unknown coding: promptgate cannot tell an error from an answer
        assert_eq!(
            read("application/json", Some("compress"), CHAT, 100),
            (Verdict::Incomplete, None)
        );
        // corrupt data
        assert_eq!(
            read("application/json", Some("gzip"), b"\x1f\x8b garbage", 100),
            (Verdict::Incomplete, None)
        );
        // a body promptgate does not read needs no decoding
        assert_eq!(
            read("text/plain", Some("compress"), b"x", 1),
            (Verdict::Complete, None)
        );
    }

    #[test]
    fn a_compression_bomb_is_not_read_past_the_limit() {
        let mut json = b"{\"pad\":\"".to_vec();
        json.resize(DEFAULT_JSON_LIMIT + 10, b'a');
        json.extend_from_slice(b"\",\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}");
        let body = gzip(&json);
        assert!(body.len() < 64 << 10);
        assert_eq!(
            read("application/json", Some("gzip"), &body, 1 << 14),
            (Verdict::Incomplete, None)
        );
        // a route with a larger limit reads it
        let mut r = ResponseReader::new("application/json", Some("gzip"));
        r.read_json_up_to(DEFAULT_JSON_LIMIT * 2);
        r.observe(&Bytes::from(body));
        r.finish();
        assert_eq!(r.verdict(), Verdict::Complete);
        assert_eq!(r.usage().map(|u| (u.input, u.output)), Some((1, 1)));
    }

    #[test]
    fn plain_json_over_the_limit_is_not_judged() {
        let mut json = b"{\"pad\":\"".to_vec();
        json.resize(DEFAULT_JSON_LIMIT + 10, b'a');
        json.extend_from_slice(b"\"}");
        assert_eq!(
            read("application/json", None, &json, 1 << 20).0,
            Verdict::Incomplete
        );
    }

    #[test]
    fn headers_name_the_format_and_coding() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            "application/json".parse().unwrap(),
        );
        headers.insert(http::header::CONTENT_ENCODING, "gzip".parse().unwrap());
        let r = ResponseReader::of_body(&headers, &Bytes::from(gzip(CHAT)));
        assert_eq!(r.verdict(), Verdict::Complete);
        assert_eq!(r.usage().map(|u| u.input), Some(12));
    }
}
