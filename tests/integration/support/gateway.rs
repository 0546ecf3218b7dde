//! Runs the real `promptgate` binary on free loopback ports with a config written for the test,
//! and stops it (SIGKILL) when dropped.

use std::collections::BTreeSet;
use std::fmt;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A port that was free a moment ago and that no earlier call in this test process returned:
/// the kernel may hand the same ephemeral port to two binds in a row once the first listener is
/// closed, and a gateway given it for both `listen` and `admin` would refuse to start.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind an ephemeral port")
            .port();
        if GIVEN
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(port)
        {
            return port;
        }
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_promptgate")
}

pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    dir: tempfile::TempDir,
    /// The `listen`/`admin`/`threads`/`shutdown_grace` lines every config body is written under.
    header: String,
}

impl Gateway {
    /// Starts promptgate with `body` (YAML without `listen`/`admin`, which are chosen here:
    /// a [`Config`](super::Config) or text) and waits until both listeners accept connections.
    pub fn start(body: impl fmt::Display) -> Gateway {
        Self::start_with_env(body, &[])
    }

    pub fn start_with_env(body: impl fmt::Display, env: &[(&str, &str)]) -> Gateway {
        Self::spawn(body, env, Some("info"))
    }

    /// Starts promptgate with `RUST_LOG` set to `rust_log`, or unset (`None`): the default
    /// levels, as a user who sets nothing gets them.
    pub fn start_with_rust_log(body: impl fmt::Display, rust_log: Option<&str>) -> Gateway {
        Self::spawn(body, &[], rust_log)
    }

    fn spawn(body: impl fmt::Display, env: &[(&str, &str)], rust_log: Option<&str>) -> Gateway {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let dir = tempfile::tempdir().expect("temp dir");
        let header =
            format!("listen: \"{addr}\"\nadmin: \"{admin}\"\nthreads: 2\nshutdown_grace: 5s\n");
        std::fs::write(
            dir.path().join("promptgate.yaml"),
            format!("{header}{body}"),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("promptgate.log")).unwrap();
        let mut command = Command::new(binary());
        command
            .args(["run", "--config"])
            .arg(dir.path().join("promptgate.yaml"))
            .env_remove("RUST_LOG")
            .env_remove("PROMPTGATE_CONFIG");
        if let Some(level) = rust_log {
            command.env("RUST_LOG", level);
        }
        let child = command
            .envs(env.iter().copied())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn promptgate");
        let mut gw = Gateway {
            child,
            addr,
            admin,
            dir,
            header,
        };
        let up = wait_for_port(addr, Duration::from_secs(15))
            && wait_for_port(admin, Duration::from_secs(5));
        if !up {
            let status = gw.child.try_wait().ok().flatten();
            panic!(
                "promptgate did not start (exit: {status:?}); log:\n{}",
                gw.logs()
            );
        }
        gw
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The config file the process was started with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("promptgate.yaml")
    }

    /// The full config text for `body`, under the running `listen`/`admin` header.
    pub fn config_text(&self, body: &str) -> String {
        format!("{}{body}", self.header)
    }

    /// Replaces the config with `body` (keeping `listen`/`admin`) the way editors and config
    /// managers do: write a temp file beside it, then rename it over the config, so a reader
    /// never sees a half-written file.
    pub fn rewrite_config(&self, body: &str) {
        let tmp = self.dir.path().join(".promptgate.yaml.tmp");
        std::fs::write(&tmp, self.config_text(body)).unwrap();
        std::fs::rename(&tmp, self.config_path()).unwrap();
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits (at most 2 s) until the log contains `needle`: the access log line of a request is
    /// written just after its response, and every line reaches the file from the log's writer
    /// thread a few milliseconds after it was logged. Returns whether it appeared.
    pub async fn wait_for_log(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.logs().contains(needle) {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// POSTs `body` (as JSON, with `headers`) to `path` on the proxy and reads the whole answer;
    /// returns the status and `x-promptgate-cache` (`-` when absent).
    pub async fn post_json(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String) {
        let mut req = super::client()
            .post(self.url(path))
            .header("content-type", "application/json");
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let resp = req.body(body.to_vec()).send().await.unwrap();
        let cache = resp
            .headers()
            .get("x-promptgate-cache")
            .map_or("-".to_string(), |v| v.to_str().unwrap().to_string());
        let status = resp.status().as_u16();
        resp.bytes().await.unwrap();
        (status, cache)
    }

    /// Everything the process logged so far.
    pub fn logs(&self) -> String {
        read_to_string(&self.dir.path().join("promptgate.log"))
    }

    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

fn read_to_string(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
