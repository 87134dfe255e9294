//! Certificates from an ACME certificate authority (Let's Encrypt, or any
//! RFC 8555 server), obtained, stored and renewed without a restart.
//!
//! [`Acme`] manages a list of certificates, each a list of names (wildcards
//! included). It loads what its [`storage`] already holds, orders what is
//! missing or due, and keeps renewing: a certificate is renewed `renew_before`
//! its expiry (less some jitter), a failed attempt is retried with bounded
//! exponential backoff while the old certificate keeps serving, and every
//! newly issued certificate is handed to the caller's callback. Each order
//! runs under the certificate's lock in the storage, so a fleet sharing one
//! storage orders each certificate once, and serves what any instance stored.
//!
//! Control of a name is proven with DNS-01, through the Cloudflare API
//! ([`cloudflare`]), or with HTTP-01, whose answers the HTTP listener serves
//! from [`Http01Responses`].

mod account;
mod cloudflare;
mod dns;
mod http01;
mod issue;
mod issued;
mod metrics;
mod records;
mod renewal;
pub mod storage;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde::Serialize;

use crate::routing::route_match::HostPattern;

pub use crate::config::ChallengeKind;
pub use http01::{Http01Responses, CHALLENGE_PATH_PREFIX};
pub use issued::Issued;
pub use metrics::AcmeMetrics;
pub use storage::AcmeStorage;

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
    storage: Arc<dyn AcmeStorage>,
    metrics: AcmeMetrics,
    /// Grows when a reload adds names; never shrinks.
    certificates: Mutex<Vec<Arc<Managed>>>,
    on_issued: OnIssued,
}

impl Inner {
    /// The certificates managed so far.
    fn managed(&self) -> Vec<Arc<Managed>> {
        self.certificates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A certificate for `names`, with the one stored for them if it still
    /// covers them (then due when its renewal is), else due now.
    async fn load(&self, names: Vec<String>) -> Managed {
        let current = self
            .storage
            .load_certificate(&names)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(names = ?names, error = %format!("{e:#}"), "ignoring the stored certificate");
                None
            })
            .filter(|issued| issued.covers(&names));
        let next_attempt = match &current {
            Some(issued) => {
                self.metrics.record_expiry(issued);
                renewal::due(issued, self.config.renew_before)
            }
            None => SystemTime::now(),
        };
        Managed {
            names,
            state: Mutex::new(ManagedState {
                current,
                next_attempt,
                last_error: None,
            }),
        }
    }

    /// Serves `issued` as `managed`'s certificate from now on, renewed
    /// when it is due; a certificate served already is not handed over
    /// again (the watch of the storage may deliver this instance's own
    /// before the renewal that stored it does).
    /// Returns when it is next due.
    fn serve(&self, managed: &Managed, issued: Issued) -> SystemTime {
        let next_attempt = renewal::due(&issued, self.config.renew_before);
        {
            let mut state = managed.lock();
            state.next_attempt = next_attempt;
            state.last_error = None;
            let served = state
                .current
                .as_ref()
                .is_some_and(|current| current.serial == issued.serial);
            if served {
                return next_attempt;
            }
            state.current = Some(issued.clone());
        }
        self.metrics.record_expiry(&issued);
        (self.on_issued)(issued);
        next_attempt
    }

    /// Serves a certificate another instance stored, if it is one this
    /// instance manages and newer than the one it serves.
    fn adopt(&self, stored: Issued) {
        let Some(managed) = self
            .managed()
            .into_iter()
            .find(|managed| stored.covers(&managed.names))
        else {
            return;
        };
        let newer = managed.lock().current.as_ref().is_none_or(|current| {
            current.serial != stored.serial && stored.not_after >= current.not_after
        });
        if newer {
            tracing::info!(names = ?managed.names, serial = %stored.serial, "serving the certificate another instance stored");
            self.serve(&managed, stored);
        }
    }
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
    /// Prepares to manage `certificates`, each a list of names, keeping the
    /// account and the certificates in `storage`. Certificates already
    /// stored there for the same names are loaded (see [`Acme::certificates`])
    /// and are not ordered again until they are due. Nothing is ordered
    /// until [`Acme::start`].
    pub async fn new(
        config: AcmeConfig,
        storage: Arc<dyn AcmeStorage>,
        certificates: Vec<Vec<String>>,
        on_issued: impl Fn(Issued) + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        for names in &certificates {
            validate_names(names)?;
        }
        let issuer = issue::Issuer::new(&config, storage.clone())?;
        let inner = Inner {
            config,
            issuer,
            storage,
            metrics: AcmeMetrics::new(),
            certificates: Mutex::new(Vec::new()),
            on_issued: Box::new(on_issued),
        };
        let mut loaded = Vec::new();
        for names in certificates {
            loaded.push(Arc::new(inner.load(names).await));
        }
        *inner.certificates.lock().unwrap_or_else(|e| e.into_inner()) = loaded;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Starts ordering and renewing, one task per certificate on the current
    /// Tokio runtime, and following the certificates other instances store.
    /// Dropping the returned set stops them.
    pub fn start(&self) -> tokio::task::JoinSet<()> {
        let mut tasks = tokio::task::JoinSet::new();
        for managed in self.inner.managed() {
            tasks.spawn(renewal::run(self.inner.clone(), managed));
        }
        let inner = self.inner.clone();
        tasks.spawn(async move {
            let adopting = inner.clone();
            inner
                .storage
                .follow(Box::new(move |stored| adopting.adopt(stored)))
                .await;
        });
        tasks
    }

    /// Deletes the DNS-01 records of the orders under way and lets no
    /// order create another, waiting at most `within` for the creations
    /// and deletions under way to end: what the process does when it
    /// begins to stop, so that an order it stops leaves nothing in the
    /// operator's zone.
    pub async fn withdraw_challenges(&self, within: Duration) {
        self.inner.issuer.records.withdraw_all(within).await;
    }

    /// Manages `names` too, unless a certificate for the same names (in any
    /// order and any case) is managed already; returns whether they were
    /// new. A stored certificate that covers them goes to the `on_issued`
    /// callback at once; either way they are ordered when due and renewed
    /// like the others, by a task on the current Tokio runtime.
    pub async fn add(&self, names: Vec<String>) -> anyhow::Result<bool> {
        // DNS names are case-insensitive: `Shop.example.com` is the name the
        // config lowercases to `shop.example.com`, one certificate.
        let names: Vec<String> = names.iter().map(|name| name.to_ascii_lowercase()).collect();
        validate_names(&names)?;
        let sorted = |names: &[String]| {
            let mut names = names.to_vec();
            names.sort();
            names
        };
        let wanted = sorted(&names);
        let is_managed =
            |certificates: &[Arc<Managed>]| certificates.iter().any(|m| sorted(&m.names) == wanted);
        if is_managed(&self.inner.managed()) {
            return Ok(false);
        }
        let managed = Arc::new(self.inner.load(names).await);
        {
            let mut certificates = self
                .inner
                .certificates
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            // Checked again: another caller may have added the same names
            // while this one loaded them.
            if is_managed(&certificates) {
                return Ok(false);
            }
            certificates.push(managed.clone());
        }
        let stored = managed.lock().current.clone();
        if let Some(issued) = stored {
            (self.inner.on_issued)(issued);
        }
        tokio::spawn(renewal::run(self.inner.clone(), managed));
        Ok(true)
    }

    /// Keeps the managed certificates up with the configs published on
    /// `names`, each a list of certificates by their names: after each
    /// reload, the certificates of routes with `tls = "acme"` that were added
    /// are loaded or ordered (see [`Acme::add`]). Certificates of removed
    /// routes keep being renewed until a restart. Runs until dropped, or
    /// until the sender is gone.
    pub async fn follow(self, mut names: tokio::sync::watch::Receiver<Vec<Vec<String>>>) {
        loop {
            let lists = names.borrow_and_update().clone();
            for names in lists {
                match self.add(names.clone()).await {
                    Ok(true) => {
                        tracing::info!(names = ?names, "a reload added these ACME names; managing their certificate")
                    }
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(names = ?names, error = %format!("{error:#}"), "cannot manage the certificate of these ACME names")
                    }
                }
            }
            if names.changed().await.is_err() {
                return;
            }
        }
    }

    /// The current certificate of every managed certificate that has one:
    /// loaded from the state directory or issued since.
    pub fn certificates(&self) -> Vec<Issued> {
        self.inner
            .managed()
            .iter()
            .filter_map(|managed| managed.lock().current.clone())
            .collect()
    }

    /// The ACME metrics; register them with [`AcmeMetrics::register`].
    pub fn metrics(&self) -> &AcmeMetrics {
        &self.inner.metrics
    }

    /// Every managed certificate, for the admin API.
    pub fn status(&self) -> Vec<CertificateStatus> {
        let rfc3339 = |time: SystemTime| humantime::format_rfc3339_seconds(time).to_string();
        self.inner
            .managed()
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

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[tokio::test]
    async fn names_added_later_are_managed_once_and_a_stored_certificate_is_served_at_once() {
        let dir = std::env::temp_dir().join(format!("sluice-acme-add-{}", std::process::id()));
        let generated = rcgen::generate_simple_self_signed(names(&["b.example.org"])).unwrap();
        let stored =
            Issued::from_pem(generated.cert.pem(), generated.signing_key.serialize_pem()).unwrap();
        let storage = storage::FileStorage::new(&dir, Http01Responses::default());
        storage.save(&names(&["b.example.org"]), &stored).unwrap();
        // Nothing is ever ordered here: the CA is unreachable and the
        // stored certificate is far from due.
        let config = AcmeConfig {
            email: None,
            directory: "https://127.0.0.1:1/directory".to_string(),
            challenge: ChallengeKind::Http01,
            renew_before: Duration::from_secs(30 * 86_400),
            ca_root: None,
            cloudflare: CloudflareConfig {
                token_env: "SLUICE_UNIT_UNUSED".to_string(),
                api_base: "https://127.0.0.1:1".to_string(),
                resolver: "127.0.0.1:1".parse().unwrap(),
                propagation_timeout: Duration::from_secs(1),
            },
            retry: RetryBackoff::default(),
        };
        let served = Arc::new(Mutex::new(Vec::new()));
        let sink = served.clone();
        let acme = Acme::new(
            config,
            Arc::new(storage),
            vec![names(&["a.example.org", "www.example.org"])],
            move |issued| sink.lock().unwrap().push(issued.names),
        )
        .await
        .unwrap();

        assert!(!acme
            .add(names(&["www.example.org", "a.example.org"]))
            .await
            .unwrap());
        assert!(acme.add(names(&["b.example.org"])).await.unwrap());
        assert_eq!(*served.lock().unwrap(), [names(&["b.example.org"])]);
        assert!(!acme.add(names(&["b.example.org"])).await.unwrap());
        assert!(!acme.add(names(&["B.Example.ORG"])).await.unwrap());
        assert!(acme.add(names(&["localhost"])).await.is_err());
        let listed: Vec<_> = acme.status().into_iter().map(|s| s.names).collect();
        assert_eq!(
            listed,
            [
                names(&["a.example.org", "www.example.org"]),
                names(&["b.example.org"])
            ]
        );
        assert_eq!(acme.certificates(), [stored]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

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
