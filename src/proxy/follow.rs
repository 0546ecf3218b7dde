//! Serving a request from an identical one already in flight (single-flight follower).

use super::client_gone::unless_gone;
use super::ctx::Stamp;
use super::respond;
use crate::cache::flight::{Follower, Tail};
use crate::config::schema::Replay;
use crate::providers::{Usage, UsageObserver};
use pingora::proxy::Session;
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
/// chunk as the leader receives it. Errors happen only after the response started.
pub async fn serve(
    session: &mut Session,
    mut follower: Follower,
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
    if !head.streaming {
        return match unless_gone(session, follower.complete(timeout)).await {
            None => Ok(Followed::ClientLeft),
            Some(Some(entry)) => respond::cached(session, &entry, Replay::Instant, stamp)
                .await
                .map(|()| Followed::Served(entry.status, entry.usage().cloned())),
            Some(None) => Ok(Followed::FallThrough),
        };
    }
    let content_type = head
        .headers
        .iter()
        .find(|(n, _)| n == http::header::CONTENT_TYPE)
        .and_then(|(_, v)| v.to_str().ok())
        .unwrap_or("");
    let mut usage = UsageObserver::for_content_type(content_type);
    let reply = respond::replay_head(session, head.status, &head.headers, None, stamp)?;
    session
        .write_response_header(Box::new(reply), false)
        .await?;
    let mut seen = 0;
    loop {
        match follower.tail(seen, timeout).await {
            Tail::Chunks(chunks) => {
                seen += chunks.len();
                for chunk in chunks {
                    usage.observe(&chunk);
                    session.write_response_body(Some(chunk), false).await?;
                }
            }
            Tail::Complete => {
                session.write_response_body(None, true).await?;
                return Ok(Followed::Served(head.status, usage.finish()));
            }
            // The leader's stream broke: this one breaks too, never looking complete.
            Tail::Failed => {
                return Err(pingora::Error::explain(
                    pingora::ErrorType::ConnectionClosed,
                    "the coalesced upstream stream broke off",
                ))
            }
        }
    }
}
