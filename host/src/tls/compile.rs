//! Compiles the TLS settings of a config: certificate files into the
//! certificate table, the `[acme]` table, the names each `tls = "acme"`
//! route needs a certificate for, and listeners' minimum TLS versions.

use std::net::SocketAddr;

use super::acme::{self, AcmeConfig, CloudflareConfig, RetryBackoff};
use super::certificates::{Certificate, CertificateTable};
use super::termination::MinTlsVersion;
use crate::config::{self, Config, Diagnostics, KeyPath};

/// The names of each certificate to order through `[acme]`: the hosts
/// of each route with `tls = "acme"`, each list once.
pub fn acme_certificates(d: &mut Diagnostics, config: &Config) -> Vec<Vec<String>> {
    let mut requests: Vec<Vec<String>> = Vec::new();
    for (i, route) in config.routes.iter().enumerate() {
        let Some(config::RouteTls::Acme(_)) = &route.tls else {
            continue;
        };
        let path = KeyPath::root().key("routes").index(i).key("tls");
        if route.hosts.is_empty() {
            d.error(
                path,
                "an ACME certificate is ordered for the route's hosts; set hosts = [\"example.com\"]",
            );
            continue;
        }
        if config.acme.is_none() {
            d.error(
                path,
                "tls = \"acme\" needs an [acme] table (the CA, the challenge and the Cloudflare token)",
            );
            continue;
        }
        if let Err(e) = acme::validate_names(&route.hosts) {
            d.error(path, format!("{e:#}"));
            continue;
        }
        let http01 = config
            .acme
            .as_ref()
            .is_some_and(|acme| acme.challenge == config::ChallengeKind::Http01);
        if let Some(wildcard) = route.hosts.iter().find(|h| h.starts_with("*.")) {
            if http01 {
                d.error(
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

/// The `[acme]` table: the CA, the account, the challenge and its provider, renewal timing.
pub fn acme(d: &mut Diagnostics, settings: &config::AcmeSettings) -> AcmeConfig {
    let path = KeyPath::root().key("acme");
    if let Some(email) = &settings.email {
        let valid = email
            .split_once('@')
            .is_some_and(|(user, domain)| !user.is_empty() && domain.contains('.'))
            && !email.contains(char::is_whitespace);
        if !valid {
            d.error(
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
                d.error(
                    path.key("directory"),
                    format!("{url:?} is not an https:// URL, \"letsencrypt\" or \"letsencrypt-staging\""),
                );
            }
            url.to_string()
        }
    };
    let renew_before = d.duration(path.key("renew_before"), &settings.renew_before);
    let ca_root = settings.ca_root.as_ref().map(|file| {
        let file = std::path::PathBuf::from(file);
        if let Err(e) = acme::read_roots(&file) {
            d.error(path.key("ca_root"), format!("{e:#}"));
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
        d.error(
            cf_path.key("token_env"),
            format!("{token_env:?} is not an environment variable name"),
        );
    }
    let api_base = cloudflare.api_base.trim_end_matches('/').to_string();
    // The token travels in every request, so never in clear text.
    if !api_base.starts_with("https://") || reqwest::Url::parse(&api_base).is_err() {
        d.error(
            cf_path.key("api_base"),
            format!("{:?} is not an https:// URL", cloudflare.api_base),
        );
    }
    let resolver = match cloudflare.resolver.parse::<SocketAddr>() {
        Ok(address) => address,
        Err(_) => match cloudflare.resolver.parse::<std::net::IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, 53),
            Err(_) => {
                d.error(
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
            propagation_timeout: d.duration(
                cf_path.key("propagation_timeout"),
                &cloudflare.propagation_timeout,
            ),
        },
        retry: RetryBackoff::default(),
    }
}

/// Loads each route's certificate for its hosts, and the default one.
pub fn certificates(
    d: &mut Diagnostics,
    config: &Config,
) -> (CertificateTable, Vec<std::path::PathBuf>) {
    let mut table = CertificateTable::default();
    let mut files = Vec::new();
    let mut load = |d: &mut Diagnostics, path: KeyPath, tls: &config::CertificateFiles, names| {
        let (cert, key) = (
            std::path::PathBuf::from(&tls.cert),
            std::path::PathBuf::from(&tls.key),
        );
        files.extend([cert.clone(), key.clone()]);
        match Certificate::load(&cert, &key, names) {
            Ok(certificate) => Some(certificate),
            Err(message) => {
                d.error(path.key("cert"), message);
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
            d.error(
                path,
                "a certificate is served for the route's hosts; set hosts = [\"example.com\"]",
            );
            continue;
        }
        if let Some(certificate) = load(d, path, tls, route.hosts.clone()) {
            table.insert(certificate);
        }
    }
    if let Some(tls) = &config.default_certificate {
        let path = KeyPath::root().key("default_certificate");
        if let Some(certificate) = load(d, path, tls, Vec::new()) {
            table.set_default(certificate);
        }
    }
    (table, files)
}

/// The `min_tls_version` of listener `index`: the default when unset.
pub fn min_tls_version(
    d: &mut Diagnostics,
    index: usize,
    listener: &config::Listener,
) -> MinTlsVersion {
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
        d.error(
            path.clone(),
            "applies to TLS listeners only; set tls = true or remove it",
        );
    }
    MinTlsVersion::parse(text).unwrap_or_else(|| {
        d.error(
            path,
            format!("{text:?} is not a TLS version Sluice accepts: use \"1.2\" or \"1.3\""),
        );
        MinTlsVersion::default()
    })
}
