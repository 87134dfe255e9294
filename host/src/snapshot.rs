//! The compiled, immutable form of a configuration.
//!
//! A [`Snapshot`] is built once per config load (see [`crate::config::compile`])
//! and shared by every request that starts while it is current. Nothing in it
//! changes after compilation, so requests read it without locks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use pingora::upstreams::peer::HttpPeer;

use crate::config::HostHeader;
use crate::routing::balance::Balancer;
use crate::routing::key::KeyExtractor;
use crate::routing::route_match::RouteIndex;
use crate::transform::headers::HeaderOps;
use crate::transform::rewrite::PathRewrite;

/// Index of a placement in [`Snapshot::placements`].
pub type PlacementId = usize;

/// Everything a request needs to be routed and proxied.
#[derive(Debug)]
pub struct Snapshot {
    /// Where the proxy listens.
    pub listeners: Vec<ListenerSpec>,
    /// Worker threads per listener service.
    pub threads: usize,
    /// Route lookup by host and path.
    pub index: RouteIndex,
    /// Routes, by the indexes [`Snapshot::index`] returns.
    pub routes: Vec<RouteSpec>,
    /// Placements, by [`PlacementId`].
    pub placements: Vec<PlacementSpec>,
}

/// One listening address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    /// The address to bind.
    pub address: SocketAddr,
    /// Whether HTTP/2 with prior knowledge is accepted.
    pub h2c: bool,
}

/// A compiled route.
#[derive(Debug)]
pub struct RouteSpec {
    /// The route's name, for logs and metrics.
    pub name: Arc<str>,
    /// Where its requests go.
    pub target: RouteTarget,
    /// Whether explainability headers are added to responses.
    pub explain: bool,
    /// Rules for the request sent upstream.
    pub request_headers: HeaderOps,
    /// Rules for the response sent to the client.
    pub response_headers: HeaderOps,
    /// The path rewrite, if any.
    pub rewrite: Option<PathRewrite>,
}

/// Where a route sends requests.
#[derive(Debug)]
pub enum RouteTarget {
    /// Always this placement.
    Direct(PlacementId),
    /// By routing key, through a table.
    Keyed(KeyedTarget),
}

/// Two-level routing: routing key → placement.
#[derive(Debug)]
pub struct KeyedTarget {
    /// Where the key is read from.
    pub extractor: KeyExtractor,
    /// Routing key → placement.
    pub table: HashMap<Box<str>, PlacementId>,
    /// The placement for unknown keys, and for missing keys unless rejected.
    pub default: PlacementId,
    /// Answer 400 to requests without a key.
    pub reject_missing: bool,
}

/// A compiled placement.
#[derive(Debug)]
pub struct PlacementSpec {
    /// The placement's name, as in `X-Routed-To`.
    pub name: Arc<str>,
    /// `X-Routed-To` value, prepared once.
    pub name_header: HeaderValue,
    /// The endpoints, by the indexes [`PlacementSpec::balancer`] returns.
    pub endpoints: Vec<EndpointSpec>,
    /// Endpoint selection.
    pub balancer: Balancer,
    /// Which `Host` the upstream sees.
    pub host_header: HostHeader,
}

/// A compiled endpoint.
#[derive(Debug)]
pub struct EndpointSpec {
    /// The endpoint as the operator wrote it, without scheme: `host:port`.
    pub id: Arc<str>,
    /// `X-Upstream` and `Host` (with the `endpoint` policy) value, prepared once.
    pub authority: HeaderValue,
    /// The resolved address.
    pub address: SocketAddr,
    /// A ready peer, cloned per request; connection pooling keys on it.
    pub peer: HttpPeer,
}

/// Upstream timeouts of a placement.
#[derive(Debug, Clone, Copy)]
pub struct TimeoutSpec {
    /// Connection establishment.
    pub connect: Duration,
    /// Between reads.
    pub read: Duration,
    /// Pooled connection idle time.
    pub idle: Duration,
}
