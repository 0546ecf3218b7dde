//! Normalises the client's request path once, before routing, so that what is routed is what
//! is forwarded and a forwarded path can never climb out of the upstream's base path.
//!
//! Rules (RFC 3986 §6.2.2 syntax-based normalisation, made strict where upstreams disagree):
//! - percent-encoded unreserved characters are decoded (`%2e` → `.`, `%41` → `A`), every other
//!   escape is kept, with upper-case hex, so the upstream sees the same bytes we routed on;
//! - empty segments are dropped (`//` → `/`), `.` segments are dropped, `..` removes the
//!   segment before it;
//! - rejected outright, because servers decode them differently and a proxy that guesses wrong
//!   lets a request reach a path it was not routed to: `..` above the root, encoded `/` or `\`
//!   (`%2f`, `%5c`), a raw `\`, escaped control characters (`%00`, `%0d%0a`, …), malformed
//!   escapes (`%zz`, a trailing `%`), dot segments with parameters (`..;`), and anything that
//!   does not start with `/` (`*`, an empty target).

use std::fmt;

/// Why a request path was refused. The message never echoes the path: it may be long, and
/// errors are not the place to reflect client bytes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotAbsolute,
    BadEscape,
    EncodedSeparator,
    Backslash,
    ControlCharacter,
    AboveRoot,
    DotSegmentParameters,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotAbsolute => "request path must start with \"/\"",
            PathError::BadEscape => "request path has a malformed percent-escape",
            PathError::EncodedSeparator => "request path has an encoded \"/\" or \"\\\"",
            PathError::Backslash => "request path has a \"\\\"",
            PathError::ControlCharacter => "request path has an escaped control character",
            PathError::AboveRoot => "request path climbs above the root with \"..\"",
            PathError::DotSegmentParameters => "request path has a dot segment with parameters",
        })
    }
}

impl std::error::Error for PathError {}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// One segment with unreserved escapes decoded and the rest re-escaped in upper case.
fn normalise_segment(raw: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        match b {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    raw.get(i + 1).copied().and_then(hex),
                    raw.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let decoded = (hi << 4) | lo;
                match decoded {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
                    d if unreserved(d) => out.push(d),
                    d => out.extend_from_slice(format!("%{d:02X}").as_bytes()),
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            // The request line parser lets no raw control bytes through; refuse them anyway so
            // this function is safe on its own.
            0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Whether `raw` is its own normal form, as most paths are: absolute, with no byte the rules
/// decode or refuse (`%`, `\\`, control bytes) or that could make a dot segment's parameters
/// (`;`), no empty segment but a trailing one, and no `.` or `..` segment. Then every segment
/// is kept as it is, and so is a trailing `/`.
fn already_normal(raw: &[u8]) -> bool {
    if raw.first() != Some(&b'/') {
        return false;
    }
    // One pass (a `memmem` searcher for `//` alone cost more than the rest of this check),
    // each byte looked up once.
    const PLAIN: u8 = 0;
    const SLASH: u8 = 1;
    const REFUSED: u8 = 2;
    static CLASS: [u8; 256] = {
        let mut class = [PLAIN; 256];
        let mut b = 0;
        while b < 0x20 {
            class[b] = REFUSED;
            b += 1;
        }
        class[0x7f] = REFUSED;
        class[b'%' as usize] = REFUSED;
        class[b'\\' as usize] = REFUSED;
        class[b';' as usize] = REFUSED;
        class[b'/' as usize] = SLASH;
        class
    };
    let mut segment = 1;
    for (i, &b) in raw.iter().enumerate().skip(1) {
        match CLASS[usize::from(b)] {
            PLAIN => {}
            SLASH if !matches!(&raw[segment..i], b"" | b"." | b"..") => segment = i + 1,
            _ => return false,
        }
    }
    !matches!(&raw[segment..], b"." | b"..")
}

/// The normalised form of `raw` (a request path without its query), always starting with `/`
/// and free of empty, `.` and `..` segments.
pub fn normalise(raw: &str) -> Result<String, PathError> {
    if already_normal(raw.as_bytes()) {
        return Ok(raw.to_string());
    }
    let Some(rest) = raw.strip_prefix('/') else {
        return Err(PathError::NotAbsolute);
    };
    let mut segments: Vec<Vec<u8>> = Vec::new();
    // A path that ends in `/`, `/.` or `/..` names a directory: keep its trailing slash.
    let mut trailing_slash = false;
    for raw_segment in rest.as_bytes().split(|b| *b == b'/') {
        let segment = normalise_segment(raw_segment)?;
        trailing_slash = false;
        // `..;x` is `..` to some servlet containers: never let it pass as a plain name.
        let before_params = segment.split(|b| *b == b';').next().unwrap_or_default();
        if before_params != segment.as_slice() && matches!(before_params, b"." | b"..") {
            return Err(PathError::DotSegmentParameters);
        }
        match segment.as_slice() {
            b"" | b"." => trailing_slash = true,
            b".." => {
                segments.pop().ok_or(PathError::AboveRoot)?;
                trailing_slash = true;
            }
            _ => segments.push(segment),
        }
    }
    let mut out = Vec::with_capacity(raw.len());
    for s in &segments {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if out.is_empty() || trailing_slash {
        out.push(b'/');
    }
    // Only ASCII was decoded, and every other byte was copied whole from a `str`.
    Ok(String::from_utf8(out).expect("normalisation keeps UTF-8 intact"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        normalise(raw).unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    /// The slow way, without the shortcut for paths already normal.
    fn slow(raw: &str) -> Result<String, PathError> {
        let mut forced = String::from("/.");
        forced.push_str(raw);
        // `/.` + an absolute path: a `.` segment first, which the shortcut never takes.
        if raw.starts_with('/') {
            normalise(&forced)
        } else {
            normalise(raw)
        }
    }

    #[test]
    fn the_shortcut_gives_what_the_rules_give() {
        for raw in [
            "/",
            "/a",
            "/a/",
            "/v1/chat/completions",
            "/a//b",
            "/a/./b",
            "/a/../b",
            "/a/..",
            "/a/.",
            "/.",
            "/..",
            "/a/.b",
            "/a/..b/",
            "/a;b",
            "/..;x",
            "/a%41",
            "/a%2f",
            "/a\\b",
            "/a\u{1}",
            "/é/ü",
            "//",
            "/a/b//",
            "a",
            "",
            "*",
            "/a b",
            "/~x-_.y",
            "/a/.",
            "/a/../",
            "/./a",
            "/a/b/..",
            "/a./b.",
            "/.../b",
            "/a//",
            "///",
            "/a/%",
            "/a\u{7f}b",
        ] {
            assert_eq!(normalise(raw), slow(raw), "{raw:?}");
            if already_normal(raw.as_bytes()) {
                assert_eq!(normalise(raw).as_deref(), Ok(raw), "{raw:?}");
            }
        }
        // Every ASCII byte and a few others, alone or after a dot, in each place of a segment.
        for c in (0u8..0x80).map(char::from).chain(['é', '\u{a0}', '\u{ff}']) {
            for raw in [
                format!("/{c}"),
                format!("/a{c}b/c"),
                format!("/a/{c}"),
                format!("/a/.{c}/b"),
                format!("/{c}{c}/"),
            ] {
                assert_eq!(normalise(&raw), slow(&raw), "{raw:?}");
            }
        }
    }

    #[test]
    fn resolves_dot_segments_and_double_slashes() {
        assert_eq!(ok("/openai/v1/chat"), "/openai/v1/chat");
        assert_eq!(ok("/openai/../admin"), "/admin");
        assert_eq!(ok("/openai/v1/../chat"), "/openai/chat");
        assert_eq!(ok("/openai/./v1//chat"), "/openai/v1/chat");
        assert_eq!(ok("//openai///v1"), "/openai/v1");
        assert_eq!(ok("/openai/v1/"), "/openai/v1/");
        assert_eq!(ok("/openai/v1/.."), "/openai/");
        assert_eq!(ok("/"), "/");
        assert_eq!(ok("/openai/.."), "/");
        assert_eq!(ok("/a/...b/..."), "/a/...b/...");
    }

    #[test]
    fn decodes_unreserved_escapes_and_keeps_the_rest() {
        assert_eq!(ok("/openai/%2e%2e/admin"), "/admin");
        assert_eq!(ok("/openai/%2E%2e/admin"), "/admin");
        assert_eq!(ok("/openai/.%2e/x"), "/x");
        assert_eq!(ok("/v1/%41%7e"), "/v1/A~");
        assert_eq!(ok("/v1/a%20b%3f"), "/v1/a%20b%3F");
        assert_eq!(
            ok("/models/gemini-pro:generate"),
            "/models/gemini-pro:generate"
        );
    }

    #[test]
    fn rejects_tricks_servers_disagree_on() {
        for (raw, want) in [
            ("openai/v1", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
            ("/openai/..%2fadmin", PathError::EncodedSeparator),
            ("/openai%2F..%2Fadmin", PathError::EncodedSeparator),
            ("/openai/..%5cadmin", PathError::EncodedSeparator),
            ("/openai\\..\\admin", PathError::Backslash),
            ("/openai/%00", PathError::ControlCharacter),
            ("/openai/%0d%0aX-Injected:1", PathError::ControlCharacter),
            ("/openai/%zz", PathError::BadEscape),
            ("/openai/%2", PathError::BadEscape),
            ("/..", PathError::AboveRoot),
            ("/openai/../../etc", PathError::AboveRoot),
            ("/openai/%2e%2e/%2e%2e/etc", PathError::AboveRoot),
            ("/openai/..;/admin", PathError::DotSegmentParameters),
            ("/openai/.;x/admin", PathError::DotSegmentParameters),
        ] {
            assert_eq!(normalise(raw), Err(want), "{raw}");
        }
    }

    #[test]
    fn is_idempotent() {
        for raw in ["/a/./b/../c//d/", "/x/%2e%2E/y/%7E%5b", "/%C3%A9/é"] {
            let once = ok(raw);
            assert_eq!(ok(&once), once, "{raw}");
        }
    }
}
