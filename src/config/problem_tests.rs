//! Table-driven tests: every kind of config mistake, at several depths, is reported on the
//! line it is written on, with its full field path, in plain words.

use super::{parse, ConfigError, Problem};

/// A valid upstream and route, appended after each case so that only the case's own mistake
/// is reported (and its line numbers start at 1).
const TAIL: &str =
    "upstreams:\n  u: {url: \"http://127.0.0.1:1\"}\nroutes:\n  - name: r\n    targets: [u]\n";

fn problems(text: &str) -> Vec<Problem> {
    match parse(text, "t.yaml", &|_| None) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("expected problems for:\n{text}\ngot {other:?}"),
    }
}

/// (config text, line, field path, words the message must contain)
type Case = (&'static str, usize, &'static str, &'static [&'static str]);

/// Mistakes outside `upstreams:` and `routes:`, each followed by TAIL.
const OUTSIDE: &[Case] = &[
    // unknown field
    (
        "lisen: x\n",
        1,
        "lisen",
        &["unknown field `lisen`", "did you mean `listen`"],
    ),
    (
        "limits:\n  max_body: 5\n",
        2,
        "limits.max_body",
        &["unknown field `max_body`", "max_body_bytes"],
    ),
    (
        "cache:\n  redis:\n    timout: 1s\n",
        3,
        "cache.redis.timout",
        &["did you mean `timeout`"],
    ),
    (
        "reload:\n  every: 5s\n",
        2,
        "reload.every",
        &["unknown field `every`", "(fields here: watch)"],
    ),
    (
        "pricing:\n  gpt-x:\n    input_per_mtok: 1\n    output: 1\n    output_per_mtok: 1\n",
        4,
        "pricing.gpt-x.output",
        &["unknown field `output`", "input_per_mtok, output_per_mtok"],
    ),
    // wrong type
    (
        "threads: many\n",
        1,
        "threads",
        &["expected a whole number", "found \"many\""],
    ),
    (
        "reload:\n  watch: sometimes\n",
        2,
        "reload.watch",
        &["expected true or false", "\"sometimes\""],
    ),
    (
        "cache:\n  vary: [a, [b]]\n",
        2,
        "cache.vary[1]",
        &["expected text", "found a list"],
    ),
    (
        "cache:\n  ignore_fields: user\n",
        2,
        "cache.ignore_fields",
        &["expected a list"],
    ),
    (
        "limits: 5\n",
        1,
        "limits",
        &["expected a mapping", "found the number 5"],
    ),
    (
        "pricing:\n  gpt-x: {input_per_mtok: cheap, output_per_mtok: 1}\n",
        2,
        "pricing.gpt-x.input_per_mtok",
        &["expected a number"],
    ),
    // bad byte size
    (
        "limits:\n  max_body_bytes: 32 parsecs\n",
        2,
        "limits.max_body_bytes",
        &["not a size", "like 33554432 or 32MiB", "KiB"],
    ),
    (
        "cache:\n  max_entry_bytes: true\n",
        2,
        "cache.max_entry_bytes",
        &[
            "expected a size in bytes, like 33554432 or 32MiB",
            "found true",
        ],
    ),
    (
        "cache:\n  memory:\n    max_bytes: -1\n",
        3,
        "cache.memory.max_bytes",
        &["negative"],
    ),
    // bad enum value
    (
        "log:\n  format: xml\n",
        2,
        "log.format",
        &["unknown value `xml`", "one of: text, json"],
    ),
    (
        "cache:\n  replay: orignal\n",
        2,
        "cache.replay",
        &["did you mean `original`"],
    ),
    (
        "cache:\n  backend: redsi\n",
        2,
        "cache.backend",
        &["did you mean `redis`"],
    ),
    (
        "cache:\n  scope: everyone\n",
        2,
        "cache.scope",
        &["one of: credential, shared"],
    ),
    // bad duration
    (
        "shutdown_grace: 10\n",
        1,
        "shutdown_grace",
        &[
            "expected a duration like 250ms, 5s",
            "units: ns, us, ms, s, m, h, d",
        ],
    ),
    (
        "shutdown_grace: 10 secnds\n",
        1,
        "shutdown_grace",
        &["found \"10 secnds\"", "units: ns, us, ms, s, m, h, d"],
    ),
    (
        "cache:\n  ttl: 7 days please\n",
        2,
        "cache.ttl",
        &["is not a duration", "units:"],
    ),
    (
        "cache:\n  redis:\n    timeout: 50\n",
        3,
        "cache.redis.timeout",
        &["50 has no unit", "e.g. 50s"],
    ),
    // prompt caching: prices and minimums
    (
        "pricing:\n  claude-x:\n    input_per_mtok: 1\n    output_per_mtok: 1\n    cache_read_per_mtok: -0.1\n",
        5,
        "pricing.claude-x.cache_read_per_mtok",
        &["must be a number ≥ 0"],
    ),
    (
        "prompt_cache_min_tokens:\n  claude-x: 0\n",
        2,
        "prompt_cache_min_tokens.claude-x",
        &["must be at least 1"],
    ),
    (
        "prompt_cache_min_tokens:\n  claude-x: lots\n",
        2,
        "prompt_cache_min_tokens.claude-x",
        &["expected a whole number", "\"lots\""],
    ),
];

/// Mistakes inside `upstreams:` and `routes:` (complete files).
const INSIDE: &[Case] = &[
    // An unset `${VAR}` is one problem, not a second one about the unexpanded text.
    (
        "listen: \"${PG_TEST_UNSET_LISTEN}\"\nupstreams:\n  u: {url: \"http://127.0.0.1:1\"}\nroutes: [{name: r, targets: [u]}]\n",
        1, "listen", &["PG_TEST_UNSET_LISTEN is not set"],
    ),
    (
        "upstreams:\n  u: {url: \"${PG_TEST_UNSET_URL}\"}\nroutes: [{name: r, targets: [u]}]\n",
        2, "upstreams.u.url", &["PG_TEST_UNSET_URL is not set"],
    ),
    (
        "upstreams:\n  u: {url: \"http://127.0.0.1:1\"}\nroutes: [{name: r, targets: [u]}]\ncache:\n  ttl: \"${PG_TEST_UNSET_TTL}\"\n",
        5, "cache.ttl", &["PG_TEST_UNSET_TTL is not set"],
    ),
    (
        "upstreams:\n  u:\n    url: http://127.0.0.1:1\n    timeouts:\n      read: 5x\nroutes: [{name: r, targets: [u]}]\n",
        5, "upstreams.u.timeouts.read", &["\"5x\" is not a duration (unknown unit \"x\")", "units:"],
    ),
    (
        "upstreams:\n  u:\n    url: http://127.0.0.1:1\n    health:\n      failures: 3\n      cooldwn: 1s\nroutes: [{name: r, targets: [u]}]\n",
        6, "upstreams.u.health.cooldwn", &["did you mean `cooldown`"],
    ),
    (
        "upstreams:\n  u:\n    url: http://127.0.0.1:1\n    max_concurrent: lots\nroutes: [{name: r, targets: [u]}]\n",
        4, "upstreams.u.max_concurrent", &["expected a whole number", "\"lots\""],
    ),
    (
        "upstreams:\n  u:\n    timeouts: {read: 1s}\nroutes: [{name: r, targets: [u]}]\n",
        2, "upstreams.u.url", &["missing required field `url`"],
    ),
    (
        "upstreams:\n  u:\n    url: https://127.0.0.1:1\n    tls:\n      ca_file: /nonexistent/ca.pem\nroutes: [{name: r, targets: [u]}]\n",
        5, "upstreams.u.tls.ca_file", &["cannot read /nonexistent/ca.pem", "No such file"],
    ),
    (
        "upstreams:\n  u:\n    url: http://127.0.0.1:1\n    tls: {sni: example.com}\nroutes: [{name: r, targets: [u]}]\n",
        4, "upstreams.u.tls.sni", &["https:// upstreams only"],
    ),
    (
        "upstreams:\n  u:\n    url: https://127.0.0.1:1\n    tls: {sni: \"not a name\"}\nroutes: [{name: r, targets: [u]}]\n",
        4, "upstreams.u.tls.sni", &["\"not a name\" is not a DNS name or IP address"],
    ),
    (
        "upstreams:\n  u:\n    url: https://127.0.0.1:1\n    tls: {verify: false}\nroutes: [{name: r, targets: [u]}]\n",
        4, "upstreams.u.tls.verify", &["unknown field `verify`", "ca_file, sni"],
    ),
    (
        "upstreams:\n  u:\n    url: https://127.0.0.1:1\n    pool:\n      max_connections: 0\nroutes: [{name: r, targets: [u]}]\n",
        5, "upstreams.u.pool.max_connections", &["must be at least 1"],
    ),
    (
        "upstreams:\n  u:\n    url: https://127.0.0.1:1\n    pool:\n      max_connections: 10\n      max_idle: 20\nroutes: [{name: r, targets: [u]}]\n",
        6, "upstreams.u.pool.max_idle", &["20 is more than max_connections (10)"],
    ),
    (
        "upstreams:\n  u:\n    url: https://127.0.0.1:1\n    http_version: h3\nroutes: [{name: r, targets: [u]}]\n",
        4, "upstreams.u.http_version", &["unknown value `h3`", "auto, h1, h2"],
    ),
    (
        // The issue's example: the typo is on its own line, not its route's.
        "upstreams:\n  u: {url: \"http://127.0.0.1:1\"}\nroutes:\n  - name: r\n    match:\n      path_prefix: /r\n    strip_prefx: true\n    targets: [u]\n",
        7, "routes[0].strip_prefx", &["unknown field `strip_prefx`", "did you mean `strip_prefix`"],
    ),
    (
        "upstreams:\n  u: {url: \"http://127.0.0.1:1\"}\nroutes:\n  - name: r\n    match:\n      path_prefx: /r\n    targets: [u]\n",
        6, "routes[0].match.path_prefx", &["did you mean `path_prefix`"],
    ),
    (
        "upstreams:\n  u: {url: \"http://127.0.0.1:1\"}\nroutes:\n  - name: r\n    targets: [u]\n  - name: s\n    strategy: weightd\n    targets: [u]\n",
        7, "routes[1].strategy", &["unknown value `weightd`", "did you mean `weighted`", "failover, weighted, latency"],
    ),
    (
        "upstreams:\n  u: {url: \"http://127.0.0.1:1\"}\nroutes:\n  - name: r\n    targets:\n      - u\n      - upstream: u\n        modle: m\n",
        8, "routes[0].targets[1].modle", &["unknown field `modle`", "did you mean `model`"],
    ),
    (
        "upstreams:\n  u: {url: \"http://127.0.0.1:1\"}\nroutes:\n  - name: r\n    targets:\n      - u\n      - 5\n",
        7, "routes[0].targets[1]", &["expected an upstream name, or a mapping", "found the number 5"],
    ),
    (
        "upstreams:\n  u: {url: \"http://127.0.0.1:1\"}\nroutes:\n  - name: r\n    targets: [u]\n    retry:\n      attempts: 2\n      base: 5\n",
        8, "routes[0].retry.base", &["5 has no unit"],
    ),
    (
        "upstreams:\n  u: {url: \"http://127.0.0.1:1\"}\nroutes:\n  - name: r\n    targets: [u]\n    retry:\n      on:\n        - 429\n        - conect\n",
        9, "routes[0].retry.on[1]", &["expected connect, timeout, reset, or an HTTP status code", "\"conect\""],
    ),
    (
        "upstreams:\n  u: {url: \"http://127.0.0.1:1\"}\nroutes:\n  - name: r\n    targets: [u]\n    cache:\n      ttl: forever\n",
        7, "routes[0].cache.ttl", &["\"forever\" is not a duration", "units:"],
    ),
    (
        "upstreams:\n  u: {url: \"http://127.0.0.1:1\"}\nroutes:\n  - name: r\n    targets: [u]\n    prompt_caching: on\n",
        6, "routes[0].prompt_caching", &["one of: off, auto"],
    ),
    (
        "upstreams:\n  u:\n    url: http://127.0.0.1:1\n    provider: claude\nroutes: [{name: r, targets: [u]}]\n",
        4, "upstreams.u.provider", &["unknown value `claude`", "anthropic, openai, gemini, ollama, other"],
    ),
    (
        "upstreams:\n  u: {url: \"http://127.0.0.1:1\"}\nroutes:\n  - name: r\n    groups:\n      fast: [{upstream: u, model: m}]\n",
        6, "routes[0].groups.fast", &["unknown value `fast`", "speed, cost, quality, fallback"],
    ),
    (
        "upstreams:\n  u: {url: \"http://127.0.0.1:1\"}\nroutes:\n  - name: r\n    groups:\n      speed:\n        - upstream: u\n          model: m\n          weight: heavy\n",
        9, "routes[0].groups.speed[0].weight", &["expected a whole number", "\"heavy\""],
    ),
];

fn check(text: &str, line: usize, path: &str, words: &[&str]) {
    let found = problems(text);
    let p = found
        .iter()
        .find(|p| p.path == path)
        .unwrap_or_else(|| panic!("no problem at {path} for:\n{text}\ngot {found:#?}"));
    assert_eq!(p.line, Some(line), "line of {path} in:\n{text}\n{p:?}");
    for w in words {
        assert!(
            p.message.contains(w),
            "{path}: {w:?} not in {:?}",
            p.message
        );
    }
    // Rust type names are not words users know.
    for jargon in [
        "usize",
        "u64",
        "u32",
        "f64",
        "struct ",
        "variant",
        "sequence",
        "invalid type",
    ] {
        assert!(
            !p.message.contains(jargon),
            "{path}: jargon {jargon:?} in {:?}",
            p.message
        );
    }
    assert_eq!(
        found.len(),
        1,
        "one mistake, one problem:\n{text}\n{found:#?}"
    );
}

#[test]
fn each_mistake_is_reported_at_its_line_and_full_path() {
    for (text, line, path, words) in OUTSIDE {
        check(&format!("{text}{TAIL}"), *line, path, words);
    }
    for (text, line, path, words) in INSIDE {
        check(text, *line, path, words);
    }
}

#[test]
fn every_mistake_in_one_section_is_reported() {
    let p = problems(
        "upstreams:\n  u: {url: \"http://127.0.0.1:1\"}\nroutes:\n  - name: r\n    strategy: weightd\n    targets:\n      - 5\n      - {upstream: u, modle: m}\n    cache: {ttl: 3}\n",
    );
    let at: Vec<(usize, &str)> = p
        .iter()
        .map(|p| (p.line.unwrap_or(0), p.path.as_str()))
        .collect();
    assert_eq!(
        at,
        [
            (5, "routes[0].strategy"),
            (7, "routes[0].targets[0]"),
            (8, "routes[0].targets[1].modle"),
            (9, "routes[0].cache.ttl"),
        ],
        "{p:#?}"
    );
}

#[test]
fn human_byte_sizes_are_accepted() {
    let t = parse(
        &format!("limits: {{max_body_bytes: 32MiB}}\ncache: {{max_entry_bytes: 512KiB, memory: {{max_bytes: 1GB}}}}\n{TAIL}"),
        "t.yaml",
        &|_| None,
    )
    .unwrap();
    assert_eq!(t.max_body_bytes, 32 << 20);
    assert_eq!(t.cache.max_entry_bytes, 512 << 10);
    assert_eq!(t.cache.memory.max_bytes, 1_000_000_000);
    // Plain numbers still work, and GET /config shows bytes as numbers.
    let t = parse(
        &format!("limits: {{max_body_bytes: 1024}}\n{TAIL}"),
        "t.yaml",
        &|_| None,
    )
    .unwrap();
    assert_eq!(t.max_body_bytes, 1024);
    let shown = serde_json::to_string(&*t.sections).unwrap();
    assert!(shown.contains(r#""max_body_bytes":1024"#), "{shown}");
}

#[test]
fn yaml_syntax_errors_keep_line_and_column_in_plain_words() {
    for (text, line, words) in [
        (
            "listen: [unclosed\nadmin: x\n",
            2,
            &["line 2, column", "list `[` opened on line 1 is not closed"][..],
        ),
        ("a: 1\n\tb: 2\n", 2, &["column 1", "tab"][..]),
        ("a: 1\nb: x: y\n", 2, &["column 5", "needs quotes"][..]),
        ("a:\n  b: 1\n c: 2\n", 3, &["column 2", "indentation"][..]),
        (
            "listen: x\nlisten: y\n",
            1,
            &["\"listen\" appears twice"][..],
        ),
        (
            "---\nlisten: x\n---\nadmin: y\n",
            3,
            &["more than one YAML document"][..],
        ),
    ] {
        let p = problems(text);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].line, Some(line), "{text:?}: {p:?}");
        assert!(p[0].message.starts_with("not valid YAML at line"), "{p:?}");
        for w in words {
            assert!(p[0].message.contains(w), "{w:?} not in {:?}", p[0].message);
        }
    }
}

#[test]
fn empty_files_and_files_without_routes_are_refused() {
    for text in ["", "\n\n", "# only a comment\n", "---\n"] {
        let p = problems(text);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].message.contains("the config file is empty"), "{p:?}");
    }
    for (text, line) in [
        ("listen: \"127.0.0.1:8080\"\n", None),
        (
            "upstreams:\n  u: {url: \"http://127.0.0.1:1\"}\nroutes:\n",
            Some(3),
        ),
        (
            "upstreams:\n  u: {url: \"http://127.0.0.1:1\"}\nroutes: []\n",
            Some(3),
        ),
    ] {
        let p = problems(text);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!((p[0].path.as_str(), p[0].line), ("routes", line), "{p:?}");
        assert!(p[0].message.contains("no routes are configured"), "{p:?}");
    }
}
