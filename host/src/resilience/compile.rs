//! Compiles the `[placements]` of a config into [`PlacementSpec`]s: their
//! endpoints with the live state they share with older snapshots, breaker,
//! health, limit and retry settings, and fallback chains.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::HeaderValue;
use pingora::upstreams::peer::HttpPeer;

use super::breaker::BreakerSettings;
use super::connect::{self, ConnectSpec};
use super::health::{ActiveCheck, CheckKind, PassiveSettings};
use super::placement::{EndpointSpec, FailureSet, PlacementSpec};
use super::state::{EndpointKey, Registry};
use crate::config::{self, Config, Diagnostics, KeyPath};
use crate::routing::balance::Balancer;

/// Resolves each placement's `fallback` and rejects cycles.
pub fn fallbacks(
    d: &mut Diagnostics,
    config: &Config,
    ids: &HashMap<&str, usize>,
    placements: &mut [PlacementSpec],
) {
    for (name, placement) in &config.placements {
        let (Some(fallback), Some(&id)) = (&placement.fallback, ids.get(name.as_str())) else {
            continue;
        };
        let path = KeyPath::root().key("placements").key(name).key("fallback");
        if fallback == name {
            d.error(path, "a placement cannot fall back to itself");
            continue;
        }
        let target = crate::routing::compile::placement_ref(d, || path, fallback, ids);
        if let (Some(spec), Some(target)) = (placements.get_mut(id), target) {
            if target != usize::MAX {
                spec.fallback = Some(target);
            }
        }
    }
    for (start, spec) in placements.iter().enumerate() {
        let mut seen = vec![start];
        let mut next = spec.fallback;
        while let Some(current) = next {
            if seen.contains(&current) {
                if current == start {
                    let chain: Vec<&str> = seen.iter().map(|i| &*placements[*i].name).collect();
                    d.error(
                        KeyPath::root()
                            .key("placements")
                            .key(&spec.name)
                            .key("fallback"),
                        format!("fallback cycle: {} -> {}", chain.join(" -> "), spec.name),
                    );
                }
                break;
            }
            seen.push(current);
            next = placements[current].fallback;
        }
    }
}

/// One `[placements.NAME]` table, its endpoints' live state taken from
/// `registry`; `None` when it has problems.
pub fn placement(
    d: &mut Diagnostics,
    registry: &Registry,
    path: &KeyPath,
    name: &str,
    placement: &config::Placement,
) -> Option<PlacementSpec> {
    let errors_before = d.error_count();
    if placement.endpoints.is_empty() {
        d.error(
            path.key("endpoints"),
            "a placement needs at least one endpoint",
        );
    }
    let connect = connect::compile(d, path, placement);
    let breaker = breaker(d, &path.key("breaker"), &placement.breaker);
    let passive = PassiveSettings {
        failures: placement.passive.failures,
        cooldown: d.duration(
            path.key("passive").key("cooldown"),
            &placement.passive.cooldown,
        ),
    };
    let active_check = placement
        .health
        .as_ref()
        .map(|check| active_check(d, &path.key("health"), check));
    if placement.limits.max_concurrency == Some(0) {
        d.error(
            path.key("limits").key("max_concurrency"),
            "must be at least 1",
        );
    }
    if placement.retry.connect_attempts == 0 {
        d.error(
            path.key("retry").key("connect_attempts"),
            "must be at least 1",
        );
    }
    let mut endpoints = Vec::new();
    let mut seen = HashSet::new();
    let mut written_addresses = HashSet::new();
    for (i, written) in placement.endpoints.iter().enumerate() {
        let path = path.key("endpoints").index(i);
        if written.weight == 0 {
            d.error(path.key("weight"), "weight must be at least 1");
        }
        for spec in endpoint(d, registry, &path, name, written, &connect, breaker) {
            // Names may come to share an address while the proxy runs, so
            // only an address written twice is a mistake; otherwise the
            // first endpoint with an address serves it.
            if !spec.named && !written_addresses.insert(spec.address) {
                d.error(
                    path.key("address"),
                    format!("duplicate endpoint {} in this placement", spec.address),
                );
            }
            if seen.insert(spec.address) {
                endpoints.push((spec, written.weight));
            }
        }
    }
    if d.error_count() > errors_before {
        return None;
    }
    let weighted: Vec<(SocketAddr, u32)> = endpoints.iter().map(|(e, w)| (e.address, *w)).collect();
    Some(PlacementSpec {
        name: Arc::from(name),
        name_header: HeaderValue::from_str(name)
            .unwrap_or_else(|_| HeaderValue::from_static("invalid")),
        endpoints: endpoints.into_iter().map(|(e, _)| e).collect(),
        balancer: Balancer::new(placement.balance, &weighted),
        host_header: placement.host_header,
        total_weight: placement.endpoints.iter().map(|e| e.weight).sum(),
        fallback: None,
        state: registry.placement(name),
        breaker,
        passive,
        failure_on: FailureSet::of(&placement.breaker.failure_on),
        active_check,
        max_concurrency: placement.limits.max_concurrency,
        on_limit: placement.limits.on_limit,
        max_body: placement.limits.max_body.map(|size| size.0),
        max_response_head: placement.limits.max_response_head.0,
        connect_attempts: placement.retry.connect_attempts.max(1),
        retry_attempts: placement.retry.attempts,
    })
}

/// A placement's breaker settings.
pub fn breaker(
    d: &mut Diagnostics,
    path: &KeyPath,
    config: &config::BreakerConfig,
) -> BreakerSettings {
    if config.close_after == 0 {
        d.error(path.key("close_after"), "must be at least 1");
    }
    if !(0.0..=1.0).contains(&config.failure_rate) {
        d.error(path.key("failure_rate"), "must be between 0 and 1");
    }
    let open_for = d.duration(path.key("open_for"), &config.open_for);
    let max_open_for = d.duration(path.key("max_open_for"), &config.max_open_for);
    if max_open_for < open_for {
        d.error(
            path.key("max_open_for"),
            "must not be shorter than open_for",
        );
    }
    if config.half_open_probes == 0 {
        d.error(path.key("half_open_probes"), "must be at least 1");
    }
    BreakerSettings {
        consecutive_failures: config.consecutive_failures,
        failure_rate: config.failure_rate,
        window: d.duration(path.key("window"), &config.window),
        min_requests: config.min_requests,
        open_for,
        max_open_for,
        half_open_probes: config.half_open_probes.max(1),
        close_after: config.close_after.max(1),
    }
}

/// A placement's active health check.
pub fn active_check(
    d: &mut Diagnostics,
    path: &KeyPath,
    check: &config::HealthCheck,
) -> ActiveCheck {
    if check.service.is_some() && check.kind != config::HealthCheckKind::Grpc {
        d.error(path.key("service"), "applies only to kind = \"grpc\"");
    }
    let kind = match check.kind {
        config::HealthCheckKind::Tcp => CheckKind::Tcp,
        config::HealthCheckKind::Grpc => CheckKind::Grpc {
            service: check.service.clone().unwrap_or_default(),
        },
        config::HealthCheckKind::Http => {
            if !check.path.starts_with('/') {
                d.error(path.key("path"), "must start with '/'");
            }
            let expect = parse_status_range(&check.expect).unwrap_or_else(|| {
                d.error(
                    path.key("expect"),
                    format!(
                        "{:?} is not a status or range such as \"200-399\"",
                        check.expect
                    ),
                );
                (200, 399)
            });
            CheckKind::Http {
                path: check.path.clone(),
                expect,
            }
        }
    };
    let interval = d.duration(path.key("interval"), &check.interval);
    if interval < crate::resilience::checker::MIN_INTERVAL {
        d.error(
            path.key("interval"),
            format!(
                "must be at least {:?}",
                crate::resilience::checker::MIN_INTERVAL
            ),
        );
    }
    for (key, value) in [("rise", check.rise), ("fall", check.fall)] {
        if value == 0 {
            d.error(path.key(key), "must be at least 1");
        }
    }
    ActiveCheck {
        kind,
        interval,
        timeout: d.duration(path.key("timeout"), &check.timeout),
        rise: check.rise.max(1),
        fall: check.fall.max(1),
    }
}

/// Where an endpoint points, as written: checked, not yet resolved.
struct Target<'a> {
    /// `host:port` as written, without scheme or trailing slash.
    authority: &'a str,
    /// The host, without IPv6 brackets.
    host: &'a str,
    port: u16,
    tls: bool,
}

/// Reads an endpoint's address, or records why it cannot be read.
fn target<'a>(
    d: &mut Diagnostics,
    path: &KeyPath,
    endpoint: &'a config::Endpoint,
) -> Option<Target<'a>> {
    let (scheme_tls, rest) = if let Some(rest) = endpoint.address.strip_prefix("https://") {
        (Some(true), rest)
    } else if let Some(rest) = endpoint.address.strip_prefix("http://") {
        (Some(false), rest)
    } else {
        (None, endpoint.address.as_str())
    };
    let authority = rest.trim_end_matches('/');
    let tls = scheme_tls.unwrap_or(endpoint.tls);
    if scheme_tls == Some(false) && endpoint.tls {
        d.error(
            path.key("tls"),
            "an http:// address cannot also set tls = true",
        );
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => match port.parse::<u16>() {
            Ok(port) => (host, port),
            Err(_) => {
                d.error(
                    path.key("address"),
                    format!("{:?}: {port:?} is not a port", endpoint.address),
                );
                return None;
            }
        },
        None if scheme_tls.is_some() => (authority, if tls { 443 } else { 80 }),
        None => {
            d.error(
                path.key("address"),
                format!(
                    "{:?} has no port; write host:port, e.g. \"127.0.0.1:9000\"",
                    endpoint.address
                ),
            );
            return None;
        }
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || authority.contains('/') {
        d.error(
            path.key("address"),
            format!("{:?} is not a host:port address", endpoint.address),
        );
        return None;
    }
    Some(Target {
        authority,
        host,
        port,
        tls,
    })
}

/// The host names (not IP addresses) the endpoints of `config` are written
/// with: what has to be resolved before it is compiled.
pub fn upstream_names(config: &Config) -> Vec<String> {
    let mut scratch = Diagnostics::default();
    let mut names: Vec<String> = config
        .placements
        .values()
        .flat_map(|placement| &placement.endpoints)
        .filter_map(|endpoint| target(&mut scratch, &KeyPath::root(), endpoint))
        .filter(|target| target.host.parse::<IpAddr>().is_err())
        .map(|target| target.host.to_ascii_lowercase())
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// One written endpoint: an endpoint for its address, or for each address
/// its name resolves to (none while it does not resolve, with a warning),
/// each with its peer built and its live state taken from `registry`.
pub fn endpoint(
    d: &mut Diagnostics,
    registry: &Registry,
    path: &KeyPath,
    placement: &str,
    endpoint: &config::Endpoint,
    connect: &ConnectSpec,
    breaker: BreakerSettings,
) -> Vec<EndpointSpec> {
    let Some(Target {
        authority,
        host,
        port,
        tls,
    }) = target(d, path, endpoint)
    else {
        return Vec::new();
    };
    if let Err(why) = connect.check_endpoint(tls) {
        d.error(path.key("address"), why);
    }
    if endpoint.sni.is_some() && !tls {
        d.error(
            path.key("sni"),
            "sni applies only to TLS endpoints (set tls = true)",
        );
    }
    let Ok(authority_header) = HeaderValue::from_str(authority) else {
        d.error(path.key("address"), "not a valid authority");
        return Vec::new();
    };
    let (addresses, named) = match host.parse::<IpAddr>() {
        Ok(ip) => (vec![ip], false),
        Err(_) => match registry.names().get(host) {
            Some(state) if !state.addresses.is_empty() => (state.addresses, true),
            state => {
                let why = state
                    .and_then(|s| s.last_error)
                    .unwrap_or_else(|| "not looked up yet".into());
                d.warning(
                    path.key("address"),
                    format!(
                        "{host:?} does not resolve ({why}); placement {placement:?} has no \
                         endpoint from it until it does"
                    ),
                );
                return Vec::new();
            }
        },
    };
    // The name TLS verifies the certificate against: for an IP address,
    // the address itself (rustls sends no SNI for it). An empty one would
    // fail every handshake.
    let sni = endpoint.sni.clone().unwrap_or_else(|| host.to_string());
    addresses
        .into_iter()
        .map(|ip| {
            let address = SocketAddr::new(ip, port);
            let mut peer = HttpPeer::new(address, tls, sni.clone());
            connect.configure(&mut peer);
            peer.options.verify_cert = endpoint.verify;
            peer.options.verify_hostname = endpoint.verify;
            // A named endpoint's addresses each have their own identity, so
            // each keeps its breaker and health while the others change.
            let id: Arc<str> = if named {
                Arc::from(format!("{authority}@{ip}"))
            } else {
                Arc::from(authority)
            };
            let key = EndpointKey {
                placement: placement.to_string(),
                address: id.to_string(),
                tls,
            };
            EndpointSpec {
                id,
                authority: authority_header.clone(),
                address,
                named,
                peer,
                lanes: connect.lanes(),
                state: registry.endpoint(key, breaker),
            }
        })
        .collect()
}

/// `"200"` or `"200-399"` → inclusive range.
fn parse_status_range(text: &str) -> Option<(u16, u16)> {
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let (low, high) = (
        low.trim().parse::<u16>().ok()?,
        high.trim().parse::<u16>().ok()?,
    );
    ((100..=599).contains(&low) && (low..=599).contains(&high)).then_some((low, high))
}
