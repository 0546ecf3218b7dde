//! What may be cached for a request: the route's cache settings ([`RouteCache`], resolved with
//! the config), the request's own controls (`Cache-Control`, `x-promptgate-cache`,
//! `x-promptgate-ttl`), and the credential scope.

use super::key::{self, CacheKey, KeyInput, KeyMemo, Probe};
use crate::body::ParsedBody;
use crate::config::schema::CacheScope;
use crate::config::RouteCache;
use http::HeaderName;
use pingora::http::RequestHeader;
use std::time::Duration;

/// Headers (and the `key` query parameter) that carry a client credential.
/// (Parsed names: a lookup by `&str` parses the name on every request.)
const CREDENTIAL_HEADERS: [HeaderName; 4] = [
    http::header::AUTHORIZATION,
    HeaderName::from_static("x-api-key"),
    HeaderName::from_static("x-goog-api-key"),
    HeaderName::from_static("api-key"),
];

/// `x-promptgate-cache: bypass` skips the cache.
const CACHE_CONTROL_HEADER: HeaderName = HeaderName::from_static("x-promptgate-cache");
/// `x-promptgate-ttl: SECONDS` sets the entry's TTL.
const TTL_HEADER: HeaderName = HeaderName::from_static("x-promptgate-ttl");

/// What the request itself allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestControls {
    pub lookup: bool,
    pub store: bool,
    /// `x-promptgate-ttl`, overriding the route's TTL.
    pub ttl: Option<Duration>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("x-promptgate-ttl must be a whole number of seconds, got {0:?}")]
pub struct BadTtl(pub String);

/// Reads the request's cache controls.
pub fn controls(req: &RequestHeader) -> Result<RequestControls, BadTtl> {
    let mut c = RequestControls {
        lookup: true,
        store: true,
        ttl: None,
    };
    for value in req.headers.get_all(http::header::CACHE_CONTROL) {
        for directive in value.to_str().unwrap_or("").split(',') {
            match directive.trim().to_ascii_lowercase().as_str() {
                "no-store" => {
                    c.lookup = false;
                    c.store = false;
                }
                "no-cache" => c.lookup = false,
                _ => {}
            }
        }
    }
    // Every line of a repeated control counts, as for `Cache-Control`: a `bypass` on any line
    // bypasses, and of several TTLs the shortest holds (when unsure, keep less).
    let marks = req.headers.get_all(&CACHE_CONTROL_HEADER);
    if marks
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"bypass"))
    {
        c.lookup = false;
        c.store = false;
    }
    for v in req.headers.get_all(&TTL_HEADER) {
        let text = v.to_str().unwrap_or("").trim();
        let secs: u64 = text.parse().map_err(|_| BadTtl(text.to_string()))?;
        if secs == 0 {
            c.store = false;
        }
        let ttl = Duration::from_secs(secs);
        c.ttl = Some(c.ttl.map_or(ttl, |t| t.min(ttl)));
    }
    Ok(c)
}

/// The key scope: `"shared"`, or a hash of the client's credentials so one API key never reads
/// another's entries. The credential itself never leaves this module.
pub fn scope(req: &RequestHeader, scope: CacheScope) -> String {
    if scope == CacheScope::Shared {
        return "shared".to_string();
    }
    credential_hash(req).to_hex().to_string()
}

/// The hash of the client's credentials (every credential header, and a `key=` query
/// parameter): the cache scope, and the bucket of a per-credential rate limit.
pub fn credential_hash(req: &RequestHeader) -> blake3::Hash {
    let mut material = Vec::with_capacity(128);
    credentials(req, &mut material);
    blake3::hash(&material)
}

/// Appends what [`credential_hash`] hashes: the credential headers and `key=` parameters,
/// framed (gathered first, then hashed in one call: the same hash as hashing each piece).
fn credentials(req: &RequestHeader, out: &mut Vec<u8>) {
    out.extend_from_slice(b"promptgate-scope-v1");
    for name in &CREDENTIAL_HEADERS {
        for v in req.headers.get_all(name) {
            out.extend_from_slice(name.as_str().as_bytes());
            out.push(0);
            out.extend_from_slice(v.as_bytes());
            out.push(0);
        }
    }
    if let Some(q) = req.uri.query() {
        for pair in q.split('&').filter(|p| p.starts_with("key=")) {
            out.push(b'?');
            out.extend_from_slice(pair.as_bytes());
            out.push(0);
        }
    }
}

/// The cache key of a request on a route with cache settings `policy`; through `memo` when
/// given (the proxy's: a repeated body is canonicalised once).
pub fn request_key(
    req: &RequestHeader,
    route: &str,
    policy: &RouteCache,
    path: &str,
    body: &ParsedBody<'_>,
    memo: Option<&KeyMemo>,
) -> CacheKey {
    let inputs = KeyInputs::new(req, route, policy, path, body);
    match memo {
        Some(memo) => memo.derive(&inputs.input()),
        None => key::derive(&inputs.input()),
    }
}

/// A request's cache key inputs, gathered from its head once: looked up in the key memo
/// before the body is parsed ([`KeyMemo::probe`]), then finished into the key.
pub struct KeyInputs<'r, 'b> {
    req: &'r RequestHeader,
    route: &'r str,
    policy: &'r RouteCache,
    path: &'r str,
    body: &'r ParsedBody<'b>,
    /// Computed only when the key is (a memo hit needs no scope: see [`KeyInputs::probe`]).
    scope: std::sync::OnceLock<String>,
    vary: Vec<(&'r str, &'r [u8])>,
}

impl<'r, 'b> KeyInputs<'r, 'b> {
    pub fn new(
        req: &'r RequestHeader,
        route: &'r str,
        policy: &'r RouteCache,
        path: &'r str,
        body: &'r ParsedBody<'b>,
    ) -> KeyInputs<'r, 'b> {
        let vary: Vec<(&str, &[u8])> = policy
            .vary
            .iter()
            .flat_map(|name| {
                req.headers
                    .get_all(name)
                    .iter()
                    .map(move |v| (name.as_str(), v.as_bytes()))
            })
            .collect();
        KeyInputs {
            req,
            route,
            policy,
            path,
            body,
            scope: std::sync::OnceLock::new(),
            vary,
        }
    }

    /// Looks these inputs up in `memo` without computing the scope: the memo's id takes what
    /// the scope is made of instead (`"shared"`, or the credentials themselves, which
    /// determine their hash), so no credential hash is computed for a memo hit.
    pub fn probe(&self, memo: &KeyMemo) -> Probe {
        let mut source = Vec::with_capacity(128);
        match self.policy.scope {
            CacheScope::Shared => source.extend_from_slice(b"shared"),
            CacheScope::Credential => credentials(self.req, &mut source),
        }
        memo.probe_by_scope_source(&self.input_with_scope(""), &source)
    }

    /// The key of the inputs `probe` looked up (the memo's, or derived and remembered).
    pub fn key(&self, memo: &KeyMemo, probe: Probe) -> CacheKey {
        // A memo hit: no input (and so no scope) to compute.
        match probe.known_key() {
            Some(key) => key,
            None => memo.key(probe, &self.input()),
        }
    }

    /// The inputs as the key contract reads them.
    pub fn input(&self) -> KeyInput<'_, 'b> {
        let scope = self
            .scope
            .get_or_init(|| scope(self.req, self.policy.scope));
        self.input_with_scope(scope)
    }

    fn input_with_scope<'s>(&'s self, scope: &'s str) -> KeyInput<'s, 'b> {
        KeyInput {
            scope,
            route: self.route,
            method: self.req.method.as_str(),
            path: self.path,
            query: self.req.uri.query(),
            vary: &self.vary,
            content_type: self
                .req
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            body: self.body,
            ignore_fields: &self.policy.ignore_fields,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)], uri: &str) -> RequestHeader {
        let mut r = RequestHeader::build("POST", uri.as_bytes(), None).unwrap();
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn request_controls() {
        let c = |h: &[(&str, &str)]| controls(&req(h, "/")).unwrap();
        assert_eq!(
            c(&[]),
            RequestControls {
                lookup: true,
                store: true,
                ttl: None
            }
        );
        assert_eq!(
            c(&[("cache-control", "no-cache")]),
            RequestControls {
                lookup: false,
                store: true,
                ttl: None
            }
        );
        assert_eq!(
            c(&[("cache-control", "max-age=0, No-Store")]),
            RequestControls {
                lookup: false,
                store: false,
                ttl: None
            }
        );
        assert_eq!(
            c(&[("x-promptgate-cache", "BYPASS")]),
            RequestControls {
                lookup: false,
                store: false,
                ttl: None
            }
        );
        assert_eq!(
            c(&[("x-promptgate-ttl", "60")]).ttl,
            Some(Duration::from_secs(60))
        );
        assert!(!c(&[("x-promptgate-ttl", "0")]).store);
        // repeated lines: any bypass bypasses, the shortest TTL holds, 0 on any line stores not
        let twice = c(&[
            ("x-promptgate-cache", "miss"),
            ("x-promptgate-cache", "bypass"),
        ]);
        assert!(!twice.lookup && !twice.store);
        let ttls = [("x-promptgate-ttl", "600"), ("x-promptgate-ttl", "60")];
        assert_eq!(c(&ttls).ttl, Some(Duration::from_secs(60)));
        assert!(!c(&[("x-promptgate-ttl", "60"), ("x-promptgate-ttl", "0")]).store);
        assert_eq!(
            controls(&req(
                &[("x-promptgate-ttl", "60"), ("x-promptgate-ttl", "x")],
                "/"
            )),
            Err(BadTtl("x".into()))
        );
        assert_eq!(
            controls(&req(&[("x-promptgate-ttl", "1h")], "/")),
            Err(BadTtl("1h".into()))
        );
    }

    /// The proxy's way to a key (memo probed by what the scope is made of, then finished)
    /// gives what the key contract gives, cold and warm, and keeps credentials apart.
    #[test]
    fn keys_through_the_memo_by_scope_source_are_the_contracts() {
        use crate::config::schema::CacheSpec;
        let memo = KeyMemo::new();
        let body = ParsedBody::new(br#"{"model":"m","messages":[]}"#);
        let mut seen = Vec::new();
        for scope_kind in [CacheScope::Shared, CacheScope::Credential] {
            let mut policy = RouteCache::resolve(&CacheSpec::default(), &Default::default())
                .expect("the defaults resolve");
            policy.scope = scope_kind;
            for headers in [
                &[("authorization", "Bearer sk-a")][..],
                &[("authorization", "Bearer sk-b")][..],
                &[("x-api-key", "sk-a")][..],
                &[][..],
            ] {
                for uri in ["/v1/chat/completions", "/v1/chat/completions?key=sk-a"] {
                    let r = req(headers, uri);
                    let want =
                        request_key(&r, "openai", &policy, "/v1/chat/completions", &body, None);
                    for round in ["cold", "warm"] {
                        let inputs =
                            KeyInputs::new(&r, "openai", &policy, "/v1/chat/completions", &body);
                        let probe = inputs.probe(&memo);
                        // (Cold only the first time: shared, other credentials are warm.)
                        if round == "warm" {
                            assert_eq!(probe.parses(), Some(true));
                        }
                        assert_eq!(inputs.key(&memo, probe), want, "{headers:?} {uri} {round}");
                    }
                    seen.push((scope_kind == CacheScope::Shared, want));
                }
            }
        }
        // Shared: one key for every credential; per credential: one key each.
        let shared: std::collections::HashSet<_> =
            seen.iter().filter(|s| s.0).map(|s| s.1).collect();
        let credential: std::collections::HashSet<_> =
            seen.iter().filter(|s| !s.0).map(|s| s.1).collect();
        assert_eq!(shared.len(), 1);
        assert_eq!(credential.len(), 8);
        assert!(shared.is_disjoint(&credential));
    }

    #[test]
    fn scope_separates_credentials_and_hides_them() {
        let a = scope(
            &req(&[("authorization", "Bearer sk-a")], "/"),
            CacheScope::Credential,
        );
        let b = scope(
            &req(&[("authorization", "Bearer sk-b")], "/"),
            CacheScope::Credential,
        );
        let x = scope(&req(&[("x-api-key", "sk-a")], "/"), CacheScope::Credential);
        let q = scope(&req(&[], "/v1?key=sk-a"), CacheScope::Credential);
        let none = scope(&req(&[], "/"), CacheScope::Credential);
        let all = [&a, &b, &x, &q, &none];
        for (i, s) in all.iter().enumerate() {
            assert!(!s.contains("sk-"));
            for t in &all[i + 1..] {
                assert_ne!(s, t);
            }
        }
        assert_eq!(
            scope(
                &req(&[("authorization", "Bearer sk-a")], "/"),
                CacheScope::Shared
            ),
            "shared"
        );
    }
}
