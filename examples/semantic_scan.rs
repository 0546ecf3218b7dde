//! What the semantic cache costs in process, beside the embedder call: a flat scan of one
//! context's vectors, the literal guard, and splitting a request into compared text and context
//! key. Run optimised: `cargo run --release --example semantic_scan` (from the repository root,
//! it reads bench/semantic/pairs.jsonl). Prints medians; no pass/fail.

use promptgate::cache::key::CacheKey;
use promptgate::cache::semantic::extract;
use promptgate::cache::semantic::guard::Literals;
use promptgate::cache::semantic::index::MemoryIndex;
use promptgate::cache::semantic::{ContextKey, Item, Vector};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Median of `runs` timings of `f`.
fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

/// A deterministic pseudo-random unit vector.
fn vector(seed: u64, dims: usize) -> Vector {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let raw = (0..dims)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 2000) as f32 / 1000.0 - 1.0
        })
        .collect();
    Vector::new(raw).expect("non-zero")
}

fn main() {
    let dims = 384;
    for n in [10usize, 100, 1000] {
        let index = MemoryIndex::new(1 << 30);
        let context = ContextKey([1; 32]);
        for i in 0..n {
            let item = Item::new(
                CacheKey(*blake3::hash(&i.to_le_bytes()).as_bytes()),
                vector(i as u64 + 1, dims),
                format!("question number {i}"),
                u64::MAX / 2,
            );
            index.insert("r", context, Arc::new(item), 1024);
        }
        let query = vector(999_999, dims);
        let mut best = 0f32;
        let scan = median(201, || {
            let items = index.items(&context);
            let mut scored: Vec<(f32, &Arc<Item>)> = items
                .iter()
                .filter_map(|i| Some((query.similarity(&i.vector)?, i)))
                .collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
            best = scored[0].0;
        });
        println!(
            "flat scan, {n:>4} vectors of {dims} dims (fetch list, cosine, sort): {:>7.1} µs (best {best:.3})",
            scan.as_secs_f64() * 1e6
        );
    }

    let pairs = std::fs::read_to_string("bench/semantic/pairs.jsonl")
        .expect("run from the repository root (bench/semantic/pairs.jsonl)");
    let texts: Vec<String> = pairs
        .lines()
        .flat_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            [
                v["a"].as_str().unwrap().to_string(),
                v["b"].as_str().unwrap().to_string(),
            ]
        })
        .collect();
    // First use compiles the regexes; not part of a request's cost.
    Literals::of("warm up 120 bpm").unwrap();
    let extract = median(21, || {
        for t in &texts {
            Literals::of(t).unwrap();
        }
    });
    println!(
        "literal guard, extract one text (mean over the {} texts of pairs.jsonl): {:.1} µs",
        texts.len(),
        extract.as_secs_f64() * 1e6 / texts.len() as f64
    );
    let (a, b) = (
        Literals::of(&texts[0]).unwrap(),
        Literals::of(&texts[1]).unwrap(),
    );
    let compare = median(1001, || {
        std::hint::black_box(a.allow(&b));
    });
    println!(
        "literal guard, compare two extracted texts: {:.2} µs",
        compare.as_secs_f64() * 1e6
    );

    let system = "You are a helpful music production assistant. ".repeat(20);
    let body = serde_json::json!({"model": "gpt-4o-mini", "temperature": 0, "messages": [
        {"role": "system", "content": system},
        {"role": "user", "content": "How do I make my kick punchier?"},
        {"role": "assistant", "content": "Layer a click, compress with a slow attack, cut the mud around 300 Hz."},
        {"role": "user", "content": "What's the tempo of this loop?"}]})
    .to_string();
    let split = median(1001, || {
        let s = extract::split("/openai/v1/chat/completions", body.as_bytes(), 1000).unwrap();
        std::hint::black_box(promptgate::cache::key::canonical_body(
            Some("application/json"),
            &s.rest,
            &[],
        ));
    });
    println!(
        "split a {} byte chat body and canonicalise the rest (context key input): {:.1} µs",
        body.len(),
        split.as_secs_f64() * 1e6
    );
}
