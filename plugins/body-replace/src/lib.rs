//! `body-replace`: string or regex replacement in text bodies, like Caddy's
//! `replace-response` and pingap's `sub_filter`.
//!
//! ```toml
//! [[routes.plugins]]
//! name = "body-replace"
//! hooks = ["on_response_body"]
//! body_limit = "2MiB"
//! config.content_types = ["text/html"]
//! config.rules = [
//!     { find = "http://shop.internal", replace = "https://shop.example.com" },
//!     { regex = "build-[0-9a-f]{7}", replace = "build" },
//! ]
//! ```
//!
//! Rules apply in order, each to the result of the one before, and replace
//! every match. A `regex` rule's `replace` may name captures (`$1`,
//! `${name}`). Only bodies whose `content-type` starts with one of
//! `content_types` are touched (`text/` by default, any case); others, and
//! bodies that are not UTF-8, pass unchanged. Sluice buffers the body up to
//! the attachment's `body_limit` and fixes the framing after a change.

use serde::Deserialize;
use sluice_plugin_sdk::prelude::*;

/// The plugin's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, try_from = "WrittenConfig")]
pub struct Config {
    rules: Vec<Rule>,
    content_types: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            content_types: default_content_types(),
        }
    }
}

/// The configuration as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WrittenConfig {
    #[serde(default)]
    rules: Vec<WrittenRule>,
    #[serde(default = "default_content_types")]
    content_types: Vec<String>,
}

fn default_content_types() -> Vec<String> {
    vec!["text/".to_string()]
}

/// One rule as written: `find` (a literal) or `regex`, and `replace`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WrittenRule {
    find: Option<String>,
    regex: Option<String>,
    replace: String,
}

/// A compiled rule.
#[derive(Debug)]
enum Rule {
    Literal {
        find: String,
        replace: String,
    },
    Pattern {
        regex: regex::Regex,
        replace: String,
    },
}

impl TryFrom<WrittenConfig> for Config {
    type Error = String;

    fn try_from(written: WrittenConfig) -> Result<Self, String> {
        let rules = written
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, rule)| match (rule.find, rule.regex) {
                (Some(find), None) if !find.is_empty() => Ok(Rule::Literal {
                    find,
                    replace: rule.replace,
                }),
                (None, Some(pattern)) => regex::Regex::new(&pattern)
                    .map(|regex| Rule::Pattern {
                        regex,
                        replace: rule.replace,
                    })
                    .map_err(|e| format!("rules[{i}]: invalid regex {pattern:?}: {e}")),
                _ => Err(format!(
                    "rules[{i}]: set one of `find` (not empty) and `regex`"
                )),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            rules,
            content_types: written
                .content_types
                .iter()
                .map(|t| t.to_ascii_lowercase())
                .collect(),
        })
    }
}

impl Config {
    /// Whether a body of `content_type` is one to touch.
    fn wants(&self, content_type: Option<&str>) -> bool {
        let content_type = content_type.unwrap_or_default().to_ascii_lowercase();
        self.content_types
            .iter()
            .any(|prefix| content_type.starts_with(prefix.as_str()))
    }

    /// `body` with every rule applied, or `None` when nothing changed.
    pub fn apply(&self, content_type: Option<&str>, body: &[u8]) -> Option<Vec<u8>> {
        if self.rules.is_empty() || !self.wants(content_type) {
            return None;
        }
        let mut text = std::str::from_utf8(body).ok()?.to_string();
        let mut changed = false;
        for rule in &self.rules {
            let replaced = match rule {
                Rule::Literal { find, replace } => text
                    .contains(find.as_str())
                    .then(|| text.replace(find.as_str(), replace)),
                Rule::Pattern { regex, replace } => {
                    match regex.replace_all(&text, replace.as_str()) {
                        std::borrow::Cow::Owned(replaced) => Some(replaced),
                        std::borrow::Cow::Borrowed(_) => None,
                    }
                }
            };
            if let Some(replaced) = replaced {
                text = replaced;
                changed = true;
            }
        }
        changed.then(|| text.into_bytes())
    }
}

/// The plugin.
pub struct BodyReplace;

impl Plugin for BodyReplace {
    type Config = Config;

    fn on_request_body(config: &Config, request: &RequestView, body: &[u8]) -> Option<Vec<u8>> {
        let replaced = config.apply(request.headers().get("content-type").as_deref(), body);
        if replaced.is_some() {
            host::counter_add("body_replace_applied", 1);
        }
        replaced
    }

    fn on_response_body(
        config: &Config,
        _request: &RequestView,
        response: &ResponseView,
        body: &[u8],
    ) -> Option<Vec<u8>> {
        let replaced = config.apply(response.headers().get("content-type").as_deref(), body);
        if replaced.is_some() {
            host::counter_add("body_replace_applied", 1);
        }
        replaced
    }
}

sluice_plugin_sdk::export!(BodyReplace => on_request_body, on_response_body);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin_sdk::testing::*;

    fn config(json: &str) -> Config {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn literal_and_regex_rules_apply_in_order() {
        let config = config(
            r#"{"rules": [
                {"find": "http://shop.internal", "replace": "https://shop.example.com"},
                {"regex": "v(\\d+)", "replace": "version $1"}
            ]}"#,
        );
        let body = b"<a href=\"http://shop.internal/v2\">v2</a>";
        let replaced = config
            .apply(Some("text/html; charset=utf-8"), body)
            .unwrap();
        assert_eq!(
            String::from_utf8(replaced).unwrap(),
            "<a href=\"https://shop.example.com/version 2\">version 2</a>"
        );
    }

    #[test]
    fn other_content_types_binary_and_unmatched_bodies_pass_unchanged() {
        let config = config(r#"{"rules": [{"find": "a", "replace": "b"}]}"#);
        assert_eq!(config.apply(Some("application/json"), b"a"), None);
        assert_eq!(config.apply(None, b"a"), None);
        assert_eq!(config.apply(Some("text/plain"), &[0xff, 0xfe, b'a']), None);
        assert_eq!(config.apply(Some("TEXT/PLAIN"), b"xyz"), None);
        assert_eq!(config.apply(Some("Text/Plain"), b"a"), Some(b"b".to_vec()));
    }

    #[test]
    fn bad_rules_are_refused_with_their_index() {
        let error =
            configure::<BodyReplace>(r#"{"rules": [{"regex": "(", "replace": ""}]}"#).unwrap_err();
        assert!(error.contains("rules[0]: invalid regex"), "{error}");
        let error = configure::<BodyReplace>(r#"{"rules": [{"replace": "x"}]}"#).unwrap_err();
        assert!(error.contains("rules[0]: set one of"), "{error}");
    }

    #[test]
    fn the_response_hook_reads_the_content_type() {
        configure::<BodyReplace>(
            r#"{"rules": [{"find": "old", "replace": "new"}], "content_types": ["application/json"]}"#,
        )
        .unwrap();
        let request = request("GET", "/").build();
        let json = response(200)
            .header("Content-Type", "application/json")
            .build();
        assert_eq!(
            on_response_body::<BodyReplace>(&request, &json, b"{\"v\":\"old\"}"),
            Some(b"{\"v\":\"new\"}".to_vec())
        );
        let html = response(200).header("content-type", "text/html").build();
        assert_eq!(
            on_response_body::<BodyReplace>(&request, &html, b"old"),
            None
        );
        assert_eq!(
            recorded().counters,
            [("body_replace_applied".to_string(), 1)]
        );
    }
}
