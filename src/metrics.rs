//! Every Prometheus metric promptgate exports, defined in one place.
//!
//! One [`Metrics`] is built at start-up and shared (`Arc`) with whoever records; the admin
//! listener serves [`Metrics::render`] as `GET /metrics`. Names carry the `promptgate_` prefix
//! and follow Prometheus conventions (`_total` counters, base units).

use prometheus::{Encoder, Gauge, IntCounterVec, Opts, Registry, TextEncoder};
use std::time::{SystemTime, UNIX_EPOCH};

/// The content type of [`Metrics::render`]'s output (Prometheus text exposition format).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Result label values of `promptgate_config_reloads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    Success,
    Error,
}

impl ReloadResult {
    fn label(self) -> &'static str {
        match self {
            ReloadResult::Success => "success",
            ReloadResult::Error => "error",
        }
    }
}

pub struct Metrics {
    /// Our own registry rather than the process-global default, so tests and embedders can
    /// build several independent instances.
    registry: Registry,
    config_reloads: IntCounterVec,
    config_last_reload_success: Gauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "promptgate_config_reloads_total",
                "Config reload attempts, by result (success or error).",
            ),
            &["result"],
        )
        .expect("static metric definition is valid");
        let config_last_reload_success = Gauge::new(
            "promptgate_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load (start-up or reload).",
        )
        .expect("static metric definition is valid");
        registry
            .register(Box::new(config_reloads.clone()))
            .expect("metric names are unique");
        registry
            .register(Box::new(config_last_reload_success.clone()))
            .expect("metric names are unique");
        // Both series exist from the start, so `rate()` and alerts see a 0 before the first error.
        for result in [ReloadResult::Success, ReloadResult::Error] {
            config_reloads.with_label_values(&[result.label()]);
        }
        Metrics {
            registry,
            config_reloads,
            config_last_reload_success,
        }
    }

    /// The config was loaded at start-up: not a reload, but it is the config in force now.
    pub fn config_loaded(&self) {
        self.config_last_reload_success.set(unix_now());
    }

    /// Counts one reload attempt; a success also moves the last-success timestamp.
    pub fn config_reloaded(&self, result: ReloadResult) {
        self.config_reloads
            .with_label_values(&[result.label()])
            .inc();
        if result == ReloadResult::Success {
            self.config_loaded();
        }
    }

    /// Every metric in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding gathered metrics into memory does not fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_reload_counters_and_timestamp() {
        let m = Metrics::new();
        let before = m.render();
        assert!(
            before.contains(r#"promptgate_config_reloads_total{result="error"} 0"#),
            "{before}"
        );
        m.config_reloaded(ReloadResult::Success);
        m.config_reloaded(ReloadResult::Error);
        m.config_reloaded(ReloadResult::Error);
        let text = m.render();
        assert!(
            text.contains(r#"promptgate_config_reloads_total{result="success"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"promptgate_config_reloads_total{result="error"} 2"#),
            "{text}"
        );
        assert!(
            text.contains("# TYPE promptgate_config_last_reload_success_timestamp_seconds gauge")
        );
        let ts: f64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("promptgate_config_last_reload_success_timestamp_seconds ")
            })
            .unwrap()
            .parse()
            .unwrap();
        assert!(ts > 1.0e9, "{ts}");
    }
}
