//! Assembles and runs the Pingora server: the proxy listener, the admin listener, the reload
//! service, and a shutdown that drains in-flight requests instead of sleeping a fixed grace period.

use crate::admin::Admin;
use crate::cache::Cache;
use crate::metrics::Metrics;
use crate::proxy::{Inflight, Proxy};
use crate::reload::{ReloadService, Reloader};
use crate::routing::Table;
use anyhow::{bail, Context};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::http_app::HttpServer;
use pingora::apps::HttpServerOptions;
use pingora::connectors::http::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::proxy::ProxyServiceBuilder;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};

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

/// Runs promptgate with `table`, loaded from `config_path`, until SIGTERM/SIGINT. The file is
/// reloaded on change, SIGHUP and `POST /reload`. Returns once every listener is closed.
pub fn run(table: Table, config_path: PathBuf) -> anyhow::Result<()> {
    ensure_bindable(table.listen, "listen")?;
    ensure_bindable(table.admin, "admin")?;
    let listen = table.listen;
    let admin = table.admin;

    let conf = ServerConf {
        threads: table.threads,
        // Our shutdown watcher drains before Pingora starts its own (fixed-length) grace period.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let connector = Connector::new(Some(ConnectorOptions::from_server_conf(
        &server.configuration,
    )));
    let metrics = Arc::new(Metrics::new());
    metrics.config_loaded();
    let cache = Arc::new(Cache::new(&table.cache).context("cannot set up the cache")?);
    let table = Arc::new(ArcSwap::from_pointee(table));
    let reloader = Arc::new(Reloader::new(
        config_path,
        table.clone(),
        cache.clone(),
        metrics.clone(),
    ));
    // The listeners wait for this service to be ready: by then SIGHUP has a handler, so a
    // SIGHUP sent to a process that accepts connections reloads rather than kills it.
    let reload = server.add_service(background_service(
        "promptgate reload",
        ReloadService::new(reloader.clone()),
    ));

    let proxy = Proxy::new(table.clone(), cache.clone(), connector, metrics.clone());
    let inflight = proxy.inflight.clone();
    let draining = proxy.draining.clone();

    let mut server_options = HttpServerOptions::default();
    server_options.h2c = true; // HTTP/1.1 and h2 prior-knowledge on one plaintext port
    let mut service = ProxyServiceBuilder::new(&server.configuration, proxy)
        .name("promptgate proxy")
        .server_options(server_options)
        .build();
    service.add_tcp(&listen.to_string());
    server.add_service(service).add_dependency(&reload);

    let mut admin_service = Service::new(
        "promptgate admin".to_string(),
        HttpServer::new_app(Admin {
            reloader,
            metrics,
            cache,
            inflight: inflight.clone(),
        }),
    );
    admin_service.add_tcp(&admin.to_string());
    admin_service.threads = Some(1);
    server.add_service(admin_service).add_dependency(&reload);

    log::info!(
        "promptgate {} listening on {listen} (admin {admin})",
        env!("CARGO_PKG_VERSION")
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(DrainingShutdown {
            inflight,
            draining,
            table,
        }),
    });
    Ok(())
}

/// SIGTERM: stop keeping connections alive, wait until no request is in flight (at most the
/// grace period), then let Pingora close the listeners. SIGINT: stop now. SIGQUIT: hand the
/// listening sockets to a new process (zero-downtime upgrade).
struct DrainingShutdown {
    inflight: Arc<Inflight>,
    draining: Arc<AtomicBool>,
    /// Read at SIGTERM, so a reloaded `shutdown_grace` applies.
    table: Arc<ArcSwap<Table>>,
}

#[async_trait]
impl ShutdownSignalWatch for DrainingShutdown {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            log::error!("cannot install signal handlers; shutting down");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = int.recv() => ShutdownSignal::FastShutdown,
            _ = quit.recv() => ShutdownSignal::GracefulUpgrade,
            _ = term.recv() => {
                self.draining.store(true, Ordering::Relaxed);
                let grace = self.table.load().shutdown_grace;
                let deadline = Instant::now() + grace;
                log::info!("SIGTERM: draining {} in-flight request(s), at most {grace:?}", self.inflight.count());
                while self.inflight.count() > 0 && Instant::now() < deadline {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                        _ = int.recv() => return ShutdownSignal::FastShutdown,
                    }
                }
                if self.inflight.count() > 0 {
                    log::warn!("grace period over with {} request(s) in flight", self.inflight.count());
                }
                ShutdownSignal::GracefulTerminate
            }
        }
    }
}
