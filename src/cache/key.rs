//! The cache key contract: blake3 over a canonical form of the request.
//!
//! `key = blake3(version | scope | route | method | path | query | vary | body)`, each part
//! length-prefixed so no two different requests can produce the same byte stream.
//! - Version 1 (`promptgate-cache-v1`): JSON bodies are canonicalized (object keys sorted, no
//!   insignificant whitespace, values re-serialized, `ignore_fields` dropped at the top level),
//!   so requests that differ only in key order or whitespace share a key. Other bodies are
//!   hashed as raw bytes.
//! - Version 2 (`promptgate-cache-v2`), only for `multipart/form-data` bodies (uploads: audio
//!   transcriptions and translations): the body is its parts in order — each part's headers
//!   (`Content-Disposition` parameters, `Content-Type`, …) and a blake3 of its bytes — never
//!   the random boundary ([`multipart`]); parts named in `ignore_fields` are dropped. A
//!   multipart body that does not parse is hashed as raw bytes under version 1.
//!
//! Changing anything here changes keys: bump the version of what changed with it.

mod multipart;

use crate::body::{self, Field, Node, ParsedBody, Sink};
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::sync::Mutex;

/// The version of keys of JSON and raw bodies.
pub const KEY_VERSION: &str = "promptgate-cache-v1";

/// The version of keys of `multipart/form-data` bodies, keyed by their parts.
pub const MULTIPART_KEY_VERSION: &str = "promptgate-cache-v2";

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
    /// The request's `Content-Type` (a multipart body is keyed by its parts).
    pub content_type: Option<&'a str>,
    /// The body, parsed (or not) once for the whole request.
    pub body: &'a ParsedBody<'b>,
    pub ignore_fields: &'a [String],
}

/// What was hashed for the body: the canonical JSON, the parts of a form (listed one per
/// line: headers, byte count and blake3), or the raw bytes.
pub enum CanonicalBody<'a> {
    Json(Vec<u8>),
    Multipart(Vec<u8>),
    Raw(&'a [u8]),
}

impl CanonicalBody<'_> {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            CanonicalBody::Json(v) | CanonicalBody::Multipart(v) => v,
            CanonicalBody::Raw(b) => b,
        }
    }
}

/// The parts of a multipart body keyed by them, minus the ignored fields; `None` when the
/// content type is not `multipart/form-data` or the body is not a well-formed form.
fn form_parts<'b>(
    content_type: Option<&str>,
    body: &'b [u8],
    ignore_fields: &[String],
) -> Option<Vec<multipart::Part<'b>>> {
    let boundary = multipart::boundary(content_type?)?;
    let mut parts = multipart::parts(body, boundary)?;
    parts.retain(|p| {
        p.name
            .as_deref()
            .is_none_or(|n| !ignore_fields.iter().any(|f| f == n))
    });
    Some(parts)
}

/// Hashes a form's parts: their count, then each part's header count, headers and the blake3
/// of its bytes.
fn hash_parts(h: &mut blake3::Hasher, parts: &[multipart::Part<'_>]) {
    h.update(&(parts.len() as u64).to_le_bytes());
    for p in parts {
        h.update(&(p.headers.len() as u64).to_le_bytes());
        for (name, value) in &p.headers {
            part(h, name.as_bytes());
            part(h, value.as_bytes());
        }
        part(h, blake3::hash(p.content).as_bytes());
    }
}

fn part(h: &mut blake3::Hasher, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// A part that may be absent, tagged so that absent and empty differ (`0`, or `1` and the part).
/// (The memo's id, which reads it, gathers its parts in a buffer: see [`memo_id`].)
#[cfg(test)]
fn optional_part(h: &mut blake3::Hasher, text: Option<&str>) {
    match text {
        Some(t) => {
            h.update(&[1]);
            part(h, t.as_bytes());
        }
        None => {
            h.update(&[0]);
        }
    }
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

/// Bodies up to this many bytes are hashed from one canonical buffer: for them a small
/// allocation costs less than a second walk over the tree. Larger ones stream (see [`derive`]).
const STREAM_ABOVE: usize = 16 * 1024;

/// Derives the key.
///
/// A large body's canonical form goes straight into the hash, never into a buffer of its own:
/// its length, which the layout puts first, is counted by a first walk over the tree (cheap:
/// borrowed strings and containers are counted without being read), then the second walk
/// writes it.
pub fn derive(input: &KeyInput<'_, '_>) -> CacheKey {
    derive_with(input, STREAM_ABOVE)
}

/// [`derive`], streaming bodies over `stream_above` bytes (tests force either way).
fn derive_with(input: &KeyInput<'_, '_>, stream_above: usize) -> CacheKey {
    let form = form_parts(input.content_type, input.body.raw(), input.ignore_fields);
    let mut h = blake3::Hasher::new();
    let version = match form {
        Some(_) => MULTIPART_KEY_VERSION,
        None => KEY_VERSION,
    };
    part(&mut h, version.as_bytes());
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
    if let Some(parts) = form {
        part(&mut h, b"multipart");
        hash_parts(&mut h, &parts);
        return CacheKey(*h.finalize().as_bytes());
    }
    // The body kind is hashed too, so raw bytes can never collide with a canonical JSON form.
    match input.body.tree() {
        Some(tree) if input.body.raw().len() <= stream_above => {
            part(&mut h, b"json");
            let mut out = Vec::with_capacity(input.body.raw().len());
            write_canonical(tree, input.ignore_fields, &mut out);
            part(&mut h, &out);
        }
        Some(tree) => {
            part(&mut h, b"json");
            let mut count = Count(0);
            write_canonical(tree, input.ignore_fields, &mut count);
            h.update(&count.0.to_le_bytes());
            let mut out = HashWriter::new(&mut h);
            write_canonical(tree, input.ignore_fields, &mut out);
            out.flush();
        }
        None => {
            part(&mut h, b"raw");
            part(&mut h, input.body.raw());
        }
    }
    CacheKey(*h.finalize().as_bytes())
}

/// Keys of recent requests, by a hash of the key's inputs with the body's raw bytes in place of
/// its canonical form: a repeated prompt is parsed and canonicalised once, later repeats cost one
/// blake3 pass over the raw bytes and a map lookup. Bounded: two generations of at most
/// [`KeyMemo::ENTRIES`] entries each; when the current one is full it becomes the previous one
/// and the old previous one is dropped (a hit in the previous generation moves forward).
///
/// Sound because a key is a function of exactly these inputs: equal ids mean equal inputs
/// (short of a blake3 collision), so the memo answers what [`derive`] would. The id hashes the
/// raw query and the `ignore_fields` too, so a reload that changes a route's settings cannot
/// reuse an old key. Each entry also remembers whether the body parsed as a JSON tree (a pure
/// function of its raw bytes, which the id covers), so a repeated body need not be parsed
/// again to learn that ([`Probe::parses`]).
pub struct KeyMemo {
    generations: Mutex<[HashMap<[u8; 32], Memoed, IdHasher>; 2]>,
}

/// What the memo holds for one id.
#[derive(Clone, Copy)]
struct Memoed {
    key: CacheKey,
    /// Whether the body parsed as a JSON object or array; `None`: not known (a form's key
    /// never parses its body).
    parses: Option<bool>,
}

/// A request's inputs looked up in the memo ([`KeyMemo::probe`]): its id, and what the memo
/// knew. [`KeyMemo::key`] finishes it into the key.
pub struct Probe {
    id: [u8; 32],
    found: Option<Memoed>,
}

impl Probe {
    /// Whether the body parses as a JSON object or array, when the memo knows it.
    pub fn parses(&self) -> Option<bool> {
        self.found.and_then(|m| m.parses)
    }

    /// The key, when the memo had it.
    pub fn known_key(&self) -> Option<CacheKey> {
        self.found.map(|m| m.key)
    }
}

impl KeyMemo {
    /// Entries per generation (each about 100 bytes with the map's overhead).
    pub const ENTRIES: usize = 4096;

    pub fn new() -> KeyMemo {
        KeyMemo {
            generations: Mutex::new([HashMap::default(), HashMap::default()]),
        }
    }

    /// [`derive`], from the memo when these inputs were seen recently.
    pub fn derive(&self, input: &KeyInput<'_, '_>) -> CacheKey {
        let probe = self.probe(input);
        self.key(probe, input)
    }

    /// Looks `input` up (one blake3 pass over it); a hit in the previous generation moves
    /// forward.
    pub fn probe(&self, input: &KeyInput<'_, '_>) -> Probe {
        self.probe_id(memo_id(input, MemoScope::Scope(input.scope)))
    }

    /// [`KeyMemo::probe`] by what the scope is computed from (`scope_source`, in place of
    /// `input.scope`, which is not read): equal sources give equal scopes, so the id still
    /// determines the key. Its ids never meet [`KeyMemo::probe`]'s (tagged apart).
    pub fn probe_by_scope_source(&self, input: &KeyInput<'_, '_>, scope_source: &[u8]) -> Probe {
        self.probe_id(memo_id(input, MemoScope::Source(scope_source)))
    }

    fn probe_id(&self, id: [u8; 32]) -> Probe {
        let mut g = self.lock();
        let found = match g[0].get(&id).copied() {
            Some(m) => Some(m),
            None => g[1].remove(&id).inspect(|m| insert(&mut g, id, *m)),
        };
        Probe { id, found }
    }

    /// The key of the inputs `probe` looked up (`input`, the same): the memo's, or derived
    /// and remembered.
    pub fn key(&self, probe: Probe, input: &KeyInput<'_, '_>) -> CacheKey {
        if let Some(m) = probe.found {
            return m.key;
        }
        // Not under the lock: a large body takes a while.
        let key = derive(input);
        let parses = input.body.parsed().map(|tree| tree.is_some());
        insert(&mut self.lock(), probe.id, Memoed { key, parses });
        key
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [HashMap<[u8; 32], Memoed, IdHasher>; 2]> {
        self.generations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Entries held now (both generations).
    pub fn len(&self) -> usize {
        let g = self.lock();
        g[0].len() + g[1].len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for KeyMemo {
    fn default() -> KeyMemo {
        KeyMemo::new()
    }
}

fn insert(g: &mut [HashMap<[u8; 32], Memoed, IdHasher>; 2], id: [u8; 32], m: Memoed) {
    if g[0].len() >= KeyMemo::ENTRIES {
        g[1] = std::mem::take(&mut g[0]);
        g[0].reserve(KeyMemo::ENTRIES);
    }
    g[0].insert(id, m);
}

/// What a memo id takes for the key's scope.
#[derive(Clone, Copy)]
enum MemoScope<'a> {
    /// The scope itself.
    Scope(&'a str),
    /// What the scope is computed from.
    Source(&'a [u8]),
}

/// The memo's id for `input`: everything [`derive`] reads (the content type too: a form is
/// keyed by its parts), the body as raw bytes.
///
/// The small parts are gathered into one buffer and hashed with one call (blake3 hashes a
/// byte stream the same however it is cut, so the id is what hashing each part on its own
/// gave): many small updates cost more than the bytes they hash.
fn memo_id(input: &KeyInput<'_, '_>, scope: MemoScope<'_>) -> [u8; 32] {
    fn part(buf: &mut Vec<u8>, bytes: &[u8]) {
        buf.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        buf.extend_from_slice(bytes);
    }
    fn optional_part(buf: &mut Vec<u8>, text: Option<&str>) {
        match text {
            Some(t) => {
                buf.push(1);
                part(buf, t.as_bytes());
            }
            None => buf.push(0),
        }
    }
    let mut buf = Vec::with_capacity(256);
    part(&mut buf, b"promptgate-key-memo");
    part(&mut buf, KEY_VERSION.as_bytes());
    match scope {
        MemoScope::Scope(scope) => part(&mut buf, scope.as_bytes()),
        MemoScope::Source(source) => {
            // A length no scope string has (u64::MAX), then the source: never an id of the
            // other kind.
            buf.extend_from_slice(&u64::MAX.to_le_bytes());
            part(&mut buf, source);
        }
    }
    part(&mut buf, input.route.as_bytes());
    part(&mut buf, input.method.as_bytes());
    part(&mut buf, input.path.as_bytes());
    // Tagged: no query and an empty one are different inputs here (the key's canonical query
    // makes them equal, which the memo need not know).
    optional_part(&mut buf, input.query);
    buf.extend_from_slice(&(input.vary.len() as u64).to_le_bytes());
    for (name, value) in input.vary {
        part(&mut buf, name.as_bytes());
        part(&mut buf, value);
    }
    optional_part(&mut buf, input.content_type);
    buf.extend_from_slice(&(input.ignore_fields.len() as u64).to_le_bytes());
    for field in input.ignore_fields {
        part(&mut buf, field.as_bytes());
    }
    let body = input.body.raw();
    buf.extend_from_slice(&(body.len() as u64).to_le_bytes());
    let mut h = blake3::Hasher::new();
    h.update(&buf);
    h.update(body);
    *h.finalize().as_bytes()
}

/// The memo's map hashes its ids by their own first bytes: they are blake3 output already.
type IdHasher = BuildHasherDefault<FirstBytes>;

#[derive(Default)]
struct FirstBytes(u64);

impl Hasher for FirstBytes {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 32]` hashes as its length, then its bytes: keep the first 8 of those.
        if bytes.len() >= 8 {
            let mut first = [0u8; 8];
            first.copy_from_slice(&bytes[..8]);
            self.0 = u64::from_le_bytes(first);
        }
    }
}

/// What is hashed for `body` (for `promptgate key`, which prints it): a form's parts, the
/// canonical JSON, or the raw bytes.
pub fn canonical_body<'a>(
    content_type: Option<&str>,
    body: &'a [u8],
    ignore_fields: &[String],
) -> CanonicalBody<'a> {
    if let Some(parts) = form_parts(content_type, body, ignore_fields) {
        let mut out = Vec::new();
        for p in &parts {
            for (name, value) in &p.headers {
                out.extend_from_slice(format!("{name}: {value}; ").as_bytes());
            }
            out.extend_from_slice(
                format!(
                    "{} bytes, blake3 {}\n",
                    p.content.len(),
                    blake3::hash(p.content)
                )
                .as_bytes(),
            );
        }
        return CanonicalBody::Multipart(out);
    }
    match ParsedBody::new(body).tree() {
        Some(tree) => {
            let mut out = Vec::with_capacity(body.len());
            write_canonical(tree, ignore_fields, &mut out);
            CanonicalBody::Json(out)
        }
        None => CanonicalBody::Raw(body),
    }
}

/// Counts the bytes of the canonical form.
struct Count(u64);

impl Sink for Count {
    fn bytes(&mut self, b: &[u8]) {
        self.0 += b.len() as u64;
    }
    fn escaped(&mut self, s: &str) {
        self.0 += escaped_len(s);
    }
    fn number(&mut self, n: &serde_json::Number) {
        let mut digits = [0u8; 32];
        let mut cursor = io::Cursor::new(&mut digits[..]);
        match serde_json::to_writer(&mut cursor, n) {
            Ok(()) => self.0 += cursor.position(),
            // Longer than any f64 or 64-bit integer prints; count it the slow way.
            Err(_) => self.0 += serde_json::to_vec(n).map_or(0, |v| v.len() as u64),
        }
    }
}

/// The length of `s` as serde_json writes it, quotes included. serde_json escapes only `"`,
/// `\` and control characters: `\"`, `\\` and the short escapes of backspace, form feed,
/// newline, carriage return and tab take 2 bytes, other control characters 6 (`\u00XX`).
fn escaped_len(s: &str) -> u64 {
    let (mut quoted, mut controls, mut short) = (0u64, 0u64, 0u64);
    // Byte-wide counters over chunks that cannot overflow them: the loop vectorizes.
    for chunk in s.as_bytes().chunks(255) {
        let (mut q, mut c, mut sh) = (0u8, 0u8, 0u8);
        for &b in chunk {
            q += u8::from(b == b'"') + u8::from(b == b'\\');
            c += u8::from(b < 0x20);
            sh += u8::from(matches!(b, 0x08 | 0x0c | b'\n' | b'\r' | b'\t'));
        }
        quoted += u64::from(q);
        controls += u64::from(c);
        short += u64::from(sh);
    }
    s.len() as u64 + 2 + quoted + short + 5 * (controls - short)
}

/// Feeds the hash in blocks of [`HashWriter::BLOCK`] bytes aligned on the hash's input, so
/// blake3 compresses many chunks at once (SIMD) instead of the canonical form's small pieces.
struct HashWriter<'h> {
    hasher: &'h mut blake3::Hasher,
    buf: [u8; HashWriter::BLOCK],
    len: usize,
    /// Room left before the hash's input reaches the next block boundary.
    room: usize,
}

impl<'h> HashWriter<'h> {
    const BLOCK: usize = 16 * 1024;

    fn new(hasher: &'h mut blake3::Hasher) -> HashWriter<'h> {
        let room = Self::BLOCK - (hasher.count() as usize % Self::BLOCK);
        HashWriter {
            hasher,
            buf: [0; Self::BLOCK],
            len: 0,
            room,
        }
    }

    fn flush(&mut self) {
        self.hasher.update(&self.buf[..self.len]);
        self.len = 0;
        self.room = Self::BLOCK - (self.hasher.count() as usize % Self::BLOCK);
    }
}

impl HashWriter<'_> {
    /// `bytes` when they reach the block boundary.
    #[inline(never)]
    fn spill(&mut self, mut b: &[u8]) {
        while !b.is_empty() {
            if self.len == 0 && b.len() >= Self::BLOCK {
                // A long string: straight in, no copy.
                self.hasher.update(b);
                self.room = Self::BLOCK - (self.hasher.count() as usize % Self::BLOCK);
                return;
            }
            let n = b.len().min(self.room - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
            self.len += n;
            b = &b[n..];
            if self.len == self.room {
                self.flush();
            }
        }
    }
}

impl Sink for HashWriter<'_> {
    #[inline]
    fn bytes(&mut self, b: &[u8]) {
        let end = self.len + b.len();
        if end < self.room {
            self.buf[self.len..end].copy_from_slice(b);
            self.len = end;
        } else {
            self.spill(b);
        }
    }
    fn number(&mut self, n: &serde_json::Number) {
        serde_json::to_writer(IoOut(self), n).expect("hashing cannot fail");
    }
}

/// serde_json writes through `io::Write`.
struct IoOut<'o, O: Sink>(&'o mut O);

impl<O: Sink> io::Write for IoOut<'_, O> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.bytes(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes the canonical form of `node`: object keys sorted (the tree keeps them so), one value
/// per key, no whitespace, and at the top level no `ignore_fields`.
fn write_canonical(node: &Node<'_>, ignore_fields: &[String], out: &mut impl Sink) {
    match node {
        Node::Object(fields) => {
            let kept = |f: &&Field| !ignore_fields.iter().any(|i| i == f.key.as_ref());
            body::write_fields(fields.iter().filter(kept), out);
        }
        other => body::write_sorted(other, out),
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
        match canonical_body(None, body, &ignore()) {
            CanonicalBody::Json(v) => v,
            _ => panic!("not JSON: {}", String::from_utf8_lossy(body)),
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
        let input = KeyInput {
            scope: "shared",
            route: "openai",
            method: "POST",
            path: "/openai/v1/chat/completions",
            query: None,
            vary: &[],
            content_type: None,
            body: &ParsedBody::new(body),
            ignore_fields: &ignore,
        };
        let key = derive(&input);
        assert_eq!(
            key,
            derive_buffered(&input),
            "{}",
            String::from_utf8_lossy(body)
        );
        // The memo gives the same key, computed (cold) and remembered (warm).
        let memo = KeyMemo::new();
        assert_eq!(memo.derive(&input), key);
        assert_eq!(memo.derive(&input), key);
        assert_eq!(memo.len(), 1);
        key
    }

    /// The memo's id as it was first written, one hash update per part: the buffered one
    /// must give the same ids.
    fn memo_id_by_parts(input: &KeyInput<'_, '_>) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        part(&mut h, b"promptgate-key-memo");
        part(&mut h, KEY_VERSION.as_bytes());
        part(&mut h, input.scope.as_bytes());
        part(&mut h, input.route.as_bytes());
        part(&mut h, input.method.as_bytes());
        part(&mut h, input.path.as_bytes());
        optional_part(&mut h, input.query);
        h.update(&(input.vary.len() as u64).to_le_bytes());
        for (name, value) in input.vary {
            part(&mut h, name.as_bytes());
            part(&mut h, value);
        }
        optional_part(&mut h, input.content_type);
        h.update(&(input.ignore_fields.len() as u64).to_le_bytes());
        for field in input.ignore_fields {
            part(&mut h, field.as_bytes());
        }
        part(&mut h, input.body.raw());
        *h.finalize().as_bytes()
    }

    #[test]
    fn the_memo_id_is_the_same_buffered() {
        let ignore = ignore();
        let none: Vec<String> = Vec::new();
        let long = "x".repeat(5000);
        let bodies: [&[u8]; 4] = [
            b"",
            b"{}",
            br#"{"model":"m","messages":[]}"#,
            long.as_bytes(),
        ];
        let vary: &[(&str, &[u8])] = &[("x-tenant", b"a"), ("x-other", b"")];
        for body in bodies {
            let parsed = ParsedBody::new(body);
            for (query, content_type, vary, ignore_fields) in [
                (None, None, &[][..], &none),
                (Some(""), Some("application/json"), vary, &ignore),
                (Some("b=2&a=1"), Some(""), vary, &none),
            ] {
                let input = KeyInput {
                    scope: "0123abcd",
                    route: "openai",
                    method: "POST",
                    path: "/v1/chat/completions",
                    query,
                    vary,
                    content_type,
                    body: &parsed,
                    ignore_fields,
                };
                assert_eq!(
                    memo_id(&input, MemoScope::Scope(input.scope)),
                    memo_id_by_parts(&input)
                );
            }
        }
    }

    /// The memo remembers whether a body parsed, from a body it parsed itself: a repeat of
    /// one that did not (to be a BYPASS when declared JSON) is never taken for one that did.
    #[test]
    fn the_memo_knows_whether_a_body_parsed() {
        let memo = KeyMemo::new();
        let ignore = ignore();
        let form_type = "multipart/form-data; boundary=b";
        let form = b"--b\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nx\r\n--b--\r\n";
        for (body, content_type, parses) in [
            (&br#"{"model":"m","messages":[]}"#[..], None, Some(true)),
            (&b"[1, 2]"[..], Some("application/json"), Some(true)),
            (
                &br#"{"model":"m","messages":["#[..],
                Some("application/json"),
                Some(false),
            ),
            (&b"not json"[..], Some("application/json"), Some(false)),
            (&b"not json"[..], None, Some(false)),
            // A form's key never parses its body: the memo does not know.
            (&form[..], Some(form_type), None),
        ] {
            let parsed = ParsedBody::new(body);
            let input = KeyInput {
                scope: "shared",
                route: "openai",
                method: "POST",
                path: "/v1/chat/completions",
                query: None,
                vary: &[],
                content_type,
                body: &parsed,
                ignore_fields: &ignore,
            };
            let cold = memo.probe(&input);
            assert_eq!(cold.parses(), None, "{body:?}");
            let key = memo.key(cold, &input);
            assert_eq!(key, derive(&input));
            // A fresh parse of the same bytes agrees with what the memo says now.
            let again = ParsedBody::new(body);
            let warm = memo.probe(&KeyInput {
                body: &again,
                ..input
            });
            assert_eq!(warm.parses(), parses, "{body:?}");
            if let Some(p) = warm.parses() {
                assert_eq!(p, ParsedBody::new(body).tree().is_some(), "{body:?}");
            }
            assert!(again.parsed().is_none(), "the probe parsed {body:?}");
            assert_eq!(memo.key(warm, &input), key);
        }
    }

    #[test]
    fn the_memo_keys_on_every_input() {
        let memo = KeyMemo::new();
        let ignore = ignore();
        let none: Vec<String> = Vec::new();
        let body = br#"{"model":"m","user":"u","messages":[]}"#;
        let parsed = ParsedBody::new(body);
        let other = ParsedBody::new(br#"{"model":"m","user":"v","messages":[ ]}"#);
        let vary: &[(&str, &[u8])] = &[("x-tenant", b"a")];
        let base = KeyInput {
            scope: "shared",
            route: "openai",
            method: "POST",
            path: "/v1/chat/completions",
            query: Some("b=2&a=1"),
            vary,
            content_type: Some("application/json"),
            body: &parsed,
            ignore_fields: &ignore,
        };
        let variants = [
            KeyInput {
                scope: "abc",
                ..base
            },
            KeyInput {
                route: "other",
                ..base
            },
            KeyInput {
                method: "GET",
                ..base
            },
            KeyInput {
                path: "/v1/embeddings",
                ..base
            },
            KeyInput {
                query: None,
                ..base
            },
            KeyInput {
                query: Some("a=1&b=2"),
                ..base
            },
            KeyInput {
                vary: &[("x-tenant", b"b")],
                ..base
            },
            KeyInput { vary: &[], ..base },
            KeyInput {
                ignore_fields: &none,
                ..base
            },
            KeyInput {
                body: &other,
                ..base
            },
            KeyInput {
                content_type: None,
                ..base
            },
            KeyInput {
                content_type: Some("multipart/form-data; boundary=x"),
                ..base
            },
        ];
        // Warm the memo with every variant, then ask again: each answer is what derive says,
        // whatever was remembered for the others.
        for round in 0..2 {
            assert_eq!(memo.derive(&base), derive(&base), "round {round}");
            for (i, v) in variants.iter().enumerate() {
                assert_eq!(memo.derive(v), derive(v), "variant {i}, round {round}");
            }
        }
        // Same key from different raw inputs (query order; whitespace plus an ignored field):
        // separate memo entries, one key.
        assert_eq!(derive(&variants[5]), derive(&base));
        assert_eq!(derive(&variants[9]), derive(&base));
        assert_eq!(memo.len(), 13);
    }

    #[test]
    fn the_memo_is_bounded_and_keeps_recent_keys() {
        let memo = KeyMemo::new();
        let bodies: Vec<String> = (0..KeyMemo::ENTRIES * 2 + 10)
            .map(|i| format!("{{\"n\":{i}}}"))
            .collect();
        let input = |body: &ParsedBody| {
            derive(&KeyInput {
                scope: "shared",
                route: "r",
                method: "POST",
                path: "/",
                query: None,
                vary: &[],
                content_type: None,
                body,
                ignore_fields: &[],
            })
        };
        let memo_key = |body: &ParsedBody| {
            memo.derive(&KeyInput {
                scope: "shared",
                route: "r",
                method: "POST",
                path: "/",
                query: None,
                vary: &[],
                content_type: None,
                body,
                ignore_fields: &[],
            })
        };
        for b in &bodies {
            let parsed = ParsedBody::new(b.as_bytes());
            assert_eq!(memo_key(&parsed), input(&parsed));
        }
        assert!(memo.len() <= 2 * KeyMemo::ENTRIES, "{}", memo.len());
        assert!(memo.len() > KeyMemo::ENTRIES, "{}", memo.len());
        // the latest bodies are remembered (and still right)
        let last = ParsedBody::new(bodies.last().unwrap().as_bytes());
        let before = memo.len();
        assert_eq!(memo_key(&last), input(&last));
        assert_eq!(memo.len(), before);
    }

    /// The derivation as first implemented: the canonical body written out whole, then hashed.
    /// `derive` (streaming: length counted first, body written into the hash) must match it.
    fn derive_buffered(input: &KeyInput) -> CacheKey {
        let body = canonical_body(input.content_type, input.body.raw(), input.ignore_fields);
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
        part(
            &mut h,
            match body {
                CanonicalBody::Json(_) => b"json",
                CanonicalBody::Raw(_) => b"raw",
                CanonicalBody::Multipart(_) => unreachable!("v1 keys only"),
            },
        );
        part(&mut h, body.as_bytes());
        CacheKey(*h.finalize().as_bytes())
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
        let CanonicalBody::Json(once) = canonical_body(None, body, &[]) else {
            panic!("JSON expected")
        };
        let CanonicalBody::Json(twice) = canonical_body(None, &once, &[]) else {
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

    /// An upload as httpx (the openai SDK) writes it, with `fields` before the file.
    fn upload(boundary: &str, fields: &[(&str, &str)], filename: &str, file: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        for (name, value) in fields {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                    .as_bytes(),
            );
        }
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
                 Content-Type: audio/wav\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(file);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        body
    }

    fn form_key(content_type: &str, body: &[u8]) -> CacheKey {
        let ignore = ignore();
        let parsed = ParsedBody::new(body);
        let input = KeyInput {
            scope: "shared",
            route: "openai",
            method: "POST",
            path: "/openai/v1/audio/transcriptions",
            query: None,
            vary: &[],
            content_type: Some(content_type),
            body: &parsed,
            ignore_fields: &ignore,
        };
        let key = derive(&input);
        // The memo gives the same key, computed (cold) and remembered (warm).
        let memo = KeyMemo::new();
        assert_eq!(memo.derive(&input), key);
        assert_eq!(memo.derive(&input), key);
        key
    }

    fn multipart(boundary: &str) -> String {
        format!("multipart/form-data; boundary={boundary}")
    }

    #[test]
    fn uploads_are_keyed_by_their_parts_not_their_boundary() {
        let fields = [("model", "whisper-1"), ("language", "en")];
        let key = |boundary: &str, fields: &[(&str, &str)], filename: &str, file: &[u8]| {
            form_key(
                &multipart(boundary),
                &upload(boundary, fields, filename, file),
            )
        };
        let base = key("b1", &fields, "hello.wav", b"RIFF-audio");
        assert_eq!(
            base,
            key(
                "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
                &fields,
                "hello.wav",
                b"RIFF-audio"
            )
        );
        for (what, other) in [
            ("file bytes", key("b1", &fields, "hello.wav", b"RIFF-audi0")),
            ("file name", key("b1", &fields, "hello2.wav", b"RIFF-audio")),
            (
                "a field",
                key(
                    "b1",
                    &[("model", "whisper-1"), ("language", "de")],
                    "hello.wav",
                    b"RIFF-audio",
                ),
            ),
            (
                "field order",
                key(
                    "b1",
                    &[("language", "en"), ("model", "whisper-1")],
                    "hello.wav",
                    b"RIFF-audio",
                ),
            ),
            (
                "a missing field",
                key("b1", &fields[..1], "hello.wav", b"RIFF-audio"),
            ),
        ] {
            assert_ne!(base, other, "{what} must change the key");
        }
        // an ignored field (`user`) is dropped, like a JSON body's
        let with_user = [("model", "whisper-1"), ("language", "en"), ("user", "u-42")];
        assert_eq!(base, key("b1", &with_user, "hello.wav", b"RIFF-audio"));
        // the part's content type counts
        let body = upload("b1", &fields, "hello.wav", b"RIFF-audio");
        let mp3 = String::from_utf8_lossy(&body).replace("audio/wav", "audio/mpeg");
        assert_ne!(base, form_key(&multipart("b1"), mp3.as_bytes()));
    }

    #[test]
    fn a_body_that_is_not_a_well_formed_form_keeps_its_raw_v1_key() {
        let body = upload("b1", &[("model", "whisper-1")], "a.wav", b"x");
        let truncated = &body[..body.len() - 8];
        // not a form: hashed raw, exactly as before multipart keys existed
        assert_eq!(
            form_key(&multipart("b1"), truncated),
            form_key("text/plain", truncated)
        );
        assert_eq!(
            form_key(&multipart("zz"), &body),
            form_key("text/plain", &body)
        );
        // JSON keys do not depend on the content type
        let json = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
        let v1 = form_key("application/json", json);
        assert_eq!(form_key("text/plain", json), v1);
        assert_eq!(form_key(&multipart("b1"), json), v1);
    }

    /// Pins the multipart (v2) key layout: `promptgate-cache-v2` | the v1 prefix fields |
    /// `multipart` | part count | per part: header count, (name, value)*, blake3(content) — every
    /// field length-prefixed (u64 LE), counts as u64 LE. Cross-checked with the Python `blake3`
    /// package over the same layout.
    #[test]
    fn golden_multipart_key() {
        let body = upload("b1", &[("model", "whisper-1")], "hello.wav", b"RIFF");
        assert_eq!(
            form_key(&multipart("b1"), &body).hex(),
            "c63389b8038a64663c642fcc6a78ac5ef596da15b0faffb2f7371eb2a05cc238"
        );
        let CanonicalBody::Multipart(listing) =
            canonical_body(Some(&multipart("b1")), &body, &ignore())
        else {
            panic!("a form")
        };
        assert_eq!(
            String::from_utf8(listing).unwrap(),
            format!(
                "content-disposition: form-data; name=\"model\"; 9 bytes, blake3 {}\n\
                 content-disposition: form-data; filename=\"hello.wav\"; name=\"file\"; content-type: audio/wav; 4 bytes, blake3 {}\n",
                blake3::hash(b"whisper-1"),
                blake3::hash(b"RIFF")
            )
        );
    }

    #[test]
    fn canonical_form_sorts_keys_and_drops_whitespace_and_ignored_fields() {
        let body = br#" { "b" : 1, "a": {"y": [1, 2.5, "x"], "x": null}, "user": "u-1", "metadata": {"k": 1} } "#;
        let c = canonical_body(None, body, &ignore());
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
            content_type: None,
            body: &ParsedBody::new(b"{}"),
            ignore_fields: &ignore,
        };
        let k = derive(&base);
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
                body: &ParsedBody::new(b"[]"),
                ..base
            },
        ];
        for v in &variants {
            assert_ne!(k, derive(v));
        }
        // query order does not matter, and `key=` (a credential) is not part of it
        assert_eq!(
            k,
            derive(&KeyInput {
                query: Some("a=1&key=sk-1&b=2"),
                ..base
            })
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

    #[test]
    fn streaming_matches_buffered_after_long_strings_at_every_alignment() {
        let long = "a".repeat(20_000);
        let mut mid = String::new();
        while mid.len() < 17_000 {
            let body = format!(r#"["{long}","{mid}","{mid}\n","{long}\n",{{"{mid}":1}}]"#);
            key_of(body.as_bytes());
            mid.push_str(&"b".repeat(997));
        }
    }

    #[test]
    fn streaming_matches_buffered_across_block_boundaries() {
        let ignore = ignore();
        for len in [0, 1, 16_383, 16_384, 16_385, 40_000, 100_000] {
            for filler in ["a", "é", "line\n"] {
                let text = filler.repeat(len / filler.len() + 1);
                let body = format!(r#"{{"model":"m","user":"u","p":["{text}",1.5,"{text}"]}}"#);
                for scope in ["", "s", &"x".repeat(1500)] {
                    let input = KeyInput {
                        scope,
                        route: "r",
                        method: "POST",
                        path: "/p",
                        query: None,
                        vary: &[],
                        content_type: None,
                        body: &ParsedBody::new(body.as_bytes()),
                        ignore_fields: &ignore,
                    };
                    let key = derive_buffered(&input);
                    assert_eq!(derive(&input), key, "{len} {filler:?}");
                    assert_eq!(derive_with(&input, 0), key, "{len} {filler:?}");
                }
            }
        }
    }

    proptest! {
        #[test]
        fn escaped_length_is_what_serde_json_writes(s in "\\PC*|[\u{0}-\u{7f}]*") {
            prop_assert_eq!(escaped_len(&s), serde_json::to_vec(&s).unwrap().len() as u64);
        }

        #[test]
        fn streaming_derivation_matches_buffered(text in crate::body::tests::arb_json_text()) {
            key_of(text.as_bytes());
            key_of(format!(r#"{{"model":"m","user":1,"p":{text}}}"#).as_bytes());
        }

        #[test]
        fn key_is_stable_under_reordering_and_whitespace(v in arb_json()) {
            let wrapped = serde_json::json!({"model": "m", "payload": v});
            let compact = serde_json::to_vec(&wrapped).unwrap();
            prop_assert_eq!(key_of(&compact), key_of(scrambled(&wrapped).as_bytes()));
        }

        #[test]
        fn canonical_form_is_idempotent_and_parses_back(v in arb_json()) {
            let text = serde_json::to_vec(&serde_json::json!([v])).unwrap();
            let once = canonical_body(None, &text, &[]).as_bytes().to_vec();
            let twice = canonical_body(None, &once, &[]).as_bytes().to_vec();
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
