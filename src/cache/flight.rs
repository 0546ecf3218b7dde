//! Single-flight: while one request for a key is in flight upstream (the leader), identical
//! requests (followers) wait for its answer, or tail its stream live, instead of calling the
//! upstream again.
//!
//! A follower gets every byte the leader's client got and the same end, whether or not the
//! answer turns out storable: the flight shares the answer, the cache decides separately
//! whether to keep it. A leader whose upstream call fails before a head is shared releases its
//! followers to make their own calls; one whose upstream breaks off mid-body fails its
//! followers exactly as its own client fails (the stream is cut, never made to look complete).

use super::entry::Entry;
use super::key::CacheKey;
use crate::clock::unix_now;
use bytes::{Bytes, BytesMut};
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
    /// When the upstream's answer varies on request headers (its `Vary`), the leader's
    /// variant key: a follower whose own variant key differs must not take this answer.
    pub variant: Option<Variant>,
}

/// The request headers an answer varies on, and which variant of the answer this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// Lowercase names from the upstream's `Vary`, in its order.
    pub names: Vec<HeaderName>,
    /// The key of this variant (see [`super::key::variant`]).
    pub key: CacheKey,
}

enum Outcome {
    /// The upstream ended the answer cleanly: every chunk is in the flight. `stored` is the
    /// cache entry when the answer was stored (`None`: too large, or not a successful end).
    Finished { stored: Option<Arc<Entry>> },
    /// The upstream call failed: before a head (followers go upstream themselves) or mid-body
    /// (followers that started are cut, as the leader's client is).
    Failed,
}

#[derive(Default)]
struct State {
    head: Option<SharedHead>,
    /// Every body chunk so far (reference-counted, shared with the leader's relay).
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
            sharing: true,
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

/// The request that makes the upstream call. Dropped without [`Leader::finish`], it fails
/// the flight: followers still waiting for a head go upstream themselves.
pub struct Leader {
    flights: Arc<Flights>,
    key: CacheKey,
    flight: Arc<Flight>,
    finished: bool,
    /// False once no follower can need the chunks (see [`Leader::close`]): none are kept.
    sharing: bool,
}

impl Leader {
    pub fn head(&self, head: SharedHead) {
        self.flight.update(|s| s.head = Some(head));
    }

    /// Shares one body chunk with the followers (a reference, not a copy).
    pub fn chunk(&self, chunk: &Bytes) {
        if self.sharing {
            self.flight.update(|s| s.chunks.push(chunk.clone()));
        }
    }

    pub fn has_followers(&self) -> bool {
        self.flight.followers.load(Ordering::Acquire) > 0
    }

    /// Closes the flight to newcomers once the answer is known not to be stored (too large):
    /// a request arriving later makes its own call rather than making this flight hold the
    /// whole answer for it. Followers already in keep getting every chunk; with none, nothing
    /// more is kept.
    pub fn close(&mut self) {
        let followers = {
            let mut map = self
                .flights
                .inflight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if map
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                map.remove(&self.key);
            }
            // Read under the map lock: no follower can join any more.
            self.flight.followers.load(Ordering::Acquire)
        };
        if followers == 0 && self.sharing {
            self.sharing = false;
            self.flight.update(|s| s.chunks = Vec::new());
        }
    }

    /// Ends the flight after the upstream ended the answer cleanly: followers get the end
    /// (`stored` is the cache entry, when it was stored). Call after the entry is in the
    /// cache, so that a request arriving once the flight is gone finds it there.
    pub fn finish(mut self, stored: Option<Arc<Entry>>) {
        self.finished = true;
        self.flights.remove(&self.key, &self.flight);
        self.flight
            .update(|s| s.outcome = Some(Outcome::Finished { stored }));
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
    /// The upstream ended the answer cleanly; every chunk was handed out.
    Complete,
    Failed,
}

impl Follower {
    /// Waits until `ready` finds an answer in the flight's state, or `timeout` passes (`None`).
    /// Without a timeout it waits as long as the leader lives (its upstream timeouts bound it).
    async fn wait_for<T>(
        &mut self,
        timeout: Option<Duration>,
        mut ready: impl FnMut(&State) -> Option<T>,
    ) -> Option<T> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            self.rx.borrow_and_update();
            if let Some(answer) = ready(&self.flight.state()) {
                return Some(answer);
            }
            let changed = match deadline {
                Some(d) => matches!(
                    tokio::time::timeout_at(d, self.rx.changed()).await,
                    Ok(Ok(()))
                ),
                None => self.rx.changed().await.is_ok(),
            };
            if !changed {
                return None;
            }
        }
    }

    /// The leader's response head, or `None` when the leader failed first or took too long.
    pub async fn head(&mut self, timeout: Duration) -> Option<SharedHead> {
        self.wait_for(Some(timeout), |s| match (&s.head, &s.outcome) {
            (Some(h), _) => Some(Some(h.clone())),
            (None, Some(_)) => Some(None),
            (None, None) => None,
        })
        .await
        .flatten()
    }

    /// The whole answer once the upstream ended it cleanly — the stored entry, or one made
    /// from the shared chunks when it was not stored — or `None` when the leader failed or
    /// took longer than `timeout`. Call after [`Follower::head`].
    pub async fn complete(&mut self, timeout: Duration) -> Option<Arc<Entry>> {
        self.wait_for(Some(timeout), |s| match &s.outcome {
            Some(Outcome::Finished { stored: Some(e) }) => Some(Some(e.clone())),
            Some(Outcome::Finished { stored: None }) => Some(s.head.as_ref().map(|h| {
                let body: BytesMut = s.chunks.iter().fold(BytesMut::new(), |mut b, c| {
                    b.extend_from_slice(c);
                    b
                });
                Arc::new(Entry {
                    status: h.status,
                    headers: h.headers.clone(),
                    body: body.freeze(),
                    chunks: Vec::new(),
                    stored_at: unix_now(),
                    ttl: Duration::ZERO,
                    usage: Default::default(),
                    head: Default::default(),
                })
            })),
            Some(Outcome::Failed) => Some(None),
            None => None,
        })
        .await
        .flatten()
    }

    /// The chunks after the first `seen`, as soon as there are any; or how the flight ended.
    /// Waits as long as the leader is alive: the leader's upstream read timeout bounds each
    /// gap, and a leader that gives up fails the flight.
    pub async fn tail(&mut self, seen: usize) -> Tail {
        self.wait_for(None, |s| {
            if s.chunks.len() > seen {
                return Some(Tail::Chunks(s.chunks[seen..].to_vec()));
            }
            match &s.outcome {
                Some(Outcome::Finished { .. }) => Some(Tail::Complete),
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
            variant: None,
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
            head: Default::default(),
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
        let Tail::Chunks(c) = f.tail(0).await else {
            panic!()
        };
        assert_eq!(c, vec![Bytes::from_static(b"a")]);
        let waiter = tokio::spawn(async move {
            let t = f.tail(1).await;
            (matches!(t, Tail::Chunks(_)), f)
        });
        leader.chunk(&Bytes::from_static(b"b"));
        let (got_chunk, mut f) = waiter.await.unwrap();
        assert!(got_chunk);
        leader.finish(Some(entry()));
        assert!(matches!(f.tail(2).await, Tail::Complete));
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

    #[tokio::test]
    async fn an_unstored_answer_still_reaches_every_follower_whole() {
        let flights = Arc::new(Flights::default());
        let Role::Leader(mut leader) = flights.join(CacheKey([4; 32])) else {
            panic!()
        };
        let Role::Follower(mut streaming) = flights.join(CacheKey([4; 32])) else {
            panic!()
        };
        let Role::Follower(mut plain) = flights.join(CacheKey([4; 32])) else {
            panic!()
        };
        leader.head(head());
        leader.chunk(&Bytes::from_static(b"a"));
        // too large to store: newcomers lead their own call, those in keep getting chunks
        leader.close();
        assert!(matches!(flights.join(CacheKey([4; 32])), Role::Leader(_)));
        leader.chunk(&Bytes::from_static(b"b"));
        leader.finish(None);
        let Tail::Chunks(c) = streaming.tail(0).await else {
            panic!()
        };
        assert_eq!(c.concat(), b"ab");
        assert!(matches!(streaming.tail(2).await, Tail::Complete));
        assert!(plain.head(Duration::from_secs(1)).await.is_some());
        let whole = plain.complete(Duration::from_secs(1)).await.unwrap();
        assert_eq!((whole.status, &whole.body[..]), (200, &b"ab"[..]));
    }

    #[tokio::test]
    async fn a_closed_flight_without_followers_keeps_nothing() {
        let flights = Arc::new(Flights::default());
        let Role::Leader(mut leader) = flights.join(CacheKey([5; 32])) else {
            panic!()
        };
        {
            let Role::Follower(_gone) = flights.join(CacheKey([5; 32])) else {
                panic!()
            };
        }
        assert!(
            !leader.has_followers(),
            "a follower that left is not counted"
        );
        leader.chunk(&Bytes::from_static(b"a"));
        leader.close();
        leader.chunk(&Bytes::from_static(b"b"));
        assert!(leader.flight.state().chunks.is_empty());
    }

    #[tokio::test]
    async fn a_leader_failing_mid_body_fails_its_tailing_followers() {
        let flights = Arc::new(Flights::default());
        let Role::Leader(leader) = flights.join(CacheKey([6; 32])) else {
            panic!()
        };
        let Role::Follower(mut f) = flights.join(CacheKey([6; 32])) else {
            panic!()
        };
        leader.head(head());
        leader.chunk(&Bytes::from_static(b"a"));
        drop(leader);
        assert!(matches!(f.tail(0).await, Tail::Chunks(_)));
        assert!(matches!(f.tail(1).await, Tail::Failed));
    }
}
