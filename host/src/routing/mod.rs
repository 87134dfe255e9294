//! Routing: from a request to a route, a placement and an endpoint.
//!
//! [`decide`] runs the first half (route match, routing key, table lookup);
//! the endpoint pick happens later, through the placement's
//! [`balance::Balancer`], once the request is admitted.

pub mod balance;
pub(crate) mod compile;
pub mod key;
pub mod names;
pub mod route;
pub mod route_match;

use http::HeaderMap;

pub use route::{KeyedTarget, RouteSpec, RouteTarget};
use route_match::RouteIndex;

/// Index of a placement in a snapshot's placements.
pub type PlacementId = usize;

/// The parts of a request routing looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The host, from `Host` or the URI authority, possibly with a port.
    pub host: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The index of the listener the request arrived on, when routes are
    /// bound to listeners and it is known.
    pub listener: Option<usize>,
}

/// Why a request went to its placement, as reported in `X-Route-Reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteReason {
    /// The route names a single placement.
    Direct,
    /// The routing key was found in the table.
    Table,
    /// The routing key was missing or unknown; the default placement serves it.
    Default,
    /// A plugin chose the placement.
    Policy,
}

impl RouteReason {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Table => "table",
            Self::Default => "default",
            Self::Policy => "policy",
        }
    }
}

/// The routing decision for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Index of the route among the routes routing looked at.
    pub route: usize,
    /// The chosen placement.
    pub placement: PlacementId,
    /// Why that placement.
    pub reason: RouteReason,
    /// The routing key, when the route uses one and the request has it.
    pub key: Option<String>,
}

/// Why a request cannot be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No route matches the host and path (404).
    NoRoute,
    /// The route requires a routing key and the request has none (400).
    MissingKey {
        /// The route that refused.
        route: usize,
    },
    /// The route answers requests itself (`respond`); no placement serves it.
    Answered {
        /// The route.
        route: usize,
    },
}

impl Refusal {
    /// The status and text the client gets.
    pub fn answer(self) -> (u16, &'static str) {
        match self {
            Self::NoRoute => (404, "no route matches this host and path"),
            Self::MissingKey { .. } => (
                400,
                "this route needs a routing key and the request has none",
            ),
            Self::Answered { .. } => (500, "this route answers requests itself"),
        }
    }
}

impl Decision {
    /// A plugin chose `placement` for this request.
    pub fn chosen_by_policy(&mut self, placement: PlacementId) {
        self.placement = placement;
        self.reason = RouteReason::Policy;
    }
}

/// Where a route with `redirect_https` sends a plain-HTTP request: the
/// same host, without its port (HTTPS is on the default one), and the same
/// path and query.
pub fn https_location(host: &str, path_and_query: &str) -> String {
    format!("https://{}{path_and_query}", route_match::strip_port(host))
}

/// The placement a keyed route falls back to when its routed one cannot
/// serve; direct and answering routes have none.
pub fn route_default(routes: &[RouteSpec], route: usize) -> Option<PlacementId> {
    match &routes.get(route)?.target {
        RouteTarget::Keyed(keyed) => Some(keyed.default),
        RouteTarget::Direct(_) | RouteTarget::Respond(_) => None,
    }
}

/// Matches a route through `index` and resolves its placement.
pub fn decide(
    index: &RouteIndex,
    routes: &[RouteSpec],
    request: &RequestView<'_>,
) -> Result<Decision, Refusal> {
    let route = index
        .find(request.host, request.path, request.listener)
        .ok_or(Refusal::NoRoute)?;
    resolve(routes, route, routing_key(routes, route, request))
}

/// The routing key of `request` for `route`, when the route uses one.
pub fn routing_key(
    routes: &[RouteSpec],
    route: usize,
    request: &RequestView<'_>,
) -> Option<String> {
    match &routes.get(route)?.target {
        RouteTarget::Keyed(keyed) => keyed.extractor.extract(request).map(|key| key.into_owned()),
        RouteTarget::Direct(_) | RouteTarget::Respond(_) => None,
    }
}

/// Resolves `route`'s placement for a routing key: read from the request by
/// [`decide`], or set by a plugin.
pub fn resolve(
    routes: &[RouteSpec],
    route: usize,
    key: Option<String>,
) -> Result<Decision, Refusal> {
    let Some(spec) = routes.get(route) else {
        return Err(Refusal::NoRoute);
    };
    match &spec.target {
        RouteTarget::Respond(_) => Err(Refusal::Answered { route }),
        RouteTarget::Direct(placement) => Ok(Decision {
            route,
            placement: *placement,
            reason: RouteReason::Direct,
            key: None,
        }),
        RouteTarget::Keyed(keyed) => match key {
            Some(key) => {
                let (placement, reason) = match keyed.table.get(key.as_str()) {
                    Some(placement) => (*placement, RouteReason::Table),
                    None => (keyed.default, RouteReason::Default),
                };
                Ok(Decision {
                    route,
                    placement,
                    reason,
                    key: Some(key),
                })
            }
            None if keyed.reject_missing => Err(Refusal::MissingKey { route }),
            None => Ok(Decision {
                route,
                placement: keyed.default,
                reason: RouteReason::Default,
                key: None,
            }),
        },
    }
}

/// The placements a route can send to: its direct placement, or its table's
/// placements and default, then the further placements its plugins may
/// choose, each once, in order of first appearance.
pub fn candidates(routes: &[RouteSpec], route: usize) -> Vec<PlacementId> {
    let mut placements = Vec::new();
    let Some(spec) = routes.get(route) else {
        return placements;
    };
    match &spec.target {
        RouteTarget::Direct(placement) => placements.push(*placement),
        RouteTarget::Respond(_) => {}
        RouteTarget::Keyed(keyed) => {
            placements.push(keyed.default);
            let mut table: Vec<PlacementId> = keyed.table.values().copied().collect();
            table.sort_unstable();
            placements.extend(table);
        }
    }
    placements.extend(&spec.plugin_placements);
    let mut seen = std::collections::HashSet::new();
    placements.retain(|p| seen.insert(*p));
    placements
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::snapshot::Snapshot;

    #[test]
    fn https_redirects_keep_the_host_without_its_port_and_the_path() {
        assert_eq!(
            https_location("shop.test:8080", "/a?b=1"),
            "https://shop.test/a?b=1"
        );
        assert_eq!(https_location("[::1]:80", "/"), "https://[::1]/");
        assert_eq!(https_location("shop.test", "/"), "https://shop.test/");
    }

    fn snapshot() -> Snapshot {
        let text = r#"
[[listeners]]
address = "127.0.0.1:8080"
[placements.a]
endpoints = [{ address = "127.0.0.1:9001" }]
[placements.b]
endpoints = [{ address = "127.0.0.1:9002" }]
[[routes]]
hosts = ["api.example.com"]
placement = "a"
[[routes]]
hosts = ["*.cells.example.com"]
routing = { key = { source = "host_label", index = 0 }, default = "a", table = { acme = "b" } }
[[routes]]
path_prefix = "/strict"
routing = { key = { source = "header", name = "x-tenant" }, default = "a", table = { acme = "b" }, on_missing_key = "reject" }
"#;
        let loaded = config::parse(text, "t", &|_| None).unwrap();
        crate::snapshot::compile(&loaded, "t", &crate::resilience::state::Registry::default())
            .unwrap()
    }

    fn view<'a>(host: &'a str, path: &'a str, headers: &'a HeaderMap) -> RequestView<'a> {
        RequestView {
            host,
            path,
            query: None,
            headers,
            listener: None,
        }
    }

    #[test]
    fn direct_table_default_and_refusals() {
        let s = snapshot();
        let headers = HeaderMap::new();
        let d = decide(&s.index, &s.routes, &view("api.example.com", "/", &headers)).unwrap();
        assert_eq!((d.placement, d.reason), (0, RouteReason::Direct));
        let d = decide(
            &s.index,
            &s.routes,
            &view("acme.cells.example.com", "/", &headers),
        )
        .unwrap();
        assert_eq!(
            (d.placement, d.reason, d.key.as_deref()),
            (1, RouteReason::Table, Some("acme"))
        );
        let d = decide(
            &s.index,
            &s.routes,
            &view("other.cells.example.com", "/", &headers),
        )
        .unwrap();
        assert_eq!((d.placement, d.reason), (0, RouteReason::Default));
        assert_eq!(
            decide(&s.index, &s.routes, &view("nowhere.org", "/", &headers)),
            Err(Refusal::NoRoute)
        );
        assert_eq!(
            decide(
                &s.index,
                &s.routes,
                &view("nowhere.org", "/strict", &headers)
            ),
            Err(Refusal::MissingKey { route: 2 })
        );
        let mut headers = HeaderMap::new();
        headers.insert("x-tenant", "acme".parse().unwrap());
        let d = decide(
            &s.index,
            &s.routes,
            &view("nowhere.org", "/strict/x", &headers),
        )
        .unwrap();
        assert_eq!((d.placement, d.reason), (1, RouteReason::Table));
    }
}
