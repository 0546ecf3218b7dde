//! The mock's WebSocket endpoint, a stand-in for OpenAI's Realtime API (`GET …/realtime` with
//! `Upgrade: websocket`): RFC 6455 handshake, then `session.created` at once (in the same
//! write as the `101`, so a proxy must hand on bytes that arrive with the head), and one
//! answer per client text event: `session.update` → `session.updated`, anything else →
//! `mock.echo` carrying the event. Pings get pongs; a close is answered and ends the connection.

use std::io;

use bytes::{Buf, BytesMut};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::RecordedRequest;

const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Largest client frame the mock accepts.
const MAX_FRAME: u64 = 1 << 20;

const TEXT: u8 = 0x1;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// True for a request asking to switch to WebSocket.
pub fn is_upgrade(req: &RecordedRequest) -> bool {
    req.header("upgrade")
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Completes the handshake and serves the session until the client closes. `buf` holds any
/// bytes read past the request head.
pub async fn serve(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    req: &RecordedRequest,
) -> io::Result<()> {
    let Some(key) = req.header("sec-websocket-key") else {
        let body = r#"{"error":{"message":"missing Sec-WebSocket-Key"}}"#;
        let head = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        return stream.write_all(head.as_bytes()).await;
    };
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
         sec-websocket-accept: {}\r\nx-mock-realtime: 1\r\n\r\n",
        accept(key)
    )
    .into_bytes();
    let created = json!({
        "type": "session.created",
        "event_id": "event_mock_1",
        "session": {"type": "realtime", "id": "sess_mock", "object": "realtime.session", "model": "gpt-realtime"},
    });
    out.extend_from_slice(&frame(TEXT, created.to_string().as_bytes()));
    stream.write_all(&out).await?;
    stream.flush().await?;

    let mut answered = 1;
    loop {
        let (opcode, payload) = read_frame(stream, buf).await?;
        match opcode {
            TEXT => {
                answered += 1;
                let event: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
                let reply = match event["type"].as_str() {
                    Some("session.update") => json!({
                        "type": "session.updated",
                        "event_id": format!("event_mock_{answered}"),
                        "session": event["session"],
                    }),
                    _ => json!({
                        "type": "mock.echo",
                        "event_id": format!("event_mock_{answered}"),
                        "event": event,
                    }),
                };
                stream
                    .write_all(&frame(TEXT, reply.to_string().as_bytes()))
                    .await?;
            }
            PING => stream.write_all(&frame(PONG, &payload)).await?,
            CLOSE => {
                stream.write_all(&frame(CLOSE, &payload)).await?;
                stream.flush().await?;
                return stream.shutdown().await;
            }
            _ => {}
        }
        stream.flush().await?;
    }
}

/// `Sec-WebSocket-Accept` for a client's key (RFC 6455 §4.2.2).
fn accept(key: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.trim().as_bytes());
    sha.update(ACCEPT_GUID.as_bytes());
    base64(&sha.digest().bytes())
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for group in bytes.chunks(3) {
        let n = group
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One unmasked (server) frame, FIN set.
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

async fn fill(stream: &mut TcpStream, buf: &mut BytesMut, len: usize) -> io::Result<()> {
    while buf.len() < len {
        if stream.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

/// Reads one client frame (masked, as RFC 6455 requires of clients): opcode and payload.
async fn read_frame(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<(u8, Vec<u8>)> {
    fill(stream, buf, 2).await?;
    let (first, second) = (buf[0], buf[1]);
    let mut header = 2;
    let mut len = u64::from(second & 0x7F);
    if len == 126 {
        fill(stream, buf, 4).await?;
        len = u64::from(u16::from_be_bytes([buf[2], buf[3]]));
        header = 4;
    } else if len == 127 {
        fill(stream, buf, 10).await?;
        len = u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes"));
        header = 10;
    }
    if second & 0x80 == 0 || len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unmasked or oversized client frame",
        ));
    }
    fill(stream, buf, header + 4 + len as usize).await?;
    buf.advance(header);
    let mask = [buf[0], buf[1], buf[2], buf[3]];
    buf.advance(4);
    let payload: Vec<u8> = buf
        .split_to(len as usize)
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    Ok((first & 0x0F, payload))
}

#[cfg(test)]
mod tests {
    #[test]
    fn accept_matches_rfc_6455_example() {
        assert_eq!(
            super::accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
