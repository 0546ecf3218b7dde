//! Routes and route matching: which route a request belongs to, and where it may go.

pub mod balance;
pub mod pool;
pub mod upstream;

use crate::config::schema::{PriorityGroup, PromptCaching, RetrySpec, Strategy};
use crate::config::RouteCache;
use crate::limits::RouteLimit;
use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use std::sync::Arc;
use upstream::Upstream;
use wildmatch::WildMatch;

#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub matcher: Matcher,
    /// The prefix to remove from the path before forwarding, when `strip_prefix` is set.
    pub strip: Option<String>,
    pub targets: Vec<Target>,
    /// Priority groups, chosen per request (see `balance`).
    pub groups: Vec<(PriorityGroup, Vec<Target>)>,
    pub strategy: Strategy,
    pub retry: RetrySpec,
    pub cache: RouteCache,
    /// The upstream named by `cache.semantic.upstream`, when the route has a semantic cache.
    pub embedder: Option<Arc<Upstream>>,
    /// What the cache key calls this route: its name, plus its targets' model rewrites, so a
    /// route re-targeted to another model never serves the old model's answers.
    pub key_name: String,
    /// Tunnel WebSocket upgrades (`routes[N].websocket`); refused when false.
    pub websocket: bool,
    /// `rate_limit:`, when set.
    pub rate_limit: Option<Arc<RouteLimit>>,
    /// `prompt_caching:`: whether Anthropic targets get cache breakpoints.
    pub prompt_caching: PromptCaching,
}

#[derive(Debug, Default)]
pub struct Matcher {
    pub path_prefix: Option<String>,
    /// Lowercase host without port.
    pub host: Option<String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub model: Option<WildMatch>,
}

#[derive(Debug, Clone)]
pub struct Target {
    pub upstream: Arc<Upstream>,
    /// Replacement for the JSON body's `model`.
    pub model: Option<String>,
    /// Share of first picks under `strategy: weighted`.
    pub weight: u32,
}

/// True when `path` is `prefix` or continues it at a segment boundary.
fn has_path_prefix(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.is_empty(),
        None => false,
    }
}

/// The `Host` of a request (h1 `Host` header or h2 `:authority`), lowercase, without port.
fn request_host(req: &RequestHeader) -> Option<String> {
    let raw = req
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))?;
    let host = match raw.rfind(':') {
        // keep IPv6 literals like [::1] whole
        Some(i) if !raw[i..].contains(']') => &raw[..i],
        _ => raw,
    };
    Some(host.to_ascii_lowercase())
}

impl Matcher {
    /// Checks every criterion that does not need the request body.
    pub fn matches_head(&self, req: &RequestHeader, path: &str) -> bool {
        if let Some(prefix) = &self.path_prefix {
            if !has_path_prefix(path, prefix) {
                return false;
            }
        }
        if let Some(host) = &self.host {
            if request_host(req).as_deref() != Some(host.as_str()) {
                return false;
            }
        }
        self.headers
            .iter()
            .all(|(name, value)| req.headers.get_all(name).iter().any(|v| v == value))
    }

    pub fn matches_model(&self, model: Option<&str>) -> bool {
        match (&self.model, model) {
            (None, _) => true,
            (Some(glob), Some(model)) => glob.matches(model),
            (Some(_), None) => false,
        }
    }
}

impl Route {
    pub fn group(&self, group: PriorityGroup) -> Option<&[Target]> {
        self.groups
            .iter()
            .find(|(g, _)| *g == group)
            .map(|(_, t)| t.as_slice())
    }

    /// The path to forward: `path` without the route prefix when stripping, always starting with `/`.
    pub fn forward_path<'a>(&self, path: &'a str) -> &'a str {
        let Some(prefix) = &self.strip else {
            return path;
        };
        let rest = &path[prefix.trim_end_matches('/').len().min(path.len())..];
        if rest.is_empty() {
            "/"
        } else {
            rest
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::CacheSpec;

    #[test]
    fn path_prefix_respects_segment_boundaries() {
        assert!(has_path_prefix("/openai", "/openai"));
        assert!(has_path_prefix("/openai/v1/chat", "/openai"));
        assert!(has_path_prefix("/openai/v1/chat", "/openai/"));
        assert!(!has_path_prefix("/openaix/v1", "/openai"));
        assert!(!has_path_prefix("/anthropic", "/openai"));
        assert!(has_path_prefix("/anything", "/"));
    }

    fn route(strip: Option<&str>) -> Route {
        Route {
            name: "r".into(),
            matcher: Matcher::default(),
            strip: strip.map(String::from),
            targets: vec![],
            groups: vec![],
            strategy: Strategy::Failover,
            retry: RetrySpec::default(),
            cache: RouteCache::resolve(&CacheSpec::default(), &Default::default()).unwrap(),
            embedder: None,
            key_name: "r".into(),
            websocket: true,
            rate_limit: None,
            prompt_caching: PromptCaching::Off,
        }
    }

    #[test]
    fn strips_prefix_to_a_rooted_path() {
        assert_eq!(
            route(Some("/openai")).forward_path("/openai/v1/chat"),
            "/v1/chat"
        );
        assert_eq!(route(Some("/openai")).forward_path("/openai"), "/");
        assert_eq!(route(Some("/openai/")).forward_path("/openai/v1"), "/v1");
        assert_eq!(route(None).forward_path("/openai/v1"), "/openai/v1");
    }

    #[test]
    fn matches_host_headers_and_model() {
        let m = Matcher {
            path_prefix: Some("/v1".into()),
            host: Some("api.local".into()),
            headers: vec![(
                HeaderName::from_static("x-team"),
                HeaderValue::from_static("a"),
            )],
            model: Some(WildMatch::new("gpt-4*")),
        };
        let mut req = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
        req.insert_header("host", "API.local:8080").unwrap();
        assert!(
            !m.matches_head(&req, "/v1/chat/completions"),
            "header missing"
        );
        req.insert_header("x-team", "a").unwrap();
        assert!(m.matches_head(&req, "/v1/chat/completions"));
        assert!(!m.matches_head(&req, "/v2/chat"));
        assert!(m.matches_model(Some("gpt-4o-mini")));
        assert!(!m.matches_model(Some("claude-3")));
        assert!(!m.matches_model(None));
    }
}
