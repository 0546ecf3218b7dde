//! Zero-downtime binary upgrade, the old process's side: hand the listening sockets to a new
//! process (`promptgate run --upgrade`) over the `upgrade_sock`, stop accepting, then let the
//! shutdown watcher finish the requests already under way.
//!
//! Pingora can send the sockets itself on `ShutdownSignal::GracefulUpgrade`, but it then waits a
//! fixed 5 s, stops the listeners and shuts the runtimes down after `grace_period_seconds`: a
//! fixed sleep, not a drain (and ours is 0, because SIGTERM drains in our watcher). So the
//! watcher does the upgrade itself, with the two things Pingora keeps private reached from the
//! outside: [`Listening`] wraps each listening service to learn the shared socket table (the
//! `fds` handed to `start_service`) and to give it a shutdown signal of our own, which stops
//! the accept loops (and keep-alive) while the process keeps running to drain.

use async_trait::async_trait;
use pingora::server::RuntimeOpts;
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::{ServiceReadyNotifier, ServiceWithDependents};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("no listening sockets to hand over (the listeners have not started)")]
    NoSockets,
    #[error("no new process took the listening sockets at {path} ({reason}); is `promptgate run --upgrade` running with the same upgrade_sock?")]
    NotTaken { path: String, reason: String },
}

/// Shared by the listening services (which register their sockets) and the shutdown watcher
/// (which hands them over and stops the accept loops).
pub struct Handover {
    fds: OnceLock<ListenFds>,
    stop: watch::Sender<bool>,
}

impl Handover {
    pub fn new() -> Arc<Handover> {
        Arc::new(Handover {
            fds: OnceLock::new(),
            stop: watch::Sender::new(false),
        })
    }

    /// Wraps a listening service so that its sockets can be handed over and its accept loops
    /// stopped.
    pub fn wrap<S: ServiceWithDependents>(self: &Arc<Self>, inner: S) -> Listening<S> {
        Listening {
            inner,
            handover: self.clone(),
        }
    }

    /// Sends every listening socket to the process waiting on `path`. Pingora's sender retries
    /// for about 5 s while nobody listens there, so this runs on the blocking pool.
    pub async fn send(&self, path: &str) -> Result<usize, UpgradeError> {
        let fds = self.fds.get().cloned().ok_or(UpgradeError::NoSockets)?;
        let target = path.to_string();
        let sent = tokio::task::spawn_blocking(move || fds.lock().send_to_sock(target.as_str()))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|errno| errno.to_string()));
        sent.map_err(|reason| UpgradeError::NotTaken {
            path: path.to_string(),
            reason,
        })
    }

    /// Stops accepting on every wrapped listener and turns keep-alive off on open connections.
    /// The sockets themselves stay open in the new process.
    pub fn stop_accepting(&self) {
        self.stop.send_replace(true);
    }
}

/// A listening service whose shutdown signal is [`Handover::stop_accepting`] or Pingora's own,
/// whichever comes first.
pub struct Listening<S> {
    inner: S,
    handover: Arc<Handover>,
}

#[async_trait]
impl<S: ServiceWithDependents> ServiceWithDependents for Listening<S> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        mut shutdown: ShutdownWatch,
        listeners_per_fd: usize,
        ready_notifier: ServiceReadyNotifier,
    ) {
        if let Some(fds) = &fds {
            // Every service gets the same table (an Arc), so the first one to start is enough.
            let _ = self.handover.fds.get_or_init(|| fds.clone());
        }
        let stop = self.handover.stop.clone();
        tokio::spawn(async move {
            // SIGTERM/SIGINT still reach the listeners through Pingora's signal.
            if shutdown.wait_for(|down| *down).await.is_ok() {
                stop.send_replace(true);
            }
        });
        let ours = self.handover.stop.subscribe();
        self.inner
            .start_service(fds, ours, listeners_per_fd, ready_notifier)
            .await
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }

    fn runtime_opts_override(&self, global: &RuntimeOpts) -> Option<RuntimeOpts> {
        self.inner.runtime_opts_override(global)
    }

    fn on_startup_delay(&self, time_waited: Duration) {
        self.inner.on_startup_delay(time_waited)
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.inner.listen_addresses()
    }
}

/// The new process's side: a hint logged when the old process's sockets take a while to come,
/// and nothing when they come at once. Dropping it (the sockets came) cancels the hint.
pub struct WaitHint {
    _cancel: mpsc::Sender<()>,
}

impl WaitHint {
    /// Logs, after `delay` unless dropped first, that this process waits on `sock`.
    pub fn after(delay: Duration, sock: &str) -> WaitHint {
        let (cancel, cancelled) = mpsc::channel::<()>();
        let sock = sock.to_string();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = cancelled.recv_timeout(delay) {
                log::info!(
                    "upgrade: waiting for the running process's listening sockets on {sock}; \
                     send it SIGQUIT (this process gives up after about 5 s)"
                );
            }
        });
        WaitHint { _cancel: cancel }
    }
}
