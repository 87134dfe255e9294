//! `${VAR}` and `${VAR:-default}` in string values.
//!
//! Placeholders are replaced inside the parsed, spanned tree rather than in the
//! raw text, so a value can never inject TOML syntax and every key keeps its
//! line for later error messages. `$$` writes a literal `$`.

use std::borrow::Cow;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::error::{ConfigError, KeyPath};
use super::source_map::SourceMap;

/// Replaces placeholders in every string value of `document`, returning one
/// error per unresolvable placeholder.
pub(super) fn resolve(
    document: &mut Spanned<DeTable<'_>>,
    env: &dyn Fn(&str) -> Option<String>,
    source: &SourceMap,
) -> Vec<ConfigError> {
    // The walk records only where a failure is; key paths are worked out
    // afterwards for the failures alone, so a large valid config pays for
    // no path bookkeeping.
    let mut failures = Vec::new();
    resolve_table(document.get_mut(), env, &mut failures);
    failures
        .into_iter()
        .map(|(offset, message)| {
            let path = path_to(document.get_ref(), offset, KeyPath::root()).unwrap_or_default();
            ConfigError::new(path, Some(source.line_of_offset(offset)), message)
        })
        .collect()
}

fn resolve_table(
    table: &mut DeTable<'_>,
    env: &dyn Fn(&str) -> Option<String>,
    failures: &mut Vec<(usize, String)>,
) {
    for (_, value) in table.iter_mut() {
        resolve_value(value, env, failures);
    }
}

fn resolve_value(
    value: &mut Spanned<DeValue<'_>>,
    env: &dyn Fn(&str) -> Option<String>,
    failures: &mut Vec<(usize, String)>,
) {
    let offset = value.span().start;
    match value.get_mut() {
        DeValue::String(text) if text.contains('$') => match expand(text, env) {
            Ok(expanded) => *text = Cow::Owned(expanded),
            Err(message) => failures.push((offset, message)),
        },
        DeValue::Array(array) => {
            for element in array.iter_mut() {
                resolve_value(element, env, failures);
            }
        }
        DeValue::Table(table) => resolve_table(table, env, failures),
        _ => {}
    }
}

/// The key path of the value starting at byte `offset`.
fn path_to(table: &DeTable<'_>, offset: usize, path: KeyPath) -> Option<KeyPath> {
    table
        .iter()
        .find_map(|(key, value)| value_path(value, offset, path.key(key.get_ref())))
}

fn value_path(value: &Spanned<DeValue<'_>>, offset: usize, path: KeyPath) -> Option<KeyPath> {
    match value.get_ref() {
        DeValue::Table(table) => path_to(table, offset, path),
        DeValue::Array(array) => array
            .iter()
            .enumerate()
            .find_map(|(index, element)| value_path(element, offset, path.index(index))),
        _ => (value.span().start == offset).then_some(path),
    }
}

/// Expands the placeholders in one string.
pub fn expand(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let close = body
                .find('}')
                .ok_or_else(|| format!("unterminated placeholder in {text:?}"))?;
            let inner = &body[..close];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            let valid_name =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid_name {
                return Err(format!("invalid variable name {name:?} in placeholder"));
            }
            match (env(name).filter(|v| !v.is_empty()), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set (write ${{{name}:-default}} to give a default, or $${{{name}}} for a literal ${{{name}}})"
                    ))
                }
            }
            rest = &body[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("example.com".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_variables_and_defaults() {
        assert_eq!(
            expand("https://${HOST}/x", &env).unwrap(),
            "https://example.com/x"
        );
        assert_eq!(expand("${MISSING:-fallback}", &env).unwrap(), "fallback");
        assert_eq!(expand("${EMPTY:-fallback}", &env).unwrap(), "fallback");
        assert_eq!(expand("${MISSING:-}", &env).unwrap(), "");
        assert_eq!(
            expand("cost $5 and $$HOME", &env).unwrap(),
            "cost $5 and $HOME"
        );
    }

    #[test]
    fn rejects_unset_and_malformed() {
        assert!(expand("${MISSING}", &env).unwrap_err().contains("MISSING"));
        assert!(expand("${HOST", &env).is_err());
        assert!(expand("${bad name}", &env).is_err());
    }
}
