//! Config problems in plain words: serde's and libyaml's wording (`invalid type: string "x",
//! expected usize`, `did not find expected key`) rewritten into what a user can act on.

use super::units::{DURATION_EXAMPLES, DURATION_UNITS};

/// Rewrites one deserialization error message (serde's standard forms, humantime's duration
/// errors); anything else, such as our own messages, is returned unchanged.
pub fn serde_message(raw: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = raw.strip_prefix(prefix) {
            // The found value may itself contain ", expected "; the real separator is the last.
            if let Some(at) = rest.rfind(", expected ") {
                let (found, expected) = (&rest[..at], &rest[at + ", expected ".len()..]);
                return format!(
                    "expected {}, found {}",
                    expected_in_words(expected),
                    found_in_words(found)
                );
            }
        }
    }
    if let Some(rest) = raw.strip_prefix("invalid length ") {
        if let Some((len, expected)) = rest.split_once(", expected ") {
            return format!(
                "expected {}, found a list of {len}",
                expected_in_words(expected)
            );
        }
    }
    if let Some((name, choices)) = unknown(raw, "unknown field ") {
        return match (choices.is_empty(), suggest(&name, &choices)) {
            (true, _) => format!("unknown field `{name}` (this takes no fields)"),
            (false, Some(s)) => format!(
                "unknown field `{name}`; did you mean `{s}`? (fields here: {})",
                choices.join(", ")
            ),
            (false, None) => format!(
                "unknown field `{name}` (fields here: {})",
                choices.join(", ")
            ),
        };
    }
    if let Some((name, choices)) = unknown(raw, "unknown variant ") {
        return match suggest(&name, &choices) {
            Some(s) => format!(
                "unknown value `{name}`; did you mean `{s}`? (one of: {})",
                choices.join(", ")
            ),
            None => format!("unknown value `{name}` (one of: {})", choices.join(", ")),
        };
    }
    if let Some(field) = raw
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        return format!("missing required field `{field}`");
    }
    if let Some(reason) = humantime_reason(raw) {
        return super::units::duration_message(None, &reason);
    }
    raw.to_string()
}

/// `unknown field `x`, expected one of `a`, `b``  →  ("x", ["a", "b"]). Also accepts a list
/// without backticks (the top-level check's own message).
fn unknown(raw: &str, prefix: &str) -> Option<(String, Vec<String>)> {
    let rest = raw.strip_prefix(prefix)?.strip_prefix('`')?;
    let (name, rest) = rest.split_once('`')?;
    let list = rest
        .strip_prefix(", expected one of ")
        .or_else(|| rest.strip_prefix(", expected "))
        .unwrap_or("");
    let choices = if list.starts_with("there are no") {
        Vec::new()
    } else {
        list.split(", ")
            .flat_map(|part| part.split(" or "))
            .map(|c| c.trim().trim_matches('`').to_string())
            .filter(|c| !c.is_empty())
            .collect()
    };
    Some((name.to_string(), choices))
}

/// The closest choice to a misspelt `word`, when it is close enough to be a typo.
fn suggest<'a>(word: &str, choices: &'a [String]) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    choices
        .iter()
        .map(|c| (edit_distance(&word, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d > 0 && *d <= (c.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.as_str())
}

/// Edits (insert, delete, substitute, swap two neighbours) from `a` to `b`: `modle` is one
/// edit from `model`.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// serde's "expected …" (a Rust type name, or a visitor's own words) in words users know.
fn expected_in_words(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number (like 3)".into(),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number (like 3)".into(),
        "f32" | "f64" => "a number (like 0.5)".into(),
        "a boolean" => "true or false".into(),
        "a string" | "a borrowed string" => "text".into(),
        "a sequence" => "a list (like [a, b], or lines starting with \"- \")".into(),
        "a map" => "a mapping (key: value lines)".into(),
        "a duration" => format!("{DURATION_EXAMPLES} ({DURATION_UNITS})"),
        e if e.starts_with("struct ") => "a mapping (key: value lines)".into(),
        e if e.starts_with("enum ") => "one of the names listed for this field".into(),
        e => e.to_string(),
    }
}

/// serde's `Unexpected` rendering (`string "x"`, `integer `5``) in words.
fn found_in_words(found: &str) -> String {
    let ticked = |prefix: &str| {
        found
            .strip_prefix(prefix)
            .map(|v| v.trim_matches('`').to_string())
    };
    if let Some(s) = found.strip_prefix("string ") {
        return s.to_string();
    }
    if let Some(n) = ticked("integer ").or_else(|| ticked("floating point ")) {
        return format!("the number {n}");
    }
    if let Some(b) = ticked("boolean ") {
        return b;
    }
    match found {
        "unit value" => "nothing (an empty value)".into(),
        "sequence" => "a list".into(),
        "map" => "a mapping".into(),
        f => f.to_string(),
    }
}

/// humantime's errors (durations parsed outside `units`), as the reason part of our message.
fn humantime_reason(raw: &str) -> Option<String> {
    if raw.starts_with("time unit needed") {
        Some("it has no unit".into())
    } else if let Some(rest) = raw.strip_prefix("unknown time unit ") {
        let unit = rest.split(',').next().unwrap_or(rest);
        Some(format!("unknown unit {unit}"))
    } else if raw.starts_with("number is too large") {
        Some("it is too large".into())
    } else if raw == "value was empty" {
        Some("it is empty".into())
    } else if raw.starts_with("invalid character at ") || raw.starts_with("expected number at ") {
        Some("it is not a number followed by a unit".into())
    } else {
        None
    }
}

/// A YAML syntax error (serde_yaml's rendering of libyaml's problem and context, with
/// `at line L column C` marks) as `not valid YAML at line L, column C: <plain words>`.
pub fn yaml_syntax(raw: &str, line: Option<usize>, column: Option<usize>) -> String {
    let (problem, context) = match raw.split_once(", while ") {
        Some((p, c)) => (p, Some(c)),
        None => (raw, None),
    };
    let problem = strip_marks(problem);
    // The context's own mark: where the unclosed bracket (or the block) started.
    let opened = context.and_then(|c| marks(c).first().map(|(l, _)| *l));
    let context = context.map(strip_marks).unwrap_or_default();
    let on = |what: &str| match opened {
        Some(l) => format!("{what} opened on line {l}"),
        None => what.to_string(),
    };
    let plain = match problem.as_str() {
        "did not find expected ',' or ']'" => format!(
            "{} is not closed (expected `,` or `]`)",
            on("a list `[`")
        ),
        "did not find expected ',' or '}'" => format!(
            "{} is not closed (expected `,` or `}}`)",
            on("a mapping `{`")
        ),
        "mapping values are not allowed in this context" => {
            "unexpected `:` (a value containing \": \" needs quotes, or this line is indented wrongly)".into()
        }
        "did not find expected key" => {
            "this line does not line up with the keys above it (check the indentation), or is not a `key: value`".into()
        }
        "did not find expected '-' indicator" => {
            "this line does not line up with the list items (`- `) above it".into()
        }
        "could not find expected ':'" => "a key is missing its `:`".into(),
        "found character that cannot start any plain scalar" => {
            "a value starts with a character that needs quotes (such as @, ` or %)".into()
        }
        "found unexpected end of stream" => {
            "the file ends inside a value (an unclosed quote or bracket?)".into()
        }
        "found unknown escape character" => {
            "unknown escape sequence in a \"double-quoted\" string (write \\\\ for a backslash, or use 'single quotes')".into()
        }
        "did not find expected node content" => "a value is missing here".into(),
        "deserializing from YAML containing more than one document is not supported" => {
            "the file holds more than one YAML document (a `---` line after the start); promptgate reads one".into()
        }
        "block sequence entries are not allowed in this context" => {
            "a list item (`- `) cannot start on the same line as its key; put it on the next line, indented".into()
        }
        p if p.contains("tab") => "a tab is used for indentation; YAML needs spaces".into(),
        p if p.starts_with("duplicate entry with key ") => format!(
            "{} appears twice in the same mapping",
            &p["duplicate entry with key ".len()..]
        ),
        p if context.contains("flow sequence") || context.contains("flow mapping") => {
            format!("{p} ({})", on("in a bracket"))
        }
        p => p.to_string(),
    };
    match (line, column) {
        (Some(l), Some(c)) => format!("not valid YAML at line {l}, column {c}: {plain}"),
        (Some(l), None) => format!("not valid YAML at line {l}: {plain}"),
        _ => format!("not valid YAML: {plain}"),
    }
}

/// Every `line L column C` mark in `text`, in order.
fn marks(text: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("line ") {
        rest = &rest[at + 5..];
        let line: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let after = &rest[line.len()..];
        if let (Ok(l), Some(col)) = (line.parse(), after.strip_prefix(" column ")) {
            let column: String = col.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(c) = column.parse() {
                found.push((l, c));
            }
        }
    }
    found
}

/// `text` without its ` at line L column C` marks.
fn strip_marks(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(" at line ") {
        out.push_str(&rest[..at]);
        let after = &rest[at + " at line ".len()..];
        let skip = after
            .find(|c: char| !(c.is_ascii_digit() || c == ' ' || "column".contains(c)))
            .unwrap_or(after.len());
        rest = &after[skip..];
    }
    out.push_str(rest);
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_wording_becomes_plain() {
        for (raw, plain) in [
            (
                "invalid type: string \"many\", expected usize",
                "expected a whole number (like 3), found \"many\"",
            ),
            (
                "invalid value: integer `-1`, expected u32",
                "expected a whole number (like 3), found the number -1",
            ),
            (
                "invalid type: sequence, expected a boolean",
                "expected true or false, found a list",
            ),
            (
                "invalid type: string \"a, expected b\", expected f64",
                "expected a number (like 0.5), found \"a, expected b\"",
            ),
            (
                "unknown field `strip_prefx`, expected one of `name`, `match`, `strip_prefix`",
                "unknown field `strip_prefx`; did you mean `strip_prefix`? (fields here: name, match, strip_prefix)",
            ),
            (
                "unknown field `every`, expected `watch`",
                "unknown field `every` (fields here: watch)",
            ),
            (
                "unknown variant `weightd`, expected one of `failover`, `weighted`, `latency`",
                "unknown value `weightd`; did you mean `weighted`? (one of: failover, weighted, latency)",
            ),
            (
                "unknown variant `xml`, expected `text` or `json`",
                "unknown value `xml` (one of: text, json)",
            ),
            ("missing field `url`", "missing required field `url`"),
            ("already plain", "already plain"),
        ] {
            assert_eq!(serde_message(raw), plain, "{raw}");
        }
        let msg = serde_message("unknown time unit \"x\", supported units: ns, us");
        assert!(
            msg.starts_with("not a duration (unknown unit \"x\")"),
            "{msg}"
        );
    }

    #[test]
    fn yaml_syntax_in_plain_words() {
        let msg = yaml_syntax(
            "did not find expected ',' or ']' at line 3 column 1, while parsing a flow sequence at line 1 column 9",
            Some(3),
            Some(1),
        );
        assert_eq!(
            msg,
            "not valid YAML at line 3, column 1: a list `[` opened on line 1 is not closed (expected `,` or `]`)"
        );
        assert_eq!(
            strip_marks("x at line 12 column 3, y at line 1 column 1"),
            "x, y"
        );
    }
}
