//! Validation and compilation of a [`Config`] into a [`Snapshot`].
//!
//! Every check runs and every problem is collected, so `sluice check` can list
//! them all at once. Each problem carries its key path; its line comes from the
//! [`SourceMap`] of the text the config was parsed from.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use pingora::upstreams::peer::HttpPeer;

use super::{
    AdminSpec, EndpointSpec, FailureSet, KeyedTarget, ListenerSpec, PlacementSpec, PluginSpec,
    RouteSpec, RouteTarget, Snapshot,
};
use crate::config::{self, Config, ConfigError, ConfigErrors, KeyPath, LoadedConfig, MissingKey};
use crate::plugins::runtime::RuntimeLimits;
use crate::plugins::spec::AttachmentSpec;
use crate::resilience::breaker::BreakerSettings;
use crate::resilience::health::{ActiveCheck, CheckKind, PassiveSettings};
use crate::resilience::state::{EndpointKey, Registry};
use crate::routing::balance::Balancer;
use crate::routing::key::KeyExtractor;
use crate::routing::route_match::{HostPattern, RouteIndex};
use crate::tls::acme::{self, AcmeConfig, CloudflareConfig, RetryBackoff};
use crate::tls::certificates::{Certificate, CertificateTable};
use crate::tls::termination::MinTlsVersion;
use crate::transform::headers::HeaderOps;
use crate::transform::rewrite::PathRewrite;

/// The longest duration any setting accepts. Timers add durations to the
/// current instant, and far larger ones (humantime reads up to about 584
/// billion years) would overflow it on a request's path.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Validates `loaded` and compiles it, or returns every problem found.
/// Endpoint and placement state comes from `registry`, so state carries over
/// from earlier snapshots; nothing in it changes until the snapshot is
/// published (see [`Snapshot::apply_settings`]).
pub fn compile(
    loaded: &LoadedConfig,
    origin: &str,
    registry: &Registry,
) -> Result<Snapshot, ConfigErrors> {
    let mut compiler = Compiler {
        errors: Vec::new(),
        registry,
    };
    let mut snapshot = compiler.snapshot(&loaded.config);
    snapshot.version = crate::support::files::content_version(loaded.source.text().as_bytes());
    if compiler.errors.is_empty() {
        Ok(snapshot)
    } else {
        let errors = compiler
            .errors
            .into_iter()
            .map(|(path, message)| {
                let line = loaded.source.line_of(&path);
                ConfigError::new(path, line, message)
            })
            .collect();
        Err(ConfigErrors::new(origin.to_string(), errors))
    }
}

struct Compiler<'r> {
    errors: Vec<(KeyPath, String)>,
    registry: &'r Registry,
}

impl Compiler<'_> {
    fn error(&mut self, path: KeyPath, message: impl Into<String>) {
        self.errors.push((path, message.into()));
    }

    fn snapshot(&mut self, config: &Config) -> Snapshot {
        let listeners = self.listeners(config);
        let threads = match config.server.threads {
            Some(0) => {
                self.error(
                    KeyPath::root().key("server").key("threads"),
                    "must be at least 1",
                );
                1
            }
            Some(threads) => threads,
            None => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        };
        let mut placement_ids = HashMap::new();
        let mut placements = Vec::new();
        for (name, placement) in &config.placements {
            let path = KeyPath::root().key("placements").key(name);
            if let Some(spec) = self.placement(&path, name, placement) {
                placement_ids.insert(name.as_str(), placements.len());
                placements.push(spec);
            } else {
                // Keep references to a broken placement from producing a second,
                // misleading "unknown placement" error.
                placement_ids.insert(name.as_str(), usize::MAX);
            }
        }
        self.fallbacks(config, &placement_ids, &mut placements);
        let (index, routes) = self.routes(config, &placement_ids);
        let admin = config.admin.as_ref().and_then(|admin| {
            let path = KeyPath::root().key("admin").key("address");
            match admin.address.parse::<SocketAddr>() {
                Ok(address) => {
                    if listeners.iter().any(|l| l.address == address) {
                        self.error(path, format!("{address} is already a proxy listener"));
                    }
                    if admin.token.as_deref() == Some("") {
                        // Most likely an unset variable: refusing is safer
                        // than serving the admin API without a token.
                        self.error(
                            KeyPath::root().key("admin").key("token"),
                            "is empty; remove the key to run without a token",
                        );
                    }
                    Some(AdminSpec {
                        address,
                        token: admin.token.clone(),
                    })
                }
                Err(_) => {
                    self.error(
                        path,
                        format!("{:?} is not an ip:port address", admin.address),
                    );
                    None
                }
            }
        });
        let (certificates, certificate_files) = self.certificates(config);
        let acme_certificates = self.acme_certificates(config);
        let http01 = config
            .acme
            .as_ref()
            .is_some_and(|acme| acme.challenge == config::ChallengeKind::Http01);
        if http01 && !acme_certificates.is_empty() && listeners.iter().all(|l| l.tls) {
            self.error(
                KeyPath::root().key("acme").key("challenge"),
                "http-01 is answered on a plain-HTTP listener (port 80 for a public CA); add one, or use dns-01",
            );
        }
        // An ACME route with an error of its own needs no second one here.
        let acme_routes = config
            .routes
            .iter()
            .any(|route| matches!(route.tls, Some(config::RouteTls::Acme(_))));
        if certificates.is_empty() && !acme_routes {
            if let Some(i) = listeners.iter().position(|l| l.tls) {
                self.error(
                    KeyPath::root().key("listeners").index(i).key("tls"),
                    "no certificate to serve: give a route a tls table or tls = \"acme\", or set [default_certificate]",
                );
            }
        }
        let server_path = KeyPath::root().key("server");
        let grace_period =
            self.duration(server_path.key("grace_period"), &config.server.grace_period);
        Snapshot {
            listeners,
            threads,
            index,
            routes,
            placements,
            admin,
            grace_period,
            upgrade_socket: config.server.upgrade_socket.clone(),
            access_log: config.server.access_log,
            version: String::new(),
            plugins: config
                .plugins
                .as_ref()
                .map(|settings| self.plugin_settings(settings)),
            acme: config.acme.as_ref().map(|settings| self.acme(settings)),
            certificates: Arc::new(certificates),
            certificate_files,
            acme_certificates,
        }
    }

    /// The names of each certificate to order through `[acme]`: the hosts
    /// of each route with `tls = "acme"`, each list once.
    fn acme_certificates(&mut self, config: &Config) -> Vec<Vec<String>> {
        let mut requests: Vec<Vec<String>> = Vec::new();
        for (i, route) in config.routes.iter().enumerate() {
            let Some(config::RouteTls::Acme(_)) = &route.tls else {
                continue;
            };
            let path = KeyPath::root().key("routes").index(i).key("tls");
            if route.hosts.is_empty() {
                self.error(
                    path,
                    "an ACME certificate is ordered for the route's hosts; set hosts = [\"example.com\"]",
                );
                continue;
            }
            if config.acme.is_none() {
                self.error(
                    path,
                    "tls = \"acme\" needs an [acme] table (the CA, the challenge and the Cloudflare token)",
                );
                continue;
            }
            if let Err(e) = acme::validate_names(&route.hosts) {
                self.error(path, format!("{e:#}"));
                continue;
            }
            let http01 = config
                .acme
                .as_ref()
                .is_some_and(|acme| acme.challenge == config::ChallengeKind::Http01);
            if let Some(wildcard) = route.hosts.iter().find(|h| h.starts_with("*.")) {
                if http01 {
                    self.error(
                        path,
                        format!("{wildcard:?} needs challenge = \"dns-01\" in [acme]: http-01 cannot prove a wildcard"),
                    );
                    continue;
                }
            }
            let names: Vec<String> = route
                .hosts
                .iter()
                .map(|host| host.to_ascii_lowercase())
                .collect();
            if !requests.contains(&names) {
                requests.push(names);
            }
        }
        requests
    }

    fn acme(&mut self, settings: &config::AcmeSettings) -> AcmeConfig {
        let path = KeyPath::root().key("acme");
        if let Some(email) = &settings.email {
            let valid = email
                .split_once('@')
                .is_some_and(|(user, domain)| !user.is_empty() && domain.contains('.'))
                && !email.contains(char::is_whitespace);
            if !valid {
                self.error(
                    path.key("email"),
                    format!("{email:?} is not an email address"),
                );
            }
        }
        let directory = match settings.directory.as_str() {
            "letsencrypt" => acme::LETSENCRYPT_PRODUCTION.to_string(),
            "letsencrypt-staging" => acme::LETSENCRYPT_STAGING.to_string(),
            url => {
                if !url.starts_with("https://") || reqwest::Url::parse(url).is_err() {
                    self.error(
                        path.key("directory"),
                        format!("{url:?} is not an https:// URL, \"letsencrypt\" or \"letsencrypt-staging\""),
                    );
                }
                url.to_string()
            }
        };
        let renew_before = self.duration(path.key("renew_before"), &settings.renew_before);
        let ca_root = settings.ca_root.as_ref().map(|file| {
            let file = std::path::PathBuf::from(file);
            if let Err(e) = acme::read_roots(&file) {
                self.error(path.key("ca_root"), format!("{e:#}"));
            }
            file
        });
        let cloudflare = &settings.cloudflare;
        let cf_path = path.key("cloudflare");
        let token_env = &cloudflare.token_env;
        if token_env.is_empty()
            || !token_env
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            self.error(
                cf_path.key("token_env"),
                format!("{token_env:?} is not an environment variable name"),
            );
        }
        let api_base = cloudflare.api_base.trim_end_matches('/').to_string();
        // The token travels in every request, so never in clear text.
        if !api_base.starts_with("https://") || reqwest::Url::parse(&api_base).is_err() {
            self.error(
                cf_path.key("api_base"),
                format!("{:?} is not an https:// URL", cloudflare.api_base),
            );
        }
        let resolver = match cloudflare.resolver.parse::<SocketAddr>() {
            Ok(address) => address,
            Err(_) => match cloudflare.resolver.parse::<std::net::IpAddr>() {
                Ok(ip) => SocketAddr::new(ip, 53),
                Err(_) => {
                    self.error(
                        cf_path.key("resolver"),
                        format!("{:?} is not an ip or ip:port address", cloudflare.resolver),
                    );
                    SocketAddr::from(([1, 1, 1, 1], 53))
                }
            },
        };
        AcmeConfig {
            email: settings.email.clone(),
            directory,
            challenge: settings.challenge,
            renew_before,
            ca_root,
            cloudflare: CloudflareConfig {
                token_env: token_env.clone(),
                api_base,
                resolver,
                propagation_timeout: self.duration(
                    cf_path.key("propagation_timeout"),
                    &cloudflare.propagation_timeout,
                ),
            },
            retry: RetryBackoff::default(),
        }
    }

    /// Loads each route's certificate for its hosts, and the default one.
    fn certificates(&mut self, config: &Config) -> (CertificateTable, Vec<std::path::PathBuf>) {
        let mut table = CertificateTable::default();
        let mut files = Vec::new();
        let mut load =
            |compiler: &mut Self, path: KeyPath, tls: &config::CertificateFiles, names| {
                let (cert, key) = (
                    std::path::PathBuf::from(&tls.cert),
                    std::path::PathBuf::from(&tls.key),
                );
                files.extend([cert.clone(), key.clone()]);
                match Certificate::load(&cert, &key, names) {
                    Ok(certificate) => Some(certificate),
                    Err(message) => {
                        compiler.error(path.key("cert"), message);
                        None
                    }
                }
            };
        for (i, route) in config.routes.iter().enumerate() {
            let Some(config::RouteTls::Files(tls)) = &route.tls else {
                continue;
            };
            let path = KeyPath::root().key("routes").index(i).key("tls");
            if route.hosts.is_empty() {
                self.error(
                    path,
                    "a certificate is served for the route's hosts; set hosts = [\"example.com\"]",
                );
                continue;
            }
            if let Some(certificate) = load(self, path, tls, route.hosts.clone()) {
                table.insert(certificate);
            }
        }
        if let Some(tls) = &config.default_certificate {
            let path = KeyPath::root().key("default_certificate");
            if let Some(certificate) = load(self, path, tls, Vec::new()) {
                table.set_default(certificate);
            }
        }
        (table, files)
    }

    fn plugin_settings(&mut self, settings: &config::PluginSettings) -> PluginSpec {
        let path = KeyPath::root().key("plugins");
        let directory = std::path::PathBuf::from(&settings.directory);
        if !directory.is_dir() {
            self.error(
                path.key("directory"),
                format!("{:?} is not a directory", settings.directory),
            );
        }
        let deadline = self.duration(path.key("deadline"), &settings.deadline);
        if settings.recycle_after == 0 {
            self.error(path.key("recycle_after"), "must be at least 1");
        }
        PluginSpec {
            cache_dir: settings
                .cache_dir
                .as_ref()
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| directory.join(".cache")),
            directory,
            limits: RuntimeLimits {
                deadline,
                memory: usize::try_from(settings.memory.0).unwrap_or(usize::MAX),
                recycle_after: settings.recycle_after.max(1),
                pool_size: settings.pool_size,
            },
        }
    }

    fn attachments(
        &mut self,
        path: &KeyPath,
        attachments: &[config::Attachment],
        plugins_configured: bool,
    ) -> Vec<AttachmentSpec> {
        if !attachments.is_empty() && !plugins_configured {
            self.error(
                path.clone(),
                "plugins are attached but there is no [plugins] directory",
            );
        }
        attachments
            .iter()
            .enumerate()
            .map(|(i, attachment)| {
                let path = path.index(i);
                if !(400..=599).contains(&attachment.status) {
                    self.error(
                        path.key("status"),
                        "must be an error status (400-599), e.g. 500 or 503",
                    );
                }
                let config = serde_json::to_string(&attachment.config).unwrap_or_else(|e| {
                    self.error(path.key("config"), format!("cannot be passed as JSON: {e}"));
                    String::new()
                });
                AttachmentSpec {
                    name: Arc::from(attachment.name.as_str()),
                    config: Arc::from(config),
                    fail_closed: (attachment.failure == config::FailurePolicy::Closed)
                        .then_some(attachment.status),
                    hooks: attachment.hooks.clone(),
                }
            })
            .collect()
    }

    /// Resolves each placement's `fallback` and rejects cycles.
    fn fallbacks(
        &mut self,
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
                self.error(path, "a placement cannot fall back to itself");
                continue;
            }
            let target = self.placement_ref(|| path, fallback, ids);
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
                        self.error(
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

    fn listeners(&mut self, config: &Config) -> Vec<ListenerSpec> {
        if config.listeners.is_empty() {
            self.error(
                KeyPath::root().key("listeners"),
                "at least one listener is needed, e.g. [[listeners]] address = \"127.0.0.1:8080\"",
            );
        }
        let mut seen = HashSet::new();
        let mut specs = Vec::new();
        for (i, listener) in config.listeners.iter().enumerate() {
            let min_tls_version = self.min_tls_version(i, listener);
            let path = KeyPath::root().key("listeners").index(i).key("address");
            match listener.address.parse::<SocketAddr>() {
                Ok(address) => {
                    if !seen.insert(address) {
                        self.error(path, format!("duplicate listener {address}"));
                    } else {
                        specs.push(ListenerSpec {
                            address,
                            h2c: listener.h2c,
                            tls: listener.tls,
                            min_tls_version,
                        });
                    }
                }
                Err(_) => self.error(
                    path,
                    format!(
                        "{:?} is not an ip:port address, e.g. \"0.0.0.0:8080\"",
                        listener.address
                    ),
                ),
            }
        }
        specs
    }

    /// The `min_tls_version` of listener `index`: the default when unset.
    fn min_tls_version(&mut self, index: usize, listener: &config::Listener) -> MinTlsVersion {
        let Some(text) = &listener.min_tls_version else {
            return MinTlsVersion::default();
        };
        let path = KeyPath::root()
            .key("listeners")
            .index(index)
            .key("min_tls_version");
        if !listener.tls {
            // Silently ignoring it would let the operator believe the
            // listener is encrypted.
            self.error(
                path.clone(),
                "applies to TLS listeners only; set tls = true or remove it",
            );
        }
        MinTlsVersion::parse(text).unwrap_or_else(|| {
            self.error(
                path,
                format!("{text:?} is not a TLS version Sluice accepts: use \"1.2\" or \"1.3\""),
            );
            MinTlsVersion::default()
        })
    }

    fn placement(
        &mut self,
        path: &KeyPath,
        name: &str,
        placement: &config::Placement,
    ) -> Option<PlacementSpec> {
        let errors_before = self.errors.len();
        if placement.endpoints.is_empty() {
            self.error(
                path.key("endpoints"),
                "a placement needs at least one endpoint",
            );
        }
        let timeouts = self.timeouts(&path.key("timeouts"), &placement.timeouts);
        let breaker = self.breaker(&path.key("breaker"), &placement.breaker);
        let passive = PassiveSettings {
            failures: placement.passive.failures,
            cooldown: self.duration(
                path.key("passive").key("cooldown"),
                &placement.passive.cooldown,
            ),
        };
        let active_check = placement
            .health
            .as_ref()
            .map(|check| self.active_check(&path.key("health"), check));
        if placement.limits.max_concurrency == Some(0) {
            self.error(
                path.key("limits").key("max_concurrency"),
                "must be at least 1",
            );
        }
        if placement.retry.connect_attempts == 0 {
            self.error(
                path.key("retry").key("connect_attempts"),
                "must be at least 1",
            );
        }
        let mut endpoints = Vec::new();
        let mut seen = HashSet::new();
        for (i, endpoint) in placement.endpoints.iter().enumerate() {
            let path = path.key("endpoints").index(i);
            if endpoint.weight == 0 {
                self.error(path.key("weight"), "weight must be at least 1");
            }
            let Some(spec) = self.endpoint(&path, name, endpoint, timeouts, breaker) else {
                continue;
            };
            if !seen.insert(spec.address) {
                self.error(
                    path.key("address"),
                    format!("duplicate endpoint {} in this placement", spec.address),
                );
            }
            endpoints.push((spec, endpoint.weight));
        }
        if self.errors.len() > errors_before {
            return None;
        }
        let weighted: Vec<(SocketAddr, u32)> =
            endpoints.iter().map(|(e, w)| (e.address, *w)).collect();
        Some(PlacementSpec {
            name: Arc::from(name),
            name_header: HeaderValue::from_str(name)
                .unwrap_or_else(|_| HeaderValue::from_static("invalid")),
            endpoints: endpoints.into_iter().map(|(e, _)| e).collect(),
            balancer: Balancer::new(placement.balance, &weighted),
            host_header: placement.host_header,
            total_weight: placement.endpoints.iter().map(|e| e.weight).sum(),
            fallback: None,
            state: self.registry.placement(name),
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

    fn breaker(&mut self, path: &KeyPath, config: &config::BreakerConfig) -> BreakerSettings {
        if config.close_after == 0 {
            self.error(path.key("close_after"), "must be at least 1");
        }
        if !(0.0..=1.0).contains(&config.failure_rate) {
            self.error(path.key("failure_rate"), "must be between 0 and 1");
        }
        let open_for = self.duration(path.key("open_for"), &config.open_for);
        let max_open_for = self.duration(path.key("max_open_for"), &config.max_open_for);
        if max_open_for < open_for {
            self.error(
                path.key("max_open_for"),
                "must not be shorter than open_for",
            );
        }
        if config.half_open_probes == 0 {
            self.error(path.key("half_open_probes"), "must be at least 1");
        }
        BreakerSettings {
            consecutive_failures: config.consecutive_failures,
            failure_rate: config.failure_rate,
            window: self.duration(path.key("window"), &config.window),
            min_requests: config.min_requests,
            open_for,
            max_open_for,
            half_open_probes: config.half_open_probes.max(1),
            close_after: config.close_after.max(1),
        }
    }

    fn active_check(&mut self, path: &KeyPath, check: &config::HealthCheck) -> ActiveCheck {
        let kind = match check.kind {
            config::HealthCheckKind::Tcp => CheckKind::Tcp,
            config::HealthCheckKind::Http => {
                if !check.path.starts_with('/') {
                    self.error(path.key("path"), "must start with '/'");
                }
                let expect = parse_status_range(&check.expect).unwrap_or_else(|| {
                    self.error(
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
        let interval = self.duration(path.key("interval"), &check.interval);
        if interval < crate::resilience::checker::MIN_INTERVAL {
            self.error(
                path.key("interval"),
                format!(
                    "must be at least {:?}",
                    crate::resilience::checker::MIN_INTERVAL
                ),
            );
        }
        for (key, value) in [("rise", check.rise), ("fall", check.fall)] {
            if value == 0 {
                self.error(path.key(key), "must be at least 1");
            }
        }
        ActiveCheck {
            kind,
            interval,
            timeout: self.duration(path.key("timeout"), &check.timeout),
            rise: check.rise.max(1),
            fall: check.fall.max(1),
        }
    }

    fn timeouts(&mut self, path: &KeyPath, timeouts: &config::Timeouts) -> TimeoutSpec {
        TimeoutSpec {
            connect: self.duration(path.key("connect"), &timeouts.connect),
            read: self.duration(path.key("read"), &timeouts.read),
            idle: self.duration(path.key("idle"), &timeouts.idle),
        }
    }

    fn duration(&mut self, path: KeyPath, text: &str) -> Duration {
        match humantime::parse_duration(text) {
            Ok(duration) if duration > MAX_DURATION => {
                self.error(
                    path,
                    format!("{text:?} is longer than the 365 days any setting allows"),
                );
                Duration::from_secs(1)
            }
            Ok(duration) if !duration.is_zero() => duration,
            Ok(_) => {
                self.error(path, "must be longer than zero");
                Duration::from_secs(1)
            }
            Err(e) => {
                self.error(
                    path,
                    format!("{text:?} is not a duration ({e}); write e.g. \"250ms\" or \"5s\""),
                );
                Duration::from_secs(1)
            }
        }
    }

    fn endpoint(
        &mut self,
        path: &KeyPath,
        placement: &str,
        endpoint: &config::Endpoint,
        timeouts: TimeoutSpec,
        breaker: BreakerSettings,
    ) -> Option<EndpointSpec> {
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
            self.error(
                path.key("tls"),
                "an http:// address cannot also set tls = true",
            );
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => match port.parse::<u16>() {
                Ok(port) => (host, port),
                Err(_) => {
                    self.error(
                        path.key("address"),
                        format!("{:?}: {port:?} is not a port", endpoint.address),
                    );
                    return None;
                }
            },
            None if scheme_tls.is_some() => (authority, if tls { 443 } else { 80 }),
            None => {
                self.error(
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
            self.error(
                path.key("address"),
                format!("{:?} is not a host:port address", endpoint.address),
            );
            return None;
        }
        let address = match (host, port).to_socket_addrs().map(|mut addrs| addrs.next()) {
            Ok(Some(address)) => address,
            Ok(None) | Err(_) => {
                self.error(path.key("address"), format!("cannot resolve {host:?}"));
                return None;
            }
        };
        if endpoint.sni.is_some() && !tls {
            self.error(
                path.key("sni"),
                "sni applies only to TLS endpoints (set tls = true)",
            );
        }
        let sni = endpoint.sni.clone().unwrap_or_else(|| {
            if host.parse::<std::net::IpAddr>().is_ok() {
                String::new()
            } else {
                host.to_string()
            }
        });
        let mut peer = HttpPeer::new(address, tls, sni);
        peer.options.connection_timeout = Some(timeouts.connect);
        peer.options.read_timeout = Some(timeouts.read);
        peer.options.idle_timeout = Some(timeouts.idle);
        peer.options.verify_cert = endpoint.verify;
        peer.options.verify_hostname = endpoint.verify;
        let authority = match HeaderValue::from_str(authority) {
            Ok(value) => value,
            Err(_) => {
                self.error(path.key("address"), "not a valid authority");
                return None;
            }
        };
        let id: Arc<str> = Arc::from(authority.to_str().unwrap_or_default());
        let key = EndpointKey {
            placement: placement.to_string(),
            address: id.to_string(),
            tls,
        };
        Some(EndpointSpec {
            id,
            authority,
            address,
            peer,
            state: self.registry.endpoint(key, breaker),
        })
    }

    fn routes(
        &mut self,
        config: &Config,
        placements: &HashMap<&str, usize>,
    ) -> (RouteIndex, Vec<RouteSpec>) {
        let mut index = RouteIndex::default();
        let mut routes = Vec::new();
        let mut names = HashMap::new();
        for (i, route) in config.routes.iter().enumerate() {
            let path = KeyPath::root().key("routes").index(i);
            let name = route.name.clone().unwrap_or_else(|| format!("route-{i}"));
            if let Some(previous) = names.insert(name.clone(), i) {
                self.error(
                    path.key("name"),
                    format!("route name {name:?} is already used by routes[{previous}]"),
                );
            }
            if !route.path_prefix.starts_with('/') {
                self.error(
                    path.key("path_prefix"),
                    format!("{:?} must start with '/'", route.path_prefix),
                );
            }
            let hosts = if route.hosts.is_empty() {
                vec!["*".to_string()]
            } else {
                route.hosts.clone()
            };
            for (h, host) in hosts.iter().enumerate() {
                let host_path = if route.hosts.is_empty() {
                    path.key("path_prefix")
                } else {
                    path.key("hosts").index(h)
                };
                match HostPattern::parse(host) {
                    Ok(pattern) => {
                        if let Err(previous) =
                            index.insert(&pattern, &route.path_prefix, routes.len())
                        {
                            self.error(
                                host_path,
                                format!(
                                    "duplicate route match: host {host:?} with path prefix {:?} is already matched by routes[{previous}]",
                                    route.path_prefix
                                ),
                            );
                        }
                    }
                    Err(message) => self.error(host_path, message),
                }
            }
            let target = self.target(&path, route, placements);
            let request_headers =
                self.header_ops(&path.key("request_headers"), &route.request_headers);
            let response_headers =
                self.header_ops(&path.key("response_headers"), &route.response_headers);
            let rewrite =
                route
                    .rewrite
                    .as_ref()
                    .and_then(|rewrite| match PathRewrite::compile(rewrite) {
                        Ok(compiled) => Some(compiled),
                        Err((key, message)) => {
                            self.error(path.key("rewrite").key(key), message);
                            None
                        }
                    });
            let attachments = self.attachments(
                &path.key("plugins"),
                &route.plugins,
                config.plugins.is_some(),
            );
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
                });
            }
        }
        (index, routes)
    }

    /// Resolves a placement name. The key path is built only on failure:
    /// routing tables can hold many thousands of references.
    fn placement_ref(
        &mut self,
        path: impl FnOnce() -> KeyPath,
        name: &str,
        placements: &HashMap<&str, usize>,
    ) -> Option<usize> {
        match placements.get(name) {
            Some(id) => Some(*id),
            None => {
                let mut known: Vec<_> = placements.keys().copied().collect();
                known.sort_unstable();
                self.error(
                    path(),
                    format!("unknown placement {name:?} (defined: {})", known.join(", ")),
                );
                None
            }
        }
    }

    fn target(
        &mut self,
        path: &KeyPath,
        route: &config::Route,
        placements: &HashMap<&str, usize>,
    ) -> Option<RouteTarget> {
        if let Some(respond) = &route.respond {
            if route.placement.is_some() || route.routing.is_some() {
                self.error(
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
                        self.error(at, message);
                    }
                    None
                }
            };
        }
        match (&route.placement, &route.routing) {
            (Some(_), Some(_)) => {
                self.error(
                    path.key("routing"),
                    "set either `placement` or `routing`, not both",
                );
                None
            }
            (None, None) => {
                self.error(
                    path.clone(),
                    "a route needs `placement`, `routing` or `respond`",
                );
                None
            }
            (Some(name), None) => self
                .placement_ref(|| path.key("placement"), name, placements)
                .map(RouteTarget::Direct),
            (None, Some(routing)) => {
                let path = path.key("routing");
                let extractor = match KeyExtractor::from_config(&routing.key) {
                    Ok(extractor) => Some(extractor),
                    Err((key, message)) => {
                        self.error(path.key("key").key(key), message);
                        None
                    }
                };
                let default =
                    self.placement_ref(|| path.key("default"), &routing.default, placements);
                let mut table = HashMap::with_capacity(routing.table.len());
                for (key, placement) in &routing.table {
                    if let Some(id) =
                        self.placement_ref(|| path.key("table").key(key), placement, placements)
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

    fn header_ops(&mut self, path: &KeyPath, rules: &config::HeaderRules) -> HeaderOps {
        HeaderOps::compile(rules).unwrap_or_else(|errors| {
            for error in errors {
                let at = if error.list == "remove" {
                    path.key("remove").index(error.key.parse().unwrap_or(0))
                } else {
                    path.key(error.list).key(&error.key)
                };
                self.error(at, error.message);
            }
            HeaderOps::default()
        })
    }
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

/// Upstream timeouts of a placement.
#[derive(Debug, Clone, Copy)]
struct TimeoutSpec {
    /// Connection establishment.
    connect: Duration,
    /// Between reads.
    read: Duration,
    /// Pooled connection idle time.
    idle: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_text(text: &str) -> Result<Snapshot, ConfigErrors> {
        let loaded = crate::config::parse(text, "test.toml", &|_| None)?;
        compile(&loaded, "test.toml", &Registry::default())
    }

    #[test]
    fn respond_routes_answer_without_a_placement() {
        let base = "[[listeners]]\naddress = \"127.0.0.1:8080\"\n[placements.a]\nendpoints = [{ address = \"127.0.0.1:9000\" }]\n";
        let snapshot = compile_text(&format!(
            "{base}[[routes]]\nrespond = {{ status = 301, headers = {{ Location = \"/new\" }} }}\n"
        ))
        .unwrap();
        assert!(
            matches!(&snapshot.routes[0].target, RouteTarget::Respond(answer) if answer.status == 301)
        );
        let error = |route: &str| {
            compile_text(&format!("{base}[[routes]]\n{route}\n"))
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        assert!(error("placement = \"a\"\nrespond = { body = \"x\" }")
            .contains("routes[0].respond: set one of `placement`, `routing` and `respond`"));
        assert!(error("respond = { status = 42 }")
            .contains("routes[0].respond.status: must be a status between 100 and 599"));
        assert!(error("respond = { headers = { \"bad name\" = \"x\" } }")
            .contains("not a valid header name"));
        assert!(error("path_prefix = \"/x\"")
            .contains("a route needs `placement`, `routing` or `respond`"));
    }

    #[test]
    fn fallback_cycles_and_unknown_fallbacks_are_rejected() {
        let text = r#"[[listeners]]
address = "127.0.0.1:8080"
[placements.a]
endpoints = [{ address = "127.0.0.1:1" }]
fallback = "b"
[placements.b]
endpoints = [{ address = "127.0.0.1:2" }]
fallback = "c"
[placements.c]
endpoints = [{ address = "127.0.0.1:3" }]
fallback = "a"
[placements.d]
endpoints = [{ address = "127.0.0.1:4" }]
fallback = "nowhere"
[[routes]]
placement = "a"
"#;
        let errors = compile_text(text).unwrap_err();
        let rendered = errors.to_string();
        assert!(
            rendered.contains(":5: placements.a.fallback: fallback cycle: a -> b -> c -> a"),
            "{rendered}"
        );
        assert!(
            rendered.contains(":14: placements.d.fallback: unknown placement \"nowhere\""),
            "{rendered}"
        );
    }

    #[test]
    fn resilience_settings_are_validated() {
        let text = r#"[[listeners]]
address = "127.0.0.1:8080"
[placements.a]
endpoints = [{ address = "127.0.0.1:1" }]
breaker = { failure_rate = 1.5, open_for = "10s", max_open_for = "1s", failure_on = ["connect"] }
health = { expect = "2xx", interval = "often" }
limits = { max_body = "10 parsecs", max_concurrency = 0 }
"#;
        let errors = compile_text(text).map(|_| ()).unwrap_err();
        let rendered = errors.to_string();
        assert!(
            rendered.contains(":7: placements.a.limits.max_body"),
            "{rendered}"
        );
        let text = text.replace("max_body = \"10 parsecs\", ", "");
        let rendered = compile_text(&text).map(|_| ()).unwrap_err().to_string();
        for expected in [
            "placements.a.breaker.failure_rate",
            "placements.a.breaker.max_open_for",
            "placements.a.health.expect",
            "placements.a.health.interval",
            "placements.a.limits.max_concurrency",
        ] {
            assert!(
                rendered.contains(expected),
                "missing {expected} in {rendered}"
            );
        }
    }

    #[test]
    fn durations_past_a_year_are_errors_naming_their_key() {
        let text = r#"[[listeners]]
address = "127.0.0.1:8080"
[placements.a]
endpoints = [{ address = "127.0.0.1:1" }]
breaker = { open_for = "400days", max_open_for = "500years" }
passive = { cooldown = "9223372036854775807s" }
[[routes]]
placement = "a"
"#;
        let rendered = compile_text(text).map(|_| ()).unwrap_err().to_string();
        for expected in [
            "placements.a.breaker.open_for: \"400days\" is longer than the 365 days",
            "placements.a.breaker.max_open_for",
            "placements.a.passive.cooldown",
        ] {
            assert!(
                rendered.contains(expected),
                "missing {expected} in {rendered}"
            );
        }
    }

    #[test]
    fn zero_counts_and_an_empty_admin_token_are_rejected() {
        let text = r#"[[listeners]]
address = "127.0.0.1:8080"
[admin]
token = ""
[placements.a]
endpoints = [{ address = "127.0.0.1:1" }]
health = { rise = 0, fall = 0 }
breaker = { close_after = 0 }
"#;
        let rendered = compile_text(text).map(|_| ()).unwrap_err().to_string();
        for expected in [
            ":4: admin.token: is empty",
            ":7: placements.a.health.rise",
            ":7: placements.a.health.fall",
            ":8: placements.a.breaker.close_after",
        ] {
            assert!(
                rendered.contains(expected),
                "missing {expected} in {rendered}"
            );
        }
    }

    /// GOOD with a TLS listener and, after `extra`, an ACME route for `hosts`.
    fn with_acme_route(hosts: &str, extra: &str) -> String {
        format!(
            "[[listeners]]\naddress = \"127.0.0.1:8443\"\ntls = true\n{GOOD}\n[[routes]]\nhosts = [{hosts}]\nplacement = \"a\"\ntls = \"acme\"\n{extra}"
        )
    }

    #[test]
    fn acme_routes_become_certificate_requests() {
        let text = with_acme_route(
            "\"WWW.example.org\", \"*.example.org\"",
            "[[routes]]\nhosts = [\"www.example.org\", \"*.example.org\"]\npath_prefix = \"/api\"\nplacement = \"a\"\ntls = \"acme\"\n[acme]\n",
        );
        let snapshot = compile_text(&text).unwrap();
        assert_eq!(
            snapshot.acme_certificates,
            vec![vec![
                "www.example.org".to_string(),
                "*.example.org".to_string()
            ]],
            "one request per distinct list of hosts"
        );
        // The TLS listener has a certificate to serve: the ACME one.
        assert!(snapshot.certificates.is_empty());
    }

    #[test]
    fn acme_route_errors_name_the_key() {
        let error = |text: &str| compile_text(text).map(|_| ()).unwrap_err().to_string();
        let without_table = error(&with_acme_route("\"www.example.org\"", ""));
        assert!(
            without_table.contains("tls: tls = \"acme\" needs an [acme] table"),
            "{without_table}"
        );
        let without_hosts = error(&format!(
            "{GOOD}\n[[routes]]\npath_prefix = \"/x\"\nplacement = \"a\"\ntls = \"acme\"\n[acme]\n"
        ));
        assert!(
            without_hosts.contains("routes[2].tls: an ACME certificate"),
            "{without_hosts}"
        );
        let bad_name = error(&with_acme_route("\"localhost\"", "[acme]\n"));
        assert!(
            bad_name.contains("tls: \"localhost\" cannot be in a certificate"),
            "{bad_name}"
        );
        let unknown = error(&format!(
            "{GOOD}\n[[routes]]\nhosts = [\"a.example.org\"]\nplacement = \"a\"\ntls = \"letsencrypt\"\n"
        ));
        assert!(
            unknown.contains("routes[2].tls") && unknown.contains("or the string \"acme\""),
            "{unknown}"
        );
        let http01_without_plain = error(
            "[[listeners]]\naddress = \"127.0.0.1:8443\"\ntls = true\n[placements.a]\nendpoints = [{ address = \"127.0.0.1:9001\" }]\n[[routes]]\nhosts = [\"a.example.org\"]\nplacement = \"a\"\ntls = \"acme\"\n[acme]\nchallenge = \"http-01\"\n",
        );
        assert!(
            http01_without_plain.contains("acme.challenge: http-01"),
            "{http01_without_plain}"
        );
        let wildcard_http01 = error(&with_acme_route(
            "\"*.example.org\"",
            "[acme]\nchallenge = \"http-01\"\n",
        ));
        assert!(
            wildcard_http01.contains("tls: \"*.example.org\" needs challenge = \"dns-01\""),
            "{wildcard_http01}"
        );
    }

    #[test]
    fn acme_settings_compile_with_defaults_and_shorthands() {
        let text = format!("{GOOD}\n[acme]\nemail = \"ops@example.com\"\n");
        let acme = compile_text(&text).unwrap().acme.unwrap();
        assert_eq!(acme.directory, crate::tls::acme::LETSENCRYPT_PRODUCTION);
        assert_eq!(acme.challenge, crate::config::ChallengeKind::Dns01);
        assert_eq!(acme.renew_before, Duration::from_secs(30 * 86_400));
        assert_eq!(acme.cloudflare.token_env, "CLOUDFLARE_API_TOKEN");
        assert_eq!(
            acme.cloudflare.api_base,
            "https://api.cloudflare.com/client/v4"
        );
        assert_eq!(acme.cloudflare.resolver, "1.1.1.1:53".parse().unwrap());
        assert_eq!(
            acme.cloudflare.propagation_timeout,
            Duration::from_secs(120)
        );
        let text = format!(
            "{GOOD}\n[acme]\ndirectory = \"letsencrypt-staging\"\nchallenge = \"http-01\"\n[acme.cloudflare]\nresolver = \"9.9.9.9\"\n"
        );
        let acme = compile_text(&text).unwrap().acme.unwrap();
        assert_eq!(acme.directory, crate::tls::acme::LETSENCRYPT_STAGING);
        assert_eq!(acme.challenge, crate::config::ChallengeKind::Http01);
        assert_eq!(acme.cloudflare.resolver, "9.9.9.9:53".parse().unwrap());
    }

    #[test]
    fn acme_errors_name_their_keys() {
        let text = format!(
            r#"{GOOD}
[acme]
email = "not an address"
directory = "http://ca.example/directory"
renew_before = "soon"
ca_root = "/nonexistent/root.pem"

[acme.cloudflare]
token_env = "NOT-A-NAME"
api_base = "http://api.example"
resolver = "resolver"
propagation_timeout = "0s"
"#
        );
        let errors = compile_text(&text).unwrap_err();
        let paths: Vec<_> = errors.errors.iter().map(|e| e.path.to_string()).collect();
        for key in [
            "acme.email",
            "acme.directory",
            "acme.renew_before",
            "acme.ca_root",
            "acme.cloudflare.token_env",
            "acme.cloudflare.api_base",
            "acme.cloudflare.resolver",
            "acme.cloudflare.propagation_timeout",
        ] {
            assert!(paths.contains(&key.to_string()), "{key} missing: {errors}");
        }
        assert_eq!(errors.errors.len(), 8, "{errors}");
        let challenge = format!("{GOOD}\n[acme]\nchallenge = \"tls-alpn-01\"\n");
        let error = crate::config::parse(&challenge, "t", &|_| None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("acme.challenge"), "{error}");
    }

    #[test]
    fn state_carries_over_between_compilations() {
        let registry = Registry::default();
        let loaded = crate::config::parse(GOOD, "t", &|_| None).unwrap();
        let first = compile(&loaded, "t", &registry).unwrap();
        let second = compile(&loaded, "t", &registry).unwrap();
        assert!(Arc::ptr_eq(
            &first.placements[0].endpoints[0].state,
            &second.placements[0].endpoints[0].state
        ));
        assert!(Arc::ptr_eq(
            &first.placements[0].state,
            &second.placements[0].state
        ));
        assert_eq!(first.version, second.version);
        assert_eq!(first.version.len(), 12);
    }

    const GOOD: &str = r#"
[[listeners]]
address = "127.0.0.1:8080"

[placements.a]
endpoints = [{ address = "127.0.0.1:9001" }, { address = "127.0.0.1:9002", weight = 3 }]
balance = "weighted"

[placements.b]
endpoints = [{ address = "https://localhost:9443", verify = false }]

[[routes]]
hosts = ["*.example.com"]
routing = { key = { source = "header", name = "x-tenant" }, default = "a", table = { acme = "b" } }

[[routes]]
placement = "a"
"#;

    #[test]
    fn compiles_a_good_config() {
        let snapshot = compile_text(GOOD).unwrap();
        assert_eq!(snapshot.placements.len(), 2);
        assert_eq!(snapshot.routes.len(), 2);
        let b = &snapshot.placements[1];
        assert_eq!(&*b.endpoints[0].id, "localhost:9443");
        assert!(b.endpoints[0].peer.is_tls());
        assert!(!b.endpoints[0].peer.options.verify_cert);
    }

    #[test]
    fn min_tls_version_is_checked_and_compiled() {
        let listeners = |tls: &str, version: &str| {
            format!("[[listeners]]\naddress = \"127.0.0.1:8443\"\n{tls}min_tls_version = {version}\n[placements.a]\nendpoints = [{{ address = \"127.0.0.1:1\" }}]\n[[routes]]\nplacement = \"a\"\ntls = \"acme\"\nhosts = [\"a.example.org\"]\n[acme]\n")
        };
        let errors_at = |text: &str| -> Vec<(Option<usize>, String, String)> {
            match compile_text(text) {
                Ok(_) => Vec::new(),
                Err(errors) => errors
                    .errors
                    .iter()
                    .map(|e| (e.line, e.path.to_string(), e.message.clone()))
                    .collect(),
            }
        };
        assert_eq!(errors_at(&listeners("tls = true\n", "\"1.3\"")), []);
        assert_eq!(errors_at(&listeners("tls = true\n", "\"1.2\"")), []);
        let errors = errors_at(&listeners("tls = true\n", "\"1.1\""));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, Some(4));
        assert_eq!(errors[0].1, "listeners[0].min_tls_version");
        assert!(
            errors[0].2.contains("\"1.1\" is not a TLS version"),
            "{errors:?}"
        );
        let errors = errors_at(&listeners("", "\"1.3\""));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].1, "listeners[0].min_tls_version");
        assert!(errors[0].2.contains("TLS listeners only"), "{errors:?}");

        let text = "[[listeners]]\naddress = \"127.0.0.1:8080\"\n[[listeners]]\naddress = \"127.0.0.1:8443\"\ntls = true\nmin_tls_version = \"1.3\"\n[placements.a]\nendpoints = [{ address = \"127.0.0.1:1\" }]\n[[routes]]\nplacement = \"a\"\ntls = \"acme\"\nhosts = [\"a.example.org\"]\n[acme]\n";
        let snapshot = compile_text(text).unwrap();
        let versions: Vec<_> = snapshot
            .listeners
            .iter()
            .map(|l| l.min_tls_version)
            .collect();
        assert_eq!(versions, [MinTlsVersion::Tls12, MinTlsVersion::Tls13]);
    }

    #[test]
    fn lists_every_error_with_lines() {
        let text = r#"[[listeners]]
address = "127.0.0.1:8080"

[[listeners]]
address = "127.0.0.1:8080"

[placements.a]
endpoints = [{ address = "nonsense" }]
timeouts = { connect = "soon" }

[placements.empty]

[[routes]]
placement = "missing"

[[routes]]
path_prefix = "/x"
placement = "empty"

[[routes]]
path_prefix = "/x"
placement = "a"
"#;
        let errors = compile_text(text).unwrap_err();
        let rendered = errors.to_string();
        let lines: Vec<_> = errors
            .errors
            .iter()
            .map(|e| (e.line, e.path.to_string()))
            .collect();
        assert!(
            lines.contains(&(Some(5), "listeners[1].address".into())),
            "{rendered}"
        );
        assert!(
            lines.contains(&(Some(8), "placements.a.endpoints[0].address".into())),
            "{rendered}"
        );
        assert!(
            lines.contains(&(Some(9), "placements.a.timeouts.connect".into())),
            "{rendered}"
        );
        assert!(
            lines.contains(&(Some(11), "placements.empty.endpoints".into())),
            "{rendered}"
        );
        assert!(
            lines.contains(&(Some(14), "routes[0].placement".into())),
            "{rendered}"
        );
        assert!(
            lines.contains(&(Some(21), "routes[2].path_prefix".into())),
            "{rendered}"
        );
        assert_eq!(errors.errors.len(), 6, "{rendered}");
    }

    #[test]
    fn routing_errors_name_their_keys() {
        let text = r#"[[listeners]]
address = "127.0.0.1:8080"
[placements.a]
endpoints = [{ address = "127.0.0.1:1" }]
[[routes]]
hosts = ["bad host"]
[routes.routing]
key = { source = "cookie" }
default = "a"
table = { t1 = "nope" }
"#;
        let errors = compile_text(text).unwrap_err();
        let paths: Vec<_> = errors.errors.iter().map(|e| e.path.to_string()).collect();
        assert!(
            paths.contains(&"routes[0].hosts[0]".to_string()),
            "{errors}"
        );
        assert!(
            paths.contains(&"routes[0].routing.key.name".to_string()),
            "{errors}"
        );
        assert!(
            paths.contains(&"routes[0].routing.table.t1".to_string()),
            "{errors}"
        );
        let table_error = errors
            .errors
            .iter()
            .find(|e| e.path.to_string() == "routes[0].routing.table.t1")
            .unwrap();
        assert_eq!(table_error.line, Some(10));
    }
}
