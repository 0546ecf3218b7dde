//! Serving a request from an identical one already in flight (single-flight follower).

use super::client_gone::unless_gone;
use super::ctx::Stamp;
use super::respond;
use super::session::Session;
use crate::cache::flight::{Follower, Tail};
use crate::cache::key::CacheKey;
use crate::cache::vary;
use crate::config::schema::Replay;
use crate::providers::{ResponseReader, Usage};
use std::time::Duration;

/// How following went.
pub enum Followed {
    /// The response (with this status, and the leader's usage) was written from the leader's.
    Served(u16, Option<Usage>),
    /// Nothing was written: the leader failed or took too long, or its answer is not shared;
    /// make the upstream call yourself.
    FallThrough,
    /// The client closed its connection while waiting; nothing was written.
    ClientLeft,
}

/// Answers from the leader's flight: a plain response once it is complete, a stream chunk by
/// chunk as the leader receives it — every byte the leader's client gets, stored or not.
/// `timeout` bounds the wait for the leader's head (and for a plain answer, its body: nothing
/// was written yet, so falling through is still possible). Errors happen only after the
/// response started.
///
/// `key` is this request's cache key: when the leader's answer varies on request headers
/// (`Vary`), a follower whose values of them select another variant makes its own call.
pub async fn serve(
    session: &mut Session,
    mut follower: Follower,
    key: CacheKey,
    timeout: Duration,
    stamp: Stamp<'_>,
) -> pingora::Result<Followed> {
    // Leaving drops the follower: the leader goes on only if others still wait on it.
    let Some(head) = unless_gone(session, follower.head(timeout)).await else {
        return Ok(Followed::ClientLeft);
    };
    let Some(head) = head else {
        return Ok(Followed::FallThrough);
    };
    if let Some(v) = &head.variant {
        if vary::variant_key(&key, &v.names, &session.req_header().headers) != v.key {
            return Ok(Followed::FallThrough);
        }
    }
    if !head.streaming {
        return match unless_gone(session, follower.complete(timeout)).await {
            None => Ok(Followed::ClientLeft),
            Some(Some(entry)) => respond::cached(session, &entry, Replay::Instant, stamp)
                .await
                .map(|()| Followed::Served(entry.status, entry.usage().cloned())),
            Some(None) => Ok(Followed::FallThrough),
        };
    }
    let mut usage = ResponseReader::for_headers(head.headers.iter().map(|(n, v)| (n, v)));
    // A follower stores nothing (its leader does): only the usage is wanted.
    usage.usage_only();
    let reply = respond::replay_head(session, head.status, &head.headers, None, stamp)?;
    session.write_response_header(reply).await?;
    let mut seen = 0;
    loop {
        match follower.tail(seen).await {
            Tail::Chunks(chunks) => {
                seen += chunks.len();
                for chunk in chunks {
                    usage.observe(&chunk);
                    session.write_response_body(Some(chunk), false).await?;
                }
            }
            Tail::Complete => {
                session.write_response_body(None, true).await?;
                usage.finish();
                return Ok(Followed::Served(head.status, usage.into_usage()));
            }
            // The leader's upstream broke off: this one breaks too, never looking complete
            // (exactly as the leader's own client is cut).
            Tail::Failed => {
                return Err(pingora::Error::explain(
                    pingora::ErrorType::ConnectionClosed,
                    "the coalesced upstream stream broke off",
                ))
            }
        }
    }
}
