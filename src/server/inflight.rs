//! Requests in flight: the proxy holds a guard per request, shutdown waits for zero, the admin
//! listener reports the count.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Counts requests in flight; shutdown waits for it to reach zero.
#[derive(Debug, Default)]
pub struct Inflight(AtomicUsize);

impl Inflight {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// Holds one unit of [`Inflight`] for as long as the request lives.
pub struct InflightGuard(Arc<Inflight>);

impl InflightGuard {
    pub fn new(inflight: &Arc<Inflight>) -> InflightGuard {
        inflight.0.fetch_add(1, Ordering::AcqRel);
        InflightGuard(inflight.clone())
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}
