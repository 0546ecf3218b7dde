//! Real `redis-server` processes for the tests: one server, or a 3-node cluster, on free
//! loopback ports, without persistence, killed when dropped.

use super::gateway::{free_port, wait_for_port};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a server gets to start answering PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);

fn spawn_server(port: u16, dir: &Path, extra: &[&str]) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        // Redis 7 refuses DEBUG (used by `pause`) unless enabled; local connections suffice.
        .args(["--enable-debug-command", "local"])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server (is it installed? scripts/install-deps.sh test)")
}

/// Runs `redis-cli -p PORT ARGS…`; the output is the reply, whatever it is.
pub fn cli(port: u16, args: &[&str]) -> Output {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli")
}

fn cli_text(port: u16, args: &[&str]) -> String {
    String::from_utf8_lossy(&cli(port, args).stdout)
        .trim()
        .to_string()
}

/// Waits until the server on `port` answers PING with PONG.
fn wait_for_pong(port: u16, timeout: Duration) -> bool {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + timeout;
    if !wait_for_port(addr, timeout) {
        return false;
    }
    while Instant::now() < deadline {
        if cli_text(port, &["ping"]) == "PONG" {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// `KEYS pattern` over the given servers, sorted. Piped redis-cli prints one key a line.
fn keys_on(ports: &[u16], pattern: &str) -> Vec<String> {
    let mut keys: Vec<String> = ports
        .iter()
        .flat_map(|p| {
            cli_text(*p, &["keys", pattern])
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    keys.sort();
    keys
}

/// A free port whose cluster bus port (port + 10000) is also free and exists.
fn free_cluster_port() -> u16 {
    for _ in 0..1000 {
        let port = free_port();
        if port <= 55535 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair for a cluster node");
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// One `redis-server` on 127.0.0.1.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().expect("temp dir"),
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server now (simulates Redis going down); the port stays reserved for `restart`.
    pub fn stop(&mut self) {
        kill(&mut self.child);
    }

    /// Starts the server again on the same port (empty: nothing is persisted).
    pub fn restart(&mut self) {
        self.stop();
        let mut child = spawn_server(self.port, self.dir.path(), &[]);
        if !wait_for_pong(self.port, START_TIMEOUT) {
            let _ = child.kill();
            panic!("redis-server on port {} did not answer PING", self.port);
        }
        self.child = Some(child);
    }

    /// `KEYS pattern`, sorted.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        keys_on(&[self.port], pattern)
    }

    /// `TTL key` in seconds (-2: no such key, -1: no expiry).
    pub fn ttl(&self, key: &str) -> i64 {
        let text = cli_text(self.port, &["ttl", key]);
        text.parse()
            .unwrap_or_else(|_| panic!("TTL reply {text:?}"))
    }

    /// Makes the server unresponsive for `duration` (`DEBUG SLEEP` on its own `redis-cli`, in
    /// a thread), and returns once a probe confirms it no longer answers. Join the handle to
    /// wait for the end of the pause.
    pub fn pause(&self, duration: Duration) -> std::thread::JoinHandle<()> {
        let port = self.port;
        let secs = format!("{:.3}", duration.as_secs_f64());
        let handle = std::thread::spawn(move || {
            let _ = cli(port, &["debug", "sleep", &secs]);
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while !unresponsive(port) {
            assert!(Instant::now() < deadline, "DEBUG SLEEP did not take effect");
        }
        handle
    }
}

/// True when a PING on a fresh connection gets no reply within 100 ms.
fn unresponsive(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(stream.read(&mut buf), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A 3-master Redis Cluster (no replicas) on 127.0.0.1.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    children: Vec<Child>,
    _dirs: Vec<tempfile::TempDir>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let mut cluster = RedisCluster {
            ports: Vec::new(),
            children: Vec::new(),
            _dirs: Vec::new(),
        };
        for _ in 0..3 {
            let port = free_cluster_port();
            let dir = tempfile::tempdir().expect("temp dir");
            let conf = dir.path().join(format!("nodes-{port}.conf"));
            let child = spawn_server(
                port,
                dir.path(),
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    conf.to_str().unwrap(),
                    "--cluster-node-timeout",
                    "2000",
                ],
            );
            // Pushed before waiting, so Drop kills it even if the wait panics.
            cluster.children.push(child);
            cluster.ports.push(port);
            cluster._dirs.push(dir);
            assert!(
                wait_for_pong(port, START_TIMEOUT),
                "cluster node on port {port} did not answer PING"
            );
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        // Every node must agree, not only the first: a client may ask any of them for slots.
        while !cluster
            .ports
            .iter()
            .all(|p| cli_text(*p, &["cluster", "info"]).contains("cluster_state:ok"))
        {
            assert!(Instant::now() < deadline, "cluster never reached state ok");
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// `KEYS pattern` over every node, sorted.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        keys_on(&self.ports, pattern)
    }

    /// How many keys each node holds (`DBSIZE`).
    pub fn sizes(&self) -> Vec<u64> {
        self.ports
            .iter()
            .map(|p| cli_text(*p, &["dbsize"]).parse().unwrap_or(0))
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
