//! The CPU a configured rate limit adds to one pass-through request (memory backend), step by
//! step: `cargo run --release --example bench_limits`. Single-threaded; each figure is the
//! fastest of 101 short runs (10,000 iterations, a few milliseconds each), so that on a busy
//! machine some runs go through without being preempted.
//!
//! The steps are the ones the proxy adds on a limited route: hash the credential, check the
//! bucket, build the `x-ratelimit-*` headers and set them on the response head, then (after the
//! answer) charge the usage. Not here, because they are crate-internal: pricing the usage (one
//! price-table lookup, which the cost metrics make anyway) and recording the limit metrics
//! (about 25 ns). A cache hit with `count_hits: false` does none of it (two `Option` tests), so
//! it is not measured here.

use pingora::http::{RequestHeader, ResponseHeader};
use promptgate::cache::Cache;
use promptgate::config::schema::{CacheSpec, LimitKey, RateLimitSpec};
use promptgate::limits::gcra::Outcome;
use promptgate::limits::{headers, Limiter, RouteLimit, Verdict, Who};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

const ITERATIONS: usize = 10_000;
const RUNS: usize = 101;
const CREDENTIALS: usize = 100;

/// Fastest-of-`RUNS` nanoseconds per iteration of `f`.
fn measure(f: impl FnMut(usize)) -> f64 {
    measure_n(ITERATIONS, RUNS, f)
}

fn measure_n(iterations: usize, runs: usize, mut f: impl FnMut(usize)) -> f64 {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            for i in 0..iterations {
                f(i);
            }
            start.elapsed().as_nanos() as f64 / iterations as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let cache = Arc::new(Cache::new(&CacheSpec::default()).unwrap());
    let limiter = Limiter::new(cache);
    let limit = Arc::new(RouteLimit::new(&RateLimitSpec {
        requests_per_minute: Some(60_000_000),
        usd_per_day: Some(1_000_000.0),
        ..RateLimitSpec::default()
    }));
    let requests: Vec<RequestHeader> = (0..CREDENTIALS)
        .map(|i| {
            let mut r = RequestHeader::build("POST", b"/pass/v1/chat/completions", None).unwrap();
            r.insert_header(
                "authorization",
                format!("Bearer sk-bench-{i:04}-4f1c2a9e7b3d5f608a1e2c4b6d8f0a1c3e5b7d9f"),
            )
            .unwrap();
            r
        })
        .collect();
    let whos: Vec<Who> = requests
        .iter()
        .map(|r| Who::of(r, LimitKey::Credential))
        .collect();
    let check = |i: usize| -> Verdict {
        runtime.block_on(limiter.check("pass", &limit, &whos[i % CREDENTIALS]))
    };

    let hash = measure(|i| {
        black_box(Who::of(&requests[i % CREDENTIALS], LimitKey::Credential));
    });
    let checked = measure(|i| {
        black_box(check(i));
    });
    let outcome = *check(0).outcome().unwrap();
    let head_base = ResponseHeader::build(200, Some(8)).unwrap();
    let build_headers = measure(|_| {
        let h = headers::ratelimit(&limit, black_box(&outcome));
        let mut head = head_base.clone();
        for (n, v) in h {
            head.insert_header(n, v).unwrap();
        }
        black_box(head);
    });
    let head_clone_only = measure(|_| {
        black_box(head_base.clone());
    });
    let charge = measure(|i| {
        limiter.charge(
            "pass",
            &limit,
            &whos[i % CREDENTIALS],
            530,
            black_box(0.000_22),
        );
    });
    // Shorter runs, more of them: each iteration does all of the above.
    let all = measure_n(2_000, 501, |i| {
        let req = &requests[i % CREDENTIALS];
        let who = Who::of(req, LimitKey::Credential);
        let verdict = runtime.block_on(limiter.check("pass", &limit, &who));
        let o: &Outcome = verdict.outcome().unwrap();
        let mut head = head_base.clone();
        for (n, v) in headers::ratelimit(&limit, o) {
            head.insert_header(n, v).unwrap();
        }
        black_box(head);
        limiter.charge("pass", &limit, &who, 530, black_box(0.000_22));
    });
    let block_on = measure(|_| {
        black_box(runtime.block_on(async { black_box(1) }));
    });

    println!("rate limit cost per pass-through request, memory backend (ns, fastest of {RUNS} runs of {ITERATIONS}):");
    println!("  credential hash (blake3)                  {hash:7.0}");
    println!("  check (bucket lookup + GCRA)              {:7.0}   (block_on overhead {block_on:.0} ns subtracted)", checked - block_on);
    println!("  x-ratelimit headers onto the head         {:7.0}   (head clone {head_clone_only:.0} ns subtracted)", build_headers - head_clone_only);
    println!("  charge (bucket update)                    {charge:7.0}");
    println!(
        "  all of it, in one loop                    {:7.0}",
        all - block_on - head_clone_only
    );
}
