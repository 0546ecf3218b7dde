//! The semantic step of a request, after an exact miss: split off the compared text, embed it,
//! search its context, and serve a hit (or, in shadow mode, only count it). Fails open: any
//! trouble is a miss, recorded in `ctx.semantic` for the metrics.

use super::ctx::{Ctx, Stamp};
use super::embed;
use super::limit;
use super::respond;
use super::session::Session;
use super::Failure;
use crate::cache::entry::Entry;
use crate::cache::key::CacheKey;
use crate::cache::policy;
use crate::cache::semantic::extract::{self, Ineligible};
use crate::cache::semantic::{ContextKey, Indexing, Probe, SemanticLookup};
use crate::cache::{Cache, CacheStatus, Lookup};
use crate::config::schema::SemanticSpec;
use crate::limits::Limiter;
use crate::metrics::SemanticRecord;
use crate::routing::upstream::Upstream;
use crate::routing::Route;
use http::{HeaderName, HeaderValue};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// When an embedder failure was last logged as a warning (Unix seconds). A dead embedder fails
/// every semantic lookup open; one warning a minute says so without flooding the log (the
/// rest go to debug, every one is counted in the metrics).
static LAST_EMBED_WARNING: AtomicU64 = AtomicU64::new(0);

/// True at most once a minute per `last`: whether this failure is the one to warn about.
fn warn_now(last: &AtomicU64) -> bool {
    let now = crate::clock::unix_now();
    let before = last.load(Ordering::Relaxed);
    now >= before.saturating_add(60)
        && last
            .compare_exchange(before, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// Request header: `exact` turns the semantic lookup off for this request. Response header on
/// a hit: `exact` or `semantic`.
pub const MATCH_HEADER: HeaderName = HeaderName::from_static("x-promptgate-cache-match");
/// Response header of a semantic hit: the cosine similarity, four decimals.
pub const SIMILARITY_HEADER: HeaderName = HeaderName::from_static("x-promptgate-similarity");

/// What the semantic step decided.
pub(super) enum Step {
    Answered,
    /// Go upstream; index the answer under this probe and vector if it is stored.
    Miss(Option<Box<Indexing>>),
}

/// The embedder identity in a context key: vectors of another upstream, path or model are
/// never compared with these.
pub fn embedder_identity(upstream: &str, spec: &SemanticSpec) -> String {
    format!("{upstream}\n{}\n{}", spec.path, spec.model)
}

/// The request's probe (context key and compared text), or why it has none.
pub fn probe(
    req: &pingora::http::RequestHeader,
    route: &Route,
    spec: &SemanticSpec,
    embedder: &Upstream,
    path: &str,
    body: &[u8],
) -> Result<Probe, Ineligible> {
    let split = extract::split(path, body, spec.max_chars)?;
    let rest = crate::body::ParsedBody::new(&split.rest);
    // Not through the key memo, which serves the exact-match lookup of whole bodies.
    let rest_key = policy::request_key(req, &route.key_name, &route.cache, path, &rest, None);
    let context = ContextKey::new(&embedder_identity(&embedder.name, spec), &rest_key);
    Ok(Probe::new(context, split.text))
}

/// The metrics label of an ineligibility.
fn skip_label(e: &Ineligible) -> &'static str {
    match e {
        Ineligible::Operation => "operation",
        Ineligible::NotJson => "not_json",
        Ineligible::NotUser => "not_user",
        Ineligible::NonText(_) => "non_text",
        Ineligible::Empty => "empty",
        Ineligible::TooLong { .. } => "too_long",
    }
}

/// Everything the step needs from the request.
pub(super) struct Request<'a> {
    pub route: &'a Route,
    pub path: &'a str,
    pub body: &'a [u8],
    /// The route's rate limit is asked before an embedding call.
    pub limiter: &'a Limiter,
    /// The request's exact key: a semantic hit is stored under it too …
    pub key: CacheKey,
    /// … for at most this long, when the request lets its answer be stored (`None` after
    /// `x-promptgate-ttl: 0`).
    pub store_for: Option<Duration>,
}

/// Looks the request up semantically when its route opts in; serves a hit.
pub(super) async fn lookup(
    cache: &Cache,
    session: &mut Session,
    ctx: &mut Ctx,
    r: Request<'_>,
) -> Result<Step, Failure> {
    let (Some(spec), Some(embedder)) = (&r.route.cache.semantic, &r.route.embedder) else {
        return Ok(Step::Miss(None));
    };
    let report = ctx.semantic.insert(SemanticRecord::default());
    let exact_only = session
        .req_header()
        .headers
        .get(&MATCH_HEADER)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"exact"));
    if exact_only {
        report.skipped = Some("exact_only");
        return Ok(Step::Miss(None));
    }
    let probe = match probe(
        session.req_header(),
        r.route,
        spec,
        embedder,
        r.path,
        r.body,
    ) {
        Ok(p) => p,
        Err(e) => {
            report.skipped = Some(skip_label(&e));
            return Ok(Step::Miss(None));
        }
    };
    // An embedding call costs what an upstream call costs, on the embedder's bill: a client over
    // its rate limit gets none. On a route that counts only upstream calls (`count_hits:
    // false`) the limit is asked here, before the call, instead of before the upstream one, so
    // a semantic hit counts as a request (not its tokens: `limit::settle`) — docs/rate-limits.md.
    if let Some(l) = r.route.rate_limit.as_ref().filter(|l| !l.count_hits) {
        limit::admit(r.limiter, session.req_header(), ctx, r.route, l).await?;
    }
    let report = ctx.semantic.get_or_insert_with(SemanticRecord::default);
    let started = Instant::now();
    let embedded = embed::embed(embedder, &spec.path, &spec.model, &probe.text, spec.timeout).await;
    let took = started.elapsed();
    let vector = match embedded {
        Ok(v) => {
            report.embed = Some((embedder.name.clone(), took, None));
            v
        }
        Err(e) => {
            let level = if warn_now(&LAST_EMBED_WARNING) {
                log::Level::Warn
            } else {
                log::Level::Debug
            };
            log::log!(
                level,
                "route {}: embedder {} ({}:{}) failed: {e}; semantic lookups go on as misses \
                 (promptgate_semantic_embed_errors_total counts them; this warning at most once a minute)",
                r.route.name,
                embedder.name,
                embedder.host,
                embedder.port
            );
            report.embed = Some((embedder.name.clone(), took, Some(e.label())));
            return Ok(Step::Miss(None));
        }
    };
    let search = Instant::now();
    let found = cache
        .semantic_lookup(
            &r.route.name,
            &probe,
            &vector,
            spec.threshold,
            &session.req_header().headers,
        )
        .await;
    report.search = Some(search.elapsed());
    let indexing = Indexing {
        probe,
        vector,
        max_per_context: spec.max_per_context,
    };
    match found {
        SemanticLookup::Hit {
            entry, similarity, ..
        } if !spec.shadow => {
            report.served = Some(similarity);
            ctx.lookup = Some(Lookup::SemanticHit(entry.clone()));
            ctx.cache = Some(CacheStatus::Hit);
            ctx.status = entry.status;
            // The answer is now this request's exact entry too: repeating it costs no embedding.
            // Never for longer than the original lives, nor than this request allows.
            if let Some(ttl) = r.store_for {
                cache.store_for_request(
                    &r.route.name,
                    r.key,
                    copy_for(&entry, ttl),
                    &session.req_header().headers,
                );
            }
            // What every answer of this request carries (a rate-limited route's headers), then
            // the match and its similarity.
            let stamp = ctx.stamp();
            let mut extra = stamp.limit.clone();
            extra.push((MATCH_HEADER, HeaderValue::from_static("semantic")));
            let similarity = format!("{similarity:.4}");
            extra.push((
                SIMILARITY_HEADER,
                HeaderValue::from_str(&similarity).expect("a number is a header value"),
            ));
            let stamp = Stamp {
                limit: &extra,
                ..stamp
            };
            respond::cached(session, &entry, r.route.cache.replay, stamp)
                .await
                .map_err(Failure::AfterResponse)?;
            Ok(Step::Answered)
        }
        SemanticLookup::Hit { similarity, .. } => {
            report.shadow = Some(similarity);
            Ok(Step::Miss(Some(Box::new(indexing))))
        }
        SemanticLookup::Miss(rejected) => {
            report.refused_by_guard = rejected.by_guard;
            report.below_threshold = rejected.below_threshold;
            Ok(Step::Miss(Some(Box::new(indexing))))
        }
    }
}

/// `entry` to store under another key for at most `ttl` from now: the same entry when it ends
/// sooner anyway, else a copy that ends `ttl` from now (its age, and so `Age`, kept).
fn copy_for(entry: &Arc<Entry>, ttl: Duration) -> Arc<Entry> {
    match entry.remaining_ttl() {
        Some(left) if left <= ttl => entry.clone(),
        _ => Arc::new(Entry {
            ttl: Duration::from_secs(entry.age()) + ttl,
            ..(**entry).clone()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedder_failures_are_warned_about_at_most_once_a_minute() {
        let last = AtomicU64::new(0);
        assert!(warn_now(&last), "the first failure warns");
        assert!(!warn_now(&last), "the next, the same minute, does not");
        last.store(crate::clock::unix_now() - 61, Ordering::Relaxed);
        assert!(warn_now(&last), "a minute later it warns again");
    }
}
