//! Header lookups, and helpers for paths and queries.
//!
//! ```
//! use sluice_plugin_sdk::headers::{query_param, with_query};
//! use sluice_plugin_sdk::HeaderView;
//!
//! let listed = [
//!     ("Cookie".to_string(), "theme=dark; tenant=acme".to_string()),
//!     ("Accept".to_string(), "text/html".to_string()),
//! ];
//! let headers = HeaderView::listed(&listed);
//! assert_eq!(headers.get("accept").as_deref(), Some("text/html"));
//! assert_eq!(headers.cookie("tenant").as_deref(), Some("acme"));
//! assert!(!headers.contains("authorization"));
//!
//! assert_eq!(query_param(Some("page=2&tenant=acme"), "tenant"), Some("acme"));
//! assert_eq!(with_query("/users", Some("page=2")), "/users?page=2");
//! ```

use crate::bindings::sluice::plugin::{request as host_request, response as host_response};
use crate::Headers;

/// The headers of a request or response.
///
/// Inside Sluice each lookup asks the host for the values of one name, so
/// a hook that reads two headers does not pay for forty. In native tests
/// ([`crate::testing`]) the view reads a list.
#[derive(Debug, Clone, Copy)]
pub struct HeaderView<'a>(Source<'a>);

#[derive(Debug, Clone, Copy)]
enum Source<'a> {
    Request,
    Response,
    Listed(&'a [(String, String)]),
}

impl<'a> HeaderView<'a> {
    /// The headers of the host's request in the call in progress.
    pub(crate) fn request() -> Self {
        Self(Source::Request)
    }

    /// The headers of the host's response in the call in progress.
    pub(crate) fn response() -> Self {
        Self(Source::Response)
    }

    /// A view of `headers`. Names are matched in any case.
    pub fn listed(headers: &'a [(String, String)]) -> Self {
        Self(Source::Listed(headers))
    }

    /// Every value of `name` (any case), in order.
    pub fn get_all(&self, name: &str) -> Vec<String> {
        match self.0 {
            Source::Request => host_request::header_values(name),
            Source::Response => host_response::header_values(name),
            Source::Listed(list) => list
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
                .collect(),
        }
    }

    /// The first value of `name` (any case).
    pub fn get(&self, name: &str) -> Option<String> {
        match self.0 {
            Source::Request => host_request::header(name),
            Source::Response => host_response::header(name),
            Source::Listed(list) => list
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone()),
        }
    }

    /// Whether there is a header `name` (any case).
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// A cookie's value from the `cookie` headers.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.get_all("cookie").iter().find_map(|value| {
            value
                .split(';')
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(k, _)| k.trim() == name)
                .map(|(_, v)| v.trim().trim_matches('"').to_string())
        })
    }

    /// Every header, in order, names lowercase.
    pub fn entries(&self) -> Headers {
        match self.0 {
            Source::Request => host_request::all_headers(),
            Source::Response => host_response::all_headers(),
            Source::Listed(list) => list
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
                .collect(),
        }
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
        let list: Headers = vec![
            ("x-a".into(), "1".into()),
            ("Cookie".into(), "a=1; tenant=acme".into()),
            ("x-a".into(), "2".into()),
        ];
        let headers = HeaderView::listed(&list);
        assert_eq!(headers.get("X-A").as_deref(), Some("1"));
        assert_eq!(headers.get_all("x-a"), vec!["1", "2"]);
        assert!(headers.contains("COOKIE"));
        assert!(!headers.contains("x-b"));
        assert_eq!(headers.cookie("tenant").as_deref(), Some("acme"));
        assert_eq!(headers.entries()[1].0, "cookie");
        assert_eq!(query_param(Some("a=1&b=2&flag"), "b"), Some("2"));
        assert_eq!(query_param(Some("a=1&flag"), "flag"), Some(""));
        assert_eq!(with_query("/p", Some("x=1")), "/p?x=1");
        assert_eq!(with_query("/p", None), "/p");
    }
}
