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
}

/// Process-wide settings under `[server]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Worker threads per listener service; defaults to the number of cores.
    pub threads: Option<usize>,
}

/// One `[[listeners]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// `ip:port` to bind, e.g. `0.0.0.0:8080`.
    pub address: String,
    /// Accept HTTP/2 with prior knowledge (h2c) besides HTTP/1.1. On by default.
    #[serde(default = "default_true")]
    pub h2c: bool,
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
    #[serde(default = "default_path_prefix")]
    pub path_prefix: String,
    /// Send every request to this one placement (direct routing).
    pub placement: Option<String>,
    /// Two-level routing: routing key, then table, then placement.
    pub routing: Option<Routing>,
    /// Add `X-Routed-To`, `X-Route-Reason` and `X-Upstream` to responses. On by default.
    #[serde(default = "default_true")]
    pub explain: bool,
    /// Header rules applied to the request sent upstream.
    #[serde(default)]
    pub request_headers: HeaderRules,
    /// Header rules applied to the response sent to the client.
    #[serde(default)]
    pub response_headers: HeaderRules,
    /// A path rewrite applied before the request goes upstream.
    pub rewrite: Option<Rewrite>,
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
    /// The replacement for `prefix` or `regex`.
    pub to: Option<String>,
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
    /// Upstream timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Which `Host` header the upstream sees.
    #[serde(default)]
    pub host_header: HostHeader,
}

/// One upstream endpoint of a placement.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// `host:port`, optionally prefixed with `http://` or `https://`.
    pub address: String,
    /// Relative weight for the `weighted` and `consistent_hash` policies.
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

fn default_weight() -> u32 {
    1
}

fn default_path_prefix() -> String {
    "/".to_string()
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
