//! Reading promptgate's `/metrics` in tests: one series' value, and scrapes that wait for the
//! logging phase (a request is counted just after its response was sent, so a scrape right
//! after a response may race it).

use super::{get_text, Gateway};
use std::time::{Duration, Instant};

/// How long a waiting scrape tries before it gives up.
const PATIENCE: Duration = Duration::from_secs(2);

/// The value of one exact series (`name{labels}`) in a metrics text, if present.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

impl Gateway {
    /// `GET /metrics` on the admin listener, now.
    pub async fn metrics(&self) -> String {
        get_text(&self.admin_url("/metrics")).await
    }

    /// `/metrics` once `needle` appears in it (or the last scrape after 2 s).
    pub async fn metrics_after(&self, needle: &str) -> String {
        self.scrape_while(|text| !text.contains(needle)).await
    }

    /// `/metrics` once `series` is exactly `want`; panics with the last scrape after 2 s.
    pub async fn metrics_until(&self, series: &str, want: f64) -> String {
        let text = self
            .scrape_while(|text| metric(text, series) != Some(want))
            .await;
        assert_eq!(metric(&text, series), Some(want), "{series}:\n{text}");
        text
    }

    /// `/metrics` once `series` is at least `want`; panics with the last scrape after 2 s.
    pub async fn metrics_at_least(&self, series: &str, want: f64) -> String {
        let reached = |text: &str| metric(text, series).is_some_and(|v| v >= want);
        let text = self.scrape_while(|text| !reached(text)).await;
        assert!(reached(&text), "{series} never reached {want}:\n{text}");
        text
    }

    async fn scrape_while(&self, waiting: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let text = self.metrics().await;
            if !waiting(&text) || Instant::now() > deadline {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
