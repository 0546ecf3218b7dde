//! Recording a response while it is relayed to the client, to store it once complete — and,
//! as the leader of a flight, sharing it live with identical requests waiting on it.

use super::entry::{ChunkMark, Entry};
use super::flight::{Leader, SharedHead};
use super::key::CacheKey;
use super::Cache;
use crate::clock::unix_now;
use crate::headers;
use crate::providers::{BodyFormat, Verdict};
use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where and how a response would be stored, decided before the upstream answers.
pub struct RecordPlan {
    pub cache: Arc<Cache>,
    /// The route's name (part of the Redis key).
    pub route: String,
    pub key: CacheKey,
    pub ttl: Duration,
    /// `cache.max_entry_bytes`.
    pub limit: usize,
    /// Keep reading a stream into the cache after its client left early.
    pub complete_on_disconnect: bool,
    /// Set when identical requests may follow this one (single-flight).
    pub leader: Option<Leader>,
}

impl RecordPlan {
    /// True when the upstream answer is still wanted after the client left before it came:
    /// the route fills the cache anyway (`complete_on_disconnect`), or identical requests wait
    /// on this one.
    pub fn wanted_without_client(&self) -> bool {
        self.complete_on_disconnect || self.leader.as_ref().is_some_and(Leader::has_followers)
    }
}

/// Collects the body chunks (reference-counted, not copied) of a storable response.
pub struct Recorder {
    plan: RecordPlan,
    status: u16,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    chunks: Vec<Bytes>,
    marks: Vec<ChunkMark>,
    /// A stream: stored with its chunk timings, for a replay at its pace.
    streaming: bool,
    started: Instant,
    size: usize,
    overflowed: bool,
}

impl Recorder {
    /// Starts recording if `head` (the response as sent to the client) may be stored: a 2xx,
    /// not marked `no-store` by the upstream, and not declared larger than the limit.
    /// Otherwise the plan is dropped, which releases any followers to make their own calls.
    pub fn start(plan: RecordPlan, head: &ResponseHeader) -> Option<Recorder> {
        if !head.status.is_success() {
            return None;
        }
        let header = |name| head.headers.get(name).and_then(|v| v.to_str().ok());
        if header(http::header::CACHE_CONTROL).is_some_and(|v| v.contains("no-store")) {
            return None;
        }
        let declared = header(http::header::CONTENT_LENGTH).and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|len| len > plan.limit) {
            return None;
        }
        let streaming = matches!(
            BodyFormat::of(header(http::header::CONTENT_TYPE).unwrap_or("")),
            BodyFormat::Stream(_)
        );
        let headers: Vec<_> = head
            .headers
            .iter()
            .filter(|(n, _)| headers::is_replayable(n.as_str()))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        if let Some(leader) = &plan.leader {
            leader.head(SharedHead {
                status: head.status.as_u16(),
                headers: headers.clone(),
                streaming,
            });
        }
        Some(Recorder {
            plan,
            status: head.status.as_u16(),
            headers,
            chunks: Vec::new(),
            marks: Vec::new(),
            streaming,
            started: Instant::now(),
            size: 0,
            overflowed: false,
        })
    }

    /// The most body bytes this response may have to be stored (`cache.max_entry_bytes`).
    pub fn limit(&self) -> usize {
        self.plan.limit
    }

    pub fn push(&mut self, chunk: &Bytes) {
        if self.overflowed {
            return;
        }
        self.size += chunk.len();
        if self.size > self.plan.limit {
            // Too large to store: stop holding memory for it, and let followers fend for
            // themselves (a stream already being tailed is cut, like its leader's would be).
            self.overflowed = true;
            self.chunks = Vec::new();
            self.marks = Vec::new();
            self.plan.leader = None;
            return;
        }
        self.chunks.push(chunk.clone());
        self.marks.push(ChunkMark {
            end: self.size as u64,
            at_ms: u32::try_from(self.started.elapsed().as_millis()).unwrap_or(u32::MAX),
        });
        if let Some(leader) = &self.plan.leader {
            leader.chunk(chunk);
        }
    }

    /// True when the rest of the upstream response is worth reading after the client left:
    /// the client already had everything that matters (`so_far`, the verdict on what was read,
    /// says the stream ended well), the route asks to fill the cache anyway, or identical
    /// requests are waiting on this one.
    pub fn worth_finishing(&self, so_far: Verdict) -> bool {
        !self.overflowed
            && (so_far == Verdict::Complete
                || self.plan.complete_on_disconnect
                || self.plan.leader.as_ref().is_some_and(Leader::has_followers))
    }

    /// Stores the response if `verdict` (the provider's, on the whole body) says it is a
    /// complete answer: errors, refusals and streams without their successful end are never
    /// stored. Call only after the upstream ended cleanly, and before the client is given the
    /// end of the response.
    pub fn commit(self, verdict: Verdict) {
        if self.overflowed {
            return;
        }
        if verdict != Verdict::Complete {
            log::debug!("route {}: answer not stored: {verdict}", self.plan.route);
            return;
        }
        let body = match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks[0].clone(),
            _ => {
                let mut buf = BytesMut::with_capacity(self.size);
                for c in &self.chunks {
                    buf.extend_from_slice(c);
                }
                buf.freeze()
            }
        };
        let entry = Arc::new(Entry {
            status: self.status,
            headers: self.headers,
            body,
            chunks: if self.streaming {
                self.marks
            } else {
                Vec::new()
            },
            stored_at: unix_now(),
            ttl: self.plan.ttl,
            usage: Default::default(),
        });
        self.plan
            .cache
            .store(&self.plan.route, self.plan.key, entry.clone());
        if let Some(leader) = self.plan.leader {
            leader.complete(entry);
        }
    }
}
