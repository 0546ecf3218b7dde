//! The cache key contract (version 1): blake3 over a canonical form of the request.
//!
//! `key = blake3("promptgate-cache-v1" | scope | route | method | path | query | vary | body)`,
//! each part length-prefixed so no two different requests can produce the same byte stream.
//! JSON bodies are canonicalized (object keys sorted, no insignificant whitespace, values
//! re-serialized, `ignore_fields` dropped at the top level), so requests that differ only in
//! key order or whitespace share a key. Other bodies are hashed as raw bytes.
//! Changing anything here changes every key: bump the version with it.

use serde_json::Value;
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
    match serde_json::from_slice::<Value>(body) {
        Ok(mut value) => {
            if let Value::Object(map) = &mut value {
                for field in ignore_fields {
                    map.remove(field);
                }
            }
            let mut out = Vec::with_capacity(body.len());
            write_canonical(&value, &mut out);
            CanonicalBody::Json(out)
        }
        Err(_) => CanonicalBody::Raw(body),
    }
}

/// Writes `value` with object keys sorted and no whitespace. Strings and numbers are written
/// by serde_json, so equal values are always written the same way.
pub fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k).expect("writing to a Vec cannot fail");
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(v, out);
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar).expect("writing to a Vec cannot fail"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        fn different_values_give_different_keys(a in arb_json(), b in arb_json()) {
            prop_assume!(a != b);
            let ka = key_of(&serde_json::to_vec(&serde_json::json!({"p": a})).unwrap());
            let kb = key_of(&serde_json::to_vec(&serde_json::json!({"p": b})).unwrap());
            prop_assert_ne!(ka, kb);
        }
    }
}
