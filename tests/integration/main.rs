//! Integration tests: the real promptgate binary on loopback, in front of a mock upstream.
//! One test binary, so Pingora links once.

mod support;

mod cache;
mod forwarding;
mod lifecycle;
mod operations;
mod reload;
mod streaming;
mod upstream_faults;
