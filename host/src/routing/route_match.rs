//! Route matching by host and path prefix.
//!
//! Routes are bucketed by host: exact names in one map, `*.suffix` wildcards in
//! another keyed by the suffix, and host-less routes in a last bucket. A
//! request tries its exact host, then each wildcard suffix from the longest
//! to the shortest, then the host-less routes; inside a bucket the longest
//! path prefix wins. The first bucket with a matching prefix answers, so a
//! more specific host always takes precedence over a longer prefix on a less
//! specific one.

use std::collections::HashMap;

/// Indexes of routes, grouped for matching.
#[derive(Debug, Default)]
pub struct RouteIndex {
    exact: HashMap<Box<str>, Bucket>,
    wildcard: HashMap<Box<str>, Bucket>,
    any_host: Bucket,
}

/// Routes sharing one host pattern, longest prefix first.
#[derive(Debug, Default)]
struct Bucket {
    entries: Vec<(Box<str>, usize)>,
}

impl Bucket {
    fn insert(&mut self, prefix: &str, route: usize) -> Result<(), usize> {
        if let Some((_, existing)) = self.entries.iter().find(|(p, _)| &**p == prefix) {
            return Err(*existing);
        }
        let position = self
            .entries
            .iter()
            .position(|(p, _)| p.len() < prefix.len())
            .unwrap_or(self.entries.len());
        self.entries.insert(position, (prefix.into(), route));
        Ok(())
    }

    fn find(&self, path: &str) -> Option<usize> {
        self.entries
            .iter()
            .find(|(prefix, _)| path.starts_with(&**prefix))
            .map(|(_, route)| *route)
    }
}

/// A host pattern as written in a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Matches this host exactly (case-insensitively).
    Exact(String),
    /// `*.suffix`: matches any host ending in `.suffix`.
    Wildcard(String),
    /// Matches any host.
    Any,
}

impl HostPattern {
    /// Parses a route's host entry, lowercased. Returns an error for malformed patterns.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let pattern = pattern.trim().to_ascii_lowercase();
        if pattern.is_empty() {
            return Err("empty host".into());
        }
        if pattern == "*" {
            return Ok(Self::Any);
        }
        let (wildcard, name) = match pattern.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, pattern.clone()),
        };
        let valid = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            });
        if !valid {
            return Err(format!(
                "invalid host {pattern:?}: use a host name such as \"api.example.com\" or a wildcard such as \"*.example.com\""
            ));
        }
        Ok(if wildcard {
            Self::Wildcard(name)
        } else {
            Self::Exact(name)
        })
    }
}

impl RouteIndex {
    /// Adds `route` under `host` and `prefix`. On a duplicate match, returns the
    /// index of the route that already has it.
    pub fn insert(&mut self, host: &HostPattern, prefix: &str, route: usize) -> Result<(), usize> {
        match host {
            HostPattern::Exact(name) => self
                .exact
                .entry(name.as_str().into())
                .or_default()
                .insert(prefix, route),
            HostPattern::Wildcard(suffix) => self
                .wildcard
                .entry(suffix.as_str().into())
                .or_default()
                .insert(prefix, route),
            HostPattern::Any => self.any_host.insert(prefix, route),
        }
    }

    /// The route for `host` (with or without port, any case) and `path`.
    pub fn find(&self, host: &str, path: &str) -> Option<usize> {
        let host = strip_port(host);
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.find_normalized(&host.to_ascii_lowercase(), path);
        }
        self.find_normalized(host, path)
    }

    fn find_normalized(&self, host: &str, path: &str) -> Option<usize> {
        if let Some(route) = self.exact.get(host).and_then(|bucket| bucket.find(path)) {
            return Some(route);
        }
        if !self.wildcard.is_empty() {
            let mut rest = host;
            while let Some(dot) = rest.find('.') {
                rest = &rest[dot + 1..];
                if let Some(route) = self.wildcard.get(rest).and_then(|bucket| bucket.find(path)) {
                    return Some(route);
                }
            }
        }
        self.any_host.find(path)
    }
}

/// `host:port` → `host`; bracketed IPv6 literals keep their brackets.
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(routes: &[(&str, &str)]) -> RouteIndex {
        let mut index = RouteIndex::default();
        for (i, (host, prefix)) in routes.iter().enumerate() {
            index
                .insert(&HostPattern::parse(host).unwrap(), prefix, i)
                .unwrap();
        }
        index
    }

    #[test]
    fn exact_beats_wildcard_beats_any() {
        let idx = index(&[("*", "/"), ("*.example.com", "/"), ("api.example.com", "/")]);
        assert_eq!(idx.find("api.example.com", "/x"), Some(2));
        assert_eq!(idx.find("www.example.com", "/x"), Some(1));
        assert_eq!(idx.find("a.b.example.com", "/x"), Some(1));
        assert_eq!(idx.find("example.org", "/x"), Some(0));
    }

    #[test]
    fn longest_prefix_wins_within_a_host() {
        let idx = index(&[("a.com", "/"), ("a.com", "/api"), ("a.com", "/api/v2")]);
        assert_eq!(idx.find("a.com", "/api/v2/users"), Some(2));
        assert_eq!(idx.find("a.com", "/api/v1"), Some(1));
        assert_eq!(idx.find("a.com", "/other"), Some(0));
    }

    #[test]
    fn falls_through_to_less_specific_hosts() {
        let idx = index(&[("api.example.com", "/v1"), ("*.example.com", "/")]);
        assert_eq!(idx.find("api.example.com", "/v1/x"), Some(0));
        assert_eq!(idx.find("api.example.com", "/other"), Some(1));
    }

    #[test]
    fn more_specific_wildcard_first() {
        let idx = index(&[("*.example.com", "/"), ("*.eu.example.com", "/")]);
        assert_eq!(idx.find("x.eu.example.com", "/"), Some(1));
        assert_eq!(idx.find("x.us.example.com", "/"), Some(0));
        assert_eq!(idx.find("example.com", "/"), None);
    }

    #[test]
    fn host_case_and_port_are_ignored() {
        let idx = index(&[("API.example.com", "/")]);
        assert_eq!(idx.find("api.EXAMPLE.com:8080", "/"), Some(0));
        assert_eq!(idx.find("other.com", "/"), None);
    }

    #[test]
    fn duplicates_are_reported() {
        let mut idx = RouteIndex::default();
        let host = HostPattern::parse("a.com").unwrap();
        idx.insert(&host, "/x", 0).unwrap();
        assert_eq!(idx.insert(&host, "/x", 1), Err(0));
    }

    #[test]
    fn patterns_are_validated() {
        assert!(HostPattern::parse("exa mple.com").is_err());
        assert!(HostPattern::parse("*.").is_err());
        assert_eq!(HostPattern::parse("*").unwrap(), HostPattern::Any);
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("a.com:80"), "a.com");
        assert_eq!(strip_port("a.com"), "a.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
