//! A request body parsed once per request: its JSON tree, borrowing strings from the bytes, read
//! by route matching (the model), the cache key (its canonical form, `cache::key`), the model
//! rewrite of each failover target, and the prompt-cache breakpoints an Anthropic target gets
//! (`providers::anthropic`, which writes the tree back with [`write_object_edited`]).
//!
//! The tree is built on first use, and only for bodies that start with `{` or `[`: a route
//! that neither matches on the model, caches, nor rewrites never parses its bodies.

use serde::de::{self, Deserialize, Deserializer, Visitor};
use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

/// The bytes of a request body and, once asked for, its JSON tree.
pub struct ParsedBody<'a> {
    raw: &'a [u8],
    /// `None` inside: not a JSON object or array.
    tree: OnceLock<Option<Node<'a>>>,
}

/// A parsed JSON value that borrows its strings from the body where it can.
///
/// Why not `serde_json::Value`: a prompt is mostly long strings, and a `Value` copies each one
/// and re-escapes it on output. A string without escapes in the body is written back as the
/// exact bytes it came from — the same bytes serde_json's escaping would produce, since only
/// `"`, `\` and control characters are escaped and none of them can stand raw in a JSON
/// string — so every form written from the tree matches serde_json's, for a fraction of the
/// work.
#[derive(Debug)]
pub enum Node<'a> {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(Cow<'a, str>),
    Array(Vec<Node<'a>>),
    /// Sorted by key (byte order), one field per key: the canonical order, and each key's
    /// value is the last one written for it, as any JSON map reads it.
    Object(Vec<Field<'a>>),
}

/// One key of a JSON object.
#[derive(Debug)]
pub struct Field<'a> {
    /// Borrowed when the key had no escapes in the body (see [`Node`]).
    pub key: Cow<'a, str>,
    /// The last value written for the key.
    pub value: Node<'a>,
    /// Where the key first appeared among the object's fields, counting from 0: the order the
    /// rewrite writes them back in.
    pub position: u32,
    /// The key appeared more than once.
    pub repeated: bool,
}

impl<'a> ParsedBody<'a> {
    pub fn new(raw: &'a [u8]) -> ParsedBody<'a> {
        ParsedBody {
            raw,
            tree: OnceLock::new(),
        }
    }

    /// The body as received.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The JSON tree, when the body is a JSON object or array (parsed on the first call).
    pub fn tree(&self) -> Option<&Node<'a>> {
        self.tree.get_or_init(|| parse(self.raw)).as_ref()
    }

    /// The tree if the body was parsed already (`Some(None)`: it is not a JSON object or
    /// array); `None` when nothing asked for it yet. Never parses.
    pub fn parsed(&self) -> Option<Option<&Node<'a>>> {
        self.tree.get().map(Option::as_ref)
    }

    /// The `model` field, when the body is a JSON object with a string model.
    ///
    /// Kept exactly as the proxy has always read it (a serde struct with one optional
    /// `model` field), quirks included: a repeated `model` is no model, and so is a `null`
    /// one; a one-element array holding a string gives that string.
    pub fn model(&self) -> Option<Cow<'_, str>> {
        let Some(tree) = self.tree() else {
            return if starts_like_json(self.raw) {
                // Not a tree, yet it may still have a model: the struct reading skips the other
                // fields without checking what the tree needs (number range, surrogate pairs,
                // nesting depth).
                model_of(self.raw).map(Cow::Owned)
            } else {
                None
            };
        };
        let value = match tree {
            Node::Object(fields) => {
                let field = fields
                    .binary_search_by(|f| f.key.as_ref().cmp("model"))
                    .ok()
                    .map(|i| &fields[i])?;
                if field.repeated {
                    return None;
                }
                &field.value
            }
            Node::Array(items) if items.len() == 1 => &items[0],
            _ => return None,
        };
        match value {
            Node::String(s) => Some(Cow::Borrowed(s.as_ref())),
            _ => None,
        }
    }

    /// [`ParsedBody::model`] without building the tree, for when nothing else will read the
    /// body: the struct reading skips what it does not need and allocates nothing but the
    /// model (a third of the tree's cost on a chat request). Uses the tree if it is built.
    pub fn peek_model(&self) -> Option<Cow<'_, str>> {
        match self.tree.get() {
            Some(_) => self.model(),
            None => model_of(self.raw).map(Cow::Owned),
        }
    }

    /// The body with its top-level `model` replaced by `model`, when it is a JSON object with a
    /// `model` field (of any type); `None` otherwise (send the body as it is).
    ///
    /// Written compactly, fields in their original order (a repeated key where it first
    /// appeared, with its last value): byte for byte what serde_json makes of the body read
    /// into its order-preserving map, which is how the rewrite has always been done.
    pub fn with_model(&self, model: &str) -> Option<Vec<u8>> {
        let Some(Node::Object(fields)) = self.tree() else {
            return None;
        };
        fields
            .binary_search_by(|f| f.key.as_ref().cmp("model"))
            .ok()?;
        let mut out = Vec::with_capacity(self.raw.len() + model.len());
        write_object_in_order(fields, Some(model), &mut out);
        Some(out)
    }
}

/// True when the first non-whitespace byte opens an object or an array.
fn starts_like_json(raw: &[u8]) -> bool {
    let first = raw.iter().find(|b| !b.is_ascii_whitespace());
    matches!(first, Some(b'{') | Some(b'['))
}

/// The tree of `raw`, when it is a JSON object or array. Only those are worth parsing.
fn parse(raw: &[u8]) -> Option<Node<'_>> {
    if !starts_like_json(raw) {
        return None;
    }
    serde_json::from_slice::<Node>(raw).ok()
}

/// The model as a serde struct reads it: what [`ParsedBody::model`] falls back to when the
/// body has no tree.
fn model_of(raw: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct ModelOnly {
        model: Option<String>,
    }
    serde_json::from_slice::<ModelOnly>(raw).ok()?.model
}

/// Where a tree is written: a buffer here; a byte count and the hash in `cache::key`.
pub trait Sink {
    fn bytes(&mut self, b: &[u8]);
    /// A string decoded from escapes, escaped as serde_json escapes it (quotes included).
    fn escaped(&mut self, s: &str) {
        write_escaped(s, self);
    }
    /// A number as serde_json prints it.
    fn number(&mut self, n: &serde_json::Number);
}

impl Sink for Vec<u8> {
    fn bytes(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
    fn number(&mut self, n: &serde_json::Number) {
        serde_json::to_writer(self, n).expect("writing to a Vec cannot fail");
    }
}

/// True for the bytes serde_json escapes in a string: `"`, `\` and control characters.
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Writes `s` quoted and escaped exactly as serde_json does (`\"`, `\\`, `\b`, `\f`, `\n`,
/// `\r`, `\t`, other control characters as `\u00xx`, everything else as it is), skipping
/// clean text 16 bytes at a time: prompts are long runs of text with a few newlines.
pub fn write_escaped<S: Sink + ?Sized>(s: &str, out: &mut S) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.bytes(b"\"");
    let mut start = 0;
    for (at, block) in bytes.chunks(16).enumerate() {
        // A whole-block check (no early exit) compiles to a few vector instructions.
        if !block
            .iter()
            .fold(false, |dirty, &b| dirty | needs_escape(b))
        {
            continue;
        }
        for (i, &b) in block.iter().enumerate() {
            if !needs_escape(b) {
                continue;
            }
            let i = at * 16 + i;
            out.bytes(&bytes[start..i]);
            start = i + 1;
            match b {
                b'"' => out.bytes(b"\\\""),
                b'\\' => out.bytes(b"\\\\"),
                0x08 => out.bytes(b"\\b"),
                0x0c => out.bytes(b"\\f"),
                b'\n' => out.bytes(b"\\n"),
                b'\r' => out.bytes(b"\\r"),
                b'\t' => out.bytes(b"\\t"),
                _ => out.bytes(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ]),
            }
        }
    }
    out.bytes(&bytes[start..]);
    out.bytes(b"\"");
}

/// Writes `node` compactly with object fields in the tree's order: sorted by key, one per key
/// (the canonical order of the cache key).
pub fn write_sorted(node: &Node<'_>, out: &mut impl Sink) {
    match node {
        Node::Object(fields) => write_fields(fields.iter(), out),
        Node::Array(items) => {
            out.bytes(b"[");
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.bytes(b",");
                }
                write_sorted(v, out);
            }
            out.bytes(b"]");
        }
        scalar => write_scalar(scalar, out),
    }
}

/// Writes an object of `fields` (a selection of an object's, in the tree's order).
pub fn write_fields<'f, 'a: 'f>(fields: impl Iterator<Item = &'f Field<'a>>, out: &mut impl Sink) {
    out.bytes(b"{");
    for (i, f) in fields.enumerate() {
        if i > 0 {
            out.bytes(b",");
        }
        write_str(&f.key, out);
        out.bytes(b":");
        write_sorted(&f.value, out);
    }
    out.bytes(b"}");
}

/// Writes `node` compactly with object fields in their original order.
pub fn write_in_order(node: &Node<'_>, out: &mut impl Sink) {
    match node {
        Node::Object(fields) => write_object_in_order(fields, None, out),
        Node::Array(items) => {
            out.bytes(b"[");
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.bytes(b",");
                }
                write_in_order(v, out);
            }
            out.bytes(b"]");
        }
        scalar => write_scalar(scalar, out),
    }
}

/// An object's fields in their original order; `model`, when given, replaces the value of the
/// `model` field.
fn write_object_in_order<S: Sink>(fields: &[Field<'_>], model: Option<&str>, out: &mut S) {
    let edit = |f: &Field<'_>, out: &mut S| match model.filter(|_| f.key == "model") {
        Some(model) => {
            out.escaped(model);
            true
        }
        None => false,
    };
    write_object_edited(fields, out, edit, None);
}

/// Writes an object of `fields` in their original order, compactly. `edit` may write a
/// field's value itself (returning true; the key is written already); otherwise the value is
/// written as it is. `append`, a `"key":value` text, is added as the last field.
pub fn write_object_edited<S: Sink>(
    fields: &[Field<'_>],
    out: &mut S,
    mut edit: impl FnMut(&Field<'_>, &mut S) -> bool,
    append: Option<&[u8]>,
) {
    let mut order: Vec<&Field> = fields.iter().collect();
    order.sort_unstable_by_key(|f| f.position);
    out.bytes(b"{");
    for (i, f) in order.iter().enumerate() {
        if i > 0 {
            out.bytes(b",");
        }
        write_str(&f.key, out);
        out.bytes(b":");
        if !edit(f, out) {
            write_in_order(&f.value, out);
        }
    }
    if let Some(extra) = append {
        if !order.is_empty() {
            out.bytes(b",");
        }
        out.bytes(extra);
    }
    out.bytes(b"}");
}

fn write_scalar(node: &Node<'_>, out: &mut impl Sink) {
    match node {
        Node::Null => out.bytes(b"null"),
        Node::Bool(b) => out.bytes(if *b { b"true" } else { b"false" }),
        Node::Number(n) => out.number(n),
        Node::String(s) => write_str(s, out),
        Node::Array(_) | Node::Object(_) => unreachable!("containers are written by the callers"),
    }
}

/// A borrowed string had no escapes in the body, so it needs none now (see [`Node`]); an owned
/// one (decoded from escapes) is escaped as serde_json does.
#[allow(clippy::ptr_arg)] // Borrowed or Owned is the point: it says whether there were escapes.
pub fn write_str(s: &Cow<'_, str>, out: &mut impl Sink) {
    match s {
        Cow::Borrowed(raw) => {
            out.bytes(b"\"");
            out.bytes(raw.as_bytes());
            out.bytes(b"\"");
        }
        Cow::Owned(decoded) => out.escaped(decoded),
    }
}

/// A string that borrows from the input when it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Node<'de>, E> {
                Ok(Node::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node<'de>, E> {
                Ok(Node::Bool(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node<'de>, E> {
                Ok(Node::Number(v.into()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node<'de>, E> {
                Ok(Node::Number(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node<'de>, E> {
                serde_json::Number::from_f64(v)
                    .map(Node::Number)
                    .ok_or_else(|| E::custom("not a JSON number"))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Node<'de>, E> {
                Ok(Node::String(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node<'de>, E> {
                Ok(Node::String(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Node<'de>, E> {
                Ok(Node::String(Cow::Owned(v)))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Array(items))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
                let mut fields: Vec<Field<'de>> = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some((Text(key), value)) = map.next_entry::<Text, Node>()? {
                    let position = u32::try_from(fields.len())
                        .map_err(|_| de::Error::custom("too many fields"))?;
                    fields.push(Field {
                        key,
                        value,
                        position,
                        repeated: false,
                    });
                }
                // Stable, so among duplicate keys the first written comes first…
                fields.sort_by(|a, b| a.key.cmp(&b.key));
                // …and keeps its place, taking each later duplicate's value in turn.
                fields.dedup_by(|later, kept| {
                    if later.key != kept.key {
                        return false;
                    }
                    std::mem::swap(&mut later.value, &mut kept.value);
                    kept.repeated = true;
                    true
                });
                Ok(Node::Object(fields))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The model rewrite as first implemented (through serde_json's order-preserving map): the
    /// oracle the tree's rewrite must match byte for byte.
    fn rewrite_reference(raw: &[u8], model: &str) -> Option<Vec<u8>> {
        let mut object =
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(raw).ok()?;
        if !object.contains_key("model") {
            return None;
        }
        object.insert("model".into(), serde_json::Value::String(model.into()));
        Some(serde_json::to_vec(&object).unwrap())
    }

    fn model(raw: &[u8]) -> Option<String> {
        let parsed = ParsedBody::new(raw);
        let peeked = parsed.peek_model().map(Cow::into_owned);
        let read = parsed.model().map(Cow::into_owned);
        assert_eq!(peeked, read, "{}", String::from_utf8_lossy(raw));
        assert_eq!(parsed.peek_model().map(Cow::into_owned), read);
        read
    }

    #[test]
    fn finds_the_model_as_the_struct_reading_does() {
        for body in [
            &br#"{"messages":[],"model":"gpt-4o"}"#[..],
            b"not json",
            br#"{"model":5}"#,
            br#"{"model":null}"#,
            br#"{"model":"a","model":"b"}"#,
            br#"{"mod\u0065l":"escaped-key"}"#,
            br#"  ["in-an-array"]"#,
            br#"["a","b"]"#,
            br#"[]"#,
            br#"{"model":"a","x":1e400}"#,
            br#"{"model":"a","x":"\ud800"}"#,
            br#"{"model":"a"} trailing"#,
            b"",
        ] {
            assert_eq!(
                model(body),
                model_of(body),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // deeper than the parser's recursion limit, in a field the struct reading skips
        let deep = format!(
            r#"{{"model":"deep","x":{}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert_eq!(ParsedBody::new(deep.as_bytes()).tree().map(|_| ()), None);
        assert_eq!(model(deep.as_bytes()).as_deref(), Some("deep"));
        assert_eq!(model(br#"{"model":"gpt-4o"}"#).as_deref(), Some("gpt-4o"));
    }

    #[test]
    fn rewrites_the_model_as_the_map_rewrite_did() {
        for body in [
            &br#"{"z":1,"model":"a","a":[1.5,-0.0,1e100,{"k":"x","k":"y"}],"s":"caf\u00e9 \/ \n"}"#
                [..],
            br#"{"model":"a","b":1,"model":"c","b":2}"#,
            br#" { "model" : null , "x" : "\ud83d\ude00" } "#,
            br#"{"a":1}"#,
            br#"["model"]"#,
            b"plain",
        ] {
            assert_eq!(
                ParsedBody::new(body).with_model("m-\"2\""),
                rewrite_reference(body, "m-\"2\""),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    /// JSON text with repeated keys, escapes, non-ASCII text and floats, which a
    /// `serde_json::Value` cannot hold (it keeps one value per key).
    pub(crate) fn arb_json_text() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            any::<bool>().prop_map(|b| b.to_string()),
            any::<i64>().prop_map(|i| i.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| serde_json::to_string(&f).unwrap()),
            "[a-z\"\\\\\n\t\u{1}é😀 ]{0,8}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            Just(r#""caf\u00e9 \/""#.to_string()),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5)
                    .prop_map(|items| format!("[{}]", items.join(","))),
                prop::collection::vec((prop_oneof!["[a-c]", Just("model".into())], inner), 0..6)
                    .prop_map(|fields| {
                        let fields: Vec<String> = fields
                            .into_iter()
                            .map(|(k, v)| format!("{}: {v}", serde_json::to_string(&k).unwrap()))
                            .collect();
                        format!("{{ {} }}", fields.join(" ,"))
                    }),
            ]
        })
    }

    proptest! {
        #[test]
        fn escaping_is_serde_jsons(s in "\\PC*|[\u{0}-\u{7f}]{0,40}|[a-z\n\"\\\\]{0,70}") {
            let mut out = Vec::new();
            write_escaped(&s, &mut out);
            prop_assert_eq!(out, serde_json::to_vec(&s).unwrap());
        }

        #[test]
        fn rewrite_matches_the_map_rewrite(text in arb_json_text()) {
            let body = format!(r#"{{"model":"x","p":{text},"q":{text}}}"#);
            prop_assert_eq!(
                ParsedBody::new(body.as_bytes()).with_model("gpt-4o"),
                rewrite_reference(body.as_bytes(), "gpt-4o")
            );
            prop_assert_eq!(
                ParsedBody::new(text.as_bytes()).with_model("gpt-4o"),
                rewrite_reference(text.as_bytes(), "gpt-4o")
            );
        }

        #[test]
        fn model_matches_the_struct_reading(text in arb_json_text()) {
            prop_assert_eq!(model(text.as_bytes()), model_of(text.as_bytes()));
            let body = format!(r#"{{"p":{text},"model":"m"}}"#);
            prop_assert_eq!(model(body.as_bytes()), model_of(body.as_bytes()));
        }
    }
}
