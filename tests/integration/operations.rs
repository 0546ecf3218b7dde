//! Operations: `promptgate health`, systemd readiness (`NOTIFY_SOCKET`), and zero-downtime
//! upgrades (SIGQUIT to the old process after `run --upgrade`; SIGUSR2 self-upgrade) under load.

use crate::support::gateway::binary;
use crate::support::{self, client, free_port, Config, Gateway, MockUpstream};
use serde_json::json;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn health(args: &[&str]) -> Output {
    Command::new(binary())
        .arg("health")
        .args(args)
        .env_remove("PROMPTGATE_CONFIG")
        .output()
        .expect("run promptgate health")
}

#[test]
fn health_exits_0_on_200_and_1_otherwise() {
    let gw = Gateway::start(Config::providers("http://127.0.0.1:9"));
    let config = gw.config_path();
    let out = health(&["--config", config.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains(&format!("http://{}/healthz", gw.admin)) && stdout.contains("200"),
        "{stdout}"
    );

    let out = health(&["--url", &gw.admin_url("/healthz")]);
    assert!(out.status.success(), "{out:?}");

    // nothing listening
    let out = health(&["--url", &format!("http://127.0.0.1:{}", free_port())]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unhealthy") && err.contains("unreachable"),
        "{err}"
    );

    // something answers, but not 200: the proxy port has no /healthz
    let out = health(&["--url", &gw.url("/healthz")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("404") && err.contains("not 200"), "{err}");

    let out = health(&["--url", "https://127.0.0.1:1/"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only http://"));
}

/// A `NOTIFY_SOCKET` for one test: systemd's side of the readiness protocol.
struct NotifySocket {
    sock: UnixDatagram,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        NotifySocket {
            sock,
            path,
            _dir: dir,
        }
    }

    /// The next message, or panics after 15 s.
    fn recv(&self) -> String {
        let mut buf = [0u8; 4096];
        let n = self
            .sock
            .recv(&mut buf)
            .expect("a notification within 15 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

/// A process this test started (other than through `Gateway`), killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Kills a process we only know by pid (the SIGUSR2 successor is the old process's child).
struct Pid(u32);

impl Drop for Pid {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}

fn start_upgrade(config: &Path, log: &Path) -> Process {
    let log = std::fs::File::create(log).unwrap();
    Process(
        Command::new(binary())
            .args(["run", "--upgrade", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env_remove("PROMPTGATE_CONFIG")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn promptgate run --upgrade"),
    )
}

/// Requests sent back to back by `workers` clients, each with a unique body (so every one goes
/// to the upstream), until stopped. Even workers keep their connection alive (as SDKs do), odd
/// ones open a fresh connection per request.
struct Load {
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: String, workers: usize) -> Load {
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..workers)
            .map(|w| {
                let (url, ok, failures, stop) =
                    (url.clone(), ok.clone(), failures.clone(), stop.clone());
                tokio::spawn(async move {
                    let client = if w % 2 == 0 {
                        reqwest::Client::new()
                    } else {
                        client()
                    };
                    let mut i = 0u64;
                    // bounded: at most 20k requests per worker, whatever happens
                    while !stop.load(Ordering::Relaxed) && i < 20_000 {
                        i += 1;
                        let body = json!({"model": "m", "messages": [{"role": "user", "content": format!("w{w} #{i}")}]});
                        match client.post(&url).json(&body).send().await {
                            Ok(r) if r.status() == 200 => match r.bytes().await {
                                Ok(b) if b.windows(15).any(|x| x == b"Hello from mock") => {
                                    ok.fetch_add(1, Ordering::Relaxed);
                                }
                                other => failures.lock().unwrap().push(format!("body: {other:?}")),
                            },
                            Ok(r) => failures.lock().unwrap().push(format!("status {}", r.status())),
                            Err(e) => failures.lock().unwrap().push(format!("error: {e:?}")),
                        }
                    }
                })
            })
            .collect();
        Load {
            ok,
            failures,
            stop,
            tasks,
        }
    }

    async fn wait_for_ok(&self, at_least: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.ok.load(Ordering::Relaxed) < at_least {
            assert!(Instant::now() < deadline, "load made no progress");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the clients; returns (successes, failures).
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

/// A request the upstream answers slowly, started just before the handover: the old process
/// must finish it after it has given its sockets away.
fn slow_request(url: String) -> tokio::task::JoinHandle<(u16, String, Instant)> {
    tokio::spawn(async move {
        let resp = client()
            .post(url)
            .header("x-mock-delay-ms", "1500")
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "slow"}]}))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = String::from_utf8_lossy(&resp.bytes().await.unwrap()).into_owned();
        (status, body, Instant::now())
    })
}

async fn wait_exit(mut gw: Gateway, timeout: Duration) -> (Gateway, std::process::ExitStatus) {
    tokio::task::spawn_blocking(move || {
        let status = gw.wait_exit(timeout);
        let status = status.unwrap_or_else(|| panic!("old process still running:\n{}", gw.logs()));
        (gw, status)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigquit_upgrade_under_load_fails_no_request() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("upgrade.sock");
    let gw = Gateway::start(
        Config::providers(&mock.url()).section(format!("upgrade_sock: \"{}\"", sock.display())),
    );
    let url = gw.url("/openai/v1/chat/completions");
    let load = Load::start(url.clone(), 4);
    load.wait_for_ok(50).await;

    let new_log = dir.path().join("new.log");
    let new = start_upgrade(&gw.config_path(), &new_log);
    let slow = slow_request(url.clone());
    while !mock
        .requests()
        .iter()
        .any(|r| r.header("x-mock-delay-ms").is_some())
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gw.signal("QUIT");
    let (gw, status) = wait_exit(gw, Duration::from_secs(15)).await;
    let old_exited = Instant::now();
    assert!(status.success(), "old process: {status:?}\n{}", gw.logs());

    let (slow_status, slow_body, slow_done) = slow.await.unwrap();
    assert_eq!(slow_status, 200, "{slow_body}");
    assert!(
        slow_done <= old_exited,
        "the old process exited before its in-flight request"
    );

    // the new process alone serves now
    let before = load.ok.load(Ordering::Relaxed);
    load.wait_for_ok(before + 50).await;
    let (ok, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {} requests failed across the upgrade: {:?}\nold:\n{}\nnew:\n{}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(5)],
        gw.logs(),
        std::fs::read_to_string(&new_log).unwrap_or_default()
    );
    let out = health(&["--url", &gw.admin_url("/healthz")]);
    assert!(out.status.success(), "new process healthy: {out:?}");
    // One line each: the old process says where the sockets went and what it drains...
    let old = gw.logs();
    let handed = format!(
        "SIGQUIT: listening sockets handed to the new process via {}; draining ",
        sock.display()
    );
    assert_eq!(old.matches(&handed).count(), 1, "{old}");
    assert!(
        old.contains("in-flight request(s), at most 5s (shutdown_grace)"),
        "{old}"
    );
    assert!(old.ends_with("promptgate stopped\n"), "{old}");
    // ...and the new one that it listens, on sockets taken over.
    let new_log = std::fs::read_to_string(&new_log).unwrap_or_default();
    let started = format!(
        "promptgate {} listening on {} (admin {})",
        env!("CARGO_PKG_VERSION"),
        gw.addr,
        gw.admin
    );
    assert!(
        new_log.lines().any(|l| l.contains(&started)
            && l.ends_with("; listening sockets taken over from the previous process")),
        "{new_log}"
    );
    drop(new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn systemd_ready_and_sigusr2_self_upgrade() {
    let mock = MockUpstream::start().await;
    let notify = NotifySocket::new();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("upgrade.sock");
    let gw = Gateway::start_with_env(
        Config::providers(&mock.url()).section(format!("upgrade_sock: \"{}\"", sock.display())),
        &[("NOTIFY_SOCKET", notify.path.to_str().unwrap())],
    );
    let first = notify.recv();
    assert!(first.lines().any(|l| l == "READY=1"), "{first:?}");
    assert!(!first.contains("MAINPID"), "{first:?}");

    let url = gw.url("/openai/v1/chat/completions");
    let load = Load::start(url.clone(), 3);
    load.wait_for_ok(30).await;

    // the old process starts its successor itself, which reports itself as the main process
    gw.signal("USR2");
    let second = notify.recv();
    let pid: u32 = second
        .lines()
        .find_map(|l| l.strip_prefix("MAINPID="))
        .unwrap_or_else(|| panic!("no MAINPID in {second:?}"))
        .parse()
        .unwrap();
    let _successor = Pid(pid);
    assert!(second.lines().any(|l| l == "READY=1"), "{second:?}");

    let (gw, status) = wait_exit(gw, Duration::from_secs(15)).await;
    assert!(status.success(), "old process: {status:?}\n{}", gw.logs());
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "successor runs"
    );
    // The successor logs to the same stderr.
    let logs = gw.logs();
    assert!(
        logs.contains(&format!(
            "SIGUSR2: listening sockets handed to the new process (pid {pid}) via {}; draining ",
            sock.display()
        )),
        "{logs}"
    );
    assert!(
        logs.contains("; listening sockets taken over from the previous process"),
        "{logs}"
    );

    let before = load.ok.load(Ordering::Relaxed);
    load.wait_for_ok(before + 30).await;
    let (ok, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {} failed: {:?}\n{}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(5)],
        gw.logs()
    );

    // SIGTERM to the successor: STOPPING=1, then it exits
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let third = notify.recv();
    assert!(third.lines().any(|l| l == "STOPPING=1"), "{third:?}");
}

#[test]
fn an_upgrade_with_no_process_to_take_over_from_says_it_waits_then_fails() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("promptgate.yaml");
    let sock = dir.path().join("upgrade.sock");
    let body = Config::providers("http://127.0.0.1:9").section(format!(
        "listen: \"127.0.0.1:{}\"\nadmin: \"127.0.0.1:{}\"\nupgrade_sock: \"{}\"",
        free_port(),
        free_port(),
        sock.display()
    ));
    std::fs::write(&config, body.to_string()).unwrap();
    let log = dir.path().join("new.log");
    let mut new = start_upgrade(&config, &log);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = new.0.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "still waiting");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let hint = format!(
        "upgrade: waiting for the running process's listening sockets on {}; send it SIGQUIT",
        sock.display()
    );
    assert_eq!(text.matches(&hint).count(), 1, "{text}");
    assert!(!text.contains("listening on"), "{text}");
}

/// A gateway that can hand its listeners over (`upgrade_sock` in `dir`), with an answer the
/// upstream holds for a while in flight, so that the old process is still draining after a
/// handover.
async fn draining_gateway(
    mock: &MockUpstream,
) -> (
    Gateway,
    tempfile::TempDir,
    tokio::task::JoinHandle<(u16, String, Instant)>,
) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("upgrade.sock");
    let gw = Gateway::start(
        Config::providers(&mock.url()).section(format!("upgrade_sock: \"{}\"", sock.display())),
    );
    let held = slow_request(gw.url("/openai/v1/chat/completions"));
    while mock.hits() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (gw, dir, held)
}

/// Starts the new process and sends the old one SIGQUIT; returns once the old one has handed
/// its listeners over.
async fn hand_over(gw: &Gateway, dir: &Path) -> Process {
    let new = start_upgrade(&gw.config_path(), &dir.join("new.log"));
    gw.signal("QUIT");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.logs().contains("listening sockets handed to") {
        assert!(Instant::now() < deadline, "no handover:\n{}", gw.logs());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    new
}

/// A raw chat completion request asking `content`.
fn chat_request(content: &str) -> String {
    let body = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{content}"}}]}}"#);
    format!(
        "POST /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// One whole response with a `Content-Length` off a raw connection (head and body, as text;
/// what arrived when the connection ends first).
fn read_answer(s: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while support::message_len(&seen).is_none() {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// A connection the old process accepted before a SIGQUIT handover, whose first request
/// arrives after it, is answered by the old process (and then closed), not dropped: a client
/// without keep-alive opens a connection per request, so one is always on its way when an
/// upgrade starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_on_a_connection_accepted_before_the_handover_is_answered() {
    use std::io::Write;
    let mock = MockUpstream::start().await;
    let (gw, dir, held) = draining_gateway(&mock).await;
    let mut conn = std::net::TcpStream::connect(gw.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await; // accepted, nothing sent yet
    let new = hand_over(&gw, dir.path()).await;
    conn.write_all(chat_request("late").as_bytes()).unwrap();
    let answer = read_answer(&mut conn);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{answer:?}\n{}",
        gw.logs()
    );
    assert_eq!(held.await.unwrap().0, 200);
    let (_gw, status) = wait_exit(gw, Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}");
    drop(new);
}

/// A keep-alive connection whose next request is sent just after a SIGQUIT handover began is
/// answered by the old process (then closed), not cut: the race every keep-alive server has
/// with its clients, closed by a moment's grace (`HEAD_GRACE` in serve.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_request_sent_as_the_handover_begins_is_answered() {
    use std::io::Write;
    let mock = MockUpstream::start().await;
    let (gw, dir, held) = draining_gateway(&mock).await;
    let mut conn = std::net::TcpStream::connect(gw.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(chat_request("keep 1").as_bytes()).unwrap();
    let first = read_answer(&mut conn);
    assert!(first.starts_with("HTTP/1.1 200"), "{first:?}");
    let new = hand_over(&gw, dir.path()).await;
    conn.write_all(chat_request("keep 2").as_bytes()).unwrap();
    let second = read_answer(&mut conn);
    assert!(
        second.starts_with("HTTP/1.1 200"),
        "{second:?}\n{}",
        gw.logs()
    );
    assert!(
        second.to_ascii_lowercase().contains("connection: close"),
        "{second}"
    );
    assert_eq!(held.await.unwrap().0, 200);
    let (_gw, status) = wait_exit(gw, Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}");
    drop(new);
}
