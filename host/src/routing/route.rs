//! A compiled route: where its requests go, and what is done to them on
//! the way.

use std::collections::HashMap;
use std::sync::Arc;

use super::key::KeyExtractor;
use super::PlacementId;
use crate::plugins::spec::AttachmentSpec;
use crate::transform::headers::HeaderOps;
use crate::transform::respond::Answer;
use crate::transform::rewrite::PathRewrites;

/// A compiled route.
#[derive(Debug)]
pub struct RouteSpec {
    /// The route's name, for logs and metrics.
    pub name: Arc<str>,
    /// Where its requests go.
    pub target: RouteTarget,
    /// Whether explainability headers are added to responses.
    pub explain: bool,
    /// Whether plain-HTTP requests are redirected to HTTPS.
    pub redirect_https: bool,
    /// Rules for the request sent upstream.
    pub request_headers: HeaderOps,
    /// Rules for the response sent to the client.
    pub response_headers: HeaderOps,
    /// The path rewrites, in order, if any.
    pub rewrite: Option<PathRewrites>,
    /// Plugins run for this route, in order.
    pub plugins: Vec<AttachmentSpec>,
    /// Further placements its plugins may choose.
    pub plugin_placements: Vec<PlacementId>,
}

/// Where a route sends requests.
#[derive(Debug)]
pub enum RouteTarget {
    /// Always this placement.
    Direct(PlacementId),
    /// By routing key, through a table.
    Keyed(KeyedTarget),
    /// Answered by the proxy itself, without an upstream.
    Respond(Answer),
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
