//! Builds the running state from a validated config: upstreams (with their health, DNS cache
//! and concurrency slots), the routes that point at them, the price table, the prompt-cache
//! minimums.
//!
//! Validation happened in [`crate::config`]; building cannot fail. [`load`] is the one entry
//! for a config file (start-up, `check`, `warm`, reload); [`build`] for a spec in hand.

use super::Runtime;
use crate::config::{self, spec, ConfigError, Spec};
use crate::limits::RouteLimit;
use crate::pricing::Pricing;
use crate::providers::anthropic::CacheMinimums;
use crate::routing::upstream::Upstream;
use crate::routing::{Matcher, Route, Target};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use wildmatch::WildMatch;

/// Reads and validates the config file at `path` ([`config::load`]), then builds its runtime.
pub fn load(path: &Path) -> Result<Runtime, ConfigError> {
    config::load(path).map(|spec| build(&spec))
}

/// The running state for `spec`. Each upstream is built once and shared by every route that
/// targets it, so its passive health and concurrency cap count all of its traffic.
pub fn build(spec: &Spec) -> Runtime {
    let upstreams: BTreeMap<&str, Arc<Upstream>> = spec
        .upstreams
        .iter()
        .map(|(name, u)| (name.as_str(), Arc::new(Upstream::new(name.clone(), u))))
        .collect();
    let targets = |list: &[spec::Target]| -> Vec<Target> {
        list.iter()
            .map(|t| Target {
                upstream: upstreams
                    .get(t.upstream.as_str())
                    .expect("a validated spec's targets name defined upstreams")
                    .clone(),
                model: t.model.clone(),
                weight: t.weight,
            })
            .collect()
    };
    let routes = spec
        .routes
        .iter()
        .map(|r| Route {
            name: r.name.clone(),
            matcher: Matcher {
                path_prefix: r.matcher.path_prefix.clone(),
                host: r.matcher.host.clone(),
                headers: r.matcher.headers.clone(),
                model: r.matcher.model.as_deref().map(WildMatch::new),
            },
            strip: r.strip.clone(),
            targets: targets(&r.targets),
            groups: r
                .groups
                .iter()
                .map(|(group, list)| (*group, targets(list)))
                .collect(),
            strategy: r.strategy,
            retry: r.retry.clone(),
            cache: r.cache.clone(),
            embedder: r.cache.semantic.as_ref().map(|sem| {
                upstreams
                    .get(sem.upstream.as_str())
                    .expect("a validated spec's semantic upstream is defined")
                    .clone()
            }),
            key_name: r.key_name.clone(),
            websocket: r.websocket,
            rate_limit: r.rate_limit.as_ref().map(|l| Arc::new(RouteLimit::new(l))),
            prompt_caching: r.prompt_caching,
        })
        .collect();
    Runtime {
        listen: spec.listen,
        admin: spec.admin,
        threads: if spec.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            spec.threads
        },
        shutdown_grace: spec.shutdown_grace,
        upgrade_sock: spec.upgrade_sock.clone(),
        max_body_bytes: spec.max_body_bytes,
        routes,
        cache: spec.cache.clone(),
        reload: spec.reload.clone(),
        pricing: Arc::new(Pricing::new(&spec.pricing)),
        prompt_cache_minimums: Arc::new(CacheMinimums::new(&spec.prompt_cache_min_tokens)),
        log: spec.log,
        admin_token: spec.admin_token.clone(),
        sections: spec.sections.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(yaml: &str) -> Runtime {
        let env = |name: &str| (name == "KEY").then(|| "sk-test-build".to_string());
        build(&config::parse(yaml, "test.yaml", &env).unwrap_or_else(|e| panic!("{e}")))
    }

    /// One upstream and route, which every valid config needs.
    const ROUTE: &str =
        "upstreams: {u: {url: \"http://127.0.0.1:1\"}}\nroutes: [{name: r, targets: [u]}]\n";

    #[test]
    fn threads_zero_means_one_per_core() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(runtime(ROUTE).threads, cores);
        assert_eq!(runtime(&format!("threads: 3\n{ROUTE}")).threads, 3);
    }

    #[test]
    fn routes_share_one_upstream_and_resolve_targets() {
        let t = runtime(
            r#"
upstreams:
  a: {url: "https://api.example.com/v", headers: {authorization: "Bearer ${KEY}"}, max_concurrent: 2}
  b: {url: "http://127.0.0.1:1"}
routes:
  - name: one
    match: {model: "gpt-*"}
    targets: [a, {upstream: b, model: m, weight: 3}]
  - name: two
    groups: {speed: [{upstream: a, model: fast}]}
"#,
        );
        let (one, two) = (&t.routes[0], &t.routes[1]);
        assert!(Arc::ptr_eq(
            &one.targets[0].upstream,
            &two.group(config::schema::PriorityGroup::Speed).unwrap()[0].upstream
        ));
        let b = &one.targets[1];
        assert_eq!((b.upstream.name.as_str(), b.weight), ("b", 3));
        assert_eq!(b.model.as_deref(), Some("m"));
        assert_eq!(one.targets[0].upstream.path_for("/x"), "/v/x");
        assert!(one.matcher.matches_model(Some("gpt-4o")));
        assert!(!one.matcher.matches_model(Some("claude")));
        // The priority header is part of the key of a route with groups, and only there.
        let vary = |r: &Route| r.cache.vary.iter().any(|h| h == spec::PRIORITY_HEADER);
        assert!(!vary(one) && vary(two));
        assert!(
            !format!("{t:?}").contains("sk-test-build"),
            "secret in Debug"
        );
    }

    #[test]
    fn the_summary_names_routes_and_the_cache_store_without_passwords() {
        assert_eq!(runtime(ROUTE).summary(), "1 route, cache: memory");
        let two = ROUTE.replace("targets: [u]}]", "targets: [u]}, {name: s, targets: [u]}]");
        assert_eq!(runtime(&two).summary(), "2 routes, cache: memory");
        let off = format!("{ROUTE}cache: {{enabled: false}}\n");
        assert_eq!(runtime(&off).summary(), "1 route, cache: off");
        let redis = format!(
            "{ROUTE}cache: {{backend: redis, redis: {{url: \"redis://:hunter2@10.0.0.5:6380/2\"}}}}\n"
        );
        assert_eq!(
            runtime(&redis).summary(),
            "1 route, cache: redis 10.0.0.5:6380"
        );
        let cluster = format!(
            "{ROUTE}cache: {{backend: redis, redis: {{cluster: [\"redis://:pw@10.0.0.1:7000\", \"redis://:pw@10.0.0.2:7000\", \"redis://:pw@10.0.0.3:7000\"]}}}}\n"
        );
        assert_eq!(
            runtime(&cluster).summary(),
            "1 route, cache: redis cluster, 3 nodes"
        );
    }

    #[test]
    fn pricing_overrides_merge_over_the_defaults() {
        let t = runtime(&format!(
            "pricing:\n  house-model: {{input_per_mtok: 0.5, output_per_mtok: 2}}\n{ROUTE}"
        ));
        assert_eq!(t.pricing.lookup("house-model").unwrap().input_per_mtok, 0.5);
        assert!(
            t.pricing.lookup("claude-sonnet-4-0").is_some(),
            "defaults kept"
        );
    }
}
