//! `promptgate health`: one HTTP/1.1 `GET /healthz` against the admin listener, so container
//! health checks and scripts need neither a shell nor curl.
//!
//! A plain blocking `TcpStream` with timeouts is enough: the admin listener is on loopback (or
//! the container's own network namespace), the answer is a few bytes, and the command exits.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Connect, write and read each get this long; a health check that hangs is a failed one.
const TIMEOUT: Duration = Duration::from_secs(3);
/// More than any admin answer to `/healthz`; a larger one is not ours.
const MAX_RESPONSE: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("{url:?} is not a health URL: {reason} (expected http://HOST:PORT[/path])")]
    BadUrl { url: String, reason: &'static str },
    #[error("cannot resolve {host}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{url} is unreachable")]
    Unreachable {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{url} gave no HTTP answer")]
    NoAnswer { url: String },
    #[error("{url} answered {status_line:?}, not 200")]
    Unhealthy { url: String, status_line: String },
}

/// Where to ask: host (for `Host:` and messages), resolved address, request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub addr: SocketAddr,
    pub path: String,
}

impl Target {
    /// The `admin` address from the config. A wildcard bind (`0.0.0.0`, `::`) is reached on
    /// the loopback address of the same family.
    pub fn admin(addr: SocketAddr) -> Target {
        let ip = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let addr = SocketAddr::new(ip, addr.port());
        Target {
            host: addr.to_string(),
            addr,
            path: "/healthz".into(),
        }
    }

    /// `http://HOST:PORT[/path]`; the path defaults to `/healthz`.
    pub fn from_url(url: &str) -> Result<Target, HealthError> {
        let bad = |reason| HealthError::BadUrl {
            url: url.to_string(),
            reason,
        };
        let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("only http:// is supported"));
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        let port = authority.port_u16().ok_or_else(|| bad("no port"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let addr = (host, port)
            .to_socket_addrs()
            .map_err(|source| HealthError::Resolve {
                host: host.to_string(),
                source,
            })?
            .next()
            .ok_or_else(|| bad("the host has no address"))?;
        let path = match uri.path_and_query().map(|p| p.as_str()) {
            None | Some("") | Some("/") => "/healthz".to_string(),
            Some(p) => p.to_string(),
        };
        Ok(Target {
            host: authority.as_str().to_string(),
            addr,
            path,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}{}", self.host, self.path)
    }
}

/// Asks `target` once; `Ok` with the status line when it answered 200.
pub fn check(target: &Target) -> Result<String, HealthError> {
    let url = target.url();
    let unreachable = |source| HealthError::Unreachable {
        url: url.clone(),
        source,
    };
    let mut stream = TcpStream::connect_timeout(&target.addr, TIMEOUT).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(unreachable)?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: promptgate-health\r\nConnection: close\r\n\r\n",
        target.path, target.host
    );
    stream.write_all(request.as_bytes()).map_err(unreachable)?;
    let mut answer = Vec::new();
    // `Connection: close` makes the server end the stream; a timeout after the status line
    // arrived still leaves enough to judge.
    let read = stream.take(MAX_RESPONSE).read_to_end(&mut answer);
    let status_line = status_line(&answer);
    match (status_line, read) {
        (Some(line), _) if status_code(&line) == Some(200) => Ok(line),
        (Some(line), _) => Err(HealthError::Unhealthy {
            url,
            status_line: line,
        }),
        (None, Err(source)) => Err(HealthError::Unreachable { url, source }),
        (None, Ok(_)) => Err(HealthError::NoAnswer { url }),
    }
}

fn status_line(answer: &[u8]) -> Option<String> {
    let end = answer.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&answer[..end]).ok()?;
    line.starts_with("HTTP/").then(|| line.to_string())
}

fn status_code(status_line: &str) -> Option<u16> {
    status_line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_admin_binds_are_reached_on_loopback() {
        let t = Target::admin("0.0.0.0:9090".parse().unwrap());
        assert_eq!(t.url(), "http://127.0.0.1:9090/healthz");
        let t = Target::admin("[::]:9090".parse().unwrap());
        assert_eq!(t.addr, "[::1]:9090".parse().unwrap());
        let t = Target::admin("10.1.2.3:9".parse().unwrap());
        assert_eq!(t.addr, "10.1.2.3:9".parse().unwrap());
    }

    #[test]
    fn urls_default_to_healthz_and_must_be_plain_http() {
        let t = Target::from_url("http://127.0.0.1:9090").unwrap();
        assert_eq!((t.addr.port(), t.path.as_str()), (9090, "/healthz"));
        let t = Target::from_url("http://[::1]:9091/readyz").unwrap();
        assert_eq!(
            (t.addr, t.path.as_str()),
            ("[::1]:9091".parse().unwrap(), "/readyz")
        );
        for bad in [
            "https://127.0.0.1:1/",
            "127.0.0.1:9090",
            "http://127.0.0.1/",
            "::",
        ] {
            assert!(
                matches!(Target::from_url(bad), Err(HealthError::BadUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn only_a_200_status_line_is_healthy() {
        assert_eq!(
            status_line(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").as_deref(),
            Some("HTTP/1.1 200 OK")
        );
        assert_eq!(status_code("HTTP/1.1 503 Service Unavailable"), Some(503));
        assert_eq!(status_line(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_line(b""), None);
    }
}
