//! Compiles the `[[routes]]` of a config: their matching into the route
//! index, and each route's target, rules and plugins into a [`RouteSpec`];
//! and the `[resolver]` table upstream names are looked up with.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::key::KeyExtractor;
use super::names::ResolverSpec;
use super::route::{KeyedTarget, RouteSpec, RouteTarget};
use super::route_match::{HostPattern, ListenerSet, PathMatch, RouteIndex};
use crate::config::{self, Config, Diagnostics, KeyPath, MissingKey};
use crate::transform::headers::HeaderOps;
use crate::transform::rewrite::{PathRewrite, PathRewrites};

/// A route's `path` (exact), `path_prefix`, or gRPC service and method,
/// with the key it was written under.
fn path_match(
    d: &mut Diagnostics,
    path: &KeyPath,
    route: &config::Route,
) -> (PathMatch, &'static str) {
    if route.path.is_some() && route.path_prefix.is_some() {
        d.error(
            path.key("path"),
            "set path (one exact path) or path_prefix, not both",
        );
    }
    if let Some(service) = &route.grpc_service {
        return (grpc_match(d, path, route, service), "grpc_service");
    }
    if route.grpc_method.is_some() {
        d.error(path.key("grpc_method"), "needs grpc_service");
    }
    let (key, matched) = match (&route.path, &route.path_prefix) {
        (Some(exact), _) => ("path", PathMatch::Exact(exact.clone())),
        (None, Some(prefix)) => ("path_prefix", PathMatch::Prefix(prefix.clone())),
        (None, None) => ("path_prefix", PathMatch::Prefix("/".into())),
    };
    let written = matched.text();
    if !written.starts_with('/') {
        d.error(path.key(key), format!("{written:?} must start with '/'"));
    }
    (matched, key)
}

/// The paths of a gRPC service's calls, `/package.Service/Method`: every
/// method's, or one method's.
fn grpc_match(
    d: &mut Diagnostics,
    path: &KeyPath,
    route: &config::Route,
    service: &str,
) -> PathMatch {
    if route.path.is_some() || route.path_prefix.is_some() {
        d.error(
            path.key("grpc_service"),
            "set grpc_service or path/path_prefix, not both",
        );
    }
    let valid = |name: &str| !name.is_empty() && !name.contains(['/', '?', '#', ' ']);
    if !valid(service) {
        d.error(
            path.key("grpc_service"),
            format!("{service:?} is not a gRPC service name such as \"package.Service\""),
        );
    }
    match &route.grpc_method {
        Some(method) => {
            if !valid(method) {
                d.error(
                    path.key("grpc_method"),
                    format!("{method:?} is not a gRPC method name"),
                );
            }
            PathMatch::Exact(format!("/{service}/{method}"))
        }
        None => PathMatch::Prefix(format!("/{service}/")),
    }
}

/// The listeners a route names, by name or address; all when it names none.
fn listener_set(
    d: &mut Diagnostics,
    path: &KeyPath,
    named: &[String],
    listeners: &[config::Listener],
) -> ListenerSet {
    if named.is_empty() {
        return ListenerSet::ALL;
    }
    let indexes: Vec<usize> = named
        .iter()
        .enumerate()
        .filter_map(|(i, wanted)| {
            let found = listeners.iter().position(|listener| {
                listener.name.as_deref() == Some(wanted.as_str())
                    || listener.address == *wanted
                    || matches!(
                        (listener.address.parse::<SocketAddr>(), wanted.parse::<SocketAddr>()),
                        (Ok(a), Ok(b)) if a == b
                    )
            });
            match found {
                Some(index) if index < ListenerSet::MAX => Some(index),
                Some(_) => {
                    d.error(
                        path.index(i),
                        format!(
                            "routes can be bound to the first {} listeners only",
                            ListenerSet::MAX
                        ),
                    );
                    None
                }
                None => {
                    d.error(
                        path.index(i),
                        format!("no listener is named {wanted:?} or has that address"),
                    );
                    None
                }
            }
        })
        .collect();
    ListenerSet::of(indexes)
}

/// The `[resolver]` table.
pub fn resolver(d: &mut Diagnostics, settings: &config::ResolverSettings) -> ResolverSpec {
    let path = KeyPath::root().key("resolver");
    let nameservers = settings
        .nameservers
        .iter()
        .enumerate()
        .filter_map(|(i, server)| {
            let parsed = server.parse::<SocketAddr>().or_else(|_| {
                server
                    .parse::<std::net::IpAddr>()
                    .map(|ip| SocketAddr::new(ip, 53))
            });
            match parsed {
                Ok(address) => Some(address),
                Err(_) => {
                    d.error(
                        path.key("nameservers").index(i),
                        format!("{server:?} is not an IP address or ip:port, e.g. \"10.0.0.2\""),
                    );
                    None
                }
            }
        })
        .collect();
    let min_ttl = d.duration(path.key("min_ttl"), &settings.min_ttl);
    let max_ttl = d.duration(path.key("max_ttl"), &settings.max_ttl);
    if max_ttl < min_ttl {
        d.error(path.key("max_ttl"), "must not be shorter than min_ttl");
    }
    ResolverSpec {
        nameservers,
        min_ttl,
        max_ttl,
        retry: d.duration(path.key("retry"), &settings.retry),
        timeout: d.duration(path.key("timeout"), &settings.timeout),
        family: settings.family,
    }
}

/// The name of `route`, the `i`th of the config: its own, or `route-i`.
pub(crate) fn route_name(i: usize, route: &config::Route) -> String {
    route.name.clone().unwrap_or_else(|| format!("route-{i}"))
}

/// The routes of `config` in order, and the index that matches a request to one.
pub fn routes(
    d: &mut Diagnostics,
    config: &Config,
    placements: &HashMap<&str, usize>,
) -> (RouteIndex, Vec<RouteSpec>) {
    let mut index = RouteIndex::default();
    let mut routes = Vec::new();
    let mut names = HashMap::new();
    for (i, route) in config.routes.iter().enumerate() {
        let path = KeyPath::root().key("routes").index(i);
        let name = route_name(i, route);
        if let Some(previous) = names.insert(name.clone(), i) {
            d.error(
                path.key("name"),
                format!("route name {name:?} is already used by routes[{previous}]"),
            );
        }
        let (path_match, path_key) = path_match(d, &path, route);
        let listeners = listener_set(
            d,
            &path.key("listeners"),
            &route.listeners,
            &config.listeners,
        );
        let hosts = if route.hosts.is_empty() {
            vec!["*".to_string()]
        } else {
            route.hosts.clone()
        };
        for (h, host) in hosts.iter().enumerate() {
            let host_path = if route.hosts.is_empty() {
                path.key(path_key)
            } else {
                path.key("hosts").index(h)
            };
            match HostPattern::parse(host) {
                Ok(pattern) => {
                    if let Err(previous) =
                        index.insert(&pattern, &path_match, listeners, routes.len())
                    {
                        let what = match &path_match {
                            PathMatch::Exact(_) => format!("path {:?}", path_match.text()),
                            PathMatch::Prefix(_) => format!("path prefix {:?}", path_match.text()),
                        };
                        d.error(
                            host_path,
                            format!(
                                "duplicate route match: host {host:?} with {what} is already matched by routes[{previous}]"
                            ),
                        );
                    }
                }
                Err(message) => d.error(host_path, message),
            }
        }
        let target = target(d, &path, route, placements);
        let request_headers = crate::transform::compile::header_ops(
            d,
            &path.key("request_headers"),
            &route.request_headers,
        );
        let response_headers = crate::transform::compile::header_ops(
            d,
            &path.key("response_headers"),
            &route.response_headers,
        );
        let rewrite = route.rewrite.as_ref().map(|rewrites| {
            let chained = matches!(rewrites, config::Rewrites::Chain(_));
            let steps = rewrites
                .steps()
                .iter()
                .enumerate()
                .filter_map(|(i, step)| match PathRewrite::compile(step) {
                    Ok(compiled) => Some(compiled),
                    Err((key, message)) => {
                        let at = if chained {
                            path.key("rewrite").index(i)
                        } else {
                            path.key("rewrite")
                        };
                        d.error(at.key(key), message);
                        None
                    }
                })
                .collect();
            PathRewrites(steps)
        });
        let attachments = crate::plugins::compile::attachments(
            d,
            &path.key("plugins"),
            &route.plugins,
            config.plugins.is_some(),
        );
        let plugin_placements = route
            .placements
            .iter()
            .enumerate()
            .filter_map(|(i, name)| {
                placement_ref(d, || path.key("placements").index(i), name, placements)
            })
            .collect();
        if let Some(target) = target {
            routes.push(RouteSpec {
                name: Arc::from(name.as_str()),
                target,
                explain: route.explain,
                redirect_https: route.redirect_https,
                request_headers,
                response_headers,
                rewrite,
                plugins: attachments,
                plugin_placements,
            });
        } else {
            // Keep route indexes aligned with the index even when broken;
            // a snapshot with errors is never used.
            routes.push(RouteSpec {
                name: Arc::from(name.as_str()),
                target: RouteTarget::Direct(usize::MAX),
                explain: false,
                redirect_https: false,
                request_headers: HeaderOps::default(),
                response_headers: HeaderOps::default(),
                rewrite: None,
                plugins: Vec::new(),
                plugin_placements: Vec::new(),
            });
        }
    }
    (index, routes)
}

/// Resolves a placement name. The key path is built only on failure:
/// routing tables can hold many thousands of references.
pub fn placement_ref(
    d: &mut Diagnostics,
    path: impl FnOnce() -> KeyPath,
    name: &str,
    placements: &HashMap<&str, usize>,
) -> Option<usize> {
    match placements.get(name) {
        Some(id) => Some(*id),
        None => {
            let mut known: Vec<_> = placements.keys().copied().collect();
            known.sort_unstable();
            d.error(
                path(),
                format!("unknown placement {name:?} (defined: {})", known.join(", ")),
            );
            None
        }
    }
}

/// Where a route sends its requests: one placement, a routing-key table, or its own answer.
pub fn target(
    d: &mut Diagnostics,
    path: &KeyPath,
    route: &config::Route,
    placements: &HashMap<&str, usize>,
) -> Option<RouteTarget> {
    if let Some(respond) = &route.respond {
        if route.placement.is_some() || route.routing.is_some() {
            d.error(
                path.key("respond"),
                "set one of `placement`, `routing` and `respond`",
            );
            return None;
        }
        return match crate::transform::respond::Answer::compile(respond) {
            Ok(answer) => Some(RouteTarget::Respond(answer)),
            Err(errors) => {
                for (key, message) in errors {
                    let mut at = path.key("respond");
                    for part in key.splitn(2, '.') {
                        at = at.key(part);
                    }
                    d.error(at, message);
                }
                None
            }
        };
    }
    match (&route.placement, &route.routing) {
        (Some(_), Some(_)) => {
            d.error(
                path.key("routing"),
                "set either `placement` or `routing`, not both",
            );
            None
        }
        (None, None) => {
            d.error(
                path.clone(),
                "a route needs `placement`, `routing` or `respond`",
            );
            None
        }
        (Some(name), None) => {
            placement_ref(d, || path.key("placement"), name, placements).map(RouteTarget::Direct)
        }
        (None, Some(routing)) => {
            let path = path.key("routing");
            let extractor = match KeyExtractor::from_config(&routing.key) {
                Ok(extractor) => Some(extractor),
                Err((key, message)) => {
                    d.error(path.key("key").key(key), message);
                    None
                }
            };
            let default = placement_ref(d, || path.key("default"), &routing.default, placements);
            let mut table = HashMap::with_capacity(routing.table.len());
            for (key, placement) in &routing.table {
                if let Some(id) =
                    placement_ref(d, || path.key("table").key(key), placement, placements)
                {
                    table.insert(Box::from(key.as_str()), id);
                }
            }
            Some(RouteTarget::Keyed(KeyedTarget {
                extractor: extractor?,
                table,
                default: default?,
                reject_missing: routing.on_missing_key == MissingKey::Reject,
            }))
        }
    }
}
