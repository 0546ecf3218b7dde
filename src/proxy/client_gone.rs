//! Noticing that the client left while promptgate waits on its behalf (for the upstream's
//! response head, a coalesced leader, a concurrency slot or a retry backoff), so the upstream
//! call nobody will read can be cancelled.
//!
//! Every such wait goes through [`unless_gone`]. The client's connection is watched by reading
//! from it once the request body is complete: HTTP/1 sees the client's FIN or reset, HTTP/2 a
//! reset or closed stream (Pingora's `read_body_or_idle`, the probe its own proxy loop uses).
//! A client that half-closes its side after sending the request is taken as gone, as nginx
//! and Pingora do.

use super::session::Session;
use pingora::ErrorType;
use std::future::Future;

/// What promptgate was waiting for when the client left: the `waiting` label of
/// `promptgate_client_disconnects_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// The upstream's response head (connecting, sending the request, the model thinking).
    Upstream,
    /// An identical request's upstream call (single-flight follower).
    Coalesced,
    /// A concurrency slot of a `max_concurrent` upstream.
    Slot,
    /// The pause before a retry.
    Backoff,
}

impl Waiting {
    pub fn as_str(self) -> &'static str {
        match self {
            Waiting::Upstream => "upstream",
            Waiting::Coalesced => "coalesced",
            Waiting::Slot => "slot",
            Waiting::Backoff => "backoff",
        }
    }
}

/// Resolves once the client has closed its connection (or reset its HTTP/2 stream); stays
/// pending while it is there. Call only after the request body was read whole, and only while
/// nothing reads from the client otherwise.
pub async fn client_gone(session: &mut Session) {
    match session.read_body_or_idle(true).await {
        // Bytes after the body: the client pipelined its next request. It is still there; that
        // request cannot be served (the probe consumed a byte of it), so the connection closes
        // after this response.
        Err(e) if *e.etype() == ErrorType::ConnectError => session.set_keepalive(None),
        // FIN, reset, or a closed HTTP/2 stream.
        Err(_) => return,
        // Not returned once the body is complete; never busy-loop on it.
        Ok(_) => {}
    }
    std::future::pending::<()>().await
}

/// Runs `wait` to its end, unless the client leaves first: then `None`, and `wait` is dropped
/// (with any upstream connection it holds, which closes rather than going back to the pool).
/// When both are ready, the finished wait wins.
pub async fn unless_gone<F: Future>(session: &mut Session, wait: F) -> Option<F::Output> {
    tokio::select! {
        biased;
        out = wait => Some(out),
        () = client_gone(session) => None,
    }
}
