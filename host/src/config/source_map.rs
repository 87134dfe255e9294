//! Finds the line a key path sits on in the original TOML text.

use std::sync::Arc;

use toml::de::{DeTable, DeValue};

use super::error::{KeyPath, PathSegment};

/// The original text of a configuration, kept to turn key paths and byte
/// offsets into line numbers. Lookups re-parse the text; they happen only
/// when reporting errors.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    text: Arc<str>,
    line_starts: Arc<[usize]>,
}

impl SourceMap {
    /// Indexes `text`.
    pub fn new(text: &str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect::<Vec<_>>();
        Self {
            text: Arc::from(text),
            line_starts: line_starts.into(),
        }
    }

    /// The original text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The 1-based line holding byte `offset`.
    pub fn line_of_offset(&self, offset: usize) -> usize {
        match self.line_starts.binary_search(&offset) {
            Ok(line) => line + 1,
            Err(next) => next,
        }
    }

    /// The line of the deepest part of `path` present in the text: the key
    /// itself when it is written, else its closest written parent.
    pub fn line_of(&self, path: &KeyPath) -> Option<usize> {
        let root = DeTable::parse(&self.text).ok()?;
        let mut table: &DeTable<'_> = root.get_ref();
        let mut value: Option<&DeValue<'_>> = None;
        let mut found: Option<usize> = None;
        for segment in &path.0 {
            match (segment, value) {
                (PathSegment::Key(key), None)
                | (PathSegment::Key(key), Some(DeValue::Table(_))) => {
                    if let Some(DeValue::Table(inner)) = value {
                        table = inner;
                    }
                    let Some((spanned_key, spanned_value)) = table
                        .iter()
                        .find(|(k, _)| k.get_ref().as_ref() == key.as_str())
                    else {
                        break;
                    };
                    found = Some(spanned_key.span().start);
                    value = Some(spanned_value.get_ref());
                }
                (PathSegment::Index(index), Some(DeValue::Array(array))) => {
                    let Some(element) = array.get(*index) else {
                        break;
                    };
                    let span = element.span();
                    if !span.is_empty() {
                        found = Some(span.start);
                    }
                    value = Some(element.get_ref());
                }
                _ => break,
            }
        }
        found.map(|offset| self.line_of_offset(offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"[server]
threads = 2

[[routes]]
placement = "a"

[[routes]]
hosts = ["x"]
placement = "b"

[placements.a]
endpoints = [
  { address = "1.2.3.4:80" },
  { address = "bad" },
]
"#;

    #[test]
    fn finds_lines_of_nested_keys() {
        let map = SourceMap::new(TEXT);
        let path = KeyPath::root().key("routes").index(1).key("placement");
        assert_eq!(map.line_of(&path), Some(9));
        let path = KeyPath::root().key("server").key("threads");
        assert_eq!(map.line_of(&path), Some(2));
        let path = KeyPath::root()
            .key("placements")
            .key("a")
            .key("endpoints")
            .index(1)
            .key("address");
        assert_eq!(map.line_of(&path), Some(14));
    }

    #[test]
    fn missing_key_falls_back_to_parent() {
        let map = SourceMap::new(TEXT);
        let path = KeyPath::root().key("placements").key("a").key("balance");
        assert_eq!(map.line_of(&path), Some(11));
    }

    #[test]
    fn offsets_map_to_lines() {
        let map = SourceMap::new("a\nb\nc");
        assert_eq!(map.line_of_offset(0), 1);
        assert_eq!(map.line_of_offset(2), 2);
        assert_eq!(map.line_of_offset(4), 3);
    }
}
