//! The last few finished requests, in a bounded ring, for the dashboard's table.
//!
//! Fed once per request from [`crate::metrics::Metrics::request_done`]: the entry is built
//! before taking the lock, the lock is a plain mutex held for one push (never across an
//! await), and the entry pushed out is dropped after the lock is released. What is kept is
//! what the access log shows — method, path without the query string, route, upstream, cache
//! result, status, duration — never a body, header or credential.

use crate::cache::CacheStatus;
use crate::metrics::RequestRecord;
use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// Requests kept.
pub const CAPACITY: usize = 25;
/// Longest path kept, in bytes (cut at a character boundary); a path is client input.
const MAX_PATH: usize = 160;

/// One finished request as the dashboard lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecentRequest {
    /// When it finished.
    pub at: SystemTime,
    pub status: u16,
    /// Where the answer came from; `None` on routes without a cache.
    pub cache: Option<CacheStatus>,
    /// Arrival to last byte.
    pub duration: Duration,
    /// Method, path, route and upstream, one after the other: one allocation per entry.
    text: String,
    /// Where the method, path and route end in `text`.
    ends: [usize; 3],
}

impl RecentRequest {
    fn new(r: &RequestRecord, at: SystemTime) -> RecentRequest {
        let path = truncate(r.path, MAX_PATH);
        let route = r.route.unwrap_or("");
        let upstream = r.upstream.unwrap_or("");
        let mut text =
            String::with_capacity(r.method.len() + path.len() + route.len() + upstream.len());
        let mut ends = [0; 3];
        for (i, part) in [r.method, path, route].into_iter().enumerate() {
            text.push_str(part);
            ends[i] = text.len();
        }
        text.push_str(upstream);
        RecentRequest {
            at,
            status: r.status,
            cache: r.cache,
            duration: r.duration,
            text,
            ends,
        }
    }

    pub fn method(&self) -> &str {
        &self.text[..self.ends[0]]
    }

    /// The request path, without its query string, at most [`MAX_PATH`] bytes.
    pub fn path(&self) -> &str {
        &self.text[self.ends[0]..self.ends[1]]
    }

    /// The matched route, if one matched.
    pub fn route(&self) -> Option<&str> {
        Some(&self.text[self.ends[1]..self.ends[2]]).filter(|s| !s.is_empty())
    }

    /// The upstream that answered, if one did (not on a hit).
    pub fn upstream(&self) -> Option<&str> {
        Some(&self.text[self.ends[2]..]).filter(|s| !s.is_empty())
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The ring of the last [`CAPACITY`] requests.
#[derive(Debug, Default)]
pub struct RecentRequests {
    ring: Mutex<VecDeque<RecentRequest>>,
}

impl RecentRequests {
    /// Adds a finished request, pushing out the oldest when full.
    pub fn push(&self, r: &RequestRecord) {
        let entry = RecentRequest::new(r, SystemTime::now());
        let evicted = {
            let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
            let evicted = if ring.len() >= CAPACITY {
                ring.pop_front()
            } else {
                None
            };
            ring.push_back(entry);
            evicted
        };
        drop(evicted);
    }

    /// The kept requests, newest first.
    pub fn newest_first(&self) -> Vec<RecentRequest> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(
        path: &'a str,
        route: Option<&'a str>,
        upstream: Option<&'a str>,
    ) -> RequestRecord<'a> {
        RequestRecord {
            method: "POST",
            path,
            route,
            upstream,
            status: 200,
            cache: Some(CacheStatus::Miss),
            lookup: None,
            retries: 0,
            failovers: 0,
            duration: Duration::from_millis(5),
            ttfb: None,
            usage: None,
            pricing: None,
            prompt_cache_breakpoints: 0,
        }
    }

    #[test]
    fn keeps_the_newest_requests_up_to_its_capacity() {
        let recent = RecentRequests::default();
        for i in 0..CAPACITY + 7 {
            recent.push(&record(&format!("/p/{i}"), Some("openai"), Some("mock")));
        }
        let kept = recent.newest_first();
        assert_eq!(kept.len(), CAPACITY);
        assert_eq!(kept[0].path(), format!("/p/{}", CAPACITY + 6));
        assert_eq!(kept[CAPACITY - 1].path(), "/p/7");
        assert_eq!(kept[0].method(), "POST");
        assert_eq!(kept[0].route(), Some("openai"));
        assert_eq!(kept[0].upstream(), Some("mock"));
    }

    #[test]
    fn missing_parts_stay_missing_and_long_paths_are_cut() {
        let recent = RecentRequests::default();
        let long = format!("/{}", "é".repeat(200));
        recent.push(&record(&long, None, None));
        let kept = &recent.newest_first()[0];
        assert_eq!((kept.route(), kept.upstream()), (None, None));
        assert!(kept.path().len() <= MAX_PATH && kept.path().len() >= MAX_PATH - 1);
        assert!(long.starts_with(kept.path()));
    }
}
