//! Start-up of the control side: the runtime it runs on, the first config
//! (or the last known good), the ACME manager for it, and the background
//! tasks that keep the configuration and the certificates current.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::fleet::{self, FleetView};
use super::metrics::ReloadMetrics;
use super::{watch, ConfigSource, Reloader};
use crate::plugins::metrics::PluginMetrics;
use crate::resilience::checker::HealthSupervisor;
use crate::resilience::state::Registry;
use crate::snapshot::Snapshot;
use crate::tls::acme::{Acme, ChallengeKind};
use crate::tls::store::AcmeCertificates;

/// The control side, started: its runtime, the reloader, and the ACME
/// manager when the first config orders certificates. Dropping it stops
/// every background task.
pub struct Control {
    runtime: tokio::runtime::Runtime,
    /// Loads, validates and publishes configurations.
    pub reloader: Arc<Reloader>,
    /// Orders and renews the ACME certificates, if any are configured.
    pub acme: Option<Acme>,
    /// The ACME-issued certificates the TLS listeners serve.
    pub acme_certificates: AcmeCertificates,
    /// The plain listeners ACME orders wait for, from the config ACME was
    /// prepared on: HTTP-01 answers are served there.
    acme_waits_for: Vec<SocketAddr>,
    /// The fleet this instance is a member of, when its config is in etcd.
    pub fleet: Option<Arc<FleetView>>,
}

/// Starts the control runtime and loads the first config from `source`,
/// falling back to the last known good in `state_dir`. The metrics of
/// reloads, plugins and ACME are kept in the handles given and registered
/// with `registry`.
pub fn start(
    source: ConfigSource,
    state_dir: Option<PathBuf>,
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
    // ACME runs if the snapshot the process starts on has routes with
    // tls = "acme"; reloads that add such routes are then followed.
    let acme_certificates = AcmeCertificates::default();
    let acme = prepare_acme(
        &snapshot,
        state_dir.as_deref(),
        &acme_certificates,
        registry,
    )?;
    // HTTP-01 answers are served by the plain listeners, so orders wait
    // until one accepts connections; DNS-01 orders start at once.
    let acme_waits_for = match acme_challenge(&snapshot) {
        Some(ChallengeKind::Http01) => snapshot
            .listeners
            .iter()
            .filter(|l| !l.tls)
            .map(|l| l.address)
            .collect(),
        _ => Vec::new(),
    };
    let fleet = matches!(reloader.source(), ConfigSource::Etcd(_)).then(Arc::default);
    Ok(Control {
        runtime,
        reloader,
        acme,
        acme_certificates,
        acme_waits_for,
        fleet,
    })
}

impl Control {
    /// Starts the reload triggers (file watch, SIGHUP, remote polling, the
    /// etcd watch, certificate files), the fleet membership of an instance
    /// whose config is in etcd (as `instance_name`), and, with ACME, its
    /// orders and renewals.
    pub fn spawn_background(&self, poll_interval: Duration, instance_name: String) {
        let reloader = self.reloader.clone();
        self.runtime.block_on(async {
            watch::spawn_triggers(reloader.clone(), poll_interval);
            tokio::spawn(watch::reload_on_certificate_change(reloader.clone()));
            if let (ConfigSource::Etcd(source), Some(view)) = (reloader.source(), &self.fleet) {
                tokio::spawn(fleet::run(
                    reloader.clone(),
                    source.clone(),
                    instance_name,
                    view.clone(),
                ));
            }
        });
        let Some(acme) = self.acme.clone() else {
            return;
        };
        let plain = self.acme_waits_for.clone();
        let names = self.reloader.acme_names();
        self.runtime.spawn(async move {
            wait_until_listening(&plain).await;
            // The tasks live as long as this one, that is, the process.
            let mut tasks = acme.start();
            tasks.spawn(acme.follow(names));
            while tasks.join_next().await.is_some() {}
        });
    }
}

fn acme_challenge(snapshot: &Snapshot) -> Option<ChallengeKind> {
    snapshot.acme.as_ref().map(|config| config.challenge)
}

/// Creates the ACME manager for the snapshot's `tls = "acme"` routes, if
/// any: loads the certificates already stored in `state_dir` into `served`,
/// arranges for newly issued ones to go there too, and registers the ACME
/// metrics. Nothing is ordered until [`Acme::start`].
fn prepare_acme(
    snapshot: &Snapshot,
    state_dir: Option<&Path>,
    served: &AcmeCertificates,
    registry: &prometheus::Registry,
) -> anyhow::Result<Option<Acme>> {
    if snapshot.acme_certificates.is_empty() {
        if snapshot.acme.is_some() {
            tracing::info!("[acme] is set but no route has tls = \"acme\"; nothing is ordered");
        }
        return Ok(None);
    }
    let Some(config) = snapshot.acme.clone() else {
        anyhow::bail!("routes with tls = \"acme\" need an [acme] table");
    };
    let Some(state_dir) = state_dir else {
        anyhow::bail!(
            "routes with tls = \"acme\" need --state-dir: the ACME account and the certificates are kept there"
        );
    };
    let store = served.clone();
    let acme = Acme::new(
        config,
        state_dir,
        snapshot.acme_certificates.clone(),
        move |issued| match store.insert(&issued) {
            Ok(()) => {
                tracing::info!(names = ?issued.names, "serving a newly issued ACME certificate")
            }
            Err(error) => {
                tracing::error!(names = ?issued.names, %error, "cannot serve the issued ACME certificate")
            }
        },
    )?;
    for issued in acme.certificates() {
        match served.insert(&issued) {
            Ok(()) => tracing::info!(names = ?issued.names, "serving a stored ACME certificate"),
            Err(error) => {
                tracing::warn!(names = ?issued.names, %error, "cannot serve the stored ACME certificate")
            }
        }
    }
    acme.metrics()
        .register(registry)
        .map_err(|e| anyhow::anyhow!("cannot register the ACME metrics: {e}"))?;
    tracing::info!(
        certificates = snapshot.acme_certificates.len(),
        "ACME certificates are managed"
    );
    Ok(Some(acme))
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
