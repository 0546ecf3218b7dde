//! The in-process semantic index: per context key, a small bounded list of indexed requests
//! (vector, compared text, the exact entry that answers them), searched by a flat scan.
//!
//! Why a flat scan: a context key already narrows the search to requests identical in all but
//! their last user text, so a list holds a handful of items in practice and at most
//! `max_per_context`. Scanning 1,000 vectors of 384 dimensions takes ~0.1 ms on one core
//! (`cargo run --release --example semantic_scan`), well under the embedder call it follows; a
//! nearest-neighbour structure would pay off only far beyond the bound.

use super::{ContextKey, Item};
use moka::ops::compute::Op;
use moka::sync::Cache;
use moka::Expiry;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The items of one context, newest last, and the route they belong to (for purges).
#[derive(Clone)]
struct Context {
    route: Arc<str>,
    items: Arc<[Arc<Item>]>,
}

impl Context {
    /// Bytes held (vectors, texts, a fixed overhead per item): the memory bound's weight.
    fn weight(&self) -> u32 {
        let bytes: usize = self.items.iter().map(|i| i.weight()).sum();
        u32::try_from(bytes + self.route.len() + 64).unwrap_or(u32::MAX)
    }

    /// Seconds until the last item expires.
    fn remaining(&self) -> Duration {
        let now = crate::clock::unix_now();
        let last = self.items.iter().map(|i| i.expires_at).max().unwrap_or(now);
        Duration::from_secs(last.saturating_sub(now))
    }
}

struct ContextTtl;

impl Expiry<ContextKey, Context> for ContextTtl {
    fn expire_after_create(&self, _: &ContextKey, c: &Context, _: Instant) -> Option<Duration> {
        Some(c.remaining())
    }

    fn expire_after_update(
        &self,
        _: &ContextKey,
        c: &Context,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(c.remaining())
    }
}

/// Per-context item lists, bounded in bytes overall and in count per context.
pub struct MemoryIndex {
    contexts: Cache<ContextKey, Context>,
}

impl MemoryIndex {
    /// An index holding at most `max_bytes` of vectors and texts.
    pub fn new(max_bytes: u64) -> MemoryIndex {
        MemoryIndex {
            contexts: Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_, c: &Context| c.weight())
                .expire_after(ContextTtl)
                .build(),
        }
    }

    /// Adds `item` to its context, replacing an item for the same exact key, dropping expired
    /// ones and, past `max_per_context`, the oldest.
    pub fn insert(
        &self,
        route: &str,
        context: ContextKey,
        item: Arc<Item>,
        max_per_context: usize,
    ) {
        let now = crate::clock::unix_now();
        self.contexts.entry(context).and_compute_with(|existing| {
            let mut items: Vec<Arc<Item>> = existing
                .map(|e| e.into_value().items.to_vec())
                .unwrap_or_default();
            items.retain(|i| i.expires_at > now && i.key != item.key);
            items.push(item);
            let excess = items.len().saturating_sub(max_per_context.max(1));
            items.drain(..excess);
            Op::Put(Context {
                route: route.into(),
                items: items.into(),
            })
        });
    }

    /// The live items of `context`.
    pub fn items(&self, context: &ContextKey) -> Vec<Arc<Item>> {
        let now = crate::clock::unix_now();
        self.contexts
            .get(context)
            .map(|c| {
                c.items
                    .iter()
                    .filter(|i| i.expires_at > now)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forgets the item for exact key `key` in `context` (its entry is gone).
    pub fn remove(&self, context: &ContextKey, key: &crate::cache::key::CacheKey) {
        self.contexts
            .entry(*context)
            .and_compute_with(|existing| match existing {
                None => Op::Nop,
                Some(e) => {
                    let c = e.into_value();
                    let items: Vec<Arc<Item>> =
                        c.items.iter().filter(|i| i.key != *key).cloned().collect();
                    if items.is_empty() {
                        Op::Remove
                    } else {
                        Op::Put(Context {
                            route: c.route,
                            items: items.into(),
                        })
                    }
                }
            });
    }

    /// Removes every context of `route`; returns how many items went.
    pub fn purge_route(&self, route: &str) -> u64 {
        let mut purged = 0;
        for (key, c) in self.contexts.iter() {
            if &*c.route == route && self.contexts.remove(&*key).is_some() {
                purged += c.items.len() as u64;
            }
        }
        purged
    }

    pub fn invalidate_all(&self) {
        self.contexts.invalidate_all();
    }

    /// (items, bytes) held; approximate until pending maintenance has run.
    pub fn usage(&self) -> (u64, u64) {
        self.contexts.run_pending_tasks();
        let items = self
            .contexts
            .iter()
            .map(|(_, c)| c.items.len() as u64)
            .sum();
        (items, self.contexts.weighted_size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key::CacheKey;
    use crate::cache::semantic::Vector;
    use crate::clock::unix_now;

    fn item(n: u8, ttl: u64) -> Arc<Item> {
        Arc::new(Item::new(
            CacheKey([n; 32]),
            Vector::new(vec![1.0, n as f32]).unwrap(),
            format!("text {n}"),
            unix_now() + ttl,
        ))
    }

    #[test]
    fn keeps_at_most_max_per_context_newest_first() {
        let index = MemoryIndex::new(1 << 20);
        let ctx = ContextKey([1; 32]);
        for n in 0..10 {
            index.insert("r", ctx, item(n, 60), 4);
        }
        let keys: Vec<u8> = index.items(&ctx).iter().map(|i| i.key.0[0]).collect();
        assert_eq!(keys, vec![6, 7, 8, 9]);
        // the same exact key replaces its item
        index.insert("r", ctx, item(7, 60), 4);
        let keys: Vec<u8> = index.items(&ctx).iter().map(|i| i.key.0[0]).collect();
        assert_eq!(keys, vec![6, 8, 9, 7]);
        assert!(index.items(&ContextKey([2; 32])).is_empty());
    }

    #[test]
    fn expired_items_are_not_returned() {
        let index = MemoryIndex::new(1 << 20);
        let ctx = ContextKey([1; 32]);
        index.insert("r", ctx, item(1, 0), 4);
        index.insert("r", ctx, item(2, 60), 4);
        let keys: Vec<u8> = index.items(&ctx).iter().map(|i| i.key.0[0]).collect();
        assert_eq!(keys, vec![2]);
    }

    #[test]
    fn stays_within_its_byte_bound_and_purges_by_route() {
        let index = MemoryIndex::new(50_000);
        for n in 0..200u8 {
            index.insert(
                if n % 2 == 0 { "a" } else { "b" },
                ContextKey([n; 32]),
                item(n, 60),
                4,
            );
        }
        let (_, bytes) = index.usage();
        assert!(bytes <= 50_000, "{bytes} bytes");
        let index = MemoryIndex::new(1 << 20);
        index.insert("a", ContextKey([1; 32]), item(1, 60), 4);
        index.insert("b", ContextKey([2; 32]), item(2, 60), 4);
        assert_eq!(index.purge_route("a"), 1);
        assert!(index.items(&ContextKey([1; 32])).is_empty());
        assert_eq!(index.items(&ContextKey([2; 32])).len(), 1);
        index.remove(&ContextKey([2; 32]), &CacheKey([2; 32]));
        assert!(index.items(&ContextKey([2; 32])).is_empty());
    }
}
