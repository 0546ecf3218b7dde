//! A local TLS upstream: a real nginx terminating TLS in front of the mock upstream, with a
//! private CA and a server certificate (for `127.0.0.1` and `localhost`) made for the test by
//! `openssl`. It listens three times: one port offers h2 and HTTP/1.1 by ALPN, one HTTP/1.1
//! only, and one plain-text h2 with prior knowledge (h2c, no TLS). Its access log says, per
//! request, which port, protocol and connection carried it.

use super::gateway::{free_port, wait_for_port};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One line of the access log.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    pub port: u16,
    /// nginx's `$server_protocol`: `HTTP/2.0` or `HTTP/1.1`.
    pub protocol: String,
    /// nginx's `$connection`: the connection's serial number.
    pub connection: u64,
    pub status: u16,
}

/// nginx with TLS in front of a backend; killed when dropped.
pub struct TlsUpstream {
    child: Child,
    dir: tempfile::TempDir,
    /// Offers h2 and HTTP/1.1 (ALPN).
    pub h2_port: u16,
    /// Offers HTTP/1.1 only.
    pub h1_port: u16,
    /// Plain text, h2 with prior knowledge only.
    pub h2c_port: u16,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (is it installed? scripts/install-deps.sh test)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`ca.pem`) and a server certificate it signed (`server.pem`, `server.key`) in `dir`.
fn make_certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=promptgate test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         extendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
}

impl TlsUpstream {
    /// Starts nginx on two free ports, proxying every request to `backend` over HTTP/1.1
    /// (unbuffered, so streams pass through as they come).
    pub fn start(backend: SocketAddr) -> TlsUpstream {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        make_certificates(d);
        let (h2_port, h1_port, h2c_port) = (free_port(), free_port(), free_port());
        let p = d.display();
        let server = |listen: String| {
            format!(
                "server {{
    listen {listen};
    ssl_certificate {p}/server.pem;
    ssl_certificate_key {p}/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    access_log {p}/access.log upstream;
    # Answers at once, before reading the request body (an h2 stream is then stopped).
    location /early/ {{
      default_type application/json;
      return 400 '{{\"error\":{{\"message\":\"answered early\"}}}}';
    }}
    # The same, with a whole, successful chat completion.
    location /early-ok/ {{
      default_type application/json;
      return 200 '{{\"id\":\"chatcmpl-early\",\"object\":\"chat.completion\",\"model\":\"gpt-4o\",\"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":\"answered early\"}},\"finish_reason\":\"stop\"}}],\"usage\":{{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}}}';
    }}
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_buffering off;
      proxy_request_buffering off;
    }}
  }}
"
            )
        };
        let conf = format!(
            "worker_processes 1;
daemon off;
master_process off;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  log_format upstream '$server_port $server_protocol $connection $status';
  client_body_temp_path {p}/body;
  proxy_temp_path {p}/proxy;
  fastcgi_temp_path {p}/fastcgi;
  uwsgi_temp_path {p}/uwsgi;
  scgi_temp_path {p}/scgi;
  http2_max_concurrent_streams 256;
  keepalive_requests 100000;
  upstream backend {{ server {backend}; keepalive 64; }}
  {}  {}  {}}}
",
            server(format!("127.0.0.1:{h2_port} ssl http2")),
            server(format!("127.0.0.1:{h1_port} ssl")),
            server(format!("127.0.0.1:{h2c_port} http2")),
        );
        std::fs::write(d.join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(d)
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .arg("-e")
            .arg(d.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx (is it installed? scripts/install-deps.sh test)");
        let upstream = TlsUpstream {
            child,
            dir,
            h2_port,
            h1_port,
            h2c_port,
        };
        for port in [h2_port, h1_port, h2c_port] {
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            if !wait_for_port(addr, Duration::from_secs(10)) {
                panic!(
                    "nginx did not start; error log:\n{}",
                    std::fs::read_to_string(upstream.dir.path().join("error.log"))
                        .unwrap_or_default()
                );
            }
        }
        upstream
    }

    /// The CA that signed the server's certificate (PEM), for `tls.ca_file`.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// `https://127.0.0.1:PORT` of the port that offers h2.
    pub fn h2_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.h2_port)
    }

    /// `https://127.0.0.1:PORT` of the port that offers HTTP/1.1 only.
    pub fn h1_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.h1_port)
    }

    /// `http://127.0.0.1:PORT` of the plain-text h2 port.
    pub fn h2c_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.h2c_port)
    }

    /// Every request logged so far.
    pub fn log(&self) -> Vec<Logged> {
        let text = std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let mut f = line.split(' ');
                Some(Logged {
                    port: f.next()?.parse().ok()?,
                    protocol: f.next()?.to_string(),
                    connection: f.next()?.parse().ok()?,
                    status: f.next()?.parse().ok()?,
                })
            })
            .collect()
    }

    /// The access log once it has at least `n` lines (nginx writes a line when a request
    /// ends, which can be just after the client has its answer); waits up to 5 s.
    pub async fn wait_for_log(&self, n: usize) -> Vec<Logged> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.log();
            if log.len() >= n || Instant::now() > deadline {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
