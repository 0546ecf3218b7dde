//! The proxy's plaintext port: tells h2c (HTTP/2 by prior knowledge) from HTTP/1.x by a
//! connection's first bytes, as soon as they differ from the h2 connection preface.
//!
//! Pingora's own detection reads exactly the preface's 24 bytes before deciding, so a whole
//! HTTP/1.x request shorter than that — `GET / HTTP/1.0\r\n\r\n` (18 bytes), a load balancer's
//! `OPTIONS / HTTP/1.0\r\n\r\n` health check (22) — was never answered: the connection waited
//! for bytes its client would never send. Here the first byte that is not the preface's decides
//! (every HTTP/1.x method differs at once: the preface starts `PRI *`, RFC 9113 §3.4), the bytes
//! read are put back, and the connection goes to Pingora's HTTP/1.x or h2 server as before.

use super::Proxy;
use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use std::sync::Arc;
use tokio::io::AsyncReadExt;

/// The client connection preface of HTTP/2 (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The proxy's listening app: sniffs each new plaintext connection, then serves it as
/// HTTP/1.x (the proxy's own app, h2c off) or as h2c ([`H2c`]).
pub struct ProxyPort {
    http1: Arc<Proxy>,
    h2c: Arc<H2c>,
}

impl ProxyPort {
    pub fn new(proxy: Proxy) -> ProxyPort {
        let proxy = Arc::new(proxy);
        let mut options = proxy.server_options.clone();
        options.h2c = true;
        ProxyPort {
            h2c: Arc::new(H2c {
                proxy: proxy.clone(),
                options,
            }),
            http1: proxy,
        }
    }
}

#[async_trait]
impl ServerApp for ProxyPort {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if !stream.as_any().is::<L4Stream>() {
            // Bytes read could not be put back on another kind of stream: Pingora decides.
            return self.h2c.process_new(stream, shutdown).await;
        }
        let mut head = [0u8; PREFACE.len()];
        let mut read = 0;
        // Not cut short by a shutdown, as Pingora's own check is not: a connection accepted
        // just before it has its first request on the way (a client without keep-alive opens
        // one per request), and that request is served; the response then closes it.
        let h2c = loop {
            match stream.read(&mut head[read..]).await {
                Ok(0) => return None, // closed before a request
                Ok(n) => read += n,
                Err(e) => {
                    log::debug!("reading a new connection's first bytes failed: {e}");
                    return None;
                }
            }
            if head[..read] != PREFACE[..read] {
                break false;
            }
            if read == PREFACE.len() {
                break true;
            }
        };
        let mut l4 = stream.into_any().downcast::<L4Stream>().ok()?;
        l4.rewind(&head[..read]);
        if h2c {
            self.h2c.process_new(l4, shutdown).await
        } else {
            self.http1.process_new(l4, shutdown).await
        }
    }
}

/// The proxy for connections that opened with the h2 preface: Pingora's h2 server (h2c on),
/// each stream answered by the same [`Proxy`].
struct H2c {
    proxy: Arc<Proxy>,
    options: HttpServerOptions,
}

#[async_trait]
impl HttpServerApp for H2c {
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        self.proxy.process_new_http(session, shutdown).await
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.options)
    }
}
