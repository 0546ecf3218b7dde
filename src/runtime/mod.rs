//! The running state built from one config: listeners, routes, cache policy, prices, logging.
//!
//! A `Runtime` is built from a validated [`crate::config::Spec`] ([`build`], or [`load`] for a
//! file) and swapped whole on reload; each request loads one snapshot at its start and keeps
//! it to its end.

mod build;

pub use build::{build, load};

use crate::config::schema::{CacheSpec, ConfigSpec, LogSpec, ReloadSpec};
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
}
