//! Single-flight: while one request for a key is in flight upstream (the leader), identical
//! requests (followers) wait for its answer, or tail its stream live, instead of calling the
//! upstream again. A leader that fails releases its followers to make their own calls.

use super::entry::Entry;
use super::key::CacheKey;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::watch;

/// The response head a leader shares: its status and the headers a replay may carry.
#[derive(Debug, Clone)]
pub struct SharedHead {
    pub status: u16,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub streaming: bool,
}

enum Outcome {
    Complete(Arc<Entry>),
    Failed,
}

#[derive(Default)]
struct State {
    head: Option<SharedHead>,
    chunks: Vec<Bytes>,
    outcome: Option<Outcome>,
}

/// One upstream call in flight, as its followers see it.
pub struct Flight {
    state: Mutex<State>,
    /// Bumped on every change, so followers wake up.
    version: watch::Sender<u64>,
    followers: AtomicUsize,
}

impl Flight {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.state());
        self.version.send_modify(|v| *v += 1);
    }
}

/// The flights in progress, by cache key.
#[derive(Default)]
pub struct Flights {
    inflight: Mutex<HashMap<CacheKey, Arc<Flight>>>,
}

pub enum Role {
    Leader(Leader),
    Follower(Follower),
}

impl Flights {
    /// Leads a new flight for `key`, or follows the one in progress.
    pub fn join(self: &Arc<Self>, key: CacheKey) -> Role {
        let mut map = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(flight) = map.get(&key) {
            flight.followers.fetch_add(1, Ordering::AcqRel);
            return Role::Follower(Follower {
                rx: flight.version.subscribe(),
                flight: flight.clone(),
            });
        }
        let flight = Arc::new(Flight {
            state: Mutex::default(),
            version: watch::channel(0).0,
            followers: AtomicUsize::new(0),
        });
        map.insert(key, flight.clone());
        Role::Leader(Leader {
            flights: self.clone(),
            key,
            flight,
            finished: false,
        })
    }

    /// Flights in progress (for stats).
    pub fn len(&self) -> usize {
        self.inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn remove(&self, key: &CacheKey, flight: &Arc<Flight>) {
        let mut map = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        if map.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            map.remove(key);
        }
    }
}

/// The request that makes the upstream call. Dropped without [`Leader::complete`], it fails
/// the flight and its followers go upstream themselves.
pub struct Leader {
    flights: Arc<Flights>,
    key: CacheKey,
    flight: Arc<Flight>,
    finished: bool,
}

impl Leader {
    pub fn head(&self, head: SharedHead) {
        self.flight.update(|s| s.head = Some(head));
    }

    pub fn chunk(&self, chunk: &Bytes) {
        self.flight.update(|s| s.chunks.push(chunk.clone()));
    }

    pub fn has_followers(&self) -> bool {
        self.flight.followers.load(Ordering::Acquire) > 0
    }

    /// Hands followers the stored entry. Call after the entry is in the cache, so that a
    /// request arriving once the flight is gone finds it there.
    pub fn complete(mut self, entry: Arc<Entry>) {
        self.finished = true;
        self.flights.remove(&self.key, &self.flight);
        self.flight
            .update(|s| s.outcome = Some(Outcome::Complete(entry)));
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if !self.finished {
            self.flights.remove(&self.key, &self.flight);
            self.flight.update(|s| s.outcome = Some(Outcome::Failed));
        }
    }
}

/// A request waiting on another's upstream call.
pub struct Follower {
    flight: Arc<Flight>,
    rx: watch::Receiver<u64>,
}

impl Drop for Follower {
    /// A follower served, given up or gone no longer counts: a leader whose own client leaves
    /// goes on only for followers still waiting.
    fn drop(&mut self) {
        self.flight.followers.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a streaming follower gets next.
pub enum Tail {
    Chunks(Vec<Bytes>),
    Complete,
    Failed,
}

impl Follower {
    /// Waits until `ready` finds an answer in the flight's state, or `timeout` passes (`None`).
    async fn wait_for<T>(
        &mut self,
        timeout: Duration,
        mut ready: impl FnMut(&State) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.rx.borrow_and_update();
            if let Some(answer) = ready(&self.flight.state()) {
                return Some(answer);
            }
            match tokio::time::timeout_at(deadline, self.rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    /// The leader's response head, or `None` when the leader failed first or took too long.
    pub async fn head(&mut self, timeout: Duration) -> Option<SharedHead> {
        self.wait_for(timeout, |s| match (&s.head, &s.outcome) {
            (Some(h), _) => Some(Some(h.clone())),
            (None, Some(_)) => Some(None),
            (None, None) => None,
        })
        .await
        .flatten()
    }

    /// The complete stored response, or `None` when the leader failed or took too long.
    pub async fn complete(&mut self, timeout: Duration) -> Option<Arc<Entry>> {
        self.wait_for(timeout, |s| match &s.outcome {
            Some(Outcome::Complete(e)) => Some(Some(e.clone())),
            Some(Outcome::Failed) => Some(None),
            None => None,
        })
        .await
        .flatten()
    }

    /// The chunks after the first `seen`, as soon as there are any; or how the flight ended.
    /// `timeout` bounds the wait for each next chunk.
    pub async fn tail(&mut self, seen: usize, timeout: Duration) -> Tail {
        self.wait_for(timeout, |s| {
            if s.chunks.len() > seen {
                return Some(Tail::Chunks(s.chunks[seen..].to_vec()));
            }
            match &s.outcome {
                Some(Outcome::Complete(_)) => Some(Tail::Complete),
                Some(Outcome::Failed) => Some(Tail::Failed),
                None => None,
            }
        })
        .await
        .unwrap_or(Tail::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> SharedHead {
        SharedHead {
            status: 200,
            headers: vec![],
            streaming: true,
        }
    }

    fn entry() -> Arc<Entry> {
        Arc::new(Entry {
            status: 200,
            headers: vec![],
            body: Bytes::from_static(b"ab"),
            chunks: vec![],
            stored_at: 0,
            ttl: Duration::from_secs(60),
            usage: Default::default(),
        })
    }

    #[tokio::test]
    async fn followers_tail_the_leader_and_see_completion() {
        let flights = Arc::new(Flights::default());
        let Role::Leader(leader) = flights.join(CacheKey([1; 32])) else {
            panic!()
        };
        let Role::Follower(mut f) = flights.join(CacheKey([1; 32])) else {
            panic!()
        };
        assert!(leader.has_followers());
        leader.head(head());
        leader.chunk(&Bytes::from_static(b"a"));
        assert!(f.head(Duration::from_secs(1)).await.is_some());
        let Tail::Chunks(c) = f.tail(0, Duration::from_secs(1)).await else {
            panic!()
        };
        assert_eq!(c, vec![Bytes::from_static(b"a")]);
        let waiter = tokio::spawn(async move {
            let t = f.tail(1, Duration::from_secs(5)).await;
            (matches!(t, Tail::Chunks(_)), f)
        });
        leader.chunk(&Bytes::from_static(b"b"));
        let (got_chunk, mut f) = waiter.await.unwrap();
        assert!(got_chunk);
        leader.complete(entry());
        assert!(matches!(
            f.tail(2, Duration::from_secs(1)).await,
            Tail::Complete
        ));
        assert!(f.complete(Duration::from_secs(1)).await.is_some());
        assert!(flights.is_empty());
        // the next request for the key leads a new flight
        assert!(matches!(flights.join(CacheKey([1; 32])), Role::Leader(_)));
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_its_followers() {
        let flights = Arc::new(Flights::default());
        let Role::Leader(leader) = flights.join(CacheKey([2; 32])) else {
            panic!()
        };
        let Role::Follower(mut f) = flights.join(CacheKey([2; 32])) else {
            panic!()
        };
        drop(leader);
        assert!(f.head(Duration::from_secs(1)).await.is_none());
        assert!(f.complete(Duration::from_secs(1)).await.is_none());
        assert!(flights.is_empty());
    }

    #[test]
    fn a_follower_that_leaves_no_longer_counts() {
        let flights = Arc::new(Flights::default());
        let Role::Leader(leader) = flights.join(CacheKey([4; 32])) else {
            panic!()
        };
        let Role::Follower(a) = flights.join(CacheKey([4; 32])) else {
            panic!()
        };
        let Role::Follower(b) = flights.join(CacheKey([4; 32])) else {
            panic!()
        };
        drop(a);
        assert!(leader.has_followers());
        drop(b);
        assert!(!leader.has_followers());
    }

    #[tokio::test]
    async fn followers_give_up_after_their_timeout() {
        let flights = Arc::new(Flights::default());
        let Role::Leader(_leader) = flights.join(CacheKey([3; 32])) else {
            panic!()
        };
        let Role::Follower(mut f) = flights.join(CacheKey([3; 32])) else {
            panic!()
        };
        assert!(f.head(Duration::from_millis(50)).await.is_none());
    }
}
