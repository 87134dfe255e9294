//! Start-up of the control side: the runtime it runs on, the first config
//! (or the last known good), the ACME manager for it, and the background
//! tasks that keep the configuration and the certificates current.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::fleet::{self, FleetView};
use super::metrics::ReloadMetrics;
use super::{watch, ConfigSource, Reloader};
use crate::plugins::metrics::PluginMetrics;
use crate::resilience::checker::HealthSupervisor;
use crate::resilience::state::Registry;
use crate::snapshot::Snapshot;
use crate::tls::acme::storage::{EtcdStorage, EtcdStorageSettings, FileStorage};
use crate::tls::acme::{Acme, AcmeStorage, ChallengeKind, Http01Responses};
use crate::tls::store::AcmeCertificates;

/// How long a stopping process gives the DNS-01 records of an ACME order
/// under way: half for a record creation in flight to end, the rest to
/// delete them. Cloudflare answers within a second or two; Pingora ends the
/// process at the latest 5 s after the grace period (at least 1 s), and
/// container runtimes kill it 10 s after SIGTERM.
pub const CHALLENGE_CLEANUP: Duration = Duration::from_secs(5);

/// The control side, started: its runtime, the reloader, and the ACME
/// manager once a config orders certificates. Dropping it stops every
/// background task.
pub struct Control {
    runtime: tokio::runtime::Runtime,
    /// Loads, validates and publishes configurations.
    pub reloader: Arc<Reloader>,
    /// Orders and renews the ACME certificates: set at start when the
    /// first config has `tls = "acme"` routes, or by the first reload that
    /// adds one.
    pub acme: Arc<OnceLock<Acme>>,
    /// The ACME-issued certificates the TLS listeners serve.
    pub acme_certificates: AcmeCertificates,
    /// The HTTP-01 answers ACME publishes, which the plain listeners serve.
    pub http01: Http01Responses,
    /// What creating the ACME manager takes, kept for a reload that adds
    /// the first ACME site.
    preparation: AcmePreparation,
    /// The fleet this instance is a member of, when its config is in etcd.
    pub fleet: Option<Arc<FleetView>>,
}

/// Starts the control runtime and loads the first config from `source`,
/// falling back to the last known good in `state_dir`. The metrics of
/// reloads, plugins and ACME are kept in the handles given and registered
/// with `registry`. With the config in etcd, the instance is the fleet's
/// member `instance_name`.
pub fn start(
    source: ConfigSource,
    state_dir: Option<PathBuf>,
    instance_name: String,
    metrics: ReloadMetrics,
    plugin_metrics: Arc<PluginMetrics>,
    registry: &prometheus::Registry,
) -> anyhow::Result<Control> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sluice-control")
        .enable_all()
        .build()?;
    let health = HealthSupervisor::new(runtime.handle().clone());
    let reloader = runtime.block_on(Reloader::start(
        source,
        state_dir.clone(),
        Arc::new(Registry::default()),
        metrics,
        plugin_metrics,
        health,
    ))?;
    let snapshot = reloader.live().load_full();
    let acme_certificates = AcmeCertificates::default();
    let http01 = Http01Responses::default();
    let acme = Arc::new(OnceLock::new());
    let preparation = AcmePreparation {
        served: acme_certificates.clone(),
        http01: http01.clone(),
        source: reloader.source().clone(),
        state_dir,
        instance_name,
        registry: registry.clone(),
    };
    let prepared = runtime.block_on(preparation.prepare(&snapshot))?;
    if let Some(prepared) = prepared {
        let _ = acme.set(prepared);
    }
    let fleet = matches!(reloader.source(), ConfigSource::Etcd(_)).then(Arc::default);
    Ok(Control {
        runtime,
        reloader,
        acme,
        acme_certificates,
        http01,
        preparation,
        fleet,
    })
}

impl Control {
    /// What the process runs once a graceful shutdown begins: the DNS-01
    /// records of an ACME order under way are deleted, within
    /// [`CHALLENGE_CLEANUP`], and no order creates another. It blocks the
    /// calling thread, which must not be a Tokio worker.
    pub fn before_exit(&self) -> impl FnOnce() + Send + 'static {
        let (runtime, acme) = (self.runtime.handle().clone(), self.acme.clone());
        move || {
            if let Some(acme) = acme.get() {
                runtime.block_on(acme.withdraw_challenges(CHALLENGE_CLEANUP));
            }
        }
    }

    /// Starts the reload triggers (file watch, SIGHUP, remote polling, the
    /// etcd watch, certificate files), the fleet membership of an instance
    /// whose config is in etcd, and ACME's orders and renewals: at once
    /// when the first config has ACME routes, otherwise when a reload first
    /// adds one.
    pub fn spawn_background(&self, poll_interval: Duration) {
        let reloader = self.reloader.clone();
        self.runtime.block_on(async {
            watch::spawn_triggers(reloader.clone(), poll_interval);
            tokio::spawn(watch::reload_on_certificate_change(reloader.clone()));
            if let (ConfigSource::Etcd(source), Some(view)) = (reloader.source(), &self.fleet) {
                tokio::spawn(fleet::run(
                    reloader.clone(),
                    source.clone(),
                    self.preparation.instance_name.clone(),
                    view.clone(),
                ));
            }
        });
        let slot = self.acme.clone();
        let prepare = self.preparation.clone();
        self.runtime.spawn(async move {
            let acme = match slot.get() {
                Some(acme) => acme.clone(),
                None => match prepare.on_first_acme_site(&reloader).await {
                    Some(acme) => slot.get_or_init(|| acme).clone(),
                    None => return,
                },
            };
            // HTTP-01 answers are served by the plain listeners, so orders
            // wait until one accepts connections; DNS-01 orders start at once.
            let snapshot = reloader.live().load_full();
            let plain: Vec<SocketAddr> = match acme_challenge(&snapshot) {
                Some(ChallengeKind::Http01) => snapshot
                    .listeners
                    .iter()
                    .filter(|l| !l.tls)
                    .map(|l| l.address)
                    .collect(),
                _ => Vec::new(),
            };
            wait_until_listening(&plain).await;
            // The tasks live as long as this one, that is, the process.
            let mut tasks = acme.start();
            tasks.spawn(acme.follow(reloader.acme_names()));
            while tasks.join_next().await.is_some() {}
        });
    }
}

/// What creating the ACME manager takes, at start or after.
#[derive(Clone)]
struct AcmePreparation {
    /// Where certificates go to be served.
    served: AcmeCertificates,
    /// Where HTTP-01 answers go to be served.
    http01: Http01Responses,
    /// The config's source: with etcd, ACME keeps its state there too.
    source: ConfigSource,
    /// Where ACME keeps its state otherwise (with etcd, a copy of the
    /// certificates).
    state_dir: Option<PathBuf>,
    /// This instance's name among the fleet's members and lock holders.
    instance_name: String,
    /// Where the ACME metrics are registered.
    registry: prometheus::Registry,
}

impl AcmePreparation {
    /// Waits for the first published config with `tls = "acme"` routes and
    /// creates the ACME manager for it; `None` once no config can come.
    async fn on_first_acme_site(&self, reloader: &Reloader) -> Option<Acme> {
        let mut names = reloader.acme_names();
        loop {
            if !names.borrow_and_update().is_empty() {
                let snapshot = reloader.live().load_full();
                match self.prepare(&snapshot).await {
                    Ok(Some(acme)) => {
                        tracing::info!("a reload added the first ACME site; ACME starts");
                        return Some(acme);
                    }
                    Ok(None) => {}
                    Err(error) => {
                        tracing::error!(%error, "a reload added ACME sites, but ACME cannot start")
                    }
                }
            }
            names.changed().await.ok()?;
        }
    }

    /// Creates the ACME manager for the snapshot's `tls = "acme"` routes,
    /// if any: loads the certificates already stored into `served`,
    /// arranges for newly issued ones to go there too, and registers the
    /// ACME metrics. Nothing is ordered until [`Acme::start`].
    async fn prepare(&self, snapshot: &Snapshot) -> anyhow::Result<Option<Acme>> {
        if snapshot.acme_certificates.is_empty() {
            if snapshot.acme.is_some() {
                tracing::info!("[acme] is set but no route has tls = \"acme\"; nothing is ordered");
            }
            return Ok(None);
        }
        let Some(config) = snapshot.acme.clone() else {
            anyhow::bail!("routes with tls = \"acme\" need an [acme] table");
        };
        let storage = self.storage()?;
        let served = self.served.clone();
        let acme = Acme::new(
            config,
            storage.clone(),
            snapshot.acme_certificates.clone(),
            move |issued| match served.insert(&issued) {
                Ok(()) => {
                    tracing::info!(names = ?issued.names, "serving a newly issued ACME certificate")
                }
                Err(error) => {
                    tracing::error!(names = ?issued.names, %error, "cannot serve the issued ACME certificate")
                }
            },
        )
        .await?;
        for issued in acme.certificates() {
            match self.served.insert(&issued) {
                Ok(()) => {
                    tracing::info!(names = ?issued.names, "serving a stored ACME certificate")
                }
                Err(error) => {
                    tracing::warn!(names = ?issued.names, %error, "cannot serve the stored ACME certificate")
                }
            }
        }
        acme.metrics()
            .register(&self.registry)
            .map_err(|e| anyhow::anyhow!("cannot register the ACME metrics: {e}"))?;
        tracing::info!(
            certificates = snapshot.acme_certificates.len(),
            storage = %storage.describe(),
            "ACME certificates are managed"
        );
        Ok(Some(acme))
    }

    /// Where ACME keeps its state: in etcd beside the config, when the
    /// config is there, else in the state directory.
    fn storage(&self) -> anyhow::Result<Arc<dyn AcmeStorage>> {
        let Some(state_dir) = &self.state_dir else {
            anyhow::bail!(
                "routes with tls = \"acme\" need --state-dir: the ACME account and the certificates are kept there"
            );
        };
        Ok(match &self.source {
            ConfigSource::Etcd(etcd) => Arc::new(EtcdStorage::new(
                EtcdStorageSettings {
                    connection: etcd.connection.clone(),
                    prefix: etcd.prefix.clone(),
                    instance: self.instance_name.clone(),
                    lock_lease: etcd.lock_lease,
                    keys: etcd.private_keys.clone(),
                },
                state_dir,
                self.http01.clone(),
            )),
            _ => Arc::new(FileStorage::new(state_dir, self.http01.clone())),
        })
    }
}

fn acme_challenge(snapshot: &Snapshot) -> Option<ChallengeKind> {
    snapshot.acme.as_ref().map(|config| config.challenge)
}

/// Waits, for at most 10 s, until one of `addresses` accepts a connection
/// (an unspecified address is tried on loopback); returns at once if there
/// are none.
async fn wait_until_listening(addresses: &[SocketAddr]) {
    if addresses.is_empty() {
        return;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        for address in addresses {
            let mut address = *address;
            if address.ip().is_unspecified() {
                address.set_ip(match address {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            if tokio::net::TcpStream::connect(address).await.is_ok() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::warn!("no plain-HTTP listener accepts connections yet; ordering anyway");
}
