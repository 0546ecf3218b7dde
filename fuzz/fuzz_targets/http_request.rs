//! Our part of HTTP handling on arbitrary requests: framing checks, path normalisation, route
//! matching with prefix stripping, and the upstream request rewrite. Invariants: nothing
//! panics; a normalised path is stable; the forwarded path always stays under the upstream's
//! base path; `Host` is always the upstream's; no hop-by-hop or framing header leaks through.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pingora::http::RequestHeader;
use promptgate::proxy::{request_framing, request_path};
use promptgate::runtime::Runtime;
use std::sync::OnceLock;

const CONFIG: &str = r#"
upstreams:
  base: { url: "http://127.0.0.1:9/base", headers: { authorization: "Bearer injected" } }
  root: { url: "https://api.example.com" }
routes:
  - { name: strip, match: { path_prefix: /openai }, strip_prefix: true, targets: [base] }
  - { name: keep, match: { path_prefix: /v1 }, targets: [base] }
  - { name: slash, match: { path_prefix: "/gemini/" }, strip_prefix: true, targets: [root] }
  - { name: all, match: { path_prefix: / }, strip_prefix: true, targets: [base] }
"#;

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let spec = promptgate::config::parse(CONFIG, "fuzz", &|_| None).expect("valid");
        promptgate::runtime::build(&spec)
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = request_framing::check(data);

    // First line: the request target; then `name: value` lines.
    let mut lines = data.split(|b| *b == b'\n');
    let target = lines.next().unwrap_or_default();
    let Ok(mut req) = RequestHeader::build("POST", target, None) else {
        return;
    };
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(&line[..colon]),
            http::HeaderValue::from_bytes(&line[colon + 1..]),
        ) else {
            continue;
        };
        let _ = req.append_header(name, value);
    }

    let Ok(path) = request_path::normalise(req.uri.path()) else {
        return;
    };
    assert_eq!(request_path::normalise(&path).as_deref(), Ok(path.as_str()));
    assert!(path.starts_with('/'));
    for bad in ["//", "/./", "/../", "%2F", "%2f", "\\"] {
        assert!(!path.contains(bad), "{path}");
    }

    for route in runtime().candidates(&req, &path) {
        let forward = route.forward_path(&path);
        let with_query = match req.uri.query() {
            Some(q) => format!("{forward}?{q}"),
            None => forward.to_string(),
        };
        for target in &route.targets {
            let upstream = &target.upstream;
            let Ok(out) = promptgate::proxy::build_request(&req, upstream, &with_query, 7) else {
                continue;
            };
            let sent = out.uri.path();
            let base = format!("{}/", upstream.base_path);
            assert!(sent.starts_with(&base), "{sent} escapes {base}");
            assert!(
                !sent.split('/').any(|s| s == ".." || s == "."),
                "dot segment forwarded: {sent}"
            );
            let hosts: Vec<_> = out.headers.get_all("host").iter().collect();
            assert_eq!(hosts, [&upstream.host_header], "host");
            for hop in [
                "connection",
                "transfer-encoding",
                "te",
                "upgrade",
                "keep-alive",
                "proxy-authorization",
                "expect",
            ] {
                assert!(!out.headers.contains_key(hop), "{hop} forwarded");
            }
            let lengths: Vec<_> = out.headers.get_all("content-length").iter().collect();
            assert_eq!(lengths, ["7"], "content-length");
            for (name, value) in &upstream.headers {
                assert_eq!(out.headers.get_all(name).iter().count(), 1, "{name}");
                assert_eq!(out.headers.get(name), Some(value.expose()));
            }
        }
    }
});
