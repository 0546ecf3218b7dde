//! The semantic cache: a reworded request answered with the entry stored for another request
//! of the same context, when their compared texts are similar enough and carry the same
//! literals.
//!
//! - [`extract`] splits a request into its compared text (the last user message) and the rest;
//!   the rest, hashed like an exact key, is the [`ContextKey`]. Only requests with the same
//!   context key are compared.
//! - [`guard`] is the literal guard: numbers, quotes, URLs, code, names … must match exactly.
//! - [`index`] holds the vectors in process (memory backend, and read-your-writes in front of
//!   Redis); [`redis`] keeps them in Redis beside the entries, so sidecars share them.
//!
//! An indexed item points at an exact entry's key: a semantic hit serves that entry as it was
//! stored (a stream replays byte for byte). The embedder call itself is the proxy's
//! (`proxy/semantic.rs`): this module knows no HTTP.

pub mod extract;
pub mod guard;
pub mod index;
pub mod redis;

use super::entry::Entry;
use super::key::CacheKey;
use super::{Cache, Lookup};
use crate::clock::unix_now;
use guard::Literals;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Domain of the context key hash, so a context key never equals an exact key.
const CONTEXT_VERSION: &str = "promptgate-semantic-context-v1";

/// Most exact entries fetched per lookup (candidates that pass the guard, best first, whose
/// entry may have expired or been evicted meanwhile).
const MAX_ENTRY_FETCHES: usize = 3;

/// A 32-byte blake3 key of everything in a request but its compared text.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContextKey(pub [u8; 32]);

impl ContextKey {
    /// The key of a request whose body without its compared text has exact key `rest_key`,
    /// for vectors from `embedder` (vectors of different embedders are not comparable).
    pub fn new(embedder: &str, rest_key: &CacheKey) -> ContextKey {
        let mut h = blake3::Hasher::new();
        for part in [CONTEXT_VERSION.as_bytes(), embedder.as_bytes(), &rest_key.0] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        ContextKey(*h.finalize().as_bytes())
    }

    pub fn hex(&self) -> String {
        blake3::Hash::from(self.0).to_hex().to_string()
    }
}

impl std::fmt::Debug for ContextKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ContextKey({})", self.hex())
    }
}

/// An embedding scaled to unit length, so cosine similarity is a dot product.
#[derive(Debug, Clone, PartialEq)]
pub struct Vector(Arc<[f32]>);

/// An embedder's answer that cannot be a usable vector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadVector {
    #[error("the embedding is empty")]
    Empty,
    #[error("the embedding has {0} dimensions, over the limit of {MAX_DIMS}")]
    TooLong(usize),
    #[error("the embedding has a value that is not a finite number")]
    NotFinite,
    #[error("the embedding is all zeros")]
    Zero,
}

/// Largest embedding accepted, in dimensions (OpenAI's largest model has 3,072).
pub const MAX_DIMS: usize = 8192;

impl Vector {
    /// Scales `raw` to unit length; refuses empty, oversized, non-finite and zero vectors.
    pub fn new(raw: Vec<f32>) -> Result<Vector, BadVector> {
        if raw.is_empty() {
            return Err(BadVector::Empty);
        }
        if raw.len() > MAX_DIMS {
            return Err(BadVector::TooLong(raw.len()));
        }
        if raw.iter().any(|x| !x.is_finite()) {
            return Err(BadVector::NotFinite);
        }
        let norm = raw
            .iter()
            .map(|x| f64::from(*x).powi(2))
            .sum::<f64>()
            .sqrt();
        if norm == 0.0 || !norm.is_finite() {
            return Err(BadVector::Zero);
        }
        Ok(Vector(
            raw.into_iter()
                .map(|x| (f64::from(x) / norm) as f32)
                .collect(),
        ))
    }

    /// A vector already of unit length (decoded from storage).
    fn from_unit(values: Vec<f32>) -> Vector {
        Vector(values.into())
    }

    pub fn dims(&self) -> usize {
        self.0.len()
    }

    pub fn values(&self) -> &[f32] {
        &self.0
    }

    /// Cosine similarity with `other` (a dot product of unit vectors); `None` when their
    /// dimensions differ.
    pub fn similarity(&self, other: &Vector) -> Option<f32> {
        (self.dims() == other.dims()).then(|| dot(&self.0, &other.0))
    }
}

/// Dot product in eight independent lanes, which the compiler keeps in SIMD registers.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// One indexed request: the exact entry that answers it, its vector and compared text.
#[derive(Debug)]
pub struct Item {
    pub key: CacheKey,
    pub vector: Vector,
    pub text: Arc<str>,
    /// Seconds since the Unix epoch when the exact entry expires.
    pub expires_at: u64,
    /// The text's literals, extracted on the first comparison that needs them (`None`: the
    /// guard could not judge the text, so it never matches).
    literals: OnceLock<Option<Literals>>,
}

impl Item {
    pub fn new(key: CacheKey, vector: Vector, text: impl Into<Arc<str>>, expires_at: u64) -> Item {
        Item {
            key,
            vector,
            text: text.into(),
            expires_at,
            literals: OnceLock::new(),
        }
    }

    /// Bytes held in memory, roughly.
    pub fn weight(&self) -> usize {
        self.vector.dims() * 4 + self.text.len() + 96
    }

    fn literals(&self) -> Option<&Literals> {
        self.literals
            .get_or_init(|| Literals::of(&self.text).ok())
            .as_ref()
    }
}

/// A request as the semantic cache sees it: its context and compared text.
#[derive(Debug)]
pub struct Probe {
    pub context: ContextKey,
    pub text: String,
    literals: OnceLock<Option<Literals>>,
}

impl Probe {
    pub fn new(context: ContextKey, text: String) -> Probe {
        Probe {
            context,
            text,
            literals: OnceLock::new(),
        }
    }

    fn literals(&self) -> Option<&Literals> {
        self.literals
            .get_or_init(|| Literals::of(&self.text).ok())
            .as_ref()
    }

    /// True when the literal guard lets `item`'s answer serve this request.
    fn allows(&self, item: &Item) -> bool {
        match (self.literals(), item.literals()) {
            (Some(a), Some(b)) => a.allow(b),
            _ => false,
        }
    }
}

/// How to index a request once its answer is stored: its probe, its vector, and the bound of
/// its context's list.
#[derive(Debug)]
pub struct Indexing {
    pub probe: Probe,
    pub vector: Vector,
    pub max_per_context: usize,
}

/// What a semantic lookup found.
#[derive(Debug)]
pub enum SemanticLookup {
    /// An entry whose request is similar enough and carries the same literals.
    Hit {
        entry: Arc<Entry>,
        /// The exact key it is stored under.
        key: CacheKey,
        similarity: f32,
    },
    Miss(Rejected),
}

/// Near-candidates a miss turned down (for the similarity histograms).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Rejected {
    /// Similarities at or above the threshold that the literal guard refused.
    pub by_guard: Vec<f32>,
    /// The best similarity below the threshold.
    pub below_threshold: Option<f32>,
    /// The shared store could not be read (the search used the in-process items only).
    pub store_error: bool,
}

impl Cache {
    /// Searches `probe`'s context for an item at least `threshold` similar to `query` that the
    /// literal guard allows, and fetches its entry. Never fails: a store error is counted in
    /// the answer and the search goes on with what it has.
    ///
    /// An indexed answer that varies (`Vary`) is served only as the variant this request's
    /// `request` headers select, like an exact hit.
    pub async fn semantic_lookup(
        &self,
        route: &str,
        probe: &Probe,
        query: &Vector,
        threshold: f32,
        request: &http::HeaderMap,
    ) -> SemanticLookup {
        let mut rejected = Rejected::default();
        let mut items = self.semantic.items(&probe.context);
        let backend = self.backend.load_full();
        if let (Some(store), Some(spec)) = (&backend.redis, &backend.spec) {
            match redis::fetch(store, &spec.prefix, route, &probe.context).await {
                Ok(shared) => items.extend(shared),
                Err(_) => rejected.store_error = true,
            }
        }
        let mut scored: Vec<(f32, Arc<Item>)> = Vec::with_capacity(items.len());
        for item in items {
            if scored.iter().any(|(_, seen)| seen.key == item.key) {
                continue;
            }
            if let Some(s) = query.similarity(&item.vector) {
                scored.push((s, item));
            }
        }
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut fetches = 0;
        for (similarity, item) in &scored {
            if *similarity < threshold {
                rejected.below_threshold = Some(*similarity);
                break;
            }
            if !probe.allows(item) {
                rejected.by_guard.push(*similarity);
                continue;
            }
            if fetches == MAX_ENTRY_FETCHES {
                continue;
            }
            fetches += 1;
            match self.lookup_traced(route, &item.key, request).await {
                Lookup::Hit(entry) => {
                    return SemanticLookup::Hit {
                        entry,
                        key: item.key,
                        similarity: *similarity,
                    }
                }
                // The entry expired or was evicted before its vector: forget the vector here
                // (in Redis its list is bounded and expires). Not when only this request's
                // variant is missing: other variants still answer other requests.
                Lookup::Miss if self.known_variants(&item.key).is_none() => {
                    self.semantic.remove(&probe.context, &item.key)
                }
                Lookup::Miss => {}
                _ => rejected.store_error = true,
            }
        }
        SemanticLookup::Miss(rejected)
    }

    /// Indexes `probe` (its vector `vector`) as answered by the exact entry `key`, stored for
    /// `ttl`: in process at once, and in Redis (in the background) when that is the backend.
    pub fn semantic_store(
        &self,
        route: &str,
        probe: &Probe,
        vector: Vector,
        key: CacheKey,
        ttl: Duration,
        max_per_context: usize,
    ) {
        let item = Arc::new(Item::new(
            key,
            vector,
            probe.text.as_str(),
            unix_now() + ttl.as_secs(),
        ));
        let backend = self.backend.load();
        if let (Some(store), Some(spec)) = (&backend.redis, &backend.spec) {
            redis::store_in_background(
                store,
                &spec.prefix,
                route,
                &probe.context,
                &item,
                ttl,
                max_per_context,
            );
        }
        self.semantic
            .insert(route, probe.context, item, max_per_context);
    }

    /// (items, bytes) in the in-process semantic index.
    pub fn semantic_usage(&self) -> (u64, u64) {
        self.semantic.usage()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_unit_length_and_checked() {
        let v = Vector::new(vec![3.0, 4.0]).unwrap();
        assert_eq!(v.values(), &[0.6, 0.8]);
        assert!((v.similarity(&v).unwrap() - 1.0).abs() < 1e-6);
        assert_eq!(Vector::new(vec![]), Err(BadVector::Empty));
        assert_eq!(Vector::new(vec![0.0, 0.0]), Err(BadVector::Zero));
        assert_eq!(Vector::new(vec![1.0, f32::NAN]), Err(BadVector::NotFinite));
        assert_eq!(
            Vector::new(vec![1.0; MAX_DIMS + 1]),
            Err(BadVector::TooLong(MAX_DIMS + 1))
        );
        let w = Vector::new(vec![1.0, 0.0, 0.0]).unwrap();
        assert_eq!(v.similarity(&w), None);
    }

    #[test]
    fn dot_product_matches_the_plain_sum() {
        let a: Vec<f32> = (0..389).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..389).map(|i| (i as f32 * 0.11).cos()).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-3);
    }

    #[test]
    fn context_keys_separate_embedders_and_rests() {
        let rest = CacheKey([7; 32]);
        let a = ContextKey::new("embed|/v1/embeddings|m1", &rest);
        assert_ne!(a, ContextKey::new("embed|/v1/embeddings|m2", &rest));
        assert_ne!(
            a,
            ContextKey::new("embed|/v1/embeddings|m1", &CacheKey([8; 32]))
        );
        assert_ne!(a.0, rest.0);
    }
}
