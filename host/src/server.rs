//! Starts Sluice: the control runtime (config, reload triggers, health
//! checks, ACME), then the Pingora server with the proxy and admin services.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pingora::apps::HttpServerOptions;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::proxy::http_proxy;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::listening::Service;

use crate::admin::api::AdminApi;
use crate::control::{watch, ConfigSource, Reloader};
use crate::proxy::SluiceProxy;
use crate::resilience::checker::HealthSupervisor;
use crate::resilience::state::Registry;
use crate::snapshot::Snapshot;
use crate::telemetry::metrics::Metrics;
use crate::tls::acme::{Acme, ChallengeKind};
use crate::tls::resolver::SniResolver;
use crate::tls::store::AcmeCertificates;
use crate::tls::termination::{server_config, TlsTermination};

/// How `sluice run` was asked to start.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where the configuration comes from.
    pub source: ConfigSource,
    /// Where the last known good config is persisted; `None` disables that.
    pub state_dir: Option<PathBuf>,
    /// How often a remote source is polled.
    pub poll_interval: Duration,
    /// Take the listening sockets over from a running instance.
    pub upgrade: bool,
}

/// Runs the proxy until a shutdown signal; returns only on a startup error.
pub fn run(options: RunOptions) -> anyhow::Result<()> {
    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sluice-control")
        .enable_all()
        .build()?;
    let registry = Arc::new(Registry::default());
    let metrics = Arc::new(Metrics::new());
    let health = HealthSupervisor::new(control.handle().clone());
    let reloader = control.block_on(Reloader::start(
        options.source.clone(),
        options.state_dir.clone(),
        registry,
        metrics.reload.clone(),
        metrics.plugins.clone(),
        health,
    ))?;
    let snapshot = reloader.live().load_full();
    // ACME runs if the snapshot the process starts on has routes with
    // tls = "acme"; reloads that add such routes are then followed.
    let acme_certificates = AcmeCertificates::default();
    let acme = prepare_acme(
        &snapshot,
        options.state_dir.as_deref(),
        &acme_certificates,
        &metrics,
    )?;

    let mut conf = ServerConf {
        threads: snapshot.threads,
        // With one thread there is nothing to steal, and Tokio's
        // multi-threaded scheduler still pays for stealing on every wake-up;
        // Pingora then runs the service on a current-thread runtime.
        work_stealing: snapshot.threads > 1,
        upgrade_sock: snapshot.upgrade_socket.clone(),
        ..ServerConf::default()
    };
    // Pingora stops accepting at once, then serves in-flight requests for
    // the grace period before shutting its runtimes down.
    conf.grace_period_seconds = Some(snapshot.grace_period.as_secs().max(1));
    conf.graceful_shutdown_timeout_seconds = Some(5);
    let opt = Opt {
        upgrade: options.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    // h2c is a service-wide option in Pingora, so listeners are grouped by it.
    for h2c in [true, false] {
        let addresses: Vec<_> = snapshot.listeners.iter().filter(|l| l.h2c == h2c).collect();
        if addresses.is_empty() {
            continue;
        }
        let name = if h2c {
            "sluice http (h1+h2c)"
        } else {
            "sluice http (h1)"
        };
        let mut proxy = SluiceProxy::new(reloader.live(), metrics.clone(), reloader.plugins());
        if let Some(acme) = &acme {
            proxy = proxy.with_http01(acme.http01());
        }
        let mut proxy = http_proxy(&server.configuration, proxy);
        let mut options = HttpServerOptions::default();
        options.h2c = h2c;
        proxy.server_options = Some(options);
        if addresses.iter().all(|listener| !listener.tls) {
            // With no HTTPS listener, the termination layer below would only
            // pass connections through, at the cost of a future held by
            // every open connection and a poll on every wake-up.
            let mut service = Service::new(name.to_string(), proxy);
            for listener in addresses {
                tracing::info!(address = %listener.address, h2c, "listening");
                service
                    .endpoints()
                    .add_listener(unbuffered_reads(&listener.address.to_string()));
            }
            server.add_service(service);
            continue;
        }
        // HTTPS listeners are bound as TCP and the handshake is run in front
        // of the proxy, with rustls settings of Sluice's own (Pingora's
        // TlsSettings fixes the TLS versions).
        let mut app = TlsTermination::new(proxy);
        let mut bound = Vec::new();
        for listener in addresses {
            if listener.tls {
                let certificates = Arc::new(SniResolver::new(
                    reloader.certificates(),
                    acme_certificates.clone(),
                ));
                app.add_https(
                    listener.address,
                    server_config(listener.min_tls_version, certificates)?,
                );
                tracing::info!(address = %listener.address, min_tls_version = %listener.min_tls_version, "listening with TLS");
            } else {
                app.add_plain(listener.address);
                tracing::info!(address = %listener.address, h2c, "listening");
            }
            bound.push(listener.address.to_string());
        }
        let mut service = Service::new(name.to_string(), app);
        for address in &bound {
            service.endpoints().add_listener(unbuffered_reads(address));
        }
        server.add_service(service);
    }
    if let Some(admin) = &snapshot.admin {
        let mut api = AdminApi::new(reloader.clone(), metrics.clone(), admin.token.clone());
        if let Some(acme) = &acme {
            api = api.with_acme(acme.clone());
        }
        let mut service = Service::new("sluice admin".to_string(), api);
        service
            .endpoints()
            .add_listener(unbuffered_reads(&admin.address.to_string()));
        tracing::info!(address = %admin.address, token = admin.token.is_some(), "admin API listening");
        server.add_service(service);
    }

    control.block_on(async {
        watch::spawn_triggers(reloader.clone(), options.poll_interval);
        tokio::spawn(watch::reload_on_certificate_change(reloader.clone()));
    });
    if let Some(acme) = acme {
        // HTTP-01 answers are served by the plain listeners, so orders wait
        // until one accepts connections; DNS-01 orders start at once.
        let plain: Vec<SocketAddr> = match acme_challenge(&snapshot) {
            Some(ChallengeKind::Http01) => snapshot
                .listeners
                .iter()
                .filter(|l| !l.tls)
                .map(|l| l.address)
                .collect(),
            _ => Vec::new(),
        };
        let names = reloader.acme_names();
        control.spawn(async move {
            wait_until_listening(&plain).await;
            // The tasks live as long as this one, that is, the process.
            let mut tasks = acme.start();
            tasks.spawn(acme.follow(names));
            while tasks.join_next().await.is_some() {}
        });
    }
    server.run_forever()
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
    metrics: &Metrics,
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
        .register(metrics.registry())
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

/// A TCP listener whose accepted connections read straight from the socket.
///
/// Pingora puts a 64 KiB read buffer, zeroed, in front of every accepted
/// connection by default, and keeps it while the connection waits for its
/// next request. It was the largest allocation an idle keep-alive
/// connection held: without it, 1,000 idle connections add 51 MiB to the
/// proxy instead of 75 MiB. The layers above buffer for themselves (the
/// HTTP/1 parser, rustls, h2), and side by side the CPU per request did not
/// change measurably.
pub fn unbuffered_reads(address: &str) -> ListenerConfig {
    ListenerConfig::tcp(address).l4_buffer(L4BufferSettings::default().read(0))
}
