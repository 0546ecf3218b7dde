//! A table keyed by model-name patterns (the price table, the prompt-cache minimums): an entry
//! whose pattern equals the model wins, else the most specific glob (`*`, `?`) that matches it
//! (the one with the most literal characters). Answers are remembered per model name.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use wildmatch::WildMatch;

/// Most model names remembered by [`Memo`]: they come from upstream answers, so they are not
/// bounded by the config; past this, further names are matched against the table each time.
const MEMO_CAP: usize = 1024;

/// Values by model pattern.
#[derive(Debug, Clone)]
pub struct ModelTable<T> {
    entries: Vec<Entry<T>>,
    memo: Memo,
}

#[derive(Debug, Clone)]
struct Entry<T> {
    value: T,
    pattern: WildMatch,
    /// Literal characters in the pattern: the more, the more specific.
    specificity: usize,
    exact: bool,
}

/// The entry (by index) each model name seen so far resolved to: matching a table is tens of
/// glob matches, and a deployment sees a handful of model names, so each is matched once.
/// Lives with the table it indexes (a reload builds a new table and an empty memo).
#[derive(Debug, Default)]
struct Memo(RwLock<HashMap<Box<str>, Option<usize>, foldhash::fast::RandomState>>);

impl Clone for Memo {
    /// A copy starts empty: it is only a cache.
    fn clone(&self) -> Memo {
        Memo::default()
    }
}

impl<T> ModelTable<T> {
    /// A table of `(pattern, value)` entries; a later entry with the same pattern as an
    /// earlier one is simply never chosen over it, so callers merge before building.
    pub fn new(entries: impl IntoIterator<Item = (String, T)>) -> ModelTable<T> {
        let entries = entries
            .into_iter()
            .map(|(pattern, value)| Entry {
                value,
                specificity: pattern.chars().filter(|c| !matches!(c, '*' | '?')).count(),
                exact: !pattern.contains(['*', '?']),
                pattern: WildMatch::new(&pattern),
            })
            .collect();
        ModelTable {
            entries,
            memo: Memo::default(),
        }
    }

    /// The value for `model`: an exact pattern, else the most specific glob; `None` when no
    /// pattern matches.
    pub fn lookup(&self, model: &str) -> Option<&T> {
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
        index.map(|i| &self.entries[i].value)
    }

    fn find(&self, model: &str) -> Option<usize> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.pattern.matches(model))
            .max_by_key(|(_, e)| (e.exact, e.specificity))
            .map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> ModelTable<&'static str> {
        ModelTable::new(
            [
                ("gpt-4o*", "4o"),
                ("gpt-4o-mini*", "mini"),
                ("gpt-4o-mini-exact", "exact"),
                ("gpt-?o-mini-exact*", "glob"),
            ]
            .map(|(p, v)| (p.to_string(), v)),
        )
    }

    #[test]
    fn exact_beats_glob_and_the_most_specific_glob_wins() {
        let t = table();
        assert_eq!(t.lookup("gpt-4o-2024"), Some(&"4o"));
        assert_eq!(t.lookup("gpt-4o-mini-2024"), Some(&"mini"));
        assert_eq!(t.lookup("gpt-4o-mini-exact"), Some(&"exact"));
        assert_eq!(t.lookup("gpt-4o-mini-exactly"), Some(&"glob"));
        assert_eq!(t.lookup("claude"), None);
    }

    #[test]
    fn remembered_answers_match_the_table_and_the_memo_is_bounded() {
        let t = table();
        for model in ["gpt-4o-mini-2024-07-18", "my-finetune", "gpt-4o"] {
            let first = t.lookup(model).copied();
            assert_eq!(t.lookup(model).copied(), first, "{model}");
            assert_eq!(t.find(model).map(|i| t.entries[i].value), first);
        }
        for i in 0..MEMO_CAP + 10 {
            assert_eq!(t.lookup(&format!("gpt-4o-{i}")), Some(&"4o"));
        }
        assert_eq!(t.memo.0.read().unwrap().len(), MEMO_CAP);
        assert_eq!(t.lookup("gpt-4o-mini-unseen"), Some(&"mini"));
    }
}
