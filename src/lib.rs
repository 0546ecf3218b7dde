//! promptgate: a caching reverse-proxy sidecar for LLM provider APIs, built on Pingora.
//!
//! One request, one pass ([`proxy`]): match a route in the [`routing`] table, read the body
//! (bounded), rewrite it for the chosen [`endpoint`], exchange with the upstream, and relay the
//! answer chunk by chunk. The table comes from [`config`] and is swapped whole on reload.
//!
//! Module map:
//! - [`cli`] — command line: `run`, `check`, `health`.
//! - [`config`] — YAML → validated [`routing::Table`], every problem with path and line.
//! - [`routing`] — the table and route matching.
//! - [`balance`] — the order a request tries a route's targets: groups, strategy, health.
//! - [`endpoint`] — one upstream: address, DNS, injected headers, timeouts.
//! - [`providers`] — what differs per provider: how its streams end, its token usage.
//! - [`pricing`] — the price table behind the cost metrics.
//! - [`proxy`] — the Pingora `ProxyHttp` implementation and the upstream exchange.
//! - [`cache`] — the response cache: keys, entries, stores.
//! - [`request_framing`], [`request_path`] — hostile input: ambiguous framing refused, paths
//!   normalised before routing so nothing forwarded escapes a route's base path.
//! - [`reload`] — config reload (file watch, SIGHUP, `POST /reload`): validate, then swap.
//! - [`metrics`] — every Prometheus metric, in one registry.
//! - [`logging`] — log format (text or JSON) and the access log line.
//! - [`admin`] — the admin listener: health, readiness, metrics, cache stats and purge,
//!   config, reload, the dashboard.
//! - [`stats`] — what the dashboard shows: recent requests, a 15-minute series, `GET /stats`.
//! - [`dashboard`] — the dashboard page and its assets, embedded in the binary.
//! - [`warm`] — `promptgate warm`: fill the cache from a JSONL file of requests.
//! - [`server`] — assembling and running the Pingora server, graceful shutdown.
//! - [`upgrade`] — zero-downtime upgrade: hand the listening sockets to a new process.
//! - [`systemd`] — `Type=notify` readiness (`READY=1`, `MAINPID`, `STOPPING=1`).
//! - [`logging`] — logger set-up; keeps Pingora's request-head dumps out of debug logs.
//! - [`health`] — `promptgate health`: one `GET /healthz` to the admin listener.

pub mod admin;
pub mod balance;
pub mod cache;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod endpoint;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod pricing;
pub mod providers;
pub mod proxy;
pub mod reload;
pub mod request_framing;
pub mod request_path;
pub mod routing;
pub mod server;
pub mod stats;
pub mod systemd;
pub mod upgrade;
pub mod warm;
