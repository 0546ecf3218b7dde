//! The limit arithmetic both stores run: GCRA for requests and tokens, a UTC-day budget for USD.
//!
//! All times are integer microseconds since the Unix epoch; money is integer nano-USD, so two
//! sidecars (or the memory store and the Redis script in `redis.rs`, which repeats these steps
//! line for line) always agree exactly. Every quantity stays below 2^53, so Lua's doubles hold
//! them exactly too (see the bounds on [`Params`]).
//!
//! - **Requests** (GCRA, Generic Cell Rate Algorithm): a request advances the bucket's
//!   *theoretical arrival time* (TAT) by one emission interval `I = 60 s / rpm`; it is admitted
//!   while `TAT - now ≤ rpm × I` (≈ one minute). So `rpm` requests may arrive at once, then one
//!   every `I`: a sliding minute without the memory of a log. A refused request costs nothing.
//! - **Tokens** (GCRA with debt): usage is only known after the answer, so a charge of `n`
//!   tokens advances the token TAT by `n × 60 s / tpm` unconditionally (it may overdraw), and a
//!   request is admitted while the token TAT is less than a minute ahead of now.
//! - **USD**: nano-USD spent on the current UTC day; admitted while below the budget. The day
//!   changes at 00:00 UTC, and the first charge or check of a new day starts from zero.
//!
//! A TAT is a time, so it means "n requests (tokens) counted" only for the rate it was made
//! with; the state keeps that rate, and when a reload changes the limit the TAT is rescaled so
//! the counted requests and tokens carry over (2 of 2 used becomes 2 of 600 used, not "full").

/// One minute, in microseconds.
pub const MINUTE_US: i64 = 60_000_000;
/// One day, in microseconds.
pub const DAY_US: i64 = 86_400_000_000;

/// Largest `requests_per_minute` (one a microsecond at most).
pub const MAX_RPM: u64 = 60_000_000;
/// Largest `tokens_per_minute`; `(MINUTE_US) × tpm` stays below 2^53.
pub const MAX_TPM: u64 = 100_000_000;
/// Largest token count one charge takes into account; `n × MINUTE_US` stays below 2^53.
pub const MAX_CHARGE_TOKENS: u64 = 100_000_000;
/// Largest daily budget and largest single charge, in nano-USD (one million US dollars).
pub const MAX_NANO_USD: u64 = 1_000_000_000_000_000;

/// A route's limits in the units of the arithmetic; 0 means "no such limit".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Params {
    /// Requests per minute, at most [`MAX_RPM`].
    pub rpm: u64,
    /// Tokens (input + output) per minute, at most [`MAX_TPM`].
    pub tpm: u64,
    /// Nano-USD per UTC day, at most [`MAX_NANO_USD`].
    pub budget_nano_usd: u64,
}

/// One bucket's stored state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct State {
    /// Theoretical arrival time of requests, µs since the epoch (0: never used).
    pub requests_tat: i64,
    /// Theoretical arrival time of tokens, µs since the epoch (0: never used).
    pub tokens_tat: i64,
    /// The `rpm` and `tpm` the TATs were made with (0: none yet).
    pub requests_rate: i64,
    pub tokens_rate: i64,
    /// The UTC day (days since the epoch) `usd_spent` counts.
    pub usd_day: i64,
    /// Nano-USD spent on `usd_day`.
    pub usd_spent: i64,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Requests,
    Tokens,
    Usd,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Requests, Kind::Tokens, Kind::Usd];

    /// The label in metrics and the `limit` field of the 429 body.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Requests => "requests_per_minute",
            Kind::Tokens => "tokens_per_minute",
            Kind::Usd => "usd_per_day",
        }
    }

    /// Code used by the Redis script's reply (0 is "admitted").
    pub fn code(self) -> i64 {
        match self {
            Kind::Requests => 1,
            Kind::Tokens => 2,
            Kind::Usd => 3,
        }
    }

    pub fn from_code(code: i64) -> Option<Kind> {
        match code {
            1 => Some(Kind::Requests),
            2 => Some(Kind::Tokens),
            3 => Some(Kind::Usd),
            _ => None,
        }
    }
}

/// What a check, peek or charge found; the fields of a limit that is not set are 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The limit that refused the request (the one with the longest wait), if any.
    pub denied: Option<Kind>,
    /// µs until the request would be admitted (0 when admitted).
    pub retry_after_us: i64,
    /// Requests still admitted right now (after this one, when it was admitted).
    pub requests_remaining: i64,
    /// µs until the request bucket is back to its initial state.
    pub requests_reset_us: i64,
    /// Tokens still available right now.
    pub tokens_remaining: i64,
    /// µs until the token bucket is back to its initial state.
    pub tokens_reset_us: i64,
    /// Nano-USD spent today.
    pub usd_spent: i64,
    /// The time the outcome was computed at, µs since the epoch.
    pub now: i64,
}

/// What is asked of a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Admit one request if every limit allows it, counting it.
    Check,
    /// Report without changing anything.
    Peek,
    /// Add usage known after an answer: tokens and nano-USD.
    Charge { tokens: u64, nano_usd: u64 },
}

fn ceil_div(a: i64, b: i64) -> i64 {
    (a + b - 1) / b
}

/// Applies `op` to `state` at `now` (µs since the epoch). Returns the outcome, and whether the
/// state changed and must be kept; when it did not, `state` may still have been normalised
/// (rescaled, new day) and the caller discards it, as the Redis script does.
pub fn apply(state: &mut State, p: &Params, op: Op, now: i64) -> (Outcome, bool) {
    let rpm = p.rpm.min(MAX_RPM) as i64;
    let tpm = p.tpm.min(MAX_TPM) as i64;
    let budget = p.budget_nano_usd.min(MAX_NANO_USD) as i64;
    let (interval, window) = if rpm > 0 {
        let i = MINUTE_US / rpm;
        (i, rpm * i)
    } else {
        (0, 0)
    };
    if rpm > 0 {
        let old = state.requests_rate;
        if old > 0 && old != rpm && state.requests_tat > now {
            let d = (state.requests_tat - now) as f64 * interval as f64 / (MINUTE_US / old) as f64;
            state.requests_tat = now + d.ceil() as i64;
        }
        state.requests_rate = rpm;
    }
    if tpm > 0 {
        let old = state.tokens_rate;
        if old > 0 && old != tpm && state.tokens_tat > now {
            let d = (state.tokens_tat - now) as f64 * old as f64 / tpm as f64;
            state.tokens_tat = now + d.ceil() as i64;
        }
        state.tokens_rate = tpm;
    }
    let today = now.div_euclid(DAY_US);
    if state.usd_day != today {
        state.usd_day = today;
        state.usd_spent = 0;
    }
    let tat_r = state.requests_tat.max(now);
    let mut tat_t = state.tokens_tat.max(now);
    let mut out = Outcome {
        now,
        ..Outcome::default()
    };
    let mut current_r = tat_r;
    let mut changed = false;
    match op {
        Op::Charge { tokens, nano_usd } => {
            let n = tokens.min(MAX_CHARGE_TOKENS) as i64;
            if tpm > 0 && n > 0 {
                tat_t += ceil_div(n * MINUTE_US, tpm);
                state.tokens_tat = tat_t;
                changed = true;
            }
            let cost = nano_usd.min(MAX_NANO_USD) as i64;
            if cost > 0 {
                state.usd_spent += cost;
                changed = true;
            }
        }
        Op::Check | Op::Peek => {
            let mut wait = 0;
            let next_r = tat_r + interval;
            if rpm > 0 && next_r - now > window {
                out.denied = Some(Kind::Requests);
                wait = next_r - now - window;
            }
            if tpm > 0 && tat_t - now >= MINUTE_US {
                let w = tat_t - now - MINUTE_US + 1;
                if w > wait {
                    out.denied = Some(Kind::Tokens);
                    wait = w;
                }
            }
            if budget > 0 && state.usd_spent >= budget {
                let w = (today + 1) * DAY_US - now;
                if w > wait {
                    out.denied = Some(Kind::Usd);
                    wait = w;
                }
            }
            out.retry_after_us = wait;
            if op == Op::Check && out.denied.is_none() && rpm > 0 {
                state.requests_tat = next_r;
                current_r = next_r;
                changed = true;
            }
        }
    }
    if rpm > 0 {
        out.requests_remaining = (window - (current_r - now)).max(0) / interval;
        out.requests_reset_us = current_r - now;
    }
    if tpm > 0 {
        out.tokens_remaining = (MINUTE_US - (tat_t - now)).max(0) * tpm / MINUTE_US;
        out.tokens_reset_us = tat_t - now;
    }
    out.usd_spent = state.usd_spent;
    (out, changed)
}

/// µs from `now` until `state` no longer matters (every TAT in the past and no spending today):
/// the Redis key's expiry, and when the memory store may forget the bucket.
pub fn lifetime_us(state: &State, now: i64) -> i64 {
    let mut until = (state.requests_tat - now).max(state.tokens_tat - now);
    if state.usd_spent > 0 && state.usd_day == now.div_euclid(DAY_US) {
        until = until.max((state.usd_day + 1) * DAY_US - now);
    }
    until.max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_750_000_000_000_000; // some time in 2025, µs
    const SECOND: i64 = 1_000_000;

    fn rpm(n: u64) -> Params {
        Params {
            rpm: n,
            ..Params::default()
        }
    }

    #[test]
    fn six_per_minute_admits_six_at_once_then_one_every_ten_seconds() {
        let p = rpm(6);
        let mut s = State::default();
        for left in (0..6).rev() {
            let (o, changed) = apply(&mut s, &p, Op::Check, T0);
            assert_eq!((o.denied, o.requests_remaining), (None, left));
            assert!(changed);
        }
        let (o, changed) = apply(&mut s, &p, Op::Check, T0);
        assert_eq!(o.denied, Some(Kind::Requests));
        assert_eq!(o.retry_after_us, 10 * SECOND);
        assert_eq!(o.requests_remaining, 0);
        assert_eq!(o.requests_reset_us, 60 * SECOND);
        assert!(!changed, "a refused request costs nothing");
        // Just before the wait is over: still refused; at it: admitted.
        let (o, _) = apply(&mut s, &p, Op::Check, T0 + 10 * SECOND - 1);
        assert_eq!((o.denied, o.retry_after_us), (Some(Kind::Requests), 1));
        let (o, _) = apply(&mut s, &p, Op::Check, T0 + 10 * SECOND);
        assert_eq!((o.denied, o.requests_remaining), (None, 0));
        // A quiet minute later the bucket is full again.
        let (o, _) = apply(&mut s, &p, Op::Peek, T0 + 10 * SECOND + 60 * SECOND);
        assert_eq!((o.requests_remaining, o.requests_reset_us), (6, 0));
    }

    #[test]
    fn peek_counts_nothing() {
        let p = rpm(2);
        let mut s = State::default();
        for _ in 0..5 {
            let (o, changed) = apply(&mut s, &p, Op::Peek, T0);
            assert_eq!((o.denied, o.requests_remaining, changed), (None, 2, false));
        }
    }

    #[test]
    fn tokens_are_charged_after_and_checked_before() {
        let p = Params {
            tpm: 1000,
            ..Params::default()
        };
        let mut s = State::default();
        let (o, _) = apply(&mut s, &p, Op::Check, T0);
        assert_eq!((o.denied, o.tokens_remaining), (None, 1000));
        // 600 tokens: 36 s of the minute's allowance.
        let (o, _) = apply(
            &mut s,
            &p,
            Op::Charge {
                tokens: 600,
                nano_usd: 0,
            },
            T0,
        );
        assert_eq!((o.tokens_remaining, o.tokens_reset_us), (400, 36 * SECOND));
        // An answer may overdraw: 900 more puts the bucket 1.5 minutes ahead.
        apply(
            &mut s,
            &p,
            Op::Charge {
                tokens: 900,
                nano_usd: 0,
            },
            T0,
        );
        let (o, _) = apply(&mut s, &p, Op::Check, T0);
        assert_eq!(o.denied, Some(Kind::Tokens));
        assert_eq!(o.retry_after_us, 30 * SECOND + 1);
        assert_eq!(o.tokens_remaining, 0);
        let (o, _) = apply(&mut s, &p, Op::Check, T0 + 30 * SECOND + 1);
        assert_eq!(o.denied, None);
    }

    #[test]
    fn usd_budget_resets_at_midnight_utc() {
        let p = Params {
            budget_nano_usd: 1_000,
            ..Params::default()
        };
        let midnight = (T0.div_euclid(DAY_US) + 1) * DAY_US;
        let evening = midnight - 3600 * SECOND;
        let mut s = State::default();
        let charge = Op::Charge {
            tokens: 0,
            nano_usd: 999,
        };
        apply(&mut s, &p, charge, evening);
        assert_eq!(apply(&mut s, &p, Op::Check, evening).0.denied, None);
        apply(
            &mut s,
            &p,
            Op::Charge {
                tokens: 0,
                nano_usd: 1,
            },
            evening,
        );
        let (o, _) = apply(&mut s, &p, Op::Check, evening);
        assert_eq!((o.denied, o.usd_spent), (Some(Kind::Usd), 1000));
        assert_eq!(o.retry_after_us, 3600 * SECOND);
        assert_eq!(lifetime_us(&s, evening), 3600 * SECOND);
        let (o, _) = apply(&mut s, &p, Op::Check, midnight);
        assert_eq!((o.denied, o.usd_spent), (None, 0));
    }

    #[test]
    fn the_longest_wait_names_the_limit() {
        let p = Params {
            rpm: 1,
            tpm: 100,
            budget_nano_usd: 0,
        };
        let mut s = State::default();
        apply(&mut s, &p, Op::Check, T0);
        // 300 tokens: 3 minutes of tokens; the request limit would wait 1 minute.
        apply(
            &mut s,
            &p,
            Op::Charge {
                tokens: 300,
                nano_usd: 0,
            },
            T0,
        );
        let (o, _) = apply(&mut s, &p, Op::Check, T0);
        assert_eq!(o.denied, Some(Kind::Tokens));
        assert_eq!(o.retry_after_us, 120 * SECOND + 1);
    }

    #[test]
    fn a_changed_limit_keeps_what_was_counted() {
        let mut s = State::default();
        apply(&mut s, &rpm(2), Op::Check, T0);
        apply(&mut s, &rpm(2), Op::Check, T0);
        assert_eq!(apply(&mut s, &rpm(2), Op::Peek, T0).0.requests_remaining, 0);
        let (o, _) = apply(&mut s.clone(), &rpm(600), Op::Peek, T0);
        assert_eq!((o.denied, o.requests_remaining), (None, 598));
        let (o, _) = apply(&mut s.clone(), &rpm(1), Op::Check, T0);
        assert_eq!(
            o.denied,
            Some(Kind::Requests),
            "2 counted, over a limit of 1"
        );
        let tokens = |tpm| Params {
            tpm,
            ..Params::default()
        };
        let mut s = State::default();
        let charge = Op::Charge {
            tokens: 50,
            nano_usd: 0,
        };
        apply(&mut s, &tokens(100), charge, T0);
        let (o, _) = apply(&mut s, &tokens(1000), Op::Peek, T0);
        assert_eq!(o.tokens_remaining, 950);
    }

    #[test]
    fn limits_not_set_report_zero_and_never_refuse() {
        let mut s = State::default();
        for _ in 0..1000 {
            let (o, changed) = apply(&mut s, &Params::default(), Op::Check, T0);
            assert_eq!(o.denied, None);
            assert!(!changed);
        }
        assert_eq!(lifetime_us(&s, T0), 0);
    }

    #[test]
    fn uneven_rates_never_admit_more_than_the_limit_at_once() {
        for n in [1, 7, 13, 600, 7_000, 10_000, 1_000_000] {
            let p = rpm(n);
            let mut s = State::default();
            let admitted = (0..n + 5)
                .filter(|_| apply(&mut s, &p, Op::Check, T0).0.denied.is_none())
                .count();
            assert_eq!(admitted as u64, n, "rpm {n}");
        }
    }
}
