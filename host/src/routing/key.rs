//! Routing-key extraction from the configured source.

use std::borrow::Cow;

use http::header::{HeaderName, COOKIE};

use super::RequestView;
use crate::config::{KeySource, KeySourceKind};

/// Reads a routing key from one part of a request.
#[derive(Debug, Clone)]
pub enum KeyExtractor {
    /// The first value of a header.
    Header(HeaderName),
    /// A cookie's value.
    Cookie(String),
    /// A query parameter's value, percent-decoded.
    Query(String),
    /// A label of the host, 0 being the leftmost.
    HostLabel(usize),
    /// A path segment, 0 being the first after `/`.
    PathSegment(usize),
}

impl KeyExtractor {
    /// Builds an extractor from its configuration, or says what is missing.
    pub fn from_config(source: &KeySource) -> Result<Self, (&'static str, String)> {
        let name = || {
            source.name.clone().filter(|n| !n.is_empty()).ok_or((
                "name",
                format!("a {} routing key needs a `name`", source.source.as_str()),
            ))
        };
        let index = || {
            source.index.ok_or((
                "index",
                format!("a {} routing key needs an `index`", source.source.as_str()),
            ))
        };
        Ok(match source.source {
            KeySourceKind::Header => Self::Header(
                HeaderName::from_bytes(name()?.as_bytes())
                    .map_err(|_| ("name", "not a valid header name".to_string()))?,
            ),
            KeySourceKind::Cookie => Self::Cookie(name()?),
            KeySourceKind::Query => Self::Query(name()?),
            KeySourceKind::HostLabel => Self::HostLabel(index()?),
            KeySourceKind::PathSegment => Self::PathSegment(index()?),
        })
    }

    /// The routing key of `request`, if present and non-empty.
    pub fn extract<'a>(&self, request: &RequestView<'a>) -> Option<Cow<'a, str>> {
        let key = match self {
            Self::Header(name) => request
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| Cow::Borrowed(v.trim())),
            Self::Cookie(name) => cookie(request, name).map(Cow::Borrowed),
            Self::Query(name) => request.query.and_then(|query| {
                form_urlencoded::parse(query.as_bytes())
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| Cow::Owned(v.into_owned()))
            }),
            Self::HostLabel(index) => super::route_match::strip_port(request.host)
                .split('.')
                .nth(*index)
                .map(Cow::Borrowed),
            Self::PathSegment(index) => request
                .path
                .split('/')
                .filter(|s| !s.is_empty())
                .nth(*index)
                .map(Cow::Borrowed),
        };
        key.filter(|k| !k.is_empty())
    }
}

fn cookie<'a>(request: &RequestView<'a>, name: &str) -> Option<&'a str> {
    request
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn view<'a>(
        headers: &'a HeaderMap,
        host: &'a str,
        path: &'a str,
        query: Option<&'a str>,
    ) -> RequestView<'a> {
        RequestView {
            host,
            path,
            query,
            headers,
            listener: None,
        }
    }

    #[test]
    fn each_source_extracts() {
        let mut headers = HeaderMap::new();
        headers.insert("x-tenant", "acme".parse().unwrap());
        headers.insert(COOKIE, "a=1; tenant=\"globex\"; b=2".parse().unwrap());
        let req = view(
            &headers,
            "initech.eu.example.com:8443",
            "/t/umbrella/items",
            Some("x=1&tenant=hooli%20inc"),
        );

        let header = KeyExtractor::Header(HeaderName::from_static("x-tenant"));
        assert_eq!(header.extract(&req).as_deref(), Some("acme"));
        assert_eq!(
            KeyExtractor::Cookie("tenant".into())
                .extract(&req)
                .as_deref(),
            Some("globex")
        );
        assert_eq!(
            KeyExtractor::Query("tenant".into())
                .extract(&req)
                .as_deref(),
            Some("hooli inc")
        );
        assert_eq!(
            KeyExtractor::HostLabel(0).extract(&req).as_deref(),
            Some("initech")
        );
        assert_eq!(
            KeyExtractor::HostLabel(1).extract(&req).as_deref(),
            Some("eu")
        );
        assert_eq!(
            KeyExtractor::PathSegment(1).extract(&req).as_deref(),
            Some("umbrella")
        );
    }

    #[test]
    fn absent_or_empty_is_none() {
        let mut headers = HeaderMap::new();
        headers.insert("x-tenant", "".parse().unwrap());
        let req = view(&headers, "example.com", "/", None);
        assert!(KeyExtractor::Header(HeaderName::from_static("x-tenant"))
            .extract(&req)
            .is_none());
        assert!(KeyExtractor::Cookie("tenant".into())
            .extract(&req)
            .is_none());
        assert!(KeyExtractor::Query("tenant".into()).extract(&req).is_none());
        assert!(KeyExtractor::HostLabel(5).extract(&req).is_none());
        assert!(KeyExtractor::PathSegment(0).extract(&req).is_none());
    }

    #[test]
    fn config_needs_name_or_index() {
        let source = KeySource {
            source: KeySourceKind::Header,
            name: None,
            index: None,
        };
        assert_eq!(KeyExtractor::from_config(&source).unwrap_err().0, "name");
        let source = KeySource {
            source: KeySourceKind::PathSegment,
            name: None,
            index: None,
        };
        assert_eq!(KeyExtractor::from_config(&source).unwrap_err().0, "index");
    }
}
