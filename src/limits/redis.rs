//! The shared counter store: each bucket is one Redis hash, changed by one atomic Lua script
//! (EVALSHA) per check, charge or peek, so every sidecar on that Redis shares the limit.
//!
//! The script repeats [`gcra::apply`](super::gcra::apply) step for step (integer µs and
//! nano-USD, all below 2^53 so Lua's doubles are exact; the one rescaling after a changed limit
//! is the same IEEE double arithmetic on both sides) and takes the time from Redis (`TIME`),
//! so sidecars with skewed clocks still agree. One key per script call: safe on Redis Cluster.
//! The key expires on its own once its state no longer matters (plus a second).

use super::gcra::{Kind, Op, Outcome, Params};
use super::Who;
use crate::cache::redis::{RedisError, RedisStore};
use redis::Script;
use std::sync::LazyLock;

/// `KEYS[1]`: the bucket. `ARGV`: op (`check` | `peek` | `charge`), now in µs (empty: Redis
/// `TIME`), rpm, tpm, budget in nano-USD, tokens, nano-USD charged.
/// Reply: denied code (0 admitted, 1 requests, 2 tokens, 3 USD), retry-after µs, requests
/// remaining, requests reset µs, tokens remaining, tokens reset µs, nano-USD spent today, now µs.
const SCRIPT: &str = r#"
local key = KEYS[1]
local op = ARGV[1]
local now
if ARGV[2] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[2])
end
local rpm = tonumber(ARGV[3])
local tpm = tonumber(ARGV[4])
local budget = tonumber(ARGV[5])
local MINUTE = 60000000
local DAY = 86400000000
local s = redis.call('HMGET', key, 'r', 't', 'd', 'u', 'rp', 'tp')
local r = tonumber(s[1]) or 0
local t = tonumber(s[2]) or 0
local d = tonumber(s[3]) or 0
local u = tonumber(s[4]) or 0
local rp = tonumber(s[5]) or 0
local tp = tonumber(s[6]) or 0
local interval, window = 0, 0
if rpm > 0 then
  interval = math.floor(MINUTE / rpm)
  window = rpm * interval
  if rp > 0 and rp ~= rpm and r > now then
    r = now + math.ceil((r - now) * interval / math.floor(MINUTE / rp))
  end
  rp = rpm
end
if tpm > 0 then
  if tp > 0 and tp ~= tpm and t > now then
    t = now + math.ceil((t - now) * tp / tpm)
  end
  tp = tpm
end
local today = math.floor(now / DAY)
if d ~= today then
  d = today
  u = 0
end
local tat_r = math.max(r, now)
local tat_t = math.max(t, now)
local denied, wait = 0, 0
local current_r = tat_r
local changed = false
if op == 'charge' then
  local n = tonumber(ARGV[6])
  if tpm > 0 and n > 0 then
    tat_t = tat_t + math.floor((n * MINUTE + tpm - 1) / tpm)
    t = tat_t
    changed = true
  end
  local cost = tonumber(ARGV[7])
  if cost > 0 then
    u = u + cost
    changed = true
  end
else
  local next_r = tat_r + interval
  if rpm > 0 and next_r - now > window then
    denied = 1
    wait = next_r - now - window
  end
  if tpm > 0 and tat_t - now >= MINUTE then
    local w = tat_t - now - MINUTE + 1
    if w > wait then
      denied = 2
      wait = w
    end
  end
  if budget > 0 and u >= budget then
    local w = (today + 1) * DAY - now
    if w > wait then
      denied = 3
      wait = w
    end
  end
  if op == 'check' and denied == 0 and rpm > 0 then
    r = next_r
    current_r = next_r
    changed = true
  end
end
if changed then
  local f = function(x) return string.format('%.0f', x) end
  redis.call('HSET', key, 'r', f(r), 't', f(t), 'd', f(d), 'u', f(u), 'rp', f(rp), 'tp', f(tp))
  local life = math.max(r - now, t - now, 0)
  if u > 0 then
    life = math.max(life, (d + 1) * DAY - now)
  end
  redis.call('PEXPIRE', key, math.floor(life / 1000) + 1000)
end
local rr, rs, tr, ts = 0, 0, 0, 0
if rpm > 0 then
  rr = math.floor(math.max(window - (current_r - now), 0) / interval)
  rs = current_r - now
end
if tpm > 0 then
  tr = math.floor(math.max(MINUTE - (tat_t - now), 0) * tpm / MINUTE)
  ts = tat_t - now
end
return {denied, wait, rr, rs, tr, ts, u, now}
"#;

static LIMIT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SCRIPT));

/// The Redis key of a bucket: `limits:{cache prefix}:{route}:{credential hash | "route"}`.
/// Outside the cache's `{prefix}:` namespace, so purging cache entries never resets a limit.
pub fn key(prefix: &str, route: &str, who: &Who) -> String {
    format!("limits:{prefix}:{route}:{}", who.label())
}

/// Runs `op` on the bucket `key`. `now` overrides Redis's clock (tests only). `on_request_path`
/// picks the store's lookup timeout, else its longer write timeout.
pub async fn apply(
    store: &RedisStore,
    key: &str,
    p: &Params,
    op: Op,
    now: Option<i64>,
    on_request_path: bool,
) -> Result<Outcome, RedisError> {
    let (name, tokens, nano_usd) = match op {
        Op::Check => ("check", 0, 0),
        Op::Peek => ("peek", 0, 0),
        Op::Charge { tokens, nano_usd } => ("charge", tokens, nano_usd),
    };
    let mut call = LIMIT_SCRIPT.prepare_invoke();
    call.key(key)
        .arg(name)
        .arg(now.map(|n| n.to_string()).unwrap_or_default())
        .arg(p.rpm)
        .arg(p.tpm)
        .arg(p.budget_nano_usd)
        .arg(tokens)
        .arg(nano_usd);
    let reply: Vec<i64> = store.run_script(&call, on_request_path).await?;
    let [denied, wait, rr, rs, tr, ts, spent, now] = reply[..] else {
        return Err(RedisError::Redis(format!(
            "the limit script answered {} values, expected 8",
            reply.len()
        )));
    };
    Ok(Outcome {
        denied: Kind::from_code(denied),
        retry_after_us: wait,
        requests_remaining: rr,
        requests_reset_us: rs,
        tokens_remaining: tr,
        tokens_reset_us: ts,
        usd_spent: spent,
        now,
    })
}
