//! Refuses HTTP/1 requests whose body framing is ambiguous (the stuff of request smuggling),
//! judged on the raw request head as the client sent it.
//!
//! Pingora 0.9.1 already answers 400 and closes for: differing or unparsable `Content-Length`
//! values, a final transfer coding other than `chunked`, `Transfer-Encoding` on HTTP/1.0, and
//! malformed chunk sizes (while the body is read). It *accepts*, following RFC 9112 §6.3,
//! `Content-Length` together with `Transfer-Encoding` (it drops the `Content-Length` from the
//! parsed head, so only the raw bytes still show it), and repeated identical `Content-Length`s.
//! Both are what one hop reads one way and the next another, and no legitimate SDK sends them,
//! so promptgate refuses them too, and accepts no transfer coding but a single `chunked`.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    ContentLengthAndTransferEncoding,
    RepeatedContentLength,
    UnsupportedTransferEncoding,
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FramingError::ContentLengthAndTransferEncoding => {
                "request has both Content-Length and Transfer-Encoding"
            }
            FramingError::RepeatedContentLength => "request has more than one Content-Length",
            FramingError::UnsupportedTransferEncoding => {
                "request Transfer-Encoding must be exactly \"chunked\""
            }
        })
    }
}

impl std::error::Error for FramingError {}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &bytes[start..end.max(start)]
}

/// Checks the framing headers of a raw HTTP/1 request head (request line, header lines, and
/// optionally the blank line; bare `\n` line ends are accepted as the parser accepts them).
pub fn check(raw_head: &[u8]) -> Result<(), FramingError> {
    let mut content_lengths = 0usize;
    let mut transfer_encodings: Vec<&[u8]> = Vec::new();
    // The first line is the request line; header lines follow until the blank line.
    // (memchr: a byte-by-byte split costs more than the rest of the check.)
    for line in lines(raw_head).skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let (name, value) = (trim(&line[..colon]), trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            // `Content-Length: 5, 5` is a repetition too.
            content_lengths += 1 + value.iter().filter(|b| **b == b',').count();
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encodings.push(value);
        }
    }
    if content_lengths > 0 && !transfer_encodings.is_empty() {
        return Err(FramingError::ContentLengthAndTransferEncoding);
    }
    if content_lengths > 1 {
        return Err(FramingError::RepeatedContentLength);
    }
    match transfer_encodings.as_slice() {
        [] => Ok(()),
        [only] if only.eq_ignore_ascii_case(b"chunked") => Ok(()),
        _ => Err(FramingError::UnsupportedTransferEncoding),
    }
}

/// [`check`]'s verdict from the parsed head, when that shows every framing header of the raw
/// one: without `Transfer-Encoding`, Pingora keeps each `Content-Length` line as a value (and
/// refuses a head it cannot parse), so the raw bytes have nothing more to say. `None` with a
/// `Transfer-Encoding`: Pingora drops `Content-Length` then, and only [`check`] of the raw
/// head sees it. (Reading the raw head again was half of what vetting a request cost.)
pub fn check_parsed(headers: &http::HeaderMap) -> Option<Result<(), FramingError>> {
    if headers.contains_key(http::header::TRANSFER_ENCODING) {
        return None;
    }
    let lengths: usize = headers
        .get_all(http::header::CONTENT_LENGTH)
        .iter()
        .map(|v| 1 + v.as_bytes().iter().filter(|b| **b == b',').count())
        .sum();
    Some(if lengths > 1 {
        Err(FramingError::RepeatedContentLength)
    } else {
        Ok(())
    })
}

/// The `\n`-separated pieces of `raw`, as `raw.split(|b| *b == b'\n')` gives them.
fn lines(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    let mut ends = memchr::memchr_iter(b'\n', raw);
    std::iter::from_fn(move || {
        if start > raw.len() {
            return None;
        }
        let end = ends.next().unwrap_or(raw.len());
        let line = &raw[start..end];
        start = end + 1;
        Some(line)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_as_split_does() {
        for raw in [
            &b""[..],
            b"\n",
            b"a",
            b"a\n",
            b"\na",
            b"a\r\nb\r\n\r\n",
            b"a\n\nb",
        ] {
            let ours: Vec<&[u8]> = lines(raw).collect();
            let std: Vec<&[u8]> = raw.split(|b| *b == b'\n').collect();
            assert_eq!(ours, std, "{raw:?}");
        }
    }

    fn head(lines: &[&str]) -> Vec<u8> {
        let mut h = b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\n".to_vec();
        for l in lines {
            h.extend_from_slice(l.as_bytes());
            h.extend_from_slice(b"\r\n");
        }
        h.extend_from_slice(b"\r\n");
        h
    }

    #[test]
    fn accepts_ordinary_framing() {
        assert_eq!(check(&head(&[])), Ok(()));
        assert_eq!(check(&head(&["Content-Length: 12"])), Ok(()));
        assert_eq!(check(&head(&["Transfer-Encoding: chunked"])), Ok(()));
        assert_eq!(check(&head(&["transfer-encoding:  Chunked "])), Ok(()));
        assert_eq!(check(b"GET / HTTP/1.1\nHost: x\n\n"), Ok(()));
    }

    #[test]
    fn refuses_ambiguous_framing() {
        use FramingError::*;
        for (lines, want) in [
            (
                &["Content-Length: 5", "Transfer-Encoding: chunked"][..],
                ContentLengthAndTransferEncoding,
            ),
            (
                &["Transfer-Encoding: chunked", "content-length: 0"],
                ContentLengthAndTransferEncoding,
            ),
            (
                &["Content-Length: 5", "Content-Length: 5"],
                RepeatedContentLength,
            ),
            (&["Content-Length: 5, 5"], RepeatedContentLength),
            (
                &["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"],
                UnsupportedTransferEncoding,
            ),
            (
                &["Transfer-Encoding: gzip, chunked"],
                UnsupportedTransferEncoding,
            ),
        ] {
            assert_eq!(check(&head(lines)), Err(want), "{lines:?}");
        }
    }

    /// The parsed head's verdict, where it gives one, is the raw head's (the map built as
    /// Pingora builds it: one value per header line, names case-insensitive).
    #[test]
    fn the_parsed_head_judges_as_the_raw_head_does() {
        let cases: &[&[&str]] = &[
            &[],
            &["Content-Length: 12"],
            &["Content-Length: 5", "Content-Length: 5"],
            &["Content-Length: 2", "content-length: 2"],
            &["Content-Length: 5, 5"],
            &["Content-Length: 5,"],
            &["Content-Length: 5", "Transfer-Encoding: chunked"],
            &["Transfer-Encoding: chunked"],
            &["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"],
        ];
        for lines in cases {
            let mut map = http::HeaderMap::new();
            for line in *lines {
                let (name, value) = line.split_once(':').unwrap();
                let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
                map.append(name, value.trim().parse().unwrap());
            }
            let raw = check(&head(lines));
            match check_parsed(&map) {
                Some(parsed) => assert_eq!(parsed, raw, "{lines:?}"),
                None => assert!(map.contains_key("transfer-encoding"), "{lines:?}"),
            }
        }
    }

    #[test]
    fn header_names_in_the_request_line_or_body_do_not_count() {
        let raw = b"POST /content-length:5 HTTP/1.1\r\nContent-Length: 3\r\n\r\nTransfer-Encoding: chunked";
        assert_eq!(check(raw), Ok(()));
    }
}
