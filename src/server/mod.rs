//! Assembles and runs the Pingora server: the proxy listener, the admin listener, the reload
//! service, and a shutdown that drains in-flight requests instead of sleeping a fixed grace period
//! (on SIGTERM, and after handing the listeners to a new process on SIGQUIT/SIGUSR2).

pub mod inflight;
pub mod reload;
pub mod systemd;
pub mod upgrade;
pub mod watch;

use crate::admin::Admin;
use crate::cache::Cache;
use crate::limits::Limiter;
use crate::metrics::Metrics;
use crate::proxy::{Proxy, ProxyPort};
use crate::runtime::Runtime;
use crate::stats::Sampler;
use anyhow::{bail, Context};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use inflight::Inflight;
use pingora::apps::http_app::HttpServer;
use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use reload::{ReloadService, Reloader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use systemd::ReadyNotifier;
use tokio::signal::unix::{signal, Signal, SignalKind};
use upgrade::{Handover, UpgradeError};

/// After handing the sockets over, the old process keeps accepting this long too, so that the
/// new one has surely started its accept loops before the old one stops (connections wait in the
/// shared backlog either way; this only keeps that wait short).
const HANDOVER_OVERLAP: Duration = Duration::from_millis(500);
/// After the accept loops stop, a connection accepted just before may not have sent its request
/// yet (so it is not counted in flight): wait this long before trusting an in-flight count of 0.
const SETTLE: Duration = Duration::from_millis(200);

/// Socket buffers of client connections. No read buffer: Pingora reads the request head and
/// body into buffers of its own, so a read buffer would only add a copy and 16 KiB of zeroed
/// memory per connection (1,000 keep-alive connections: 53 → 46 MiB RSS). An
/// 8 KiB write buffer sends a response head and a body of up to ≈ 8 KB in one `sendto` (a
/// cache hit's ~2 KB answer; Pingora's default 1,460 bytes took two) at half the memory of
/// 16 KiB (closed loop at 1,000 connections: 62 → 53 MiB). Measured in BENCHMARKS.md.
fn client_buffers() -> L4BufferSettings {
    L4BufferSettings::new(0, 8 * 1024)
}

/// Fails fast when `addr` cannot be bound (Pingora would retry silently for 30 s).
fn ensure_bindable(addr: SocketAddr, field: &str) -> anyhow::Result<()> {
    match TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            bail!("cannot listen on {addr} ({field}): the address is already in use by another process")
        }
        Err(e) => Err(e).with_context(|| format!("cannot listen on {addr} ({field})")),
    }
}

/// Runs promptgate with `table`, loaded from `config_path`, until SIGTERM/SIGINT, or until its
/// listeners are handed to a new process (SIGQUIT/SIGUSR2). The file is reloaded on change,
/// SIGHUP and `POST /reload`. With `upgrade`, the listening sockets are taken over from the
/// running process instead of bound. Returns once every listener is closed.
pub fn run(runtime: Runtime, config_path: PathBuf, upgrade: bool) -> anyhow::Result<()> {
    if !upgrade {
        // Taken over on upgrade, so only a fresh start checks that the ports are free.
        ensure_bindable(runtime.listen, "listen")?;
        ensure_bindable(runtime.admin, "admin")?;
    }
    let listen = runtime.listen;
    let admin = runtime.admin;
    let upgrade_sock = runtime.upgrade_sock.clone();

    let conf = ServerConf {
        threads: runtime.threads,
        // One thread: a single-threaded runtime (no work-stealing machinery), 5 µs less CPU
        // per pass-through request. Several: work stealing stays, because without it a thread
        // that the OS preempts leaves its connections waiting, and on a shared machine that
        // cost more than stealing does (issue 22; numbers in BENCHMARKS.md).
        work_stealing: runtime.threads > 1,
        // Our shutdown watcher drains before Pingora starts its own (fixed-length) grace period.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: upgrade_sock.clone(),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    // With `upgrade`, this blocks until the old process sends its sockets (Pingora waits about
    // 5 s, then exits the process with status 1). Said only if it takes a while: with SIGUSR2
    // the old process sends them at once.
    let waiting = upgrade.then(|| upgrade::WaitHint::after(Duration::from_secs(1), &upgrade_sock));
    server.bootstrap();
    drop(waiting);

    let metrics = Arc::new(Metrics::new());
    metrics.config_loaded();
    let cache = Arc::new(Cache::new(&runtime.cache).context("cannot set up the cache")?);
    let shutdown_cache = cache.clone();
    let runtime = Arc::new(ArcSwap::from_pointee(runtime));
    let reloader = Arc::new(Reloader::new(
        config_path.clone(),
        runtime.clone(),
        cache.clone(),
        metrics.clone(),
    ));
    // The listeners wait for this service to be ready: by then SIGHUP has a handler, so a
    // SIGHUP sent to a process that accepts connections reloads rather than kills it.
    let reload = server.add_service(background_service(
        "promptgate reload",
        ReloadService::new(reloader.clone()),
    ));

    // The dashboard's 15-minute series, sampled from the metrics.
    server.add_service(background_service(
        "promptgate stats",
        Sampler::new(metrics.clone()),
    ));

    let limiter = Arc::new(Limiter::new(cache.clone()));
    let proxy = Proxy::new(
        runtime.clone(),
        cache.clone(),
        metrics.clone(),
        limiter.clone(),
    );
    let inflight = proxy.inflight.clone();
    let draining = proxy.draining.clone();

    let mut service = Service::new("promptgate proxy".to_string(), ProxyPort::new(proxy));
    service.add_listener(ListenerConfig::tcp(listen.to_string()).l4_buffer(client_buffers()));
    let handover = Handover::new();
    let proxy_handle = server.add_service(handover.wrap(service));
    proxy_handle.add_dependency(&reload);

    let mut admin_service = Service::new(
        "promptgate admin".to_string(),
        HttpServer::new_app(Admin {
            reloader,
            metrics,
            cache,
            inflight: inflight.clone(),
            limiter: limiter.clone(),
        }),
    );
    admin_service.add_tcp(&admin.to_string());
    admin_service.threads = Some(1);
    let admin_handle = server.add_service(handover.wrap(admin_service));
    admin_handle.add_dependency(&reload);

    let started = started_line(&runtime.load(), &config_path, upgrade);
    let ready = server.add_service(background_service(
        "promptgate ready",
        ReadyNotifier {
            addrs: vec![listen, admin],
            upgrade,
            line: started,
        },
    ));
    ready.add_dependencies([&proxy_handle, &admin_handle]);

    server.run(RunArgs {
        shutdown_signal: Box::new(DrainingShutdown {
            cache: shutdown_cache,
            limiter,
            inflight,
            draining,
            runtime,
            handover,
            upgrade_sock,
            config_path,
        }),
    });
    log::info!("promptgate stopped");
    Ok(())
}

/// The one line start-up logs at `info`, once both listeners accept connections:
/// `promptgate 0.1.0 listening on 127.0.0.1:8080 (admin 127.0.0.1:9090), 4 routes, cache: memory,
/// config conf/promptgate.yaml (watched)`.
fn started_line(runtime: &Runtime, config_path: &Path, upgrade: bool) -> String {
    let watched = if runtime.reload.watch {
        "watched"
    } else {
        "not watched: reload with SIGHUP or POST /reload"
    };
    let taken_over = if upgrade {
        "; listening sockets taken over from the previous process"
    } else {
        ""
    };
    format!(
        "promptgate {} listening on {} (admin {}), {}, config {} ({watched}){taken_over}",
        env!("CARGO_PKG_VERSION"),
        runtime.listen,
        runtime.admin,
        runtime.summary(),
        config_path.display(),
    )
}

/// SIGTERM: stop keeping connections alive, wait until no request is in flight (at most the
/// grace period), then let Pingora close the listeners. SIGINT: stop now. SIGQUIT: hand the
/// listening sockets to a new process (`run --upgrade`), stop accepting, then drain the same way.
/// SIGUSR2: start that new process ourselves (the binary at our own path, same config), then as
/// SIGQUIT — the upgrade systemd can run inside the unit.
struct DrainingShutdown {
    /// Its background Redis writes are waited for too: they carry answers already paid for.
    cache: Arc<Cache>,
    /// Its rate-limit charges on their way to Redis are waited for too.
    limiter: Arc<Limiter>,
    inflight: Arc<Inflight>,
    draining: Arc<AtomicBool>,
    /// Read at SIGTERM, so a reloaded `shutdown_grace` applies.
    runtime: Arc<ArcSwap<Runtime>>,
    handover: Arc<Handover>,
    upgrade_sock: String,
    config_path: PathBuf,
}

#[async_trait]
impl ShutdownSignalWatch for DrainingShutdown {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int), Ok(mut quit), Ok(mut usr2)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
            signal(SignalKind::user_defined2()),
        ) else {
            log::error!("cannot install signal handlers; shutting down");
            return ShutdownSignal::FastShutdown;
        };
        loop {
            tokio::select! {
                _ = int.recv() => return self.stop_now("SIGINT"),
                _ = term.recv() => {
                    systemd::notify(&[sd_notify::NotifyState::Stopping]);
                    self.draining.store(true, Ordering::Relaxed);
                    log::info!("SIGTERM: {}", self.draining_line());
                    return self.drain(&mut int, Duration::ZERO).await;
                }
                _ = quit.recv() => {
                    if let Some(signal) = self.hand_over(&mut int, "SIGQUIT", None).await {
                        return signal;
                    }
                }
                _ = usr2.recv() => {
                    match self.spawn_successor() {
                        Ok(pid) => {
                            if let Some(signal) = self.hand_over(&mut int, "SIGUSR2", Some(pid)).await {
                                return signal;
                            }
                        }
                        Err(e) => log::error!("SIGUSR2: {e:#}; still serving"),
                    }
                }
            }
        }
    }
}

impl DrainingShutdown {
    /// `draining N in-flight request(s), at most 10s (shutdown_grace)`: what a drain about to
    /// start will do, with the grace in force (a reload may have changed it).
    fn draining_line(&self) -> String {
        format!(
            "draining {} in-flight request(s), at most {} (shutdown_grace)",
            self.inflight.count(),
            humantime::format_duration(self.runtime.load().shutdown_grace)
        )
    }

    /// SIGINT: no drain, the requests in flight are cut.
    fn stop_now(&self, signal: &str) -> ShutdownSignal {
        match self.inflight.count() {
            0 => log::info!("{signal}: stopping now"),
            n => log::warn!("{signal}: stopping now, cutting {n} in-flight request(s)"),
        }
        ShutdownSignal::FastShutdown
    }

    /// Sends the sockets, keeps accepting for [`HANDOVER_OVERLAP`], stops accepting and drains.
    /// `None` when no process took the sockets: this one keeps serving, nothing is lost.
    /// `signal` and the new process's `pid` (when we started it) are for the one line it logs.
    async fn hand_over(
        &self,
        int: &mut Signal,
        signal: &str,
        pid: Option<u32>,
    ) -> Option<ShutdownSignal> {
        match self.handover.send(&self.upgrade_sock).await {
            Ok(_) => {}
            Err(UpgradeError::NoSockets) => {
                // Cannot happen once the listeners run; Pingora's own path is the fallback.
                log::warn!("no listening sockets registered; falling back to Pingora's upgrade");
                return Some(ShutdownSignal::GracefulUpgrade);
            }
            Err(e) => {
                log::error!("{signal}: {e}; still serving");
                return None;
            }
        }
        // Keep-alive off first: during the overlap every busy connection gets its last answer
        // with `Connection: close` and moves to the new process. Stopping the listeners closes
        // idle keep-alive connections, and a client may be sending on one just then; after the
        // overlap only connections idle for all of it are left to that race.
        self.draining.store(true, Ordering::Relaxed);
        tokio::select! {
            _ = tokio::time::sleep(HANDOVER_OVERLAP) => {}
            _ = int.recv() => return Some(self.stop_now("SIGINT")),
        }
        self.handover.stop_accepting();
        let new_process = match pid {
            Some(pid) => format!("the new process (pid {pid})"),
            None => "the new process".into(),
        };
        log::info!(
            "{signal}: listening sockets handed to {new_process} via {}; {}",
            self.upgrade_sock,
            self.draining_line()
        );
        Some(self.drain(int, SETTLE).await)
    }

    /// Requests in flight, plus cache writes and rate-limit charges still on their way to Redis.
    fn outstanding(&self) -> usize {
        self.inflight.count()
            + self.cache.redis().map_or(0, |r| r.background_writes())
            + self.limiter.pending_charges()
    }

    /// Waits at least `settle`, then until no request (or Redis write) is in flight, at most
    /// `shutdown_grace`.
    async fn drain(&self, int: &mut Signal, settle: Duration) -> ShutdownSignal {
        let grace = self.runtime.load().shutdown_grace;
        let started = Instant::now();
        let deadline = started + grace.max(settle);
        while (self.outstanding() > 0 || started.elapsed() < settle) && Instant::now() < deadline {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = int.recv() => return self.stop_now("SIGINT"),
            }
        }
        match self.inflight.count() {
            0 => log::debug!("drained in {:?}", started.elapsed()),
            n => log::warn!(
                "shutdown_grace ({}) is over with {n} request(s) still in flight: cutting them",
                humantime::format_duration(grace)
            ),
        }
        ShutdownSignal::GracefulTerminate
    }

    /// Starts `promptgate run --config <ours> --upgrade` from the path of our own binary (which
    /// an upgrade has replaced), inheriting our environment (`NOTIFY_SOCKET` included, so it can
    /// tell systemd it is the new main process), stdout and stderr.
    fn spawn_successor(&self) -> anyhow::Result<u32> {
        let exe = own_path().context("cannot find our own binary")?;
        let mut child = Command::new(&exe)
            .arg("run")
            .arg("--config")
            .arg(&self.config_path)
            .arg("--upgrade")
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        let pid = child.id();
        log::debug!("started {} (pid {pid})", exe.display());
        // Reap it if it fails while we still run (e.g. an invalid config), so it is logged and
        // leaves no zombie; once it has taken over it outlives us and this thread.
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                log::warn!("the upgrade process (pid {pid}) exited: {status}");
            }
        });
        Ok(pid)
    }
}

/// The path our binary was started from. Once an upgrade has replaced the file, Linux reports
/// `/proc/self/exe` as `PATH (deleted)`; the new binary is at `PATH`.
fn own_path() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let text = exe.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(path) => Path::new(path).to_path_buf(),
        None => exe,
    })
}
