//! The problems found while a config is checked, each under the key path
//! it belongs to, and the checks shared by every section: durations.
//!
//! An error rejects the config. A warning does not: it names something the
//! config asks for that cannot be had yet, such as an upstream name that
//! does not resolve, and the config is applied with it.

use std::time::Duration;

use super::{ConfigError, ConfigErrors, KeyPath, LoadedConfig};

/// The longest duration any setting accepts. Timers add durations to the
/// current instant, and far larger ones (humantime reads up to about 584
/// billion years) would overflow it on a request's path.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The problems found so far, in the order they were found.
#[derive(Debug, Default)]
pub struct Diagnostics {
    errors: Vec<(KeyPath, String)>,
    warnings: Vec<(KeyPath, String)>,
}

impl Diagnostics {
    /// Records a problem with the value at `path`.
    pub fn error(&mut self, path: KeyPath, message: impl Into<String>) {
        self.errors.push((path, message.into()));
    }

    /// Records something the config asks for that cannot be had now, and
    /// does not stop the config from being applied.
    pub fn warning(&mut self, path: KeyPath, message: impl Into<String>) {
        self.warnings.push((path, message.into()));
    }

    /// How many problems were found so far: a check compares counts to
    /// know whether its own part added one.
    pub fn error_count(&self) -> usize {
        self.errors.len()
    }

    /// The duration written at `path`, such as `"250ms"` or `"5s"`: longer
    /// than zero and at most [`MAX_DURATION`]. A problem is recorded
    /// otherwise, and one second stands in so checking can go on.
    pub fn duration(&mut self, path: KeyPath, text: &str) -> Duration {
        match humantime::parse_duration(text) {
            Ok(duration) if duration > MAX_DURATION => {
                self.error(
                    path,
                    format!("{text:?} is longer than the 365 days any setting allows"),
                );
                Duration::from_secs(1)
            }
            Ok(duration) if !duration.is_zero() => duration,
            Ok(_) => {
                self.error(path, "must be longer than zero");
                Duration::from_secs(1)
            }
            Err(e) => {
                self.error(
                    path,
                    format!("{text:?} is not a duration ({e}); write e.g. \"250ms\" or \"5s\""),
                );
                Duration::from_secs(1)
            }
        }
    }

    /// The warnings, each with its line in `loaded`, when no problem was
    /// found; otherwise every problem with its line, named after `origin`.
    pub fn into_result(
        self,
        loaded: &LoadedConfig,
        origin: &str,
    ) -> Result<Vec<ConfigError>, ConfigErrors> {
        let located = |(path, message): (KeyPath, String)| {
            let line = loaded.source.line_of(&path);
            ConfigError::new(path, line, message)
        };
        if self.errors.is_empty() {
            return Ok(self.warnings.into_iter().map(located).collect());
        }
        let errors = self.errors.into_iter().map(located).collect();
        Err(ConfigErrors::new(origin.to_string(), errors))
    }
}
