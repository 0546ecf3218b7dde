//! `multipart/form-data` bodies (RFC 7578, framed per RFC 2046 §5.1.1) read into their parts
//! for the cache key: an SDK picks a new random boundary for every upload, so the key hashes
//! the parts — their headers and a blake3 of their bytes, in order — and never the boundary,
//! the preamble or the epilogue.
//!
//! A buffered body is parsed by hand: it is all in memory already, and the framing is small
//! (find each delimiter, split headers from content). A body that is not well formed gives
//! `None`, and the key falls back to its raw bytes.

use memchr::memmem;

/// One part of a form.
#[derive(Debug, PartialEq, Eq)]
pub struct Part<'a> {
    /// `(lowercase name, canonical value)` of each part header, sorted: `content-disposition`
    /// with its parameters sorted and unquoted, every other header's value trimmed.
    pub headers: Vec<(String, String)>,
    /// The form field's name (the `name` parameter of its `Content-Disposition`).
    pub name: Option<String>,
    pub content: &'a [u8],
}

/// Longest boundary RFC 2046 allows (bytes).
const MAX_BOUNDARY: usize = 70;

/// The boundary of a `multipart/form-data` content type; `None` for any other type or a
/// missing or invalid boundary.
pub fn boundary(content_type: &str) -> Option<&str> {
    let mut params = content_type.split(';');
    let media = params.next()?.trim();
    if !media.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    let value = params.find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim())
    })?;
    let value = match value.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"')?,
        None => value,
    };
    let valid = !value.is_empty()
        && value.len() <= MAX_BOUNDARY
        && value.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !value.ends_with(' ');
    valid.then_some(value)
}

/// The parts of `body`, framed by `boundary`, in order; `None` when the body is not a
/// complete, well-formed multipart body (no delimiter, a part without its blank line, no close
/// delimiter, a header line without a colon).
pub fn parts<'a>(body: &'a [u8], boundary: &str) -> Option<Vec<Part<'a>>> {
    let dash_boundary = [b"--", boundary.as_bytes()].concat();
    let delimiter = [b"\r\n", dash_boundary.as_slice()].concat();
    let finder = memmem::Finder::new(&delimiter);
    // The first delimiter opens the body or follows the preamble's CRLF.
    let mut at = if body.starts_with(&dash_boundary) {
        dash_boundary.len()
    } else {
        finder.find(body)? + delimiter.len()
    };
    let mut parts = Vec::new();
    loop {
        let rest = &body[at..];
        if rest.starts_with(b"--") {
            // The close delimiter; what follows is the epilogue, ignored.
            return Some(parts);
        }
        // Transport padding, then the CRLF that ends the delimiter line.
        let padding = rest
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t'))
            .count();
        let start = at + padding + rest[padding..].strip_prefix(b"\r\n").map(|_| 2)?;
        let end = start + finder.find(&body[start..])?;
        parts.push(part(&body[start..end])?);
        at = end + delimiter.len();
    }
}

/// One part: header lines, a blank line, the content.
fn part(bytes: &[u8]) -> Option<Part<'_>> {
    let (head, content) = match bytes.strip_prefix(b"\r\n") {
        Some(content) => (&b""[..], content),
        None => {
            let blank = memmem::find(bytes, b"\r\n\r\n")?;
            (&bytes[..blank], &bytes[blank + 4..])
        }
    };
    let head = std::str::from_utf8(head).ok()?;
    let mut lines: Vec<String> = Vec::new();
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        match (line.starts_with([' ', '\t']), lines.last_mut()) {
            // An obsolete folded line continues the one before.
            (true, Some(last)) => {
                last.push(' ');
                last.push_str(line.trim());
            }
            _ => lines.push(line.to_owned()),
        }
    }
    let mut name = None;
    let mut headers = Vec::with_capacity(lines.len());
    for line in &lines {
        let (field, value) = line.split_once(':')?;
        let field = field.trim().to_ascii_lowercase();
        let value = if field == "content-disposition" {
            let (canonical, field_name) = disposition(value);
            name = field_name;
            canonical
        } else {
            value.trim().to_owned()
        };
        headers.push((field, value));
    }
    headers.sort();
    Some(Part {
        headers,
        name,
        content,
    })
}

/// A `Content-Disposition` value in canonical form — the type in lower case, then its
/// parameters sorted by name (lower case), values unquoted — and its `name` parameter.
fn disposition(value: &str) -> (String, Option<String>) {
    let (kind, mut rest) = split_param(value);
    let mut params = Vec::new();
    while !rest.is_empty() {
        let (param, next) = split_param(rest);
        rest = next;
        if let Some((k, v)) = param.split_once('=') {
            params.push((k.trim().to_ascii_lowercase(), unquote(v.trim())));
        } else if !param.trim().is_empty() {
            params.push((param.trim().to_ascii_lowercase(), String::new()));
        }
    }
    params.sort();
    let name = params
        .iter()
        .find(|(k, _)| k == "name")
        .map(|(_, v)| v.clone());
    let mut canonical = kind.trim().to_ascii_lowercase();
    for (k, v) in &params {
        canonical.push_str("; ");
        canonical.push_str(k);
        canonical.push_str("=\"");
        // Escaped again so the canonical text reads back unambiguously.
        canonical.push_str(&v.replace('\\', "\\\\").replace('"', "\\\""));
        canonical.push('"');
    }
    (canonical, name)
}

/// Splits at the first `;` outside a quoted string: (before, after).
fn split_param(s: &str) -> (&str, &str) {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => return (&s[..i], &s[i + 1..]),
            _ => {}
        }
    }
    (s, "")
}

/// A parameter value without its quotes (and `\x` escapes undone in a quoted one).
fn unquote(v: &str) -> String {
    let Some(inner) = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return v.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A form as httpx (the openai SDK) writes it.
    fn form(boundary: &str, file: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n\
                 --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"hello.wav\"\r\n\
                 Content-Type: audio/wav\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(file);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        body
    }

    #[test]
    fn boundaries() {
        assert_eq!(
            boundary("multipart/form-data; boundary=abc123"),
            Some("abc123")
        );
        assert_eq!(
            boundary("Multipart/Form-Data ; charset=utf-8; BOUNDARY=\"a b:c\""),
            Some("a b:c")
        );
        assert_eq!(boundary("multipart/mixed; boundary=abc"), None);
        assert_eq!(boundary("multipart/form-data"), None);
        assert_eq!(boundary("multipart/form-data; boundary="), None);
        assert_eq!(
            boundary("multipart/form-data; boundary=\"unterminated"),
            None
        );
        assert_eq!(
            boundary(&format!("multipart/form-data; boundary={}", "x".repeat(71))),
            None
        );
        assert_eq!(boundary("application/json"), None);
    }

    #[test]
    fn parts_are_read_in_order_whatever_the_boundary() {
        let file = b"RIFF\x00\x01binary\r\n--not-a-boundary\r\n";
        let a = form("a1b2c3", file);
        let b = form("0f9e8d7c6b5a", file);
        let (pa, pb) = (
            parts(&a, "a1b2c3").unwrap(),
            parts(&b, "0f9e8d7c6b5a").unwrap(),
        );
        assert_eq!(pa, pb);
        assert_eq!(pa.len(), 2);
        assert_eq!(pa[0].name.as_deref(), Some("model"));
        assert_eq!(pa[0].content, b"whisper-1");
        assert_eq!(pa[1].content, file);
        assert_eq!(
            pa[1].headers,
            vec![
                (
                    "content-disposition".to_owned(),
                    "form-data; filename=\"hello.wav\"; name=\"file\"".to_owned()
                ),
                ("content-type".to_owned(), "audio/wav".to_owned()),
            ]
        );
    }

    #[test]
    fn preamble_epilogue_padding_and_spelling_do_not_matter() {
        let plain = form("xyz", b"data");
        let dressed = b"this is a preamble\r\n--xyz  \r\ncontent-disposition: FORM-DATA; name=model\r\n\r\nwhisper-1\r\n\
--xyz\r\nContent-Type: audio/wav\r\nContent-Disposition: form-data;\r\n filename=\"hello.wav\"; NAME=\"file\"\r\n\r\ndata\r\n--xyz--epilogue";
        assert_eq!(parts(&plain, "xyz"), parts(dressed, "xyz"));
    }

    #[test]
    fn malformed_bodies_are_not_forms() {
        let whole = form("xyz", b"data");
        // truncated before the close delimiter
        assert_eq!(parts(&whole[..whole.len() - 10], "xyz"), None);
        // another boundary
        assert_eq!(parts(&whole, "abc"), None);
        // a part without the blank line after its headers
        assert_eq!(
            parts(b"--xyz\r\nContent-Disposition: form-data\r\n--xyz--", "xyz"),
            None
        );
        // a header line without a colon
        assert_eq!(parts(b"--xyz\r\nnonsense\r\n\r\nx\r\n--xyz--", "xyz"), None);
        // no CRLF after the delimiter
        assert_eq!(parts(b"--xyzjunk\r\n\r\nx\r\n--xyz--", "xyz"), None);
        // an empty form is still a form
        assert_eq!(parts(b"--xyz--\r\n", "xyz"), Some(vec![]));
        // a part without headers
        assert_eq!(
            parts(b"--xyz\r\n\r\nx\r\n--xyz--", "xyz").unwrap()[0].content,
            b"x"
        );
    }

    #[test]
    fn quoted_parameters() {
        let (canonical, name) = disposition(r#" form-data; filename="a; \"b\".wav"; name="f""#);
        assert_eq!(name.as_deref(), Some("f"));
        assert_eq!(canonical, r#"form-data; filename="a; \"b\".wav"; name="f""#);
    }
}
