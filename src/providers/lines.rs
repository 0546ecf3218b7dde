//! Line framing shared by the stream readers: lines split across chunk boundaries (bounded),
//! SSE field lines.

/// Lines longer than this are not inspected (no end marker or usage line is that long); bounds
/// memory.
const MAX_LINE: usize = 1 << 20;

/// Splits a body arriving in chunks into lines, across chunk boundaries, holding at most
/// [`MAX_LINE`] bytes: longer lines are skipped whole.
#[derive(Debug, Default)]
pub(super) struct LineSplitter {
    line: Vec<u8>,
    overlong: bool,
}

impl LineSplitter {
    /// Calls `on_line` with each complete line of `chunk` (without `\n` or `\r`).
    pub(super) fn feed(&mut self, chunk: &[u8], mut on_line: impl FnMut(&[u8])) {
        for piece in chunk.split_inclusive(|b| *b == b'\n') {
            let (content, ends_line) = match piece.strip_suffix(b"\n") {
                Some(c) => (c, true),
                None => (piece, false),
            };
            if !self.overlong {
                if self.line.len() + content.len() > MAX_LINE {
                    self.overlong = true;
                    self.line = Vec::new();
                } else {
                    self.line.extend_from_slice(content);
                }
            }
            if ends_line {
                if !self.overlong {
                    on_line(self.line.strip_suffix(b"\r").unwrap_or(&self.line));
                    self.line.clear();
                }
                self.overlong = false;
            }
        }
    }

    /// The unfinished last line, if any (an NDJSON stream may end without a newline).
    pub(super) fn pending(&self) -> Option<&[u8]> {
        (!self.overlong && !self.line.is_empty())
            .then(|| self.line.strip_suffix(b"\r").unwrap_or(&self.line))
    }
}

/// The value of an SSE field line `name: value` (one optional space after the colon).
pub(super) fn sse_field<'l>(line: &'l [u8], name: &[u8]) -> Option<&'l [u8]> {
    let rest = line.strip_prefix(name)?.strip_prefix(b":")?;
    Some(rest.strip_prefix(b" ").unwrap_or(rest))
}
