//! The in-process counter store: one [`State`] per (route, bucket), per process.
//!
//! Kept by the [`Limiter`](super::Limiter), outside the swapped runtime, so counters survive a
//! reload. Buckets whose state no longer matters are swept at most once a minute, when a new
//! bucket is added, so a stream of one-off credentials cannot grow the map without bound for
//! longer than a minute plus the longest state lifetime.

use super::gcra::{self, Op, Outcome, Params, State};
use super::Who;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, PoisonError};

/// µs between two sweeps of idle buckets.
const SWEEP_EVERY_US: i64 = 60_000_000;

/// Buckets of one route, by who is counted.
type Buckets = HashMap<Who, State, Seeded>;

/// Buckets by route name, then by who is counted.
#[derive(Default)]
pub struct MemoryCounters {
    routes: Mutex<HashMap<Box<str>, Buckets, Seeded>>,
    last_sweep: AtomicI64,
    seed: Seeded,
}

/// A cheap keyed hash for the bucket maps (the default SipHash is most of a lookup's cost): a
/// credential is already a blake3 hash, so [`Who`] hashes as its first 8 bytes; route names
/// are short. Mixed with a random per-process seed, so clients cannot aim keys at one slot.
#[derive(Clone, Copy)]
pub struct Seeded(u64);

impl Default for Seeded {
    fn default() -> Seeded {
        Seeded(fastrand::u64(..) | 1)
    }
}

impl BuildHasher for Seeded {
    type Hasher = SeededHasher;

    fn build_hasher(&self) -> SeededHasher {
        SeededHasher(self.0)
    }
}

pub struct SeededHasher(u64);

impl Hasher for SeededHasher {
    fn finish(&self) -> u64 {
        // A final mix (from splitmix64) spreads every input bit over the whole word.
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl MemoryCounters {
    /// Applies `op` to the bucket of (`route`, `who`) at `now` (µs since the epoch).
    pub fn apply(&self, route: &str, who: &Who, p: &Params, op: Op, now: i64) -> Outcome {
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        let buckets = match routes.get_mut(route) {
            Some(b) => b,
            None => routes
                .entry(route.into())
                .or_insert_with(|| Buckets::with_hasher(self.seed)),
        };
        if let Some(state) = buckets.get_mut(who) {
            // On a copy: a peek (or a refusal) leaves the stored state exactly as it was, as
            // the Redis script does.
            let mut next = *state;
            let (outcome, changed) = gcra::apply(&mut next, p, op, now);
            if changed {
                *state = next;
            }
            return outcome;
        }
        let mut state = State::default();
        let (outcome, changed) = gcra::apply(&mut state, p, op, now);
        if changed {
            buckets.insert(who.clone(), state);
            self.maybe_sweep(&mut routes, now);
        }
        outcome
    }

    /// Every bucket with state that still matters: (route, who, state).
    pub fn buckets(&self, now: i64) -> Vec<(String, Who, State)> {
        let routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        routes
            .iter()
            .flat_map(|(route, buckets)| {
                buckets
                    .iter()
                    .filter(|(_, s)| gcra::lifetime_us(s, now) > 0)
                    .map(|(who, s)| (route.to_string(), who.clone(), *s))
            })
            .collect()
    }

    /// Number of buckets held (idle ones not yet swept included).
    pub fn len(&self) -> usize {
        let routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        routes.values().map(|b| b.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn maybe_sweep(&self, routes: &mut HashMap<Box<str>, Buckets, Seeded>, now: i64) {
        let last = self.last_sweep.load(Ordering::Relaxed);
        if now - last < SWEEP_EVERY_US {
            return;
        }
        self.last_sweep.store(now, Ordering::Relaxed);
        for buckets in routes.values_mut() {
            buckets.retain(|_, s| gcra::lifetime_us(s, now) > 0);
        }
        routes.retain(|_, b| !b.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_750_000_000_000_000;

    #[test]
    fn buckets_are_per_route_and_per_credential() {
        let m = MemoryCounters::default();
        let p = Params {
            rpm: 1,
            ..Params::default()
        };
        let a = Who::Credential([1; 32]);
        let b = Who::Credential([2; 32]);
        assert!(m.apply("r", &a, &p, Op::Check, T0).denied.is_none());
        assert!(m.apply("r", &a, &p, Op::Check, T0).denied.is_some());
        assert!(m.apply("r", &b, &p, Op::Check, T0).denied.is_none());
        assert!(m.apply("other", &a, &p, Op::Check, T0).denied.is_none());
        assert_eq!(m.buckets(T0).len(), 3);
    }

    #[test]
    fn peeks_add_no_bucket_and_idle_buckets_are_swept() {
        let m = MemoryCounters::default();
        let p = Params {
            rpm: 60,
            ..Params::default()
        };
        m.apply("r", &Who::Route, &p, Op::Peek, T0);
        assert!(m.is_empty());
        for i in 0..100u8 {
            m.apply("r", &Who::Credential([i; 32]), &p, Op::Check, T0);
        }
        assert_eq!(m.len(), 100);
        // Two minutes on, every bucket is idle; the next new bucket sweeps them.
        let later = T0 + 120_000_000;
        assert!(m.buckets(later).is_empty());
        m.apply("r", &Who::Route, &p, Op::Check, later);
        assert_eq!(m.len(), 1);
    }
}
