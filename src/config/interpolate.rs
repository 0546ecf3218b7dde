//! `${VAR}` and `${VAR:-default}` expansion in the string values of a parsed YAML tree.

use super::Problem;
use serde_yaml::Value;

/// Expands every `${…}` reference in the string scalars of `value`, in place.
/// `lookup` answers environment variables (injected so tests need not touch the process env).
/// Each missing variable becomes one problem at the field path where it was used.
pub fn expand_tree(
    value: &mut Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) {
    match value {
        Value::String(s) if s.contains("${") => match expand(s, lookup) {
            Ok(expanded) => *s = expanded,
            Err(msg) => problems.push(Problem::at(path, msg)),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_tree(item, &format!("{path}[{i}]"), lookup, problems);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let key = key.as_str().unwrap_or("?");
                let child = if path.is_empty() {
                    key.to_string()
                } else {
                    format!("{path}.{key}")
                };
                expand_tree(item, &child, lookup, problems);
            }
        }
        Value::Tagged(tagged) => expand_tree(&mut tagged.value, path, lookup, problems),
        _ => {}
    }
}

/// Expands one string. `$${` is a literal `${`.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(start) = rest.find("${") {
        if rest[..start].ends_with('$') {
            // `$${` escapes a literal `${`.
            out.push_str(&rest[..start - 1]);
            out.push_str("${");
            rest = &rest[start + 2..];
            continue;
        }
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed \"${{\" in {input:?}"))?;
        let reference = &after[..end];
        let (name, default) = match reference.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (reference, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "invalid variable name {name:?} in \"${{{reference}}}\""
            ));
        }
        match (lookup(name).filter(|v| !v.is_empty()), default) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(format!(
                    "environment variable {name} is not set (use \"${{{name}:-default}}\" for a fallback)"
                ))
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("sk-1".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_set_variables_and_defaults() {
        assert_eq!(expand("Bearer ${KEY}", &env).unwrap(), "Bearer sk-1");
        assert_eq!(expand("${NOPE:-x}/${KEY}", &env).unwrap(), "x/sk-1");
        assert_eq!(expand("${EMPTY:-fallback}", &env).unwrap(), "fallback");
        assert_eq!(expand("plain", &env).unwrap(), "plain");
        assert_eq!(expand("$${KEY}", &env).unwrap(), "${KEY}");
    }

    #[test]
    fn missing_variable_is_named() {
        let err = expand("Bearer ${OPENAI_API_KEY}", &env).unwrap_err();
        assert!(err.contains("OPENAI_API_KEY"), "{err}");
        assert!(expand("${KEY", &env).unwrap_err().contains("unclosed"));
        assert!(expand("${a-b}", &env)
            .unwrap_err()
            .contains("invalid variable"));
    }

    #[test]
    fn tree_errors_carry_the_field_path() {
        let mut v: Value = serde_yaml::from_str(
            "upstreams:\n  openai:\n    headers:\n      authorization: \"Bearer ${NOPE}\"\n",
        )
        .unwrap();
        let mut problems = Vec::new();
        expand_tree(&mut v, "", &env, &mut problems);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "upstreams.openai.headers.authorization");
    }
}
