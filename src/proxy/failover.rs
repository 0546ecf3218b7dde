//! Trying a route's targets until one answers: retries with exponential backoff and full
//! jitter (honouring `Retry-After`), failover to the next target, passive health.
//!
//! All of it happens before anything is sent to the client, and every attempt sends the same
//! buffered body, intact (each target applying its own model rewrite, and an Anthropic target
//! on a `prompt_caching: auto` route its breakpoints). Every wait watches the
//! client: one that leaves cancels the call (see [`watched`]).

use super::client_gone::{unless_gone, Waiting};
use super::ctx::Ctx;
use super::errors::{Named, ProxyError};
use super::exchange::{self, UpstreamResponse};
use super::heads::{self, RequestHead};
use super::session::Session;
use crate::body::ParsedBody;
use crate::cache::record::RecordPlan;
use crate::config::schema::{RetryCondition, RetryOn, RetrySpec};
use crate::providers::anthropic::CacheMinimums;
use crate::routing::upstream::{Slot, Upstream};
use crate::routing::{Route, Target};
use bytes::Bytes;
use http::HeaderValue;
use pingora::http::RequestHeader;
use std::future::Future;
use std::pin::{pin, Pin};
use std::time::{Duration, Instant};

/// The response to relay, from the target that gave it.
pub struct Answer<'r> {
    pub target: &'r Target,
    pub response: UpstreamResponse,
    /// The target's concurrency slot, held until the response has been relayed.
    pub slot: Slot,
}

/// What kind of failure an error is, for the retry policy.
fn condition(e: &ProxyError) -> Option<RetryCondition> {
    match e {
        ProxyError::Resolve { .. } | ProxyError::Connect { .. } => Some(RetryCondition::Connect),
        ProxyError::Timeout {
            phase: "connect", ..
        } => Some(RetryCondition::Connect),
        ProxyError::Timeout { .. } => Some(RetryCondition::Timeout),
        ProxyError::Reset { .. } => Some(RetryCondition::Reset),
        _ => None,
    }
}

fn retries_condition(policy: &RetrySpec, c: RetryCondition) -> bool {
    policy.on.contains(&RetryOn::Named(c))
}

fn retries_status(policy: &RetrySpec, status: u16) -> bool {
    policy.on.contains(&RetryOn::Status(status))
}

/// Backoff before retry number `retry` (1-based): full jitter under an exponential ceiling
/// (`base`, `2·base`, `4·base`… capped at `max`), never shorter than an honoured `Retry-After`
/// (itself capped at `max`).
pub fn backoff(policy: &RetrySpec, retry: u32, retry_after: Option<Duration>) -> Duration {
    let ceiling = policy
        .base
        .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
        .min(policy.max);
    let jittered = ceiling.mul_f64(fastrand::f64());
    match retry_after {
        Some(ra) => jittered.max(ra.min(policy.max)),
        None => jittered,
    }
}

/// `Retry-After` in seconds or as an HTTP date.
fn retry_after(response: &UpstreamResponse) -> Option<Duration> {
    let value = response
        .header()
        .headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// What every attempt sends (the client's head comes from the session), before each target's
/// own headers and model rewrite; and whether the answer is wanted without the client.
pub struct Outgoing<'a, 'b> {
    /// The upstream path and query (the route's prefix rewriting applied).
    pub forward: &'a str,
    pub body: &'a Bytes,
    /// `body`'s tree, for the model rewrites and prompt-cache breakpoints.
    pub parsed: &'a ParsedBody<'b>,
    /// With `prompt_caching: auto`: the minimum prefix per model for a breakpoint.
    pub prompt_caching: Option<&'a CacheMinimums>,
    /// For a WebSocket upgrade, the client's `Upgrade` value: sent on with
    /// `Connection: upgrade` (both hop-by-hop, so `build_request` leaves them out).
    pub upgrade: Option<&'a HeaderValue>,
    /// How the answer would be recorded: it decides whether the call goes on when the client
    /// leaves (see [`RecordPlan::wanted_without_client`]).
    pub record: Option<&'a RecordPlan>,
}

/// Sends the request to `targets` in order, retrying and failing over per the route's policy,
/// until a response that is not retried. When all fail, the last upstream response (if any
/// attempt got one) is the answer; otherwise the last error, listing what was tried.
///
/// A client that leaves while this waits ends it with [`ProxyError::ClientClosed`] (no further
/// attempt), unless the answer is still wanted without it: then `ctx.client_left` is set and
/// the call goes on, no longer watched.
pub async fn exchange<'r>(
    route: &Route,
    targets: &[&'r Target],
    session: &mut Session,
    outgoing: Outgoing<'_, '_>,
    ctx: &mut Ctx,
) -> Result<Answer<'r>, ProxyError> {
    let policy = &route.retry;
    let mut tried: Vec<String> = Vec::new();
    let mut last_response: Option<Answer<'r>> = None;
    let mut last_error: Option<ProxyError> = None;
    for (index, &target) in targets.iter().enumerate() {
        if index > 0 {
            ctx.failovers += 1;
        }
        let up = &target.upstream;
        let (body, breakpoints) = exchange::body_for(
            target,
            outgoing.forward,
            outgoing.body,
            outgoing.parsed,
            outgoing.prompt_caching,
        );
        ctx.prompt_cache_breakpoints = breakpoints;
        let (forward, upgrade, body_len) = (outgoing.forward, outgoing.upgrade, body.len());
        let head = |client: &RequestHeader| target_head(client, up, forward, upgrade, body_len);
        // Built here (a head that cannot be built fails the request before any attempt), and
        // handed whole to the first try; a later try builds its own.
        let mut first = Some(head(session.req_header())?);
        let sending = Sending {
            up,
            h1: outgoing.upgrade.is_some(),
            body: &body,
            head: &head,
        };
        for attempt in 1..=policy.attempts.max(1) {
            if attempt > 1 {
                ctx.retries += 1;
            }
            let h1 = outgoing.upgrade.is_some();
            let slot = pin!(up.slot(h1));
            let mut slot = match watched(session, ctx, outgoing.record, Waiting::Slot, slot).await?
            {
                Ok(slot) => slot,
                Err(busy) => {
                    tried.push(format!("{} busy", up.name));
                    last_error = Some(ProxyError::Busy {
                        upstream: Named::of(up),
                        limit: busy.limit,
                    });
                    break; // a full upstream: try the next target now
                }
            };
            let started = Instant::now();
            let sent = send_watched(
                session,
                ctx,
                outgoing.record,
                &sending,
                &mut first,
                &mut slot,
            )
            .await?;
            let wait = match sent {
                Ok(response) => {
                    let status = response.header().status.as_u16();
                    if !retries_status(policy, status) {
                        up.record_success(started.elapsed());
                        ctx.ttfb = Some(started.elapsed());
                        return Ok(Answer {
                            target,
                            response,
                            slot,
                        });
                    }
                    up.record_failure();
                    tried.push(format!("{} HTTP {status}", up.name));
                    let after = retry_after(&response);
                    // Keep the newest answer: it is the client's if every attempt fails.
                    last_response = Some(Answer {
                        target,
                        response,
                        slot,
                    });
                    after
                }
                Err(e @ ProxyError::Busy { .. }) => {
                    // No connection freed up (it turned out HTTP/1.1): like a full slot.
                    drop(slot);
                    tried.push(format!("{} busy", up.name));
                    last_error = Some(e);
                    break;
                }
                Err(e) => {
                    drop(slot);
                    up.record_failure();
                    tried.push(format!("{} {}", up.name, e.kind()));
                    let Some(c) = condition(&e).filter(|c| retries_condition(policy, *c)) else {
                        // Not a failure the policy retries: this is the answer.
                        return Err(exhausted(e, route, &tried));
                    };
                    last_error = Some(e);
                    // A target that cannot be reached is skipped at once when another remains.
                    if c == RetryCondition::Connect && index + 1 < targets.len() {
                        break;
                    }
                    None
                }
            };
            if attempt < policy.attempts {
                let pause = pin!(tokio::time::sleep(backoff(policy, attempt, wait)));
                watched(session, ctx, outgoing.record, Waiting::Backoff, pause).await?;
            }
        }
    }
    match (last_response, last_error) {
        (Some(answer), _) => Ok(answer),
        (None, Some(e)) => Err(exhausted(e, route, &tried)),
        (None, None) => Err(ProxyError::Internal(format!(
            "route {} has no targets",
            route.name
        ))),
    }
}

/// `up`'s request head ([`exchange::build_request`] of the client's), with the WebSocket
/// `Upgrade` when there is one.
fn target_head(
    client: &RequestHeader,
    up: &Upstream,
    forward: &str,
    upgrade: Option<&HeaderValue>,
    body_len: usize,
) -> Result<RequestHead, ProxyError> {
    let mut req = exchange::build_request(client, up, forward, body_len)?;
    if let Some(upgrade) = upgrade {
        let invalid = |_| ProxyError::BadRequest("Upgrade header is not valid".into());
        heads::insert(&mut req.headers, http::header::UPGRADE, upgrade.clone()).map_err(invalid)?;
        let connection = HeaderValue::from_static("upgrade");
        heads::insert(&mut req.headers, http::header::CONNECTION, connection).map_err(invalid)?;
    }
    Ok(req)
}

/// What each try of an attempt sends.
struct Sending<'a> {
    up: &'a Upstream,
    /// Offer only HTTP/1.1 (a WebSocket upgrade).
    h1: bool,
    body: &'a Bytes,
    /// Builds the upstream head from the client's.
    head: &'a (dyn Fn(&RequestHeader) -> Result<RequestHead, ProxyError> + Sync),
}

/// One attempt: [`exchange::send`]'s tries (a pooled connection found dead is replaced, up to
/// [`exchange::STALE_CONNECTION_ATTEMPTS`] tries), each wait [`watched`]. The first try sends
/// `first` when it is still there; any other builds its head anew from the client's, between
/// the waits (the client's head is in `session`, which the waits watch). A head goes whole to
/// its connection: none is copied.
async fn send_watched(
    session: &mut Session,
    ctx: &mut Ctx,
    record: Option<&RecordPlan>,
    sending: &Sending<'_>,
    first: &mut Option<RequestHead>,
    slot: &mut Slot,
) -> Result<Result<UpstreamResponse, ProxyError>, ProxyError> {
    let up = sending.up;
    let peer = pin!(exchange::peer(up, sending.h1));
    let mut peer = match watched(session, ctx, record, Waiting::Upstream, peer).await? {
        Ok(peer) => peer,
        Err(e) => return Ok(Err(e)),
    };
    let mut tries = 0;
    loop {
        tries += 1;
        let req = match first.take() {
            Some(req) => req,
            None => (sending.head)(session.req_header())?,
        };
        let sent = pin!(exchange::send_once(up, peer, req, sending.body, slot));
        match watched(session, ctx, record, Waiting::Upstream, sent).await? {
            Ok(response) => return Ok(Ok(response)),
            Err(u) if u.resend && tries < exchange::STALE_CONNECTION_ATTEMPTS => peer = u.peer,
            Err(u) => return Ok(Err(u.error)),
        }
    }
}

/// Runs one wait of the exchange while watching the client. If it leaves, the wait is dropped
/// (an upstream connection with it: closed, never pooled) and the call ends with
/// [`ProxyError::ClientClosed`] — unless `record` still wants the answer (to fill the cache, or
/// for followers): then the same wait goes on to its end, and so does the rest of the call.
///
/// The wait is pinned by the caller and borrowed: taken by value, its whole state (a send is
/// kilobytes) would be copied into this future and held here twice, and so in every future
/// awaiting this one (≈ 1,400 instructions a pass-through, by callgrind).
async fn watched<F: Future>(
    session: &mut Session,
    ctx: &mut Ctx,
    record: Option<&RecordPlan>,
    waiting: Waiting,
    mut wait: Pin<&mut F>,
) -> Result<F::Output, ProxyError> {
    if ctx.client_left.is_some() {
        return Ok(wait.await);
    }
    if let Some(out) = unless_gone(session, wait.as_mut()).await {
        return Ok(out);
    }
    ctx.client_left = Some(waiting);
    if record.is_some_and(RecordPlan::wanted_without_client) {
        log::debug!("the client left; the upstream call goes on for the cache or for followers");
        Ok(wait.await)
    } else {
        Err(ProxyError::ClientClosed)
    }
}

/// The final error, naming what was tried when there was more than one attempt.
fn exhausted(last: ProxyError, route: &Route, tried: &[String]) -> ProxyError {
    if tried.len() <= 1 {
        return last;
    }
    ProxyError::Exhausted {
        last: Box::new(last),
        route: route.name.clone(),
        tried: tried.join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_within_its_bounds_and_honours_retry_after() {
        let policy = RetrySpec {
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            ..RetrySpec::default()
        };
        for _ in 0..200 {
            assert!(backoff(&policy, 1, None) <= Duration::from_millis(100));
            assert!(backoff(&policy, 3, None) <= Duration::from_millis(400));
            assert!(backoff(&policy, 30, None) <= Duration::from_millis(1000));
            let ra = backoff(&policy, 1, Some(Duration::from_millis(700)));
            assert!(ra >= Duration::from_millis(700) && ra <= Duration::from_millis(1000));
            assert_eq!(
                backoff(&policy, 1, Some(Duration::from_secs(60))),
                Duration::from_millis(1000)
            );
        }
        let spread: std::collections::HashSet<_> =
            (0..50).map(|_| backoff(&policy, 4, None)).collect();
        assert!(spread.len() > 10, "jittered");
    }
}
