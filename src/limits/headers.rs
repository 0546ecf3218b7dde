//! The rate-limit response headers, in the shape OpenAI sends them, so SDK back-off logic works
//! unchanged: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (reset as a duration such
//! as `1s`, `6m0s` or `120ms`), and on a refusal `retry-after` (whole seconds, rounded up) with
//! `retry-after-ms` (which the OpenAI SDKs read first).

use super::gcra::Outcome;
use super::RouteLimit;
use http::{HeaderName, HeaderValue};
use std::io::Write;

// Names as `HeaderName`s made at compile time: set on a head by a clone, not parsed per use.
pub const LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
pub const REMAINING_REQUESTS: HeaderName =
    HeaderName::from_static("x-ratelimit-remaining-requests");
pub const RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
pub const LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
pub const REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
pub const RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");
pub const RETRY_AFTER: HeaderName = http::header::RETRY_AFTER;
pub const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");

/// A response header list; a handful of entries.
pub type Headers = Vec<(HeaderName, HeaderValue)>;

/// The `x-ratelimit-*` headers for the limits of `limit` that are set (requests, tokens).
pub fn ratelimit(limit: &RouteLimit, o: &Outcome) -> Headers {
    let mut h = Vec::with_capacity(8);
    if limit.params.rpm > 0 {
        h.push((LIMIT_REQUESTS, limit.values.requests.clone()));
        h.push((REMAINING_REQUESTS, HeaderValue::from(o.requests_remaining)));
        h.push((RESET_REQUESTS, duration_value(o.requests_reset_us)));
    }
    if limit.params.tpm > 0 {
        h.push((LIMIT_TOKENS, limit.values.tokens.clone()));
        h.push((REMAINING_TOKENS, HeaderValue::from(o.tokens_remaining)));
        h.push((RESET_TOKENS, duration_value(o.tokens_reset_us)));
    }
    h
}

/// Appends `retry-after` (whole seconds, at least 1) and `retry-after-ms` for a wait of `us`.
pub fn push_retry_after(h: &mut Headers, us: i64) {
    h.push((RETRY_AFTER, HeaderValue::from(retry_after_secs(us))));
    h.push((RETRY_AFTER_MS, HeaderValue::from(ceil_div(us.max(1), 1000))));
}

/// Whole seconds to wait for `us` microseconds: rounded up, at least 1 (`Retry-After: 0` would
/// invite an immediate retry that is refused again).
pub fn retry_after_secs(us: i64) -> i64 {
    ceil_div(us, 1_000_000).max(1)
}

/// ⌈a / b⌉ for b > 0, negative `a` taken as 0 (no overflow near `i64::MAX`).
fn ceil_div(a: i64, b: i64) -> i64 {
    let a = a.max(0);
    a / b + i64::from(a % b != 0)
}

fn duration_value(us: i64) -> HeaderValue {
    if us <= 0 {
        return HeaderValue::from_static("0s");
    }
    let mut buf = [0u8; 40];
    let len = write_duration(&mut buf, us);
    HeaderValue::from_bytes(&buf[..len]).expect("a duration is ASCII")
}

/// A duration the way OpenAI (Go's `time.Duration`) writes it, to the millisecond, rounded up:
/// `0s`, `120ms`, `1s`, `8.64s`, `6m0s`, `1h2m3.5s`.
pub fn duration_text(us: i64) -> String {
    let mut buf = [0u8; 40];
    let len = write_duration(&mut buf, us);
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

/// Writes [`duration_text`] into `buf` (no allocation); returns its length.
fn write_duration(buf: &mut [u8; 40], us: i64) -> usize {
    let mut w = &mut buf[..];
    let ms = ceil_div(us, 1000);
    let (h, m, s_ms) = (ms / 3_600_000, (ms / 60_000) % 60, ms % 60_000);
    // At most "2562047788015h59m59.999s" for i64::MAX µs: the buffer always suffices.
    let _ = if ms == 0 {
        write!(w, "0s")
    } else if ms < 1000 {
        write!(w, "{ms}ms")
    } else {
        if h > 0 {
            let _ = write!(w, "{h}h{m}m");
        } else if m > 0 {
            let _ = write!(w, "{m}m");
        }
        let (secs, frac) = (s_ms / 1000, s_ms % 1000);
        match frac {
            0 => write!(w, "{secs}s"),
            f if f % 100 == 0 => write!(w, "{secs}.{}s", f / 100),
            f if f % 10 == 0 => write!(w, "{secs}.{:02}s", f / 10),
            f => write!(w, "{secs}.{f:03}s"),
        }
    };
    40 - w.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::RateLimitSpec;

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
            (61_050_000, "1m1.05s"),
            (1_007_000, "1.007s"),
            (i64::MAX, "2562047788h0m54.776s"),
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
        let only_rpm = RouteLimit::new(&RateLimitSpec {
            requests_per_minute: Some(6),
            ..RateLimitSpec::default()
        });
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
        let both = RouteLimit::new(&RateLimitSpec {
            requests_per_minute: Some(6),
            tokens_per_minute: Some(1000),
            ..RateLimitSpec::default()
        });
        let h = ratelimit(&both, &o);
        assert_eq!(h.len(), 6);
        assert_eq!((&h[3].0, h[3].1.to_str().unwrap()), (&LIMIT_TOKENS, "1000"));
        assert_eq!(h[5].1, "12ms");
        let usd_only = RouteLimit::new(&RateLimitSpec {
            usd_per_day: Some(1.0),
            ..RateLimitSpec::default()
        });
        assert!(ratelimit(&usd_only, &o).is_empty());
    }
}
