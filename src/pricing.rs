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
use std::collections::{BTreeMap, HashMap};
use std::sync::{PoisonError, RwLock};
use wildmatch::WildMatch;

/// The label of models no price entry matches.
pub const OTHER: &str = "other";

/// USD per million tokens, and the model label to report, per model pattern. Prices are list
/// prices for standard (non-batch, non-cached) tokens as published by each provider in 2025.
pub const DEFAULT_PRICES: &[(&str, f64, f64)] = &[
    // OpenAI
    ("gpt-4o*", 2.50, 10.00),
    ("gpt-4o-mini*", 0.15, 0.60),
    ("gpt-4.1*", 2.00, 8.00),
    ("gpt-4.1-mini*", 0.40, 1.60),
    ("gpt-4.1-nano*", 0.10, 0.40),
    ("gpt-5*", 1.25, 10.00),
    ("gpt-5-mini*", 0.25, 2.00),
    ("gpt-5-nano*", 0.05, 0.40),
    ("o1*", 15.00, 60.00),
    ("o3*", 2.00, 8.00),
    ("o3-mini*", 1.10, 4.40),
    ("o4-mini*", 1.10, 4.40),
    ("gpt-3.5-turbo*", 0.50, 1.50),
    ("text-embedding-3-small", 0.02, 0.0),
    ("text-embedding-3-large", 0.13, 0.0),
    // Anthropic
    ("claude-opus-4*", 15.00, 75.00),
    ("claude-sonnet-4*", 3.00, 15.00),
    ("claude-3-7-sonnet*", 3.00, 15.00),
    ("claude-3-5-sonnet*", 3.00, 15.00),
    ("claude-3-5-haiku*", 0.80, 4.00),
    ("claude-3-haiku*", 0.25, 1.25),
    ("claude-haiku-4*", 1.00, 5.00),
    // Gemini
    ("gemini-2.5-pro*", 1.25, 10.00),
    ("gemini-2.5-flash*", 0.30, 2.50),
    ("gemini-2.5-flash-lite*", 0.10, 0.40),
    ("gemini-2.0-flash*", 0.10, 0.40),
    ("gemini-2.0-flash-lite*", 0.075, 0.30),
    ("gemini-1.5-pro*", 1.25, 5.00),
    ("gemini-1.5-flash*", 0.075, 0.30),
    // Local models (Ollama): no per-token price.
    ("llama*", 0.0, 0.0),
    ("qwen*", 0.0, 0.0),
    ("mistral*", 0.0, 0.0),
    ("gemma*", 0.0, 0.0),
    ("phi*", 0.0, 0.0),
    ("deepseek*", 0.0, 0.0),
];

/// One entry of the table.
#[derive(Debug, Clone)]
pub struct Price {
    /// The model label: the pattern without a trailing `*` (`gpt-4o-mini*` → `gpt-4o-mini`).
    pub label: String,
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    pattern: WildMatch,
    /// Literal characters in the pattern: the more, the more specific.
    specificity: usize,
    exact: bool,
}

impl Price {
    /// USD for these token counts.
    pub fn cost(&self, input: u64, output: u64) -> f64 {
        (input as f64 * self.input_per_mtok + output as f64 * self.output_per_mtok) / 1e6
    }
}

/// The compiled price table.
#[derive(Debug, Clone)]
pub struct Pricing {
    entries: Vec<Price>,
    memo: Memo,
}

/// Most model names remembered by [`Memo`]: they come from upstream answers, so they are not
/// bounded by the config; past this, further names are matched against the table each time.
const MEMO_CAP: usize = 1024;

/// The entry (by index) each model name seen so far resolved to: matching the table is ~40
/// glob matches, and a deployment sees a handful of model names, so each is matched once.
/// Lives with the table it indexes (a reload builds a new table and an empty memo).
#[derive(Debug, Default)]
struct Memo(RwLock<HashMap<Box<str>, Option<usize>>>);

impl Clone for Memo {
    /// A copy starts empty: it is only a cache.
    fn clone(&self) -> Memo {
        Memo::default()
    }
}

impl Pricing {
    /// The defaults with `overrides` (the config's `pricing:`) merged over them.
    pub fn new(overrides: &BTreeMap<String, PriceSpec>) -> Pricing {
        let mut merged: BTreeMap<String, (f64, f64)> = DEFAULT_PRICES
            .iter()
            .map(|(p, i, o)| (p.to_string(), (*i, *o)))
            .collect();
        for (pattern, spec) in overrides {
            merged.insert(pattern.clone(), (spec.input_per_mtok, spec.output_per_mtok));
        }
        let entries = merged
            .into_iter()
            .map(|(pattern, (input, output))| Price {
                label: pattern.trim_end_matches('*').to_string(),
                input_per_mtok: input,
                output_per_mtok: output,
                specificity: pattern.chars().filter(|c| !matches!(c, '*' | '?')).count(),
                exact: !pattern.contains(['*', '?']),
                pattern: WildMatch::new(&pattern),
            })
            .collect();
        Pricing {
            entries,
            memo: Memo::default(),
        }
    }

    /// The entry pricing `model`, or `None` (label [`OTHER`], no cost).
    pub fn lookup(&self, model: &str) -> Option<&Price> {
        let known = self
            .memo
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(model)
            .copied();
        let index = known.unwrap_or_else(|| {
            let found = self.find(model);
            let mut memo = self.memo.0.write().unwrap_or_else(PoisonError::into_inner);
            if memo.len() < MEMO_CAP {
                memo.insert(model.into(), found);
            }
            found
        });
        index.map(|i| &self.entries[i])
    }

    /// The index of the entry pricing `model`: an exact pattern, else the most specific glob.
    fn find(&self, model: &str) -> Option<usize> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, p)| p.pattern.matches(model))
            .max_by_key(|(_, p)| (p.exact, p.specificity))
            .map(|(i, _)| i)
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
        assert_eq!(p.lookup("llama3.2").unwrap().cost(1000, 1000), 0.0);
        let mini = p.lookup("gpt-4o-mini").unwrap();
        assert!((mini.cost(1_000_000, 2_000_000) - (0.15 + 1.20)).abs() < 1e-9);
    }

    #[test]
    fn the_config_overrides_and_extends_the_defaults() {
        let yaml = "gpt-4o-mini*: {input_per_mtok: 1, output_per_mtok: 2}\nmy-model: {input_per_mtok: 3, output_per_mtok: 4}\n";
        let overrides: BTreeMap<String, PriceSpec> = serde_yaml::from_str(yaml).unwrap();
        let p = Pricing::new(&overrides);
        let mini = p.lookup("gpt-4o-mini").unwrap();
        assert_eq!((mini.input_per_mtok, mini.output_per_mtok), (1.0, 2.0));
        assert_eq!(label(&p, "my-model"), "my-model");
        assert_eq!(p.lookup("my-model").unwrap().cost(1_000_000, 0), 3.0);
    }

    #[test]
    fn remembered_answers_match_the_table_and_the_memo_is_bounded() {
        let p = Pricing::default();
        for model in ["gpt-4o-mini-2024-07-18", "my-finetune", "claude-sonnet-4-0"] {
            let first = label(&p, model);
            assert_eq!(label(&p, model), first, "{model}");
            assert_eq!(
                p.find(model).map(|i| &p.entries[i].label),
                p.lookup(model).map(|e| &e.label)
            );
        }
        for i in 0..MEMO_CAP + 10 {
            assert_eq!(label(&p, &format!("gpt-4o-{i}")), "gpt-4o");
        }
        assert_eq!(p.memo.0.read().unwrap().len(), MEMO_CAP);
        assert_eq!(label(&p, "gpt-4o-mini-unseen"), "gpt-4o-mini");
    }
}
