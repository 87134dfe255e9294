//! `[acme]`: where certificates come from and how their challenges are met.
//!
//! Values are kept as written; [`crate::snapshot::compile()`] checks them and
//! compiles them into a [`crate::tls::acme::AcmeConfig`].

use serde::Deserialize;

/// `[acme]`: the certificate authority, the challenge and the renewal window.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeSettings {
    /// The contact address given to the certificate authority.
    pub email: Option<String>,
    /// The CA's directory URL, or `letsencrypt` / `letsencrypt-staging`.
    #[serde(default = "default_directory")]
    pub directory: String,
    /// How control of each name is proven.
    #[serde(default)]
    pub challenge: ChallengeKind,
    /// How long before expiry a certificate is renewed, e.g. `"30d"`.
    #[serde(default = "default_renew_before")]
    pub renew_before: String,
    /// A PEM file of extra roots trusted for the CA's own HTTPS (a test CA).
    pub ca_root: Option<String>,
    /// The Cloudflare account that answers DNS-01 challenges.
    #[serde(default)]
    pub cloudflare: CloudflareSettings,
}

/// The ACME challenge used to prove control of a name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum ChallengeKind {
    /// A TXT record at `_acme-challenge.<name>`, created through Cloudflare.
    /// The only kind that can prove a wildcard name.
    #[default]
    #[serde(rename = "dns-01")]
    Dns01,
    /// A file served at `http://<name>/.well-known/acme-challenge/<token>`.
    #[serde(rename = "http-01")]
    Http01,
}

/// `[acme.cloudflare]`: the DNS API used for DNS-01.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudflareSettings {
    /// The environment variable holding the API token.
    #[serde(default = "default_token_env")]
    pub token_env: String,
    /// The API's base URL.
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// The DNS resolver (`ip:port`) asked whether a record is visible yet.
    #[serde(default = "default_resolver")]
    pub resolver: String,
    /// How long a new record may take to become visible on `resolver`.
    #[serde(default = "default_propagation_timeout")]
    pub propagation_timeout: String,
}

impl Default for CloudflareSettings {
    fn default() -> Self {
        Self {
            token_env: default_token_env(),
            api_base: default_api_base(),
            resolver: default_resolver(),
            propagation_timeout: default_propagation_timeout(),
        }
    }
}

fn default_directory() -> String {
    "letsencrypt".to_string()
}

fn default_renew_before() -> String {
    "30d".to_string()
}

fn default_token_env() -> String {
    "CLOUDFLARE_API_TOKEN".to_string()
}

fn default_api_base() -> String {
    "https://api.cloudflare.com/client/v4".to_string()
}

fn default_resolver() -> String {
    "1.1.1.1:53".to_string()
}

fn default_propagation_timeout() -> String {
    "120s".to_string()
}
