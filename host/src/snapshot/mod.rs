//! The compiled, immutable form of a configuration.
//!
//! A [`Snapshot`] is built once per config load ([`compile()`]) and shared
//! by every request that starts while it is current. Nothing in it changes
//! after compilation, so requests read it without locks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub(crate) mod compile;

pub use compile::compile;

use crate::plugins::spec::{PluginSpec, RouteAttachments};
pub use crate::resilience::placement::{EndpointSpec, FailureSet, PlacementSpec};
use crate::routing::names::ResolverSpec;
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
    /// Each route's traffic controls, by the same indexes.
    pub traffic: Vec<RouteTraffic>,
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
    /// The largest request line, header line and request head accepted.
    pub head_limits: crate::resilience::limits::HeadLimits,
    /// How long a client connection may wait idle for its next request.
    pub keepalive_timeout: Duration,
    /// Requests served on one client connection before it is closed.
    pub max_requests_per_connection: u32,
    /// The longest a client may pause while sending a request body.
    pub body_read_timeout: Duration,
    /// How long a request head may take once begun (read at start).
    pub header_read_timeout: Duration,
    /// The caps on open client connections.
    pub connection_caps: crate::resilience::connections::ConnectionCaps,
    /// A short content hash of the config text.
    pub version: String,
    /// The plugin settings, if plugins are configured.
    pub plugins: Option<PluginSpec>,
    /// The ACME settings, if certificates are ordered.
    pub acme: Option<crate::tls::acme::AcmeConfig>,
    /// The certificates TLS listeners serve, by server name.
    pub certificates: Arc<CertificateTable>,
    /// The certificate and key files, watched for changes.
    pub certificate_files: Vec<std::path::PathBuf>,
    /// The certificates to order through [`Snapshot::acme`], each a list
    /// of names: the hosts of one route with `tls = "acme"`. Lists a reload
    /// adds are ordered too, if ACME runs (the snapshot the process started
    /// on had some); lists it removes or changes keep being renewed until a
    /// restart.
    pub acme_certificates: Vec<Vec<String>>,
    /// How upstream names are looked up.
    pub resolver: ResolverSpec,
    /// The host names endpoints are written with, kept resolved while this
    /// snapshot serves.
    pub upstream_names: Vec<String>,
    /// What the config asks for that cannot be had now (names that do not
    /// resolve), with their lines: reported, not refused.
    pub warnings: Vec<crate::config::ConfigError>,
}

/// What a route does to the flow of its requests, besides routing them.
#[derive(Debug, Default)]
pub struct RouteTraffic {
    /// Its rate limit.
    pub rate_limit: Option<crate::resilience::rate::RateLimitSpec>,
    /// Its request coalescing.
    pub coalesce: Option<crate::resilience::coalesce::CoalesceSpec>,
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
