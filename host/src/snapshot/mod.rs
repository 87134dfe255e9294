//! The compiled, immutable form of a configuration.
//!
//! A [`Snapshot`] is built once per config load ([`compile()`]) and shared
//! by every request that starts while it is current. Nothing in it changes
//! after compilation, so requests read it without locks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use pingora::upstreams::peer::HttpPeer;

pub mod compile;

pub use compile::compile;

use crate::config::{FailureKind, HostHeader, OnLimit};
use crate::plugins::spec::{PluginSpec, RouteAttachments};
use crate::resilience::breaker::BreakerSettings;
use crate::resilience::health::{ActiveCheck, PassiveSettings};
use crate::resilience::state::{EndpointState, PlacementState};
use crate::routing::balance::Balancer;
pub use crate::routing::route::{KeyedTarget, RouteSpec, RouteTarget};
use crate::routing::route_match::RouteIndex;
pub use crate::routing::PlacementId;
use crate::tls::certificates::CertificateTable;
use crate::tls::termination::MinTlsVersion;

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
    /// The admin API listener, if configured.
    pub admin: Option<AdminSpec>,
    /// How long SIGTERM waits for in-flight requests.
    pub grace_period: Duration,
    /// Where a new process takes over the listening sockets from.
    pub upgrade_socket: String,
    /// Whether each request is logged as a JSON line on stdout.
    pub access_log: bool,
    /// A short content hash of the config text.
    pub version: String,
    /// The plugin settings, if plugins are configured.
    pub plugins: Option<PluginSpec>,
    /// The ACME settings, if certificates are ordered.
    pub acme: Option<crate::tls::acme::AcmeConfig>,
    /// The certificates TLS listeners serve, by server name.
    pub certificates: CertificateTable,
    /// The certificate and key files, watched for changes.
    pub certificate_files: Vec<std::path::PathBuf>,
    /// The certificates to order through [`Snapshot::acme`], each a list
    /// of names: the hosts of one route with `tls = "acme"`. Lists a reload
    /// adds are ordered too, if ACME runs (the snapshot the process started
    /// on had some); lists it removes or changes keep being renewed until a
    /// restart.
    pub acme_certificates: Vec<Vec<String>>,
}

impl Snapshot {
    /// Each route's plugin attachments, for the plugin registry to check
    /// new plugin versions against.
    pub fn attachments(&self) -> Vec<RouteAttachments> {
        self.routes
            .iter()
            .map(|route| RouteAttachments {
                route: route.name.clone(),
                plugins: route.plugins.clone(),
            })
            .collect()
    }
}

/// The admin listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSpec {
    /// Where it listens.
    pub address: SocketAddr,
    /// The bearer token it requires, if any.
    pub token: Option<String>,
}

/// One listening address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    /// The address to bind.
    pub address: SocketAddr,
    /// Whether HTTP/2 with prior knowledge is accepted.
    pub h2c: bool,
    /// Whether the listener terminates TLS.
    pub tls: bool,
    /// The oldest TLS version accepted when it does.
    pub min_tls_version: MinTlsVersion,
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
pub struct FailureSet(u8);

impl FailureSet {
    fn bit(kind: FailureKind) -> u8 {
        match kind {
            FailureKind::Connect => 1,
            FailureKind::Timeout => 2,
            FailureKind::Reset => 4,
            FailureKind::ServerError => 8,
            FailureKind::InvalidResponse => 16,
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
    /// The resolved address.
    pub address: SocketAddr,
    /// A ready peer, cloned per request; connection pooling keys on it.
    pub peer: HttpPeer,
    /// Breaker, health and in-flight count, shared across snapshots.
    pub state: Arc<EndpointState>,
}

impl Snapshot {
    /// Applies each placement's settings to the live state it shares with
    /// older snapshots. Called once this snapshot is the current one.
    pub fn apply_settings(&self) {
        for placement in &self.placements {
            for endpoint in &placement.endpoints {
                endpoint.state.breaker.update_settings(placement.breaker);
                if placement.active_check.is_none() {
                    endpoint.state.health.clear_active();
                }
            }
        }
    }

    /// Every endpoint with the placement it belongs to.
    pub fn endpoints(&self) -> impl Iterator<Item = (&PlacementSpec, &EndpointSpec)> {
        self.placements.iter().flat_map(|placement| {
            placement
                .endpoints
                .iter()
                .map(move |endpoint| (placement, endpoint))
        })
    }
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
