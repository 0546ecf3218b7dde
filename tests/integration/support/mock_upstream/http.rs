//! HTTP/1.1 framing by hand: reading one request (head, content-length or chunked body) off a
//! socket, and the few wire pieces a response needs (reason phrases, chunk framing).

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::RecordedRequest;

/// Upper bound for a request head or a chunk-size line; anything larger drops the connection.
const MAX_HEAD: usize = 1 << 20;

/// Reads one request; `Ok(None)` on a clean EOF between requests. The flag is true when the
/// client asked for the connection to be closed afterwards.
pub(super) async fn read_request(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
) -> io::Result<Option<(RecordedRequest, bool)>> {
    let head_len = loop {
        while buf.starts_with(b"\r\n") {
            buf.advance(2);
        }
        if let Some(pos) = find(buf, b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > MAX_HEAD {
            return Err(invalid("request head too large"));
        }
        if stream.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
    };
    let head = buf.split_to(head_len + 4);
    let head = std::str::from_utf8(&head[..head_len]).map_err(|_| invalid("non-UTF-8 head"))?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split_whitespace();
    let (Some(method), Some(path), Some(version)) = (
        request_line.next(),
        request_line.next(),
        request_line.next(),
    ) else {
        return Err(invalid("bad request line"));
    };
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut req = RecordedRequest {
        method: method.to_owned(),
        path: path.to_owned(),
        headers,
        body: Bytes::new(),
    };

    let has_token = |name: &str, token: &str| {
        req.headers
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let client_close = has_token("connection", "close")
        || (version == "HTTP/1.0" && !has_token("connection", "keep-alive"));
    let chunked = has_token("transfer-encoding", "chunked");
    if has_token("expect", "100-continue") {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }

    req.body = if chunked {
        read_chunked_body(stream, buf).await?
    } else if let Some(len) = req.header("content-length") {
        let len: usize = len.parse().map_err(|_| invalid("bad content-length"))?;
        fill(stream, buf, len).await?;
        buf.split_to(len).freeze()
    } else {
        Bytes::new()
    };
    Ok(Some((req, client_close)))
}

async fn read_chunked_body(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<Bytes> {
    let mut body = BytesMut::new();
    loop {
        let line = read_line(stream, buf).await?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| invalid("bad chunk size"))?;
        if size == 0 {
            // Skip trailers up to the blank line that ends the message.
            while !read_line(stream, buf).await?.is_empty() {}
            return Ok(body.freeze());
        }
        fill(stream, buf, size + 2).await?;
        body.extend_from_slice(&buf[..size]);
        buf.advance(size + 2);
    }
}

/// Reads one CRLF-terminated line (without the CRLF).
async fn read_line(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<String> {
    loop {
        if let Some(pos) = find(buf, b"\r\n") {
            let line = buf.split_to(pos + 2);
            return Ok(String::from_utf8_lossy(&line[..pos]).into_owned());
        }
        if buf.len() > MAX_HEAD {
            return Err(invalid("line too long"));
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Reads until `buf` holds at least `len` bytes.
async fn fill(stream: &mut TcpStream, buf: &mut BytesMut, len: usize) -> io::Result<()> {
    buf.reserve(len.saturating_sub(buf.len()));
    while buf.len() < len {
        if stream.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

/// `data` framed as one chunk of a chunked body.
pub(super) fn chunk(data: &[u8]) -> Vec<u8> {
    let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
    chunk.extend_from_slice(data);
    chunk.extend_from_slice(b"\r\n");
    chunk
}

/// The zero-length chunk that ends a chunked body (no trailers).
pub(super) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Reason phrase for the status line.
pub(super) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        529 => "Overloaded",
        _ => "Mock Status",
    }
}
