//! The config file's shape: serde types mirroring `promptgate.yaml`, with defaults.
//! Unknown fields are errors. README's config reference documents each field.

use super::secret::Secret;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Top-level keys, each deserialized on its own so that one bad section does not hide another.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "listen",
    "admin",
    "threads",
    "shutdown_grace",
    "limits",
    "upstreams",
    "routes",
    "cache",
    "reload",
];

pub fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

pub fn default_admin() -> String {
    "127.0.0.1:9090".into()
}

pub fn default_shutdown_grace() -> Duration {
    Duration::from_secs(10)
}

/// `limits:` — bounds on what a client may send.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSpec {
    /// Largest request body accepted; larger ones get 413. Default 32 MiB.
    pub max_body_bytes: usize,
}

impl Default for LimitsSpec {
    fn default() -> Self {
        LimitsSpec {
            max_body_bytes: 32 * 1024 * 1024,
        }
    }
}

/// `upstreams.NAME:` — one provider endpoint.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    /// `scheme://host[:port][/base/path]`; http or https.
    pub url: String,
    /// Headers set on every request to this upstream, replacing the client's.
    /// Usually a credential, so values are secrets.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret<String>>,
    #[serde(default)]
    pub timeouts: TimeoutsSpec,
}

/// `upstreams.NAME.timeouts:` — human durations such as `5s` or `250ms`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsSpec {
    /// TCP (and TLS) connection establishment. Default 5s.
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    /// Longest wait for the response head or between two body chunks. Default 30s.
    #[serde(with = "humantime_serde")]
    pub read: Duration,
    /// Longest wait for one write of the request. Default 10s.
    #[serde(with = "humantime_serde")]
    pub write: Duration,
    /// How long an idle pooled connection is kept. Default 60s.
    #[serde(with = "humantime_serde")]
    pub idle: Duration,
}

impl Default for TimeoutsSpec {
    fn default() -> Self {
        TimeoutsSpec {
            connect: Duration::from_secs(5),
            read: Duration::from_secs(30),
            write: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        }
    }
}

/// `routes[N]:` — which requests go where.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub name: String,
    #[serde(rename = "match", default)]
    pub matcher: MatchSpec,
    /// Remove `match.path_prefix` from the path before forwarding.
    #[serde(default)]
    pub strip_prefix: bool,
    pub targets: Vec<TargetSpec>,
}

/// `routes[N].match:` — every given criterion must hold; none given matches everything.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// Path prefix on a segment boundary: `/openai` matches `/openai/v1/...`, not `/openaix`.
    pub path_prefix: Option<String>,
    /// `Host` header (port ignored), case-insensitive.
    pub host: Option<String>,
    /// Request headers that must be present with exactly these values.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Glob (`*`, `?`) on the `model` field of a JSON request body.
    pub model: Option<String>,
}

/// `routes[N].targets[M]:` — an upstream name, or an upstream with a model rewrite.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(
    untagged,
    expecting = "an upstream name, or a map {upstream: NAME, model: MODEL}"
)]
pub enum TargetSpec {
    Name(String),
    Detailed(DetailedTarget),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DetailedTarget {
    pub upstream: String,
    /// Replaces the `model` field of the JSON request body.
    pub model: Option<String>,
}

impl TargetSpec {
    pub fn upstream(&self) -> &str {
        match self {
            TargetSpec::Name(name) => name,
            TargetSpec::Detailed(d) => &d.upstream,
        }
    }

    pub fn model(&self) -> Option<&str> {
        match self {
            TargetSpec::Name(_) => None,
            TargetSpec::Detailed(d) => d.model.as_deref(),
        }
    }
}

/// `cache:` — the response cache.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSpec {
    pub enabled: bool,
    pub backend: CacheBackend,
}

impl Default for CacheSpec {
    fn default() -> Self {
        CacheSpec {
            enabled: true,
            backend: CacheBackend::Memory,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheBackend {
    Memory,
    Redis,
}

/// `reload:` — how a changed config file is picked up while running.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadSpec {
    /// Watch the config file and reload when it changes. Default true. SIGHUP and
    /// `POST /reload` work either way.
    pub watch: bool,
}

impl Default for ReloadSpec {
    fn default() -> Self {
        ReloadSpec { watch: true }
    }
}
