//! Anthropic prompt caching, from the request side: where promptgate adds `cache_control`
//! breakpoints to a Messages request that has none of its own (`routes[N].prompt_caching:
//! auto`), written from the request's parsed tree ([`crate::body`]), never re-parsed.
//!
//! Anthropic caches a request's prefix — tools, then system, then messages, in that order — up
//! to a block marked `"cache_control": {"type": "ephemeral"}`, at most [`MAX_BREAKPOINTS`] per
//! request, and only when that prefix is at least the model's minimum length (shorter ones are
//! processed uncached, without error). A later request with the same prefix reads it at 0.1×
//! the input price; writing it costs 1.25×. Three breakpoints are added, each only when the
//! estimated prefix up to it reaches the minimum ([`CacheMinimums`]):
//! 1. on the last tool of `tools`;
//! 2. on the last block of `system` (a string system becomes one text block);
//! 3. on the last content block of the message before the final user turn, so the next turn
//!    of a conversation finds everything before its new question cached.

use crate::body::{write_in_order, write_object_edited, Field, Node, ParsedBody, Sink};
use crate::model_table::ModelTable;
use std::collections::BTreeMap;

/// Most `cache_control` breakpoints Anthropic accepts in one request.
pub const MAX_BREAKPOINTS: usize = 4;

/// Bytes of JSON per token, for estimating a prefix's length without a tokenizer. English text
/// runs about 4 characters a token; a wrong estimate costs nothing but a breakpoint the
/// provider ignores (too short) or one not placed (a near miss).
pub const BYTES_PER_TOKEN: usize = 4;

/// The shipped minimum cacheable prefix per model pattern, in tokens, as Anthropic publishes
/// it (docs.anthropic.com, "Prompt caching", cache limitations): 1024 for Sonnet 4.x / 3.7 and
/// Opus 4 / 4.1, 4096 for Opus 4.5 / 4.6 and Haiku 4.5, 2048 for Haiku 3 / 3.5. A model no
/// pattern matches gets no breakpoints; an unknown `claude-*` model gets 1024.
pub const DEFAULT_MIN_CACHEABLE_TOKENS: &[(&str, u64)] = &[
    ("claude-*", 1024),
    ("claude-*opus*", 1024),
    ("claude-*sonnet*", 1024),
    ("claude-*haiku*", 2048),
    ("claude-haiku-4*", 4096),
    ("claude-opus-4-5*", 4096),
    ("claude-opus-4-6*", 4096),
];

/// The marker added to a block.
const CACHE_CONTROL: &[u8] = br#""cache_control":{"type":"ephemeral"}"#;

/// The minimum cacheable prefix per model: [`DEFAULT_MIN_CACHEABLE_TOKENS`] with the config's
/// `prompt_cache_min_tokens:` merged over it (same pattern rules as the price table).
#[derive(Debug, Clone)]
pub struct CacheMinimums {
    table: ModelTable<u64>,
}

impl CacheMinimums {
    pub fn new(overrides: &BTreeMap<String, u64>) -> CacheMinimums {
        let mut merged: BTreeMap<String, u64> = DEFAULT_MIN_CACHEABLE_TOKENS
            .iter()
            .map(|(p, t)| (p.to_string(), *t))
            .collect();
        merged.extend(overrides.iter().map(|(p, t)| (p.clone(), *t)));
        CacheMinimums {
            table: ModelTable::new(merged),
        }
    }

    /// The minimum for `model`, in tokens; `None`: not a model promptgate marks.
    pub fn for_model(&self, model: &str) -> Option<u64> {
        self.table.lookup(model).copied()
    }
}

impl Default for CacheMinimums {
    fn default() -> CacheMinimums {
        CacheMinimums::new(&BTreeMap::new())
    }
}

/// True for the upstream path of a Messages call (`…/v1/messages`, not `count_tokens` or
/// batches); `path` may carry a query string.
pub fn is_messages_path(path: &str) -> bool {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    path.trim_end_matches('/').ends_with("/v1/messages")
}

/// A request body with breakpoints added.
#[derive(Debug)]
pub struct Marked {
    pub body: Vec<u8>,
    /// How many were added (1 to 3).
    pub breakpoints: usize,
}

/// Where the breakpoints go: indices into the request's arrays.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    /// The tool marked.
    tool: Option<usize>,
    /// The system block marked; `Some(None)`: the system is a string, made one marked block.
    system: Option<Option<usize>>,
    /// The message marked, and its block (`None`: string content, made one marked block).
    message: Option<(usize, Option<usize>)>,
}

impl Plan {
    fn count(&self) -> usize {
        usize::from(self.tool.is_some())
            + usize::from(self.system.is_some())
            + usize::from(self.message.is_some())
    }
}

/// `parsed` with breakpoints added, and its `model` replaced by `model` when given (a target's
/// rewrite), or `None` when it gets none: not a JSON object with `messages`, a `cache_control`
/// of its own anywhere, a model without a minimum in `minimums`, or no prefix long enough.
/// The caller checks that the request is a Messages call to an Anthropic upstream.
pub fn with_breakpoints(
    parsed: &ParsedBody<'_>,
    model: Option<&str>,
    minimums: &CacheMinimums,
) -> Option<Marked> {
    let Some(Node::Object(fields)) = parsed.tree() else {
        return None;
    };
    let rewrite = model;
    let model = match model {
        Some(m) => m,
        None => match field(fields, "model")? {
            Node::String(m) => m.as_ref(),
            _ => return None,
        },
    };
    let min_tokens = minimums.for_model(model)?;
    if has_cache_control(parsed.tree()?) {
        return None;
    }
    let plan = plan(fields, min_tokens);
    let breakpoints = plan.count();
    if breakpoints == 0 {
        return None;
    }
    debug_assert!(breakpoints <= MAX_BREAKPOINTS);
    let mut body = Vec::with_capacity(parsed.raw().len() + breakpoints * 64 + model.len());
    write_object_edited(
        fields,
        &mut body,
        |f, out| match (f.key.as_ref(), rewrite) {
            ("model", Some(model)) => {
                out.escaped(model);
                true
            }
            ("tools", _) => plan
                .tool
                .is_some_and(|i| write_marked_array(&f.value, i, out)),
            ("system", _) => plan
                .system
                .is_some_and(|at| write_marked_content(&f.value, at, out)),
            ("messages", _) => plan
                .message
                .is_some_and(|(m, at)| write_marked_message(&f.value, m, at, out)),
            _ => false,
        },
        None,
    );
    Some(Marked { body, breakpoints })
}

/// The value of the top-level field `key`.
fn field<'t, 'a>(fields: &'t [Field<'a>], key: &str) -> Option<&'t Node<'a>> {
    fields
        .binary_search_by(|f| f.key.as_ref().cmp(key))
        .ok()
        .map(|i| &fields[i].value)
}

/// True when any object at any depth has a `cache_control` key: the client manages its own
/// caching, and its request is forwarded as it is.
fn has_cache_control(node: &Node<'_>) -> bool {
    match node {
        Node::Object(fields) => fields
            .iter()
            .any(|f| f.key == "cache_control" || has_cache_control(&f.value)),
        Node::Array(items) => items.iter().any(has_cache_control),
        _ => false,
    }
}

/// Where the breakpoints go, each only when the estimated prefix up to it (tools, system,
/// messages, in Anthropic's caching order) reaches `min_tokens`.
fn plan(fields: &[Field<'_>], min_tokens: u64) -> Plan {
    let mut plan = Plan::default();
    let long_enough = |bytes: usize| (bytes / BYTES_PER_TOKEN) as u64 >= min_tokens;
    let mut prefix = 0;
    if let Some(tools @ Node::Array(items)) = field(fields, "tools") {
        prefix += json_len(tools);
        let last = items.len().checked_sub(1);
        if long_enough(prefix) && last.is_some_and(|i| matches!(items[i], Node::Object(_))) {
            plan.tool = last;
        }
    }
    if let Some(system) = field(fields, "system") {
        prefix += json_len(system);
        if long_enough(prefix) {
            plan.system = markable_block(system, &["text"]);
        }
    }
    let Some(Node::Array(messages)) = field(fields, "messages") else {
        return plan;
    };
    let final_user = messages.iter().rposition(|m| role(m) == Some("user"));
    if let Some(before) = final_user.and_then(|u| u.checked_sub(1)) {
        prefix += messages[..=before].iter().map(json_len).sum::<usize>();
        let content = match &messages[before] {
            Node::Object(m) => field(m, "content"),
            _ => None,
        };
        if long_enough(prefix) {
            plan.message = content
                .and_then(|c| markable_block(c, &[]))
                .map(|at| (before, at));
        }
    }
    plan
}

fn role<'t>(message: &'t Node<'_>) -> Option<&'t str> {
    match message {
        Node::Object(fields) => match field(fields, "role")? {
            Node::String(r) => Some(r.as_ref()),
            _ => None,
        },
        _ => None,
    }
}

/// Where a breakpoint can go in a system prompt or a message's content: `Some(None)` for a
/// non-empty string (made one text block), `Some(Some(i))` for the last block that may carry
/// one (an object; not a thinking block, which cannot be marked, nor an empty text block,
/// which Anthropic refuses to mark), restricted to `types` when not empty.
fn markable_block(content: &Node<'_>, types: &[&str]) -> Option<Option<usize>> {
    match content {
        Node::String(s) if !s.is_empty() => Some(None),
        Node::Array(blocks) => blocks
            .iter()
            .rposition(|b| {
                let Node::Object(f) = b else { return false };
                let kind = match field(f, "type") {
                    Some(Node::String(t)) => t.as_ref(),
                    _ => return false,
                };
                let empty_text = kind == "text"
                    && !matches!(field(f, "text"), Some(Node::String(t)) if !t.is_empty());
                let allowed = types.is_empty() || types.contains(&kind);
                allowed && !empty_text && !matches!(kind, "thinking" | "redacted_thinking")
            })
            .map(Some),
        _ => None,
    }
}

/// Writes array `node` with a breakpoint on its object at `at`.
fn write_marked_array<S: Sink>(node: &Node<'_>, at: usize, out: &mut S) -> bool {
    let Node::Array(items) = node else {
        return false;
    };
    out.bytes(b"[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.bytes(b",");
        }
        match item {
            Node::Object(fields) if i == at => {
                write_object_edited(fields, out, |_, _| false, Some(CACHE_CONTROL))
            }
            other => write_in_order(other, out),
        }
    }
    out.bytes(b"]");
    true
}

/// Writes a system prompt or message content with a breakpoint: a string as one marked text
/// block, a block list with block `at` marked.
fn write_marked_content<S: Sink>(node: &Node<'_>, at: Option<usize>, out: &mut S) -> bool {
    match (node, at) {
        (Node::String(_), None) => {
            out.bytes(br#"[{"type":"text","text":"#);
            write_in_order(node, out);
            out.bytes(b",");
            out.bytes(CACHE_CONTROL);
            out.bytes(b"}]");
            true
        }
        (Node::Array(_), Some(i)) => write_marked_array(node, i, out),
        _ => false,
    }
}

/// Writes the `messages` array with message `m`'s content marked at `at`.
fn write_marked_message<S: Sink>(
    node: &Node<'_>,
    m: usize,
    at: Option<usize>,
    out: &mut S,
) -> bool {
    let Node::Array(messages) = node else {
        return false;
    };
    out.bytes(b"[");
    for (i, message) in messages.iter().enumerate() {
        if i > 0 {
            out.bytes(b",");
        }
        match message {
            Node::Object(fields) if i == m => write_object_edited(
                fields,
                out,
                |f, out| f.key == "content" && write_marked_content(&f.value, at, out),
                None,
            ),
            other => write_in_order(other, out),
        }
    }
    out.bytes(b"]");
    true
}

/// The length of `node` written compactly, in bytes.
fn json_len(node: &Node<'_>) -> usize {
    let mut count = Count(0);
    write_in_order(node, &mut count);
    count.0
}

/// A [`Sink`] that only counts.
struct Count(usize);

impl Sink for Count {
    fn bytes(&mut self, b: &[u8]) {
        self.0 += b.len();
    }
    fn number(&mut self, n: &serde_json::Number) {
        self.0 += n.to_string().len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// `tokens` tokens of text, by [`BYTES_PER_TOKEN`].
    fn text(tokens: usize) -> String {
        "lorem ipsum dolor sit amet ".repeat(tokens * BYTES_PER_TOKEN / 27 + 1)
    }

    fn mark(body: &Value, model: Option<&str>) -> Option<(Value, usize)> {
        let raw = serde_json::to_vec(body).unwrap();
        let parsed = ParsedBody::new(&raw);
        let marked = with_breakpoints(&parsed, model, &CacheMinimums::default())?;
        let value = serde_json::from_slice(&marked.body).expect("the marked body is JSON");
        Some((value, marked.breakpoints))
    }

    const EPHEMERAL: fn() -> Value = || json!({"type": "ephemeral"});

    /// Every path that has a `cache_control`, as `a.b[0].c`.
    fn marked_paths(v: &Value, at: &str, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    if k == "cache_control" {
                        assert_eq!(v, &EPHEMERAL(), "{at}");
                        out.push(at.trim_start_matches('.').to_string());
                    } else {
                        marked_paths(v, &format!("{at}.{k}"), out);
                    }
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    marked_paths(v, &format!("{at}[{i}]"), out);
                }
            }
            _ => {}
        }
    }

    fn paths(v: &Value) -> Vec<String> {
        let mut out = Vec::new();
        marked_paths(v, "", &mut out);
        out
    }

    #[test]
    fn a_long_string_system_becomes_one_marked_text_block() {
        let system = text(1100);
        let body = json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 64,
            "system": system,
            "messages": [{"role": "user", "content": "Hi"}],
        });
        let (marked, n) = mark(&body, None).expect("marked");
        assert_eq!(n, 1);
        assert_eq!(
            marked["system"],
            json!([{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}])
        );
        // Everything else is as it was, in its order.
        let mut rest = marked.clone();
        rest["system"] = json!(system);
        assert_eq!(
            serde_json::to_vec(&rest).unwrap(),
            serde_json::to_vec(&body).unwrap()
        );
    }

    #[test]
    fn tools_system_and_the_turn_before_the_question_are_marked_never_more_than_the_limit() {
        let body = json!({
            "model": "claude-opus-4-1",
            "tools": [
                {"name": "a", "description": text(700), "input_schema": {"type": "object"}},
                {"name": "b", "description": "two", "input_schema": {"type": "object"}},
            ],
            "system": [{"type": "text", "text": "You are terse."}, {"type": "text", "text": text(50)}],
            "messages": [
                {"role": "user", "content": text(300)},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "text", "text": "Sure."},
                    {"type": "text", "text": ""},
                ]},
                {"role": "user", "content": "And then?"},
            ],
        });
        let (marked, n) = mark(&body, None).expect("marked");
        // The tools alone (~700 tokens) are under Opus's 1024; tools + system too; the
        // conversation before the question is over it.
        assert_eq!(paths(&marked), ["messages[1].content[1]"]);
        assert_eq!(n, 1);
        // Longer tools: all three, and still within the limit.
        let mut long = body.clone();
        long["tools"][1]["description"] = json!(text(400));
        let (marked, n) = mark(&long, None).expect("marked");
        assert_eq!(
            paths(&marked),
            ["tools[1]", "system[1]", "messages[1].content[1]"]
        );
        assert_eq!(n, 3);
        assert!(n <= MAX_BREAKPOINTS);
    }

    #[test]
    fn thresholds_follow_the_model_class() {
        // ~1500 tokens: over Sonnet's 1024, under Haiku's 2048.
        let body = |model: &str| {
            json!({
                "model": model,
                "system": text(1500),
                "messages": [{"role": "user", "content": "Q"}],
            })
        };
        assert!(mark(&body("claude-sonnet-4-0"), None).is_some());
        assert!(mark(&body("claude-opus-4-1"), None).is_some());
        assert!(mark(&body("claude-3-5-haiku-latest"), None).is_none());
        assert!(mark(&body("claude-haiku-4-5"), None).is_none());
        // ~3000 tokens: over Haiku 3.5's 2048, under the 4096 of Haiku 4.5 and Opus 4.5 / 4.6.
        let long = |model: &str| {
            json!({
                "model": model,
                "system": text(3000),
                "messages": [{"role": "user", "content": "Q"}],
            })
        };
        assert!(mark(&long("claude-3-5-haiku-latest"), None).is_some());
        assert!(mark(&long("claude-sonnet-4-5-20250929"), None).is_some());
        for model in [
            "claude-haiku-4-5-20251001",
            "claude-opus-4-5-20251101",
            "claude-opus-4-6",
        ] {
            assert!(mark(&long(model), None).is_none(), "{model}");
        }
        // A target's model rewrite decides, and is applied.
        let (marked, _) = mark(&body("claude-3-5-haiku-latest"), Some("claude-sonnet-4-5"))
            .expect("marked for Sonnet");
        assert_eq!(marked["model"], "claude-sonnet-4-5");
        // Not a model the table knows: nothing.
        assert!(mark(&body("gpt-4o"), None).is_none());
        // Configured minimums apply.
        let raw = serde_json::to_vec(&body("claude-3-5-haiku-latest")).unwrap();
        let low = CacheMinimums::new(&BTreeMap::from([("claude-3-5-haiku*".into(), 1000)]));
        assert!(with_breakpoints(&ParsedBody::new(&raw), None, &low).is_some());
    }

    #[test]
    fn a_short_prompt_gets_none() {
        let body = json!({
            "model": "claude-sonnet-4-5",
            "system": "Be brief.",
            "tools": [{"name": "t", "input_schema": {}}],
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "Bye"},
            ],
        });
        assert!(mark(&body, None).is_none());
    }

    #[test]
    fn a_request_with_its_own_cache_control_anywhere_is_left_alone() {
        let mut body = json!({
            "model": "claude-sonnet-4-5",
            "system": text(2000),
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Q", "cache_control": {"type": "ephemeral"}}]},
            ],
        });
        assert!(mark(&body, None).is_none());
        // Deep in a tool result, with a TTL: still the client's own.
        body["messages"] = json!([
            {"role": "user", "content": "Q"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "n", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                "content": [{"type": "text", "text": "r", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}]},
        ]);
        assert!(mark(&body, None).is_none());
        // The words in a prompt are not keys.
        body["messages"] = json!([{"role": "user", "content": "what is cache_control?"}]);
        assert!(mark(&body, None).is_some());
    }

    #[test]
    fn the_message_before_the_final_user_turn_is_marked_string_or_blocks() {
        let body = json!({
            "model": "claude-sonnet-4-5",
            "messages": [
                {"role": "user", "content": text(1200)},
                {"role": "assistant", "content": "An answer."},
                {"role": "user", "content": "Next question"},
                {"role": "assistant", "content": "Prefill"},
            ],
        });
        let (marked, n) = mark(&body, None).expect("marked");
        assert_eq!(n, 1);
        assert_eq!(
            marked["messages"][1]["content"],
            json!([{"type": "text", "text": "An answer.", "cache_control": {"type": "ephemeral"}}])
        );
        assert_eq!(marked["messages"][3]["content"], "Prefill");
        // One message, the question: no earlier turn to mark.
        let single = json!({
            "model": "claude-sonnet-4-5",
            "messages": [{"role": "user", "content": text(3000)}],
        });
        assert!(mark(&single, None).is_none());
    }

    #[test]
    fn not_a_messages_body_is_not_marked() {
        for raw in [
            &br#"["claude-sonnet-4-5"]"#[..],
            b"not json",
            br#"{"model":"claude-sonnet-4-5","prompt":"x"}"#,
            br#"{"model":5,"messages":[]}"#,
        ] {
            let parsed = ParsedBody::new(raw);
            assert!(with_breakpoints(&parsed, None, &CacheMinimums::default()).is_none());
        }
        assert!(is_messages_path("/v1/messages"));
        assert!(is_messages_path("/anthropic/v1/messages?beta=true"));
        assert!(!is_messages_path("/v1/messages/count_tokens"));
        assert!(!is_messages_path("/v1/messages/batches"));
        assert!(!is_messages_path("/v1/chat/completions"));
    }

    #[test]
    fn untouched_parts_keep_their_bytes_escapes_and_numbers_included() {
        // Raw text (not via serde_json) with escapes, a float and unicode: the marked body is
        // what serde_json would write for the same edit.
        let long = text(1100);
        let raw = format!(
            r#"{{"temperature":0.7,"model":"claude-sonnet-4-5","system":"line\none \"q\" caf\u00e9 {long}","messages":[{{"role":"user","content":"é"}}],"max_tokens":1e3}}"#
        );
        let parsed = ParsedBody::new(raw.as_bytes());
        let marked = with_breakpoints(&parsed, None, &CacheMinimums::default()).unwrap();
        let mut reference: serde_json::Map<String, Value> = serde_json::from_str(&raw).unwrap();
        let system = reference["system"].clone();
        reference["system"] =
            json!([{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}]);
        assert_eq!(
            String::from_utf8(marked.body).unwrap(),
            serde_json::to_string(&reference).unwrap()
        );
    }
}
