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
//! - [`proxy`] — one request from its head to its log line (served on Pingora's
//!   `HttpServerApp`): hostile-input checks, the cache step, the upstream exchange, retries and
//!   failover, relaying.
//! - [`runtime`] — the running state built from one validated config (routes, upstreams,
//!   prices, …): [`runtime::load`] for a file, [`runtime::build`] for a spec.
//! - [`routing`] — routes and matching; [`routing::balance`] (target order: groups, strategy,
//!   health); [`routing::upstream`] (one upstream: address, DNS, injected headers, timeouts);
//!   [`routing::pool`] (its connections: HTTP/1.1 or h2, pool sizes, trust anchors).
//! - [`body`] — a request body parsed once: its JSON tree, read for the model, the cache key's
//!   canonical form and the per-target model rewrite.
//! - [`cache`] — the response cache: keys, entries, recording, single-flight, stores. Knows no
//!   HTTP session.
//! - [`limits`] — rate limits and budgets per credential or route: counters in memory or in the
//!   cache's Redis, kept across reloads.
//! - [`providers`] — what differs per provider: what a body is ([`providers::BodyFormat`]),
//!   whether it is a whole answer ([`providers::Verdict`]: successful ends, errors, refusals per
//!   format), its token usage (prompt-cache reads and writes apart); read once as it passes
//!   ([`providers::ResponseReader`]). On the request side, Anthropic's prompt-cache breakpoints
//!   ([`providers::anthropic`]).
//! - [`metrics`] — every Prometheus metric, in one registry; fed by the proxy's logging phase.
//! - [`pricing`] — the price table behind the cost metrics (prompt-cache reads and writes
//!   included).
//! - [`stats`] — what the dashboard shows: recent requests, a 15-minute series, `GET /stats`;
//!   fed by [`metrics`].
//! - [`dashboard`] — the dashboard page and its assets, embedded in the binary.
//! - [`logging`] — logger set-up (text or JSON), the access log line.
//! - [`config`] — plain data: YAML → `${ENV}` → typed sections → validated [`config::Spec`]
//!   (per-route cache settings resolved, Redis URLs parsed), every problem with path and line.
//!   Imports no runtime module.
//! - Leaves, importing nothing of the crate: [`headers`] (hop-by-hop, not injectable, not
//!   replayed), [`json_error`] (the `{"error":{"type","message"}}` body), [`clock`] (Unix time),
//!   [`model_table`] (values by model-name pattern: prices, prompt-cache minimums).
//!
//! Public (`pub`) are only the modules the binary (`main.rs`), `fuzz/` and `tests/integration`
//! reach; the rest is `pub(crate)`.

pub(crate) mod admin;
pub mod body;
pub mod cache;
pub mod cli;
pub(crate) mod clock;
pub mod config;
pub(crate) mod dashboard;
pub(crate) mod headers;
pub(crate) mod json_error;
// Public for tests/integration (the Redis script checked against the arithmetic) and the
// bench_limits example.
pub mod limits;
pub mod logging;
pub(crate) mod metrics;
pub(crate) mod model_table;
pub(crate) mod pricing;
pub mod providers;
pub mod proxy;
pub(crate) mod routing;
pub mod runtime;
// Public only until server::reload::RESTART_FIELDS, a list nothing reads, is used or dropped
// (as pub(crate) it is dead code).
pub mod server;
pub(crate) mod stats;
