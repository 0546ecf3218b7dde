//! The in-memory store (moka): bounded by bytes, each entry expiring with its own TTL.
//! It is the default backend, and the L1 in front of Redis.

use super::entry::Entry;
use super::key::CacheKey;
use moka::sync::Cache;
use moka::Expiry;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct EntryTtl;

impl Expiry<CacheKey, Stored> for EntryTtl {
    fn expire_after_create(&self, _: &CacheKey, stored: &Stored, _: Instant) -> Option<Duration> {
        // Entries loaded from Redis may already be partly through their life.
        Some(stored.entry.remaining_ttl().unwrap_or(Duration::ZERO))
    }
}

/// An entry and the route it was stored for, so a purge can select by route.
#[derive(Clone)]
struct Stored {
    route: Arc<str>,
    entry: Arc<Entry>,
}

pub struct MemoryStore {
    entries: Cache<CacheKey, Stored>,
}

impl MemoryStore {
    pub fn new(max_bytes: u64) -> MemoryStore {
        MemoryStore {
            entries: Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_, s: &Stored| {
                    u32::try_from(s.entry.weight() + s.route.len()).unwrap_or(u32::MAX)
                })
                .expire_after(EntryTtl)
                .build(),
        }
    }

    pub fn get(&self, key: &CacheKey) -> Option<Arc<Entry>> {
        self.entries.get(key).map(|s| s.entry)
    }

    /// Stores `entry` for `route` (the route name, for [`MemoryStore::purge`]).
    pub fn insert(&self, key: CacheKey, route: &str, entry: Arc<Entry>) {
        self.entries.insert(
            key,
            Stored {
                route: route.into(),
                entry,
            },
        );
    }

    /// Removes every entry for which `select(route, key)` holds; returns how many.
    pub fn purge(&self, select: impl Fn(&str, &CacheKey) -> bool) -> u64 {
        let mut purged = 0;
        for (key, stored) in self.entries.iter() {
            if select(&stored.route, &key) && self.entries.remove(&*key).is_some() {
                purged += 1;
            }
        }
        purged
    }

    /// (entries, bytes) currently held; approximate until pending maintenance has run.
    pub fn usage(&self) -> (u64, u64) {
        self.entries.run_pending_tasks();
        (self.entries.entry_count(), self.entries.weighted_size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::unix_now;
    use bytes::Bytes;

    fn entry(size: usize, ttl: u64) -> Arc<Entry> {
        Arc::new(Entry {
            status: 200,
            headers: vec![],
            body: Bytes::from(vec![b'x'; size]),
            chunks: vec![],
            stored_at: unix_now(),
            ttl: Duration::from_secs(ttl),
            usage: Default::default(),
            head: Default::default(),
        })
    }

    #[test]
    fn stays_within_its_byte_bound() {
        let store = MemoryStore::new(100_000);
        for i in 0..100u8 {
            store.insert(CacheKey([i; 32]), "r", entry(10_000, 60));
        }
        let (count, bytes) = store.usage();
        assert!(bytes <= 100_000, "{bytes} bytes");
        assert!(count <= 10, "{count} entries");
    }

    #[test]
    fn serves_until_the_ttl() {
        let store = MemoryStore::new(1 << 20);
        store.insert(CacheKey([1; 32]), "r", entry(10, 60));
        assert!(store.get(&CacheKey([1; 32])).is_some());
        let mut expired = (*entry(10, 1)).clone();
        expired.stored_at -= 5;
        store.insert(CacheKey([2; 32]), "r", Arc::new(expired));
        assert!(store.get(&CacheKey([2; 32])).is_none());
    }

    #[test]
    fn purges_by_route() {
        let store = MemoryStore::new(1 << 20);
        store.insert(CacheKey([1; 32]), "a", entry(10, 60));
        store.insert(CacheKey([2; 32]), "b", entry(10, 60));
        store.insert(CacheKey([3; 32]), "a", entry(10, 60));
        assert_eq!(store.purge(|route, _| route == "a"), 2);
        assert!(store.get(&CacheKey([1; 32])).is_none());
        assert!(store.get(&CacheKey([2; 32])).is_some());
    }
}
