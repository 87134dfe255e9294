//! A compiled placement: its endpoints, how one is picked, and the
//! breaker, health, limit and retry settings its requests are admitted
//! under, with the live state it shares with older snapshots.

use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderValue;
use pingora::upstreams::peer::HttpPeer;

use super::breaker::BreakerSettings;
use super::connect::Lanes;
use super::health::{ActiveCheck, PassiveSettings};
use super::state::{EndpointState, PlacementState};
use crate::config::{FailureKind, HostHeader, OnLimit};
use crate::routing::balance::Balancer;
use crate::routing::PlacementId;

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
    /// The sum of its endpoints' weights.
    pub total_weight: u32,
    /// Where to fail over when this placement cannot serve.
    pub fallback: Option<PlacementId>,
    /// Live state shared across snapshots.
    pub state: Arc<PlacementState>,
    /// Breaker settings of its endpoints.
    pub breaker: BreakerSettings,
    /// Passive health settings of its endpoints.
    pub passive: PassiveSettings,
    /// Which failures count against breakers and passive health.
    pub failure_on: FailureSet,
    /// Active health check of its endpoints.
    pub active_check: Option<ActiveCheck>,
    /// Requests in flight at once.
    pub max_concurrency: Option<u32>,
    /// What a full placement does.
    pub on_limit: OnLimit,
    /// The largest request body accepted.
    pub max_body: Option<u64>,
    /// The largest upstream response head accepted, in bytes.
    pub max_response_head: u64,
    /// Endpoints tried in all when connecting fails.
    pub connect_attempts: u32,
    /// Extra attempts after transport failures, for idempotent bodiless requests.
    pub retry_attempts: u32,
}

/// A set of [`FailureKind`]s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailureSet(u32);

impl FailureSet {
    fn bit(kind: FailureKind) -> u32 {
        match kind {
            FailureKind::Connect => 1,
            FailureKind::Timeout => 1 << 1,
            FailureKind::Reset => 1 << 2,
            FailureKind::ServerError => 1 << 3,
            FailureKind::InvalidResponse => 1 << 4,
            // Bits 5 to 21, one per gRPC status.
            FailureKind::Grpc(code) => 1 << (5 + code as u32),
        }
    }

    /// The set of these kinds.
    pub fn of(kinds: &[FailureKind]) -> Self {
        Self(kinds.iter().fold(0, |bits, kind| bits | Self::bit(*kind)))
    }

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: FailureKind) -> bool {
        self.0 & Self::bit(kind) != 0
    }
}

/// A compiled endpoint.
#[derive(Debug)]
pub struct EndpointSpec {
    /// The endpoint as the operator wrote it, without scheme: `host:port`.
    pub id: Arc<str>,
    /// `X-Upstream` and `Host` (with the `endpoint` policy) value, prepared once.
    pub authority: HeaderValue,
    /// The address: as written, or one its name resolved to.
    pub address: SocketAddr,
    /// Whether the address came from resolving a name.
    pub named: bool,
    /// A ready peer, cloned per request; connection pooling keys on it.
    pub peer: HttpPeer,
    /// The HTTP/2 connections its requests take in turn.
    pub lanes: Lanes,
    /// Breaker, health and in-flight count, shared across snapshots.
    pub state: Arc<EndpointState>,
}

/// The id of the placement called `name`.
pub fn find(placements: &[PlacementSpec], name: &str) -> Option<PlacementId> {
    placements.iter().position(|p| *p.name == *name)
}

/// Applies each placement's settings to the live state it shares with
/// older snapshots. Called once these placements are the ones serving.
pub fn apply_settings(placements: &[PlacementSpec]) {
    for placement in placements {
        for endpoint in &placement.endpoints {
            endpoint.state.breaker.update_settings(placement.breaker);
            if placement.active_check.is_none() {
                endpoint.state.health.clear_active();
            }
        }
    }
}

/// Every endpoint with the placement it belongs to.
pub fn endpoints(
    placements: &[PlacementSpec],
) -> impl Iterator<Item = (&PlacementSpec, &EndpointSpec)> {
    placements.iter().flat_map(|placement| {
        placement
            .endpoints
            .iter()
            .map(move |endpoint| (placement, endpoint))
    })
}
