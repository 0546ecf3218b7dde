//! `Vary` (RFC 9111 §4.1): an upstream answer that varies on request headers is stored per
//! variant, under a key made of the request's primary key and its values of those headers; a
//! marker under the primary key names the headers, so a lookup knows what to key on. Several
//! variants live side by side. `Vary: *` is never stored.

use super::key::CacheKey;
use http::{HeaderMap, HeaderName, HeaderValue};

/// What an answer's `Vary` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Varies {
    /// No `Vary` (or only on headers that cannot change promptgate's upstream request).
    No,
    /// On these request headers (lowercase, each once, in the order listed).
    On(Vec<HeaderName>),
    /// `Vary: *`: on something no request header shows; never stored.
    Anything,
}

/// Request headers whose value promptgate replaces before the upstream sees it, so an
/// upstream's `Vary` on them does not depend on the client: `accept-encoding` (always
/// `identity`, so stored bodies are plain).
const REPLACED: &[&str] = &["accept-encoding"];

/// Reads the `Vary` values of a response.
pub fn of<'a>(values: impl IntoIterator<Item = &'a HeaderValue>) -> Varies {
    let mut names: Vec<HeaderName> = Vec::new();
    for value in values {
        // A value that is not text cannot be honoured: treat it as varying on anything.
        let Ok(text) = value.to_str() else {
            return Varies::Anything;
        };
        for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if token == "*" {
                return Varies::Anything;
            }
            let Ok(name) = HeaderName::from_bytes(token.as_bytes()) else {
                return Varies::Anything;
            };
            if !REPLACED.contains(&name.as_str()) && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    if names.is_empty() {
        Varies::No
    } else {
        Varies::On(names)
    }
}

/// The key of the variant of `primary` that a request with `request` headers selects:
/// `blake3("promptgate-variant-v1" | primary | n | (name | count | value*)*)`, each part
/// length-prefixed. A header that is absent (count 0) differs from one that is empty.
pub fn variant_key(primary: &CacheKey, names: &[HeaderName], request: &HeaderMap) -> CacheKey {
    let part = |h: &mut blake3::Hasher, bytes: &[u8]| {
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    let mut h = blake3::Hasher::new();
    part(&mut h, b"promptgate-variant-v1");
    part(&mut h, &primary.0);
    h.update(&(names.len() as u64).to_le_bytes());
    for name in names {
        part(&mut h, name.as_str().as_bytes());
        let values = request.get_all(name);
        h.update(&(values.iter().count() as u64).to_le_bytes());
        for v in values {
            part(&mut h, v.as_bytes());
        }
    }
    CacheKey(*h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varies(values: &[&'static str]) -> Varies {
        let values: Vec<HeaderValue> = values.iter().map(|v| HeaderValue::from_static(v)).collect();
        of(&values)
    }

    #[test]
    fn reads_vary() {
        assert_eq!(varies(&[]), Varies::No);
        assert_eq!(varies(&["Accept-Encoding"]), Varies::No);
        assert_eq!(
            varies(&["Origin, Accept-Encoding", "origin,Accept-Language"]),
            Varies::On(vec![
                HeaderName::from_static("origin"),
                HeaderName::from_static("accept-language")
            ])
        );
        assert_eq!(varies(&["Origin, *"]), Varies::Anything);
        assert_eq!(varies(&["bad header"]), Varies::Anything);
    }

    #[test]
    fn variant_keys_follow_the_named_values() {
        let primary = CacheKey([7; 32]);
        let names = [HeaderName::from_static("origin")];
        let key = |origin: Option<&'static str>, other: &'static str| {
            let mut h = HeaderMap::new();
            if let Some(o) = origin {
                h.insert("origin", HeaderValue::from_static(o));
            }
            h.insert("x-other", HeaderValue::from_static(other));
            variant_key(&primary, &names, &h)
        };
        assert_eq!(key(Some("https://a"), "1"), key(Some("https://a"), "2"));
        assert_ne!(key(Some("https://a"), "1"), key(Some("https://b"), "1"));
        assert_ne!(key(None, "1"), key(Some(""), "1"));
        assert_ne!(
            key(Some("https://a"), "1"),
            variant_key(&CacheKey([8; 32]), &names, &{
                let mut h = HeaderMap::new();
                h.insert("origin", HeaderValue::from_static("https://a"));
                h
            })
        );
    }
}
