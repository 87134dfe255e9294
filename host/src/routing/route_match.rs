//! Route matching by listener, host and path.
//!
//! Routes are bucketed by host: exact names in one map, `*.suffix` wildcards in
//! another keyed by the suffix, and host-less routes in a last bucket. A
//! request tries its exact host, then each wildcard suffix from the longest
//! to the shortest, then the host-less routes; inside a bucket an exact path
//! wins, then the longest path prefix. The first bucket with a matching path
//! answers, so a more specific host always takes precedence over a longer
//! prefix on a less specific one. A route may answer only on some listeners
//! (a Caddy site bound to one address): on any other, it does not exist.

use std::collections::HashMap;

/// Indexes of routes, grouped for matching.
#[derive(Debug, Default)]
pub struct RouteIndex {
    exact: HashMap<Box<str>, Bucket>,
    wildcard: HashMap<Box<str>, Bucket>,
    any_host: Bucket,
    /// Whether some route answers on some listeners only.
    scoped: bool,
}

/// How a route matches the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// Paths starting with this.
    Prefix(String),
    /// This path only.
    Exact(String),
}

impl PathMatch {
    /// The path as written.
    pub fn text(&self) -> &str {
        match self {
            Self::Prefix(path) | Self::Exact(path) => path,
        }
    }
}

/// The listeners a route answers on, by their index in the config: all
/// of them unless the route names some.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerSet(u64);

impl ListenerSet {
    /// Every listener.
    pub const ALL: Self = Self(u64::MAX);
    /// The most listeners a route can name, by index.
    pub const MAX: usize = 63;

    /// The listeners with these indexes, each below [`ListenerSet::MAX`].
    pub fn of(indexes: impl IntoIterator<Item = usize>) -> Self {
        Self(
            indexes
                .into_iter()
                .filter(|&i| i < Self::MAX)
                .fold(0, |bits, i| bits | 1 << i),
        )
    }

    /// Whether a request that arrived on `listener` is in the set; one
    /// whose listener is not known is only in the set of every listener.
    fn admits(self, listener: Option<usize>) -> bool {
        match listener {
            _ if self == Self::ALL => true,
            Some(i) if i < Self::MAX => self.0 & (1 << i) != 0,
            _ => false,
        }
    }
}

/// One route in a bucket.
#[derive(Debug)]
struct Entry {
    path: PathMatch,
    listeners: ListenerSet,
    route: usize,
}

/// Routes sharing one host pattern: exact paths first, then prefixes,
/// longest first.
#[derive(Debug, Default)]
struct Bucket {
    entries: Vec<Entry>,
}

impl Bucket {
    fn insert(
        &mut self,
        path: &PathMatch,
        listeners: ListenerSet,
        route: usize,
    ) -> Result<(), usize> {
        if let Some(existing) = self
            .entries
            .iter()
            .find(|e| e.path == *path && e.listeners.0 & listeners.0 != 0)
        {
            return Err(existing.route);
        }
        let rank = |path: &PathMatch| match path {
            PathMatch::Exact(_) => (0, 0),
            PathMatch::Prefix(prefix) => (1, usize::MAX - prefix.len()),
        };
        let position = self
            .entries
            .iter()
            .position(|e| rank(&e.path) > rank(path))
            .unwrap_or(self.entries.len());
        self.entries.insert(
            position,
            Entry {
                path: path.clone(),
                listeners,
                route,
            },
        );
        Ok(())
    }

    fn find(&self, path: &str, listener: Option<usize>) -> Option<usize> {
        self.entries
            .iter()
            .find(|e| {
                e.listeners.admits(listener)
                    && match &e.path {
                        PathMatch::Exact(exact) => path == exact,
                        PathMatch::Prefix(prefix) => path.starts_with(prefix.as_str()),
                    }
            })
            .map(|e| e.route)
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
    /// Adds `route` under `host` and `path`, on `listeners`. On a duplicate
    /// match (the same host and path on a listener in common), returns the
    /// index of the route that already has it.
    pub fn insert(
        &mut self,
        host: &HostPattern,
        path: &PathMatch,
        listeners: ListenerSet,
        route: usize,
    ) -> Result<(), usize> {
        self.scoped |= listeners != ListenerSet::ALL;
        let bucket = match host {
            HostPattern::Exact(name) => self.exact.entry(name.as_str().into()).or_default(),
            HostPattern::Wildcard(suffix) => {
                self.wildcard.entry(suffix.as_str().into()).or_default()
            }
            HostPattern::Any => &mut self.any_host,
        };
        bucket.insert(path, listeners, route)
    }

    /// Whether some route answers on some listeners only: only then does
    /// [`RouteIndex::find`] need to know the listener.
    pub fn is_scoped(&self) -> bool {
        self.scoped
    }

    /// The route for `host` (with or without port, any case) and `path`,
    /// for a request that arrived on the listener of index `listener`.
    pub fn find(&self, host: &str, path: &str, listener: Option<usize>) -> Option<usize> {
        let host = strip_port(host);
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.find_normalized(&host.to_ascii_lowercase(), path, listener);
        }
        self.find_normalized(host, path, listener)
    }

    fn find_normalized(&self, host: &str, path: &str, listener: Option<usize>) -> Option<usize> {
        let found = |bucket: &Bucket| bucket.find(path, listener);
        if let Some(route) = self.exact.get(host).and_then(found) {
            return Some(route);
        }
        if !self.wildcard.is_empty() {
            let mut rest = host;
            while let Some(dot) = rest.find('.') {
                rest = &rest[dot + 1..];
                if let Some(route) = self.wildcard.get(rest).and_then(found) {
                    return Some(route);
                }
            }
        }
        found(&self.any_host)
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

    fn prefix(path: &str) -> PathMatch {
        PathMatch::Prefix(path.into())
    }

    fn index(routes: &[(&str, &str)]) -> RouteIndex {
        let mut index = RouteIndex::default();
        for (i, (host, path)) in routes.iter().enumerate() {
            index
                .insert(
                    &HostPattern::parse(host).unwrap(),
                    &prefix(path),
                    ListenerSet::ALL,
                    i,
                )
                .unwrap();
        }
        index
    }

    #[test]
    fn an_exact_path_beats_any_prefix_and_matches_only_itself() {
        let mut idx = index(&[("a.com", "/"), ("a.com", "/health/")]);
        let host = HostPattern::parse("a.com").unwrap();
        idx.insert(
            &host,
            &PathMatch::Exact("/health".into()),
            ListenerSet::ALL,
            2,
        )
        .unwrap();
        assert_eq!(idx.find("a.com", "/health", None), Some(2));
        assert_eq!(idx.find("a.com", "/health/x", None), Some(1));
        assert_eq!(idx.find("a.com", "/healthz", None), Some(0));
        let both = idx.insert(
            &host,
            &PathMatch::Exact("/health".into()),
            ListenerSet::ALL,
            3,
        );
        assert_eq!(both, Err(2));
    }

    #[test]
    fn a_route_bound_to_listeners_exists_only_on_them() {
        let mut idx = RouteIndex::default();
        let any = HostPattern::Any;
        idx.insert(
            &any,
            &PathMatch::Exact("/health".into()),
            ListenerSet::of([1]),
            0,
        )
        .unwrap();
        idx.insert(&any, &prefix("/"), ListenerSet::of([0]), 1)
            .unwrap();
        // The same match on another listener is no duplicate.
        idx.insert(&any, &prefix("/"), ListenerSet::of([1]), 2)
            .unwrap();
        assert!(idx.is_scoped());
        assert_eq!(idx.find("x.test", "/health", Some(1)), Some(0));
        assert_eq!(idx.find("x.test", "/health", Some(0)), Some(1));
        assert_eq!(idx.find("x.test", "/other", Some(1)), Some(2));
        assert_eq!(idx.find("x.test", "/other", Some(2)), None);
        assert_eq!(idx.find("x.test", "/other", None), None);
        assert_eq!(
            idx.insert(&any, &prefix("/"), ListenerSet::of([0, 1]), 3),
            Err(1)
        );
    }

    #[test]
    fn exact_beats_wildcard_beats_any() {
        let idx = index(&[("*", "/"), ("*.example.com", "/"), ("api.example.com", "/")]);
        assert_eq!(idx.find("api.example.com", "/x", None), Some(2));
        assert_eq!(idx.find("www.example.com", "/x", None), Some(1));
        assert_eq!(idx.find("a.b.example.com", "/x", None), Some(1));
        assert_eq!(idx.find("example.org", "/x", None), Some(0));
    }

    #[test]
    fn longest_prefix_wins_within_a_host() {
        let idx = index(&[("a.com", "/"), ("a.com", "/api"), ("a.com", "/api/v2")]);
        assert_eq!(idx.find("a.com", "/api/v2/users", None), Some(2));
        assert_eq!(idx.find("a.com", "/api/v1", None), Some(1));
        assert_eq!(idx.find("a.com", "/other", None), Some(0));
    }

    #[test]
    fn falls_through_to_less_specific_hosts() {
        let idx = index(&[("api.example.com", "/v1"), ("*.example.com", "/")]);
        assert_eq!(idx.find("api.example.com", "/v1/x", None), Some(0));
        assert_eq!(idx.find("api.example.com", "/other", None), Some(1));
    }

    #[test]
    fn more_specific_wildcard_first() {
        let idx = index(&[("*.example.com", "/"), ("*.eu.example.com", "/")]);
        assert_eq!(idx.find("x.eu.example.com", "/", None), Some(1));
        assert_eq!(idx.find("x.us.example.com", "/", None), Some(0));
        assert_eq!(idx.find("example.com", "/", None), None);
    }

    #[test]
    fn host_case_and_port_are_ignored() {
        let idx = index(&[("API.example.com", "/")]);
        assert_eq!(idx.find("api.EXAMPLE.com:8080", "/", None), Some(0));
        assert_eq!(idx.find("other.com", "/", None), None);
    }

    #[test]
    fn duplicates_are_reported() {
        let mut idx = RouteIndex::default();
        let host = HostPattern::parse("a.com").unwrap();
        idx.insert(&host, &prefix("/x"), ListenerSet::ALL, 0)
            .unwrap();
        assert_eq!(
            idx.insert(&host, &prefix("/x"), ListenerSet::ALL, 1),
            Err(0)
        );
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
