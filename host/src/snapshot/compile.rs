//! Validation and compilation of a [`Config`] into a [`Snapshot`].
//!
//! Every check runs and every problem is collected, so `sluice check` can list
//! them all at once. Each problem carries its key path; its line comes from the
//! [`SourceMap`] of the text the config was parsed from.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use super::{AdminSpec, ListenerSpec, RouteTraffic, Snapshot};
use crate::config::{self, Config, ConfigErrors, Diagnostics, KeyPath, LoadedConfig};
use crate::resilience::connections::ConnectionCaps;
use crate::resilience::limits::HeadLimits;
use crate::resilience::state::Registry;

/// Validates `loaded` and compiles it, or returns every problem found.
/// Endpoint and placement state comes from `registry`, so state carries over
/// from earlier snapshots; nothing in it changes until the snapshot is
/// published (see [`crate::resilience::placement::apply_settings`]).
pub fn compile(
    loaded: &LoadedConfig,
    origin: &str,
    registry: &Registry,
) -> Result<Snapshot, ConfigErrors> {
    let mut compiler = Compiler {
        d: Diagnostics::default(),
        registry,
    };
    let mut snapshot = compiler.snapshot(&loaded.config);
    snapshot.version = crate::support::files::content_version(loaded.source.text().as_bytes());
    snapshot.warnings = compiler.d.into_result(loaded, origin)?;
    Ok(snapshot)
}

/// The smallest request-head limit accepted: below it, ordinary requests
/// (a browser's cookies and user agent) would be refused.
const MIN_HEAD_LIMIT: u64 = 1024;

/// Assembles a snapshot from the parts each domain compiles, with the
/// checks that span sections.
struct Compiler<'r> {
    d: Diagnostics,
    registry: &'r Registry,
}

impl Compiler<'_> {
    /// Each compiled route's traffic controls, by the route's index.
    fn route_traffic(
        &mut self,
        config: &Config,
        routes: &[crate::routing::route::RouteSpec],
    ) -> Vec<RouteTraffic> {
        let mut written = HashMap::new();
        for (i, route) in config.routes.iter().enumerate() {
            written.insert(crate::routing::compile::route_name(i, route), (i, route));
        }
        routes
            .iter()
            .map(|spec| {
                let Some((i, route)) = written.get(&*spec.name) else {
                    return RouteTraffic::default();
                };
                let path = KeyPath::root().key("routes").index(*i);
                let rate_limit = route.rate_limit.as_ref().and_then(|limit| {
                    crate::resilience::rate::compile(
                        &mut self.d,
                        &path.key("rate_limit"),
                        &spec.name,
                        limit,
                        self.registry,
                    )
                });
                let coalesce = route.coalesce.as_ref().and_then(|coalesce| {
                    let path = path.key("coalesce");
                    if !route.plugins.is_empty() {
                        self.d.error(
                            path.clone(),
                            "a route with plugins cannot coalesce: its followers would skip the plugins",
                        );
                    }
                    if route.respond.is_some() {
                        self.d.error(
                            path.clone(),
                            "a route that answers with respond sends nothing upstream to coalesce",
                        );
                    }
                    crate::resilience::coalesce::compile(&mut self.d, &path, coalesce)
                });
                RouteTraffic {
                    rate_limit,
                    coalesce,
                }
            })
            .collect()
    }

    fn snapshot(&mut self, config: &Config) -> Snapshot {
        let listeners = self.listeners(config);
        let threads = match config.server.threads {
            Some(0) => {
                self.d.error(
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
            if let Some(spec) = crate::resilience::compile::placement(
                &mut self.d,
                self.registry,
                &path,
                name,
                placement,
            ) {
                placement_ids.insert(name.as_str(), placements.len());
                placements.push(spec);
            } else {
                // Keep references to a broken placement from producing a second,
                // misleading "unknown placement" error.
                placement_ids.insert(name.as_str(), usize::MAX);
            }
        }
        crate::resilience::compile::fallbacks(&mut self.d, config, &placement_ids, &mut placements);
        let (index, routes) = crate::routing::compile::routes(&mut self.d, config, &placement_ids);
        let traffic = self.route_traffic(config, &routes);
        let admin = config.admin.as_ref().and_then(|admin| {
            let path = KeyPath::root().key("admin").key("address");
            match admin.address.parse::<SocketAddr>() {
                Ok(address) => {
                    if listeners.iter().any(|l| l.address == address) {
                        self.d
                            .error(path, format!("{address} is already a proxy listener"));
                    }
                    if admin.token.as_deref() == Some("") {
                        // Most likely an unset variable: refusing is safer
                        // than serving the admin API without a token.
                        self.d.error(
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
                    self.d.error(
                        path,
                        format!("{:?} is not an ip:port address", admin.address),
                    );
                    None
                }
            }
        });
        let (certificates, certificate_files) =
            crate::tls::compile::certificates(&mut self.d, config);
        let acme_certificates = crate::tls::compile::acme_certificates(&mut self.d, config);
        let http01 = config
            .acme
            .as_ref()
            .is_some_and(|acme| acme.challenge == config::ChallengeKind::Http01);
        if http01 && !acme_certificates.is_empty() && listeners.iter().all(|l| l.tls) {
            self.d.error(
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
                self.d.error(
                    KeyPath::root().key("listeners").index(i).key("tls"),
                    "no certificate to serve: give a route a tls table or tls = \"acme\", or set [default_certificate]",
                );
            }
        }
        let server_path = KeyPath::root().key("server");
        let grace_period = self
            .d
            .duration(server_path.key("grace_period"), &config.server.grace_period);
        Snapshot {
            listeners,
            threads,
            index,
            routes,
            traffic,
            placements,
            admin,
            grace_period,
            upgrade_socket: config.server.upgrade_socket.clone(),
            access_log: config.server.access_log,
            head_limits: self.head_limits(&config.server),
            keepalive_timeout: self.d.duration(
                server_path.key("keepalive_timeout"),
                &config.server.keepalive_timeout,
            ),
            body_read_timeout: self.d.duration(
                server_path.key("body_read_timeout"),
                &config.server.body_read_timeout,
            ),
            header_read_timeout: self.d.duration(
                server_path.key("header_read_timeout"),
                &config.server.header_read_timeout,
            ),
            connection_caps: self.connection_caps(&config.server),
            max_requests_per_connection: match config.server.max_requests_per_connection {
                0 => {
                    self.d.error(
                        server_path.key("max_requests_per_connection"),
                        "must be at least 1",
                    );
                    1
                }
                n => n,
            },
            version: String::new(),
            plugins: config
                .plugins
                .as_ref()
                .map(|settings| crate::plugins::compile::plugin_settings(&mut self.d, settings)),
            acme: config
                .acme
                .as_ref()
                .map(|settings| crate::tls::compile::acme(&mut self.d, settings)),
            certificates: Arc::new(certificates),
            certificate_files,
            acme_certificates,
            resolver: crate::routing::compile::resolver(&mut self.d, &config.resolver),
            upstream_names: crate::resilience::compile::upstream_names(config),
            warnings: Vec::new(),
        }
    }

    /// The `[server]` caps on open client connections.
    fn connection_caps(&mut self, server: &config::ServerSettings) -> ConnectionCaps {
        let path = KeyPath::root().key("server");
        if server.max_connections == 0 {
            self.d
                .error(path.key("max_connections"), "must be at least 1");
        }
        if server.max_connections_per_client == Some(0) {
            self.d.error(
                path.key("max_connections_per_client"),
                "must be at least 1; leave it out for no cap",
            );
        }
        ConnectionCaps {
            total: server.max_connections as usize,
            per_client: server.max_connections_per_client.map(|cap| cap as usize),
        }
    }

    /// The `[server]` limits on a request head.
    fn head_limits(&mut self, server: &config::ServerSettings) -> HeadLimits {
        let path = KeyPath::root().key("server");
        let limits = HeadLimits {
            request_line: server.max_request_line.0,
            header_line: server.max_header_line.0,
            head: server.max_request_head.0,
        };
        for (key, value) in [
            ("max_request_line", limits.request_line),
            ("max_header_line", limits.header_line),
            ("max_request_head", limits.head),
        ] {
            if value < MIN_HEAD_LIMIT {
                self.d.error(
                    path.key(key),
                    format!("must be at least {MIN_HEAD_LIMIT} bytes"),
                );
            }
        }
        if limits.head < limits.request_line.max(limits.header_line) {
            self.d.error(
                path.key("max_request_head"),
                "must be at least max_request_line and max_header_line",
            );
        }
        limits
    }

    fn listeners(&mut self, config: &Config) -> Vec<ListenerSpec> {
        if config.listeners.is_empty() {
            self.d.error(
                KeyPath::root().key("listeners"),
                "at least one listener is needed, e.g. [[listeners]] address = \"127.0.0.1:8080\"",
            );
        }
        let mut seen = HashSet::new();
        let mut specs = Vec::new();
        for (i, listener) in config.listeners.iter().enumerate() {
            let min_tls_version = crate::tls::compile::min_tls_version(&mut self.d, i, listener);
            let path = KeyPath::root().key("listeners").index(i).key("address");
            match listener.address.parse::<SocketAddr>() {
                Ok(address) => {
                    if !seen.insert(address) {
                        self.d.error(path, format!("duplicate listener {address}"));
                    } else {
                        specs.push(ListenerSpec {
                            address,
                            h2c: listener.h2c,
                            tls: listener.tls,
                            min_tls_version,
                        });
                    }
                }
                Err(_) => self.d.error(
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
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::routing::RouteTarget;
    use crate::tls::termination::MinTlsVersion;

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
        assert!(
            error("placement = \"a\"\npath = \"/x\"\npath_prefix = \"/x\"")
                .contains("routes[0].path: set path (one exact path) or path_prefix, not both")
        );
        assert!(error("placement = \"a\"\npath = \"x\"")
            .contains("routes[0].path: \"x\" must start with '/'"));
        assert!(
            error("placement = \"a\"\nlisteners = [\"public\"]").contains(
                "routes[0].listeners[0]: no listener is named \"public\" or has that address"
            )
        );
        let small = compile_text(&format!(
            "[server]\nmax_header_line = 100\nmax_request_head = \"2KiB\"\nmax_request_line = \"4KiB\"\n{base}[[routes]]\nplacement = \"a\"\n"
        ))
        .map(|_| ())
        .unwrap_err()
        .to_string();
        assert!(
            small.contains("server.max_header_line: must be at least 1024 bytes"),
            "{small}"
        );
        assert!(
            small.contains("server.max_request_head: must be at least max_request_line"),
            "{small}"
        );
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

    /// Compiles `text` with `names` resolved to their addresses.
    fn compile_resolved(text: &str, names: &[(&str, &[&str])]) -> Result<Snapshot, ConfigErrors> {
        let registry = Registry::default();
        for (name, addresses) in names {
            let addresses = addresses.iter().map(|a| a.parse().unwrap()).collect();
            registry
                .names()
                .insert(name, addresses, Duration::from_secs(60));
        }
        let loaded = config::parse(text, "test.toml", &|_| None).unwrap();
        compile(&loaded, "test.toml", &registry)
    }

    #[test]
    fn compiles_a_good_config() {
        let snapshot = compile_resolved(GOOD, &[("localhost", &["127.0.0.1", "::1"])]).unwrap();
        assert!(snapshot.warnings.is_empty(), "{:?}", snapshot.warnings);
        assert_eq!(snapshot.placements.len(), 2);
        assert_eq!(snapshot.routes.len(), 2);
        assert_eq!(snapshot.upstream_names, vec!["localhost".to_string()]);
        let b = &snapshot.placements[1];
        let ids: Vec<&str> = b.endpoints.iter().map(|e| &*e.id).collect();
        assert_eq!(ids, ["localhost:9443@127.0.0.1", "localhost:9443@::1"]);
        for endpoint in &b.endpoints {
            assert_eq!(endpoint.authority, "localhost:9443");
            assert!(endpoint.peer.is_tls());
            assert_eq!(endpoint.peer.sni, "localhost");
            assert!(!endpoint.peer.options.verify_cert);
        }
    }

    #[test]
    fn a_name_that_does_not_resolve_is_a_warning_by_line_and_leaves_its_placement_empty() {
        let snapshot = compile_resolved(GOOD, &[]).unwrap();
        assert!(snapshot.placements[1].endpoints.is_empty());
        assert_eq!(snapshot.placements[0].endpoints.len(), 2);
        let warnings: Vec<String> = snapshot.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with(
                "line 10: placements.b.endpoints[0].address: \"localhost\" does not resolve"
            ),
            "{warnings:?}"
        );
    }

    #[test]
    fn names_sharing_an_address_are_one_endpoint_and_a_literal_written_twice_is_an_error() {
        let text = r#"
[[listeners]]
address = "127.0.0.1:8080"
[placements.a]
endpoints = [{ address = "one.internal:80" }, { address = "two.internal:80" }]
[[routes]]
placement = "a"
"#;
        let shared = &["10.0.0.7"][..];
        let snapshot =
            compile_resolved(text, &[("one.internal", shared), ("two.internal", shared)]).unwrap();
        assert_eq!(snapshot.placements[0].endpoints.len(), 1);
        let twice = text
            .replace("one.internal:80", "10.0.0.7:80")
            .replace("two.internal:80", "10.0.0.7:80");
        let rendered = compile_resolved(&twice, &[])
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            rendered.contains("duplicate endpoint 10.0.0.7:80"),
            "{rendered}"
        );
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
