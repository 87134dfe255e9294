//! Certificates from an ACME certificate authority (Let's Encrypt, or any
//! RFC 8555 server), obtained, stored and renewed without a restart.
//!
//! [`Acme`] manages a list of certificates, each a list of names (wildcards
//! included). It loads what the state directory already holds, orders what is
//! missing or due, and keeps renewing: a certificate is renewed `renew_before`
//! its expiry (less some jitter), a failed attempt is retried with bounded
//! exponential backoff while the old certificate keeps serving, and every
//! newly issued certificate is handed to the caller's callback.
//!
//! Control of a name is proven with DNS-01, through the Cloudflare API
//! ([`cloudflare`]), or with HTTP-01, whose answers the HTTP listener serves
//! from [`Http01Responses`].
//!
//! State directory layout:
//! - `acme/accounts/<ca>.json`: the account credentials for one CA (0600);
//! - `certificates/<first-name>/fullchain.pem` and `key.pem` (0600), with
//!   `*` written as `_` in the folder name.

mod account;
mod cloudflare;
mod dns;
mod http01;
mod issue;
mod metrics;
mod renewal;
mod storage;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde::Serialize;

use crate::routing::route_match::HostPattern;

pub use crate::config::ChallengeKind;
pub use http01::{Http01Responses, CHALLENGE_PATH_PREFIX};
pub use metrics::AcmeMetrics;
pub use storage::Issued;

/// Let's Encrypt's production directory.
pub const LETSENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (untrusted certificates, high limits).
pub const LETSENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// The compiled `[acme]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AcmeConfig {
    /// The contact address registered with the account.
    pub email: Option<String>,
    /// The CA's directory URL.
    pub directory: String,
    /// How control of each name is proven.
    pub challenge: ChallengeKind,
    /// How long before expiry a certificate is renewed. It is capped at half
    /// the certificate's lifetime, so short-lived certificates are not
    /// renewed in a loop.
    pub renew_before: Duration,
    /// Extra roots (PEM) trusted for the CA's own HTTPS.
    pub ca_root: Option<PathBuf>,
    /// The DNS-01 provider.
    pub cloudflare: CloudflareConfig,
    /// How failed attempts are retried.
    pub retry: RetryBackoff,
}

/// The Cloudflare account used for DNS-01.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudflareConfig {
    /// The environment variable that holds the API token.
    pub token_env: String,
    /// The API's base URL, without a trailing slash (the config accepts
    /// only https://, since the token travels with every request).
    pub api_base: String,
    /// The resolver asked whether a new record is visible.
    pub resolver: SocketAddr,
    /// How long a new record may take to become visible there.
    pub propagation_timeout: Duration,
}

/// The delays between failed attempts: `initial`, doubled after each
/// further failure, never more than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBackoff {
    /// The delay after the first failure.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Default for RetryBackoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(5 * 60),
            max: Duration::from_secs(6 * 60 * 60),
        }
    }
}

/// One managed certificate, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CertificateStatus {
    /// The names the certificate is ordered for.
    pub names: Vec<String>,
    /// The current certificate's issuer, if there is a certificate.
    pub issuer: Option<String>,
    /// When the current certificate expires (RFC 3339).
    pub not_after: Option<String>,
    /// When the next order is due (RFC 3339).
    pub next_attempt: Option<String>,
    /// Why the last attempt failed, until one succeeds.
    pub last_error: Option<String>,
}

/// The callback that receives each newly issued certificate.
pub type OnIssued = Box<dyn Fn(Issued) + Send + Sync>;

/// Obtains and renews a set of certificates. Cheap to clone.
#[derive(Clone)]
pub struct Acme {
    inner: Arc<Inner>,
}

struct Inner {
    config: AcmeConfig,
    issuer: issue::Issuer,
    store: storage::Store,
    metrics: AcmeMetrics,
    certificates: Vec<Managed>,
    on_issued: OnIssued,
}

struct Managed {
    names: Vec<String>,
    state: Mutex<ManagedState>,
}

struct ManagedState {
    current: Option<Issued>,
    next_attempt: SystemTime,
    last_error: Option<String>,
}

impl Acme {
    /// Prepares to manage `certificates`, each a list of names whose first
    /// names its folder, keeping state under `state_dir`. Certificates already
    /// stored there for the same names are loaded (see [`Acme::certificates`])
    /// and are not ordered again until they are due. Nothing is ordered until
    /// [`Acme::start`].
    pub fn new(
        config: AcmeConfig,
        state_dir: &Path,
        certificates: Vec<Vec<String>>,
        on_issued: impl Fn(Issued) + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        for names in &certificates {
            validate_names(names)?;
        }
        let store = storage::Store::new(state_dir);
        let metrics = AcmeMetrics::new();
        let now = SystemTime::now();
        let certificates = certificates
            .into_iter()
            .map(|names| {
                let current = store
                    .load(&names)
                    .unwrap_or_else(|e| {
                        tracing::warn!(names = ?names, error = %format!("{e:#}"), "ignoring the stored certificate");
                        None
                    })
                    .filter(|issued| issued.covers(&names));
                let next_attempt = match &current {
                    Some(issued) => {
                        metrics.record_expiry(issued);
                        renewal::due(issued, config.renew_before)
                    }
                    None => now,
                };
                Managed {
                    names,
                    state: Mutex::new(ManagedState {
                        current,
                        next_attempt,
                        last_error: None,
                    }),
                }
            })
            .collect();
        let issuer = issue::Issuer::new(&config, state_dir)?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                issuer,
                store,
                metrics,
                certificates,
                on_issued: Box::new(on_issued),
            }),
        })
    }

    /// Starts ordering and renewing, one task per certificate on the current
    /// Tokio runtime. Dropping the returned set stops them.
    pub fn start(&self) -> tokio::task::JoinSet<()> {
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..self.inner.certificates.len() {
            tasks.spawn(renewal::run(self.inner.clone(), index));
        }
        tasks
    }

    /// The current certificate of every managed certificate that has one:
    /// loaded from the state directory or issued since.
    pub fn certificates(&self) -> Vec<Issued> {
        self.inner
            .certificates
            .iter()
            .filter_map(|managed| managed.lock().current.clone())
            .collect()
    }

    /// The pending HTTP-01 answers, for the HTTP listener to serve.
    pub fn http01(&self) -> Http01Responses {
        self.inner.issuer.http01()
    }

    /// The ACME metrics; register them with [`AcmeMetrics::register`].
    pub fn metrics(&self) -> &AcmeMetrics {
        &self.inner.metrics
    }

    /// Every managed certificate, for the admin API.
    pub fn status(&self) -> Vec<CertificateStatus> {
        let rfc3339 = |time: SystemTime| humantime::format_rfc3339_seconds(time).to_string();
        self.inner
            .certificates
            .iter()
            .map(|managed| {
                let state = managed.lock();
                CertificateStatus {
                    names: managed.names.clone(),
                    issuer: state.current.as_ref().map(|c| c.issuer.clone()),
                    not_after: state.current.as_ref().map(|c| rfc3339(c.not_after)),
                    next_attempt: Some(rfc3339(state.next_attempt)),
                    last_error: state.last_error.clone(),
                }
            })
            .collect()
    }
}

impl Managed {
    fn lock(&self) -> std::sync::MutexGuard<'_, ManagedState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Checks that `names` is a non-empty list of host names with a domain,
/// each optionally starting with `*.`, as routes write them.
pub(crate) fn validate_names(names: &[String]) -> anyhow::Result<()> {
    anyhow::ensure!(!names.is_empty(), "a certificate needs at least one name");
    for name in names {
        match HostPattern::parse(name).map_err(anyhow::Error::msg)? {
            HostPattern::Exact(host) | HostPattern::Wildcard(host) if host.contains('.') => {}
            _ => anyhow::bail!(
                "{name:?} cannot be in a certificate; use a name such as \"example.com\" or \"*.example.com\""
            ),
        }
    }
    Ok(())
}

/// Reads a PEM bundle of roots, for [`AcmeConfig::ca_root`].
pub(crate) fn read_roots(path: &Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let roots = reqwest::Certificate::from_pem_bundle(&pem)
        .with_context(|| format!("{} is not a PEM certificate bundle", path.display()))?;
    anyhow::ensure!(
        !roots.is_empty(),
        "{} holds no PEM certificate",
        path.display()
    );
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        let ok = |names: &[&str]| {
            validate_names(&names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).is_ok()
        };
        assert!(ok(&["example.com", "*.example.com", "a-b.example.com"]));
        assert!(!ok(&[]));
        assert!(!ok(&["localhost"]));
        assert!(!ok(&["*.*.example.com"]));
        assert!(!ok(&["bad host.example.com"]));
        assert!(!ok(&["*"]));
        assert!(!ok(&["example..com"]));
    }
}
