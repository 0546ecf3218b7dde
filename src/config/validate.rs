//! Validation: typed sections → a [`Spec`], checking every value and cross-reference.

use super::ca_file;
use super::redis_url;
use super::schema::{
    self, CacheBackend, CacheSpec, ConfigSpec, LimitsSpec, LogSpec, PriceSpec, Provider,
    ReloadSpec, RetryOn, RouteSpec, TargetSpec, UpstreamSpec, TOP_LEVEL_KEYS,
};
use super::secret::Secret;
use super::spec::{self, RouteCache, Spec, PRIORITY_HEADER};
use super::Sections;
use crate::headers;
use http::{HeaderName, HeaderValue, Uri};
use serde::Deserialize;
use serde_yaml::Value;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Deserialize)]
struct HumanDuration(#[serde(with = "humantime_serde")] Duration);

pub(super) fn validate(s: &mut Sections, root: Value) -> Option<Spec> {
    let Value::Mapping(mut map) = root else {
        s.problem("", "the config must be a YAML mapping (key: value pairs)");
        return None;
    };
    let keys: Vec<String> = map
        .keys()
        .map(|k| k.as_str().unwrap_or("?").to_string())
        .collect();
    for key in keys
        .iter()
        .filter(|k| !TOP_LEVEL_KEYS.contains(&k.as_str()))
    {
        s.problem(
            key.as_str(),
            format!(
                "unknown field `{key}`, expected one of {}",
                TOP_LEVEL_KEYS.join(", ")
            ),
        );
    }
    let mut take = |key: &str| map.remove(key);

    let listen = address(s, "listen", take("listen"), schema::default_listen());
    let admin = address(s, "admin", take("admin"), schema::default_admin());
    if let (Some(l), Some(a)) = (listen, admin) {
        if l == a {
            s.problem("admin", format!("must differ from listen ({l})"));
        }
    }
    let threads = take("threads")
        .and_then(|v| s.typed::<usize>("threads", v))
        .unwrap_or(0);
    if threads > 1024 {
        s.problem("threads", "at most 1024 (0 means one per core)");
    }
    let shutdown_grace = take("shutdown_grace")
        .and_then(|v| s.typed::<HumanDuration>("shutdown_grace", v))
        .map(|d| d.0)
        .unwrap_or_else(schema::default_shutdown_grace);
    let upgrade_sock = take("upgrade_sock")
        .and_then(|v| s.typed::<String>("upgrade_sock", v))
        .unwrap_or_else(schema::default_upgrade_sock);
    check_upgrade_sock(s, &upgrade_sock);
    let limits = take("limits")
        .and_then(|v| s.typed::<LimitsSpec>("limits", v))
        .unwrap_or_default();
    if limits.max_body_bytes == 0 {
        s.problem("limits.max_body_bytes", "must be greater than 0");
    }
    let cache = take("cache")
        .and_then(|v| s.typed::<CacheSpec>("cache", v))
        .unwrap_or_default();
    if let Err(problems) = RouteCache::resolve(&cache, &Default::default()) {
        for (field, message) in problems {
            s.problem(format!("cache.{field}"), message);
        }
    }
    if cache.backend == CacheBackend::Redis {
        if let Err(e) = redis_url::parse(&cache.redis) {
            let field = if cache.redis.cluster.is_empty() {
                "cache.redis.url"
            } else {
                "cache.redis.cluster"
            };
            s.problem(field, e.to_string());
        }
    }
    if cache.memory.max_bytes == 0 {
        s.problem("cache.memory.max_bytes", "must be greater than 0");
    }
    let reload = take("reload")
        .and_then(|v| s.typed::<ReloadSpec>("reload", v))
        .unwrap_or_default();

    let pricing = take("pricing")
        .and_then(|v| s.typed::<BTreeMap<String, PriceSpec>>("pricing", v))
        .unwrap_or_default();
    for (pattern, price) in &pricing {
        for (field, value) in [
            ("input_per_mtok", price.input_per_mtok),
            ("output_per_mtok", price.output_per_mtok),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                s.problem(format!("pricing.{pattern}.{field}"), "must be a number ≥ 0");
            }
        }
        for (field, value) in [
            ("cache_read_per_mtok", price.cache_read_per_mtok),
            ("cache_write_per_mtok", price.cache_write_per_mtok),
        ] {
            if value.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                s.problem(format!("pricing.{pattern}.{field}"), "must be a number ≥ 0");
            }
        }
    }
    let prompt_cache_min_tokens = take("prompt_cache_min_tokens")
        .and_then(|v| s.typed::<BTreeMap<String, u64>>("prompt_cache_min_tokens", v))
        .unwrap_or_default();
    for (pattern, tokens) in &prompt_cache_min_tokens {
        if *tokens == 0 {
            s.problem(
                format!("prompt_cache_min_tokens.{pattern}"),
                "must be at least 1 (the provider caches nothing shorter than its minimum)",
            );
        }
    }
    let log = take("log")
        .and_then(|v| s.typed::<LogSpec>("log", v))
        .unwrap_or_default();
    // An empty token (e.g. `${ADMIN_TOKEN:-}` with the variable unset) means none.
    let admin_token = take("admin_token")
        .and_then(|v| s.typed::<Secret<String>>("admin_token", v))
        .filter(|t| !t.expose().is_empty());

    // The sections as written (defaults filled in) for `GET /config`. Re-read from the tree
    // rather than threaded through the builders below; only used when the file is valid, and
    // then these parse.
    let upstreams_value = take("upstreams");
    let routes_value = take("routes");
    fn as_spec<T: serde::de::DeserializeOwned + Default>(v: &Option<Value>) -> T {
        v.clone()
            .and_then(|v| serde_yaml::from_value(v).ok())
            .unwrap_or_default()
    }
    let sections = ConfigSpec {
        listen: listen.map(|a| a.to_string()).unwrap_or_default(),
        admin: admin.map(|a| a.to_string()).unwrap_or_default(),
        admin_token: admin_token.clone(),
        threads,
        shutdown_grace,
        limits: limits.clone(),
        upstreams: as_spec(&upstreams_value),
        routes: as_spec(&routes_value),
        cache: cache.clone(),
        reload: reload.clone(),
        pricing: pricing.clone(),
        prompt_cache_min_tokens: prompt_cache_min_tokens.clone(),
        log,
    };

    let (upstreams, broken) = upstreams(s, upstreams_value);
    let routes = routes(s, routes_value, &upstreams, &broken, &cache);

    Some(Spec {
        listen: listen?,
        admin: admin?,
        threads,
        shutdown_grace,
        upgrade_sock,
        max_body_bytes: limits.max_body_bytes,
        upstreams,
        routes,
        cache,
        reload,
        pricing,
        prompt_cache_min_tokens,
        log,
        admin_token,
        sections: Arc::new(sections),
    })
}

/// A Unix socket path must be absolute (both processes may run from different directories)
/// and fit `sockaddr_un.sun_path` (108 bytes with its NUL); Pingora panics on a path it cannot bind.
fn check_upgrade_sock(s: &mut Sections, path: &str) {
    const SUN_PATH_MAX: usize = 107;
    if !path.starts_with('/') {
        s.problem(
            "upgrade_sock",
            format!("{path:?} must be an absolute path (e.g. \"/run/promptgate/upgrade.sock\")"),
        );
    } else if path.len() > SUN_PATH_MAX {
        s.problem(
            "upgrade_sock",
            format!(
                "is {} bytes long; a Unix socket path has at most {SUN_PATH_MAX}",
                path.len()
            ),
        );
    }
}

fn address(
    s: &mut Sections,
    path: &str,
    value: Option<Value>,
    default: String,
) -> Option<SocketAddr> {
    let text = match value {
        Some(v) => s.typed::<String>(path, v)?,
        None => default,
    };
    match text.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            s.problem(
                path,
                format!("{text:?} is not an IP:port address (e.g. \"127.0.0.1:8080\")"),
            );
            None
        }
    }
}

/// Checks every upstream; returns the valid ones and the names of the others (so routes
/// naming them are not also reported as naming an unknown upstream).
fn upstreams(
    s: &mut Sections,
    value: Option<Value>,
) -> (BTreeMap<String, spec::Upstream>, HashSet<String>) {
    let mut built = BTreeMap::new();
    let mut broken = HashSet::new();
    let entries = match value {
        None | Some(Value::Null) => return (built, broken),
        Some(Value::Mapping(m)) => m,
        Some(_) => {
            s.problem(
                "upstreams",
                "must be a mapping of name → {url, headers, timeouts}",
            );
            return (built, broken);
        }
    };
    for (key, value) in entries {
        let name = key.as_str().unwrap_or("?").to_string();
        let path = format!("upstreams.{name}");
        match s
            .typed::<UpstreamSpec>(&path, value)
            .and_then(|spec| upstream(s, &path, spec))
        {
            Some(u) => {
                built.insert(name, u);
            }
            None => {
                broken.insert(name);
            }
        }
    }
    (built, broken)
}

fn upstream(s: &mut Sections, path: &str, spec: UpstreamSpec) -> Option<spec::Upstream> {
    let before = s.problems.len();
    let url_path = format!("{path}.url");
    let uri: Option<Uri> = match spec.url.parse::<Uri>() {
        Ok(u) => Some(u),
        Err(e) => {
            s.problem(&url_path, format!("{:?} is not a URL: {e}", spec.url));
            None
        }
    };
    let mut parts = None;
    if let Some(uri) = uri {
        let tls = match uri.scheme_str() {
            Some("https") => Some(true),
            Some("http") => Some(false),
            _ => {
                s.problem(&url_path, "must start with http:// or https://");
                None
            }
        };
        let host = uri.host().filter(|h| !h.is_empty());
        if host.is_none() {
            s.problem(&url_path, "has no host");
        }
        if uri.query().is_some() {
            s.problem(&url_path, "must not have a query string");
        }
        if let (Some(tls), Some(host)) = (tls, host) {
            let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
            let base = uri.path().trim_end_matches('/').to_string();
            parts = Some((tls, host.to_ascii_lowercase(), port, base));
        }
    }
    let mut headers = Vec::new();
    for (raw_name, value) in &spec.headers {
        let hpath = format!("{path}.headers.{raw_name}");
        let Ok(hname) = HeaderName::from_bytes(raw_name.as_bytes()) else {
            s.problem(&hpath, "is not a valid header name");
            continue;
        };
        if !headers::is_injectable(hname.as_str()) {
            s.problem(&hpath, "is set by promptgate itself and cannot be injected");
            continue;
        }
        // HeaderValue rejects CR, LF and NUL, so an env value can never split a header.
        match HeaderValue::from_str(value.expose()) {
            Ok(mut v) => {
                v.set_sensitive(true);
                headers.push((hname, Secret::new(v)));
            }
            Err(_) => s.problem(
                &hpath,
                "value contains characters not allowed in a header (control characters or newlines)",
            ),
        }
    }
    if spec.health.failures > 0 && spec.health.cooldown.is_zero() {
        s.problem(format!("{path}.health.cooldown"), "must be greater than 0");
    }
    let t = &spec.timeouts;
    for (field, d) in [
        ("connect", t.connect),
        ("first_byte", t.first_byte),
        ("idle", t.idle),
        ("write", t.write),
    ] {
        if d.is_zero() {
            s.problem(format!("{path}.timeouts.{field}"), "must be greater than 0");
        }
    }
    let pool = &spec.pool;
    if pool.max_connections == 0 {
        s.problem(format!("{path}.pool.max_connections"), "must be at least 1");
    }
    if pool.max_streams == 0 {
        s.problem(format!("{path}.pool.max_streams"), "must be at least 1");
    }
    if pool.max_connections > 0 && pool.max_idle > pool.max_connections {
        s.problem(
            format!("{path}.pool.max_idle"),
            format!(
                "{} is more than max_connections ({}): idle connections are among the open ones",
                pool.max_idle, pool.max_connections
            ),
        );
    }
    let plain = matches!(parts, Some((false, ..)));
    for (field, set) in [
        ("ca_file", spec.tls.ca_file.is_some()),
        ("sni", spec.tls.sni.is_some()),
    ] {
        if set && plain {
            s.problem(
                format!("{path}.tls.{field}"),
                "applies to https:// upstreams only (the url is http://)",
            );
        }
    }
    let ca = match &spec.tls.ca_file {
        Some(file) if !plain => match ca_file::read(&ca_file::resolve(file, &s.base)) {
            Ok(bundle) => Some(Arc::new(bundle)),
            Err(e) => {
                s.problem(format!("{path}.tls.ca_file"), e.to_string());
                None
            }
        },
        _ => None,
    };
    if let Some(sni) = &spec.tls.sni {
        if pingora::tls::ServerName::try_from(sni.as_str()).is_err() {
            s.problem(
                format!("{path}.tls.sni"),
                format!("{sni:?} is not a DNS name or IP address"),
            );
        }
    }
    let (tls, host, port, base) = parts?;
    if s.problems.len() > before {
        return None;
    }
    let default_port = if tls { 443 } else { 80 };
    let host_header = if port == default_port {
        HeaderValue::from_str(&host)
    } else {
        HeaderValue::from_str(&format!("{host}:{port}"))
    };
    let Ok(host_header) = host_header else {
        s.problem(&url_path, "host is not valid in a Host header");
        return None;
    };
    Some(spec::Upstream {
        tls,
        port,
        base_path: base,
        host_header,
        headers,
        timeouts: spec.timeouts,
        health: spec.health,
        max_concurrent: spec.max_concurrent,
        queue_timeout: spec.queue_timeout,
        pool: spec.pool,
        http_version: spec.http_version,
        ca,
        sni: spec.tls.sni,
        provider: spec.provider.unwrap_or_else(|| Provider::of_host(&host)),
        host,
    })
}

fn routes(
    s: &mut Sections,
    value: Option<Value>,
    upstreams: &BTreeMap<String, spec::Upstream>,
    broken: &HashSet<String>,
    cache: &CacheSpec,
) -> Vec<spec::Route> {
    let items = match value {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Sequence(items)) => items,
        Some(_) => {
            s.problem("routes", "must be a list of routes");
            return Vec::new();
        }
    };
    let mut names = HashSet::new();
    let mut routes = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let path = format!("routes[{i}]");
        let Some(spec) = s.typed::<RouteSpec>(&path, item) else {
            continue;
        };
        if spec.name.is_empty() {
            s.problem(format!("{path}.name"), "must not be empty");
        } else if !names.insert(spec.name.clone()) {
            s.problem(
                format!("{path}.name"),
                format!("duplicate route name {:?}", spec.name),
            );
        }
        if let Some(r) = route(s, &path, spec, upstreams, broken, cache) {
            routes.push(r);
        }
    }
    routes
}

fn route(
    s: &mut Sections,
    path: &str,
    spec: RouteSpec,
    upstreams: &BTreeMap<String, spec::Upstream>,
    broken: &HashSet<String>,
    cache: &CacheSpec,
) -> Option<spec::Route> {
    let before = s.problems.len();
    let m = &spec.matcher;
    if let Some(prefix) = &m.path_prefix {
        if !prefix.starts_with('/') {
            s.problem(format!("{path}.match.path_prefix"), "must start with /");
        }
    }
    if spec.strip_prefix && m.path_prefix.is_none() {
        s.problem(
            format!("{path}.strip_prefix"),
            "needs match.path_prefix (there is nothing to strip)",
        );
    }
    let mut headers = Vec::new();
    for (name, value) in &m.headers {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(n), Ok(v)) => headers.push((n, v)),
            _ => s.problem(
                format!("{path}.match.headers.{name}"),
                "is not a valid header name and value",
            ),
        }
    }
    if spec.targets.is_empty() && spec.groups.is_empty() {
        s.problem(
            format!("{path}.targets"),
            "must name at least one upstream (or define groups)",
        );
    }
    let targets = targets(
        s,
        &format!("{path}.targets"),
        &spec.targets,
        upstreams,
        broken,
    );
    let mut groups = Vec::new();
    for (group, list) in &spec.groups {
        let gpath = format!("{path}.groups.{}", group.as_str());
        if list.is_empty() {
            s.problem(&gpath, "must name at least one upstream");
        }
        for (j, t) in list.iter().enumerate() {
            if t.model().is_none() {
                s.problem(
                    format!("{gpath}[{j}]"),
                    "a priority group's target must set `model` (clients may send an alias like \"auto:speed\")",
                );
            }
        }
        groups.push((*group, self::targets(s, &gpath, list, upstreams, broken)));
    }
    let retry = &spec.retry;
    if retry.attempts == 0 {
        s.problem(
            format!("{path}.retry.attempts"),
            "must be at least 1 (1 = no retry)",
        );
    }
    if retry.base > retry.max {
        s.problem(format!("{path}.retry.base"), "must not exceed retry.max");
    }
    if let Some(bad) = retry.on.iter().find_map(|o| match o {
        RetryOn::Status(code) if !(100..=599).contains(code) => Some(*code),
        _ => None,
    }) {
        s.problem(
            format!("{path}.retry.on"),
            format!("{bad} is not an HTTP status code"),
        );
    }
    if let Some(limit) = &spec.rate_limit {
        for (field, message) in limit.problems() {
            let at = if field.is_empty() {
                format!("{path}.rate_limit")
            } else {
                format!("{path}.rate_limit.{field}")
            };
            s.problem(at, message);
        }
    }
    let policy = RouteCache::resolve(cache, &spec.cache)
        .map_err(|problems| {
            for (field, message) in problems {
                s.problem(format!("{path}.cache.{field}"), message);
            }
        })
        .ok()
        .map(|mut policy| {
            // The priority header picks the group, and so the answer: it is part of the key.
            if !groups.is_empty() {
                policy.vary.push(HeaderName::from_static(PRIORITY_HEADER));
            }
            policy
        });
    if let Some(sem) = &spec.cache.semantic {
        if !upstreams.contains_key(&sem.upstream) && !broken.contains(&sem.upstream) {
            let known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
            s.problem(
                format!("{path}.cache.semantic.upstream"),
                format!(
                    "unknown upstream {:?} (defined: {})",
                    sem.upstream,
                    known.join(", ")
                ),
            );
        }
    }
    if s.problems.len() > before {
        return None;
    }
    let rewrites: Vec<&str> = targets
        .iter()
        .chain(groups.iter().flat_map(|(_, g)| g.iter()))
        .filter_map(|t| t.model.as_deref())
        .collect();
    let key_name = if rewrites.is_empty() {
        spec.name.clone()
    } else {
        format!("{}\0{}", spec.name, rewrites.join("\0"))
    };
    Some(spec::Route {
        key_name,
        websocket: spec.websocket,
        name: spec.name,
        matcher: spec::Match {
            path_prefix: m.path_prefix.clone(),
            host: m.host.as_ref().map(|h| h.to_ascii_lowercase()),
            headers,
            model: m.model.clone(),
        },
        strip: spec.strip_prefix.then(|| m.path_prefix.clone()).flatten(),
        targets,
        groups,
        strategy: spec.strategy,
        retry: spec.retry,
        cache: policy?,
        rate_limit: spec.rate_limit,
        prompt_caching: spec.prompt_caching,
    })
}

/// Checks a list of target specs against the upstreams, reporting unknown names.
fn targets(
    s: &mut Sections,
    path: &str,
    specs: &[TargetSpec],
    upstreams: &BTreeMap<String, spec::Upstream>,
    broken: &HashSet<String>,
) -> Vec<spec::Target> {
    let mut targets = Vec::new();
    for (j, t) in specs.iter().enumerate() {
        match upstreams.get(t.upstream()) {
            Some(_) => targets.push(spec::Target {
                upstream: t.upstream().to_string(),
                model: t.model().map(String::from),
                weight: t.weight(),
            }),
            None if broken.contains(t.upstream()) => {}
            None => {
                let known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
                s.problem(
                    format!("{path}[{j}]"),
                    format!(
                        "unknown upstream {:?} (defined: {})",
                        t.upstream(),
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
        }
    }
    targets
}

#[cfg(test)]
mod tests {
    use crate::config::schema::{RetryCondition, RetryOn};
    use crate::config::{parse, ConfigError, Problem, Spec};
    use std::time::Duration;

    fn env(name: &str) -> Option<String> {
        (name == "OPENAI_API_KEY").then(|| "sk-test".to_string())
    }

    fn ok(yaml: &str) -> Spec {
        parse(yaml, "test.yaml", &env).unwrap_or_else(|e| panic!("{e}"))
    }

    fn problems(yaml: &str) -> Vec<Problem> {
        match parse(yaml, "test.yaml", &env) {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    /// The smallest valid config: one upstream, one route (a file without routes is refused).
    const ROUTE: &str =
        "upstreams: {u: {url: \"http://127.0.0.1:1\"}}\nroutes: [{name: r, targets: [u]}]\n";

    fn with_route(yaml: &str) -> String {
        format!("{ROUTE}{yaml}")
    }

    const ISSUE_EXAMPLE: &str = r#"
listen: "127.0.0.1:8080"
admin: "127.0.0.1:9090"
limits:
  max_body_bytes: 33554432
upstreams:
  openai:
    url: https://api.openai.com
    headers:
      authorization: "Bearer ${OPENAI_API_KEY}"
routes:
  - name: openai
    match:
      path_prefix: /openai
    strip_prefix: true
    targets: [openai]
cache:
  enabled: true
  backend: memory
"#;

    #[test]
    fn accepts_the_documented_example() {
        let t = ok(ISSUE_EXAMPLE);
        assert_eq!(t.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(t.max_body_bytes, 32 * 1024 * 1024);
        let r = &t.routes[0];
        assert_eq!(r.strip.as_deref(), Some("/openai"));
        assert_eq!(r.targets[0].upstream, "openai");
        let u = &t.upstreams["openai"];
        assert!(u.tls);
        assert_eq!(
            (u.host.as_str(), u.port, u.base_path.as_str()),
            ("api.openai.com", 443, "")
        );
        assert_eq!(u.headers[0].1.expose().to_str().unwrap(), "Bearer sk-test");
        // secrets stay out of Debug output
        assert!(!format!("{t:?}").contains("sk-test"));
    }

    #[test]
    fn rate_limits_are_checked_with_their_paths() {
        let route = |limit: &str| {
            format!(
                "upstreams: {{ u: {{ url: \"http://127.0.0.1:1\" }} }}\nroutes:\n  - name: r\n    targets: [u]\n    rate_limit: {limit}\n"
            )
        };
        let t = ok(&route(
            "{ requests_per_minute: 6, usd_per_day: 2.5, key: route }",
        ));
        let limit = t.routes[0].rate_limit.as_ref().unwrap();
        assert_eq!(
            (limit.requests_per_minute, limit.usd_per_day, limit.key),
            (Some(6), Some(2.5), crate::config::schema::LimitKey::Route)
        );
        let paths =
            |yaml: String| -> Vec<String> { problems(&yaml).into_iter().map(|p| p.path).collect() };
        assert_eq!(
            paths(route("{ count_hits: true }")),
            ["routes[0].rate_limit"]
        );
        assert_eq!(
            paths(route("{ requests_per_minute: 0, usd_per_day: -1 }")),
            [
                "routes[0].rate_limit.requests_per_minute",
                "routes[0].rate_limit.usd_per_day"
            ]
        );
        for (bad, word) in [
            ("{ tokens_per_minute: 5, per_hour: 1 }", "per_hour"),
            ("{ requests_per_minute: 5, key: user }", "user"),
        ] {
            let found = problems(&route(bad));
            assert!(
                found.len() == 1 && found[0].message.contains(word),
                "{found:?}"
            );
        }
    }

    #[test]
    fn a_minimal_file_gets_defaults() {
        let t = ok(ROUTE);
        assert_eq!(t.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(t.admin.to_string(), "127.0.0.1:9090");
        assert_eq!(t.shutdown_grace.as_secs(), 10);
        assert_eq!(t.threads, 0, "as written: one per core");
        assert_eq!(t.routes.len(), 1);
        assert!(t.reload.watch, "the file is watched by default");
        assert_eq!(t.upgrade_sock, "/tmp/promptgate_upgrade.sock");
    }

    #[test]
    fn upgrade_sock_is_configurable_and_checked() {
        assert_eq!(
            ok(&with_route("upgrade_sock: /run/promptgate/upgrade.sock\n")).upgrade_sock,
            "/run/promptgate/upgrade.sock"
        );
        let p = problems(&with_route("upgrade_sock: upgrade.sock\n"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].path, "upgrade_sock");
        assert!(p[0].message.contains("absolute"), "{p:?}");
        let long = format!("upgrade_sock: /{}\n", "x".repeat(120));
        assert!(problems(&with_route(&long))[0]
            .message
            .contains("at most 107"));
    }

    #[test]
    fn reload_watch_can_be_turned_off_and_is_checked() {
        assert!(!ok(&with_route("reload:\n  watch: false\n")).reload.watch);
        let p = problems(&with_route("reload:\n  watch: sometimes\n"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].path.starts_with("reload"), "{p:?}");
        assert!(p[0].message.contains("true or false"), "{p:?}");
        assert!(p[0].line.is_some(), "{p:?}");
        let p = problems(&with_route("reload:\n  every: 5s\n"));
        assert!(p[0].message.contains("unknown field `every`"), "{p:?}");
    }

    #[test]
    fn detailed_targets_and_base_paths() {
        let t = ok(r#"
upstreams:
  local: {url: "http://127.0.0.1:11434/base/", timeouts: {connect: 250ms, read: 2m}}
routes:
  - name: r
    match: {model: "gpt-*", host: API.local, headers: {x-team: a}}
    targets: [{upstream: local, model: llama3}]
"#);
        let target = &t.routes[0].targets[0];
        assert_eq!(target.model.as_deref(), Some("llama3"));
        let u = &t.upstreams[&target.upstream];
        assert_eq!(
            (u.tls, u.port, u.base_path.as_str()),
            (false, 11434, "/base")
        );
        assert_eq!(u.host_header.to_str().unwrap(), "127.0.0.1:11434");
        assert_eq!(u.timeouts.connect.as_millis(), 250);
        // The deprecated `read` stands in for both first_byte and idle.
        assert_eq!(u.timeouts.first_byte.as_secs(), 120);
        assert_eq!(u.timeouts.idle.as_secs(), 120);
        assert_eq!(t.routes[0].matcher.host.as_deref(), Some("api.local"));
        assert_eq!(t.routes[0].matcher.model.as_deref(), Some("gpt-*"));
    }

    #[test]
    fn default_timeouts_and_retries_fit_llm_calls() {
        let t = ok("upstreams:\n  u: {url: \"http://127.0.0.1:1\"}\nroutes:\n  - {name: r, targets: [u]}\n");
        let u = &t.upstreams["u"].timeouts;
        assert_eq!(u.connect, Duration::from_secs(5));
        // As long as the official SDKs wait: a reasoning model may think for minutes.
        assert_eq!(u.first_byte, Duration::from_secs(600));
        assert_eq!(u.idle, Duration::from_secs(120));
        assert_eq!(u.write, Duration::from_secs(10));
        assert_eq!(u.pool_idle, Duration::from_secs(60));
        let on = &t.routes[0].retry.on;
        assert!(!on.contains(&RetryOn::Named(RetryCondition::Timeout)));
        for still in [
            RetryOn::Named(RetryCondition::Connect),
            RetryOn::Named(RetryCondition::Reset),
            RetryOn::Status(429),
            RetryOn::Status(503),
        ] {
            assert!(on.contains(&still), "{still:?}");
        }
        assert!(t.sections.warnings().is_empty());
    }

    #[test]
    fn the_old_read_timeout_still_works_with_a_warning() {
        let t = ok(r#"
upstreams:
  old: {url: "http://127.0.0.1:1", timeouts: {read: 45s, idle: 5s}}
  new: {url: "http://127.0.0.1:2", timeouts: {first_byte: 90s}}
routes: [{name: r, targets: [old, new]}]
"#);
        let old = &t.upstreams["old"].timeouts;
        // `read` fills in what is not given; an explicit `idle` wins.
        assert_eq!((old.first_byte.as_secs(), old.idle.as_secs()), (45, 5));
        let w = t.sections.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("upstreams.old.timeouts.read: deprecated"),
            "{w:?}"
        );
        assert!(
            w[0].contains("first_byte") && w[0].contains("idle"),
            "{w:?}"
        );
        let routes = "routes: [{name: r, targets: [u]}]\n";
        let p = problems(&format!(
            "upstreams:\n  u: {{url: \"http://127.0.0.1:1\", timeouts: {{first_byte: 0s}}}}\n{routes}"
        ));
        assert_eq!(p[0].path, "upstreams.u.timeouts.first_byte", "{p:?}");
        let p = problems(&format!(
            "upstreams:\n  u: {{url: \"http://127.0.0.1:1\", timeouts: {{reed: 5s}}}}\n{routes}"
        ));
        assert!(p[0].message.contains("unknown field `reed`"), "{p:?}");
        assert!(p[0].line.is_some(), "{p:?}");
    }

    #[test]
    fn reports_every_problem_with_path_and_line() {
        let p = problems(
            r#"listen: "nonsense"
upstreams:
  openai:
    url: ftp://x
  good:
    url: http://127.0.0.1:1
    headers:
      authorization: "Bearer ${MISSING_KEY}"
routes:
  - name: a
    targets: [openai]
  - name: a
    match: {path_prefix: nope}
    targets: [good, opnai]
  - name: c
    matchh: {}
    targets: [good]
bogus: 1
"#,
        );
        let text: Vec<String> = p
            .iter()
            .map(|p| format!("{}:{}: {}", p.line.unwrap_or(0), p.path, p.message))
            .collect();
        let has = |needle: &str| {
            assert!(
                text.iter().any(|t| t.contains(needle)),
                "{needle:?} not in {text:#?}"
            )
        };
        has("1:listen: \"nonsense\" is not an IP:port");
        has("4:upstreams.openai.url: must start with http");
        has("8:upstreams.good.headers.authorization: environment variable MISSING_KEY");
        has("12:routes[1].name: duplicate route name");
        has("13:routes[1].match.path_prefix: must start with /");
        has("14:routes[1].targets[1]: unknown upstream \"opnai\"");
        has("16:routes[2].matchh: unknown field `matchh`");
        has("18:bogus: unknown field `bogus`");
        // the broken upstream is reported once, not again for every route naming it
        assert!(
            !text
                .iter()
                .any(|t| t.contains("unknown upstream \"openai\"")),
            "{text:#?}"
        );
    }

    #[test]
    fn cache_settings_are_validated() {
        let p = problems(
            "cache:\n  backend: redis\n  ttl: 0s\n  vary: [\"bad header\"]\n  redis: { url: \"http://user:hunter2@x\" }\n",
        );
        let text = format!("{p:?}");
        assert!(text.contains("cache.ttl"), "{text}");
        assert!(text.contains("cache.vary[0]"), "{text}");
        assert!(text.contains("cache.redis.url"), "{text}");
        assert!(!text.contains("hunter2"), "the password leaked: {text}");
        let t = ok("upstreams: { u: { url: \"http://127.0.0.1:1\" } }\nroutes:\n  - name: r\n    targets: [u]\n    cache: { ttl: 1h, scope: shared }\n");
        assert_eq!(t.routes[0].cache.ttl.as_secs(), 3600);
        assert_eq!(
            t.routes[0].cache.scope,
            crate::config::schema::CacheScope::Shared
        );
        assert_eq!(t.routes[0].cache.ignore_fields, ["user", "metadata"]);
    }

    #[test]
    fn semantic_settings_have_defaults_and_are_validated() {
        let route = |semantic: &str| {
            format!(
                "upstreams: {{ u: {{ url: \"http://127.0.0.1:1\" }}, e: {{ url: \"http://127.0.0.1:2\" }} }}\nroutes:\n  - name: r\n    targets: [u]\n    cache: {{ semantic: {semantic} }}\n"
            )
        };
        let t = ok(&route("{ upstream: e, model: all-minilm }"));
        let r = &t.routes[0];
        let s = r.cache.semantic.as_ref().unwrap();
        assert_eq!(s.upstream, "e");
        assert_eq!(
            (s.path.as_str(), s.threshold, s.timeout.as_secs(), s.shadow),
            ("/v1/embeddings", 0.90, 1, false)
        );
        assert_eq!((s.max_per_context, s.max_chars), (64, 1000));
        let p = problems(&route(
            "{ upstream: nope, model: \" \", path: v1, threshold: 1.5, timeout: 0s, max_per_context: 0, max_chars: 0 }",
        ));
        let text = format!("{p:?}");
        for field in [
            "routes[0].cache.semantic.upstream",
            "routes[0].cache.semantic.model",
            "routes[0].cache.semantic.path",
            "routes[0].cache.semantic.threshold",
            "routes[0].cache.semantic.timeout",
            "routes[0].cache.semantic.max_per_context",
            "routes[0].cache.semantic.max_chars",
        ] {
            assert!(text.contains(field), "{field}: {text}");
        }
        let p = problems(&route("{ upstream: e }"));
        assert!(format!("{p:?}").contains("model"), "{p:?}");
        let p = problems(&route("{ upstream: e, model: m, treshold: 0.9 }"));
        assert!(format!("{p:?}").contains("treshold"), "{p:?}");
    }

    #[test]
    fn prompt_caching_providers_and_minimums() {
        use crate::config::schema::{PromptCaching, Provider};
        let t = ok(r#"
upstreams:
  claude: {url: "https://api.anthropic.com"}
  gw: {url: "https://gateway.local/anthropic", provider: anthropic}
  oai: {url: "https://API.openai.com/v1"}
  gem: {url: "https://generativelanguage.googleapis.com"}
  local: {url: "http://127.0.0.1:11434"}
routes:
  - {name: a, targets: [claude, gw], prompt_caching: auto}
  - {name: b, targets: [oai, gem, local], prompt_caching: off}
  - {name: c, targets: [local]}
  - {name: d, targets: [oai, local], prompt_caching: auto}
prompt_cache_min_tokens: {claude-3-5-haiku*: 4096}
"#);
        let provider = |n: &str| t.upstreams[n].provider;
        assert_eq!(provider("claude"), Provider::Anthropic);
        assert_eq!(provider("gw"), Provider::Anthropic);
        assert_eq!(provider("oai"), Provider::Openai);
        assert_eq!(provider("gem"), Provider::Gemini);
        assert_eq!(provider("local"), Provider::Other);
        let caching: Vec<_> = t.routes.iter().map(|r| r.prompt_caching).collect();
        assert_eq!(
            caching,
            [
                PromptCaching::Auto,
                PromptCaching::Off,
                PromptCaching::Off,
                PromptCaching::Auto
            ]
        );
        // `auto` on a route with no Anthropic target does nothing: `check` says so.
        let w = t.sections.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("routes[3].prompt_caching: auto has no effect"),
            "{w:?}"
        );
        assert_eq!(t.prompt_cache_min_tokens["claude-3-5-haiku*"], 4096);
        // GET /config shows what was written, no inferred provider.
        let shown = serde_json::to_string(&*t.sections).unwrap();
        assert!(shown.contains(r#""prompt_caching":"auto""#), "{shown}");
        assert!(shown.contains(r#""provider":"anthropic""#), "{shown}");
    }

    #[test]
    fn a_prefix_kept_in_front_of_a_url_ending_in_it_is_warned_about() {
        // docs/routing.md once shipped this: /v1/chat/completions went to Ollama's /v1/v1/….
        let t = ok(r#"
upstreams:
  openai: {url: "https://api.openai.com"}
  local: {url: "http://127.0.0.1:11434/v1/"}
  stripped: {url: "http://127.0.0.1:11434/v1"}
routes:
  - {name: small, match: {path_prefix: /v1, model: "gpt-4o-mini*"}, targets: [{upstream: local, model: llama3.2}, openai]}
  - {name: ok, match: {path_prefix: /v1}, strip_prefix: true, targets: [stripped]}
  - {name: other, match: {path_prefix: /v1beta}, targets: [stripped]}
  - {name: openai, match: {path_prefix: /v1}, targets: [openai]}
"#);
        let w = t.sections.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("routes[0].match.path_prefix: /v1 is kept"),
            "{w:?}"
        );
        assert!(w[0].contains("upstream local"), "{w:?}");
        assert!(w[0].contains("/v1/v1/chat/completions"), "{w:?}");
    }

    #[test]
    fn pricing_log_and_admin_token() {
        let t = ok(&with_route(
            r#"
admin_token: "${OPENAI_API_KEY}"
log: {format: json}
pricing:
  gpt-4o-mini*: {input_per_mtok: 1.5, output_per_mtok: 6}
  house-model: {input_per_mtok: 0.5, output_per_mtok: 0.5}
cache: {backend: redis, require_redis: true}
"#,
        ));
        assert_eq!(t.admin_token.as_ref().unwrap().expose(), "sk-test");
        assert_eq!(t.log.format, crate::config::schema::LogFormat::Json);
        assert_eq!(t.pricing["gpt-4o-mini*"].input_per_mtok, 1.5);
        assert_eq!(t.pricing["house-model"].output_per_mtok, 0.5);
        assert!(t.cache.require_redis);
        // the running config for GET /config: secrets redacted, defaults filled in
        let shown = serde_json::to_string(&*t.sections).unwrap();
        assert!(!shown.contains("sk-test"), "{shown}");
        assert!(shown.contains(r#""admin_token":"*****""#), "{shown}");
        assert!(shown.contains(r#""shutdown_grace":"10s""#), "{shown}");
        assert!(ok(&with_route("admin_token: \"\"\n")).admin_token.is_none());
        let p = problems(
            "pricing:\n  x: {input_per_mtok: -1, output_per_mtok: 1}\nlog: {format: xml}\n",
        );
        let text = format!("{p:?}");
        assert!(text.contains("pricing.x.input_per_mtok"), "{text}");
        assert!(text.contains("log"), "{text}");
        let p = problems("pricing:\n  x: {input: 1}\n");
        assert!(format!("{p:?}").contains("pricing"), "{p:?}");
    }

    #[test]
    fn the_running_config_redacts_injected_headers_and_redis_passwords() {
        let t = ok(r#"
upstreams:
  openai: {url: "https://api.openai.com", headers: {authorization: "Bearer ${OPENAI_API_KEY}"}}
routes: [{name: r, targets: [openai]}]
cache: {redis: {url: "redis://:hunter2@127.0.0.1:6379"}}
"#);
        let shown = serde_json::to_string(&*t.sections).unwrap();
        assert!(
            !shown.contains("sk-test") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert!(
            shown.contains("api.openai.com") && shown.contains(r#""name":"r""#),
            "{shown}"
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let p = problems("listen: [unclosed\nadmin: x\n");
        assert_eq!(p.len(), 1);
        assert!(p[0].line.is_some(), "{p:?}");
    }

    #[test]
    fn rejects_header_injection_and_framing_headers() {
        let p = problems(
            r#"
upstreams:
  u:
    url: http://127.0.0.1:1
    headers:
      x-key: "a\r\nx-evil: 1"
      content-length: "5"
routes: [{name: r, targets: [u]}]
"#,
        );
        assert_eq!(p.len(), 2, "{p:?}");
    }

    #[test]
    fn error_message_lists_file_and_lines() {
        let err = parse(&format!("threads: many\n{ROUTE}"), "conf/x.yaml", &env).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("invalid config conf/x.yaml: 1 problem"),
            "{msg}"
        );
        assert!(msg.contains("conf/x.yaml:1: threads:"), "{msg}");
    }
}
