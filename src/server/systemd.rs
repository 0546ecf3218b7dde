//! systemd's readiness protocol (`Type=notify`): tell the service manager `READY=1` once both
//! listeners accept connections, `MAINPID` after an upgrade, `STOPPING=1` on SIGTERM; and the
//! start-up line, logged at the same moment.
//!
//! Every message is a no-op unless `NOTIFY_SOCKET` is set, so nothing changes outside systemd.

use crate::cli::health::Target;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use sd_notify::NotifyState;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

/// systemd's own start timeout (90 s by default) is the real bound; this one only stops the
/// probe from running forever when a listener never comes up.
const PROBE_FOR: Duration = Duration::from_secs(60);

fn under_systemd() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// Sends `states`, logging (never failing on) errors: a lost notification must not stop the proxy.
pub fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        log::warn!("cannot notify systemd: {e}");
    }
}

/// Background service, started after the listeners: waits until each address accepts a TCP
/// connection, then logs the start-up line and reports ready. Pingora marks a listening service
/// ready before it binds, so the probe is what tells us the sockets are really there.
pub struct ReadyNotifier {
    pub addrs: Vec<SocketAddr>,
    /// Started with `--upgrade`: also tell systemd this process is now the main one.
    pub upgrade: bool,
    /// Logged at `info` once every address accepts connections.
    pub line: String,
}

#[async_trait]
impl BackgroundService for ReadyNotifier {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let deadline = Instant::now() + PROBE_FOR;
        for addr in &self.addrs {
            let target = Target::admin(*addr).addr;
            while tokio::net::TcpStream::connect(target).await.is_err() {
                if Instant::now() > deadline {
                    log::error!("{addr} does not accept connections after {PROBE_FOR:?}");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // Under the server's name: the line is about the server, not about systemd.
        log::info!(target: "promptgate::server", "{}", self.line);
        if !under_systemd() {
            return;
        }
        let pid = std::process::id();
        let status = format!("serving on {}", self.addrs[0]);
        if self.upgrade {
            notify(&[
                NotifyState::MainPid(pid),
                NotifyState::Ready,
                NotifyState::Status(&status),
            ]);
        } else {
            notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
        }
        log::debug!("reported ready to systemd (pid {pid})");
    }
}
