//! Config reload: validate the config file, build its runtime and swap it in whole, or keep the
//! running one — triggered by a file change (signalled by [`super::watch`]), SIGHUP or
//! `POST /reload`, all through [`Reloader::reload`].
//!
//! A reload validates exactly like start-up and `promptgate check` ([`runtime::load`]). An
//! invalid file changes nothing: the error (every problem, with file and line) is logged and
//! counted, and the running table keeps serving. Requests already under way keep the snapshot
//! they loaded at their start, so a reload never changes a request mid-flight.
//!
//! Fields bound at start-up ([`RESTART_FIELDS`]) cannot change at runtime: a reload logs that they
//! need a restart and keeps their running values in the new table, so the table never claims a
//! listener or thread count that is not in force. Everything else, `shutdown_grace` included
//! (SIGTERM reads it from the current table), applies at once.
//!
//! Upstream connection pools survive a reload: each upstream's pool (its own Pingora connector)
//! is found again by the new table while the upstream's connection settings (`pool`, `tls`,
//! `http_version`, scheme) are unchanged, and Pingora keys the pooled connections by peer
//! (address, SNI, TLS options), so an upstream whose address is unchanged keeps them.

use super::watch::FileWatch;
use crate::cache::Cache;
use crate::config::ConfigError;
use crate::metrics::{Metrics, ReloadResult};
use crate::runtime::{self, Runtime};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::services::ServiceReadyNotifier;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, watch};

/// Config fields that are bound when the process starts (sockets, runtimes).
/// `upgrade_sock` is among them because a new process started with `--upgrade` reads it from the
/// file while the running one sends to the path it started with; keeping the running value
/// makes that mismatch visible (a warning) instead of a silent failed handover.
pub const RESTART_FIELDS: &[&str] = &[
    "listen",
    "admin",
    "threads",
    "upgrade_sock",
    "cache.memory.max_bytes",
];

/// What asked for a reload, for the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    FileChange,
    Sighup,
    AdminApi,
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Trigger::FileChange => "file changed",
            Trigger::Sighup => "SIGHUP",
            Trigger::AdminApi => "POST /reload",
        })
    }
}

/// A start-up-bound field whose new value was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeedsRestart {
    pub field: &'static str,
    pub running: String,
    pub requested: String,
}

/// What a successful reload put in force.
#[derive(Debug)]
pub struct Reloaded {
    pub routes: usize,
    pub needs_restart: Vec<NeedsRestart>,
}

/// The last reload attempt, for the dashboard.
#[derive(Debug, Clone)]
pub struct LastReload {
    /// When it finished.
    pub at: SystemTime,
    pub trigger: Trigger,
    /// `None` on success, else what was wrong (as `POST /reload` reports it).
    pub error: Option<String>,
}

/// Owns the config path and the live table; the one place a table is swapped after start-up.
pub struct Reloader {
    path: PathBuf,
    runtime: Arc<ArcSwap<Runtime>>,
    cache: Arc<Cache>,
    metrics: Arc<Metrics>,
    /// Serializes reloads so that two racing triggers cannot store an older read over a newer
    /// one. Only held in synchronous code.
    serial: Mutex<()>,
    /// `reload.watch` of the config in force, for the service that starts and stops the file
    /// watcher.
    watch_file: watch::Sender<bool>,
    last: Mutex<Option<LastReload>>,
}

impl Reloader {
    pub fn new(
        path: PathBuf,
        runtime: Arc<ArcSwap<Runtime>>,
        cache: Arc<Cache>,
        metrics: Arc<Metrics>,
    ) -> Reloader {
        let watch_file = watch::Sender::new(runtime.load().reload.watch);
        Reloader {
            path,
            runtime,
            cache,
            metrics,
            serial: Mutex::new(()),
            watch_file,
            last: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn runtime(&self) -> &Arc<ArcSwap<Runtime>> {
        &self.runtime
    }

    /// Follows `reload.watch` of the config in force: whether the file should be watched.
    pub fn watch_file(&self) -> watch::Receiver<bool> {
        self.watch_file.subscribe()
    }

    /// The last reload attempt since start, if any.
    pub fn last(&self) -> Option<LastReload> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn remember(&self, trigger: Trigger, error: Option<String>) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(LastReload {
            at: SystemTime::now(),
            trigger,
            error,
        });
    }

    /// Reads, validates and swaps in the config file, or keeps the running table on error.
    ///
    /// Blocking (a small file read and parse, a few milliseconds); callers on a runtime accept
    /// that rather than hop to a blocking pool for it.
    pub fn reload(&self, trigger: Trigger) -> Result<Reloaded, ConfigError> {
        let _serial = self.serial.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = match runtime::load(&self.path) {
            Ok(runtime) => runtime,
            Err(e) => {
                self.metrics.config_reloaded(ReloadResult::Error);
                // An invalid file's Display lists every problem as file:line: path: message;
                // an unreadable one's cause (the I/O error) is its source.
                let cause = match &e {
                    ConfigError::Read { source, .. } => format!(": {source}"),
                    ConfigError::Invalid { .. } => String::new(),
                };
                log::error!(
                    "config reload ({trigger}) failed, the running config stays in force: {e}{cause}"
                );
                self.remember(trigger, Some(format!("{e}{cause}")));
                return Err(e);
            }
        };
        for warning in next.sections.warnings() {
            log::warn!("config reload ({trigger}): {warning}");
        }
        let needs_restart = keep_startup_fields(&self.runtime.load(), &mut next);
        for n in &needs_restart {
            log::warn!(
                "config reload ({trigger}): {} changed from {} to {}; that needs a restart, {} stays in force",
                n.field,
                n.running,
                n.requested,
                n.running
            );
        }
        let routes = next.routes.len();
        if let Err(e) = self.cache.apply(&next.cache) {
            // Validation already built this store once, so this is not expected; keep serving.
            log::error!("config reload ({trigger}): cache backend unchanged: {e}");
        }
        crate::logging::set_format(next.log.format);
        let watch_file = next.reload.watch;
        let summary = next.summary();
        self.runtime.store(Arc::new(next));
        self.watch_file
            .send_if_modified(|w| std::mem::replace(w, watch_file) != watch_file);
        self.metrics.config_reloaded(ReloadResult::Success);
        self.remember(trigger, None);
        log::info!(
            "config {} reloaded ({trigger}): {summary}",
            self.path.display()
        );
        Ok(Reloaded {
            routes,
            needs_restart,
        })
    }
}

/// Copies the running values of [`RESTART_FIELDS`] into `next`, returning those that differed.
fn keep_startup_fields(running: &Runtime, next: &mut Runtime) -> Vec<NeedsRestart> {
    let mut changed = Vec::new();
    let mut keep = |field: &'static str, running: String, requested: String| {
        if running != requested {
            changed.push(NeedsRestart {
                field,
                running,
                requested,
            });
        }
    };
    keep(
        "listen",
        running.listen.to_string(),
        next.listen.to_string(),
    );
    keep("admin", running.admin.to_string(), next.admin.to_string());
    keep(
        "threads",
        running.threads.to_string(),
        next.threads.to_string(),
    );
    keep(
        "cache.memory.max_bytes",
        running.cache.memory.max_bytes.to_string(),
        next.cache.memory.max_bytes.to_string(),
    );
    next.cache.memory.max_bytes = running.cache.memory.max_bytes;
    keep(
        "upgrade_sock",
        running.upgrade_sock.clone(),
        next.upgrade_sock.clone(),
    );
    next.listen = running.listen;
    next.admin = running.admin;
    next.threads = running.threads;
    next.upgrade_sock = running.upgrade_sock.clone();
    changed
}

/// The Pingora background service that turns file changes and SIGHUP into reloads, until
/// the server shuts down. `POST /reload` lives on the admin listener and calls the same
/// [`Reloader`]. It runs the file watcher while `reload.watch` is true, and only then.
pub struct ReloadService {
    reloader: Arc<Reloader>,
}

impl ReloadService {
    pub fn new(reloader: Arc<Reloader>) -> ReloadService {
        ReloadService { reloader }
    }

    /// Starts or stops the file watcher to match `wanted`; changes go to `signals`. At start
    /// (`at_start`) the start-up line says whether the file is watched; later, a reload that
    /// turns watching on or off is followed by a line saying so.
    fn follow(
        &self,
        watcher: &mut Option<FileWatch>,
        wanted: bool,
        signals: &mpsc::Sender<Trigger>,
        at_start: bool,
    ) {
        let path = self.reloader.path();
        match (wanted, watcher.is_some()) {
            (true, false) => match FileWatch::start(
                path,
                signals.clone(),
                self.reloader.metrics.config_watch_counters(),
            ) {
                Ok(w) => {
                    *watcher = Some(w);
                    if !at_start {
                        log::info!("watching {} for config changes", path.display());
                    }
                }
                Err(e) => log::warn!(
                    "cannot watch {} for changes ({e}); reload with SIGHUP or POST /reload",
                    path.display()
                ),
            },
            (false, true) => {
                *watcher = None;
                log::info!(
                    "stopped watching {} (reload.watch is false); reload with SIGHUP or POST /reload",
                    path.display()
                );
            }
            (false, false) => log::debug!(
                "reload.watch is false: {} is not watched; reload with SIGHUP or POST /reload",
                path.display()
            ),
            (true, true) => {}
        }
    }
}

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start_with_ready_notifier(
        &self,
        mut shutdown: ShutdownWatch,
        ready: ServiceReadyNotifier,
    ) {
        // Installed before we report ready (the listeners wait for that), so a SIGHUP sent once
        // the ports accept connections reloads instead of killing the process (SIGHUP's
        // default action).
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                log::error!("cannot install the SIGHUP handler ({e}); reload by file change or POST /reload");
                None
            }
        };
        // Capacity 1: a pending change is enough, the reload reads the file as it is then.
        let (signal_tx, mut signals) = mpsc::channel(1);
        let mut watch_file = self.reloader.watch_file();
        let mut watcher = None;
        self.follow(
            &mut watcher,
            *watch_file.borrow_and_update(),
            &signal_tx,
            true,
        );
        ready.notify_ready();

        loop {
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return;
                    }
                }
                Some(()) = next_hup(&mut hup) => {
                    let _ = self.reloader.reload(Trigger::Sighup);
                }
                Some(trigger) = signals.recv() => {
                    // A change seen just before a reload turned watching off is not acted on.
                    if !self.reloader.runtime().load().reload.watch {
                        log::debug!("config file changed; not reloading (reload.watch is false)");
                        continue;
                    }
                    let _ = self.reloader.reload(trigger);
                }
                Ok(()) = watch_file.changed() => {
                    let wanted = *watch_file.borrow_and_update();
                    self.follow(&mut watcher, wanted, &signal_tx, false);
                }
            }
        }
    }
}

async fn next_hup(hup: &mut Option<Signal>) -> Option<()> {
    match hup {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// One upstream and route, which every valid config needs.
    const ROUTE: &str =
        "upstreams: {u: {url: \"http://127.0.0.1:1\"}}\nroutes: [{name: r, targets: [u]}]\n";

    fn runtime(yaml: &str) -> Runtime {
        runtime::build(
            &crate::config::parse(&format!("{yaml}{ROUTE}"), "test.yaml", &|_| None).unwrap(),
        )
    }

    #[test]
    fn startup_fields_keep_their_running_values() {
        let running = runtime("listen: 127.0.0.1:1000\nadmin: 127.0.0.1:1001\nthreads: 2\n");
        let mut next = runtime(
            "listen: 127.0.0.1:2000\nadmin: 127.0.0.1:1001\nthreads: 4\nshutdown_grace: 3s\nupgrade_sock: /run/pg.sock\n",
        );
        let changed = keep_startup_fields(&running, &mut next);
        let fields: Vec<_> = changed.iter().map(|n| n.field).collect();
        assert_eq!(fields, ["listen", "threads", "upgrade_sock"]);
        assert_eq!(next.upgrade_sock, "/tmp/promptgate_upgrade.sock");
        assert_eq!(changed[0].requested, "127.0.0.1:2000");
        assert_eq!(next.listen.to_string(), "127.0.0.1:1000");
        assert_eq!(next.threads, 2);
        // everything else applies
        assert_eq!(next.shutdown_grace, Duration::from_secs(3));
    }

    #[test]
    fn unchanged_startup_fields_are_not_reported() {
        let yaml = "listen: 127.0.0.1:1000\nadmin: 127.0.0.1:1001\nthreads: 2\n";
        let mut next = runtime(yaml);
        assert!(keep_startup_fields(&runtime(yaml), &mut next).is_empty());
    }

    #[test]
    fn a_failed_reload_keeps_the_table_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, ROUTE).unwrap();
        let live = Arc::new(ArcSwap::from_pointee(runtime::load(&path).unwrap()));
        let metrics = Arc::new(Metrics::new());
        let cache = Arc::new(Cache::new(&live.load().cache).unwrap());
        let r = Reloader::new(path.clone(), live.clone(), cache, metrics.clone());
        let before = live.load_full();
        assert!(r.last().is_none());

        std::fs::write(&path, "routes: [unclosed\n").unwrap();
        assert!(matches!(
            r.reload(Trigger::AdminApi),
            Err(ConfigError::Invalid { .. })
        ));
        assert!(Arc::ptr_eq(&before, &live.load_full()), "table kept");
        let failed = r.last().unwrap();
        assert_eq!(failed.trigger, Trigger::AdminApi);
        assert!(failed.error.unwrap().contains("c.yaml"));

        std::fs::write(
            &path,
            "upstreams: {u: {url: \"http://127.0.0.1:1\"}}\nroutes: [{name: r, targets: [u]}, {name: s, targets: [u]}]\n",
        )
        .unwrap();
        assert_eq!(r.reload(Trigger::Sighup).unwrap().routes, 2);
        assert_eq!(live.load().routes.len(), 2);
        let ok = r.last().unwrap();
        assert_eq!((ok.trigger, ok.error), (Trigger::Sighup, None));
        let text = metrics.render();
        assert!(text.contains(r#"promptgate_config_reloads_total{result="error"} 1"#));
        assert!(text.contains(r#"promptgate_config_reloads_total{result="success"} 1"#));
    }
}
