//! Deserializes one config section while collecting every mistake in it — not only serde's
//! first — each with the path of the exact field it is about.
//!
//! serde stops at the first error. To find the next one, the offending field is removed from
//! the tree and the section deserialized again, until it succeeds (the result is then
//! discarded: it was built from a tree with fields missing). Paths are reported in the
//! coordinates of the file as written, so list indices after a removed item are shifted back.

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use serde_yaml::Value;

/// Enough for any real file; bounds the work on a pathological one.
const MAX_MISTAKES: usize = 50;

/// One step of a field path inside a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
    /// A step serde could not name (a non-string map key).
    Unknown,
}

/// One wrong field: where (relative to the section) and serde's message.
#[derive(Debug)]
pub(super) struct Mistake {
    pub path: Vec<Seg>,
    pub message: String,
}

/// `value` as a `T`, or every mistake found in it.
pub(super) fn deserialize_all<T: DeserializeOwned>(mut value: Value) -> Result<T, Vec<Mistake>> {
    let mut mistakes = Vec::new();
    // Paths (as written) of the fields removed so far.
    let mut removed: Vec<Vec<Seg>> = Vec::new();
    loop {
        let error = match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(v) if mistakes.is_empty() => return Ok(v),
            Ok(_) => break,
            Err(e) => e,
        };
        let current: Vec<Seg> = error
            .path()
            .iter()
            .map(|s| match s {
                Segment::Seq { index } => Seg::Index(*index),
                Segment::Map { key } | Segment::Enum { variant: key } => Seg::Key(key.clone()),
                Segment::Unknown => Seg::Unknown,
            })
            .collect();
        let written = as_written(&current, &removed);
        let message = error.into_inner().to_string();
        if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|r| r.strip_suffix('`'))
        {
            let mut path = written;
            path.push(Seg::Key(field.to_string()));
            // A required field that we removed ourselves was already reported as wrong.
            if !removed.contains(&path) {
                mistakes.push(Mistake { path, message });
            }
            break;
        }
        mistakes.push(Mistake {
            path: written.clone(),
            message,
        });
        if mistakes.len() >= MAX_MISTAKES || !remove(&mut value, &current) {
            break;
        }
        removed.push(written);
    }
    Err(mistakes)
}

/// Maps list indices in `current` (the trimmed tree) back to the file as written.
fn as_written(current: &[Seg], removed: &[Vec<Seg>]) -> Vec<Seg> {
    let mut written: Vec<Seg> = Vec::with_capacity(current.len());
    for seg in current {
        let seg = match seg {
            Seg::Index(i) => {
                let mut gone: Vec<usize> = removed
                    .iter()
                    .filter(|p| p.len() == written.len() + 1 && p.starts_with(&written))
                    .filter_map(|p| match p.last() {
                        Some(Seg::Index(r)) => Some(*r),
                        _ => None,
                    })
                    .collect();
                gone.sort_unstable();
                let mut original = *i;
                for r in gone {
                    if r <= original {
                        original += 1;
                    }
                }
                Seg::Index(original)
            }
            other => other.clone(),
        };
        written.push(seg);
    }
    written
}

/// Removes the node at `path` from `value`; false when there is nothing to remove.
fn remove(value: &mut Value, path: &[Seg]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = value;
    for seg in parents {
        node = match (untag(node), seg) {
            (Value::Mapping(m), Seg::Key(k)) => match m.get_mut(k.as_str()) {
                Some(child) => child,
                None => return false,
            },
            (Value::Sequence(items), Seg::Index(i)) => match items.get_mut(*i) {
                Some(child) => child,
                None => return false,
            },
            _ => return false,
        };
    }
    match (untag(node), last) {
        // shift_remove keeps the order of the remaining keys, so mistakes are found top down.
        (Value::Mapping(m), Seg::Key(k)) => m.shift_remove(k.as_str()).is_some(),
        (Value::Sequence(items), Seg::Index(i)) if *i < items.len() => {
            items.remove(*i);
            true
        }
        _ => false,
    }
}

fn untag(value: &mut Value) -> &mut Value {
    match value {
        Value::Tagged(t) => untag(&mut t.value),
        v => v,
    }
}

/// `parent` + `path` as one field path: `routes[0]` + `match.path_prefx`.
pub(super) fn join(parent: &str, path: &[Seg]) -> String {
    let mut full = parent.to_string();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !full.is_empty() {
                    full.push('.');
                }
                full.push_str(k);
            }
            Seg::Index(i) => full.push_str(&format!("[{i}]")),
            Seg::Unknown => {}
        }
    }
    full
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        name: String,
        #[serde(default)]
        count: u32,
    }

    fn paths(yaml: &str) -> Vec<String> {
        let value: Value = serde_yaml::from_str(yaml).unwrap();
        deserialize_all::<Vec<Item>>(value)
            .unwrap_err()
            .iter()
            .map(|m| join("items", &m.path))
            .collect()
    }

    #[test]
    fn finds_every_mistake_with_paths_as_written() {
        assert_eq!(
            paths("- {name: a, cnt: 1, count: x}\n- {name: b, count: []}\n- {name: c}\n"),
            ["items[0].cnt", "items[0].count", "items[1].count"]
        );
        // A wrong item is removed; the items after it keep the indices they have in the file.
        assert_eq!(
            paths("- 5\n- {name: b, bad: 1}\n- 7\n- {name: d, worse: 2}\n"),
            ["items[0]", "items[1].bad", "items[2]", "items[3].worse"]
        );
        // A required field reported as wrong is not reported again as missing.
        assert_eq!(paths("- {name: []}\n"), ["items[0].name"]);
        assert_eq!(paths("- {count: 1}\n"), ["items[0].name"]);
    }
}
