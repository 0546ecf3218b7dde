//! The proxy as Pingora's HTTP server app: reads each request head off a client connection,
//! answers it ([`Proxy::handle`]), logs it, and hands the connection back for the next one.
//!
//! promptgate answers every request itself (see `request_body.rs` for why it owns the
//! upstream exchange), so it runs on Pingora's `HttpServerApp`, not `ProxyHttp`: pingora-proxy's
//! request driver carries the state of its own upstream, cache and module phases, which
//! promptgate never takes, in one ≈ 15 KB future per request — copied twice per request (≈ 15%
//! of a cache hit's instructions) and held by every idle keep-alive connection while it waits
//! for its next request (BENCHMARKS.md, issue 22). Here waiting holds a small future, and a
//! request's own state is allocated once its head has arrived.

use super::session::Session;
use super::{client_gone, inbound, limit, report, respond, Ctx, Failure, Proxy, ProxyError};
use crate::server::inflight::InflightGuard;
use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::{Error, ErrorSource, ErrorType};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// At a shutdown or a handover, how long a keep-alive connection waiting for its next request
/// is still read before it is closed: a request its client sent as the shutdown began is then
/// answered (with `Connection: close`) instead of cut, the race every keep-alive server has
/// with its clients. A second: a client on the way has sent by then; an idle one costs the
/// process at most this much longer.
const HEAD_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// How Pingora serves the proxy's HTTP/1.x connections; h2c ones are told apart before
/// (`port.rs`) and served with these options and h2c on.
pub fn server_options() -> HttpServerOptions {
    HttpServerOptions::default()
}

#[async_trait]
impl HttpServerApp for Proxy {
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        // An idle keep-alive connection holds this future while it waits for its next request,
        // so it is kept small: the session is boxed at once (the future holds a pointer, not a
        // second copy of it beside the one it was given), and the rare answers below (a
        // malformed head, CONNECT) are boxed futures of their own. 4,408 → 1,184 bytes per
        // connection (`-Zprint-type-sizes`).
        let mut session = Box::new(session);
        let mut closing = shutdown.clone();
        let read = {
            let mut reading = std::pin::pin!(session.read_request());
            let before_shutdown = tokio::select! {
                // Biased: a request already buffered is served, not dropped, when shutdown starts.
                biased;
                read = &mut reading => Some(read),
                _ = closing.wait_for(|closing| *closing) => None,
            };
            match before_shutdown {
                Some(read) => read,
                // Shutting down (or handing the listeners over): an idle keep-alive connection is
                // closed instead of waited on — after [`HEAD_GRACE`] for a head already on its
                // way (sent as the shutdown began, or split across packets), which is answered.
                None => match tokio::time::timeout(HEAD_GRACE, &mut reading).await {
                    Ok(read) => read,
                    Err(_) => return None,
                },
            }
        };
        match read {
            Ok(true) => {}
            Ok(false) => return None, // the client closed an idle connection
            Err(e) => {
                Box::pin(unreadable(session, e)).await;
                return None;
            }
        }
        if session.req_header().method == http::Method::CONNECT {
            // Not a proxy for tunnels (RFC 9110 §9.3.6); Pingora's proxy refused it the same way.
            Box::pin(refuse(session, 405)).await;
            return None;
        }
        if *shutdown.borrow() {
            session.set_keepalive(None);
        }
        // Boxed: only once a request is here (see the top of this file).
        super::boxed(|| self.serve(Session::new(session))).await
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.server_options)
    }
}

/// A request head that could not be read: a malformed one gets Pingora's plain `400` (before
/// any route is known there is no JSON error to give), a broken connection nothing.
/// Logs only the error's kind: Pingora's context quotes the raw head, credentials included.
async fn unreadable(mut session: Box<ServerSession>, e: Box<Error>) {
    if matches!(e.etype, ErrorType::InvalidHTTPHeader) {
        log::debug!("a client sent a malformed request head: answered 400");
        refuse(session, 400).await;
    } else {
        log::debug!("reading a request head failed: {}", e.etype.as_str());
        session.shutdown().await;
    }
}

/// Answers with Pingora's plain error page for `status` and closes the connection.
async fn refuse(mut session: Box<ServerSession>, status: u16) {
    let _ = session.respond_error(status).await;
    session.shutdown().await;
}

impl Proxy {
    /// One request, from its head to its log line; the connection back if it can be reused.
    async fn serve(&self, mut session: Session) -> Option<ReusedHttpStream> {
        let mut ctx = Ctx::default();
        match self.answer(&mut session, &mut ctx).await {
            Ok(()) => {
                self.logging(&session, None, &ctx);
                // The request is done once logged (it leaves the in-flight count); what follows
                // is the connection's.
                drop(ctx);
                let settings = HttpPersistentSettings::for_session(&session);
                let reusable = (*session.into_inner()).finish().await.ok().flatten()?;
                Some(ReusedHttpStream::from_reusable_stream(reusable, settings))
            }
            Err(e) => {
                // The response had started (see `Failure`): never write a second head into it;
                // the connection is cut so a truncated body cannot look complete.
                if ctx.error != Some("response_interrupted") {
                    log::error!(
                        "Fail to answer the request: {e}, {}",
                        inbound::summary(&session)
                    );
                }
                if session.response_written().is_none() {
                    let err = ProxyError::Internal(e.etype().as_str().to_string());
                    let _ = respond::error(&mut session, &err, ctx.stamp()).await;
                }
                self.logging(&session, Some(&e), &ctx);
                None
            }
        }
    }

    /// Answers the request: `Ok` when the response was sent (or the client left while
    /// promptgate waited for it, logged as 499); `Err` when it broke off after its head.
    async fn answer(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<()> {
        ctx.inflight = Some(InflightGuard::new(&self.inflight));
        if self.draining.load(Ordering::Relaxed) {
            session.set_keepalive(None);
        }
        let runtime = self.runtime.load_full();
        ctx.runtime = Some(runtime.clone());
        match self.handle(session, ctx, &runtime).await {
            Ok(()) => Ok(()),
            // Whatever happened after the client left, there is no one to answer.
            Err(Failure::BeforeResponse(_)) if ctx.client_left.is_some() => {
                ctx.status = ProxyError::ClientClosed.status();
                ctx.error = Some(ProxyError::ClientClosed.kind());
                log::debug!(
                    "{} {}: the client closed its connection while waiting ({})",
                    session.req_header().method,
                    session.req_header().uri.path(),
                    ctx.client_left.map_or("-", client_gone::Waiting::as_str)
                );
                Ok(())
            }
            Err(Failure::BeforeResponse(e)) => {
                ctx.status = e.status();
                ctx.error = Some(e.kind());
                log::warn!(
                    "{} {}: {e}",
                    session.req_header().method,
                    session.req_header().uri.path()
                );
                respond::error(session, &e, ctx.stamp()).await?;
                if matches!(e, ProxyError::BodyTooLarge { .. }) {
                    // The answer is out: the request's time ends here, not after the linger.
                    ctx.answered_in = Some(ctx.started.elapsed());
                    super::request_body::linger(session).await;
                }
                Ok(())
            }
            Err(Failure::AfterResponse(e)) => {
                ctx.error = Some("response_interrupted");
                // An upstream that broke off is a warning naming it; a client that left is its
                // own business.
                let req = session.req_header();
                match (e.esource(), e.context.as_ref()) {
                    (ErrorSource::Upstream, Some(why)) => log::warn!(
                        "{} {}: {why}; the answer had started, so the client's connection is cut",
                        req.method,
                        req.uri.path()
                    ),
                    _ => log::debug!(
                        "{} {}: the answer could not be completed: {e}",
                        req.method,
                        req.uri.path()
                    ),
                }
                Err(e)
            }
        }
    }

    /// After the answer: charge its usage to its rate-limit bucket, then metrics and the access
    /// log line, from the ctx.
    fn logging(&self, session: &Session, e: Option<&Error>, ctx: &Ctx) {
        limit::settle(&self.limiter, &self.metrics, ctx);
        report::report(&self.metrics, session, e, ctx);
    }
}
