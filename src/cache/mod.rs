//! The response cache: keys ([`key`]), what a request allows ([`policy`]), stored responses
//! ([`entry`]), recording a response on its way to the client ([`record`]), and the stores
//! ([`memory`]).
//!
//! Lookups never fail a request: a store that errs is a miss.

pub mod entry;
pub mod key;
pub mod memory;
pub mod policy;
pub mod record;

use crate::config::schema::CacheSpec;
use entry::Entry;
use key::CacheKey;
use memory::MemoryStore;
use std::sync::Arc;

/// The value of the `x-promptgate-cache` response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Bypass => "BYPASS",
        }
    }
}

/// The Redis key of an entry: `{prefix}:{route}:{hex}`.
pub fn redis_key(prefix: &str, route: &str, key: &CacheKey) -> String {
    format!("{prefix}:{route}:{}", key.hex())
}

/// The stores behind one cache, shared by every request and kept across config reloads.
pub struct Cache {
    memory: MemoryStore,
}

impl Cache {
    pub fn new(spec: &CacheSpec) -> Cache {
        Cache {
            memory: MemoryStore::new(spec.memory.max_bytes),
        }
    }

    pub async fn lookup(&self, key: &CacheKey) -> Option<Arc<Entry>> {
        self.memory.get(key)
    }

    /// Stores `entry`. The in-memory copy is in place when this returns, so a client that
    /// repeats its request right after receiving the response gets a hit (read-your-writes).
    pub fn store(&self, key: CacheKey, entry: Entry) {
        self.memory.insert(key, Arc::new(entry));
    }

    /// (entries, bytes) in the memory store.
    pub fn memory_usage(&self) -> (u64, u64) {
        self.memory.usage()
    }
}
