//! Maps a parsed Caddyfile onto a Sluice config.
//!
//! Each site block becomes one or more routes. Caddy decides what answers a
//! request by its fixed directive order (`redir`, then `rewrite`, `handle`,
//! `respond`, `reverse_proxy`) and by each directive's matcher; Sluice by the
//! longest path prefix. So the converter collects every path prefix (and
//! host) the site's matchers mention, works out, for each, what Caddy would
//! do with requests under it, and writes one route per prefix whose answer
//! differs from its parent's. Directives and forms without a Sluice
//! counterpart are returned as [`Gap`]s, and written as comments where they
//! were.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use super::caddyfile::{Caddyfile, Directive, SiteBlock};
use super::lexer::{Location, Token};
use super::placeholders::{self, Converted};

/// Let's Encrypt's production directory, as Caddy's `acme_ca` names it.
const LETSENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory.
const LETSENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// What the conversion needs besides the Caddyfile.
#[derive(Debug, Clone)]
pub struct Options {
    /// The Caddyfile's name, for the header comment.
    pub source: String,
    /// Where certificates generated for `tls internal` are written.
    pub certificate_dir: PathBuf,
}

/// The result of a conversion.
#[derive(Debug, Clone)]
pub struct Conversion {
    /// The Sluice config, with comments.
    pub toml: String,
    /// Everything that has no Sluice equivalent, in the order found.
    pub gaps: Vec<Gap>,
    /// Files the config refers to that the import generates
    /// (self-signed certificates for `tls internal`).
    pub files: Vec<GeneratedFile>,
}

/// A directive, or a form of one, that was not converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// Where it is written.
    pub at: Location,
    /// The directive as written on its line.
    pub directive: String,
    /// Why it has no equivalent.
    pub reason: String,
}

/// A file the imported config needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFile {
    /// Where to write it.
    pub path: PathBuf,
    /// Its contents.
    pub contents: String,
    /// Whether it holds a private key (written readable by the owner only).
    pub private: bool,
}

/// Converts `caddyfile` into a Sluice config.
pub fn convert(caddyfile: &Caddyfile, options: &Options) -> Conversion {
    let mut converter = Converter::new(options);
    converter.globals(&caddyfile.global);
    for site in &caddyfile.sites {
        converter.site(site);
    }
    converter.finish()
}

// ---------------------------------------------------------------------------
// The model the converter fills in before writing TOML.
// ---------------------------------------------------------------------------

/// `set`, `add` and `remove` header rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Rules {
    set: Vec<(String, String)>,
    add: Vec<(String, String)>,
    remove: Vec<String>,
}

impl Rules {
    fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Adds `other`'s rules; a header set (or added) again takes the later value.
    fn extend(&mut self, other: &Rules) {
        for (list, more) in [(&mut self.set, &other.set), (&mut self.add, &other.add)] {
            for (name, value) in more {
                list.retain(|(existing, _)| !existing.eq_ignore_ascii_case(name));
                list.push((name.clone(), value.clone()));
            }
        }
        for name in &other.remove {
            if !self.remove.iter().any(|r| r.eq_ignore_ascii_case(name)) {
                self.remove.push(name.clone());
            }
        }
    }
}

/// Header changes in one direction: what the route's own rules can do,
/// and what needs the `headers` plugin (values with request placeholders).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct HeaderChanges {
    native: Rules,
    plugin: Rules,
}

impl HeaderChanges {
    fn extend(&mut self, other: &HeaderChanges) {
        self.native.extend(&other.native);
        self.plugin.extend(&other.plugin);
    }
}

/// A path rewrite, in the form Sluice writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rewrite {
    StripPrefix(String),
    Prefix {
        from: String,
        to: String,
    },
    Regex {
        regex: String,
        to: String,
    },
    /// Occurrences of `find`, the first `limit` or all.
    Replace {
        find: String,
        to: String,
        limit: Option<usize>,
    },
    /// Native rewrites applied in order, as Caddy applies a site's `uri`
    /// and then a block's own.
    Chain(Vec<Rewrite>),
    /// Through the `rewrite` plugin: the target changes the query too.
    Plugin {
        to: String,
    },
}

impl Rewrite {
    /// The path prefix requests under `prefix` have after the rewrite, when
    /// it can be known without a request.
    fn apply_to_prefix(&self, prefix: &str) -> Option<String> {
        match self {
            Rewrite::StripPrefix(strip) => prefix.strip_prefix(strip.as_str()).map(|rest| {
                if rest.starts_with('/') {
                    rest.to_string()
                } else {
                    format!("/{rest}")
                }
            }),
            Rewrite::Prefix { from, to } => prefix
                .strip_prefix(from.as_str())
                .map(|rest| format!("{to}{rest}")),
            Rewrite::Regex { regex, to } if regex == "^(.*)$" => Some(to.replacen("$1", prefix, 1)),
            Rewrite::Regex { regex, to } if regex == "^.*$" => Some(to.clone()),
            Rewrite::Chain(steps) => steps
                .iter()
                .try_fold(prefix.to_string(), |path, step| step.apply_to_prefix(&path)),
            _ => None,
        }
    }

    /// This rewrite, then `next` on the path it leaves.
    fn then(current: Option<Rewrite>, next: Rewrite) -> Result<Rewrite, &'static str> {
        match (current, next) {
            (None, next) => Ok(next),
            (Some(Rewrite::Plugin { .. }), _) | (Some(_), Rewrite::Plugin { .. }) => Err(
                "a rewrite that changes the query runs in the rewrite plugin, ahead of the route's own rewrites, so it cannot follow or precede another here",
            ),
            (Some(Rewrite::Chain(mut steps)), next) => {
                steps.push(next);
                Ok(Rewrite::Chain(steps))
            }
            (Some(first), next) => Ok(Rewrite::Chain(vec![first, next])),
        }
    }
}

/// A direct answer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Respond {
    status: u16,
    body: String,
    headers: Vec<(String, String)>,
}

/// A `reverse_proxy` directive's part of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Proxy {
    placement: String,
    request: HeaderChanges,
    response: HeaderChanges,
    rewrite: Option<Rewrite>,
    /// `lb_policy header NAME` / `cookie NAME`: the routing key hashed.
    key: Option<(&'static str, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Proxy(Box<Proxy>),
    Respond(Respond),
}

/// A matcher reduced to what a route can match: hosts and a path prefix,
/// plus one request header for keyed routing.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Matcher {
    /// `None`: the site's hosts.
    hosts: Option<Vec<String>>,
    prefix: String,
    /// Caddy matched the path exactly.
    exact: bool,
    header: Option<(String, String)>,
}

#[derive(Debug, Clone)]
enum Effect {
    Handle(Action),
    RequestHeaders(HeaderChanges),
    ResponseHeaders(HeaderChanges),
    Rewrite(Rewrite),
}

/// A directive with its matcher and its place in Caddy's order.
#[derive(Debug, Clone)]
struct Rule {
    matcher: Matcher,
    /// Caddy's directive order: inside a `handle` block, the block's rank
    /// then the directive's.
    rank: Vec<u8>,
    order: usize,
    effect: Effect,
    /// The `handle` block it is in, if any.
    handle: Option<usize>,
    /// A rewrite that applies after the others before it (`uri`), rather
    /// than instead of them (`rewrite`, mutually exclusive in Caddy).
    in_turn: bool,
    at: Location,
}

/// A `handle` or `handle_path` block: blocks at one level are mutually
/// exclusive, the most specific matching one wins.
#[derive(Debug, Clone)]
struct HandleBlock {
    matcher: Matcher,
    order: usize,
    /// A `route` block: tried only when no `handle` block matches, and
    /// requests nothing inside it answers go on to the site's handlers.
    falls_through: bool,
}

/// Caddy's directive order, for the directives the converter maps.
mod rank {
    pub const HEADER: u8 = 10;
    pub const REDIR: u8 = 20;
    pub const REWRITE: u8 = 30;
    pub const HANDLE: u8 = 40;
    pub const RESPOND: u8 = 50;
    pub const REVERSE_PROXY: u8 = 60;
}

#[derive(Debug, Clone, Default)]
struct PlacementOut {
    name: String,
    endpoints: Vec<EndpointOut>,
    balance: Option<&'static str>,
    /// `protocol`, when not HTTP/1.1: `h2c` or `h2`.
    protocol: Option<&'static str>,
    host_header_endpoint: bool,
    timeouts: Vec<(&'static str, String)>,
    health: Vec<(&'static str, String)>,
    passive: Vec<(&'static str, String)>,
    retry: Vec<(&'static str, String)>,
    comments: Vec<String>,
    gaps: Vec<Gap>,
    at: Option<Location>,
}

#[derive(Debug, Clone, Default)]
struct EndpointOut {
    address: String,
    weight: Option<u32>,
    tls: bool,
    verify: bool,
    sni: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RouteTls {
    Acme,
    Files { cert: String, key: String },
}

#[derive(Debug, Clone)]
struct RouteOut {
    name: String,
    hosts: Vec<String>,
    prefix: String,
    /// `prefix` is the one path the route answers.
    exact: bool,
    /// The listeners the site was served on.
    listeners: Vec<String>,
    action: Action,
    /// Keyed routing on a request header: value → placement.
    header_table: Option<(String, Vec<(String, String)>)>,
    request: HeaderChanges,
    response: HeaderChanges,
    rewrite: Option<Rewrite>,
    tls: Option<RouteTls>,
    redirect_https: bool,
    comments: Vec<String>,
    gaps: Vec<Gap>,
    at: Location,
}

/// What a site's addresses say about how it is served.
#[derive(Debug, Clone, Default)]
struct SiteAddresses {
    hosts: Vec<String>,
    ports: Vec<(String, bool)>,
    tls: bool,
    prefix: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Admin {
    CaddyDefault,
    Off,
    Address(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AutoHttps {
    On,
    Off,
    DisableRedirects,
}

struct Converter<'a> {
    options: &'a Options,
    admin: Admin,
    email: Option<String>,
    directory: Option<String>,
    auto_https: AutoHttps,
    http_port: String,
    https_port: String,
    grace_period: Option<String>,
    /// The token variable of `acme_dns cloudflare`, for every site.
    global_dns: Option<String>,
    /// The token variable Sluice's `[acme.cloudflare]` reads.
    dns_token_env: Option<String>,
    global_gaps: Vec<Gap>,
    listeners: BTreeMap<String, bool>,
    routes: Vec<RouteOut>,
    placements: Vec<PlacementOut>,
    acme_sites: usize,
    http01_sites: Vec<String>,
    access_log: Option<bool>,
    logged_sites: usize,
    sites: usize,
    files: Vec<GeneratedFile>,
    order: usize,
}

impl<'a> Converter<'a> {
    fn new(options: &'a Options) -> Self {
        Self {
            options,
            admin: Admin::CaddyDefault,
            email: None,
            directory: None,
            auto_https: AutoHttps::On,
            http_port: "80".into(),
            https_port: "443".into(),
            grace_period: None,
            global_dns: None,
            dns_token_env: None,
            global_gaps: Vec::new(),
            listeners: BTreeMap::new(),
            routes: Vec::new(),
            placements: Vec::new(),
            acme_sites: 0,
            http01_sites: Vec::new(),
            access_log: None,
            logged_sites: 0,
            sites: 0,
            files: Vec::new(),
            order: 0,
        }
    }

    // -----------------------------------------------------------------------
    // Global options
    // -----------------------------------------------------------------------

    fn globals(&mut self, directives: &[Directive]) {
        for directive in directives {
            let args = directive.arg_texts();
            let gap = |reason: &str| gap(directive, reason);
            match (directive.name.text.as_str(), args.as_slice()) {
                ("email", [email]) => match placeholders::convert_plain(email) {
                    Ok(email) => self.email = Some(email),
                    Err(reason) => self.global_gaps.push(gap(&reason)),
                },
                ("acme_ca", [url]) => self.directory = Some(acme_directory(url)),
                ("acme_dns", ["cloudflare", token]) => {
                    match placeholders::environment_variable(token) {
                        Some(variable) => self.global_dns = Some(variable.to_string()),
                        None => self.global_gaps.push(gap(TOKEN_IN_FILE)),
                    }
                }
                ("acme_dns", _) => self.global_gaps.push(gap(
                    "Sluice's DNS-01 challenge works through Cloudflare only",
                )),
                ("admin", ["off"]) => self.admin = Admin::Off,
                ("admin", [address]) if directive.block.is_empty() => {
                    match admin_address(address) {
                        Some(address) => self.admin = Admin::Address(address),
                        None => self
                            .global_gaps
                            .push(gap("the admin API listens on an ip:port only")),
                    }
                }
                ("auto_https", ["off"]) => self.auto_https = AutoHttps::Off,
                ("auto_https", ["disable_redirects"]) => {
                    self.auto_https = AutoHttps::DisableRedirects
                }
                ("http_port", [port]) if is_port(port) => self.http_port = port.to_string(),
                ("https_port", [port]) if is_port(port) => self.https_port = port.to_string(),
                ("grace_period", [duration]) => self.grace_period = Some(duration.to_string()),
                // Sluice has no local CA to install in a trust store: the
                // certificates it generates for `tls internal` never are.
                ("skip_install_trust", []) => {}
                _ => self
                    .global_gaps
                    .push(gap("no Sluice equivalent of this global option")),
            }
        }
    }

    // -----------------------------------------------------------------------
    // Sites
    // -----------------------------------------------------------------------

    fn site(&mut self, site: &SiteBlock) {
        self.sites += 1;
        let at = site
            .addresses
            .first()
            .map(|t| t.at.clone())
            .unwrap_or_else(|| Location {
                file: self.options.source.as_str().into(),
                line: 0,
                end_line: 0,
            });
        let mut site_gaps = Vec::new();
        let mut addresses = SiteAddresses::default();
        for address in &site.addresses {
            if let Err(reason) = self.address(address, &mut addresses) {
                site_gaps.push(Gap {
                    at: address.at.clone(),
                    directive: address.text.clone(),
                    reason,
                });
            }
        }
        addresses.hosts.dedup();
        let mut scope = Scope::default();
        // Named matchers apply to the whole site block, wherever defined.
        for directive in &site.directives {
            if let Some(name) = directive.name.text.strip_prefix('@') {
                scope
                    .matchers
                    .insert(name.to_string(), named_matcher(directive));
            }
        }
        let mut bind = None;
        let mut tls_directive = None;
        for directive in &site.directives {
            match directive.name.text.as_str() {
                "tls" => tls_directive = Some(directive),
                "bind" => match directive.arg_texts().as_slice() {
                    [ip] if ip.parse::<std::net::IpAddr>().is_ok() => bind = Some(ip.to_string()),
                    _ => site_gaps.push(gap(directive, "a site binds one IP address here")),
                },
                "log" => {
                    self.logged_sites += 1;
                    self.log(directive, &mut site_gaps);
                }
                _ => {}
            }
        }
        self.access_log = Some(self.logged_sites > 0);
        let base = if addresses.prefix.is_empty() {
            "/".to_string()
        } else {
            addresses.prefix.clone()
        };
        let site_name = addresses.hosts.first().cloned().unwrap_or_else(|| {
            let port = addresses.ports.first().map_or("any", |(p, _)| p.as_str());
            format!("port-{port}")
        });
        let mut context = SiteContext {
            name: slug(&site_name),
            base: base.clone(),
            proxies: 0,
        };
        for directive in &site.directives {
            if matches!(directive.name.text.as_str(), "tls" | "bind" | "log") {
                continue;
            }
            self.directive(directive, &mut scope, &mut context, None, &mut site_gaps);
        }

        // Listeners: the site's ports, on the bound address. The site's
        // routes answer there only, as the site does in Caddy.
        let ip = bind.unwrap_or_else(|| "0.0.0.0".to_string());
        let mut site_listeners = Vec::new();
        for (port, tls) in &addresses.ports {
            site_listeners.push(self.listen(&ip, port, *tls));
        }
        let (tls, tls_comments) = self.site_tls(&addresses, tls_directive, &mut site_gaps);
        // Caddy redirects HTTP to HTTPS on the HTTP port; Sluice's redirect
        // goes to the default HTTPS port, so it is set only for sites there.
        let redirect = tls.is_some() && self.auto_https == AutoHttps::On;
        let on_default_port = addresses
            .ports
            .iter()
            .filter(|(_, tls)| *tls)
            .all(|(port, _)| port == "443");
        let redirect_https = redirect && on_default_port;
        let http01 = tls == Some(RouteTls::Acme)
            && addresses
                .hosts
                .iter()
                .any(|h| self.http01_sites.contains(h));
        if redirect_https || http01 {
            // Port 80 also answers ACME's HTTP-01 challenge.
            let port = self.http_port.clone();
            site_listeners.push(self.listen(&ip, &port, false));
        }
        site_listeners.sort();
        site_listeners.dedup();
        let mut routes = scope.routes(&addresses.hosts, &base, &site_name, &at);
        if let Some(first) = routes.first_mut() {
            first.gaps.splice(0..0, site_gaps);
            first.comments.splice(0..0, tls_comments);
            if redirect && !redirect_https {
                first.comments.push(format!(
                    "Caddy redirected HTTP to HTTPS on port {}; Sluice redirects only to the default HTTPS port, so no redirect is set",
                    addresses.ports.first().map_or("?", |(p, _)| p.as_str())
                ));
            }
        }
        let first_route = routes.first().map(|r| r.name.clone()).unwrap_or_default();
        for (i, route) in routes.iter_mut().enumerate() {
            // Certificates are served by name, so one route carries the
            // site's; routes for other names carry it only when the site's
            // names do not cover them (one ACME order per list of names).
            let covered = route
                .hosts
                .iter()
                .all(|host| covers_name(&addresses.hosts, host));
            if i == 0 || !covered {
                route.tls = tls.clone();
            } else if tls.is_some() {
                route.comments.push(format!(
                    "TLS: the certificate of route {first_route} serves these hosts"
                ));
            }
            route.redirect_https = redirect_https;
            route.listeners = site_listeners.clone();
        }
        self.add_routes(routes);
    }

    /// Adds the listener `ip:port`; returns its address.
    fn listen(&mut self, ip: &str, port: &str, tls: bool) -> String {
        let address = format!("{ip}:{port}");
        let entry = self.listeners.entry(address.clone()).or_insert(tls);
        *entry |= tls;
        address
    }

    /// Reads one site address: `[scheme://]host[:port][/path]`.
    fn address(&mut self, token: &Token, site: &mut SiteAddresses) -> Result<(), String> {
        let text = token.text.as_str();
        let (scheme, rest) = match text.split_once("://") {
            Some((scheme, rest)) => (Some(scheme), rest),
            None => (None, text),
        };
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, ""),
        };
        let (host, port) = split_host_port(authority);
        let host = placeholders::convert_plain(host)?;
        let port = match port {
            Some(port) => Some(placeholders::convert_plain(port)?),
            None => None,
        };
        let tls = match (scheme, &port) {
            (Some("http"), _) => false,
            (Some("https"), _) => true,
            (Some(other), _) => {
                return Err(format!("the scheme {other}:// is not served by Sluice"))
            }
            (None, Some(port)) if *port == self.http_port => false,
            (None, _) if host.is_empty() => false,
            // With auto_https off, a bare host name is served over plain HTTP.
            (None, _) => self.auto_https != AutoHttps::Off,
        };
        let port = port.unwrap_or_else(|| {
            if tls {
                self.https_port.clone()
            } else {
                self.http_port.clone()
            }
        });
        if !path.is_empty() {
            let (prefix, _) = path_prefix(path)?;
            if !site.prefix.is_empty() && site.prefix != prefix {
                return Err("the addresses of one site name different paths".into());
            }
            site.prefix = prefix;
        }
        if !host.is_empty() && host != "*" {
            // Host names match case-insensitively; variable names do not.
            site.hosts.push(if host.contains('$') {
                host
            } else {
                host.to_ascii_lowercase()
            });
        }
        if !site.ports.iter().any(|(p, _)| *p == port) {
            site.ports.push((port, tls));
        }
        site.tls |= tls;
        Ok(())
    }

    /// The route's `tls`, from the `tls` directive and the addresses.
    fn site_tls(
        &mut self,
        addresses: &SiteAddresses,
        directive: Option<&Directive>,
        gaps: &mut Vec<Gap>,
    ) -> (Option<RouteTls>, Vec<String>) {
        let mut comments = Vec::new();
        if !addresses.tls {
            if let Some(directive) = directive {
                gaps.push(gap(
                    directive,
                    "the site is served over plain HTTP, so its tls settings do not apply",
                ));
            }
            return (None, comments);
        }
        if addresses.hosts.is_empty() {
            gaps.push(Gap {
                at: directive.map_or_else(|| self.source_location(), |d| d.at().clone()),
                directive: directive.map_or_else(|| "tls".to_string(), Directive::summary),
                reason: "a TLS site without host names needs Caddy's on-demand TLS, which Sluice does not have".into(),
            });
            return (None, comments);
        }
        let local = addresses.hosts.iter().all(|h| {
            h == "localhost"
                || h.ends_with(".localhost")
                || h.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok()
        });
        let mut dns = None;
        let mut internal = local;
        let mut files = None;
        if let Some(directive) = directive {
            let args = directive.arg_texts();
            match args.as_slice() {
                [] => {}
                ["internal"] => internal = true,
                [email] if email.contains('@') => {
                    if self.email.is_none() {
                        self.email = placeholders::convert_plain(email).ok();
                    }
                }
                [cert, key] => match (
                    placeholders::convert_plain(cert),
                    placeholders::convert_plain(key),
                ) {
                    (Ok(cert), Ok(key)) => files = Some(RouteTls::Files { cert, key }),
                    (Err(reason), _) | (_, Err(reason)) => gaps.push(gap(directive, &reason)),
                },
                _ => gaps.push(gap(directive, "no Sluice equivalent of this tls form")),
            }
            for sub in &directive.block {
                self.tls_option(sub, &mut dns, &mut internal, gaps);
            }
        }
        if let Some(files) = files {
            return (Some(files), comments);
        }
        if internal {
            return (self.self_signed(addresses, &mut comments, gaps), comments);
        }
        self.acme_sites += 1;
        match dns.or_else(|| self.global_dns.clone()) {
            Some(variable) => match &self.dns_token_env {
                Some(existing) if *existing != variable => gaps.push(Gap {
                    at: directive.map_or_else(|| self.source_location(), |d| d.at().clone()),
                    directive: directive.map_or_else(String::new, Directive::summary),
                    reason: format!(
                        "Sluice reads one Cloudflare token for every certificate (${existing}), not ${variable} for this site"
                    ),
                }),
                _ => self.dns_token_env = Some(variable),
            },
            None => self.http01_sites.extend(addresses.hosts.iter().cloned()),
        }
        if addresses.hosts.iter().any(|h| h.starts_with("*.")) && self.dns_token_env.is_none() {
            comments.push("wildcard names need the DNS-01 challenge: set [acme.cloudflare]".into());
        }
        (Some(RouteTls::Acme), comments)
    }

    fn tls_option(
        &mut self,
        sub: &Directive,
        dns: &mut Option<String>,
        internal: &mut bool,
        gaps: &mut Vec<Gap>,
    ) {
        let args = sub.arg_texts();
        match (sub.name.text.as_str(), args.as_slice()) {
            ("dns", ["cloudflare", token]) => match placeholders::environment_variable(token) {
                Some(variable) => *dns = Some(variable.to_string()),
                None => gaps.push(gap(sub, TOKEN_IN_FILE)),
            },
            ("dns", _) => gaps.push(gap(
                sub,
                "Sluice's DNS-01 challenge works through Cloudflare only",
            )),
            ("issuer", ["internal"]) => *internal = true,
            ("issuer", ["acme"]) => {
                for option in &sub.block {
                    match (option.name.text.as_str(), option.arg_texts().as_slice()) {
                        ("dir", [url]) => self.directory = Some(acme_directory(url)),
                        ("email", [email]) => self.email = placeholders::convert_plain(email).ok(),
                        _ => self.tls_option(option, dns, internal, gaps),
                    }
                }
            }
            ("ca", [url]) => {
                let directory = acme_directory(url);
                match &self.directory {
                    Some(existing) if *existing != directory => gaps.push(gap(
                        sub,
                        "Sluice uses one ACME directory for every certificate ([acme] directory)",
                    )),
                    _ => self.directory = Some(directory),
                }
            }
            _ => gaps.push(gap(sub, "no Sluice equivalent of this tls option")),
        }
    }

    /// `tls internal`: Sluice has no internal CA, so the import writes a
    /// self-signed certificate for the site's names and points the route at it.
    fn self_signed(
        &mut self,
        addresses: &SiteAddresses,
        comments: &mut Vec<String>,
        gaps: &mut Vec<Gap>,
    ) -> Option<RouteTls> {
        // IPv6 literals are written in brackets in addresses, not in certificates.
        let names: Vec<String> = addresses
            .hosts
            .iter()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
            .collect();
        if names.iter().any(|n| n.contains('$')) {
            gaps.push(Gap {
                at: self.source_location(),
                directive: "tls internal".into(),
                reason:
                    "a certificate cannot be generated for a host name read from the environment"
                        .into(),
            });
            return None;
        }
        let generated = match rcgen::generate_simple_self_signed(names.clone()) {
            Ok(generated) => generated,
            Err(e) => {
                gaps.push(Gap {
                    at: self.source_location(),
                    directive: "tls internal".into(),
                    reason: format!("cannot generate a certificate: {e}"),
                });
                return None;
            }
        };
        let stem = slug(&names[0]);
        let cert = self.options.certificate_dir.join(format!("{stem}.pem"));
        let key = self.options.certificate_dir.join(format!("{stem}.key"));
        self.files.push(GeneratedFile {
            path: cert.clone(),
            contents: generated.cert.pem(),
            private: false,
        });
        self.files.push(GeneratedFile {
            path: key.clone(),
            contents: generated.signing_key.serialize_pem(),
            private: true,
        });
        comments.push(
            "Caddy's internal CA: Sluice has none, so the import generated a self-signed certificate (clients must trust it explicitly)"
                .into(),
        );
        Some(RouteTls::Files {
            cert: cert.display().to_string().replace('$', "$$"),
            key: key.display().to_string().replace('$', "$$"),
        })
    }

    fn log(&mut self, directive: &Directive, gaps: &mut Vec<Gap>) {
        if !directive.args.is_empty() {
            gaps.push(gap(
                directive,
                "named loggers have no Sluice equivalent; requests go to the one access log",
            ));
        }
        for option in &directive.block {
            match (option.name.text.as_str(), option.arg_texts().as_slice()) {
                ("output", ["stdout"]) | ("format", ["json"]) => {}
                ("output", _) => {
                    gaps.push(gap(option, "Sluice writes its access log to stdout only"))
                }
                ("format", _) => gaps.push(gap(option, "Sluice's access log is JSON lines only")),
                _ => gaps.push(gap(option, "no Sluice equivalent of this log option")),
            }
        }
    }

    fn source_location(&self) -> Location {
        Location {
            file: self.options.source.as_str().into(),
            line: 0,
            end_line: 0,
        }
    }

    // -----------------------------------------------------------------------
    // Directives inside a site (or a handle block)
    // -----------------------------------------------------------------------

    /// Converts one directive into rules of `scope`; `handle` is the
    /// enclosing `handle` block and its matcher.
    fn directive(
        &mut self,
        directive: &Directive,
        scope: &mut Scope,
        site: &mut SiteContext,
        handle: Option<(usize, &Matcher)>,
        gaps: &mut Vec<Gap>,
    ) {
        let name = directive.name.text.as_str();
        if let Some(matcher_name) = name.strip_prefix('@') {
            scope
                .matchers
                .insert(matcher_name.to_string(), named_matcher(directive));
            return;
        }
        let rank_of = |rank: u8| match handle {
            Some(_) => vec![rank::HANDLE, rank],
            None => vec![rank],
        };
        let (rank, takes_matcher) = match name {
            "header" | "request_header" => (rank::HEADER, true),
            "redir" => (rank::REDIR, directive.args.len() > 1),
            "rewrite" => (rank::REWRITE, directive.args.len() > 1),
            "uri" => (rank::REWRITE, true),
            "handle" | "handle_path" | "route" => (rank::HANDLE, true),
            "respond" => (rank::RESPOND, true),
            "reverse_proxy" => (rank::REVERSE_PROXY, true),
            "encode" => {
                gaps.push(gap(
                    directive,
                    "Sluice does not compress responses; the upstream's Content-Encoding passes through unchanged",
                ));
                return;
            }
            "tls" | "bind" | "log" => {
                gaps.push(gap(directive, "only allowed at the top of a site block"));
                return;
            }
            _ => {
                gaps.push(gap(directive, "no Sluice equivalent of this directive"));
                return;
            }
        };
        let (matchers, args) = match scope.extract_matchers(directive, takes_matcher, &site.base) {
            Ok(found) => found,
            Err(reason) => {
                gaps.push(gap(directive, &reason));
                return;
            }
        };
        let matchers: Vec<Matcher> = match handle {
            None => matchers,
            Some((_, within)) => {
                let mut combined = Vec::new();
                for matcher in matchers {
                    match and(within, &matcher) {
                        Some(both) => combined.push(both),
                        None => {
                            gaps.push(gap(
                                directive,
                                "its matcher cannot match inside the enclosing handle block",
                            ));
                            return;
                        }
                    }
                }
                combined
            }
        };
        let handler = matches!(
            name,
            "redir" | "respond" | "reverse_proxy" | "handle" | "handle_path" | "route"
        );
        if !handler && matchers.iter().any(|m| m.header.is_some()) {
            gaps.push(gap(
                directive,
                "a header matcher can only choose between reverse_proxy upstreams in Sluice",
            ));
            return;
        }
        let effects: Result<Vec<Effect>, String> = match name {
            "header" => header_directive(&args, &directive.block, false)
                .map(|c| vec![Effect::ResponseHeaders(c)]),
            "request_header" => header_directive(&args, &directive.block, true)
                .map(|c| vec![Effect::RequestHeaders(c)]),
            "redir" => redir(&args).map(|r| vec![Effect::Handle(Action::Respond(r))]),
            "respond" => respond(&args, &directive.block, gaps)
                .map(|r| vec![Effect::Handle(Action::Respond(r))]),
            "rewrite" => match args.as_slice() {
                [to] => rewrite_to(&to.text).map(|r| vec![Effect::Rewrite(r)]),
                _ => Err("rewrite takes a matcher and one target".into()),
            },
            "uri" => uri(&args).map(|r| vec![Effect::Rewrite(r)]),
            "reverse_proxy" => self
                .reverse_proxy(directive, &args, site, gaps)
                .map(|p| vec![Effect::Handle(Action::Proxy(Box::new(p)))]),
            "handle" | "handle_path" | "route" => {
                if !args.is_empty() {
                    Err(format!("{name} takes a matcher and a block"))
                } else if handle.is_some() {
                    Err(format!(
                        "{name} blocks nested in handle or route blocks are not supported"
                    ))
                } else {
                    self.handle(directive, scope, site, &matchers, gaps);
                    return;
                }
            }
            _ => unreachable!("names are filtered above"),
        };
        match effects {
            Ok(effects) => {
                for effect in effects {
                    for matcher in &matchers {
                        self.order += 1;
                        scope.rules.push(Rule {
                            matcher: matcher.clone(),
                            rank: rank_of(rank),
                            order: self.order,
                            effect: effect.clone(),
                            handle: handle.map(|(id, _)| id),
                            in_turn: name == "uri",
                            at: directive.at().clone(),
                        });
                    }
                }
            }
            Err(reason) => gaps.push(gap(directive, &reason)),
        }
    }

    /// `handle` and `handle_path`: their directives, matched within the
    /// block's matcher, rank ahead of the site's own `respond` and
    /// `reverse_proxy`; `handle_path` strips the matched prefix, and the
    /// paths inside it are written without it.
    fn handle(
        &mut self,
        directive: &Directive,
        scope: &mut Scope,
        site: &mut SiteContext,
        matchers: &[Matcher],
        gaps: &mut Vec<Gap>,
    ) {
        let strip = directive.name.text == "handle_path";
        let falls_through = directive.name.text == "route";
        for matcher in matchers {
            self.order += 1;
            let id = scope.handles.len();
            scope.handles.push(HandleBlock {
                matcher: matcher.clone(),
                order: self.order,
                falls_through,
            });
            let stripped = matcher.prefix.trim_end_matches('/').to_string();
            let site_base = site.base.clone();
            if strip && !stripped.is_empty() {
                site.base = stripped.clone();
                scope.rules.push(Rule {
                    matcher: matcher.clone(),
                    // Stripped before the block's own rewrites run.
                    rank: vec![rank::HANDLE, rank::REWRITE - 1],
                    order: self.order,
                    effect: Effect::Rewrite(Rewrite::StripPrefix(stripped)),
                    handle: Some(id),
                    in_turn: true,
                    at: directive.at().clone(),
                });
            }
            for inner in &directive.block {
                self.directive(inner, scope, site, Some((id, matcher)), gaps);
            }
            site.base = site_base;
            if falls_through {
                continue;
            }
            // A handle block that matched answers even when nothing inside
            // does, with Caddy's empty 200.
            self.order += 1;
            scope.rules.push(Rule {
                matcher: matcher.clone(),
                rank: vec![rank::HANDLE, u8::MAX],
                order: self.order,
                effect: Effect::Handle(Action::Respond(empty_response())),
                handle: Some(id),
                in_turn: false,
                at: directive.at().clone(),
            });
        }
    }

    fn reverse_proxy(
        &mut self,
        directive: &Directive,
        args: &[Token],
        site: &mut SiteContext,
        gaps: &mut Vec<Gap>,
    ) -> Result<Proxy, String> {
        site.proxies += 1;
        let name = if site.proxies == 1 {
            site.name.clone()
        } else {
            format!("{}-{}", site.name, site.proxies)
        };
        let name = self.unique_placement(&name);
        let mut placement = PlacementOut {
            name: name.clone(),
            at: Some(directive.at().clone()),
            ..PlacementOut::default()
        };
        let mut proxy = Proxy {
            placement: name,
            request: HeaderChanges::default(),
            response: HeaderChanges::default(),
            rewrite: None,
            key: None,
        };
        let mut upstreams: Vec<(Token, Option<&Directive>)> =
            args.iter().map(|t| (t.clone(), None)).collect();
        let mut weights: Option<Vec<u32>> = None;
        for sub in &directive.block {
            let args = sub.arg_texts();
            let sub_gap = |reason: &str| gap(sub, reason);
            match (sub.name.text.as_str(), args.as_slice()) {
                ("to", _) => upstreams.extend(sub.args.iter().map(|t| (t.clone(), Some(sub)))),
                ("header_up", _) => {
                    if let Err(reason) = header_up(&sub.args, &mut proxy, &mut placement) {
                        gaps.push(sub_gap(&reason));
                    }
                }
                ("header_down", _) => match header_field(&sub.args, false) {
                    Ok(changes) => proxy.response.extend(&changes),
                    Err(reason) => gaps.push(sub_gap(&reason)),
                },
                // `rewrite * <to>`: the matcher `*` is every request.
                ("rewrite", [to] | ["*", to]) => match rewrite_to(to) {
                    Ok(rewrite) => proxy.rewrite = Some(rewrite),
                    Err(reason) => gaps.push(sub_gap(&reason)),
                },
                ("lb_policy", ["round_robin"]) => placement.balance = Some("round_robin"),
                // Caddy's fewest requests in flight, ties broken at random.
                ("lb_policy", ["least_conn"]) => placement.balance = Some("least_request"),
                ("lb_policy", ["weighted_round_robin", rest @ ..]) => match rest.iter().map(|w| w.parse::<u32>()).collect() {
                    Ok(list) => {
                        placement.balance = Some("weighted");
                        weights = Some(list);
                    }
                    Err(_) => gaps.push(sub_gap("weights must be whole numbers")),
                },
                ("lb_policy", ["header", header]) => {
                    placement.balance = Some("consistent_hash");
                    proxy.key = Some(("header", header.to_string()));
                }
                ("lb_policy", ["cookie", cookie, ..]) => {
                    placement.balance = Some("consistent_hash");
                    proxy.key = Some(("cookie", cookie.to_string()));
                    placement.comments.push(
                        "lb_policy cookie: Caddy also sets the cookie on a first response; Sluice only reads it, and requests without it rotate"
                            .into(),
                    );
                    if args.len() > 2 {
                        placement.comments.push("Caddy's cookie secret is not needed: Sluice hashes the cookie's value".into());
                    }
                }
                ("lb_policy", _) => gaps.push(sub_gap(
                    "Sluice balances round_robin, weighted, least_request, or consistent_hash on a header or cookie; it keeps round_robin here",
                )),
                ("lb_retries", [n]) => match n.parse::<u32>() {
                    Ok(n) => placement.retry.push(("connect_attempts", (n + 1).to_string())),
                    Err(_) => gaps.push(sub_gap("not a number")),
                },
                ("health_uri" | "health_path", [path]) => placement.health.push(("path", quote(&plain(path, sub, gaps)))),
                ("health_interval", [d]) => placement.health.push(("interval", quote(d))),
                ("health_timeout", [d]) => placement.health.push(("timeout", quote(d))),
                ("health_passes", [n]) if n.parse::<u32>().is_ok() => placement.health.push(("rise", n.to_string())),
                ("health_fails", [n]) if n.parse::<u32>().is_ok() => placement.health.push(("fall", n.to_string())),
                ("health_status", [status]) => match health_status(status) {
                    Some(expect) => placement.health.push(("expect", quote(&expect))),
                    None => gaps.push(sub_gap("Sluice expects one status or a class such as 2xx")),
                },
                ("fail_duration", [d]) => placement.passive.push(("cooldown", quote(d))),
                ("max_fails", [n]) if n.parse::<u32>().is_ok() => placement.passive.push(("failures", n.to_string())),
                ("flush_interval", ["-1"]) => placement.comments.push("flush_interval -1: Sluice always streams responses".into()),
                ("transport", ["http"]) => self.transport(sub, &mut placement, gaps),
                _ => gaps.push(sub_gap("no Sluice equivalent of this reverse_proxy option")),
            }
        }
        if !placement.health.is_empty() && !placement.health.iter().any(|(k, _)| *k == "path") {
            placement.health.push(("path", quote("/")));
            placement.comments.push(
                "Caddy's active checks need health_uri; the import checks / like Caddy".into(),
            );
        }
        if placement.passive.iter().any(|(k, _)| *k == "cooldown")
            && !placement.passive.iter().any(|(k, _)| *k == "failures")
        {
            // Caddy's max_fails defaults to 1 once fail_duration turns passive checks on.
            placement.passive.push(("failures", "1".into()));
        }
        if upstreams.is_empty() {
            return Err("reverse_proxy without upstreams".into());
        }
        let tls_transport = placement
            .endpoints
            .first()
            .map(|e| (e.tls, e.verify, e.sni.clone()));
        placement.endpoints.clear();
        // A placement speaks one protocol to all its endpoints.
        let h2c = upstreams
            .iter()
            .any(|(token, _)| token.text.starts_with("h2c://"));
        if h2c {
            placement.protocol = Some("h2c");
        }
        for (i, (token, _)) in upstreams.iter().enumerate() {
            if h2c && !token.text.starts_with("h2c://") {
                placement.gaps.push(Gap {
                    at: token.at.clone(),
                    directive: format!("reverse_proxy {}", token.text),
                    reason: "a placement speaks one protocol to its upstreams, and others \
                             here are h2c://"
                        .into(),
                });
                continue;
            }
            match upstream(&token.text) {
                Ok(address) => {
                    let (tls, verify, sni) = tls_transport.clone().unwrap_or((false, true, None));
                    placement.endpoints.push(EndpointOut {
                        address,
                        weight: weights.as_ref().and_then(|w| w.get(i).copied()),
                        tls: tls && !token.text.starts_with("http://"),
                        verify,
                        sni,
                    });
                }
                Err(reason) => placement.gaps.push(Gap {
                    at: token.at.clone(),
                    directive: format!("reverse_proxy {}", token.text),
                    reason,
                }),
            }
        }
        if placement.endpoints.is_empty() {
            gaps.append(&mut placement.gaps);
            return Err("none of its upstreams can be converted".into());
        }
        self.placements.push(placement);
        Ok(proxy)
    }

    /// `transport http { ... }`: TLS to the upstreams and timeouts. The TLS
    /// settings are parked on a first, placeholder endpoint until the
    /// upstreams are known.
    fn transport(
        &mut self,
        directive: &Directive,
        placement: &mut PlacementOut,
        gaps: &mut Vec<Gap>,
    ) {
        let mut endpoint = EndpointOut {
            verify: true,
            ..EndpointOut::default()
        };
        for option in &directive.block {
            match (option.name.text.as_str(), option.arg_texts().as_slice()) {
                ("tls", []) => endpoint.tls = true,
                ("tls_insecure_skip_verify", []) => {
                    endpoint.tls = true;
                    endpoint.verify = false;
                }
                ("tls_server_name", [name]) => {
                    endpoint.tls = true;
                    endpoint.sni = Some(plain(name, option, gaps));
                }
                ("dial_timeout", [d]) => placement.timeouts.push(("connect", quote(d))),
                ("response_header_timeout" | "read_timeout", [d]) => {
                    placement.timeouts.push(("read", quote(d)))
                }
                ("keepalive", [d]) if *d != "off" => placement.timeouts.push(("idle", quote(d))),
                ("versions", versions) => {
                    if versions.contains(&"h2c") {
                        placement.protocol = Some("h2c");
                    } else if versions.contains(&"2") && endpoint.tls {
                        placement.protocol = Some("h2");
                    } else if !versions.contains(&"1.1") {
                        gaps.push(gap(
                            option,
                            "HTTP/2 without TLS needs h2c; Sluice speaks HTTP/1.1 here",
                        ));
                    }
                }
                _ => gaps.push(gap(option, "no Sluice equivalent of this transport option")),
            }
        }
        placement.endpoints = vec![endpoint];
    }

    fn unique_placement(&self, name: &str) -> String {
        let mut candidate = name.to_string();
        let mut n = 2;
        while self.placements.iter().any(|p| p.name == candidate) {
            candidate = format!("{name}-{n}");
            n += 1;
        }
        candidate
    }

    /// Adds a site's routes, leaving out (and reporting) any whose hosts
    /// and prefix another site already took: Sluice matches routes on every
    /// listener alike, so two sites told apart only by port collide.
    fn add_routes(&mut self, routes: Vec<RouteOut>) {
        for mut route in routes {
            let mut hosts = route.hosts.clone();
            hosts.sort();
            let taken = self.routes.iter().find(|r| {
                let mut other = r.hosts.clone();
                other.sort();
                other == hosts
                    && r.prefix == route.prefix
                    && r.exact == route.exact
                    && r.listeners.iter().any(|l| route.listeners.contains(l))
            });
            if let Some(taken) = taken {
                let reason = format!(
                    "route {} already answers these hosts and path on the same listener; this site's route is left out",
                    taken.name
                );
                let mut gaps = std::mem::take(&mut route.gaps);
                gaps.insert(
                    0,
                    Gap {
                        at: route.at.clone(),
                        directive: format!("site {}{}", display_hosts(&route.hosts), route.prefix),
                        reason,
                    },
                );
                self.global_gaps.extend(gaps);
                continue;
            }
            let mut name = route.name.clone();
            let mut n = 2;
            while self.routes.iter().any(|r| r.name == name) {
                name = format!("{}-{n}", route.name);
                n += 1;
            }
            route.name = name;
            self.routes.push(route);
        }
    }

    // -----------------------------------------------------------------------
    // Output
    // -----------------------------------------------------------------------

    fn finish(mut self) -> Conversion {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# Imported from {} by `sluice import caddyfile`.",
            self.options.source
        );
        out.push_str(
            "# Check it with `sluice check --config FILE` before serving traffic. Lines starting\n\
             # with `# UNSUPPORTED` mark Caddyfile directives that have no Sluice equivalent.\n\
             # Routes set explain = false: Caddy adds no routing headers to responses.\n",
        );
        let plugins_needed = self.routes.iter().any(|r| {
            !r.request.plugin.is_empty()
                || !r.response.plugin.is_empty()
                || matches!(r.rewrite, Some(Rewrite::Plugin { .. }))
        });
        for gap in &self.global_gaps {
            write_gap(&mut out, gap);
        }
        out.push('\n');

        let access_log = self.access_log.unwrap_or(false);
        let mut server = Vec::new();
        if !access_log {
            server.push(
                "access_log = false                 # no site had a `log` directive".to_string(),
            );
        } else if self.logged_sites < self.sites {
            server.push("access_log = true                  # Sluice logs every site; some did not `log` in Caddy".to_string());
        }
        if let Some(grace) = &self.grace_period {
            server.push(format!("grace_period = {}", quote(grace)));
        }
        if !server.is_empty() {
            out.push_str("[server]\n");
            for line in server {
                out.push_str(&line);
                out.push('\n');
            }
            out.push('\n');
        }

        match &self.admin {
            Admin::Off => {}
            Admin::CaddyDefault => out.push_str(
                "# Caddy's admin endpoint was on localhost:2019; Sluice's admin API (status,\n\
                 # config, reload, metrics) takes its place.\n[admin]\naddress = \"127.0.0.1:2019\"\n\n",
            ),
            Admin::Address(address) => {
                let _ = writeln!(out, "[admin]\naddress = {}\n", quote(address));
            }
        }

        for (address, tls) in &self.listeners {
            let _ = writeln!(out, "[[listeners]]\naddress = {}", quote(address));
            if *tls {
                out.push_str("tls = true\n");
            }
            out.push('\n');
        }

        if self.acme_sites > 0 {
            out.push_str("[acme]\n");
            if let Some(email) = &self.email {
                let _ = writeln!(out, "email = {}", quote(email));
            }
            let directory = self
                .directory
                .clone()
                .unwrap_or_else(|| "letsencrypt".into());
            let _ = writeln!(out, "directory = {}", quote(&directory));
            match &self.dns_token_env {
                Some(variable) => {
                    if !self.http01_sites.is_empty() {
                        let _ = writeln!(
                            out,
                            "# Sluice proves every name with one challenge: {} also use DNS-01 here, so the token must cover their zones.",
                            self.http01_sites.join(", ")
                        );
                    }
                    let _ = writeln!(out, "\n[acme.cloudflare]\ntoken_env = {}", quote(variable));
                }
                None => out.push_str(
                    "challenge = \"http-01\"              # Caddy's default; answered on port 80\n",
                ),
            }
            out.push('\n');
        } else if self.email.is_some() || self.directory.is_some() {
            out.push_str(
                "# email and acme_ca apply to no site: no site gets an ACME certificate.\n\n",
            );
        }

        if plugins_needed {
            out.push_str(
                "# Some directives need the first-party `headers` or `rewrite` plugin: build them and\n\
                 # copy headers.wasm and rewrite.wasm here (see the README, First-party plugins).\n\
                 [plugins]\ndirectory = \"plugins\"\n\n",
            );
        }

        for placement in &mut self.placements {
            let used = self.routes.iter().any(|route| {
                let direct = matches!(&route.action, Action::Proxy(proxy) if proxy.placement == placement.name);
                let keyed = route
                    .header_table
                    .as_ref()
                    .is_some_and(|(_, table)| table.iter().any(|(_, p)| *p == placement.name));
                direct || keyed
            });
            if !used {
                placement.comments.push(
                    "no route uses this placement: in Caddy an earlier directive (respond, redir) answers all its requests"
                        .into(),
                );
            }
            write_placement(&mut out, placement);
        }
        for route in &mut self.routes {
            // A route served on every listener needs no binding.
            if self.listeners.keys().all(|l| route.listeners.contains(l)) {
                route.listeners.clear();
            }
            write_route(&mut out, route);
        }
        let mut gaps = std::mem::take(&mut self.global_gaps);
        for placement in &self.placements {
            gaps.extend(placement.gaps.iter().cloned());
        }
        for route in &self.routes {
            gaps.extend(route.gaps.iter().cloned());
        }
        gaps.sort_by(|a, b| (a.at.file.as_ref(), a.at.line).cmp(&(b.at.file.as_ref(), b.at.line)));
        gaps.dedup();
        Conversion {
            toml: out.trim_end().to_string() + "\n",
            gaps,
            files: self.files,
        }
    }
}

const TOKEN_IN_FILE: &str =
    "Sluice reads the Cloudflare token from an environment variable only; write {env.NAME} and export it";

struct SiteContext {
    name: String,
    base: String,
    proxies: usize,
}

/// A site's named matchers and rules.
#[derive(Debug, Clone, Default)]
struct Scope {
    matchers: BTreeMap<String, Result<Vec<Matcher>, String>>,
    rules: Vec<Rule>,
    handles: Vec<HandleBlock>,
}

impl Scope {
    /// Splits a directive's matcher token off its arguments.
    fn extract_matchers(
        &self,
        directive: &Directive,
        takes_matcher: bool,
        base: &str,
    ) -> Result<(Vec<Matcher>, Vec<Token>), String> {
        let all = || Matcher {
            hosts: None,
            prefix: base.to_string(),
            exact: false,
            header: None,
        };
        let Some(first) = directive.args.first().filter(|_| takes_matcher) else {
            return Ok((vec![all()], directive.args.clone()));
        };
        let rest = directive.args[1..].to_vec();
        if first.text == "*" {
            return Ok((vec![all()], rest));
        }
        if first.text.starts_with('/') {
            let (prefix, exact) = path_prefix(&first.text)?;
            return Ok((
                vec![Matcher {
                    hosts: None,
                    prefix: join_prefix(base, &prefix),
                    exact,
                    header: None,
                }],
                rest,
            ));
        }
        if let Some(name) = first.text.strip_prefix('@') {
            return match self.matchers.get(name) {
                Some(Ok(matchers)) => Ok((
                    matchers
                        .iter()
                        .map(|m| Matcher {
                            prefix: join_prefix(base, &m.prefix),
                            ..m.clone()
                        })
                        .collect(),
                    rest,
                )),
                Some(Err(reason)) => Err(format!("matcher @{name}: {reason}")),
                None => Err(format!("matcher @{name} is not defined")),
            };
        }
        Ok((vec![all()], directive.args.clone()))
    }

    /// Turns the rules into routes, one per host and prefix whose answer
    /// differs from its parent's.
    fn routes(
        &self,
        site_hosts: &[String],
        base: &str,
        site_name: &str,
        at: &Location,
    ) -> Vec<RouteOut> {
        let mut host_sets: Vec<Option<Vec<String>>> = vec![None];
        // Each path the rules match, with whether they match it exactly.
        let mut paths: Vec<(String, bool)> = vec![(base.to_string(), false)];
        for rule in &self.rules {
            if rule.matcher.hosts.is_some() && !host_sets.contains(&rule.matcher.hosts) {
                host_sets.push(rule.matcher.hosts.clone());
            }
            let path = (rule.matcher.prefix.clone(), rule.matcher.exact);
            if !paths.contains(&path) {
                paths.push(path);
            }
        }
        // Sluice matches a route on the path as the client sent it, Caddy
        // its handle blocks on the path the site's rewrites left: a path a
        // site rewrite moves into a block gets a route of its own, and a
        // rewrite whose moves cannot be known is reported.
        let mut moved = Vec::new();
        for rule in self.rules.iter().filter(|rule| rule.handle.is_none()) {
            let Effect::Rewrite(rewrite) = &rule.effect else {
                continue;
            };
            let mut reported = false;
            for block in &self.handles {
                match moved_into(rewrite, &block.matcher.prefix) {
                    MovedInto::Nothing => {}
                    MovedInto::From(before) => {
                        let path = (before, block.matcher.exact);
                        if path.0.starts_with(rule.matcher.prefix.as_str())
                            && !paths.contains(&path)
                        {
                            paths.push(path);
                        }
                    }
                    MovedInto::Unknown if !reported => {
                        reported = true;
                        moved.push(Gap {
                            at: rule.at.clone(),
                            directive: "uri".into(),
                            reason: format!(
                                "Caddy chooses among handle blocks by the path after this rewrite, Sluice by the path before it: requests it moves into or out of {} would be routed differently",
                                block.matcher.prefix
                            ),
                        });
                    }
                    MovedInto::Unknown => {}
                }
            }
        }
        paths.sort_by(|a, b| a.0.len().cmp(&b.0.len()).then(a.cmp(b)));
        let mut routes = Vec::new();
        for hosts in &host_sets {
            let mut resolved: Vec<(String, bool, Resolved)> = Vec::new();
            for (path, exact) in &paths {
                let slot = self.resolve(hosts.as_ref(), path, *exact);
                // The longest prefix already resolved that this path
                // extends: Sluice sends these requests there when no route
                // is written.
                let parent = resolved
                    .iter()
                    .rev()
                    .find(|(p, parent_exact, _)| !parent_exact && path.starts_with(p.as_str()));
                if let Some((_, _, parent)) = parent {
                    if parent.same_answer(&slot) {
                        continue;
                    }
                }
                resolved.push((path.clone(), *exact, slot));
            }
            for (path, exact, slot) in resolved {
                let route_hosts = hosts.clone().unwrap_or_else(|| site_hosts.to_vec());
                let mut name = route_hosts
                    .first()
                    .cloned()
                    .unwrap_or_else(|| site_name.to_string());
                if path != "/" || exact {
                    name.push_str(&path);
                }
                routes.push(slot.into_route(name, route_hosts, path, exact, at));
            }
        }
        if let Some(first) = routes.first_mut() {
            first.gaps.extend(moved);
        }
        routes
    }

    /// What Caddy does with requests for `hosts` under `prefix`, or for
    /// the path `prefix` alone when `exact`.
    fn resolve(&self, hosts: Option<&Vec<String>>, prefix: &str, exact: bool) -> Resolved {
        let covers = |matcher: &Matcher, prefix: &str| -> bool {
            let hosts_ok = match (&matcher.hosts, hosts) {
                (None, _) => true,
                (Some(m), Some(h)) => h.iter().all(|host| m.contains(host)),
                (Some(_), None) => false,
            };
            // An exact matcher covers only a route for that one path.
            let path_ok = if matcher.exact {
                exact && prefix == matcher.prefix
            } else {
                prefix.starts_with(matcher.prefix.as_str())
            };
            hosts_ok && path_ok
        };
        let mut sorted: Vec<&Rule> = self.rules.iter().collect();
        sorted.sort_by(|a, b| {
            a.rank
                .cmp(&b.rank)
                .then(b.matcher.prefix.len().cmp(&a.matcher.prefix.len()))
                .then(a.order.cmp(&b.order))
        });
        let mut slot = Resolved::default();

        // The site's own rewrites run before `handle` blocks are matched:
        // of its `rewrite` directives covering the requests the most
        // specific, then each of its `uri` directives in turn.
        let mut rewritten = prefix.to_string();
        let site_rewrites: Vec<&&Rule> = sorted
            .iter()
            .filter(|rule| {
                rule.handle.is_none()
                    && matches!(rule.effect, Effect::Rewrite(_))
                    && covers(&rule.matcher, prefix)
            })
            .collect();
        let exclusive = site_rewrites.iter().find(|rule| !rule.in_turn);
        let mut in_turn: Vec<&&&Rule> = site_rewrites.iter().filter(|rule| rule.in_turn).collect();
        in_turn.sort_by_key(|rule| rule.order);
        for rule in exclusive.into_iter().chain(in_turn) {
            let Effect::Rewrite(rewrite) = &rule.effect else {
                continue;
            };
            match Rewrite::then(slot.rewrite.clone(), rewrite.clone()) {
                Ok(chained) => {
                    rewritten = rewrite.apply_to_prefix(&rewritten).unwrap_or(rewritten);
                    slot.rewrite = Some(chained);
                }
                Err(reason) => slot.gaps.push(Gap {
                    at: rule.at.clone(),
                    directive: "rewrite".into(),
                    reason: reason.into(),
                }),
            }
        }
        // At most one handle block answers: the most specific that matches.
        // `route` blocks come after `handle` blocks in Caddy's order, so one
        // is chosen only when no handle block matches.
        let chosen_handle = self
            .handles
            .iter()
            .enumerate()
            .filter(|(_, block)| covers(&block.matcher, &rewritten))
            .min_by(|(_, a), (_, b)| {
                a.falls_through
                    .cmp(&b.falls_through)
                    .then(b.matcher.prefix.len().cmp(&a.matcher.prefix.len()))
                    .then(a.order.cmp(&b.order))
            })
            .map(|(id, _)| id);
        let applies = |rule: &Rule| rule.handle.is_none() || rule.handle == chosen_handle;

        // Header rules: all that cover the requests, the most specific last
        // so that its values win.
        let mut header_rules: Vec<&&Rule> = sorted
            .iter()
            .filter(|rule| applies(rule) && rule.matcher.header.is_none())
            .collect();
        header_rules.sort_by(|a, b| {
            a.matcher
                .prefix
                .len()
                .cmp(&b.matcher.prefix.len())
                .then(a.rank.len().cmp(&b.rank.len()))
                .then(a.order.cmp(&b.order))
        });
        for rule in header_rules {
            let seen = if rule.handle.is_some() {
                rewritten.as_str()
            } else {
                prefix
            };
            if !covers(&rule.matcher, seen) {
                continue;
            }
            match &rule.effect {
                Effect::RequestHeaders(changes) => slot.request.extend(changes),
                Effect::ResponseHeaders(changes) => slot.response.extend(changes),
                _ => {}
            }
        }
        // Rewrites inside the chosen block (handle_path's strip first).
        for rule in sorted
            .iter()
            .filter(|rule| rule.handle.is_some() && rule.handle == chosen_handle)
        {
            let Effect::Rewrite(rewrite) = &rule.effect else {
                continue;
            };
            if !covers(&rule.matcher, &rewritten) {
                continue;
            }
            match Rewrite::then(slot.rewrite.clone(), rewrite.clone()) {
                Ok(chained) => slot.rewrite = Some(chained),
                Err(reason) => {
                    slot.gaps.push(Gap {
                        at: rule.at.clone(),
                        directive: "rewrite".into(),
                        reason: reason.into(),
                    });
                }
            }
        }

        // The handler: the first, in Caddy's order, whose matcher covers
        // the requests; `redir` runs before the rewrites, the rest after.
        let mut table: Vec<(String, String, Location)> = Vec::new();
        for rule in sorted.iter().filter(|rule| applies(rule)) {
            let Effect::Handle(action) = &rule.effect else {
                continue;
            };
            let seen = if rule.rank == [rank::REDIR] {
                prefix
            } else {
                rewritten.as_str()
            };
            if !covers(&rule.matcher, seen) {
                continue;
            }
            if let Some((name, value)) = &rule.matcher.header {
                match action {
                    Action::Proxy(proxy) if table.first().is_none_or(|(n, _, _)| n.eq_ignore_ascii_case(name)) => {
                        table.push((name.clone(), value.clone(), rule.at.clone()));
                        slot.table_placements.push((value.clone(), proxy.placement.clone()));
                    }
                    _ => slot.gaps.push(Gap {
                        at: rule.at.clone(),
                        directive: format!("header matcher {name} {value}"),
                        reason: "Sluice routes on one request header, and only between reverse_proxy upstreams".into(),
                    }),
                }
                continue;
            }
            slot.action = Some(action.clone());
            break;
        }
        if let Some((name, _, _)) = table.first() {
            slot.table_header = Some(name.clone());
            if !matches!(slot.action, Some(Action::Proxy(_))) {
                for (name, value, at) in &table {
                    slot.gaps.push(Gap {
                        at: at.clone(),
                        directive: format!("header matcher {name} {value}"),
                        reason: "keyed routing needs a reverse_proxy for the requests without this header".into(),
                    });
                }
                slot.table_header = None;
                slot.table_placements.clear();
            }
        }
        if slot.action.is_none() {
            slot.comments.push(
                "no Caddy handler takes these requests: Caddy answers them with an empty 200"
                    .into(),
            );
            slot.action = Some(Action::Respond(empty_response()));
        }
        slot
    }
}

/// What one (hosts, prefix) slot resolves to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Resolved {
    action: Option<Action>,
    table_header: Option<String>,
    table_placements: Vec<(String, String)>,
    request: HeaderChanges,
    response: HeaderChanges,
    rewrite: Option<Rewrite>,
    comments: Vec<String>,
    gaps: Vec<Gap>,
}

impl Resolved {
    fn same_answer(&self, other: &Resolved) -> bool {
        self.action == other.action
            && self.table_header == other.table_header
            && self.table_placements == other.table_placements
            && self.request == other.request
            && self.response == other.response
            && self.rewrite == other.rewrite
            && other.gaps.is_empty()
    }

    fn into_route(
        self,
        name: String,
        hosts: Vec<String>,
        prefix: String,
        exact: bool,
        at: &Location,
    ) -> RouteOut {
        let action = self
            .action
            .unwrap_or_else(|| Action::Respond(empty_response()));
        let mut request = self.request;
        let mut response = self.response;
        let mut rewrite = self.rewrite;
        let mut gaps = self.gaps;
        if let Action::Proxy(proxy) = &action {
            request.extend(&proxy.request);
            response.extend(&proxy.response);
            if let Some(own) = &proxy.rewrite {
                // reverse_proxy's rewrite applies last, to the URI the
                // site's and the block's rewrites left.
                match Rewrite::then(rewrite.clone(), own.clone()) {
                    Ok(chained) => rewrite = Some(chained),
                    Err(reason) => {
                        gaps.push(Gap {
                            at: at.clone(),
                            directive: "reverse_proxy { rewrite ... }".into(),
                            reason: reason.into(),
                        });
                    }
                }
            }
        }
        let header_table = self.table_header.map(|name| (name, self.table_placements));
        RouteOut {
            name,
            hosts,
            prefix,
            exact,
            listeners: Vec::new(),
            action,
            header_table,
            request,
            response,
            rewrite,
            tls: None,
            redirect_https: false,
            comments: self.comments,
            gaps,
            at: at.clone(),
        }
    }
}

fn empty_response() -> Respond {
    Respond {
        status: 200,
        body: String::new(),
        headers: Vec::new(),
    }
}

/// Both matchers at once, when a route can express it.
fn and(outer: &Matcher, inner: &Matcher) -> Option<Matcher> {
    let prefix = if inner.prefix.starts_with(&outer.prefix) && !outer.exact {
        inner.prefix.clone()
    } else if outer.prefix.starts_with(&inner.prefix) && !inner.exact {
        outer.prefix.clone()
    } else {
        return None;
    };
    let hosts = match (&outer.hosts, &inner.hosts) {
        (Some(a), Some(b)) => {
            let both: Vec<String> = a.iter().filter(|h| b.contains(h)).cloned().collect();
            if both.is_empty() {
                return None;
            }
            Some(both)
        }
        (Some(a), None) | (None, Some(a)) => Some(a.clone()),
        (None, None) => None,
    };
    let header = match (&outer.header, &inner.header) {
        (Some(_), Some(_)) => return None,
        (a, b) => a.clone().or_else(|| b.clone()),
    };
    Some(Matcher {
        hosts,
        prefix,
        exact: outer.exact || inner.exact,
        header,
    })
}

/// `@name matcher args` or `@name { matcher args ... }`.
fn named_matcher(directive: &Directive) -> Result<Vec<Matcher>, String> {
    let mut lines: Vec<(String, Vec<String>)> = Vec::new();
    if let Some((kind, rest)) = directive.args.split_first() {
        lines.push((
            kind.text.clone(),
            rest.iter().map(|t| t.text.clone()).collect(),
        ));
    }
    for line in &directive.block {
        lines.push((
            line.name.text.clone(),
            line.arg_texts().iter().map(|s| s.to_string()).collect(),
        ));
    }
    if lines.is_empty() {
        return Err("an empty matcher".into());
    }
    let mut paths: Option<Vec<(String, bool)>> = None;
    let mut hosts: Option<Vec<String>> = None;
    let mut header = None;
    for (kind, args) in lines {
        match kind.as_str() {
            "path" if !args.is_empty() && paths.is_none() => {
                paths = Some(
                    args.iter()
                        .map(|p| path_prefix(p))
                        .collect::<Result<_, _>>()?,
                );
            }
            "host" if !args.is_empty() && hosts.is_none() => {
                hosts = Some(
                    args.iter()
                        .map(|h| {
                            placeholders::convert_plain(h).map(|h| {
                                if h.contains('$') {
                                    h
                                } else {
                                    h.to_ascii_lowercase()
                                }
                            })
                        })
                        .collect::<Result<_, _>>()?,
                );
            }
            "header" if header.is_none() => match args.as_slice() {
                [name, value] if !value.contains('*') => {
                    header = Some((name.clone(), value.clone()))
                }
                _ => return Err("Sluice can route on a header with one exact value only".into()),
            },
            other if args.first().is_some_and(|a| a.starts_with('/')) && other.starts_with('/') => {
                return Err("write paths after `path`".into());
            }
            other => {
                return Err(format!(
                    "uses the `{other}` matcher, which Sluice cannot express as a route"
                ))
            }
        }
    }
    let paths = paths.unwrap_or_else(|| vec![("/".to_string(), false)]);
    Ok(paths
        .into_iter()
        .map(|(prefix, exact)| Matcher {
            hosts: hosts.clone(),
            prefix,
            exact,
            header: header.clone(),
        })
        .collect())
}

/// A Caddy path pattern as a prefix: `/api/*` → `/api/`, `/api*` →
/// `/api`; a pattern without `*` is an exact path (the flag).
fn path_prefix(pattern: &str) -> Result<(String, bool), String> {
    if !pattern.starts_with('/') && pattern != "*" {
        return Err(format!("the path {pattern:?} does not start with /"));
    }
    match pattern.find('*') {
        None => Ok((pattern.to_string(), true)),
        Some(star) if star == pattern.len() - 1 => Ok((if star == 0 { "/".into() } else { pattern[..star].to_string() }, false)),
        Some(_) => Err(format!("the path pattern {pattern:?} has a * before its end; Sluice matches path prefixes only")),
    }
}

fn join_prefix(base: &str, prefix: &str) -> String {
    if base == "/" || prefix.starts_with(base) {
        prefix.to_string()
    } else {
        format!("{}{}", base.trim_end_matches('/'), prefix)
    }
}

/// `host:port` (with `[v6]:port`), leaving `:` inside `{placeholders}` alone.
fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    let mut depth = 0;
    let mut colon = None;
    let mut in_brackets = false;
    for (i, c) in authority.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            '[' => in_brackets = true,
            ']' => in_brackets = false,
            ':' if depth == 0 && !in_brackets => colon = Some(i),
            _ => {}
        }
    }
    match colon {
        Some(i) => (&authority[..i], Some(&authority[i + 1..])),
        None => (authority, None),
    }
}

/// Whether a certificate for `names` serves `host`: exactly, or through a
/// `*.` wildcard one label up.
fn covers_name(names: &[String], host: &str) -> bool {
    names.iter().any(|name| {
        name == host
            || name
                .strip_prefix("*.")
                .is_some_and(|domain| host.split_once('.').is_some_and(|(_, rest)| rest == domain))
    })
}

fn is_port(text: &str) -> bool {
    text.parse::<u16>().is_ok_and(|p| p > 0)
}

/// An upstream address in Sluice's endpoint form.
fn upstream(text: &str) -> Result<String, String> {
    if let Some(variable) = placeholders::environment_variable(text) {
        return Ok(format!("${{{variable}}}"));
    }
    if text.starts_with('{') && text.ends_with('}') {
        return placeholders::convert_plain(text);
    }
    let (scheme, rest) = match text.split_once("://") {
        Some((scheme @ ("http" | "https"), rest)) => (Some(scheme), rest),
        // Written without a scheme; the placement says `protocol = "h2c"`.
        Some(("h2c", rest)) => (None, rest),
        Some((scheme, _)) => {
            return Err(format!(
                "Sluice speaks HTTP/1.1 or HTTP/2 over TCP to upstreams, not {scheme}://"
            ))
        }
        None if text.starts_with("unix/") => {
            return Err("Sluice connects to upstreams over TCP only".into())
        }
        None => (None, text),
    };
    if rest.contains('/') {
        return Err("an upstream address has no path".into());
    }
    let (host, port) = split_host_port(rest);
    if port.is_some_and(|p| p.contains('-')) {
        return Err("port ranges are not supported; list each upstream".into());
    }
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    let host = placeholders::convert_plain(host)?;
    let port = port.map(placeholders::convert_plain).transpose()?;
    Ok(match (scheme, port) {
        (Some(scheme), Some(port)) => format!("{scheme}://{host}:{port}"),
        (Some(scheme), None) => format!("{scheme}://{host}"),
        // Caddy's default upstream port.
        (None, None) => format!("{host}:80"),
        (None, Some(port)) => format!("{host}:{port}"),
    })
}

fn admin_address(text: &str) -> Option<String> {
    let (host, port) = split_host_port(text);
    let port = port.filter(|p| is_port(p))?;
    let ip = match host {
        "" => "0.0.0.0",
        "localhost" => "127.0.0.1",
        ip if ip.parse::<std::net::IpAddr>().is_ok() => ip,
        _ => return None,
    };
    Some(format!("{ip}:{port}"))
}

fn acme_directory(url: &str) -> String {
    match url {
        LETSENCRYPT => "letsencrypt".into(),
        LETSENCRYPT_STAGING => "letsencrypt-staging".into(),
        other => placeholders::convert_plain(other).unwrap_or_else(|_| other.to_string()),
    }
}

/// `2xx` → `200-299`; `200` → `200`.
fn health_status(text: &str) -> Option<String> {
    if let Some(class) = text.strip_suffix("xx") {
        let class: u16 = class.parse().ok().filter(|c| (1..=5).contains(c))?;
        return Some(format!("{}-{}", class * 100, class * 100 + 99));
    }
    text.parse::<u16>().ok().map(|s| s.to_string())
}

/// `header_up`: like `header_field`, plus `Host`, which becomes the
/// placement's `host_header` when it names the upstream.
fn header_up(
    args: &[Token],
    proxy: &mut Proxy,
    placement: &mut PlacementOut,
) -> Result<(), String> {
    let texts: Vec<&str> = args.iter().map(|t| t.text.as_str()).collect();
    match texts.as_slice() {
        [host, "{upstream_hostport}" | "{http.reverse_proxy.upstream.hostport}"]
            if host.eq_ignore_ascii_case("host") =>
        {
            placement.host_header_endpoint = true;
            Ok(())
        }
        [host, "{host}" | "{http.request.host}" | "{hostport}" | "{http.request.hostport}"]
            if host.eq_ignore_ascii_case("host") =>
        {
            placement
                .comments
                .push("header_up Host {host}: Sluice passes the client's Host by default".into());
            Ok(())
        }
        [name, value] if is_forwarding_default(name, value) => {
            placement.comments.push(format!(
                "header_up {name} {value}: Sluice sets this header itself"
            ));
            Ok(())
        }
        _ => {
            proxy.request.extend(&header_field(args, true)?);
            Ok(())
        }
    }
}

fn is_forwarding_default(name: &str, value: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        (name.as_str(), value),
        (
            "x-forwarded-for",
            "{remote_host}" | "{http.request.remote.host}"
        ) | ("x-forwarded-proto", "{scheme}" | "{http.request.scheme}")
            | (
                "x-forwarded-host",
                "{host}" | "{http.request.host}" | "{hostport}"
            )
    )
}

/// One header operation: `Name value` (set), `+Name value` (add), `-Name`
/// (remove), `>Name value` (set, deferred).
fn header_field(args: &[Token], request: bool) -> Result<HeaderChanges, String> {
    let texts: Vec<&str> = args.iter().map(|t| t.text.as_str()).collect();
    let mut changes = HeaderChanges::default();
    let allowed = if request {
        placeholders::PLUGIN_REQUEST_PLACEHOLDERS
    } else {
        placeholders::PLUGIN_RESPONSE_PLACEHOLDERS
    };
    let value_of = |value: &str| -> Result<(String, bool), String> {
        let converted: Converted = placeholders::convert_with(value, allowed)?;
        Ok((converted.text, !converted.request_placeholders.is_empty()))
    };
    match texts.as_slice() {
        [field] if field.starts_with('-') && field.len() > 1 => {
            let name = &field[1..];
            if name.contains('*') {
                return Err("Sluice removes headers by exact name only".into());
            }
            changes.native.remove.push(name.to_string());
        }
        [field, value] => {
            let (kind, name) = match field.chars().next() {
                Some('+') => ("add", &field[1..]),
                Some('>') => ("set", &field[1..]),
                Some('?') => {
                    return Err("setting a header only when absent has no Sluice equivalent".into())
                }
                Some('-') => return Err("a header removal takes no value".into()),
                _ => ("set", &field[..]),
            };
            let (value, dynamic) = value_of(value)?;
            let rules = if dynamic {
                &mut changes.plugin
            } else {
                &mut changes.native
            };
            if kind == "add" {
                rules.add.push((name.to_string(), value));
            } else {
                rules.set.push((name.to_string(), value));
            }
        }
        [_, _, _] => {
            return Err("search-and-replace in header values has no Sluice equivalent".into())
        }
        _ => return Err("expected a header name and a value".into()),
    }
    Ok(changes)
}

/// The `header` and `request_header` directives, on one line or as a block.
fn header_directive(
    args: &[Token],
    block: &[Directive],
    request: bool,
) -> Result<HeaderChanges, String> {
    let mut changes = HeaderChanges::default();
    if !args.is_empty() {
        changes.extend(&header_field(args, request)?);
    }
    for line in block {
        if line.name.text == "defer" && line.args.is_empty() {
            // Sluice's response rules always apply to the final response.
            continue;
        }
        let mut tokens = vec![line.name.clone()];
        tokens.extend(line.args.iter().cloned());
        changes.extend(
            &header_field(&tokens, request).map_err(|e| format!("{}: {e}", line.summary()))?,
        );
    }
    if args.is_empty() && block.is_empty() {
        return Err("expected a header name and a value".into());
    }
    Ok(changes)
}

/// `redir <to> [code]`.
fn redir(args: &[Token]) -> Result<Respond, String> {
    let (to, code) = match args {
        [to] => (to, None),
        [to, code] => (to, Some(code.text.as_str())),
        _ => return Err("redir takes a target and a status".into()),
    };
    let status = match code {
        None | Some("temporary") => 302,
        Some("permanent") => 301,
        Some("html") => return Err("HTML redirects have no Sluice equivalent".into()),
        Some(code) => code
            .parse::<u16>()
            .ok()
            .filter(|c| (300..400).contains(c))
            .ok_or("the status must be 3xx, permanent or temporary")?,
    };
    let location = placeholders::convert_with(&to.text, placeholders::RESPOND_PLACEHOLDERS)?;
    Ok(Respond {
        status,
        body: String::new(),
        headers: vec![("Location".into(), location.text)],
    })
}

/// `respond [body] [status]` or `respond status`, with a `body` block option.
fn respond(args: &[Token], block: &[Directive], gaps: &mut Vec<Gap>) -> Result<Respond, String> {
    let is_status = |t: &Token| {
        t.text.len() == 3 && t.text.parse::<u16>().is_ok_and(|s| (100..600).contains(&s))
    };
    let (body, status) = match args {
        [] => (None, 200),
        [only] if !only.quoted && is_status(only) => (None, only.text.parse().unwrap_or(200)),
        [body] => (Some(body.text.as_str()), 200),
        [body, status] if is_status(status) => {
            (Some(body.text.as_str()), status.text.parse().unwrap_or(200))
        }
        _ => return Err("respond takes a body and a status".into()),
    };
    let mut text = body.unwrap_or_default().to_string();
    for option in block {
        match (option.name.text.as_str(), option.args.as_slice()) {
            ("body", [body]) => text = body.text.clone(),
            _ => gaps.push(gap(option, "no Sluice equivalent of this respond option")),
        }
    }
    let body = placeholders::convert_with(&text, placeholders::RESPOND_PLACEHOLDERS)?;
    Ok(Respond {
        status,
        body: body.text,
        headers: Vec::new(),
    })
}

/// A `rewrite` target: `/new{path}`, `/static`, `/search?q={query}`.
fn rewrite_to(to: &str) -> Result<Rewrite, String> {
    let (path, query) = match to.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (to, None),
    };
    let path_converted = placeholders::convert_with(path, &["path", "query"])?;
    // A literal `$` must survive both the config's interpolation ($$) and
    // the replacement's own syntax ($$): the converted `$$` doubles again.
    let path_text = path_converted.text.replace("$$", "$$$$");
    let query_is_kept = matches!(
        query,
        None | Some("{query}") | Some("{http.request.uri.query}")
    );
    if query_is_kept && !path_text.contains("{query}") {
        if path_text.is_empty() {
            return Err("a rewrite target needs a path".into());
        }
        let uses = path_text.matches("{path}").count();
        if uses == 0 {
            return Ok(Rewrite::Regex {
                regex: "^.*$".into(),
                to: path_text,
            });
        }
        if let Some(before) = path_text
            .strip_suffix("{path}")
            .filter(|b| !b.contains("{path}"))
        {
            if before.is_empty() {
                return Err("rewriting the path to itself changes nothing".into());
            }
            if !before.ends_with('/') && before.starts_with('/') {
                return Ok(Rewrite::Prefix {
                    from: "/".into(),
                    to: format!("{before}/"),
                });
            }
        }
        if uses == 1 {
            return Ok(Rewrite::Regex {
                regex: "^(.*)$".into(),
                to: path_text.replace("{path}", "$1"),
            });
        }
    }
    // The query changes too: the `rewrite` plugin writes `path?query`.
    let query = query
        .map(|q| placeholders::convert_with(q, &["path", "query"]))
        .transpose()?;
    let mut target = if path_text.is_empty() {
        "{path}".to_string()
    } else {
        path_text
    };
    if let Some(query) = query {
        target.push('?');
        target.push_str(&query.text.replace("$$", "$$$$"));
    }
    Ok(Rewrite::Plugin { to: target })
}

/// `uri strip_prefix`, `uri replace`, `uri path_regexp`.
fn uri(args: &[Token]) -> Result<Rewrite, String> {
    let texts: Vec<&str> = args.iter().map(|t| t.text.as_str()).collect();
    match texts.as_slice() {
        ["strip_prefix", prefix] => {
            let prefix = placeholders::convert_plain(prefix)?;
            let prefix = if prefix.starts_with('/') {
                prefix
            } else {
                format!("/{prefix}")
            };
            Ok(Rewrite::StripPrefix(prefix))
        }
        ["replace", find, replacement] | ["replace", find, replacement, _] => {
            let limit = match texts.get(3) {
                None => None,
                Some(limit) => match limit.parse::<i64>() {
                    Ok(n) if n > 0 => Some(n as usize),
                    Ok(_) => None,
                    Err(_) => return Err(format!("uri replace: {limit:?} is not a number")),
                },
            };
            Ok(Rewrite::Replace {
                find: placeholders::convert_plain(find)?,
                to: placeholders::convert_plain(replacement)?,
                limit,
            })
        }
        // The replacement is in Go's expansion syntax, which Sluice's
        // shares (`$1`, `${name}`, `$$` for a dollar): only the config's
        // own `$` escaping is added.
        ["path_regexp", regex, replacement] => Ok(Rewrite::Regex {
            regex: placeholders::convert_plain(regex)?,
            to: placeholders::convert_plain(replacement)?,
        }),
        _ => Err("Sluice maps uri strip_prefix, uri replace and uri path_regexp only".into()),
    }
}

/// Which requests a site-level rewrite moves under a `handle` block's
/// path, as far as the import can tell.
enum MovedInto {
    /// None, or none routed differently for it.
    Nothing,
    /// Those under this path, before the rewrite.
    From(String),
    /// It cannot be told without a request.
    Unknown,
}

/// What `rewrite`, run before handle blocks are chosen, moves under the
/// block path `into`.
fn moved_into(rewrite: &Rewrite, into: &str) -> MovedInto {
    match rewrite {
        Rewrite::StripPrefix(strip) if into.starts_with('/') => {
            MovedInto::From(format!("{strip}{into}"))
        }
        Rewrite::StripPrefix(_) => MovedInto::Nothing,
        Rewrite::Prefix { from, to } => match into.strip_prefix(to.as_str()) {
            Some(rest) => MovedInto::From(format!("{from}{rest}")),
            None => MovedInto::Nothing,
        },
        // Every request is under the catch-all block's path, before and after.
        _ if into == "/" => MovedInto::Nothing,
        Rewrite::Replace { find, to, .. } => {
            if may_change_prefix(into, find, to) || may_change_prefix(into, to, find) {
                MovedInto::Unknown
            } else {
                MovedInto::Nothing
            }
        }
        Rewrite::Regex { .. } | Rewrite::Plugin { .. } | Rewrite::Chain(_) => MovedInto::Unknown,
    }
}

/// Whether replacing `find` with `to` can turn a path outside `prefix` into
/// one under it: `to` lands somewhere in the prefix's text (at `j`) where
/// `find` did not already spell the prefix out.
fn may_change_prefix(prefix: &str, find: &str, to: &str) -> bool {
    let agree = |a: &[u8], b: &[u8]| {
        let n = a.len().min(b.len());
        a[..n] == b[..n]
    };
    let prefix = prefix.as_bytes();
    (0..prefix.len()).any(|j| {
        let rest = &prefix[j..];
        agree(rest, to.as_bytes()) && !find.as_bytes().starts_with(rest)
    })
}

/// A native rewrite as the TOML value of a route's `rewrite`; `None` for
/// one the `rewrite` plugin does.
fn rewrite_value(rewrite: &Rewrite) -> Option<String> {
    Some(match rewrite {
        Rewrite::StripPrefix(prefix) => format!("{{ strip_prefix = {} }}", quote(prefix)),
        Rewrite::Prefix { from, to } => {
            format!("{{ prefix = {}, to = {} }}", quote(from), quote(to))
        }
        Rewrite::Regex { regex, to } => {
            format!("{{ regex = {}, to = {} }}", quote(regex), quote(to))
        }
        Rewrite::Replace { find, to, limit } => {
            let limit = limit.map(|n| format!(", limit = {n}")).unwrap_or_default();
            format!("{{ replace = {}, to = {}{limit} }}", quote(find), quote(to))
        }
        Rewrite::Chain(steps) => {
            let steps: Option<Vec<String>> = steps.iter().map(rewrite_value).collect();
            format!("[{}]", steps?.join(", "))
        }
        Rewrite::Plugin { .. } => return None,
    })
}

fn plain(text: &str, directive: &Directive, gaps: &mut Vec<Gap>) -> String {
    placeholders::convert_plain(text).unwrap_or_else(|reason| {
        gaps.push(gap(directive, &reason));
        text.to_string()
    })
}

fn gap(directive: &Directive, reason: &str) -> Gap {
    Gap {
        at: directive.at().clone(),
        directive: directive.summary(),
        reason: reason.to_string(),
    }
}

/// A name usable as a TOML bare key and a file name.
fn slug(text: &str) -> String {
    let slug: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let slug = slug.trim_matches('-').to_string();
    if slug.is_empty() {
        "site".into()
    } else {
        slug
    }
}

fn display_hosts(hosts: &[String]) -> String {
    if hosts.is_empty() {
        "(any host)".into()
    } else {
        hosts.join(", ")
    }
}

// ---------------------------------------------------------------------------
// TOML writing
// ---------------------------------------------------------------------------

/// A TOML string.
fn quote(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn write_gap(out: &mut String, gap: &Gap) {
    let _ = writeln!(
        out,
        "# UNSUPPORTED {}: {} ({})",
        gap.at,
        gap.directive.replace('\n', " "),
        gap.reason
    );
}

fn inline_pairs(pairs: &[(String, String)]) -> String {
    let items: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{} = {}", quote(k), quote(v)))
        .collect();
    format!("{{ {} }}", items.join(", "))
}

fn inline_rules(rules: &Rules) -> String {
    let mut parts = Vec::new();
    if !rules.remove.is_empty() {
        let names: Vec<String> = rules.remove.iter().map(|n| quote(n)).collect();
        parts.push(format!("remove = [{}]", names.join(", ")));
    }
    if !rules.set.is_empty() {
        parts.push(format!("set = {}", inline_pairs(&rules.set)));
    }
    if !rules.add.is_empty() {
        parts.push(format!("add = {}", inline_pairs(&rules.add)));
    }
    format!("{{ {} }}", parts.join(", "))
}

fn write_placement(out: &mut String, placement: &PlacementOut) {
    if let Some(at) = &placement.at {
        let _ = writeln!(out, "# reverse_proxy at {at}");
    }
    for comment in &placement.comments {
        let _ = writeln!(out, "# {comment}");
    }
    for gap in &placement.gaps {
        write_gap(out, gap);
    }
    let _ = writeln!(out, "[placements.{}]", placement.name);
    if let Some(balance) = placement.balance {
        let _ = writeln!(out, "balance = {}", quote(balance));
    }
    if let Some(protocol) = placement.protocol {
        let _ = writeln!(out, "protocol = {}", quote(protocol));
    }
    if placement.host_header_endpoint {
        out.push_str(
            "host_header = \"endpoint\"             # header_up Host {upstream_hostport}\n",
        );
    }
    out.push_str("endpoints = [\n");
    for endpoint in &placement.endpoints {
        let mut fields = vec![format!("address = {}", quote(&endpoint.address))];
        if let Some(weight) = endpoint.weight {
            fields.push(format!("weight = {weight}"));
        }
        if endpoint.tls && !endpoint.address.starts_with("https://") {
            fields.push("tls = true".into());
        }
        if let Some(sni) = &endpoint.sni {
            fields.push(format!("sni = {}", quote(sni)));
        }
        if !endpoint.verify {
            fields.push("verify = false".into());
        }
        let _ = writeln!(out, "  {{ {} }},", fields.join(", "));
    }
    out.push_str("]\n");
    for (table, pairs) in [
        ("timeouts", &placement.timeouts),
        ("health", &placement.health),
        ("passive", &placement.passive),
        ("retry", &placement.retry),
    ] {
        if !pairs.is_empty() {
            let items: Vec<String> = pairs.iter().map(|(k, v)| format!("{k} = {v}")).collect();
            let _ = writeln!(out, "{table} = {{ {} }}", items.join(", "));
        }
    }
    out.push('\n');
}

fn write_route(out: &mut String, route: &RouteOut) {
    let _ = writeln!(out, "# site at {}", route.at);
    for comment in &route.comments {
        let _ = writeln!(out, "# {comment}");
    }
    for gap in &route.gaps {
        write_gap(out, gap);
    }
    out.push_str("[[routes]]\n");
    let _ = writeln!(out, "name = {}", quote(&route.name));
    if !route.hosts.is_empty() {
        let hosts: Vec<String> = route.hosts.iter().map(|h| quote(h)).collect();
        let _ = writeln!(out, "hosts = [{}]", hosts.join(", "));
    }
    if route.exact {
        let _ = writeln!(out, "path = {}", quote(&route.prefix));
    } else if route.prefix != "/" {
        let _ = writeln!(out, "path_prefix = {}", quote(&route.prefix));
    }
    if !route.listeners.is_empty() {
        let listeners: Vec<String> = route.listeners.iter().map(|l| quote(l)).collect();
        let _ = writeln!(out, "listeners = [{}]", listeners.join(", "));
    }
    match &route.action {
        Action::Proxy(proxy) => match (&route.header_table, &proxy.key) {
            (Some((header, table)), _) => {
                let entries: Vec<(String, String)> = table.clone();
                let _ = writeln!(
                    out,
                    "routing = {{ key = {{ source = \"header\", name = {} }}, table = {}, default = {} }}",
                    quote(header),
                    inline_pairs(&entries),
                    quote(&proxy.placement)
                );
            }
            (None, Some((source, name))) => {
                let _ = writeln!(
                    out,
                    "# lb_policy {source} {name}: the routing key is hashed onto the endpoints (consistent_hash)\n\
                     routing = {{ key = {{ source = {}, name = {} }}, default = {} }}",
                    quote(source),
                    quote(name),
                    quote(&proxy.placement)
                );
            }
            (None, None) => {
                let _ = writeln!(out, "placement = {}", quote(&proxy.placement));
            }
        },
        Action::Respond(respond) => {
            let mut fields = vec![format!("status = {}", respond.status)];
            if !respond.body.is_empty() {
                fields.push(format!("body = {}", quote(&respond.body)));
            }
            if !respond.headers.is_empty() {
                fields.push(format!("headers = {}", inline_pairs(&respond.headers)));
            }
            let _ = writeln!(out, "respond = {{ {} }}", fields.join(", "));
        }
    }
    out.push_str("explain = false\n");
    if !route.request.native.is_empty() {
        let _ = writeln!(
            out,
            "request_headers = {}",
            inline_rules(&route.request.native)
        );
    }
    if !route.response.native.is_empty() {
        let _ = writeln!(
            out,
            "response_headers = {}",
            inline_rules(&route.response.native)
        );
    }
    if let Some(table) = route.rewrite.as_ref().and_then(rewrite_value) {
        let _ = writeln!(out, "rewrite = {table}");
    }
    match &route.tls {
        Some(RouteTls::Acme) => out.push_str("tls = \"acme\"\n"),
        Some(RouteTls::Files { cert, key }) => {
            let _ = writeln!(
                out,
                "tls = {{ cert = {}, key = {} }}",
                quote(cert),
                quote(key)
            );
        }
        None => {}
    }
    if route.redirect_https {
        out.push_str(
            "redirect_https = true                # Caddy's automatic HTTP→HTTPS redirect\n",
        );
    }
    if let Some(Rewrite::Plugin { to }) = &route.rewrite {
        out.push_str("\n# rewrite changes the query too: the rewrite plugin does that\n[[routes.plugins]]\nname = \"rewrite\"\n");
        let _ = writeln!(
            out,
            "config = {{ rules = [{{ regex = \"^.*$\", to = {} }}] }}",
            quote(to)
        );
    }
    if !route.request.plugin.is_empty() || !route.response.plugin.is_empty() {
        out.push_str("\n# header values with request placeholders: the headers plugin fills them in\n[[routes.plugins]]\nname = \"headers\"\n");
        if !route.request.plugin.is_empty() {
            let _ = writeln!(
                out,
                "config.request = {}",
                inline_rules(&route.request.plugin)
            );
        }
        if !route.response.plugin.is_empty() {
            let _ = writeln!(
                out,
                "config.response = {}",
                inline_rules(&route.response.plugin)
            );
        }
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use sluice::resilience::state::Registry;
    use sluice::snapshot::{RouteTarget, Snapshot};

    fn convert_text(text: &str) -> Conversion {
        let parsed = crate::caddyfile::parse("Caddyfile", text, Path::new(".")).unwrap();
        // One directory per conversion: tests run side by side, and
        // `compiled` removes what it wrote once the snapshot is built.
        static CONVERSIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let certificate_dir = std::env::temp_dir().join(format!(
            "sluice-import-unit-{}-{}",
            std::process::id(),
            CONVERSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        convert(
            &parsed,
            &Options {
                source: "Caddyfile".into(),
                certificate_dir,
            },
        )
    }

    /// The output as TOML, placeholders unresolved.
    fn table(conversion: &Conversion) -> toml::Table {
        conversion
            .toml
            .parse()
            .unwrap_or_else(|e| panic!("not TOML ({e}):\n{}", conversion.toml))
    }

    /// The output as Sluice compiles it, with `env` for its variables.
    fn compiled(conversion: &Conversion, env: &[(&str, &str)]) -> Snapshot {
        for file in &conversion.files {
            std::fs::create_dir_all(file.path.parent().unwrap()).unwrap();
            std::fs::write(&file.path, &file.contents).unwrap();
        }
        let lookup = |name: &str| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        let loaded = sluice::config::parse(&conversion.toml, "imported.toml", &lookup)
            .unwrap_or_else(|e| panic!("{e}\n{}", conversion.toml));
        let snapshot = sluice::snapshot::compile(&loaded, "imported.toml", &Registry::default())
            .unwrap_or_else(|e| panic!("{e}\n{}", conversion.toml));
        for file in &conversion.files {
            let _ = std::fs::remove_dir_all(file.path.parent().unwrap());
        }
        snapshot
    }

    fn routes(table: &toml::Table) -> &Vec<toml::Value> {
        table["routes"].as_array().unwrap()
    }

    fn route<'t>(table: &'t toml::Table, name: &str) -> &'t toml::Value {
        routes(table)
            .iter()
            .find(|r| r["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no route {name}: {table:#?}"))
    }

    fn listeners(table: &toml::Table) -> Vec<(String, bool)> {
        table["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["address"].as_str().unwrap().to_string(),
                    l.get("tls").and_then(|t| t.as_bool()).unwrap_or(false),
                )
            })
            .collect()
    }

    #[test]
    fn the_output_says_where_it_came_from() {
        let conversion = convert_text("http://a.test {\n respond ok\n}\n");
        assert!(conversion.toml.starts_with("# Imported from Caddyfile"));
        compiled(&conversion, &[]);
    }

    #[test]
    fn a_host_name_site_gets_https_acme_and_a_redirect() {
        let conversion = convert_text(
            "{\n email ops@example.com\n acme_ca https://acme-staging-v02.api.letsencrypt.org/directory\n}\nshop.example.com {\n reverse_proxy 10.0.0.5:8080\n}\n",
        );
        let table = table(&conversion);
        assert_eq!(
            listeners(&table),
            [
                ("0.0.0.0:443".to_string(), true),
                ("0.0.0.0:80".to_string(), false)
            ]
        );
        let shop = route(&table, "shop.example.com");
        assert_eq!(shop["tls"].as_str(), Some("acme"));
        assert_eq!(shop["redirect_https"].as_bool(), Some(true));
        assert_eq!(table["acme"]["email"].as_str(), Some("ops@example.com"));
        assert_eq!(
            table["acme"]["directory"].as_str(),
            Some("letsencrypt-staging")
        );
        // Without a DNS provider Caddy proves names over HTTP.
        assert_eq!(table["acme"]["challenge"].as_str(), Some("http-01"));
        // Caddy's admin endpoint default.
        assert_eq!(table["admin"]["address"].as_str(), Some("127.0.0.1:2019"));
        compiled(&conversion, &[]);
    }

    #[test]
    fn cloudflare_dns_reads_the_token_variable() {
        let conversion = convert_text(
            "a.example.com {\n tls {\n  dns cloudflare {env.CF_API_TOKEN}\n }\n reverse_proxy 10.0.0.5:80\n}\n",
        );
        let table = table(&conversion);
        assert_eq!(
            table["acme"]["cloudflare"]["token_env"].as_str(),
            Some("CF_API_TOKEN")
        );
        assert!(
            table["acme"].get("challenge").is_none(),
            "DNS-01 is the default"
        );
        assert!(conversion.gaps.is_empty(), "{:?}", conversion.gaps);
        compiled(&conversion, &[]);

        let literal =
            convert_text("a.example.com {\n tls {\n  dns cloudflare abc123\n }\n respond ok\n}\n");
        assert_eq!(literal.gaps.len(), 1);
        assert_eq!(literal.gaps[0].at.line, 3);
        assert!(literal.gaps[0].reason.contains("environment variable"));
    }

    #[test]
    fn auto_https_off_serves_host_names_over_plain_http() {
        let conversion = convert_text(
            "{\n auto_https off\n admin off\n}\napp.test {\n reverse_proxy 127.0.0.1:9000\n}\n",
        );
        let table = table(&conversion);
        assert_eq!(listeners(&table), [("0.0.0.0:80".to_string(), false)]);
        let app = route(&table, "app.test");
        assert!(app.get("tls").is_none());
        assert!(app.get("redirect_https").is_none());
        assert!(table.get("admin").is_none());
        assert!(table.get("acme").is_none());
    }

    #[test]
    fn addresses_choose_ports_and_schemes() {
        let conversion = convert_text(
            "http://a.test, http://b.test:8081 {\n respond a\n}\n:9090 {\n respond any\n}\nhttps://c.example.com:8443 {\n tls /etc/c.pem /etc/c.key\n respond c\n}\n",
        );
        let table = table(&conversion);
        assert_eq!(
            listeners(&table),
            [
                ("0.0.0.0:80".to_string(), false),
                ("0.0.0.0:8081".to_string(), false),
                ("0.0.0.0:8443".to_string(), true),
                ("0.0.0.0:9090".to_string(), false),
            ]
        );
        let a = route(&table, "a.test");
        assert_eq!(a["hosts"].as_array().unwrap().len(), 2);
        let any = route(&table, "port-9090");
        assert!(any.get("hosts").is_none());
        let c = route(&table, "c.example.com");
        assert_eq!(c["tls"]["cert"].as_str(), Some("/etc/c.pem"));
        assert!(
            c.get("redirect_https").is_none(),
            "no redirect to a non-default port"
        );
    }

    #[test]
    fn one_route_carries_the_sites_certificate() {
        let conversion = convert_text(
            "*.example.com, example.com {\n tls {\n  dns cloudflare {env.CF_API_TOKEN}\n }\n @app host app.example.com\n reverse_proxy @app 10.0.0.1:80\n reverse_proxy /api/* 10.0.0.2:80\n reverse_proxy 10.0.0.3:80\n}\n",
        );
        let table = table(&conversion);
        assert_eq!(route(&table, "*.example.com")["tls"].as_str(), Some("acme"));
        assert!(route(&table, "*.example.com/api/").get("tls").is_none());
        assert!(
            route(&table, "app.example.com").get("tls").is_none(),
            "the wildcard covers it"
        );
        assert_eq!(
            route(&table, "app.example.com")["redirect_https"].as_bool(),
            Some(true)
        );
        let snapshot = compiled(&conversion, &[]);
        assert_eq!(snapshot.acme_certificates.len(), 1);
        assert!(covers_name(&["*.example.com".into()], "app.example.com"));
        assert!(!covers_name(&["*.example.com".into()], "a.b.example.com"));
        assert!(!covers_name(&["*.example.com".into()], "example.com"));
    }

    #[test]
    fn ip_sites_get_a_self_signed_certificate_like_localhost() {
        let conversion = convert_text("[::1]:8443, 127.0.0.1:8443 {\n respond ok\n}\n");
        assert_eq!(conversion.files.len(), 2);
        let table = table(&conversion);
        assert!(table.get("acme").is_none());
        assert_eq!(listeners(&table), [("0.0.0.0:8443".to_string(), true)]);
    }

    #[test]
    fn bind_sets_the_listener_address() {
        let conversion = convert_text(":8080 {\n bind 127.0.0.1\n respond ok\n}\n");
        assert_eq!(
            listeners(&table(&conversion)),
            [("127.0.0.1:8080".to_string(), false)]
        );
    }

    #[test]
    fn tls_internal_generates_a_self_signed_certificate() {
        let conversion = convert_text("dev.localhost {\n tls internal\n respond ok\n}\n");
        assert_eq!(conversion.files.len(), 2);
        assert!(conversion.files[0].contents.contains("BEGIN CERTIFICATE"));
        assert!(conversion.files[1].private);
        let table = table(&conversion);
        let dev = route(&table, "dev.localhost");
        assert!(dev["tls"]["cert"]
            .as_str()
            .unwrap()
            .ends_with("dev-localhost.pem"));
        assert!(conversion.toml.contains("self-signed"));
        let snapshot = compiled(&conversion, &[]);
        assert_eq!(snapshot.routes.len(), 1);
    }

    #[test]
    fn reverse_proxy_upstreams_and_placeholders() {
        let conversion = convert_text(
            ":8080 {\n reverse_proxy {$BACKEND:127.0.0.1:9000} http://127.0.0.1:9001 :9002 {env.OTHER} {\n  to backend.internal\n }\n}\n",
        );
        let table = table(&conversion);
        let placement = &table["placements"]["port-8080"];
        let addresses: Vec<&str> = placement["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["address"].as_str().unwrap())
            .collect();
        assert_eq!(
            addresses,
            [
                "${BACKEND:-127.0.0.1:9000}",
                "http://127.0.0.1:9001",
                "127.0.0.1:9002",
                "${OTHER}",
                "backend.internal:80"
            ]
        );
        let unsupported = convert_text(
            ":8080 {\n reverse_proxy unix//run/app.sock fastcgi://a:80 127.0.0.1:1\n}\n",
        );
        assert_eq!(unsupported.gaps.len(), 2, "{:?}", unsupported.gaps);
    }

    #[test]
    fn h2c_upstreams_make_an_h2c_placement() {
        let conversion =
            convert_text(":8080 {\n reverse_proxy h2c://grpc-a:50051 h2c://grpc-b\n}\n");
        assert!(conversion.gaps.is_empty(), "{:?}", conversion.gaps);
        let converted = table(&conversion);
        let placement = &converted["placements"]["port-8080"];
        assert_eq!(placement["protocol"].as_str(), Some("h2c"));
        let addresses: Vec<_> = placement["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["address"].as_str().unwrap())
            .collect();
        assert_eq!(addresses, ["grpc-a:50051", "grpc-b:80"]);

        let mixed = convert_text(":8080 {\n reverse_proxy h2c://a:50051 127.0.0.1:1\n}\n");
        assert_eq!(mixed.gaps.len(), 1, "{:?}", mixed.gaps);
        assert!(
            mixed.gaps[0].reason.contains("one protocol"),
            "{:?}",
            mixed.gaps
        );

        let versions = convert_text(
            ":8080 {\n reverse_proxy 10.0.0.1:50051 {\n  transport http {\n   versions h2c 2\n  }\n }\n}\n",
        );
        assert!(versions.gaps.is_empty(), "{:?}", versions.gaps);
        assert_eq!(
            table(&versions)["placements"]["port-8080"]["protocol"].as_str(),
            Some("h2c")
        );
    }

    #[test]
    fn header_up_and_header_down() {
        let conversion = convert_text(
            ":8080 {\n reverse_proxy 127.0.0.1:9000 {\n  header_up Host {upstream_hostport}\n  header_up X-Env prod\n  header_up -Cookie\n  header_up +X-Tag sluice\n  header_up X-Forwarded-Proto {scheme}\n  header_down -Server\n  header_down X-Proxy sluice\n }\n}\n",
        );
        assert!(conversion.gaps.is_empty(), "{:?}", conversion.gaps);
        let table = table(&conversion);
        assert_eq!(
            table["placements"]["port-8080"]["host_header"].as_str(),
            Some("endpoint")
        );
        let route = route(&table, "port-8080");
        assert_eq!(
            route["request_headers"]["set"]["X-Env"].as_str(),
            Some("prod")
        );
        assert_eq!(
            route["request_headers"]["add"]["X-Tag"].as_str(),
            Some("sluice")
        );
        assert_eq!(
            route["request_headers"]["remove"][0].as_str(),
            Some("Cookie")
        );
        assert_eq!(
            route["response_headers"]["remove"][0].as_str(),
            Some("Server")
        );
        assert_eq!(
            route["response_headers"]["set"]["X-Proxy"].as_str(),
            Some("sluice")
        );
        assert!(conversion.toml.contains("Sluice sets this header itself"));
        compiled(&conversion, &[]);
    }

    #[test]
    fn placeholder_header_values_use_the_headers_plugin() {
        let conversion = convert_text(":8080 {\n reverse_proxy 127.0.0.1:9000 {\n  header_up X-Real-IP {remote_host}\n }\n}\n");
        let table = table(&conversion);
        assert_eq!(table["plugins"]["directory"].as_str(), Some("plugins"));
        let plugin = &route(&table, "port-8080")["plugins"][0];
        assert_eq!(plugin["name"].as_str(), Some("headers"));
        assert_eq!(
            plugin["config"]["request"]["set"]["X-Real-IP"].as_str(),
            Some("{client_ip}")
        );
        let unknown = convert_text(":8080 {\n header X-Cipher {tls_cipher}\n respond ok\n}\n");
        assert_eq!(unknown.gaps.len(), 1);
        assert!(unknown.gaps[0].reason.contains("tls_cipher"));
    }

    #[test]
    fn lb_policy_and_health_checks() {
        let conversion = convert_text(
            ":8080 {\n reverse_proxy 127.0.0.1:9000 127.0.0.1:9001 {\n  lb_policy weighted_round_robin 3 1\n  lb_retries 2\n  health_uri /healthz\n  health_interval 2s\n  health_timeout 500ms\n  health_status 2xx\n  health_passes 2\n  health_fails 4\n  fail_duration 30s\n }\n}\n",
        );
        assert!(conversion.gaps.is_empty(), "{:?}", conversion.gaps);
        let table = table(&conversion);
        let placement = &table["placements"]["port-8080"];
        assert_eq!(placement["balance"].as_str(), Some("weighted"));
        assert_eq!(placement["endpoints"][0]["weight"].as_integer(), Some(3));
        assert_eq!(placement["health"]["path"].as_str(), Some("/healthz"));
        assert_eq!(placement["health"]["expect"].as_str(), Some("200-299"));
        assert_eq!(placement["health"]["timeout"].as_str(), Some("500ms"));
        assert_eq!(placement["health"]["fall"].as_integer(), Some(4));
        assert_eq!(placement["passive"]["cooldown"].as_str(), Some("30s"));
        assert_eq!(
            placement["passive"]["failures"].as_integer(),
            Some(1),
            "Caddy's max_fails default"
        );
        assert_eq!(placement["retry"]["connect_attempts"].as_integer(), Some(3));
        compiled(&conversion, &[]);

        let hashed = convert_text(
            ":8080 {\n reverse_proxy 127.0.0.1:9000 {\n  lb_policy cookie session\n }\n}\n",
        );
        let table = super::tests::table(&hashed);
        let route = route(&table, "port-8080");
        assert_eq!(route["routing"]["key"]["source"].as_str(), Some("cookie"));
        assert_eq!(
            table["placements"]["port-8080"]["balance"].as_str(),
            Some("consistent_hash")
        );
        compiled(&hashed, &[]);

        let least = convert_text(
            ":8080 {\n reverse_proxy 127.0.0.1:9000 127.0.0.1:9001 {\n  lb_policy least_conn\n }\n}\n",
        );
        assert!(least.gaps.is_empty(), "{:?}", least.gaps);
        assert_eq!(
            super::tests::table(&least)["placements"]["port-8080"]["balance"].as_str(),
            Some("least_request")
        );
        let unsupported =
            convert_text(":8080 {\n reverse_proxy 127.0.0.1:9000 {\n  lb_policy ip_hash\n }\n}\n");
        assert_eq!(unsupported.gaps[0].at.line, 3);
    }

    #[test]
    fn transport_tls_options() {
        let conversion = convert_text(
            ":8080 {\n reverse_proxy 10.0.0.1:443 {\n  transport http {\n   tls_insecure_skip_verify\n   tls_server_name api.internal\n   dial_timeout 2s\n  }\n }\n}\n",
        );
        let table = table(&conversion);
        let endpoint = &table["placements"]["port-8080"]["endpoints"][0];
        assert_eq!(endpoint["tls"].as_bool(), Some(true));
        assert_eq!(endpoint["verify"].as_bool(), Some(false));
        assert_eq!(endpoint["sni"].as_str(), Some("api.internal"));
        assert_eq!(
            table["placements"]["port-8080"]["timeouts"]["connect"].as_str(),
            Some("2s")
        );
    }

    #[test]
    fn rewrites_map_to_native_forms() {
        assert_eq!(
            rewrite_to("/v2{path}").unwrap(),
            Rewrite::Prefix {
                from: "/".into(),
                to: "/v2/".into()
            }
        );
        assert_eq!(
            rewrite_to("/index.html").unwrap(),
            Rewrite::Regex {
                regex: "^.*$".into(),
                to: "/index.html".into()
            }
        );
        assert_eq!(
            rewrite_to("/a{path}.html").unwrap(),
            Rewrite::Regex {
                regex: "^(.*)$".into(),
                to: "/a$1.html".into()
            }
        );
        assert_eq!(
            rewrite_to("/v2{path}?{query}").unwrap(),
            Rewrite::Prefix {
                from: "/".into(),
                to: "/v2/".into()
            }
        );
        assert_eq!(
            rewrite_to("/search?q={path}&{query}").unwrap(),
            Rewrite::Plugin {
                to: "/search?q={path}&{query}".into()
            }
        );
        assert_eq!(
            Rewrite::StripPrefix("/api".into())
                .apply_to_prefix("/api/v1/")
                .as_deref(),
            Some("/v1/")
        );
    }

    #[test]
    fn a_matched_rewrite_gets_its_own_route_and_picks_the_handler_for_the_new_path() {
        let conversion = convert_text(
            ":8080 {\n rewrite /old/* /new{path}\n reverse_proxy /new/* 127.0.0.1:9001\n reverse_proxy 127.0.0.1:9000\n}\n",
        );
        let table = table(&conversion);
        let old = route(&table, "port-8080/old/");
        assert_eq!(
            old["placement"].as_str(),
            Some("port-8080"),
            "/new/old/... goes to the /new/* upstream"
        );
        assert_eq!(old["rewrite"]["to"].as_str(), Some("/new/"));
        assert_eq!(
            route(&table, "port-8080/new/")["placement"].as_str(),
            Some("port-8080")
        );
        assert_eq!(
            route(&table, "port-8080")["placement"].as_str(),
            Some("port-8080-2")
        );
        compiled(&conversion, &[]);
    }

    #[test]
    fn reverse_proxy_rewrite_and_uri_strip_prefix() {
        let conversion = convert_text(
            ":8080 {\n handle /api/* {\n  uri strip_prefix /api\n  reverse_proxy 127.0.0.1:9000\n }\n reverse_proxy /app/* 127.0.0.1:9001 {\n  rewrite /v1{path}\n }\n}\n",
        );
        let table = table(&conversion);
        assert_eq!(
            route(&table, "port-8080/api/")["rewrite"]["strip_prefix"].as_str(),
            Some("/api")
        );
        assert_eq!(
            route(&table, "port-8080/app/")["rewrite"]["to"].as_str(),
            Some("/v1/")
        );
        compiled(&conversion, &[]);
    }

    #[test]
    fn header_directive_forms() {
        let conversion = convert_text(
            ":8080 {\n header X-Frame-Options DENY\n header +Link </a.css>\n header -Server\n header >Cache-Control no-store\n header /static/* {\n  Cache-Control \"max-age=3600\"\n  defer\n }\n reverse_proxy 127.0.0.1:9000\n}\n",
        );
        assert!(conversion.gaps.is_empty(), "{:?}", conversion.gaps);
        let table = table(&conversion);
        let root = route(&table, "port-8080");
        assert_eq!(
            root["response_headers"]["set"]["X-Frame-Options"].as_str(),
            Some("DENY")
        );
        assert_eq!(
            root["response_headers"]["add"]["Link"].as_str(),
            Some("</a.css>")
        );
        assert_eq!(
            root["response_headers"]["remove"][0].as_str(),
            Some("Server")
        );
        assert_eq!(
            root["response_headers"]["set"]["Cache-Control"].as_str(),
            Some("no-store")
        );
        // The /static/ route carries the site's headers and its own; its own comes last.
        let text = &conversion.toml;
        let static_route = text
            .split("[[routes]]")
            .find(|r| r.contains("\"port-8080/static/\""))
            .unwrap();
        assert!(
            static_route.contains("\"Cache-Control\" = \"max-age=3600\""),
            "{static_route}"
        );
        compiled(&conversion, &[]);
        let unsupported =
            convert_text(":8080 {\n header ?X-A b\n header X-B a b\n respond ok\n}\n");
        let lines: Vec<usize> = unsupported.gaps.iter().map(|g| g.at.line).collect();
        assert_eq!(lines, [2, 3]);
    }

    #[test]
    fn respond_and_redir() {
        let conversion = convert_text(
            "http://a.test {\n respond /health \"ok\" 200\n respond /gone 410\n redir /old /new/ permanent\n redir /moved https://b.test{uri}\n respond `{\"up\": true}`\n}\n",
        );
        assert!(conversion.gaps.is_empty(), "{:?}", conversion.gaps);
        let table = table(&conversion);
        let health = route(&table, "a.test/health");
        assert_eq!(health["respond"]["status"].as_integer(), Some(200));
        assert_eq!(health["respond"]["body"].as_str(), Some("ok"));
        assert_eq!(
            route(&table, "a.test/gone")["respond"]["status"].as_integer(),
            Some(410)
        );
        let old = route(&table, "a.test/old");
        assert_eq!(old["respond"]["status"].as_integer(), Some(301));
        assert_eq!(
            old["respond"]["headers"]["Location"].as_str(),
            Some("/new/")
        );
        let moved = route(&table, "a.test/moved");
        assert_eq!(moved["respond"]["status"].as_integer(), Some(302));
        assert_eq!(
            moved["respond"]["headers"]["Location"].as_str(),
            Some("https://b.test{uri}")
        );
        assert_eq!(
            route(&table, "a.test")["respond"]["body"].as_str(),
            Some("{\"up\": true}")
        );
        // Caddy's path matchers without `*` are exact, and so are the routes.
        assert_eq!(health["path"].as_str(), Some("/health"));
        assert!(health.get("path_prefix").is_none());
        let snapshot = compiled(&conversion, &[]);
        assert!(snapshot
            .routes
            .iter()
            .all(|r| matches!(r.target, RouteTarget::Respond(_))));
    }

    #[test]
    fn respond_without_a_matcher_shadows_reverse_proxy_as_in_caddy() {
        // Caddy runs respond before reverse_proxy, so /api/* never reaches the upstream.
        let conversion = convert_text(
            ":8080 {\n reverse_proxy /api/* 127.0.0.1:9000\n respond \"maintenance\" 503\n}\n",
        );
        let table = table(&conversion);
        assert_eq!(routes(&table).len(), 1, "{}", conversion.toml);
        assert_eq!(
            route(&table, "port-8080")["respond"]["status"].as_integer(),
            Some(503)
        );
        assert!(conversion.toml.contains("no route uses this placement"));
        compiled(&conversion, &[]);
    }

    #[test]
    fn header_matchers_on_other_directives_are_gaps() {
        let conversion = convert_text(
            ":8080 {\n @debug header X-Debug 1\n header @debug X-Trace on\n reverse_proxy 127.0.0.1:9000\n}\n",
        );
        assert_eq!(conversion.gaps.len(), 1, "{:?}", conversion.gaps);
        assert_eq!(conversion.gaps[0].at.line, 3);
    }

    #[test]
    fn requests_no_handler_takes_get_caddys_empty_200() {
        let conversion = convert_text(":8080 {\n reverse_proxy /api/* 127.0.0.1:9000\n}\n");
        let table = table(&conversion);
        assert_eq!(
            route(&table, "port-8080")["respond"]["status"].as_integer(),
            Some(200)
        );
        assert!(conversion.toml.contains("empty 200"));
    }

    #[test]
    fn log_turns_the_access_log_on() {
        let logged =
            convert_text(":8080 {\n log {\n  output stdout\n  format json\n }\n respond ok\n}\n");
        assert!(logged.gaps.is_empty(), "{:?}", logged.gaps);
        assert!(
            table(&logged).get("server").is_none(),
            "access_log defaults to true"
        );
        let quiet = convert_text(":8080 {\n respond ok\n}\n");
        assert_eq!(table(&quiet)["server"]["access_log"].as_bool(), Some(false));
        let file =
            convert_text(":8080 {\n log {\n  output file /var/log/caddy.log\n }\n respond ok\n}\n");
        assert_eq!(file.gaps[0].at.line, 3);
    }

    #[test]
    fn named_matchers_become_routes() {
        // @canary is used before it is defined, as Caddy allows.
        let conversion = convert_text(
            "*.example.com {\n @api {\n  host api.example.com\n  path /v1/* /v2/*\n }\n reverse_proxy @api 10.0.0.1:80\n reverse_proxy @canary 10.0.0.3:80\n reverse_proxy 10.0.0.2:80\n @canary header X-Canary 1\n}\n",
        );
        assert!(conversion.gaps.is_empty(), "{:?}", conversion.gaps);
        let table = table(&conversion);
        let v1 = route(&table, "api.example.com/v1/");
        assert_eq!(v1["hosts"][0].as_str(), Some("api.example.com"));
        assert_eq!(v1["placement"].as_str(), Some("example-com"));
        route(&table, "api.example.com/v2/");
        let wildcard = route(&table, "*.example.com");
        assert_eq!(
            wildcard["routing"]["key"]["name"].as_str(),
            Some("X-Canary")
        );
        assert_eq!(
            wildcard["routing"]["table"]["1"].as_str(),
            Some("example-com-2")
        );
        assert_eq!(
            wildcard["routing"]["default"].as_str(),
            Some("example-com-3")
        );

        let unsupported =
            convert_text(":8080 {\n @post method POST\n respond @post 405\n respond ok\n}\n");
        assert_eq!(unsupported.gaps.len(), 1);
        assert_eq!(unsupported.gaps[0].at.line, 3);
        assert!(
            unsupported.gaps[0].reason.contains("method"),
            "{:?}",
            unsupported.gaps
        );
    }

    #[test]
    fn handle_blocks_are_mutually_exclusive() {
        let conversion = convert_text(
            ":8080 {\n handle_path /api/* {\n  reverse_proxy /v1/* 127.0.0.1:9000\n }\n handle {\n  reverse_proxy 127.0.0.1:9001\n }\n}\n",
        );
        let table = table(&conversion);
        let v1 = route(&table, "port-8080/api/v1/");
        assert_eq!(v1["placement"].as_str(), Some("port-8080"));
        assert_eq!(v1["rewrite"]["strip_prefix"].as_str(), Some("/api"));
        // Inside /api/ but not /api/v1/: the /api/ block matched and nothing in it answered.
        assert_eq!(
            route(&table, "port-8080/api/")["respond"]["status"].as_integer(),
            Some(200)
        );
        assert_eq!(
            route(&table, "port-8080")["placement"].as_str(),
            Some("port-8080-2")
        );
        compiled(&conversion, &[]);
    }

    #[test]
    fn unsupported_directives_are_listed_with_lines_and_commented() {
        let conversion = convert_text(
            "(common) {\n encode gzip\n}\n:8080 {\n import common\n file_server\n basicauth {\n  bob hash\n }\n respond ok\n}\n",
        );
        let found: Vec<(usize, &str)> = conversion
            .gaps
            .iter()
            .map(|g| (g.at.line, g.directive.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (2, "encode gzip"),
                (6, "file_server"),
                (7, "basicauth { ... }")
            ]
        );
        assert!(conversion
            .toml
            .contains("# UNSUPPORTED Caddyfile:2: encode gzip"));
        assert!(conversion
            .toml
            .contains("# UNSUPPORTED Caddyfile:6: file_server"));
        compiled(&conversion, &[]);
    }

    #[test]
    fn every_gap_is_commented_in_the_output() {
        let conversion = convert_text(
            "{\n debug\n}\n:8080 {\n @post method POST\n respond @post 405\n reverse_proxy unix//run/a.sock 127.0.0.1:9000 {\n  lb_policy ip_hash\n  header_up ?X-A b\n }\n header ?X-B c\n log {\n  output file /var/log/a.log\n }\n tls internal\n}\n:8081 {\n respond b\n}\n",
        );
        let lines: Vec<usize> = conversion.gaps.iter().map(|g| g.at.line).collect();
        assert_eq!(lines, [2, 6, 7, 8, 9, 11, 13, 15], "{:#?}", conversion.gaps);
        for gap in &conversion.gaps {
            let comment = format!("# UNSUPPORTED {}: {}", gap.at, gap.directive);
            assert!(
                conversion.toml.contains(&comment),
                "{comment} missing:\n{}",
                conversion.toml
            );
        }
    }

    #[test]
    fn unknown_global_options_are_gaps() {
        let conversion = convert_text(
            "{\n servers {\n  protocols h1\n }\n admin off\n}\n:8080 {\n respond ok\n}\n",
        );
        assert_eq!(conversion.gaps.len(), 1);
        assert_eq!(conversion.gaps[0].at.line, 2);
        assert!(conversion
            .toml
            .contains("# UNSUPPORTED Caddyfile:2: servers"));
    }

    #[test]
    fn sites_on_different_ports_answer_each_on_its_own_listener() {
        let conversion = convert_text(":8080 {\n respond a\n}\n:8081 {\n respond b\n}\n");
        assert!(conversion.gaps.is_empty(), "{:?}", conversion.gaps);
        let table = table(&conversion);
        let bound = |name: &str| route(&table, name)["listeners"].clone();
        assert_eq!(bound("port-8080"), toml::Value::from(vec!["0.0.0.0:8080"]));
        assert_eq!(bound("port-8081"), toml::Value::from(vec!["0.0.0.0:8081"]));
        compiled(&conversion, &[]);
    }

    #[test]
    fn a_sites_rewrite_and_a_blocks_own_compose_in_order() {
        let conversion = convert_text(
            "http://a.test {\n uri replace /x/ /y/\n handle /api/* {\n  uri strip_prefix /api\n  reverse_proxy 127.0.0.1:9000\n }\n reverse_proxy 127.0.0.1:9001\n}\n",
        );
        assert!(conversion.gaps.is_empty(), "{:?}", conversion.gaps);
        assert!(
            conversion.toml.contains(
                "rewrite = [{ replace = \"/x/\", to = \"/y/\" }, { strip_prefix = \"/api\" }]"
            ),
            "{}",
            conversion.toml
        );
        let snapshot = compiled(&conversion, &[]);
        let api = snapshot
            .routes
            .iter()
            .find(|r| &*r.name == "a.test/api/")
            .unwrap();
        let rewrite = api.rewrite.as_ref().unwrap();
        assert_eq!(rewrite.apply("/api/x/1").as_deref(), Some("/y/1"));
        // A query-changing rewrite runs in a plugin, ahead of native ones:
        // it cannot follow another.
        let mixed = convert_text(
            "http://a.test {\n uri replace /x/ /y/\n handle /api/* {\n  rewrite * /v2{path}?from=api\n  reverse_proxy 127.0.0.1:9000\n }\n}\n",
        );
        assert_eq!(mixed.gaps.len(), 1, "{:?}", mixed.gaps);
        assert!(mixed.gaps[0].reason.contains("rewrite plugin"));
    }

    #[test]
    fn a_path_a_sites_rewrite_moves_into_a_block_is_routed_to_that_block() {
        let conversion = convert_text(
            "http://a.test {\n uri strip_prefix /legacy\n handle /api/* {\n  uri strip_prefix /api\n  reverse_proxy 127.0.0.1:9000\n }\n reverse_proxy 127.0.0.1:9001\n}\n",
        );
        assert!(conversion.gaps.is_empty(), "{:?}", conversion.gaps);
        let snapshot = compiled(&conversion, &[]);
        let legacy = snapshot
            .routes
            .iter()
            .find(|r| &*r.name == "a.test/legacy/api/")
            .unwrap_or_else(|| panic!("{}", conversion.toml));
        let rewrite = legacy.rewrite.as_ref().unwrap();
        assert_eq!(
            rewrite.apply("/legacy/api/users").as_deref(),
            Some("/users")
        );
    }

    #[test]
    fn uri_directives_apply_in_turn_and_rewrites_the_import_cannot_route_are_reported() {
        let conversion = convert_text(
            "http://a.test {\n uri strip_prefix /app\n uri replace /x/ /y/\n reverse_proxy 127.0.0.1:9000\n}\n",
        );
        assert!(conversion.gaps.is_empty(), "{:?}", conversion.gaps);
        let snapshot = compiled(&conversion, &[]);
        let rewrite = snapshot.routes[0].rewrite.as_ref().unwrap();
        assert_eq!(rewrite.apply("/app/x/1").as_deref(), Some("/y/1"));
        // A regex could move requests into the block's path.
        let regex = convert_text(
            "http://a.test {\n uri path_regexp ^/v1/(.*)$ /api/$1\n handle /api/* {\n  reverse_proxy 127.0.0.1:9000\n }\n reverse_proxy 127.0.0.1:9001\n}\n",
        );
        assert_eq!(regex.gaps.len(), 1, "{:?}", regex.gaps);
        assert_eq!(regex.gaps[0].at.line, 2);
        assert!(regex.gaps[0].reason.contains("/api/"), "{:?}", regex.gaps);
        // A replacement that cannot reach the block's prefix is followed.
        let harmless = convert_text(
            "http://a.test {\n uri replace /old-name/ /new-name/\n handle /api/* {\n  reverse_proxy 127.0.0.1:9000\n }\n}\n",
        );
        assert!(harmless.gaps.is_empty(), "{:?}", harmless.gaps);
        let moving = convert_text(
            "http://a.test {\n uri replace /v1/ /api/\n handle /api/* {\n  reverse_proxy 127.0.0.1:9000\n }\n}\n",
        );
        assert_eq!(moving.gaps.len(), 1, "{:?}", moving.gaps);
    }

    #[test]
    fn path_regexp_captures_reach_the_rewritten_path() {
        let conversion = convert_text(
            "http://a.test {\n uri path_regexp ^/v([0-9]+)/(.*)$ /version/$1/$2\n reverse_proxy 127.0.0.1:9000\n}\n",
        );
        assert!(conversion.gaps.is_empty(), "{:?}", conversion.gaps);
        let snapshot = compiled(&conversion, &[]);
        let rewrite = snapshot.routes[0].rewrite.as_ref().unwrap();
        assert_eq!(
            rewrite.apply("/v2/users/7").as_deref(),
            Some("/version/2/users/7")
        );
    }

    #[test]
    fn route_blocks_run_after_handle_blocks_and_uri_replace_replaces_every_occurrence() {
        let conversion = convert_text(
            "http://a.test {\n handle /api/* {\n  respond \"api\"\n }\n route /old/* {\n  uri replace /old/ /new/\n  reverse_proxy 127.0.0.1:9000\n }\n route /api/x* {\n  respond \"never\"\n }\n}\n",
        );
        assert!(conversion.gaps.is_empty(), "{:?}", conversion.gaps);
        let table = table(&conversion);
        let old = route(&table, "a.test/old/");
        assert_eq!(old["rewrite"]["replace"].as_str(), Some("/old/"));
        assert_eq!(old["rewrite"]["to"].as_str(), Some("/new/"));
        assert!(old.get("placement").is_some());
        // The handle block matches /api/x too, so the route block never runs.
        assert!(table["routes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r.get("respond").and_then(|a| a.get("body")) != Some(&"never".into())));
        compiled(&conversion, &[]);
    }

    #[test]
    fn environment_placeholders_in_addresses() {
        let conversion = convert_text(
            "http://{$DOMAIN:app.test} {\n reverse_proxy {$UPSTREAM:127.0.0.1:9000}\n}\n",
        );
        let table = table(&conversion);
        let route = &routes(&table)[0];
        assert_eq!(route["hosts"][0].as_str(), Some("${DOMAIN:-app.test}"));
        let snapshot = compiled(&conversion, &[("UPSTREAM", "127.0.0.1:9100")]);
        assert_eq!(
            snapshot.placements[0].endpoints[0].address.to_string(),
            "127.0.0.1:9100"
        );
    }
}
