//! promptgate: a caching reverse-proxy sidecar for LLM provider APIs, built on Pingora.
//!
//! One request, one pass ([`proxy`]): match a route ([`routing`]) in the current
//! [`runtime::Runtime`], read the body (bounded), look it up in the [`cache`], or rewrite it for
//! the chosen upstream, exchange, and relay the answer chunk by chunk while recording it. The
//! runtime is built from a validated [`config`] and swapped whole on reload ([`server`]).
//!
//! Module map (folders show the design; dependencies point down this list's arrows):
//! - [`cli`] — command line: `run`, `check`, `key`, `warm`, `health`.
//! - [`server`] — the process and its lifecycle: assembling the Pingora server, reload (file
//!   watch, SIGHUP, `POST /reload`), zero-downtime upgrade, systemd readiness, requests in flight.
//! - [`admin`] — the admin listener: health, readiness, metrics, cache stats and purge, config,
//!   reload. Fed shared state; never reaches into the proxy.
//! - [`proxy`] — the Pingora `ProxyHttp` phases for one request, hostile-input checks, the
//!   upstream exchange, retries and failover, relaying.
//! - [`runtime`] — the running state built from one validated config (routes, upstreams,
//!   prices, …): [`runtime::load`] for a file, [`runtime::build`] for a spec.
//! - [`routing`] — routes and matching; [`routing::balance`] (target order: groups, strategy,
//!   health); [`routing::upstream`] (one upstream: address, DNS, injected headers, timeouts).
//! - [`cache`] — the response cache: keys, entries, recording, single-flight, stores. Knows no
//!   HTTP session.
//! - [`providers`] — what differs per provider: how its streams end, its token usage.
//! - [`metrics`] — every Prometheus metric, in one registry; fed by the proxy's logging phase.
//! - [`pricing`] — the price table behind the cost metrics.
//! - [`logging`] — logger set-up (text or JSON), the access log line.
//! - [`config`] — plain data: YAML → `${ENV}` → typed sections → validated [`config::Spec`]
//!   (per-route cache settings resolved, Redis URLs parsed), every problem with path and line.
//!   Imports no runtime module.

pub mod admin;
pub mod cache;
pub mod cli;
pub mod config;
pub mod logging;
pub mod metrics;
pub mod pricing;
pub mod providers;
pub mod proxy;
pub mod routing;
pub mod runtime;
pub mod server;
