//! The running state built from one config: listeners, routes, cache policy, prices, logging.
//!
//! A `Runtime` is built from a validated [`crate::config::Spec`] ([`build`], or [`load`] for a
//! file) and swapped whole on reload; each request loads one snapshot at its start and keeps
//! it to its end.

mod build;

pub use build::{build, load};

use crate::config::redis_url;
use crate::config::schema::{CacheBackend, CacheSpec, ConfigSpec, LogSpec, ReloadSpec};
use crate::config::secret::Secret;
use crate::pricing::Pricing;
use crate::providers::anthropic::CacheMinimums;
use crate::routing::Route;
use pingora::http::RequestHeader;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Everything the running proxy needs from one config file.
#[derive(Debug)]
pub struct Runtime {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    /// Worker threads of the proxy service (never 0: "0" in the file means one per core).
    pub threads: usize,
    pub shutdown_grace: Duration,
    /// Unix socket through which listening sockets pass to a new process on upgrade.
    pub upgrade_sock: String,
    pub max_body_bytes: usize,
    pub routes: Vec<Route>,
    pub cache: CacheSpec,
    pub reload: ReloadSpec,
    /// Token prices (`pricing:` merged over the defaults), for the cost metrics.
    pub pricing: Arc<Pricing>,
    /// Shortest prefix worth a prompt-cache breakpoint, per model (`prompt_cache_min_tokens:`
    /// merged over the defaults).
    pub prompt_cache_minimums: Arc<CacheMinimums>,
    pub log: LogSpec,
    /// `admin_token`: required (as `Authorization: Bearer …`) by mutating admin endpoints.
    pub admin_token: Option<Secret<String>>,
    /// The validated sections, secrets redacted when serialized, for `GET /config`.
    pub sections: Arc<ConfigSpec>,
}

impl Runtime {
    /// Routes whose head criteria match, in config order. Empty means 404 without reading the body.
    pub fn candidates(&self, req: &RequestHeader, path: &str) -> Vec<&Route> {
        self.routes
            .iter()
            .filter(|r| r.matcher.matches_head(req, path))
            .collect()
    }

    /// What the start-up and reload lines say about this config: `4 routes, cache: memory`.
    pub fn summary(&self) -> String {
        let n = self.routes.len();
        let routes = if n == 1 { "route" } else { "routes" };
        let cache = if self.routes.iter().any(|r| r.cache.enabled) {
            describe_cache(&self.cache)
        } else {
            "off".into()
        };
        format!("{n} {routes}, cache: {cache}")
    }
}

/// The cache store in a few words: `memory`, `redis HOST:PORT` or `redis cluster, N nodes`.
/// Never a password: only the address is shown.
pub fn describe_cache(cache: &CacheSpec) -> String {
    match cache.backend {
        CacheBackend::Memory => "memory".into(),
        CacheBackend::Redis => match redis_url::parse(&cache.redis) {
            Ok(urls) if urls.cluster => format!("redis cluster, {} nodes", urls.nodes.len()),
            Ok(urls) => format!("redis {}", urls.nodes[0].addr),
            // Validation parsed it already; not expected.
            Err(_) => "redis".into(),
        },
    }
}
