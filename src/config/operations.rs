//! `cache.operations`: which requests are cacheable operations — the grammar of one entry
//! (`METHOD /path-glob`, or a preset name) and the presets, per provider.
//!
//! An operation matches the end of the path the route forwards (after `strip_prefix`), at a
//! segment boundary: `/chat/completions` matches `/v1/chat/completions` and
//! `/openai/deployments/x/chat/completions`, whatever base the client and upstream use.
//! Everything else on a cached route is forwarded untouched, as `BYPASS`.

use http::Method;

/// A body condition an operation's request must also meet (checked by `cache::operations`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// None: the method and path decide.
    Always,
    /// OpenAI Responses: not `"background": true` (a background job is created, then polled).
    NotBackground,
    /// Ollama: the named field holds something (an empty prompt, `messages` or `input` only
    /// loads the model), and `keep_alive` is not zero (which unloads it).
    OllamaNonEmpty(&'static str),
}

/// One cacheable operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// `None`: any method (`*`).
    pub method: Option<Method>,
    /// The path's last segments, each a glob (`*` within a segment); a `**` segment matches
    /// any number of segments.
    pub segments: Vec<String>,
    pub condition: Condition,
}

/// The presets, in the order `default` lists them. Ollama's come first: the first operation
/// whose method and path match decides, so `/api/embeddings` meets Ollama's condition rather
/// than matching OpenAI's `/embeddings` unconditionally.
pub const PRESETS: &[&str] = &["ollama", "openai", "anthropic", "gemini"];

/// The default `cache.operations`.
pub const DEFAULT: &str = "default";

/// `(method, path, condition)` of each preset's operations.
fn preset(name: &str) -> Option<&'static [(&'static str, &'static str, Condition)]> {
    use Condition::*;
    Some(match name {
        "openai" => &[
            ("POST", "/chat/completions", Always),
            ("POST", "/completions", Always),
            ("POST", "/embeddings", Always),
            ("POST", "/responses", NotBackground),
            ("POST", "/audio/transcriptions", Always),
            ("POST", "/audio/translations", Always),
        ],
        "anthropic" => &[
            ("POST", "/messages", Always),
            ("POST", "/messages/count_tokens", Always),
            ("POST", "/complete", Always),
        ],
        "gemini" => &[
            ("POST", "/models/*:generateContent", Always),
            ("POST", "/models/*:streamGenerateContent", Always),
            ("POST", "/models/*:embedContent", Always),
            ("POST", "/models/*:batchEmbedContents", Always),
            ("POST", "/models/*:countTokens", Always),
        ],
        "ollama" => &[
            ("POST", "/api/chat", OllamaNonEmpty("messages")),
            ("POST", "/api/generate", OllamaNonEmpty("prompt")),
            ("POST", "/api/embed", OllamaNonEmpty("input")),
            ("POST", "/api/embeddings", OllamaNonEmpty("prompt")),
        ],
        _ => return None,
    })
}

/// The operations a `cache.operations` list names, presets expanded in place, in order;
/// or each entry that is wrong (its index and the problem).
pub fn parse(list: &[String]) -> Result<Vec<Operation>, Vec<(usize, String)>> {
    let mut ops = Vec::new();
    let mut problems = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        match parse_entry(entry.trim()) {
            Ok(mut more) => ops.append(&mut more),
            Err(p) => problems.push((i, p)),
        }
    }
    if problems.is_empty() {
        Ok(ops)
    } else {
        Err(problems)
    }
}

fn parse_entry(entry: &str) -> Result<Vec<Operation>, String> {
    if entry == DEFAULT {
        return Ok(PRESETS.iter().flat_map(|p| expand(p)).collect());
    }
    if preset(entry).is_some() {
        return Ok(expand(entry));
    }
    let Some((method, path)) = entry.split_once(char::is_whitespace) else {
        return Err(format!(
            "{entry:?} is neither a preset ({}, {DEFAULT}) nor \"METHOD /path\"",
            PRESETS.join(", ")
        ));
    };
    let method = match method {
        "*" => None,
        m => Some(
            Method::from_bytes(m.as_bytes())
                .ok()
                .filter(|_| m.bytes().all(|b| b.is_ascii_uppercase()))
                .ok_or_else(|| {
                    format!("{m:?} is not an HTTP method in capitals (POST, GET, …) or *")
                })?,
        ),
    };
    let path = path.trim();
    if !path.starts_with('/') || path.contains(char::is_whitespace) || path.contains('?') {
        return Err(format!(
            "{path:?} must be a path starting with / (no spaces, no query)"
        ));
    }
    let segments: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if segments.is_empty() {
        return Err("the path must name at least one segment (use /** for any path)".into());
    }
    Ok(vec![Operation {
        method,
        segments,
        condition: Condition::Always,
    }])
}

fn expand(name: &str) -> Vec<Operation> {
    preset(name)
        .unwrap_or_default()
        .iter()
        .map(|(method, path, condition)| Operation {
            method: Some(Method::from_bytes(method.as_bytes()).expect("preset methods are valid")),
            segments: path
                .trim_matches('/')
                .split('/')
                .map(String::from)
                .collect(),
            condition: *condition,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Result<Vec<Operation>, Vec<(usize, String)>> {
        parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn presets_expand_in_order() {
        let all = list(&["default"]).unwrap();
        let count = |name| preset(name).unwrap().len();
        assert_eq!(all.len(), PRESETS.iter().map(|p| count(p)).sum::<usize>());
        assert_eq!(all[0].segments, ["api", "chat"], "ollama first");
        let openai = list(&["openai"]).unwrap();
        assert!(openai
            .iter()
            .any(|o| o.segments == ["responses"] && o.condition == Condition::NotBackground));
    }

    #[test]
    fn custom_entries_and_their_errors() {
        let ops = list(&["POST /v1/rerank", "* /**", "anthropic"]).unwrap();
        assert_eq!(ops[0].method, Some(Method::POST));
        assert_eq!(ops[0].segments, ["v1", "rerank"]);
        assert_eq!(
            (ops[1].method.as_ref(), &ops[1].segments[..]),
            (None, &["**".to_string()][..])
        );
        let problems =
            list(&["openia", "post /x", "POST rerank", "POST /", "GET /a?b=1"]).unwrap_err();
        assert_eq!(
            problems.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4]
        );
        assert!(problems[0].1.contains("preset"), "{}", problems[0].1);
    }
}
