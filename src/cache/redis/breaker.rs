//! The circuit breaker: after a failure, fail fast for a period, then let one probe through;
//! its success closes the circuit. Lock-free (one atomic); time is passed in.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Whether Redis is being asked at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisState {
    /// Operations go to Redis.
    Up,
    /// A recent failure: operations fail fast until a probe succeeds.
    CircuitOpen,
}

/// Circuit breaker state in one atomic: the instant (ms since the store's start) until which the
/// circuit is open, or 0 when closed. Time is passed in, so tests can use a fake clock.
#[derive(Debug)]
pub(super) struct Breaker {
    open_until_ms: AtomicU64,
    period_ms: u64,
}

/// How an operation was let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// The circuit is closed.
    Closed,
    /// The probe after an open period; carries the `open_until` it armed, so that only this
    /// probe's success can close the circuit.
    Probe(u64),
}

/// What a recorded outcome changed, so the caller logs transitions once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transition {
    None,
    Opened,
    Closed,
}

impl Breaker {
    pub(super) fn new(period: Duration) -> Self {
        Breaker {
            open_until_ms: AtomicU64::new(0),
            period_ms: u64::try_from(period.as_millis()).unwrap_or(u64::MAX / 2),
        }
    }

    /// How long the circuit stays open after a failure.
    pub(super) fn period(&self) -> Duration {
        Duration::from_millis(self.period_ms)
    }

    /// 0 means "closed", so an open circuit is never encoded as 0.
    fn open_until(&self, now_ms: u64) -> u64 {
        now_ms.saturating_add(self.period_ms).max(1)
    }

    /// `None`: fail fast. Only one caller wins the probe once the period has passed: it
    /// re-arms the period before trying, so concurrent callers keep failing fast meanwhile.
    pub(super) fn admit(&self, now_ms: u64) -> Option<Admission> {
        let until = self.open_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return Some(Admission::Closed);
        }
        if now_ms < until {
            return None;
        }
        let armed = self.open_until(now_ms);
        self.open_until_ms
            .compare_exchange(until, armed, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Admission::Probe(armed))
    }

    /// A success closes the circuit only when it was the probe and nothing failed since; a
    /// success of an operation started before the circuit opened must not close it.
    pub(super) fn succeeded(&self, admission: Admission) -> Transition {
        match admission {
            Admission::Closed => Transition::None,
            Admission::Probe(armed) => match self.open_until_ms.compare_exchange(
                armed,
                0,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => Transition::Closed,
                Err(_) => Transition::None,
            },
        }
    }

    pub(super) fn failed(&self, now_ms: u64) -> Transition {
        let previous = self
            .open_until_ms
            .swap(self.open_until(now_ms), Ordering::AcqRel);
        if previous == 0 {
            Transition::Opened
        } else {
            Transition::None
        }
    }

    pub(super) fn state(&self) -> RedisState {
        if self.open_until_ms.load(Ordering::Acquire) == 0 {
            RedisState::Up
        } else {
            RedisState::CircuitOpen
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_fails_fast_then_probes_once() {
        let b = Breaker::new(Duration::from_millis(300));
        assert_eq!(b.admit(0), Some(Admission::Closed));
        assert_eq!(b.failed(10), Transition::Opened);
        assert_eq!(b.state(), RedisState::CircuitOpen);
        // Still open: fail fast.
        assert_eq!(b.admit(100), None);
        assert_eq!(b.admit(309), None);
        // Period over: exactly one probe goes through.
        let probe = b.admit(310).expect("probe");
        assert_eq!(probe, Admission::Probe(610));
        assert_eq!(b.admit(311), None);
        // The probe fails: open again, logged only once (no new "Opened").
        assert_eq!(b.failed(320), Transition::None);
        assert_eq!(b.state(), RedisState::CircuitOpen);
        assert_eq!(b.admit(500), None);
        // Next probe succeeds: closed.
        let probe = b.admit(620).expect("probe");
        assert_eq!(b.succeeded(probe), Transition::Closed);
        assert_eq!(b.state(), RedisState::Up);
        assert_eq!(b.admit(621), Some(Admission::Closed));
    }

    #[test]
    fn stale_success_does_not_close_the_circuit() {
        let b = Breaker::new(Duration::from_millis(300));
        // An operation admitted while closed...
        let early = b.admit(0).unwrap();
        // ...another fails meanwhile...
        assert_eq!(b.failed(5), Transition::Opened);
        // ...then the first succeeds: the circuit stays open.
        assert_eq!(b.succeeded(early), Transition::None);
        assert_eq!(b.state(), RedisState::CircuitOpen);

        // A probe whose period was re-armed by another failure does not close it either.
        let probe = b.admit(400).unwrap();
        assert_eq!(b.failed(410), Transition::None);
        assert_eq!(b.succeeded(probe), Transition::None);
        assert_eq!(b.state(), RedisState::CircuitOpen);
    }

    #[test]
    fn zero_period_still_encodes_open() {
        let b = Breaker::new(Duration::ZERO);
        assert_eq!(b.failed(0), Transition::Opened);
        assert_eq!(b.state(), RedisState::CircuitOpen);
        assert!(matches!(b.admit(1), Some(Admission::Probe(_))));
    }
}
