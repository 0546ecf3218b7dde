//! The config file watcher: raises [`Trigger::FileChange`] on a channel when the config file
//! has changed. It never parses the config or touches the running state; the reload does that.
//!
//! It watches the file's directory, not the file: editors that save by renaming a temp file
//! over it, and Kubernetes ConfigMap updates (an atomic rename of the `..data` symlink the file
//! points through), replace the file's inode, which a watch on the file itself would lose.
//! On Linux it asks the kernel (inotify) only for the events that can change the file —
//! close-after-write, create, delete, rename in or out — and never for plain writes or opens,
//! so a busy file beside the config (a log, say) costs nothing: no event is queued for it at
//! all. An event that names another file is dropped when read.

use super::reload::Trigger;
use crate::metrics::WatchCounters;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Quiet time after the last file event before signalling: editors and `kubectl` touch the
/// file (or its directory) several times per save, and the reload should read the finished
/// result once.
const DEBOUNCE: Duration = Duration::from_millis(250);
/// Longest a steady stream of events can postpone the signal.
const DEBOUNCE_MAX: Duration = Duration::from_secs(2);
/// The symlink a Kubernetes ConfigMap volume flips to publish a new version; the config file
/// itself is a symlink through it, so its own name never shows up in those events.
const CONFIGMAP_DATA_LINK: &str = "..data";

/// A running watch of one config file. Dropping it stops the watch.
pub struct FileWatch {
    task: JoinHandle<()>,
}

impl Drop for FileWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FileWatch {
    /// Starts watching `path`; each change (debounced, and only when the content differs from
    /// the previous change's) sends [`Trigger::FileChange`] on `signal`. Every event received
    /// is counted in `counters`. Must be called on a tokio runtime.
    pub fn start(
        path: &Path,
        signal: mpsc::Sender<Trigger>,
        counters: WatchCounters,
    ) -> io::Result<FileWatch> {
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
        let events = DirEvents::open(&dir, names, counters)?;
        log::debug!(
            "watching {} for config changes (in {})",
            path.display(),
            dir.display()
        );
        let task = tokio::spawn(watch(events, path.to_path_buf(), signal));
        Ok(FileWatch { task })
    }
}

/// The watch loop: wait for an event about the file, let it settle, signal if the content
/// changed. Ends when the receiver is gone or the watch broke.
async fn watch(mut events: DirEvents, path: PathBuf, signal: mpsc::Sender<Trigger>) {
    let mut last_content = None;
    loop {
        let mut ended = events.about_file().await.err();
        let deadline = Instant::now() + DEBOUNCE_MAX;
        while ended.is_none() {
            let quiet_until = (Instant::now() + DEBOUNCE).min(deadline);
            match tokio::time::timeout_at(quiet_until, events.about_file()).await {
                Ok(Ok(())) if Instant::now() < deadline => continue,
                Ok(Err(e)) => ended = Some(e),
                _ => break,
            }
        }
        // The event that ended the watch (the directory went away) is a change too. A full
        // channel means a change is already waiting to be reloaded, and that reload reads the
        // file as it is by then: one pending signal is enough.
        if content_unchanged(&path, &mut last_content) {
            log::debug!("config file touched but its content is unchanged; not reloading");
        } else if let Err(mpsc::error::TrySendError::Closed(_)) =
            signal.try_send(Trigger::FileChange)
        {
            return;
        }
        if let Some(e) = ended {
            log::warn!(
                "stopped watching {} ({e}); reload with SIGHUP or POST /reload",
                path.display()
            );
            return;
        }
    }
}

/// True when the file holds the same bytes as at the previous change. An unreadable file
/// counts as changed, so that the reload reports why.
fn content_unchanged(path: &Path, last: &mut Option<blake3::Hash>) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        *last = None;
        return false;
    };
    let hash = blake3::hash(&bytes);
    let unchanged = *last == Some(hash);
    *last = Some(hash);
    unchanged
}

#[cfg(target_os = "linux")]
use inotify_events::DirEvents;
#[cfg(not(target_os = "linux"))]
use notify_events::DirEvents;

/// inotify, with a mask that leaves out plain writes (`IN_MODIFY`), opens, reads and
/// attribute changes: the kernel queues nothing, and so wakes nobody, for those.
#[cfg(target_os = "linux")]
mod inotify_events {
    use super::WatchCounters;
    use futures_util::StreamExt;
    use inotify::{EventMask, EventStream, Inotify, WatchMask};
    use std::ffi::OsString;
    use std::io;
    use std::path::Path;

    /// Everything that can put new content at the config's name: a writer closing it, a file
    /// or symlink renamed in (editors, the ConfigMap `..data` flip), created, or removed, and
    /// the directory itself going away.
    const MASK: WatchMask = WatchMask::CLOSE_WRITE
        .union(WatchMask::MOVED_TO)
        .union(WatchMask::MOVED_FROM)
        .union(WatchMask::CREATE)
        .union(WatchMask::DELETE)
        .union(WatchMask::DELETE_SELF)
        .union(WatchMask::MOVE_SELF);

    /// Room for a few dozen events per read (each is 16 bytes plus its name).
    const BUFFER_BYTES: usize = 4096;
    type Buffer = [u8; BUFFER_BYTES];

    pub(super) struct DirEvents {
        events: EventStream<Buffer>,
        names: Vec<OsString>,
        counters: WatchCounters,
    }

    impl DirEvents {
        pub(super) fn open(
            dir: &Path,
            names: Vec<OsString>,
            counters: WatchCounters,
        ) -> io::Result<DirEvents> {
            let inotify = Inotify::init()?;
            inotify.watches().add(dir, MASK)?;
            Ok(DirEvents {
                events: inotify.into_event_stream([0; BUFFER_BYTES])?,
                names,
                counters,
            })
        }

        /// Waits for an event about the config file. An error means the watch has ended
        /// (its directory was removed or renamed).
        pub(super) async fn about_file(&mut self) -> io::Result<()> {
            loop {
                let event = self
                    .events
                    .next()
                    .await
                    .unwrap_or_else(|| Err(io::ErrorKind::UnexpectedEof.into()))?;
                let relevant = match &event.name {
                    Some(name) => self.names.contains(name),
                    // The directory itself, or a queue overflow that may hide a change.
                    None => true,
                };
                if !relevant {
                    self.counters.other.inc();
                    continue;
                }
                self.counters.config.inc();
                if event.mask.contains(EventMask::IGNORED) {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        "its directory was removed or renamed",
                    ));
                }
                return Ok(());
            }
        }
    }
}

/// Elsewhere (macOS, BSD): the `notify` crate, with events filtered by name once delivered.
/// Compiled in tests on Linux too, so that it keeps building (only its filter is used there).
#[cfg(any(not(target_os = "linux"), test))]
#[cfg_attr(target_os = "linux", allow(dead_code))]
mod notify_events {
    use super::WatchCounters;
    use notify::event::{AccessKind, AccessMode};
    use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
    use std::ffi::OsString;
    use std::io;
    use std::path::Path;
    use tokio::sync::mpsc;

    pub(super) struct DirEvents {
        /// Dropping the watcher stops it, so it lives as long as this.
        _watcher: RecommendedWatcher,
        events: mpsc::Receiver<()>,
    }

    impl DirEvents {
        pub(super) fn open(
            dir: &Path,
            names: Vec<OsString>,
            counters: WatchCounters,
        ) -> io::Result<DirEvents> {
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
                        counters.config.inc();
                        let _ = tx.try_send(());
                    } else {
                        counters.other.inc();
                    }
                })
                .map_err(io::Error::other)?;
            watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(io::Error::other)?;
            Ok(DirEvents {
                _watcher: watcher,
                events,
            })
        }

        /// Waits for an event about the config file; an error when the watcher has stopped.
        pub(super) async fn about_file(&mut self) -> io::Result<()> {
            self.events
                .recv()
                .await
                .ok_or_else(|| io::Error::other("the watcher stopped"))
        }
    }

    /// An event that may have changed the file: it names the file (or the ConfigMap data
    /// link), or names nothing (a rescan), and is not a mere open or read.
    pub(super) fn is_relevant(event: &notify::Event, names: &[OsString]) -> bool {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use std::io::Write;

    /// Waits (at most `bound`) for a signal; `None` when none came.
    async fn signal_within(rx: &mut mpsc::Receiver<Trigger>, bound: Duration) -> Option<Trigger> {
        tokio::time::timeout(bound, rx.recv()).await.ok().flatten()
    }

    const SETTLE: Duration = Duration::from_millis(700);

    #[tokio::test]
    async fn a_log_beside_the_config_never_wakes_the_watcher() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("promptgate.yaml");
        std::fs::write(&config, "routes: []\n").unwrap();
        // A log beside the config, open for appending as a logger keeps it.
        let mut log = std::fs::File::create(dir.path().join("promptgate.log")).unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let counters = Metrics::new().config_watch_counters();
        let _watch = FileWatch::start(&config, tx, counters.clone()).unwrap();

        for i in 0..2000 {
            writeln!(log, "access log line {i}").unwrap();
        }
        log.flush().unwrap();
        // Our own reads of the config (every reload opens and reads it) are not changes.
        for _ in 0..50 {
            std::fs::read(&config).unwrap();
        }
        assert_eq!(signal_within(&mut rx, SETTLE).await, None);
        #[cfg(target_os = "linux")]
        assert_eq!(
            (counters.config.get(), counters.other.get()),
            (0, 0),
            "writes and reads beside the config woke the watcher"
        );

        // A file written whole (open, write, close) beside the config wakes the watcher (the
        // kernel cannot filter a directory watch by name), but only to be dropped: it never
        // reaches the reload.
        for i in 0..100 {
            std::fs::write(dir.path().join("state.json"), format!("{i}")).unwrap();
        }
        assert_eq!(signal_within(&mut rx, SETTLE).await, None);
        assert_eq!(counters.config.get(), 0);
        assert!(
            counters.other.get() > 0,
            "the neighbour's writes were not seen at all"
        );

        // The config itself is still seen.
        std::fs::write(&config, "routes: [] # changed\n").unwrap();
        assert_eq!(
            signal_within(&mut rx, Duration::from_secs(3)).await,
            Some(Trigger::FileChange)
        );
        assert!(counters.config.get() > 0);
    }

    #[tokio::test]
    async fn renames_deletes_and_configmap_flips_signal_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("promptgate.yaml");
        std::fs::write(&config, "a: 1\n").unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let counters = Metrics::new().config_watch_counters();
        let _watch = FileWatch::start(&config, tx, counters).unwrap();
        let bound = Duration::from_secs(3);

        // An editor: write a temp file, rename it over the config.
        std::fs::write(dir.path().join(".promptgate.yaml.tmp"), "a: 2\n").unwrap();
        std::fs::rename(dir.path().join(".promptgate.yaml.tmp"), &config).unwrap();
        assert_eq!(
            signal_within(&mut rx, bound).await,
            Some(Trigger::FileChange)
        );

        // The same bytes written again: touched, not changed.
        std::fs::write(&config, "a: 2\n").unwrap();
        assert_eq!(signal_within(&mut rx, SETTLE).await, None);

        // Removed: signalled, so the reload reports the missing file.
        std::fs::remove_file(&config).unwrap();
        assert_eq!(
            signal_within(&mut rx, bound).await,
            Some(Trigger::FileChange)
        );

        // A ConfigMap: promptgate.yaml -> ..data/promptgate.yaml, ..data -> ..v1, then ..v2.
        let publish = |version: &str, body: &str| {
            std::fs::create_dir(dir.path().join(version)).unwrap();
            std::fs::write(dir.path().join(version).join("promptgate.yaml"), body).unwrap();
            std::os::unix::fs::symlink(version, dir.path().join("..data_tmp")).unwrap();
            std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        };
        publish("..v1", "a: 3\n");
        std::os::unix::fs::symlink("..data/promptgate.yaml", &config).unwrap();
        assert_eq!(
            signal_within(&mut rx, bound).await,
            Some(Trigger::FileChange)
        );
        // Publishing and linking may have been seen as two changes; start afresh.
        tokio::time::sleep(SETTLE).await;
        while rx.try_recv().is_ok() {}
        publish("..v2", "a: 4\n");
        assert_eq!(
            signal_within(&mut rx, bound).await,
            Some(Trigger::FileChange)
        );
    }

    #[tokio::test]
    async fn a_removed_directory_signals_then_ends_the_watch() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("conf");
        std::fs::create_dir(&dir).unwrap();
        let config = dir.join("promptgate.yaml");
        std::fs::write(&config, "a: 1\n").unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let counters = Metrics::new().config_watch_counters();
        let _watch = FileWatch::start(&config, tx, counters).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            signal_within(&mut rx, Duration::from_secs(3)).await,
            Some(Trigger::FileChange)
        );
        // The task ended (and dropped its sender) instead of waiting on a dead watch.
        assert_eq!(signal_within(&mut rx, Duration::from_secs(3)).await, None);
        assert!(rx.is_closed());
    }

    #[tokio::test]
    async fn dropping_the_watch_stops_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("promptgate.yaml");
        std::fs::write(&config, "a: 1\n").unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let counters = Metrics::new().config_watch_counters();
        drop(FileWatch::start(&config, tx, counters).unwrap());
        std::fs::write(&config, "a: 2\n").unwrap();
        // The sender went with the task: the channel closes instead of signalling.
        assert_eq!(signal_within(&mut rx, Duration::from_secs(1)).await, None);
        assert!(rx.is_closed());
    }

    #[test]
    fn notify_fallback_reacts_to_the_file_and_configmap_flips_only() {
        use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
        use notify::EventKind;
        use notify_events::is_relevant;

        fn event(kind: EventKind, path: &str) -> notify::Event {
            notify::Event::new(kind).add_path(PathBuf::from(path))
        }
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
}
