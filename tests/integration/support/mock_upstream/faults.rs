//! Fault controls: the `x-mock-*` request headers a test sends to make the mock misbehave,
//! parsed once per request, and the provider-shaped error reply a forced status gets.
//!
//! | header | effect |
//! |---|---|
//! | `x-mock-delay-ms: N` | wait N ms before answering (before the status line); a connection closed meanwhile is recorded ([`MockUpstream::abandoned`](super::MockUpstream::abandoned)) and not answered |
//! | `x-mock-chunk-delay-ms: N` | wait N ms between the chunks of a stream |
//! | `x-mock-status: S` | answer status S with an error body (429 adds `retry-after`) |
//! | `x-mock-retry-after: V` | the `retry-after` value of a forced 429 (default `1`) |
//! | `x-mock-fail-first: N` + `x-mock-id` | the first N requests with that id fail (`x-mock-status`, else 503) |
//! | `x-mock-fault: reset` | drop the connection with an RST instead of answering |
//! | `x-mock-fault: truncate` | send half the body (or half the stream's chunks), then close |
//! | `x-mock-fault: close` | answer in full, then close the connection |
//! | `x-mock-fault-first: N` + `x-mock-id` | `x-mock-fault` hits only the first N requests with that id |
//! | `x-mock-hold: 1` | hold the answer until `MockUpstream::release` (a stream: after its first chunk) |
//! | `x-mock-events: N` | content events per stream (default 4) |
//! | `x-mock-vary: V` | answer with `vary: V` |
//! | `x-mock-cache-control: V` | answer with `cache-control: V` |
//! | `origin: O` | answer with `vary: Origin` and `access-control-allow-origin: O` |
//! | `x-mock-outcome: O` | a 200 that is not a whole answer, in the provider's shape (see [`Outcome`]) |
//! | `x-mock-encoding: E` | send the body `gzip`- or `br`-encoded (a stream: encoded whole, cut into as many chunks); `compress`: labelled only |

use std::time::Duration;

use serde_json::json;

use super::reply::{json_reply, Reply};
use super::{RecordedRequest, Shared};

/// Content events per stream unless `x-mock-events` says otherwise.
const DEFAULT_EVENTS: usize = 4;

/// What `x-mock-fault` does to the connection.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    Reset,
    Truncate,
    Close,
}

/// What kind of 200 answer `x-mock-outcome` asks for; each provider file shapes it its way,
/// streamed and not (a provider without such an answer gives its normal one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Outcome {
    /// A whole answer.
    #[default]
    Answer,
    /// `error`: an error object or event inside the 200 (a stream carries it partway, then
    /// its end marker where the format has one).
    Error,
    /// `partial`: a stream that ends cleanly without the provider finishing its answer.
    Partial,
    /// `refusal`: a refusal or a safety block of the answer.
    Refusal,
    /// `prompt-blocked`: Gemini's `promptFeedback.blockReason` (the prompt itself was blocked).
    PromptBlocked,
}

/// The `Content-Encoding` `x-mock-encoding` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Encoding {
    Gzip,
    Brotli,
    /// The label without the encoding: a coding promptgate does not read, to see it refused.
    CompressLabel,
}

impl Encoding {
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Brotli => "br",
            Encoding::CompressLabel => "compress",
        }
    }

    pub fn encode(self, data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        match self {
            Encoding::Gzip => {
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(data).expect("writing to a Vec");
                e.finish().expect("writing to a Vec")
            }
            Encoding::Brotli => {
                let mut out = Vec::new();
                {
                    let mut e = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                    e.write_all(data).expect("writing to a Vec");
                }
                out
            }
            Encoding::CompressLabel => data.to_vec(),
        }
    }
}

/// The `x-mock-*` request headers, parsed.
pub(super) struct Controls {
    pub delay: Duration,
    pub chunk_delay: Duration,
    /// `None` also when `x-mock-fault-first` has used up this id's faulty requests.
    pub fault: Option<Fault>,
    pub hold: bool,
    pub events: usize,
    pub outcome: Outcome,
    pub encoding: Option<Encoding>,
}

impl Controls {
    /// Parses the controls; a fault limited by `x-mock-fault-first` counts this request.
    pub fn from_request(req: &RecordedRequest, shared: &Shared) -> Self {
        let millis = |name| {
            Duration::from_millis(req.header(name).and_then(|v| v.parse().ok()).unwrap_or(0))
        };
        let fault = match req
            .header("x-mock-fault")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("reset") => Some(Fault::Reset),
            Some("truncate") => Some(Fault::Truncate),
            Some("close") => Some(Fault::Close),
            _ => None,
        };
        Controls {
            delay: millis("x-mock-delay-ms"),
            chunk_delay: millis("x-mock-chunk-delay-ms"),
            fault: fault.filter(|_| fault_applies(req, shared)),
            hold: req
                .header("x-mock-hold")
                .is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false")),
            events: req
                .header("x-mock-events")
                .and_then(|v| v.parse().ok())
                .unwrap_or(DEFAULT_EVENTS)
                .max(1),
            outcome: match req.header("x-mock-outcome") {
                Some("error") => Outcome::Error,
                Some("partial") => Outcome::Partial,
                Some("refusal") => Outcome::Refusal,
                Some("prompt-blocked") => Outcome::PromptBlocked,
                _ => Outcome::Answer,
            },
            encoding: match req.header("x-mock-encoding") {
                Some("gzip") => Some(Encoding::Gzip),
                Some("br") => Some(Encoding::Brotli),
                Some("compress") => Some(Encoding::CompressLabel),
                _ => None,
            },
        }
    }
}

/// With `x-mock-fault-first: N` (and `x-mock-id`), `x-mock-fault` hits only the first N
/// requests carrying that id; without it, every request.
fn fault_applies(req: &RecordedRequest, shared: &Shared) -> bool {
    let Some(first) = req
        .header("x-mock-fault-first")
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return true;
    };
    let id = req.header("x-mock-id").unwrap_or_default();
    shared.count(format!("fault:{id}")) <= first
}

/// Status forced by `x-mock-status` / `x-mock-fail-first`, if this request should fail. With
/// `x-mock-fail-first`, counts this request under its `x-mock-id`.
pub(super) fn forced_status(req: &RecordedRequest, shared: &Shared) -> Option<u16> {
    let status = req.header("x-mock-status").and_then(|v| v.parse().ok());
    let Some(fail_first) = req
        .header("x-mock-fail-first")
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return status;
    };
    let id = req.header("x-mock-id").unwrap_or_default().to_owned();
    (shared.count(id) <= fail_first).then(|| status.unwrap_or(503))
}

/// The error a forced status answers with, in the requesting provider's error shape.
pub(super) fn error_reply(req: &RecordedRequest, status: u16) -> Reply {
    let message = format!("mock status {status}");
    let anthropic =
        req.path.starts_with("/v1/messages") || req.header("anthropic-version").is_some();
    let body = if anthropic {
        json!({"type": "error", "error": {"type": "mock_error", "message": message}})
    } else {
        json!({"error": {"type": "mock_error", "message": message}})
    };
    let mut reply = json_reply(status, &body);
    if status == 429 {
        let retry_after = req.header("x-mock-retry-after").unwrap_or("1");
        reply
            .extra_headers
            .push(("retry-after", retry_after.to_owned()));
    }
    reply
}
