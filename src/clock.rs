//! Wall-clock time since the Unix epoch, the one reading of it: the stored-at stamps of cache
//! entries, the timestamps metrics report.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time since the Unix epoch; zero if the system clock is set before it.
pub(crate) fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

/// Whole seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    since_epoch().as_secs()
}
