//! The configuration file's shape, as the operator writes it.
//!
//! Every struct rejects unknown keys, so a typo is an error with a line number
//! rather than a silently ignored setting. Values are kept as written (strings
//! for addresses and durations); [`crate::snapshot`] checks and compiles them,
//! so that one pass can report every problem at once.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Process-wide settings.
    #[serde(default)]
    pub server: ServerSettings,
    /// Addresses the proxy accepts client connections on.
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Routes, matched by host and path prefix, most specific first.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Named groups of upstream endpoints.
    #[serde(default)]
    pub placements: BTreeMap<String, Placement>,
    /// The admin API; absent means no admin listener.
    pub admin: Option<Admin>,
    /// The plugin directory and runtime limits; absent means no plugins.
    pub plugins: Option<PluginSettings>,
    /// Certificates from an ACME CA; absent means none are ordered.
    #[serde(default)]
    pub acme: Option<super::AcmeSettings>,
    /// The certificate a TLS listener serves when no route's matches the
    /// client's server name; absent means such handshakes fail.
    pub default_certificate: Option<CertificateFiles>,
    /// How endpoint host names are resolved.
    #[serde(default)]
    pub resolver: ResolverSettings,
}

/// `[resolver]`: how endpoint addresses written as `name:port` are resolved,
/// in the background, while the proxy runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolverSettings {
    /// DNS servers as `ip` or `ip:port`; those of `/etc/resolv.conf` when empty.
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// The shortest time an answer is kept, whatever its TTL.
    #[serde(default = "default_resolver_min_ttl")]
    pub min_ttl: String,
    /// The longest time an answer is kept, whatever its TTL.
    #[serde(default = "default_resolver_max_ttl")]
    pub max_ttl: String,
    /// How soon a name that did not resolve is asked again.
    #[serde(default = "default_resolver_retry")]
    pub retry: String,
    /// The longest one lookup may take.
    #[serde(default = "default_resolver_timeout")]
    pub timeout: String,
    /// Which address families a name contributes.
    #[serde(default)]
    pub family: AddressFamily,
}

impl Default for ResolverSettings {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            min_ttl: default_resolver_min_ttl(),
            max_ttl: default_resolver_max_ttl(),
            retry: default_resolver_retry(),
            timeout: default_resolver_timeout(),
            family: AddressFamily::default(),
        }
    }
}

/// The address records a name's endpoints come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressFamily {
    /// A and AAAA records.
    #[default]
    Both,
    /// A records only.
    Ipv4,
    /// AAAA records only.
    Ipv6,
}

/// A PEM certificate chain and its PEM private key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    /// The certificate chain file, leaf first.
    pub cert: String,
    /// The private key file.
    pub key: String,
}

/// A route's `tls`: `{ cert, key }` files, or `"acme"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "expected a table { cert = \"...\", key = \"...\" } naming both files, or the string \"acme\""
)]
pub enum RouteTls {
    /// A certificate chain and key read from files.
    Files(CertificateFiles),
    /// A certificate obtained and renewed through `[acme]` for the route's hosts.
    Acme(AcmeMarker),
}

/// The string `"acme"` in a route's `tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AcmeMarker {
    /// `tls = "acme"`.
    #[serde(rename = "acme")]
    Acme,
}

/// `[plugins]`: where plugins come from and the limits they run under.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSettings {
    /// The directory of `*.wasm` plugins, watched for changes.
    pub directory: String,
    /// Where compiled plugins are cached; `<directory>/.cache` by default.
    pub cache_dir: Option<String>,
    /// The longest one hook call may run.
    #[serde(default = "default_plugin_deadline")]
    pub deadline: String,
    /// The largest linear memory of one plugin instance.
    #[serde(default = "default_plugin_memory")]
    pub memory: ByteSize,
    /// Calls after which a warm instance is replaced by a fresh one.
    #[serde(default = "default_recycle_after")]
    pub recycle_after: u32,
    /// Warm instances kept per plugin.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
}

/// One `[[routes.plugins]]` attachment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// The plugin's name: its file stem in the plugin directory.
    pub name: String,
    /// The plugin's configuration, handed to it as JSON.
    #[serde(default)]
    pub config: toml::Table,
    /// What a failing call does: `open` skips the plugin, `closed` answers `status`.
    #[serde(default)]
    pub failure: FailurePolicy,
    /// The status a `closed` attachment answers when its plugin fails.
    #[serde(default = "default_failure_status")]
    pub status: u16,
    /// The hooks it runs at; all the plugin declares by default.
    pub hooks: Option<Vec<HookName>>,
    /// The largest body its body hooks buffer (1 MiB by default): a larger
    /// request body is answered 413, and a larger response body gets the
    /// failure policy.
    #[serde(default = "default_body_limit")]
    pub body_limit: ByteSize,
}

/// 1 MiB: room for the JSON and HTML bodies a body hook rewrites, while
/// a request buffered for a plugin stays a bounded cost.
fn default_body_limit() -> ByteSize {
    ByteSize(1 << 20)
}

/// What a failing plugin call does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Skip the plugin, count and log the failure.
    #[default]
    Open,
    /// Answer the attachment's `status`.
    Closed,
}

/// A hook, as written in configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookName {
    /// Before routing.
    OnRequest,
    /// On response headers.
    OnResponse,
    /// Choosing the placement.
    SelectPlacement,
    /// On the whole request body.
    OnRequestBody,
    /// On the whole response body.
    OnResponseBody,
}

/// `[admin]`: the status, config, reload and metrics API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// `ip:port` of its own listener.
    #[serde(default = "default_admin_address")]
    pub address: String,
    /// When set, every request needs `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

/// Process-wide settings under `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Worker threads per listener service; defaults to the number of cores.
    pub threads: Option<usize>,
    /// How long SIGTERM waits for in-flight requests before exiting.
    #[serde(default = "default_grace_period")]
    pub grace_period: String,
    /// The socket a new process (`sluice run --upgrade`) takes the listening
    /// sockets from during a zero-downtime upgrade.
    #[serde(default = "default_upgrade_socket")]
    pub upgrade_socket: String,
    /// Write one JSON access-log line per request to stdout. On by default.
    #[serde(default = "default_true")]
    pub access_log: bool,
    /// The longest request line (method, target and version) accepted;
    /// a longer one is answered 414.
    #[serde(default = "default_max_request_line")]
    pub max_request_line: ByteSize,
    /// The longest single header line accepted; a longer one is answered 431.
    #[serde(default = "default_max_header_line")]
    pub max_header_line: ByteSize,
    /// The largest request head (request line and every header) accepted;
    /// a larger one is answered 431.
    #[serde(default = "default_max_request_head")]
    pub max_request_head: ByteSize,
    /// How long a client connection may wait idle for its next request.
    #[serde(default = "default_keepalive_timeout")]
    pub keepalive_timeout: String,
    /// Requests served on one client connection before it is closed.
    #[serde(default = "default_max_requests_per_connection")]
    pub max_requests_per_connection: u32,
    /// The longest a client may pause while sending a request body.
    #[serde(default = "default_body_read_timeout")]
    pub body_read_timeout: String,
    /// How long a request head may take to arrive once it has begun, and a
    /// new connection to begin its first request.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: String,
    /// Open client connections in all; a new one past it is closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Open client connections from one address; a new one past it is
    /// closed. No cap when unset.
    pub max_connections_per_client: Option<u32>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            threads: None,
            grace_period: default_grace_period(),
            upgrade_socket: default_upgrade_socket(),
            access_log: true,
            max_request_line: default_max_request_line(),
            max_header_line: default_max_header_line(),
            max_request_head: default_max_request_head(),
            keepalive_timeout: default_keepalive_timeout(),
            max_requests_per_connection: default_max_requests_per_connection(),
            body_read_timeout: default_body_read_timeout(),
            header_read_timeout: default_header_read_timeout(),
            max_connections: default_max_connections(),
            max_connections_per_client: None,
        }
    }
}

/// One `[[listeners]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// A name routes can bind to with `listeners`.
    pub name: Option<String>,
    /// `ip:port` to bind, e.g. `0.0.0.0:8080`.
    pub address: String,
    /// Accept HTTP/2 with prior knowledge (h2c) besides HTTP/1.1. On by default.
    #[serde(default = "default_true")]
    pub h2c: bool,
    /// Terminate TLS here (HTTP/2 offered through ALPN), serving the
    /// routes' certificates by SNI.
    #[serde(default)]
    pub tls: bool,
    /// The oldest TLS version a TLS listener accepts: `"1.2"` (the
    /// default) or `"1.3"`.
    pub min_tls_version: Option<String>,
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// A name for logs and metrics; defaults to `route-<index>`.
    pub name: Option<String>,
    /// Hosts this route answers: exact names or `*.example.com`. Empty means any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// The path prefix this route answers; `/` by default.
    pub path_prefix: Option<String>,
    /// The one path this route answers, exactly (instead of `path_prefix`).
    pub path: Option<String>,
    /// The gRPC service (`package.Service`) whose calls this route answers
    /// (instead of `path` or `path_prefix`).
    pub grpc_service: Option<String>,
    /// The one method of `grpc_service` this route answers.
    pub grpc_method: Option<String>,
    /// The listeners this route answers on, by name or address; all of
    /// them by default.
    #[serde(default)]
    pub listeners: Vec<String>,
    /// Send every request to this one placement (direct routing).
    pub placement: Option<String>,
    /// Two-level routing: routing key, then table, then placement.
    pub routing: Option<Routing>,
    /// Further placements this route's plugins may send requests to (a
    /// traffic split's targets, say). A plugin may choose the route's
    /// `placement`, its table's placements and these, and no other.
    #[serde(default)]
    pub placements: Vec<String>,
    /// Add `X-Routed-To`, `X-Route-Reason` and `X-Upstream` to responses. On by default.
    #[serde(default = "default_true")]
    pub explain: bool,
    /// Header rules applied to the request sent upstream.
    #[serde(default)]
    pub request_headers: HeaderRules,
    /// Header rules applied to the response sent to the client.
    #[serde(default)]
    pub response_headers: HeaderRules,
    /// Path rewrites applied before the request goes upstream.
    pub rewrite: Option<Rewrites>,
    /// Plugins run for this route, in order.
    #[serde(default)]
    pub plugins: Vec<Attachment>,
    /// The certificate TLS listeners serve for this route's hosts: files,
    /// or `"acme"` to obtain one from the `[acme]` CA.
    pub tls: Option<RouteTls>,
    /// Answer plain-HTTP requests with a permanent redirect to HTTPS.
    #[serde(default)]
    pub redirect_https: bool,
    /// Answer requests directly, without an upstream (instead of
    /// `placement` or `routing`).
    pub respond: Option<DirectResponse>,
    /// A cap on the rate of requests, per client or other key.
    pub rate_limit: Option<RateLimit>,
    /// Send identical concurrent requests upstream once.
    pub coalesce: Option<Coalesce>,
}

/// A route's `coalesce`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Coalesce {
    /// How long a follower waits for the first request's response head
    /// before it goes upstream itself.
    #[serde(default = "default_coalesce_wait")]
    pub wait: String,
    /// Request headers whose values make requests different, besides the
    /// method, scheme, host, path and query, and the routing key.
    #[serde(default)]
    pub headers: Vec<String>,
    /// How far a follower may fall behind the first request's response
    /// before it is cut off.
    #[serde(default = "default_coalesce_buffer")]
    pub buffer: ByteSize,
}

fn default_coalesce_wait() -> String {
    "5s".to_string()
}

fn default_coalesce_buffer() -> ByteSize {
    ByteSize(1 << 20)
}

/// A route's `rate_limit`: at most `requests` per `per`, counted per key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests allowed per key in each period.
    pub requests: u32,
    /// The period, such as `"1s"` or `"1m"`.
    #[serde(default = "default_rate_period")]
    pub per: String,
    /// What requests are counted by.
    #[serde(default)]
    pub key: RateKeyKind,
    /// The header, query parameter or cookie name (for those keys).
    pub name: Option<String>,
}

fn default_rate_period() -> String {
    "1s".to_string()
}

/// What a rate limit counts requests by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateKeyKind {
    /// The client's address.
    #[default]
    Client,
    /// The route's routing key.
    RoutingKey,
    /// A request header, by `name` (an API key, say).
    Header,
    /// A query parameter, by `name`.
    Query,
    /// A cookie, by `name`.
    Cookie,
}

/// A route's `respond`: a fixed answer written by the proxy itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectResponse {
    /// The status; 200 by default.
    #[serde(default = "default_respond_status")]
    pub status: u16,
    /// The body; `{host}`, `{hostport}`, `{path}`, `{query}` and `{uri}`
    /// are filled in.
    #[serde(default)]
    pub body: String,
    /// Response headers, with the same placeholders (e.g. `Location`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// `[routes.routing]`: where the routing key comes from and where it leads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    /// Where the routing key is read from.
    pub key: KeySource,
    /// Routing key → placement name.
    #[serde(default)]
    pub table: BTreeMap<String, String>,
    /// The placement for keys not in the table (and missing keys, unless rejected).
    pub default: String,
    /// What a request without a routing key gets.
    #[serde(default)]
    pub on_missing_key: MissingKey,
}

/// Where a routing key is read from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySource {
    /// The kind of source.
    pub source: KeySourceKind,
    /// Header, cookie or query parameter name (for those sources).
    pub name: Option<String>,
    /// Zero-based label or segment index (for `host_label` and `path_segment`).
    pub index: Option<usize>,
}

/// The kinds of routing-key source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySourceKind {
    /// A request header, by `name`.
    Header,
    /// A cookie, by `name`.
    Cookie,
    /// A query parameter, by `name`.
    Query,
    /// A label of the host, `index` 0 being the leftmost.
    HostLabel,
    /// A path segment, `index` 0 being the first after `/`.
    PathSegment,
}

impl KeySourceKind {
    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Header => "header",
            Self::Cookie => "cookie",
            Self::Query => "query",
            Self::HostLabel => "host_label",
            Self::PathSegment => "path_segment",
        }
    }
}

/// What happens to a request that carries no routing key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingKey {
    /// Send it to the default placement.
    #[default]
    Default,
    /// Answer 400.
    Reject,
}

/// Set, add or remove headers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRules {
    /// Replace the header's value (or add it when absent).
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Append a value, keeping existing ones.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Remove every value of these headers.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// A path rewrite. Exactly one of `strip_prefix`, `prefix` or `regex` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// Remove this prefix from the path.
    pub strip_prefix: Option<String>,
    /// Replace this prefix with `to`.
    pub prefix: Option<String>,
    /// Replace matches of this regex with `to`, which may use `$1` or `$name`
    /// captures (`$${name}` for the braced form, since `${...}` is an
    /// environment placeholder).
    pub regex: Option<String>,
    /// Replace occurrences of this text, anywhere in the path, with `to`.
    pub replace: Option<String>,
    /// With `replace`: how many occurrences, from the left; all by default.
    pub limit: Option<usize>,
    /// The replacement for `prefix`, `regex` or `replace`.
    pub to: Option<String>,
}

/// A route's `rewrite`: one rewrite, or several applied in order.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "expected a rewrite table such as { strip_prefix = \"/api\" }, or an array of them applied in order"
)]
pub enum Rewrites {
    /// One rewrite.
    One(Rewrite),
    /// Rewrites applied one after the other, each to the path the one
    /// before left.
    Chain(Vec<Rewrite>),
}

impl Rewrites {
    /// The rewrites, in the order they apply.
    pub fn steps(&self) -> &[Rewrite] {
        match self {
            Self::One(rewrite) => std::slice::from_ref(rewrite),
            Self::Chain(rewrites) => rewrites,
        }
    }
}

/// One `[placements.NAME]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// The upstream endpoints.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// How an endpoint is chosen.
    #[serde(default)]
    pub balance: Balance,
    /// The protocol spoken to the endpoints.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// Upstream timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// How connections to the endpoints are kept and shared.
    #[serde(default)]
    pub pool: Pool,
    /// Which `Host` header the upstream sees.
    #[serde(default)]
    pub host_header: HostHeader,
    /// The placement to fail over to when this one cannot serve.
    pub fallback: Option<String>,
    /// Active health checks; none when absent.
    pub health: Option<HealthCheck>,
    /// Passive health: failures of real traffic.
    #[serde(default)]
    pub passive: PassiveHealth,
    /// The circuit breaker of each endpoint.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Concurrency and body limits.
    #[serde(default)]
    pub limits: Limits,
    /// Retries beyond the connect retry.
    #[serde(default)]
    pub retry: Retry,
}

/// `[placements.NAME.health]`: active checks of every endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// `http` (a GET of `path`), `tcp` (a connect) or `grpc` (the gRPC
    /// health service).
    #[serde(default)]
    pub kind: HealthCheckKind,
    /// The path requested by HTTP checks.
    #[serde(default = "default_health_path")]
    pub path: String,
    /// Healthy statuses, as `"200"` or an inclusive range `"200-399"`.
    #[serde(default = "default_health_expect")]
    pub expect: String,
    /// The service a gRPC check asks about; the server as a whole when
    /// absent.
    pub service: Option<String>,
    /// Time between checks.
    #[serde(default = "default_health_interval")]
    pub interval: String,
    /// Time allowed for one check.
    #[serde(default = "default_health_timeout")]
    pub timeout: String,
    /// Successful checks in a row that bring a down endpoint back.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Failed checks in a row that take an endpoint down.
    #[serde(default = "default_fall")]
    pub fall: u32,
}

/// Active health-check kinds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckKind {
    /// An HTTP GET.
    #[default]
    Http,
    /// A TCP connect.
    Tcp,
    /// A call of the standard gRPC health service, `grpc.health.v1`.
    Grpc,
}

/// `[placements.NAME.passive]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealth {
    /// Consecutive failed requests that mark an endpoint down; 0 disables.
    #[serde(default = "default_passive_failures")]
    pub failures: u32,
    /// How long it stays down (a successful active check ends this early).
    #[serde(default = "default_passive_cooldown")]
    pub cooldown: String,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        Self {
            failures: default_passive_failures(),
            cooldown: default_passive_cooldown(),
        }
    }
}

/// `[placements.NAME.breaker]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker; 0 disables this trigger.
    #[serde(default = "default_breaker_consecutive")]
    pub consecutive_failures: u32,
    /// Failure share over `window` that opens it (0 to 1); 0 disables this trigger.
    #[serde(default = "default_breaker_rate")]
    pub failure_rate: f64,
    /// The rolling window of the failure rate.
    #[serde(default = "default_breaker_window")]
    pub window: String,
    /// Requests needed in the window before the rate counts.
    #[serde(default = "default_breaker_min_requests")]
    pub min_requests: u32,
    /// How long it stays open at first.
    #[serde(default = "default_breaker_open_for")]
    pub open_for: String,
    /// The cap on the open time, which doubles after each failed half-open.
    #[serde(default = "default_breaker_max_open_for")]
    pub max_open_for: String,
    /// Probe requests admitted at once while half-open.
    #[serde(default = "default_breaker_probes")]
    pub half_open_probes: u32,
    /// Successful probes that close it.
    #[serde(default = "default_breaker_close_after")]
    pub close_after: u32,
    /// What counts as a failure: any of `connect`, `timeout`, `reset`,
    /// `5xx`, `invalid_response`, and gRPC statuses by name.
    #[serde(default = "default_failure_kinds")]
    pub failure_on: Vec<FailureKind>,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: default_breaker_consecutive(),
            failure_rate: default_breaker_rate(),
            window: default_breaker_window(),
            min_requests: default_breaker_min_requests(),
            open_for: default_breaker_open_for(),
            max_open_for: default_breaker_max_open_for(),
            half_open_probes: default_breaker_probes(),
            close_after: default_breaker_close_after(),
            failure_on: default_failure_kinds(),
        }
    }
}

/// Kinds of upstream failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub enum FailureKind {
    /// The connection could not be established: `connect`.
    Connect,
    /// The upstream did not answer in time: `timeout`.
    Timeout,
    /// The connection broke after it was established: `reset`.
    Reset,
    /// The upstream answered with a 5xx status: `5xx`.
    ServerError,
    /// The upstream's answer broke HTTP: a malformed or oversized head, or
    /// a body whose framing is wrong: `invalid_response`.
    InvalidResponse,
    /// A gRPC response ended with this status, written by its name:
    /// `UNAVAILABLE`, `INTERNAL`, ...
    Grpc(GrpcCode),
}

impl FailureKind {
    /// The label value used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Reset => "reset",
            Self::ServerError => "5xx",
            Self::InvalidResponse => "invalid_response",
            Self::Grpc(code) => code.name(),
        }
    }
}

impl TryFrom<String> for FailureKind {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        Ok(match name.as_str() {
            "connect" => Self::Connect,
            "timeout" => Self::Timeout,
            "reset" => Self::Reset,
            "5xx" => Self::ServerError,
            "invalid_response" => Self::InvalidResponse,
            other => match GrpcCode::ALL.iter().find(|code| code.name() == other) {
                Some(code) if *code != GrpcCode::Ok => Self::Grpc(*code),
                _ => {
                    return Err(format!(
                        "unknown failure kind {other:?}; expected connect, timeout, reset, 5xx, \
                         invalid_response, or a gRPC status such as UNAVAILABLE"
                    ))
                }
            },
        })
    }
}

/// The status codes of gRPC, which a response carries in `grpc-status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum GrpcCode {
    /// 0: not an error.
    Ok = 0,
    /// 1: the call was cancelled.
    Cancelled,
    /// 2: an error with no better code.
    Unknown,
    /// 3: the client sent an invalid argument.
    InvalidArgument,
    /// 4: the deadline passed before the call completed.
    DeadlineExceeded,
    /// 5: something asked for was not found.
    NotFound,
    /// 6: something to be created exists already.
    AlreadyExists,
    /// 7: the caller may not do this.
    PermissionDenied,
    /// 8: a quota or resource ran out.
    ResourceExhausted,
    /// 9: the system is not in the state the call needs.
    FailedPrecondition,
    /// 10: aborted, typically by a concurrency conflict.
    Aborted,
    /// 11: past the valid range.
    OutOfRange,
    /// 12: not implemented or not supported.
    Unimplemented,
    /// 13: an internal invariant broke.
    Internal,
    /// 14: the service is unavailable for now.
    Unavailable,
    /// 15: data was lost or corrupted.
    DataLoss,
    /// 16: no valid authentication.
    Unauthenticated,
}

impl GrpcCode {
    /// Every code, by its number.
    pub const ALL: [GrpcCode; 17] = [
        Self::Ok,
        Self::Cancelled,
        Self::Unknown,
        Self::InvalidArgument,
        Self::DeadlineExceeded,
        Self::NotFound,
        Self::AlreadyExists,
        Self::PermissionDenied,
        Self::ResourceExhausted,
        Self::FailedPrecondition,
        Self::Aborted,
        Self::OutOfRange,
        Self::Unimplemented,
        Self::Internal,
        Self::Unavailable,
        Self::DataLoss,
        Self::Unauthenticated,
    ];

    /// The code numbered `number`, if there is one.
    pub fn from_number(number: u32) -> Option<Self> {
        Self::ALL.get(number as usize).copied()
    }

    /// The code's name, as gRPC writes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Cancelled => "CANCELLED",
            Self::Unknown => "UNKNOWN",
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Self::NotFound => "NOT_FOUND",
            Self::AlreadyExists => "ALREADY_EXISTS",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Self::FailedPrecondition => "FAILED_PRECONDITION",
            Self::Aborted => "ABORTED",
            Self::OutOfRange => "OUT_OF_RANGE",
            Self::Unimplemented => "UNIMPLEMENTED",
            Self::Internal => "INTERNAL",
            Self::Unavailable => "UNAVAILABLE",
            Self::DataLoss => "DATA_LOSS",
            Self::Unauthenticated => "UNAUTHENTICATED",
        }
    }
}

/// `[placements.NAME.limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Requests in flight at once; unlimited when absent.
    pub max_concurrency: Option<u32>,
    /// The largest request body, e.g. `"10MiB"` or a number of bytes.
    pub max_body: Option<ByteSize>,
    /// The largest response head an upstream may send (status line and
    /// headers); a larger one is answered 502.
    #[serde(default = "default_max_response_head")]
    pub max_response_head: ByteSize,
    /// When the concurrency limit is reached: answer 429, or fail over.
    #[serde(default)]
    pub on_limit: OnLimit,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_concurrency: None,
            max_body: None,
            max_response_head: default_max_response_head(),
            on_limit: OnLimit::default(),
        }
    }
}

/// A size in bytes, written as a number of bytes or a string with a unit:
/// `"512KiB"`, `"10MB"`, `"1.5GiB"` (KB, MB, GB are powers of 1000; KiB,
/// MiB, GiB powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses a size with an optional unit.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a size; write e.g. \"10MiB\" or \"512KB\""))?;
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" | "k" => 1_000,
            "kib" => 1 << 10,
            "mb" | "m" => 1_000_000,
            "mib" => 1 << 20,
            "gb" | "g" => 1_000_000_000,
            "gib" => 1 << 30,
            other => {
                return Err(format!(
                    "unknown size unit {other:?}; use B, KB, KiB, MB, MiB, GB or GiB"
                ))
            }
        };
        Ok(Self((number * multiplier as f64) as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of bytes or a size such as \"10MiB\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// What a full placement does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnLimit {
    /// Answer 429.
    #[default]
    Reject,
    /// Fail over to the fallback placement, with reason `concurrency_limit`.
    Failover,
}

/// `[placements.NAME.retry]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Endpoints tried in all when connecting fails.
    #[serde(default = "default_connect_attempts")]
    pub connect_attempts: u32,
    /// Extra attempts after a failure past the connect (reset, timeout), only
    /// for idempotent methods whose body was not sent; 0 disables.
    #[serde(default)]
    pub attempts: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            connect_attempts: default_connect_attempts(),
            attempts: 0,
        }
    }
}

/// One upstream endpoint of a placement.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// `host:port`, optionally prefixed with `http://` or `https://`.
    pub address: String,
    /// Relative weight for the `weighted`, `consistent_hash` and
    /// `least_request` policies.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Speak TLS to this endpoint (also implied by an `https://` address).
    #[serde(default)]
    pub tls: bool,
    /// The TLS server name; defaults to the address's host.
    pub sni: Option<String>,
    /// Verify the endpoint's certificate. On by default.
    #[serde(default = "default_true")]
    pub verify: bool,
}

/// Load-balancing policies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// In turn, in proportion to the endpoints' weights.
    Weighted,
    /// The same routing key goes to the same endpoint while it is available.
    ConsistentHash,
    /// The less busy of two endpoints drawn at random (in proportion to
    /// their weights): the one with fewer requests in flight per weight.
    LeastRequest,
}

/// `[placements.NAME.timeouts]`, as durations such as `"250ms"` or `"5s"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Time allowed to establish a connection.
    #[serde(default = "default_connect_timeout")]
    pub connect: String,
    /// Time allowed between reads from the upstream.
    #[serde(default = "default_read_timeout")]
    pub read: String,
    /// How long an unused pooled connection is kept.
    #[serde(default = "default_idle_timeout")]
    pub idle: String,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: default_connect_timeout(),
            read: default_read_timeout(),
            idle: default_idle_timeout(),
        }
    }
}

/// The protocol a placement speaks to its endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1, one request at a time on each connection.
    #[default]
    Http1,
    /// HTTP/2 over TLS, offered through ALPN; an endpoint that does not
    /// accept it is spoken to in HTTP/1.1.
    H2,
    /// HTTP/2 over plain TCP, with prior knowledge (gRPC's usual transport
    /// inside a cluster).
    H2c,
}

/// `[placements.NAME.pool]`: how connections to each endpoint are kept and
/// shared. The connect and idle timeouts are under `timeouts`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// Idle connections kept per endpoint; when absent, only the
    /// server-wide pool bounds them.
    pub max_idle: Option<u32>,
    /// TCP keep-alive probes on upstream connections; off when absent.
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Requests at once on one HTTP/2 connection (`h2` and `h2c`).
    #[serde(default = "default_h2_max_streams")]
    pub h2_max_streams: u32,
    /// HTTP/2 connections per endpoint that requests are spread over; more
    /// open while all of their streams are busy.
    #[serde(default = "default_h2_connections")]
    pub h2_connections: u32,
}

impl Default for Pool {
    fn default() -> Self {
        Self {
            max_idle: None,
            tcp_keepalive: None,
            h2_max_streams: default_h2_max_streams(),
            h2_connections: default_h2_connections(),
        }
    }
}

fn default_h2_max_streams() -> u32 {
    100
}

fn default_h2_connections() -> u32 {
    1
}

/// `[placements.NAME.pool.tcp_keepalive]`: TCP keep-alive probes, which
/// find an upstream connection whose peer vanished without closing it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpKeepalive {
    /// How long a connection is silent before the first probe.
    #[serde(default = "default_keepalive_idle")]
    pub idle: String,
    /// Time between probes.
    #[serde(default = "default_keepalive_interval")]
    pub interval: String,
    /// Unanswered probes that close the connection.
    #[serde(default = "default_keepalive_probes")]
    pub probes: u32,
}

fn default_keepalive_idle() -> String {
    "60s".to_string()
}

fn default_keepalive_interval() -> String {
    "10s".to_string()
}

fn default_keepalive_probes() -> u32 {
    3
}

/// The `Host` header sent upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostHeader {
    /// Keep the client's `Host`.
    #[default]
    Client,
    /// Use the endpoint's `host:port`.
    Endpoint,
}

fn default_true() -> bool {
    true
}

fn default_respond_status() -> u16 {
    200
}

fn default_weight() -> u32 {
    1
}

fn default_connect_timeout() -> String {
    "5s".to_string()
}

fn default_read_timeout() -> String {
    "60s".to_string()
}

fn default_idle_timeout() -> String {
    "60s".to_string()
}

fn default_admin_address() -> String {
    "127.0.0.1:9901".to_string()
}

fn default_grace_period() -> String {
    "30s".to_string()
}

fn default_upgrade_socket() -> String {
    "/tmp/sluice-upgrade.sock".to_string()
}

fn default_health_path() -> String {
    "/health".to_string()
}

fn default_health_expect() -> String {
    "200-399".to_string()
}

fn default_health_interval() -> String {
    "5s".to_string()
}

fn default_health_timeout() -> String {
    "1s".to_string()
}

fn default_rise() -> u32 {
    2
}

fn default_fall() -> u32 {
    3
}

fn default_passive_failures() -> u32 {
    5
}

fn default_passive_cooldown() -> String {
    "10s".to_string()
}

fn default_breaker_consecutive() -> u32 {
    5
}

fn default_breaker_rate() -> f64 {
    0.5
}

fn default_breaker_window() -> String {
    "10s".to_string()
}

fn default_breaker_min_requests() -> u32 {
    20
}

fn default_breaker_open_for() -> String {
    "5s".to_string()
}

fn default_breaker_max_open_for() -> String {
    "60s".to_string()
}

fn default_breaker_probes() -> u32 {
    1
}

fn default_breaker_close_after() -> u32 {
    2
}

fn default_failure_kinds() -> Vec<FailureKind> {
    vec![
        FailureKind::Connect,
        FailureKind::Timeout,
        FailureKind::Reset,
        FailureKind::ServerError,
        FailureKind::InvalidResponse,
        FailureKind::Grpc(GrpcCode::Unavailable),
        FailureKind::Grpc(GrpcCode::Internal),
        FailureKind::Grpc(GrpcCode::DeadlineExceeded),
    ]
}

/// 64 KiB: room for large cookies and tokens, as Envoy's default allows,
/// while a runaway head is cut off long before Pingora's own 1 MiB bound.
fn default_max_response_head() -> ByteSize {
    ByteSize(64 << 10)
}

fn default_connect_attempts() -> u32 {
    3
}

fn default_body_read_timeout() -> String {
    "60s".into()
}

fn default_header_read_timeout() -> String {
    "30s".into()
}

/// Room for the 10,000 and more concurrent clients Sluice is sized for,
/// with their idle connections at about 6 KiB each.
fn default_max_connections() -> u32 {
    16_384
}

fn default_keepalive_timeout() -> String {
    "60s".into()
}

fn default_max_requests_per_connection() -> u32 {
    1000
}

fn default_max_request_line() -> ByteSize {
    ByteSize(8 << 10)
}

fn default_max_header_line() -> ByteSize {
    ByteSize(8 << 10)
}

fn default_max_request_head() -> ByteSize {
    ByteSize(32 << 10)
}

fn default_resolver_min_ttl() -> String {
    "5s".into()
}

fn default_resolver_max_ttl() -> String {
    "5m".into()
}

fn default_resolver_retry() -> String {
    "2s".into()
}

fn default_resolver_timeout() -> String {
    "2s".into()
}

fn default_plugin_deadline() -> String {
    "5ms".to_string()
}

fn default_plugin_memory() -> ByteSize {
    ByteSize(16 << 20)
}

fn default_recycle_after() -> u32 {
    10_000
}

fn default_pool_size() -> usize {
    64
}

fn default_failure_status() -> u16 {
    500
}
