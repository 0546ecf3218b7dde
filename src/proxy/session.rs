//! The client's side of one request: Pingora's server session (HTTP/1.1 or h2), with the two
//! writes the proxy steps make.

use super::heads::ResponseHead;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use std::ops::{Deref, DerefMut};

/// One request's client session. Derefs to Pingora's [`ServerSession`] for everything else
/// (the request head and body, keep-alive, timeouts).
pub struct Session {
    inner: Box<ServerSession>,
}

impl Session {
    pub fn new(inner: Box<ServerSession>) -> Session {
        Session { inner }
    }

    /// Writes the response head (an h2 stream stays open for the body).
    pub async fn write_response_header(&mut self, head: ResponseHead) -> pingora::Result<()> {
        let head = Box::new(ResponseHeader::from(head));
        self.inner.write_response_header(head).await
    }

    /// Writes a body chunk, if any, and ends the response when `end` (`None, false` writes
    /// nothing: an empty chunk would end a chunked HTTP/1.1 body).
    pub async fn write_response_body(
        &mut self,
        chunk: Option<Bytes>,
        end: bool,
    ) -> pingora::Result<()> {
        match chunk {
            None if !end => Ok(()),
            chunk => {
                self.inner
                    .write_response_body(chunk.unwrap_or_default(), end)
                    .await
            }
        }
    }

    pub fn into_inner(self) -> Box<ServerSession> {
        self.inner
    }
}

impl Deref for Session {
    type Target = ServerSession;

    fn deref(&self) -> &ServerSession {
        &self.inner
    }
}

impl DerefMut for Session {
    fn deref_mut(&mut self) -> &mut ServerSession {
        &mut self.inner
    }
}
