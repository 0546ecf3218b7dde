//! The cache key contract (version 1): blake3 over a canonical form of the request.
//!
//! `key = blake3("promptgate-cache-v1" | scope | route | method | path | query | vary | body)`,
//! each part length-prefixed so no two different requests can produce the same byte stream.
//! JSON bodies are canonicalized (object keys sorted, no insignificant whitespace, values
//! re-serialized, `ignore_fields` dropped at the top level), so requests that differ only in
//! key order or whitespace share a key. Other bodies are hashed as raw bytes.
//! Changing anything here changes every key: bump the version with it.

use serde::de::{self, Deserialize, Deserializer, Visitor};
use std::borrow::Cow;
use std::fmt;

pub const KEY_VERSION: &str = "promptgate-cache-v1";

/// A 32-byte blake3 cache key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    pub fn hex(&self) -> String {
        blake3::Hash::from(self.0).to_hex().to_string()
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.hex())
    }
}

/// Everything that identifies a request's answer.
pub struct KeyInput<'a, 'b> {
    /// `"shared"`, or the hex hash of the client's credential (never the credential itself).
    pub scope: &'a str,
    pub route: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    /// The raw query string (it is sorted here; a `key` parameter belongs in `scope`).
    pub query: Option<&'a str>,
    /// `(lowercase name, value)` of each configured vary header present, in config order.
    pub vary: &'a [(&'a str, &'a [u8])],
    pub body: &'b [u8],
    pub ignore_fields: &'a [String],
}

/// What was hashed for the body: the canonical JSON, or the raw bytes.
pub enum CanonicalBody<'a> {
    Json(Vec<u8>),
    Raw(&'a [u8]),
}

impl CanonicalBody<'_> {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            CanonicalBody::Json(v) => v,
            CanonicalBody::Raw(b) => b,
        }
    }
}

fn part(h: &mut blake3::Hasher, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// The query with its `&`-separated pairs sorted; the `key` parameter (a credential) left out.
pub fn canonical_query(query: Option<&str>) -> String {
    let Some(q) = query else {
        return String::new();
    };
    let mut pairs: Vec<&str> = q
        .split('&')
        .filter(|p| !p.is_empty() && *p != "key" && !p.starts_with("key="))
        .collect();
    pairs.sort_unstable();
    pairs.join("&")
}

/// Derives the key, returning the canonical body too (for `promptgate key`).
pub fn derive<'b>(input: &KeyInput<'_, 'b>) -> (CacheKey, CanonicalBody<'b>) {
    let body = canonical_body(input.body, input.ignore_fields);
    let mut h = blake3::Hasher::new();
    part(&mut h, KEY_VERSION.as_bytes());
    part(&mut h, input.scope.as_bytes());
    part(&mut h, input.route.as_bytes());
    part(&mut h, input.method.as_bytes());
    part(&mut h, input.path.as_bytes());
    part(&mut h, canonical_query(input.query).as_bytes());
    h.update(&(input.vary.len() as u64).to_le_bytes());
    for (name, value) in input.vary {
        part(&mut h, name.as_bytes());
        part(&mut h, value);
    }
    // The body kind is hashed too, so raw bytes can never collide with a canonical JSON form.
    part(
        &mut h,
        match body {
            CanonicalBody::Json(_) => b"json",
            CanonicalBody::Raw(_) => b"raw",
        },
    );
    part(&mut h, body.as_bytes());
    (CacheKey(*h.finalize().as_bytes()), body)
}

/// Canonical JSON of `body` when it is JSON, else the raw bytes.
pub fn canonical_body<'a>(body: &'a [u8], ignore_fields: &[String]) -> CanonicalBody<'a> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    // Only objects and arrays are worth parsing; anything else is hashed as it is.
    if !matches!(first, Some(b'{') | Some(b'[')) {
        return CanonicalBody::Raw(body);
    }
    match serde_json::from_slice::<Node>(body) {
        Ok(mut node) => {
            if let Node::Object(fields) = &mut node {
                fields.retain(|(k, _)| !ignore_fields.iter().any(|f| f == k.as_ref()));
            }
            let mut out = Vec::with_capacity(body.len());
            node.write(&mut out);
            CanonicalBody::Json(out)
        }
        Err(_) => CanonicalBody::Raw(body),
    }
}

/// A parsed JSON value that borrows its strings from the body where it can.
///
/// Why not `serde_json::Value`: a prompt is mostly long strings, and a `Value` copies each one
/// and re-escapes it on output. A string without escapes in the body is written back as the
/// exact bytes it came from — the same bytes serde_json's escaping would produce, since only
/// `"`, `\` and control characters are escaped and none of them can stand raw in a JSON
/// string — so the canonical form (and the v1 key) is unchanged, for a fraction of the work.
enum Node<'a> {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(Cow<'a, str>),
    Array(Vec<Node<'a>>),
    /// Fields as written; sorted (last duplicate wins, as in any JSON map) on output.
    Object(Vec<(Cow<'a, str>, Node<'a>)>),
}

impl Node<'_> {
    /// Writes the node with object keys sorted and no whitespace.
    fn write(&mut self, out: &mut Vec<u8>) {
        match self {
            Node::Null => out.extend_from_slice(b"null"),
            Node::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Node::Number(n) => {
                serde_json::to_writer(&mut *out, n).expect("writing to a Vec cannot fail")
            }
            Node::String(s) => write_str(s, out),
            Node::Array(items) => {
                out.push(b'[');
                for (i, v) in items.iter_mut().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    v.write(out);
                }
                out.push(b']');
            }
            Node::Object(fields) => {
                // Stable, so among duplicate keys the last written stays last…
                fields.sort_by(|a, b| a.0.cmp(&b.0));
                out.push(b'{');
                let mut first = true;
                for i in 0..fields.len() {
                    // …and only that last one is written.
                    if fields.get(i + 1).is_some_and(|next| next.0 == fields[i].0) {
                        continue;
                    }
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    let (k, v) = &mut fields[i];
                    write_str(k, out);
                    out.push(b':');
                    v.write(out);
                }
                out.push(b'}');
            }
        }
    }
}

/// A borrowed string had no escapes in the body, so it needs none now; an owned one (decoded
/// from escapes) is escaped by serde_json.
#[allow(clippy::ptr_arg)] // Borrowed or Owned is the point: it says whether there were escapes.
fn write_str(s: &Cow<'_, str>, out: &mut Vec<u8>) {
    match s {
        Cow::Borrowed(raw) => {
            out.push(b'"');
            out.extend_from_slice(raw.as_bytes());
            out.push(b'"');
        }
        Cow::Owned(decoded) => {
            serde_json::to_writer(&mut *out, decoded).expect("writing to a Vec cannot fail")
        }
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
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some((Text(k), v)) = map.next_entry::<Text, Node>()? {
                    fields.push((k, v));
                }
                Ok(Node::Object(fields))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    /// The v1 canonical form as first implemented, on a `serde_json::Value` tree: the oracle
    /// the borrowing implementation must match byte for byte (it is the key contract).
    fn reference(body: &[u8], ignore: &[String]) -> Option<Vec<u8>> {
        fn write(value: &Value, out: &mut Vec<u8>) {
            match value {
                Value::Object(map) => {
                    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                    out.push(b'{');
                    for (i, (k, v)) in entries.into_iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        serde_json::to_writer(&mut *out, k).unwrap();
                        out.push(b':');
                        write(v, out);
                    }
                    out.push(b'}');
                }
                Value::Array(items) => {
                    out.push(b'[');
                    for (i, v) in items.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        write(v, out);
                    }
                    out.push(b']');
                }
                scalar => serde_json::to_writer(&mut *out, scalar).unwrap(),
            }
        }
        let mut value: Value = serde_json::from_slice(body).ok()?;
        if let Value::Object(map) = &mut value {
            for f in ignore {
                map.remove(f);
            }
        }
        let mut out = Vec::new();
        write(&value, &mut out);
        Some(out)
    }

    fn fast(body: &[u8]) -> Vec<u8> {
        match canonical_body(body, &ignore()) {
            CanonicalBody::Json(v) => v,
            CanonicalBody::Raw(_) => panic!("not JSON: {}", String::from_utf8_lossy(body)),
        }
    }

    #[test]
    fn escapes_duplicates_and_unicode_match_the_reference() {
        for body in [
            &br#"{"a":"caf\u00e9","b":"caf\u00e9 \"q\" \\ \n \u0001 \u2028 \ud83d\ude00"}"#[..],
            r#"{"a":"café 😀","z":[1,-2,3.5,1e100,-0.0,12345678901234567890]}"#.as_bytes(),
            br#"{"k":1,"k":2,"a":{"k":"x","k":"y"},"user":"u"}"#,
            br#"[{"b":null,"a":true},[],{},"",false]"#,
        ] {
            assert_eq!(
                fast(body),
                reference(body, &ignore()).unwrap(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // an escaped and an unescaped spelling of one string are one key
        assert_eq!(
            fast(br#"{"a":"caf\u00e9"}"#),
            fast(r#"{"a":"café"}"#.as_bytes())
        );
    }

    /// Like `arb_json`, with strings that need escaping, non-ASCII text and float numbers.
    fn arb_json_text() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "[a-z\"\\\\\n\t\u{1}\u{7f}é€😀 ]{0,10}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map("[a-dé\"]{1,3}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn ignore() -> Vec<String> {
        vec!["user".into(), "metadata".into()]
    }

    fn key_of(body: &[u8]) -> CacheKey {
        let ignore = ignore();
        derive(&KeyInput {
            scope: "shared",
            route: "openai",
            method: "POST",
            path: "/openai/v1/chat/completions",
            query: None,
            vary: &[],
            body,
            ignore_fields: &ignore,
        })
        .0
    }

    /// Pins the key format: if this changes, every stored entry is orphaned. Bump KEY_VERSION.
    /// The values were cross-checked with an independent Python blake3 implementation of the
    /// layout described at the top of this file.
    /// Found by the `canonical_json` fuzz target: without serde_json's `float_roundtrip`, a
    /// long decimal parsed to a neighbouring f64, and the canonical form then parsed back to yet
    /// another one — canonicalising twice gave a different body (and key).
    #[test]
    fn long_decimals_round_trip() {
        let body = b"[1,-0.0,1.50033333333330333333,3333]";
        let CanonicalBody::Json(once) = canonical_body(body, &[]) else {
            panic!("JSON expected")
        };
        let CanonicalBody::Json(twice) = canonical_body(&once, &[]) else {
            panic!("JSON expected")
        };
        assert_eq!(once, twice, "{}", String::from_utf8_lossy(&once));
        let original: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&once).unwrap(), original);
    }

    #[test]
    fn golden_keys() {
        assert_eq!(
            key_of(br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#).hex(),
            "3670ee65785b83f71611856d2cc88337e647a0559a7849c3923e847a314bc6dc"
        );
        assert_eq!(
            key_of(b"plain text body").hex(),
            "995b037414a6ae3710acf6d4b11a81ceb80cc2bf1d4e49fc11e970bc5ab29ca1"
        );
    }

    #[test]
    fn canonical_form_sorts_keys_and_drops_whitespace_and_ignored_fields() {
        let body = br#" { "b" : 1, "a": {"y": [1, 2.5, "x"], "x": null}, "user": "u-1", "metadata": {"k": 1} } "#;
        let c = canonical_body(body, &ignore());
        assert_eq!(
            std::str::from_utf8(c.as_bytes()).unwrap(),
            r#"{"a":{"x":null,"y":[1,2.5,"x"]},"b":1}"#
        );
    }

    #[test]
    fn semantic_differences_change_the_key() {
        let base = key_of(br#"{"model":"a","temperature":0,"stream":false}"#);
        for other in [
            &br#"{"model":"b","temperature":0,"stream":false}"#[..],
            br#"{"model":"a","temperature":1,"stream":false}"#,
            br#"{"model":"a","temperature":0,"stream":true}"#,
            br#"{"model":"a","temperature":0}"#,
        ] {
            assert_ne!(base, key_of(other), "{}", String::from_utf8_lossy(other));
        }
        assert_eq!(
            base,
            key_of(br#"{"stream":false, "temperature":0, "model":"a", "user":"x"}"#)
        );
    }

    #[test]
    fn every_input_part_is_in_the_key() {
        let ignore = ignore();
        let vary_a: &[(&str, &[u8])] = &[("anthropic-beta", b"a")];
        let vary_b: &[(&str, &[u8])] = &[("anthropic-beta", b"b")];
        let base = KeyInput {
            scope: "s1",
            route: "r",
            method: "POST",
            path: "/p",
            query: Some("b=2&a=1"),
            vary: vary_a,
            body: b"{}",
            ignore_fields: &ignore,
        };
        let k = derive(&base).0;
        let variants = [
            KeyInput {
                scope: "s2",
                ..base
            },
            KeyInput {
                route: "r2",
                ..base
            },
            KeyInput {
                method: "GET",
                ..base
            },
            KeyInput { path: "/q", ..base },
            KeyInput {
                query: Some("a=2"),
                ..base
            },
            KeyInput {
                vary: vary_b,
                ..base
            },
            KeyInput {
                body: b"[]",
                ..base
            },
        ];
        for v in &variants {
            assert_ne!(k, derive(v).0);
        }
        // query order does not matter, and `key=` (a credential) is not part of it
        assert_eq!(
            k,
            derive(&KeyInput {
                query: Some("a=1&key=sk-1&b=2"),
                ..base
            })
            .0
        );
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-z ]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map("[a-d]{1,3}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Serializes `v` with object keys in reverse order and extra whitespace.
    fn scrambled(v: &Value) -> String {
        match v {
            Value::Object(m) => {
                let mut parts: Vec<String> = m
                    .iter()
                    .map(|(k, v)| {
                        format!(
                            " {} :\n {} ",
                            serde_json::to_string(k).unwrap(),
                            scrambled(v)
                        )
                    })
                    .collect();
                parts.reverse();
                format!("{{ {} }}", parts.join(" ,\t"))
            }
            Value::Array(items) => {
                format!(
                    "[ {} ]",
                    items.iter().map(scrambled).collect::<Vec<_>>().join(" , ")
                )
            }
            other => other.to_string(),
        }
    }

    proptest! {
        #[test]
        fn key_is_stable_under_reordering_and_whitespace(v in arb_json()) {
            let wrapped = serde_json::json!({"model": "m", "payload": v});
            let compact = serde_json::to_vec(&wrapped).unwrap();
            prop_assert_eq!(key_of(&compact), key_of(scrambled(&wrapped).as_bytes()));
        }

        #[test]
        fn canonical_form_is_idempotent_and_parses_back(v in arb_json()) {
            let text = serde_json::to_vec(&serde_json::json!([v])).unwrap();
            let once = canonical_body(&text, &[]).as_bytes().to_vec();
            let twice = canonical_body(&once, &[]).as_bytes().to_vec();
            prop_assert_eq!(&once, &twice);
            let back: Value = serde_json::from_slice(&once).unwrap();
            prop_assert_eq!(back, serde_json::from_slice::<Value>(&text).unwrap());
        }

        #[test]
        fn borrowing_canonical_form_matches_the_reference(v in arb_json_text()) {
            let body = serde_json::to_vec(&serde_json::json!({"p": v, "user": "x"})).unwrap();
            prop_assert_eq!(fast(&body), reference(&body, &ignore()).unwrap());
        }

        #[test]
        fn different_values_give_different_keys(a in arb_json(), b in arb_json()) {
            prop_assume!(a != b);
            let ka = key_of(&serde_json::to_vec(&serde_json::json!({"p": a})).unwrap());
            let kb = key_of(&serde_json::to_vec(&serde_json::json!({"p": b})).unwrap());
            prop_assert_ne!(ka, kb);
        }
    }
}
