//! Semantic items in plain Redis (no modules): one list per context key, beside the exact
//! entries, newest first, trimmed to `max_per_context` and expiring with its newest entry.
//!
//! A lookup fetches the whole list (`LRANGE`) and compares in process, so every sidecar sharing
//! the Redis sees every other's items. The cost grows with the list (one round trip carrying
//! `max_per_context` × (4 × dims + text) bytes: 64 items of 384 dimensions is ~110 KB), not
//! with the number of contexts; a Redis Cluster spreads contexts over its nodes by key.

use super::{ContextKey, Item, Vector};
use crate::cache::key::CacheKey;
use crate::cache::redis::{RedisError, RedisStore};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::sync::Arc;
use std::time::Duration;

/// First bytes of every encoded item: format name and version.
const MAGIC: &[u8; 4] = b"PGS1";

/// The Redis key of a context's list: `{prefix}:{route}:sem:{hex}` — under the route's prefix,
/// so purging a route removes its vectors with its entries.
pub fn list_key(prefix: &str, route: &str, context: &ContextKey) -> String {
    format!("{prefix}:{route}:sem:{}", context.hex())
}

/// `MAGIC | exact key (32) | expires_at (u64 LE) | dims (u32 LE) | dims × f32 LE | text`.
pub fn encode(item: &Item) -> Bytes {
    let dims = item.vector.dims();
    let mut out = BytesMut::with_capacity(4 + 32 + 8 + 4 + dims * 4 + item.text.len());
    out.put_slice(MAGIC);
    out.put_slice(&item.key.0);
    out.put_u64_le(item.expires_at);
    out.put_u32_le(dims as u32);
    for x in item.vector.values() {
        out.put_f32_le(*x);
    }
    out.put_slice(item.text.as_bytes());
    out.freeze()
}

/// The item encoded in `bytes`, or `None` when it is not one (another version, truncated, not
/// UTF-8, not a unit vector): such an item is skipped, never compared.
pub fn decode(mut bytes: Bytes) -> Option<Item> {
    if bytes.len() < 48 || &bytes[..4] != MAGIC {
        return None;
    }
    bytes.advance(4);
    let mut key = [0u8; 32];
    bytes.copy_to_slice(&mut key);
    let expires_at = bytes.get_u64_le();
    let dims = bytes.get_u32_le() as usize;
    if dims == 0 || dims > super::MAX_DIMS || bytes.len() < dims * 4 {
        return None;
    }
    let values: Vec<f32> = (0..dims).map(|_| bytes.get_f32_le()).collect();
    let norm: f32 = values.iter().map(|x| x * x).sum();
    if !norm.is_finite() || (norm - 1.0).abs() > 1e-3 {
        return None;
    }
    let text = std::str::from_utf8(&bytes).ok()?;
    Some(Item::new(
        CacheKey(key),
        Vector::from_unit(values),
        text,
        expires_at,
    ))
}

/// The live items of `context` stored in Redis (bounded by the store's read timeout).
pub async fn fetch(
    store: &RedisStore,
    prefix: &str,
    route: &str,
    context: &ContextKey,
) -> Result<Vec<Arc<Item>>, RedisError> {
    let now = crate::clock::unix_now();
    Ok(store
        .list(&list_key(prefix, route, context))
        .await?
        .into_iter()
        .filter_map(decode)
        .filter(|item| item.expires_at > now)
        .map(Arc::new)
        .collect())
}

/// Adds `item` to its context's list in the background, keeping the `max_per_context` newest.
pub fn store_in_background(
    store: &Arc<RedisStore>,
    prefix: &str,
    route: &str,
    context: &ContextKey,
    item: &Item,
    ttl: Duration,
    max_per_context: usize,
) {
    store.push_bounded_in_background(
        list_key(prefix, route, context),
        encode(item),
        max_per_context,
        ttl,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip_and_garbage_is_refused() {
        let item = Item::new(
            CacheKey([9; 32]),
            Vector::new(vec![1.0, 2.0, 2.0]).unwrap(),
            "Wie schnell? 120 bpm",
            1_900_000_000,
        );
        let bytes = encode(&item);
        let back = decode(bytes.clone()).unwrap();
        assert_eq!(back.key, item.key);
        assert_eq!(back.vector, item.vector);
        assert_eq!(&*back.text, "Wie schnell? 120 bpm");
        assert_eq!(back.expires_at, 1_900_000_000);
        assert!(decode(bytes.slice(..40)).is_none());
        assert!(decode(Bytes::from_static(
            b"PGE1 something else entirely......................"
        ))
        .is_none());
        let mut not_unit = BytesMut::from(&bytes[..]);
        not_unit[51] ^= 0x40; // the exponent of the first value
        assert!(decode(not_unit.freeze()).is_none());
        let mut bad_text = BytesMut::from(&bytes[..]);
        bad_text.put_u8(0xff);
        assert!(decode(bad_text.freeze()).is_none());
    }

    #[test]
    fn list_keys_live_under_the_route_prefix() {
        let key = list_key("promptgate:v1", "openai", &ContextKey([0; 32]));
        assert!(key.starts_with("promptgate:v1:openai:sem:"));
    }
}
