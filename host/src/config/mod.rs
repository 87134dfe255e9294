//! Configuration: the schema, environment interpolation, and loading with
//! errors that name the key path and the line.
//!
//! Loading runs in three steps. The TOML text is parsed into a spanned tree;
//! `${VAR}` placeholders in string values are replaced in that tree, so every
//! value keeps the position it had in the file; the tree is then deserialized
//! into [`Config`]. Semantic checks happen when a config is compiled into a
//! [`crate::snapshot::Snapshot`], and their errors find their line through the
//! [`SourceMap`] kept from the first step.

mod acme;
mod diagnostics;
mod error;
mod interpolate;
mod schema;
mod source_map;

pub use acme::{AcmeSettings, ChallengeKind, CloudflareSettings};
pub use diagnostics::{Diagnostics, MAX_DURATION};
pub use error::{ConfigError, ConfigErrors, KeyPath};
pub use schema::*;
pub use source_map::SourceMap;

use std::path::Path;

use serde::Deserialize;

/// A parsed configuration together with the source it came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The configuration itself.
    pub config: Config,
    /// Where each key sits in the source, for error messages.
    pub source: SourceMap,
}

/// Reads and parses a configuration file. Environment placeholders are resolved
/// from the process environment.
pub fn load_file(path: &Path) -> Result<LoadedConfig, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::single(
            path.display().to_string(),
            ConfigError::new(KeyPath::root(), None, format!("cannot read file: {e}")),
        )
    })?;
    parse(&text, &path.display().to_string(), &|name| {
        std::env::var(name).ok()
    })
}

/// Parses configuration text. `origin` names the source in error messages;
/// `env` resolves `${VAR}` placeholders.
pub fn parse(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LoadedConfig, ConfigErrors> {
    let source = SourceMap::new(text);
    let fail = |errors: Vec<ConfigError>| ConfigErrors::new(origin.to_string(), errors);

    let mut document = toml::de::DeTable::parse(text).map_err(|e| {
        let line = e.span().map(|span| source.line_of_offset(span.start));
        fail(vec![ConfigError::new(
            KeyPath::root(),
            line,
            e.message().trim().to_string(),
        )])
    })?;

    let interpolation_errors = interpolate::resolve(&mut document, env, &source);
    if !interpolation_errors.is_empty() {
        return Err(fail(interpolation_errors));
    }

    // The fast path deserializes without tracking key paths; only a failure
    // pays for a second, tracked pass that can name the key.
    let deserializer = toml::de::Deserializer::from(document);
    let config = match Config::deserialize(deserializer) {
        Ok(config) => config,
        Err(untracked) => {
            let mut document = toml::de::DeTable::parse(text).map_err(|e| {
                fail(vec![ConfigError::new(
                    KeyPath::root(),
                    None,
                    e.message().trim().to_string(),
                )])
            })?;
            let _ = interpolate::resolve(&mut document, env, &source);
            let deserializer = toml::de::Deserializer::from(document);
            let error = match serde_path_to_error::deserialize::<_, Config>(deserializer) {
                // Deserialization is deterministic, so this is not expected;
                // the first pass's error still explains the problem.
                Ok(_) => {
                    let line = untracked
                        .span()
                        .map(|span| source.line_of_offset(span.start));
                    return Err(fail(vec![ConfigError::new(
                        KeyPath::root(),
                        line,
                        untracked.message().trim().to_string(),
                    )]));
                }
                Err(error) => error,
            };
            let path = KeyPath::from_serde(error.path());
            let inner = error.into_inner();
            let line = inner
                .span()
                .map(|span| source.line_of_offset(span.start))
                .or_else(|| source.line_of(&path));
            return Err(fail(vec![ConfigError::new(
                path,
                line,
                inner.message().trim().to_string(),
            )]));
        }
    };

    Ok(LoadedConfig { config, source })
}

impl Config {
    /// Parses configuration text with no environment, for tests and examples.
    pub fn from_toml(text: &str) -> Result<Config, ConfigErrors> {
        parse(text, "<inline>", &|_| None).map(|loaded| loaded.config)
    }
}

/// Deserializes a config fragment directly, bypassing interpolation; used by
/// unit tests of individual sections.
#[cfg(test)]
pub(crate) fn fragment<T: for<'de> Deserialize<'de>>(text: &str) -> T {
    toml::from_str(text).expect("valid fragment")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "UPSTREAM" => Some("10.0.0.1:80".into()),
            _ => None,
        }
    }

    #[test]
    fn parses_a_minimal_config_with_interpolation() {
        let text = r#"
[[listeners]]
address = "127.0.0.1:8080"

[placements.web]
endpoints = [{ address = "${UPSTREAM}" }, { address = "${OTHER:-10.0.0.2:80}" }]

[[routes]]
placement = "web"
"#;
        let loaded = parse(text, "test.toml", &env).unwrap();
        let web = &loaded.config.placements["web"];
        assert_eq!(web.endpoints[0].address, "10.0.0.1:80");
        assert_eq!(web.endpoints[1].address, "10.0.0.2:80");
        assert_eq!(loaded.config.routes[0].path_prefix, None);
    }

    #[test]
    fn unknown_key_names_path_and_line() {
        let text = "[[listeners]]\naddress = \"127.0.0.1:1\"\n\n[[routes]]\nplacement = \"a\"\nplacment = \"b\"\n";
        let err = parse(text, "test.toml", &env).unwrap_err();
        let first = &err.errors[0];
        assert_eq!(first.line, Some(6), "{err}");
        assert!(first.to_string().contains("routes[0]"), "{err}");
        assert!(first.to_string().contains("placment"), "{err}");
    }

    #[test]
    fn wrong_type_names_path_and_line() {
        let text = "[placements.a]\nendpoints = [{ address = \"x:1\", weight = \"heavy\" }]\n";
        let err = parse(text, "test.toml", &env).unwrap_err();
        let first = &err.errors[0];
        assert_eq!(first.line, Some(2), "{err}");
        assert!(
            first
                .path
                .to_string()
                .starts_with("placements.a.endpoints[0]"),
            "{err}"
        );
    }

    #[test]
    fn syntax_error_has_line() {
        let err = parse("[server]\nthreads = = 2\n", "t.toml", &env).unwrap_err();
        assert_eq!(err.errors[0].line, Some(2), "{err}");
    }

    #[test]
    fn undefined_variable_is_reported_with_line() {
        let text = "[[listeners]]\naddress = \"${NOPE}\"\n";
        let err = parse(text, "t.toml", &env).unwrap_err();
        assert_eq!(err.errors[0].line, Some(2));
        assert_eq!(err.errors[0].path.to_string(), "listeners[0].address");
        assert!(err.to_string().contains("NOPE"));
    }

    #[test]
    fn fragments_deserialize() {
        let rules: HeaderRules = fragment("remove = [\"x\"]");
        assert_eq!(rules.remove, vec!["x"]);
    }
}
