//! Recording a response while it is relayed to the client, to store it once complete — and,
//! as the leader of a flight, sharing it live with identical requests waiting on it.

use super::entry::{ChunkMark, Entry};
use super::flight::{Leader, SharedHead, Variant};
use super::key::CacheKey;
use super::semantic::Indexing;
use super::vary::{self, Varies};
use super::Cache;
use crate::clock::unix_now;
use crate::headers;
use crate::providers::{BodyFormat, Verdict};
use bytes::{Bytes, BytesMut};
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
    /// Set on semantic routes after a semantic miss: the stored answer is indexed under this
    /// request's compared text too.
    pub semantic: Option<Box<Indexing>>,
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
    /// Set when the answer varies on request headers: which variant this is.
    variant: Option<Variant>,
}

impl Recorder {
    /// Starts recording if `head` (the response as sent to the client) may be stored or
    /// shared: a 2xx the upstream did not mark `no-store` or `private`. Otherwise the plan is
    /// dropped, which releases any followers (before their first byte) to make their own calls.
    /// An answer declared larger than the limit is shared with followers but not stored.
    ///
    /// An answer whose `Vary` names request headers is stored (and shared) as the variant that
    /// `request`'s values of them select; `Vary: *` is neither stored nor shared.
    pub fn start(
        plan: RecordPlan,
        head: &http::response::Parts,
        request: &http::HeaderMap,
    ) -> Option<Recorder> {
        if !head.status.is_success() {
            return None;
        }
        let header = |name| head.headers.get(name).and_then(|v| v.to_str().ok());
        if forbids_storing(head.headers.get_all(http::header::CACHE_CONTROL)) {
            return None;
        }
        let variant = match vary::of(head.headers.get_all(http::header::VARY)) {
            Varies::No => plan.cache.known_variants(&plan.key).map(|names| Variant {
                key: vary::variant_key(&plan.key, &names, request),
                names,
            }),
            Varies::On(names) => Some(Variant {
                key: vary::variant_key(&plan.key, &names, request),
                names,
            }),
            Varies::Anything => return None,
        };
        let declared = header(http::header::CONTENT_LENGTH).and_then(|v| v.parse::<usize>().ok());
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
        let mut recorder = Recorder {
            plan,
            status: head.status.as_u16(),
            headers,
            chunks: Vec::new(),
            marks: Vec::new(),
            streaming,
            started: Instant::now(),
            size: 0,
            overflowed: false,
            variant,
        };
        if let Some(leader) = &recorder.plan.leader {
            leader.head(SharedHead {
                status: recorder.status,
                headers: recorder.headers.clone(),
                streaming: recorder.streaming,
                variant: recorder.variant.clone(),
            });
        }
        if declared.is_some_and(|len| len > recorder.plan.limit) {
            recorder.overflow();
        }
        Some(recorder)
    }

    /// The answer is too large to store: stop holding memory for it, and close the flight
    /// to newcomers. Followers already waiting still get every chunk.
    fn overflow(&mut self) {
        self.overflowed = true;
        self.chunks = Vec::new();
        self.marks = Vec::new();
        if let Some(leader) = &mut self.plan.leader {
            leader.close();
        }
    }

    /// The most body bytes this response may have to be stored (`cache.max_entry_bytes`).
    pub fn limit(&self) -> usize {
        self.plan.limit
    }

    pub fn push(&mut self, chunk: &Bytes) {
        if let Some(leader) = &self.plan.leader {
            leader.chunk(chunk);
        }
        if self.overflowed {
            return;
        }
        self.size += chunk.len();
        if self.size > self.plan.limit {
            self.overflow();
            return;
        }
        self.chunks.push(chunk.clone());
        self.marks.push(ChunkMark {
            end: self.size as u64,
            at_ms: u32::try_from(self.started.elapsed().as_millis()).unwrap_or(u32::MAX),
        });
    }

    /// True when the rest of the upstream response is worth reading after the client left:
    /// identical requests are waiting on this one (they are owed the whole answer), or it is
    /// still storable and the client already had everything that matters (`so_far`, the
    /// verdict on what was read, says the stream ended well), or the route asks to fill the
    /// cache anyway.
    pub fn worth_finishing(&self, so_far: Verdict) -> bool {
        self.plan.leader.as_ref().is_some_and(Leader::has_followers)
            || (!self.overflowed
                && (so_far == Verdict::Complete || self.plan.complete_on_disconnect))
    }

    /// Stores the response if it may be — not too large, and `verdict` (the provider's, on
    /// the whole body) says it is a complete answer: errors, refusals and streams without
    /// their successful end are never stored — and hands the end to any followers either way
    /// (they are owed every byte the leader's client got). Call only after the upstream ended
    /// cleanly, and before the client is given the end of the response.
    pub fn commit(mut self, verdict: Verdict) {
        let stored = self.store(verdict);
        if let Some(leader) = self.plan.leader.take() {
            leader.finish(stored);
        }
    }

    /// Stores the answer if it may be, returning the entry.
    fn store(&mut self, verdict: Verdict) -> Option<Arc<Entry>> {
        if self.overflowed {
            return None;
        }
        if verdict != Verdict::Complete {
            log::debug!("route {}: answer not stored: {verdict}", self.plan.route);
            return None;
        }
        let chunks = std::mem::take(&mut self.chunks);
        let body = match chunks.len() {
            0 => Bytes::new(),
            1 => chunks[0].clone(),
            _ => {
                let mut buf = BytesMut::with_capacity(self.size);
                for c in &chunks {
                    buf.extend_from_slice(c);
                }
                buf.freeze()
            }
        };
        let entry = Arc::new(Entry {
            status: self.status,
            headers: std::mem::take(&mut self.headers),
            body,
            chunks: if self.streaming {
                std::mem::take(&mut self.marks)
            } else {
                Vec::new()
            },
            stored_at: unix_now(),
            ttl: self.plan.ttl,
            usage: Default::default(),
            head: Default::default(),
        });
        let cache = &self.plan.cache;
        match &self.variant {
            Some(v) => cache.store_variant(
                &self.plan.route,
                self.plan.key,
                &v.names,
                v.key,
                entry.clone(),
            ),
            None => cache.store(&self.plan.route, self.plan.key, entry.clone()),
        }
        // Indexed under the primary key: a semantic hit looks it up with its own request's
        // headers, so of an answer that varies it gets the variant those select, or none.
        if let Some(ix) = self.plan.semantic.take() {
            cache.semantic_store(
                &self.plan.route,
                &ix.probe,
                ix.vector,
                self.plan.key,
                self.plan.ttl,
                ix.max_per_context,
            );
        }
        Some(entry)
    }
}

/// True when a response's `Cache-Control` forbids a shared cache to store it: `no-store`, or
/// `private` (meant for one user; with or without a field list, the whole answer is kept out).
fn forbids_storing<'a>(values: impl IntoIterator<Item = &'a http::HeaderValue>) -> bool {
    values.into_iter().any(|v| {
        v.to_str().unwrap_or("").split(',').any(|directive| {
            let name = directive.split('=').next().unwrap_or("").trim();
            name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("private")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_store_and_private_forbid_storing() {
        let forbids = |v: &'static str| forbids_storing([&http::HeaderValue::from_static(v)]);
        assert!(forbids("no-store"));
        assert!(forbids("max-age=60, No-Store"));
        assert!(forbids("private"));
        assert!(forbids(r#"private="set-cookie", max-age=60"#));
        assert!(!forbids("public, max-age=60"));
        assert!(!forbids("no-cache"));
        assert!(!forbids("x-no-store-hint"));
    }
}
