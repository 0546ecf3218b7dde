//! What the built-in dashboard shows: recent requests and a 15-minute time series kept in
//! process, and the `GET /stats` snapshot read from the metrics and live state.
//!
//! Fed, never reaching in: the proxy's `logging` phase reports each request to
//! [`crate::metrics::Metrics::request_done`], which pushes it onto [`RecentRequests`]; the
//! [`Sampler`] background task reads the metrics registry into [`Series`]; the admin listener
//! asks [`snapshot`] for the rest.

mod read;
mod recent;
mod series;
mod snapshot;

pub use recent::RecentRequests;
pub use series::{Sampler, Series};
pub use snapshot::{snapshot, Sources};

use std::time::Instant;

/// The dashboard's in-process history, owned by [`crate::metrics::Metrics`].
#[derive(Debug)]
pub struct Activity {
    pub recent: RecentRequests,
    pub series: Series,
    started: Instant,
}

impl Activity {
    /// Time since the process started (since this was built, at start-up).
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }
}

impl Default for Activity {
    fn default() -> Activity {
        Activity {
            recent: RecentRequests::default(),
            series: Series::default(),
            started: Instant::now(),
        }
    }
}
