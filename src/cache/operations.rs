//! Whether a request is one of its route's cacheable operations (`cache.operations`, see
//! `config::operations`): a pure generation whose answer may be stored and replayed, rather
//! than a state read (a job poll) or a call that creates, changes or deletes something.

use crate::body::{Node, ParsedBody};
use crate::config::operations::{Condition, Operation};
use wildmatch::WildMatch;

/// True when the first of `ops` whose method and path match `method` and `path` (the path the
/// route forwards, without its query) also finds its body condition met.
pub fn cacheable(
    ops: &[Operation],
    method: &http::Method,
    path: &str,
    body: &ParsedBody<'_>,
) -> bool {
    first(ops, method, path).is_some_and(|op| condition_met(op.condition, body))
}

/// Whether `method` and `path` name one of `ops`, before its body condition is checked: all
/// that can be said of a request whose body was never read (too large).
pub fn named(ops: &[Operation], method: &http::Method, path: &str) -> bool {
    first(ops, method, path).is_some()
}

/// The first of `ops` whose method and path match.
fn first<'o>(ops: &'o [Operation], method: &http::Method, path: &str) -> Option<&'o Operation> {
    // On the stack for the usual few segments (no allocation per request).
    const ON_STACK: usize = 16;
    let mut stack = [""; ON_STACK];
    let mut count = 0;
    let mut heap: Vec<&str> = Vec::new();
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        if count < ON_STACK {
            stack[count] = segment;
        } else {
            if heap.is_empty() {
                heap.extend_from_slice(&stack);
            }
            heap.push(segment);
        }
        count += 1;
    }
    let segments: &[&str] = if count <= ON_STACK {
        &stack[..count]
    } else {
        &heap
    };
    ops.iter().find(|op| {
        op.method.as_ref().is_none_or(|m| m == method) && ends_with(segments, &op.segments)
    })
}

/// True when the path's last segments match `pattern` (`**` matches any number of segments).
fn ends_with(path: &[&str], pattern: &[String]) -> bool {
    match pattern.split_last() {
        None => true,
        Some((last, rest)) if last == "**" => {
            (0..=path.len()).any(|keep| ends_with(&path[..keep], rest))
        }
        Some((last, rest)) => match path.split_last() {
            Some((seg, before)) => glob(last, seg) && ends_with(before, rest),
            None => false,
        },
    }
}

fn glob(pattern: &str, segment: &str) -> bool {
    if pattern.bytes().any(|b| b == b'*' || b == b'?') {
        WildMatch::new(pattern).matches(segment)
    } else {
        pattern == segment
    }
}

/// The top-level field `name` of a JSON object body.
fn field<'t>(body: &'t ParsedBody<'_>, name: &str) -> Option<&'t Node<'t>> {
    let Some(Node::Object(fields)) = body.tree() else {
        return None;
    };
    fields
        .binary_search_by(|f| f.key.as_ref().cmp(name))
        .ok()
        .map(|i| &fields[i].value)
}

fn condition_met(condition: Condition, body: &ParsedBody<'_>) -> bool {
    match condition {
        Condition::Always => true,
        Condition::NotBackground => !matches!(field(body, "background"), Some(Node::Bool(true))),
        Condition::OllamaNonEmpty(name) => {
            let filled = match field(body, name) {
                Some(Node::String(s)) => !s.trim().is_empty(),
                Some(Node::Array(items)) => !items.is_empty(),
                _ => false,
            };
            filled && !field(body, "keep_alive").is_some_and(is_zero_duration)
        }
    }
}

/// Ollama's `keep_alive` of zero (`0`, `"0"`, `"0s"`, `"0m"`, …): unload the model now.
fn is_zero_duration(value: &Node<'_>) -> bool {
    match value {
        Node::Number(n) => n.as_f64() == Some(0.0),
        Node::String(s) => {
            let digits = s.trim().trim_end_matches(|c: char| c.is_ascii_alphabetic());
            digits.parse::<f64>().is_ok_and(|v| v == 0.0)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::operations::parse;

    fn ops(entries: &[&str]) -> Vec<Operation> {
        parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn allows(ops: &[Operation], method: &str, path: &str, body: &str) -> bool {
        let method = http::Method::from_bytes(method.as_bytes()).unwrap();
        cacheable(ops, &method, path, &ParsedBody::new(body.as_bytes()))
    }

    #[test]
    fn named_judges_method_and_path_before_the_body() {
        let d = ops(&["default"]);
        let post = http::Method::POST;
        assert!(named(&d, &post, "/v1/chat/completions"));
        // The body condition is not checked yet: an empty Ollama prompt is not cacheable.
        assert!(named(&d, &post, "/api/chat"));
        assert!(!allows(&d, "POST", "/api/chat", "{}"));
        assert!(!named(&d, &post, "/v1/files"));
        assert!(!named(&d, &http::Method::GET, "/v1/chat/completions"));
    }

    #[test]
    fn generations_are_cacheable_state_reads_and_side_effects_are_not() {
        let d = ops(&["default"]);
        for (method, path, body) in [
            ("POST", "/v1/chat/completions", "{}"),
            ("POST", "/chat/completions", "{}"),
            ("POST", "/openai/deployments/gpt/chat/completions", "{}"),
            ("POST", "/v1/completions", "{}"),
            ("POST", "/v1/embeddings", "{}"),
            ("POST", "/v1/responses", r#"{"background": false}"#),
            ("POST", "/v1/audio/transcriptions", "--x"),
            ("POST", "/v1/messages", "{}"),
            ("POST", "/v1/messages/count_tokens", "{}"),
            (
                "POST",
                "/v1beta/models/gemini-2.0-flash:generateContent",
                "{}",
            ),
            (
                "POST",
                "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
                "{}",
            ),
            ("POST", "/v1/models/text-embedding-004:embedContent", "{}"),
            ("POST", "/v1beta/models/g:countTokens", "{}"),
            ("POST", "/api/generate", r#"{"model":"m","prompt":"hi"}"#),
            (
                "POST",
                "/api/chat",
                r#"{"messages":[{"role":"user","content":"hi"}]}"#,
            ),
            ("POST", "/api/embed", r#"{"input":["a"]}"#),
            (
                "POST",
                "/api/generate",
                r#"{"prompt":"hi","keep_alive":"5m"}"#,
            ),
        ] {
            assert!(allows(&d, method, path, body), "{method} {path} {body}");
        }
        for (method, path, body) in [
            ("POST", "/v1/responses", r#"{"background": true}"#),
            ("GET", "/v1/responses/resp_123", ""),
            ("POST", "/v1/responses/resp_123/cancel", ""),
            ("GET", "/v1/chat/completions", ""),
            ("GET", "/v1/models", ""),
            ("POST", "/v1/batches", "{}"),
            ("GET", "/v1/batches/b1", ""),
            ("POST", "/v1/files", "--x"),
            ("DELETE", "/v1/files/f1", ""),
            ("POST", "/v1/fine_tuning/jobs", "{}"),
            ("GET", "/v1/vector_stores/vs1", ""),
            ("POST", "/v1/messages/batches", "{}"),
            ("GET", "/v1/messages/batches/mb1", ""),
            ("GET", "/v1beta/operations/op1", ""),
            ("GET", "/v1beta/models", ""),
            ("GET", "/api/ps", ""),
            ("GET", "/api/tags", ""),
            ("POST", "/api/pull", r#"{"model":"m"}"#),
            ("DELETE", "/api/delete", r#"{"model":"m"}"#),
            ("POST", "/api/generate", r#"{"model":"m"}"#),
            ("POST", "/api/generate", r#"{"model":"m","prompt":""}"#),
            ("POST", "/api/chat", r#"{"model":"m","messages":[]}"#),
            ("POST", "/api/generate", r#"{"prompt":"hi","keep_alive":0}"#),
            (
                "POST",
                "/api/chat",
                r#"{"messages":[{}],"keep_alive":"0s"}"#,
            ),
            ("POST", "/api/embeddings", r#"{"model":"m","prompt":""}"#),
        ] {
            assert!(!allows(&d, method, path, body), "{method} {path} {body}");
        }
    }

    #[test]
    fn a_route_widens_or_narrows_the_list() {
        let narrow = ops(&["anthropic"]);
        assert!(allows(&narrow, "POST", "/v1/messages", "{}"));
        assert!(!allows(&narrow, "POST", "/v1/chat/completions", "{}"));
        let wide = ops(&["default", "POST /v1/rerank", "GET /models/*"]);
        assert!(allows(&wide, "POST", "/v1/rerank", "{}"));
        assert!(!allows(&wide, "POST", "/v1/rerank/x", "{}"));
        assert!(allows(&wide, "GET", "/v1/models/gpt-4o", ""));
        let everything = ops(&["* /**"]);
        assert!(allows(&everything, "DELETE", "/a/b", ""));
        assert!(!allows(&ops(&[]), "POST", "/v1/chat/completions", "{}"));
    }

    #[test]
    fn paths_longer_than_the_stack_buffer_match_as_short_ones() {
        let o = ops(&["POST /v1/**/run", "POST /models/*:generateContent"]);
        let deep: String = (0..40).map(|i| format!("/s{i}")).collect();
        for (prefix, want) in [("", true), ("/a", true), (deep.as_str(), true)] {
            assert_eq!(
                allows(&o, "POST", &format!("{prefix}/v1/x/y/run"), ""),
                want
            );
            assert_eq!(
                allows(
                    &o,
                    "POST",
                    &format!("{prefix}/models/g:generateContent"),
                    "{}"
                ),
                want
            );
            assert!(!allows(&o, "POST", &format!("{prefix}/v1/x/y/walk"), ""));
        }
        let exactly: String = (0..15).map(|i| format!("/s{i}")).collect();
        assert!(allows(&o, "POST", &format!("/v1{exactly}/run"), ""));
        assert!(allows(&o, "POST", &format!("/v1{exactly}/x/run"), ""));
    }

    #[test]
    fn double_star_matches_any_run_of_segments() {
        let o = ops(&["POST /v1/**/run"]);
        assert!(allows(&o, "POST", "/x/v1/run", ""));
        assert!(allows(&o, "POST", "/v1/a/b/run", ""));
        assert!(!allows(&o, "POST", "/v1/a/b/stop", ""));
    }
}
