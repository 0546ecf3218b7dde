//! Cache-key canonicalisation and the model rewrite on arbitrary bodies: never panic; the
//! canonical form parses back to the same value (minus ignored fields) and canonicalising it
//! again changes nothing; a rewritten body is the same JSON with only its model replaced; the
//! same bytes as a multipart upload are keyed by their parts only when they parse as a form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use promptgate::body::ParsedBody;
use promptgate::cache::key::{canonical_body, derive, CanonicalBody, KeyInput};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let ignore = ["user".to_string(), "metadata".to_string()];
    if let CanonicalBody::Json(canonical) = canonical_body(None, data, &ignore) {
        let mut original: Value = serde_json::from_slice(data).expect("only JSON is canonical");
        if let Value::Object(map) = &mut original {
            for field in &ignore {
                map.remove(field);
            }
        }
        let reparsed: Value =
            serde_json::from_slice(&canonical).expect("the canonical form is JSON");
        assert_eq!(original, reparsed, "canonical form changed the value");
        match canonical_body(None, &canonical, &ignore) {
            CanonicalBody::Json(again) => assert_eq!(again, canonical, "not idempotent"),
            _ => panic!("canonical form not recognised as JSON"),
        }
    }
    let parsed = ParsedBody::new(data);
    if let Some(rewritten) = parsed.with_model("fuzz-model") {
        let mut expected: Value = serde_json::from_slice(data).expect("only JSON is rewritten");
        expected["model"] = Value::String("fuzz-model".into());
        let got: Value = serde_json::from_slice(&rewritten).expect("the rewrite is JSON");
        assert_eq!(got, expected, "the rewrite changed more than the model");
    }
    // Every part of the key from the same bytes: never panics, and is deterministic.
    let text = String::from_utf8_lossy(data);
    let mid = (0..=text.len() / 2)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    let (a, b) = text.split_at(mid);
    let vary = [("anthropic-version", a.as_bytes())];
    let input = KeyInput {
        scope: b,
        route: a,
        method: "POST",
        path: b,
        query: Some(a),
        vary: &vary,
        content_type: None,
        body: &parsed,
        ignore_fields: &ignore,
    };
    assert_eq!(derive(&input), derive(&input));
    // The same bytes as an upload: the multipart parser never panics, and a body it reads as
    // a form is keyed apart from the same bytes sent as anything else.
    let form = "multipart/form-data; boundary=fuzz";
    let as_form = KeyInput {
        content_type: Some(form),
        ..input
    };
    let listed = canonical_body(Some(form), data, &ignore);
    if matches!(listed, CanonicalBody::Multipart(_)) {
        assert_ne!(
            derive(&as_form),
            derive(&input),
            "a form keyed like raw bytes"
        );
    } else {
        assert_eq!(
            derive(&as_form),
            derive(&input),
            "not a form, yet keyed apart"
        );
    }
});
