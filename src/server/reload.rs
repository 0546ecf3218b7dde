//! Config reload: re-read the config file and swap the routing table whole, or keep the running
//! one — triggered by a file change, SIGHUP or `POST /reload`, all through [`Reloader::reload`].
//!
//! A reload validates exactly like start-up and `promptgate check` ([`config::load`]). An
//! invalid file changes nothing: the error (every problem, with file and line) is logged and
//! counted, and the running table keeps serving. Requests already under way keep the snapshot
//! they loaded at their start, so a reload never changes a request mid-flight.
//!
//! Fields bound at start-up ([`RESTART_FIELDS`]) cannot change at runtime: a reload logs that they
//! need a restart and keeps their running values in the new table, so the table never claims a
//! listener or thread count that is not in force. Everything else, `shutdown_grace` included
//! (SIGTERM reads it from the current table), applies at once.
//!
//! Upstream connection pools survive a reload: they live in the proxy's one Pingora connector,
//! keyed by peer (address, scheme, SNI, TLS options), not by table, so an upstream whose
//! address is unchanged keeps its pooled connections.

use crate::cache::Cache;
use crate::config::{self, ConfigError};
use crate::metrics::{Metrics, ReloadResult};
use crate::runtime::Runtime;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::services::ServiceReadyNotifier;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::Instant;

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

/// Quiet time after the last file event before reloading: editors and `kubectl` touch the file
/// (or its directory) several times per save, and we want to read the finished result once.
const DEBOUNCE: Duration = Duration::from_millis(250);
/// Longest a steady stream of events can postpone a reload.
const DEBOUNCE_MAX: Duration = Duration::from_secs(2);
/// The symlink a Kubernetes ConfigMap volume flips to publish a new version; the config file
/// itself is a symlink through it, so its own name never shows up in those events.
const CONFIGMAP_DATA_LINK: &str = "..data";

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

/// Owns the config path and the live table; the one place a table is swapped after start-up.
pub struct Reloader {
    path: PathBuf,
    runtime: Arc<ArcSwap<Runtime>>,
    cache: Arc<Cache>,
    metrics: Arc<Metrics>,
    /// Serializes reloads so that two racing triggers cannot store an older read over a newer
    /// one. Only held in synchronous code.
    serial: Mutex<()>,
}

impl Reloader {
    pub fn new(
        path: PathBuf,
        runtime: Arc<ArcSwap<Runtime>>,
        cache: Arc<Cache>,
        metrics: Arc<Metrics>,
    ) -> Reloader {
        Reloader {
            path,
            runtime,
            cache,
            metrics,
            serial: Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn runtime(&self) -> &Arc<ArcSwap<Runtime>> {
        &self.runtime
    }

    /// Reads, validates and swaps in the config file, or keeps the running table on error.
    ///
    /// Blocking (a small file read and parse, a few milliseconds); callers on a runtime accept
    /// that rather than hop to a blocking pool for it.
    pub fn reload(&self, trigger: Trigger) -> Result<Reloaded, ConfigError> {
        let _serial = self.serial.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = match config::load(&self.path) {
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
                return Err(e);
            }
        };
        for warning in next.spec.warnings() {
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
        self.runtime.store(Arc::new(next));
        self.metrics.config_reloaded(ReloadResult::Success);
        log::info!(
            "config {} reloaded ({trigger}): {routes} route(s)",
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
/// [`Reloader`].
pub struct ReloadService {
    reloader: Arc<Reloader>,
}

impl ReloadService {
    pub fn new(reloader: Arc<Reloader>) -> ReloadService {
        ReloadService { reloader }
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
        let mut watch = match FileWatch::start(self.reloader.path()) {
            Ok(w) => Some(w),
            Err(e) => {
                log::warn!(
                    "cannot watch {} for changes ({e}); reload with SIGHUP or POST /reload",
                    self.reloader.path().display()
                );
                None
            }
        };
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
                Some(()) = next_change(&mut watch) => {
                    if !self.reloader.runtime().load().reload.watch {
                        log::debug!("config file changed; not reloading (reload.watch is false)");
                        continue;
                    }
                    if watch.as_mut().is_some_and(|w| w.content_unchanged()) {
                        log::debug!("config file touched but its content is unchanged; not reloading");
                        continue;
                    }
                    let _ = self.reloader.reload(Trigger::FileChange);
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

async fn next_change(watch: &mut Option<FileWatch>) -> Option<()> {
    match watch {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

/// Watches the config file's parent directory (not the file: editors that save by writing a
/// temp file and renaming it, and ConfigMap symlink flips, replace the file's inode, which a
/// watch on the file itself would lose) and reports debounced changes to the file.
struct FileWatch {
    path: PathBuf,
    /// Dropping the watcher stops it, so it lives as long as this.
    _watcher: RecommendedWatcher,
    events: mpsc::Receiver<()>,
    /// Hash of the content seen at the last change, to skip reloads when only metadata moved.
    last_content: Option<blake3::Hash>,
}

impl FileWatch {
    fn start(path: &Path) -> notify::Result<FileWatch> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let names: Vec<OsString> = path
            .file_name()
            .into_iter()
            .map(OsString::from)
            .chain([OsString::from(CONFIGMAP_DATA_LINK)])
            .collect();
        // Capacity 1: an event only marks "something changed"; one pending mark is enough.
        let (tx, events) = mpsc::channel(1);
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                let relevant = match res {
                    Ok(event) => is_relevant(&event, &names),
                    // An error (e.g. the kernel queue overflowed) may hide a change: check.
                    Err(_) => true,
                };
                if relevant {
                    let _ = tx.try_send(());
                }
            })?;
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        log::info!(
            "watching {} for config changes (in {})",
            path.display(),
            dir.display()
        );
        Ok(FileWatch {
            path: path.to_path_buf(),
            _watcher: watcher,
            events,
            last_content: None,
        })
    }

    /// Waits for a change, then for [`DEBOUNCE`] of quiet (at most [`DEBOUNCE_MAX`]).
    /// `None` when the watcher has stopped.
    async fn changed(&mut self) -> Option<()> {
        self.events.recv().await?;
        let deadline = Instant::now() + DEBOUNCE_MAX;
        loop {
            let quiet_until = (Instant::now() + DEBOUNCE).min(deadline);
            match tokio::time::timeout_at(quiet_until, self.events.recv()).await {
                Ok(Some(())) if Instant::now() < deadline => continue,
                Ok(None) => return None,
                _ => return Some(()),
            }
        }
    }

    /// True when the file holds the same bytes as at the previous change. An unreadable file
    /// counts as changed, so that the reload reports why.
    fn content_unchanged(&mut self) -> bool {
        let Ok(bytes) = std::fs::read(&self.path) else {
            self.last_content = None;
            return false;
        };
        let hash = blake3::hash(&bytes);
        let unchanged = self.last_content == Some(hash);
        self.last_content = Some(hash);
        unchanged
    }
}

/// An event that may have changed the file: it names the file (or the ConfigMap data link),
/// or names nothing (a rescan), and is not a mere open or read.
fn is_relevant(event: &notify::Event, names: &[OsString]) -> bool {
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
        EventKind::Access(_) => return false,
        _ => {}
    }
    event.paths.is_empty()
        || event
            .paths
            .iter()
            .filter_map(|p| p.file_name())
            .any(|name| names.iter().any(|n| n == name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind, RenameMode};

    fn runtime(yaml: &str) -> Runtime {
        config::parse(yaml, "test.yaml", &|_| None).unwrap()
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

    fn event(kind: EventKind, path: &str) -> notify::Event {
        notify::Event::new(kind).add_path(PathBuf::from(path))
    }

    #[test]
    fn reacts_to_the_file_and_configmap_flips_only() {
        let names = [OsString::from("promptgate.yaml"), OsString::from("..data")];
        let modify = EventKind::Modify(ModifyKind::Data(notify::event::DataChange::Any));
        assert!(is_relevant(
            &event(modify, "/etc/pg/promptgate.yaml"),
            &names
        ));
        // editor: write a temp file, rename it over the config
        let renamed = event(
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
            "/etc/pg/.promptgate.yaml.swp",
        )
        .add_path(PathBuf::from("/etc/pg/promptgate.yaml"));
        assert!(is_relevant(&renamed, &names));
        assert!(is_relevant(
            &event(EventKind::Create(CreateKind::Any), "/etc/pg/..data"),
            &names
        ));
        assert!(!is_relevant(
            &event(modify, "/etc/pg/promptgate.log"),
            &names
        ));
        // our own reads of the file are not changes
        assert!(!is_relevant(
            &event(
                EventKind::Access(AccessKind::Open(AccessMode::Any)),
                "/etc/pg/promptgate.yaml"
            ),
            &names
        ));
        assert!(is_relevant(
            &event(
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                "/etc/pg/promptgate.yaml"
            ),
            &names
        ));
    }

    #[test]
    fn a_failed_reload_keeps_the_table_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "routes: []\n").unwrap();
        let live = Arc::new(ArcSwap::from_pointee(config::load(&path).unwrap()));
        let metrics = Arc::new(Metrics::new());
        let cache = Arc::new(Cache::new(&live.load().cache).unwrap());
        let r = Reloader::new(path.clone(), live.clone(), cache, metrics.clone());
        let before = live.load_full();

        std::fs::write(&path, "routes: [unclosed\n").unwrap();
        assert!(matches!(
            r.reload(Trigger::AdminApi),
            Err(ConfigError::Invalid { .. })
        ));
        assert!(Arc::ptr_eq(&before, &live.load_full()), "table kept");

        std::fs::write(
            &path,
            "upstreams: {u: {url: \"http://127.0.0.1:1\"}}\nroutes: [{name: r, targets: [u]}]\n",
        )
        .unwrap();
        assert_eq!(r.reload(Trigger::AdminApi).unwrap().routes, 1);
        assert_eq!(live.load().routes.len(), 1);
        let text = metrics.render();
        assert!(text.contains(r#"promptgate_config_reloads_total{result="error"} 1"#));
        assert!(text.contains(r#"promptgate_config_reloads_total{result="success"} 1"#));
    }
}
