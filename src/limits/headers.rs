//! The rate-limit response headers, in the shape OpenAI sends them, so SDK back-off logic works
//! unchanged: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (reset as a duration such
//! as `1s`, `6m0s` or `120ms`), and on a refusal `retry-after` (whole seconds, rounded up) with
//! `retry-after-ms` (which the OpenAI SDKs read first).

use super::gcra::{Outcome, Params};
use http::{HeaderName, HeaderValue};

pub const LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
pub const REMAINING_REQUESTS: HeaderName =
    HeaderName::from_static("x-ratelimit-remaining-requests");
pub const RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
pub const LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
pub const REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
pub const RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");
pub const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");

/// A response header list; a handful of entries.
pub type Headers = Vec<(HeaderName, HeaderValue)>;

/// The `x-ratelimit-*` headers for the limits that are set (requests, tokens).
pub fn ratelimit(p: &Params, o: &Outcome) -> Headers {
    let mut h = Vec::with_capacity(8);
    if p.rpm > 0 {
        h.push((LIMIT_REQUESTS, HeaderValue::from(p.rpm)));
        h.push((REMAINING_REQUESTS, HeaderValue::from(o.requests_remaining)));
        h.push((RESET_REQUESTS, duration_value(o.requests_reset_us)));
    }
    if p.tpm > 0 {
        h.push((LIMIT_TOKENS, HeaderValue::from(p.tpm)));
        h.push((REMAINING_TOKENS, HeaderValue::from(o.tokens_remaining)));
        h.push((RESET_TOKENS, duration_value(o.tokens_reset_us)));
    }
    h
}

/// Appends `retry-after` (whole seconds, at least 1) and `retry-after-ms` for a wait of `us`.
pub fn push_retry_after(h: &mut Headers, us: i64) {
    h.push((
        http::header::RETRY_AFTER,
        HeaderValue::from(retry_after_secs(us)),
    ));
    h.push((RETRY_AFTER_MS, HeaderValue::from(ceil_div(us.max(1), 1000))));
}

/// Whole seconds to wait for `us` microseconds: rounded up, at least 1 (`Retry-After: 0` would
/// invite an immediate retry that is refused again).
pub fn retry_after_secs(us: i64) -> i64 {
    ceil_div(us, 1_000_000).max(1)
}

fn ceil_div(a: i64, b: i64) -> i64 {
    (a.max(0) + b - 1) / b
}

fn duration_value(us: i64) -> HeaderValue {
    HeaderValue::from_str(&duration_text(us)).expect("a duration is ASCII")
}

/// A duration the way OpenAI (Go's `time.Duration`) writes it, to the millisecond, rounded up:
/// `0s`, `120ms`, `1s`, `8.64s`, `6m0s`, `1h2m3.5s`.
pub fn duration_text(us: i64) -> String {
    let ms = ceil_div(us, 1000);
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m, s_ms) = (ms / 3_600_000, (ms / 60_000) % 60, ms % 60_000);
    let seconds = if s_ms % 1000 == 0 {
        format!("{}s", s_ms / 1000)
    } else {
        let frac = format!("{:03}", s_ms % 1000);
        format!("{}.{}s", s_ms / 1000, frac.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_openais() {
        for (us, text) in [
            (0, "0s"),
            (-5, "0s"),
            (1, "1ms"),
            (12_000, "12ms"),
            (999_999, "1s"),
            (1_000_000, "1s"),
            (8_640_000, "8.64s"),
            (1_500_000, "1.5s"),
            (360_000_000, "6m0s"),
            (90_000_000, "1m30s"),
            (3_723_500_000, "1h2m3.5s"),
        ] {
            assert_eq!(duration_text(us), text, "{us} µs");
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(10_000_000), 10);
        assert_eq!(retry_after_secs(9_000_001), 10);
        assert_eq!(retry_after_secs(1), 1);
        assert_eq!(retry_after_secs(0), 1);
    }

    #[test]
    fn only_the_limits_set_get_headers() {
        let o = Outcome {
            requests_remaining: 4,
            requests_reset_us: 20_000_000,
            tokens_remaining: 150,
            tokens_reset_us: 12_000,
            ..Outcome::default()
        };
        let only_rpm = Params {
            rpm: 6,
            ..Params::default()
        };
        let h = ratelimit(&only_rpm, &o);
        let text: Vec<(String, String)> = h
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        assert_eq!(
            text,
            [
                ("x-ratelimit-limit-requests", "6"),
                ("x-ratelimit-remaining-requests", "4"),
                ("x-ratelimit-reset-requests", "20s"),
            ]
            .map(|(n, v)| (n.to_string(), v.to_string()))
        );
        let both = Params {
            rpm: 6,
            tpm: 1000,
            ..Params::default()
        };
        let h = ratelimit(&both, &o);
        assert_eq!(h.len(), 6);
        assert_eq!(h[5].1, "12ms");
        assert!(ratelimit(&Params::default(), &o).is_empty());
    }
}
