//! docs/configuration.md documents every config field: each field of the running config (as
//! `GET /config` shows it, every default filled in) appears there by its full path.

use super::parse;
use serde_json::Value;

const REFERENCE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/docs/configuration.md"
));

/// Every leaf path of `value`, with map keys under `upstreams`, `pricing` and
/// `prompt_cache_min_tokens` written as the reference writes them (`NAME`, `PATTERN`) and list
/// items as `[N]`.
fn leaves(value: &Value, path: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                let key = match path.as_str() {
                    "upstreams" => "NAME",
                    "pricing" | "prompt_cache_min_tokens" => "PATTERN",
                    _ => key,
                };
                let child_path = if path.is_empty() {
                    key.to_string()
                } else {
                    format!("{path}.{key}")
                };
                leaves(child, child_path, out);
            }
        }
        // Routes are a list of structures; other lists (targets, vary, retry.on) are values.
        Value::Array(items) if path == "routes" => {
            for item in items {
                leaves(item, format!("{path}[N]"), out);
            }
        }
        _ => out.push(path),
    }
}

#[test]
fn every_field_is_in_docs_configuration_md() {
    let table = parse(
        "upstreams:\n  u: {url: \"http://127.0.0.1:1\", provider: anthropic}\nroutes:\n  - {name: r, targets: [u], rate_limit: {requests_per_minute: 1}, cache: {semantic: {upstream: u, model: m}}}\npricing:\n  m: {input_per_mtok: 1, output_per_mtok: 2, cache_read_per_mtok: 0.1, cache_write_per_mtok: 1.25}\nprompt_cache_min_tokens:\n  m: 1024\n",
        "t.yaml",
        &|_| None,
    )
    .unwrap();
    let mut paths = Vec::new();
    leaves(
        &serde_json::to_value(&*table.sections).unwrap(),
        String::new(),
        &mut paths,
    );
    assert!(paths.len() > 50, "{paths:?}");
    let missing: Vec<&String> = paths
        .iter()
        .filter(|p| !REFERENCE.contains(&format!("`{p}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not document {missing:?}"
    );
    // upgrade_sock is not part of the running config's JSON; it is documented all the same.
    assert!(REFERENCE.contains("`upgrade_sock`"));
    assert!(
        paths
            .iter()
            .any(|p| p == "routes[N].cache.semantic.max_chars"),
        "the semantic settings are part of the check: {paths:?}"
    );
}

const CACHING: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/caching.md"));
const SAMPLE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/promptgate.yaml"));

/// docs/caching.md's semantic section names every `cache.semantic` field, and the shipped
/// config shows each one, commented.
#[test]
fn every_semantic_field_is_in_the_guide_and_the_sample_config() {
    let table = parse(
        "upstreams:\n  u: {url: \"http://127.0.0.1:1\"}\nroutes:\n  - {name: r, targets: [u], cache: {semantic: {upstream: u, model: m}}}\n",
        "t.yaml",
        &|_| None,
    )
    .unwrap();
    let shown = serde_json::to_value(&*table.sections).unwrap();
    let fields = shown["routes"][0]["cache"]["semantic"].as_object().unwrap();
    assert!(fields.len() >= 8, "{fields:?}");
    let section = CACHING
        .split_once("## Semantic cache")
        .expect("docs/caching.md has a Semantic cache section")
        .1;
    let sample = SAMPLE
        .split_once("#   semantic:")
        .expect("conf/promptgate.yaml shows cache.semantic")
        .1;
    for field in fields.keys() {
        assert!(
            section.contains(&format!("`{field}`")),
            "docs/caching.md does not name `{field}`"
        );
        assert!(
            sample.contains(&format!("#     {field}:")),
            "conf/promptgate.yaml does not show {field}"
        );
    }
}
