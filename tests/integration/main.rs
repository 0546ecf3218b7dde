//! Integration tests: the real promptgate binary on loopback, in front of a mock upstream.
//! One test binary, so Pingora links once.

mod support;

mod forwarding;
mod lifecycle;
mod redis_store;
mod streaming;
mod upstream_faults;
