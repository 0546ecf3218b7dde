//! A stored response (status, kept headers, body) and its compact, versioned binary encoding.

use crate::clock::unix_now;
use crate::providers::{ResponseReader, Usage};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderName, HeaderValue};
use std::sync::OnceLock;
use std::time::Duration;

/// First bytes of every encoded entry: format name and version.
///
/// `PGE2` has the same layout as `PGE1`; the version says what was *allowed in*: only `PGE2`
/// entries were stored after their provider's verdict (a clean end, no error event, no refusal;
/// see `providers::verdict`). `PGE1` entries, written before, may hold an error inside a 200
/// stream or a partial answer, so they are read as misses and replaced by the next store.
const MAGIC: &[u8; 4] = b"PGE2";
/// Entries written before provider verdicts (see [`MAGIC`]): never served.
const OUTDATED: &[&[u8; 4]] = &[b"PGE1"];
/// First bytes of an encoded variants marker (see [`Entry::variants_marker`]): the same layout,
/// under another name, so a binary that predates markers reads one as unreadable (a miss)
/// rather than as an answer. (A marker holds no answer, so verdicts did not change it.)
const MAGIC_VARIANTS: &[u8; 4] = b"PGV1";

/// Where one recorded stream chunk ends in the body, and when it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkMark {
    /// Offset in the body just past this chunk.
    pub end: u64,
    /// Milliseconds after the response head when the chunk arrived.
    pub at_ms: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub status: u16,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    /// For a recorded stream, its chunks (empty for a plain response). A hit replays a stream
    /// as a stream, optionally at its original pace.
    pub chunks: Vec<ChunkMark>,
    /// Seconds since the Unix epoch when the response was stored.
    pub stored_at: u64,
    pub ttl: Duration,
    /// The tokens this answer used (what a hit saves), read from the body on the first hit
    /// and kept with the entry in memory; not part of the encoding.
    pub usage: OnceLock<Option<Usage>>,
    /// The response head a hit replays, built on the entry's first hit (by
    /// `proxy::respond::cached`) and kept with it in memory; not part of the encoding.
    pub head: ReplayHead,
}

/// An entry's pre-built response head ([`Entry::head`]): derived from the entry, so it never
/// makes two entries differ, and a copy of an entry starts without one.
#[derive(Default)]
pub struct ReplayHead(OnceLock<http::response::Parts>);

impl ReplayHead {
    /// The head, when built already.
    pub fn get(&self) -> Option<&http::response::Parts> {
        self.0.get()
    }

    /// Keeps `head` (the first one kept stays).
    pub fn keep(&self, head: http::response::Parts) {
        let _ = self.0.set(head);
    }
}

impl Clone for ReplayHead {
    fn clone(&self) -> ReplayHead {
        ReplayHead::default()
    }
}

impl PartialEq for ReplayHead {
    fn eq(&self, _: &ReplayHead) -> bool {
        true
    }
}

impl std::fmt::Debug for ReplayHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.get().is_some() {
            "ReplayHead(built)"
        } else {
            "ReplayHead(-)"
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Bytes that are not an entry of any known format (or cut short).
    #[error("stored cache entry is unreadable: {0}")]
    Unreadable(&'static str),
    /// An entry of an older format this version no longer serves (see [`MAGIC`]): a miss.
    #[error("stored cache entry is of an outdated format")]
    Outdated,
}

impl Entry {
    /// Seconds since it was stored (the `Age` of a hit).
    pub fn age(&self) -> u64 {
        unix_now().saturating_sub(self.stored_at)
    }

    /// Time left to live, or `None` when expired.
    pub fn remaining_ttl(&self) -> Option<Duration> {
        self.ttl
            .checked_sub(Duration::from_secs(self.age()))
            .filter(|d| !d.is_zero())
    }

    /// Bytes this entry holds, for size-bounded stores.
    pub fn weight(&self) -> usize {
        self.body.len()
            + self
                .headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len() + 16)
                .sum::<usize>()
            + 64
    }

    /// The provider-reported usage of this answer, if it has one.
    pub fn usage(&self) -> Option<&Usage> {
        self.usage
            .get_or_init(|| {
                let headers = self.headers.iter().map(|(n, v)| (n, v));
                ResponseReader::usage_of_body(headers, &self.body)
            })
            .as_ref()
    }

    pub fn is_stream(&self) -> bool {
        !self.chunks.is_empty()
    }

    /// The marker stored under an answer's primary key when the answer varies on request
    /// headers (`Vary`): it names them, and each variant is stored under its own key
    /// (`cache::vary`). Status 0 marks it; no answer has that status.
    pub fn variants_marker(names: &[HeaderName], ttl: Duration) -> Entry {
        let list = names
            .iter()
            .map(HeaderName::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        Entry {
            status: 0,
            headers: vec![(
                http::header::VARY,
                HeaderValue::from_str(&list).expect("header names are valid header text"),
            )],
            body: Bytes::new(),
            chunks: Vec::new(),
            stored_at: unix_now(),
            ttl,
            usage: OnceLock::new(),
            head: Default::default(),
        }
    }

    /// True for a variants marker rather than an answer.
    pub fn is_variants_marker(&self) -> bool {
        self.status == 0
    }

    /// `PGE2 | status u16 | stored_at u64 | ttl_secs u64 | n u16 | (len u16, name, len u32, value)*
    /// | len u64, body | m u32 | (end u64, at_ms u32)*`.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.weight());
        out.put_slice(if self.is_variants_marker() {
            MAGIC_VARIANTS
        } else {
            MAGIC
        });
        out.put_u16(self.status);
        out.put_u64(self.stored_at);
        out.put_u64(self.ttl.as_secs());
        out.put_u16(self.headers.len() as u16);
        for (name, value) in &self.headers {
            out.put_u16(name.as_str().len() as u16);
            out.put_slice(name.as_str().as_bytes());
            out.put_u32(value.len() as u32);
            out.put_slice(value.as_bytes());
        }
        out.put_u64(self.body.len() as u64);
        out.put_slice(&self.body);
        out.put_u32(self.chunks.len() as u32);
        for c in &self.chunks {
            out.put_u64(c.end);
            out.put_u32(c.at_ms);
        }
        out.freeze()
    }

    /// Decodes an encoded entry; the body is a slice of `data`, not a copy.
    pub fn decode(data: Bytes) -> Result<Entry, DecodeError> {
        let mut buf = data.clone();
        let need = |buf: &Bytes, n: usize| {
            if buf.remaining() < n {
                Err(DecodeError::Unreadable("truncated"))
            } else {
                Ok(())
            }
        };
        need(&buf, 4 + 2 + 8 + 8 + 2)?;
        let marker = match &buf[..4] {
            m if m == MAGIC => false,
            m if m == MAGIC_VARIANTS => true,
            m if OUTDATED.iter().any(|o| m == *o) => return Err(DecodeError::Outdated),
            _ => return Err(DecodeError::Unreadable("unknown format")),
        };
        buf.advance(4);
        let status = buf.get_u16();
        if marker != (status == 0) {
            return Err(DecodeError::Unreadable("status does not match the format"));
        }
        let stored_at = buf.get_u64();
        let ttl = Duration::from_secs(buf.get_u64());
        let count = buf.get_u16() as usize;
        let mut headers = Vec::with_capacity(count);
        for _ in 0..count {
            need(&buf, 2)?;
            let n = buf.get_u16() as usize;
            need(&buf, n + 4)?;
            let name = HeaderName::from_bytes(&buf[..n])
                .map_err(|_| DecodeError::Unreadable("bad header name"))?;
            buf.advance(n);
            let v = buf.get_u32() as usize;
            need(&buf, v)?;
            let value = HeaderValue::from_bytes(&buf[..v])
                .map_err(|_| DecodeError::Unreadable("bad header value"))?;
            buf.advance(v);
            headers.push((name, value));
        }
        need(&buf, 8)?;
        let len = buf.get_u64() as usize;
        need(&buf, len)?;
        let offset = data.len() - buf.remaining();
        buf.advance(len);
        need(&buf, 4)?;
        let marks = buf.get_u32() as usize;
        need(&buf, marks * 12)?;
        let mut chunks = Vec::with_capacity(marks);
        for _ in 0..marks {
            let end = buf.get_u64();
            if end > len as u64 {
                return Err(DecodeError::Unreadable("chunk past the body"));
            }
            chunks.push(ChunkMark {
                end,
                at_ms: buf.get_u32(),
            });
        }
        Ok(Entry {
            chunks,
            status,
            headers,
            body: data.slice(offset..offset + len),
            stored_at,
            ttl,
            usage: OnceLock::new(),
            head: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            status: 200,
            headers: vec![(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body: Bytes::from_static(br#"{"ok":true}"#),
            chunks: vec![],
            stored_at: 1_700_000_000,
            ttl: Duration::from_secs(3600),
            usage: OnceLock::new(),
            head: Default::default(),
        }
    }

    #[test]
    fn round_trips() {
        let e = entry();
        assert_eq!(Entry::decode(e.encode()).unwrap(), e);
    }

    #[test]
    fn round_trips_streams() {
        let mut e = entry();
        e.chunks = vec![
            ChunkMark { end: 4, at_ms: 0 },
            ChunkMark {
                end: 11,
                at_ms: 250,
            },
        ];
        assert_eq!(Entry::decode(e.encode()).unwrap(), e);
    }

    #[test]
    fn variants_markers_round_trip_under_their_own_format() {
        let names = [
            HeaderName::from_static("origin"),
            HeaderName::from_static("accept-language"),
        ];
        let m = Entry::variants_marker(&names, Duration::from_secs(60));
        assert!(m.is_variants_marker() && !entry().is_variants_marker());
        let enc = m.encode();
        assert_eq!(&enc[..4], MAGIC_VARIANTS);
        let back = Entry::decode(enc).unwrap();
        assert!(back.is_variants_marker());
        assert_eq!(back.headers[0].1, "origin, accept-language");
        // An answer's format never carries status 0, nor a marker's another status.
        let mut bad = entry().encode().to_vec();
        bad[4..6].copy_from_slice(&0u16.to_be_bytes());
        assert!(Entry::decode(Bytes::from(bad)).is_err());
    }

    #[test]
    fn rejects_garbage_and_truncation() {
        let enc = entry().encode();
        assert!(Entry::decode(Bytes::from_static(b"nope")).is_err());
        for cut in [3, 10, 25, enc.len() - 1] {
            assert!(Entry::decode(enc.slice(..cut)).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn entries_stored_before_verdicts_are_outdated_not_served() {
        let mut old = entry().encode().to_vec();
        old[..4].copy_from_slice(b"PGE1");
        assert!(matches!(
            Entry::decode(Bytes::from(old)),
            Err(DecodeError::Outdated)
        ));
    }

    #[test]
    fn usage_is_read_from_the_body_once() {
        let mut e = entry();
        e.body = Bytes::from_static(
            br#"{"model":"gpt-4o","usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
        );
        let u = e.usage().unwrap();
        assert_eq!(
            (u.input, u.output, u.model.as_deref()),
            (3, 4, Some("gpt-4o"))
        );
        assert!(e.usage.get().is_some(), "kept for the next hit");
        // not encoded: a decoded entry reads it again
        assert!(Entry::decode(e.encode()).unwrap().usage.get().is_none());
    }

    #[test]
    fn expiry() {
        let mut e = entry();
        e.stored_at = unix_now();
        assert!(e.remaining_ttl().is_some());
        e.stored_at = unix_now() - 3600;
        assert!(e.remaining_ttl().is_none());
    }
}
