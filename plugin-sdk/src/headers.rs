//! Helpers for header lists and paths.

use crate::Headers;

/// Lookups on a header list. Names in views are lowercase.
pub trait HeaderList {
    /// The first value of `name` (any case).
    fn get(&self, name: &str) -> Option<&str>;
    /// Every value of `name` (any case).
    fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a;
    /// A cookie's value from the `cookie` headers.
    fn cookie(&self, name: &str) -> Option<&str>;
}

impl HeaderList for Headers {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn cookie(&self, name: &str) -> Option<&str> {
        self.get_all("cookie")
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim().trim_matches('"'))
    }
}

/// A query parameter's raw value.
pub fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `path` with `query` appended when there is one.
pub fn with_query(path: &str, query: Option<&str>) -> String {
    match query {
        Some(query) if !query.is_empty() => format!("{path}?{query}"),
        _ => path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let headers: Headers = vec![
            ("x-a".into(), "1".into()),
            ("cookie".into(), "a=1; tenant=acme".into()),
            ("x-a".into(), "2".into()),
        ];
        assert_eq!(headers.get("X-A"), Some("1"));
        assert_eq!(headers.get_all("x-a").collect::<Vec<_>>(), vec!["1", "2"]);
        assert_eq!(headers.cookie("tenant"), Some("acme"));
        assert_eq!(query_param(Some("a=1&b=2&flag"), "b"), Some("2"));
        assert_eq!(query_param(Some("a=1&flag"), "flag"), Some(""));
        assert_eq!(with_query("/p", Some("x=1")), "/p?x=1");
        assert_eq!(with_query("/p", None), "/p");
    }
}
