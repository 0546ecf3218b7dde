//! Config loading, plain data only: file → YAML → `${ENV}` expansion → typed sections →
//! validated [`Spec`]. Building the running state from a spec is `runtime::build`'s job; this
//! module imports no runtime module.
//!
//! Every problem is collected (each with its field path and line) and reported at once;
//! `promptgate check`, start-up and reload all go through [`load`].

mod ca_file;
mod explain;
mod interpolate;
mod locate;
pub mod operations;
#[cfg(test)]
mod problem_tests;
pub mod redis_url;
#[cfg(test)]
mod reference_tests;
pub mod schema;
pub mod secret;
pub mod spec;
mod typed;
pub mod units;
mod validate;

use locate::LineIndex;
use serde::de::DeserializeOwned;
use serde_yaml::Value;
use std::fmt;
use std::path::{Path, PathBuf};

pub use spec::{RouteCache, Spec};

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Field path such as `routes[2].targets[0]` (empty for the whole file).
    pub path: String,
    pub line: Option<usize>,
    pub message: String,
}

impl Problem {
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            line: None,
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", Invalid { origin, problems })]
    Invalid {
        origin: String,
        problems: Vec<Problem>,
    },
}

/// Renders problems as `file:line: path: message`, one per line.
struct Invalid<'a> {
    origin: &'a str,
    problems: &'a [Problem],
}

impl fmt::Display for Invalid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "invalid config {}: {n} problem{}",
            self.origin,
            if n == 1 { "" } else { "s" }
        )?;
        for p in self.problems {
            write!(f, "\n  {}", self.origin)?;
            if let Some(line) = p.line {
                write!(f, ":{line}")?;
            }
            if p.path.is_empty() {
                write!(f, ": {}", p.message)?;
            } else {
                write!(f, ": {}: {}", p.path, p.message)?;
            }
        }
        Ok(())
    }
}

/// Where to find the config when `--config` and `$PROMPTGATE_CONFIG` are absent.
pub const DEFAULT_PATHS: &[&str] = &["conf/promptgate.yaml", "/etc/promptgate/promptgate.yaml"];

/// The config path to use: the given one, else the first default that exists.
pub fn resolve_path(explicit: Option<&Path>) -> Result<PathBuf, ConfigError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    DEFAULT_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| ConfigError::Read {
            path: PathBuf::from(DEFAULT_PATHS[0]),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "no config file given (--config or $PROMPTGATE_CONFIG) and none found at {}",
                    DEFAULT_PATHS.join(" or ")
                ),
            ),
        })
}

/// Reads and validates the config file at `path`, expanding `${VAR}` from the process environment.
pub fn load(path: &Path) -> Result<Spec, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, &path.display().to_string(), &|name| {
        std::env::var(name).ok()
    })
}

/// Validates config text. `origin` names it in messages; `env` answers `${VAR}` lookups.
pub fn parse(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Spec, ConfigError> {
    let invalid = |problems| ConfigError::Invalid {
        origin: origin.to_string(),
        problems,
    };
    let mut root: Value = match serde_yaml::from_str(text) {
        Ok(Value::Null) => {
            return Err(invalid(vec![Problem::at(
                "",
                "the config file is empty; it needs at least one upstream and one route \
                 (conf/promptgate.yaml is a complete example)",
            )]))
        }
        Ok(v) => v,
        Err(e) => {
            let (line, column) = match e.location() {
                Some(l) => (Some(l.line()), Some(l.column())),
                // serde_yaml gives no mark for a second document: point at its `---`.
                None => (second_document(text), None),
            };
            return Err(invalid(vec![Problem {
                path: String::new(),
                line,
                message: explain::yaml_syntax(&e.to_string(), line, column),
            }]));
        }
    };
    let index = LineIndex::build(text);
    let mut problems = Vec::new();
    let expanded = std::cell::RefCell::new(Vec::new());
    let recording_env = |name: &str| {
        let value = env(name);
        if let Some(v) = &value {
            expanded.borrow_mut().push(v.clone());
        }
        value
    };
    interpolate::expand_tree(&mut root, "", &recording_env, &mut problems);
    // A field whose `${VAR}` could not be expanded still holds the literal `${VAR}`; any
    // later problem about that field ("is not a URL", "not a duration") is noise that hides
    // the real one, so only the expansion problem is reported for it.
    let unexpanded: Vec<String> = problems.iter().map(|p| p.path.clone()).collect();
    if let Some(p) = missing_routes(&root) {
        problems.push(p);
    }
    let mut sections = Sections {
        index: &index,
        problems,
        // Files the config names (an upstream's `tls.ca_file`) are relative to its directory.
        base: Path::new(origin)
            .parent()
            .unwrap_or(Path::new(""))
            .to_path_buf(),
    };
    let spec = validate::validate(&mut sections, root);
    let mut problems: Vec<Problem> = sections
        .problems
        .into_iter()
        .enumerate()
        .filter(|(i, p)| *i < unexpanded.len() || !unexpanded.contains(&p.path))
        .map(|(_, p)| p)
        .collect();
    for p in &mut problems {
        if p.line.is_none() {
            p.line = index.line_of(&p.path);
        }
        // The top-level key check words its message like serde; say it the same plain way.
        if p.message.starts_with("unknown field `") && p.message.contains(", expected ") {
            p.message = explain::serde_message(&p.message);
        }
        redact_env_values(p, &expanded.borrow());
    }
    // Top to bottom, as the file reads; problems about the whole file first.
    problems.sort_by_key(|p| p.line.unwrap_or(0));
    match spec {
        Some(spec) if problems.is_empty() => Ok(spec),
        _ => Err(invalid(problems)),
    }
}

/// The line of the `---` that starts a second YAML document (one after content), if any.
fn second_document(text: &str) -> Option<usize> {
    let mut content = false;
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("---") && content {
            return Some(i + 1);
        }
        let t = line.trim();
        content |= !(t.is_empty() || t.starts_with('#') || t.starts_with("---"));
    }
    None
}

/// A config without routes would answer every request with 404: refuse it, saying so.
/// (A `routes` that is not a list is reported by the routes check itself.)
fn missing_routes(root: &Value) -> Option<Problem> {
    let Value::Mapping(map) = root else {
        return None;
    };
    let empty = match map.get("routes") {
        None | Some(Value::Null) => true,
        Some(Value::Sequence(items)) => items.is_empty(),
        Some(_) => false,
    };
    empty.then(|| {
        Problem::at(
            "routes",
            "no routes are configured, so every request would get 404; add at least one, \
             e.g. `routes: [{name: openai, match: {path_prefix: /openai}, strip_prefix: true, \
             targets: [openai]}]` (see conf/promptgate.yaml)",
        )
    })
}

/// `${VAR}` values shorter than this are left in messages: keys are long, and masking short
/// values (`1`, `true`, a port) would garble messages without protecting anything.
const MIN_REDACTED_LEN: usize = 8;

/// Masks every `${VAR}` value in a problem. Environment values are where API keys live, and a
/// key put in the wrong field (a URL, an enum, a duration) would otherwise be echoed by the
/// message about that field into `promptgate check`, the log and `POST /reload`'s answer.
fn redact_env_values(problem: &mut Problem, values: &[String]) {
    let mut values: Vec<&String> = values
        .iter()
        .filter(|v| v.len() >= MIN_REDACTED_LEN)
        .collect();
    // Longest first, so a value containing another is masked whole.
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    for v in values {
        for text in [&mut problem.message, &mut problem.path] {
            if text.contains(v.as_str()) {
                *text = text.replace(v.as_str(), "*****");
            }
        }
    }
}

/// Deserializes parts of the YAML tree one by one, collecting problems instead of stopping.
pub(crate) struct Sections<'a> {
    index: &'a LineIndex,
    pub problems: Vec<Problem>,
    /// The config file's directory, against which relative file paths in it are resolved.
    pub base: PathBuf,
}

impl Sections<'_> {
    pub fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::at(path, message));
    }

    /// Deserializes `value` as a `T`, or records why not: at the exact field inside `value`
    /// that is wrong (`routes[0].match.path_prefx`, not `routes[0]`), on that field's line,
    /// in plain words.
    pub fn typed<T: DeserializeOwned>(&mut self, path: &str, value: Value) -> Option<T> {
        match typed::deserialize_all(value) {
            Ok(v) => Some(v),
            Err(mistakes) => {
                for m in mistakes {
                    let full = typed::join(path, &m.path);
                    let line = self.index.line_of(&full);
                    self.problems.push(Problem {
                        path: full,
                        line,
                        message: explain::serde_message(&m.message),
                    });
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_values_never_appear_in_problems() {
        let key = "sk-live-0123456789abcdef";
        let text = "upstreams:\n  a: { url: \"${KEY}\" }\nroutes:\n  - name: r\n    strategy: \"${KEY}\"\n    targets: [\"${KEY}\"]\n";
        let err = parse(text, "c.yaml", &|name| {
            (name == "KEY").then(|| key.to_string())
        })
        .unwrap_err()
        .to_string();
        assert!(!err.contains(key), "{err}");
        assert!(!err.contains("0123456789"), "{err}");
        // The messages still say what is wrong, with the value masked where it was echoed.
        assert!(err.contains("*****"), "{err}");
        assert!(
            err.contains("routes[0].strategy: unknown value `*****`"),
            "{err}"
        );
    }

    #[test]
    fn short_env_values_are_left_readable() {
        let text = "listen: \"${ADDR}\"\n";
        let err = parse(text, "c.yaml", &|_| Some("nowhere".into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nowhere"), "{err}");
    }
}
