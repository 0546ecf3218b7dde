//! The price table: what a model's tokens cost, for `promptgate_cost_usd_total` and
//! `promptgate_cost_saved_usd_total`.
//!
//! Shipped defaults ([`DEFAULT_PRICES`]) cover current OpenAI, Anthropic and Gemini models, and
//! local (Ollama) model families at 0. The config's `pricing:` map is merged over them: an entry
//! with the same pattern replaces the default, a new pattern is added. A model is priced by the
//! entry whose pattern equals it, else by the most specific glob (`*`, `?`) that matches it (the
//! one with the most literal characters). The entry also names the model in metric labels, so
//! label values stay bounded by the table; an unpriced model is `other` and costs nothing.

use crate::config::schema::PriceSpec;
use crate::model_table::ModelTable;
use crate::providers::Usage;
use std::collections::BTreeMap;

/// The label of models no price entry matches.
pub const OTHER: &str = "other";

/// One shipped price: USD per million tokens, list prices for standard (non-batch) tokens as
/// published by each provider in 2025: input, output, and prompt-cache reads and writes.
/// OpenAI bills cached input at a per-model discount (0.5× to 0.1×) and writes at the input
/// price; Anthropic bills reads at 0.1× and writes (5-minute cache) at 1.25× the input price;
/// Gemini bills implicit cache reads at 0.25× and no write premium. A model without prompt
/// caching has both at its input price.
pub struct DefaultPrice {
    pub pattern: &'static str,
    pub input: f64,
    pub output: f64,
    pub cache_read: f64,
    pub cache_write: f64,
}

const fn price(
    pattern: &'static str,
    input: f64,
    output: f64,
    cache_read: f64,
    cache_write: f64,
) -> DefaultPrice {
    DefaultPrice {
        pattern,
        input,
        output,
        cache_read,
        cache_write,
    }
}

/// The shipped table.
pub const DEFAULT_PRICES: &[DefaultPrice] = &[
    // OpenAI: cached input as published per model; no write premium.
    price("gpt-4o*", 2.50, 10.00, 1.25, 2.50),
    price("gpt-4o-mini*", 0.15, 0.60, 0.075, 0.15),
    price("gpt-4.1*", 2.00, 8.00, 0.50, 2.00),
    price("gpt-4.1-mini*", 0.40, 1.60, 0.10, 0.40),
    price("gpt-4.1-nano*", 0.10, 0.40, 0.025, 0.10),
    price("gpt-5*", 1.25, 10.00, 0.125, 1.25),
    price("gpt-5-mini*", 0.25, 2.00, 0.025, 0.25),
    price("gpt-5-nano*", 0.05, 0.40, 0.005, 0.05),
    price("o1*", 15.00, 60.00, 7.50, 15.00),
    price("o3*", 2.00, 8.00, 0.50, 2.00),
    price("o3-mini*", 1.10, 4.40, 0.55, 1.10),
    price("o4-mini*", 1.10, 4.40, 0.275, 1.10),
    price("gpt-3.5-turbo*", 0.50, 1.50, 0.50, 0.50),
    price("text-embedding-3-small", 0.02, 0.0, 0.02, 0.02),
    price("text-embedding-3-large", 0.13, 0.0, 0.13, 0.13),
    // Anthropic: reads 0.1×, writes 1.25× the input price.
    price("claude-opus-4*", 15.00, 75.00, 1.50, 18.75),
    price("claude-sonnet-4*", 3.00, 15.00, 0.30, 3.75),
    price("claude-3-7-sonnet*", 3.00, 15.00, 0.30, 3.75),
    price("claude-3-5-sonnet*", 3.00, 15.00, 0.30, 3.75),
    price("claude-3-5-haiku*", 0.80, 4.00, 0.08, 1.00),
    price("claude-3-haiku*", 0.25, 1.25, 0.03, 0.30),
    price("claude-haiku-4*", 1.00, 5.00, 0.10, 1.25),
    // Gemini: implicit cache reads 0.25×, no write premium.
    price("gemini-2.5-pro*", 1.25, 10.00, 0.3125, 1.25),
    price("gemini-2.5-flash*", 0.30, 2.50, 0.075, 0.30),
    price("gemini-2.5-flash-lite*", 0.10, 0.40, 0.025, 0.10),
    price("gemini-2.0-flash*", 0.10, 0.40, 0.025, 0.10),
    price("gemini-2.0-flash-lite*", 0.075, 0.30, 0.01875, 0.075),
    price("gemini-1.5-pro*", 1.25, 5.00, 0.3125, 1.25),
    price("gemini-1.5-flash*", 0.075, 0.30, 0.01875, 0.075),
    // Local models (Ollama): no per-token price.
    price("llama*", 0.0, 0.0, 0.0, 0.0),
    price("qwen*", 0.0, 0.0, 0.0, 0.0),
    price("mistral*", 0.0, 0.0, 0.0, 0.0),
    price("gemma*", 0.0, 0.0, 0.0, 0.0),
    price("phi*", 0.0, 0.0, 0.0, 0.0),
    price("deepseek*", 0.0, 0.0, 0.0, 0.0),
];

/// The cache read and write prices of an entry that gives only its input price, as multiples
/// of it: the shipped entry's for a shipped pattern, else the provider's published multipliers
/// by the pattern's family (`claude*` 0.1 and 1.25, `gemini*` 0.25 and 1, OpenAI models 0.5
/// and 1), else 1 and 1 (no discount assumed).
fn cache_multipliers(pattern: &str) -> (f64, f64) {
    if let Some(d) = DEFAULT_PRICES
        .iter()
        .find(|d| d.pattern == pattern && d.input > 0.0)
    {
        return (d.cache_read / d.input, d.cache_write / d.input);
    }
    let starts = |prefixes: &[&str]| prefixes.iter().any(|p| pattern.starts_with(p));
    if starts(&["claude"]) {
        (0.1, 1.25)
    } else if starts(&["gemini"]) {
        (0.25, 1.0)
    } else if starts(&["gpt-", "o1", "o3", "o4", "chatgpt"]) {
        (0.5, 1.0)
    } else {
        (1.0, 1.0)
    }
}

/// One entry of the table, in USD per million tokens.
#[derive(Debug, Clone)]
pub struct Price {
    /// The model label: the pattern without a trailing `*` (`gpt-4o-mini*` → `gpt-4o-mini`).
    pub label: String,
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    /// Prompt tokens read from the provider's prompt cache.
    pub cache_read_per_mtok: f64,
    /// Prompt tokens written to the provider's prompt cache.
    pub cache_write_per_mtok: f64,
}

impl Price {
    /// USD for `usage`: each kind of token at its price ([`Usage`]'s counts do not overlap).
    pub fn cost(&self, usage: &Usage) -> f64 {
        (usage.input as f64 * self.input_per_mtok
            + usage.cache_read as f64 * self.cache_read_per_mtok
            + usage.cache_write as f64 * self.cache_write_per_mtok
            + usage.output as f64 * self.output_per_mtok)
            / 1e6
    }

    /// USD the prompt cache's reads saved against paying them as plain input (≥ 0).
    pub fn prompt_cache_saved(&self, usage: &Usage) -> f64 {
        (usage.cache_read as f64 * (self.input_per_mtok - self.cache_read_per_mtok) / 1e6).max(0.0)
    }

    /// USD the prompt cache's writes cost above plain input (≥ 0): Anthropic's 1.25×.
    pub fn prompt_cache_write_extra(&self, usage: &Usage) -> f64 {
        (usage.cache_write as f64 * (self.cache_write_per_mtok - self.input_per_mtok) / 1e6)
            .max(0.0)
    }
}

/// The compiled price table.
#[derive(Debug, Clone)]
pub struct Pricing {
    table: ModelTable<Price>,
}

impl Pricing {
    /// The defaults with `overrides` (the config's `pricing:`) merged over them.
    pub fn new(overrides: &BTreeMap<String, PriceSpec>) -> Pricing {
        let mut merged: BTreeMap<String, [f64; 4]> = DEFAULT_PRICES
            .iter()
            .map(|d| {
                let prices = [d.input, d.output, d.cache_read, d.cache_write];
                (d.pattern.to_string(), prices)
            })
            .collect();
        for (pattern, spec) in overrides {
            let (read, write) = cache_multipliers(pattern);
            let read = spec
                .cache_read_per_mtok
                .unwrap_or(spec.input_per_mtok * read);
            let write = spec
                .cache_write_per_mtok
                .unwrap_or(spec.input_per_mtok * write);
            merged.insert(
                pattern.clone(),
                [spec.input_per_mtok, spec.output_per_mtok, read, write],
            );
        }
        let entries = merged.into_iter().map(|(pattern, [i, o, r, w])| {
            let price = Price {
                label: pattern.trim_end_matches('*').to_string(),
                input_per_mtok: i,
                output_per_mtok: o,
                cache_read_per_mtok: r,
                cache_write_per_mtok: w,
            };
            (pattern, price)
        });
        Pricing {
            table: ModelTable::new(entries),
        }
    }

    /// The entry pricing `model`, or `None` (label [`OTHER`], no cost).
    pub fn lookup(&self, model: &str) -> Option<&Price> {
        self.table.lookup(model)
    }
}

impl Default for Pricing {
    fn default() -> Pricing {
        Pricing::new(&BTreeMap::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(p: &Pricing, model: &str) -> String {
        p.lookup(model).map_or(OTHER.into(), |e| e.label.clone())
    }

    fn usage(input: u64, output: u64, cache_read: u64, cache_write: u64) -> Usage {
        Usage {
            input,
            output,
            cache_read,
            cache_write,
            model: None,
        }
    }

    #[test]
    fn the_most_specific_pattern_wins() {
        let p = Pricing::default();
        assert_eq!(label(&p, "gpt-4o-mini"), "gpt-4o-mini");
        assert_eq!(label(&p, "gpt-4o-mini-2024-07-18"), "gpt-4o-mini");
        assert_eq!(label(&p, "gpt-4o-2024-08-06"), "gpt-4o");
        assert_eq!(label(&p, "claude-sonnet-4-0"), "claude-sonnet-4");
        assert_eq!(label(&p, "gemini-2.5-flash-lite"), "gemini-2.5-flash-lite");
        assert_eq!(label(&p, "llama3.2"), "llama");
        assert_eq!(label(&p, "my-finetune"), OTHER);
        assert_eq!(
            p.lookup("llama3.2").unwrap().cost(&usage(1000, 1000, 9, 9)),
            0.0
        );
        let mini = p.lookup("gpt-4o-mini").unwrap();
        assert!((mini.cost(&usage(1_000_000, 2_000_000, 0, 0)) - (0.15 + 1.20)).abs() < 1e-9);
    }

    #[test]
    fn cached_tokens_are_priced_at_the_published_multipliers() {
        let p = Pricing::default();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        // Anthropic: 1M uncached + 1M read (0.1×) + 1M written (1.25×) + 1M output.
        let sonnet = p.lookup("claude-sonnet-4-5").unwrap();
        let u = usage(1_000_000, 1_000_000, 1_000_000, 1_000_000);
        assert!(close(sonnet.cost(&u), 3.0 + 0.30 + 3.75 + 15.0));
        assert!(close(sonnet.prompt_cache_saved(&u), 2.70));
        assert!(close(sonnet.prompt_cache_write_extra(&u), 0.75));
        // OpenAI: gpt-4o reads at half price, gpt-4.1 at a quarter; no write premium.
        let u = usage(0, 0, 1_000_000, 0);
        assert!(close(p.lookup("gpt-4o").unwrap().cost(&u), 1.25));
        assert!(close(p.lookup("gpt-4.1").unwrap().cost(&u), 0.50));
        assert!(close(
            p.lookup("gpt-4o").unwrap().prompt_cache_write_extra(&u),
            0.0
        ));
        // Gemini: a quarter.
        assert!(close(p.lookup("gemini-2.5-flash").unwrap().cost(&u), 0.075));
        for d in DEFAULT_PRICES {
            assert!(d.cache_read <= d.input, "{}", d.pattern);
            assert!(d.cache_write >= d.input, "{}", d.pattern);
        }
    }

    #[test]
    fn the_config_overrides_and_extends_the_defaults() {
        let yaml = "gpt-4o-mini*: {input_per_mtok: 1, output_per_mtok: 2}\n\
                    my-model: {input_per_mtok: 3, output_per_mtok: 4}\n\
                    claude-house: {input_per_mtok: 10, output_per_mtok: 50}\n\
                    own: {input_per_mtok: 10, output_per_mtok: 1, cache_read_per_mtok: 2, cache_write_per_mtok: 11}\n";
        let overrides: BTreeMap<String, PriceSpec> = serde_yaml::from_str(yaml).unwrap();
        let p = Pricing::new(&overrides);
        let prices = |m: &str| {
            let e = p.lookup(m).unwrap();
            [
                e.input_per_mtok,
                e.output_per_mtok,
                e.cache_read_per_mtok,
                e.cache_write_per_mtok,
            ]
        };
        // A shipped pattern keeps its cache multipliers (0.5× for gpt-4o-mini)...
        assert_eq!(prices("gpt-4o-mini"), [1.0, 2.0, 0.5, 1.0]);
        // ...a new one gets its family's, or none (1×) for an unknown family...
        assert_eq!(prices("claude-house"), [10.0, 50.0, 1.0, 12.5]);
        assert_eq!(prices("my-model"), [3.0, 4.0, 3.0, 3.0]);
        // ...and prices given are used as given.
        assert_eq!(prices("own"), [10.0, 1.0, 2.0, 11.0]);
        assert_eq!(label(&p, "my-model"), "my-model");
        assert_eq!(
            p.lookup("my-model")
                .unwrap()
                .cost(&usage(1_000_000, 0, 0, 0)),
            3.0
        );
    }
}
