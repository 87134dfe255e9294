//! Configuration errors that say where the problem is: the key path and the line.

use std::fmt;

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSegment {
    /// A table key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// A key path such as `routes[2].routing.default`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<PathSegment>);

impl KeyPath {
    /// The document root.
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// This path extended by a table key.
    pub fn key(&self, key: &str) -> Self {
        let mut segments = self.0.clone();
        segments.push(PathSegment::Key(key.to_string()));
        Self(segments)
    }

    /// This path extended by an array index.
    pub fn index(&self, index: usize) -> Self {
        let mut segments = self.0.clone();
        segments.push(PathSegment::Index(index));
        Self(segments)
    }

    /// Converts the path `serde_path_to_error` tracked.
    pub(crate) fn from_serde(path: &serde_path_to_error::Path) -> Self {
        use serde_path_to_error::Segment;
        Self(
            path.iter()
                .filter_map(|segment| match segment {
                    Segment::Seq { index } => Some(PathSegment::Index(*index)),
                    Segment::Map { key } | Segment::Enum { variant: key } => {
                        Some(PathSegment::Key(key.clone()))
                    }
                    Segment::Unknown => None,
                })
                .collect(),
        )
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top level)");
        }
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                PathSegment::Index(index) => write!(f, "[{index}]")?,
                PathSegment::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let bare = !key.is_empty()
                        && key
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if bare {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// One problem in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key the problem is at.
    pub path: KeyPath,
    /// The 1-based line of that key, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// A new error at `path`.
    pub fn new(path: KeyPath, line: Option<usize>, message: impl Into<String>) -> Self {
        Self {
            path,
            line,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// Every problem found in one configuration source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The file name or URL the configuration came from.
    pub origin: String,
    /// The problems, in file order where lines are known.
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// Errors from `origin`, sorted by line.
    pub fn new(origin: String, mut errors: Vec<ConfigError>) -> Self {
        errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
        Self { origin, errors }
    }

    /// A single error from `origin`.
    pub fn single(origin: String, error: ConfigError) -> Self {
        Self::new(origin, vec![error])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.errors.len();
        write!(
            f,
            "{}: {count} error{}",
            self.origin,
            if count == 1 { "" } else { "s" }
        )?;
        for error in &self.errors {
            match error.line {
                Some(line) => write!(
                    f,
                    "\n  {}:{line}: {}: {}",
                    self.origin, error.path, error.message
                )?,
                None => write!(f, "\n  {}: {}: {}", self.origin, error.path, error.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_like_toml() {
        let path = KeyPath::root()
            .key("routes")
            .index(2)
            .key("routing")
            .key("table")
            .key("a.b");
        assert_eq!(path.to_string(), "routes[2].routing.table.\"a.b\"");
        assert_eq!(KeyPath::root().to_string(), "(top level)");
    }
}
