//! Starts Sluice: the control runtime (config, reload triggers, health
//! checks), then the Pingora server with the proxy and admin services.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::proxy::http_proxy_service_with_name;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::listening::Service;

use crate::admin::api::AdminApi;
use crate::admin::metrics::Metrics;
use crate::config::reload::{ConfigSource, Reloader};
use crate::config::watch;
use crate::proxy::SluiceProxy;
use crate::resilience::checker::HealthSupervisor;
use crate::resilience::state::Registry;
use crate::tls::resolver::SniResolver;

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
        metrics.clone(),
        health,
    ))?;
    let snapshot = reloader.live().load_full();

    let mut conf = ServerConf {
        threads: snapshot.threads,
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
        let proxy = SluiceProxy::new(reloader.live(), metrics.clone(), reloader.plugins());
        let mut service = http_proxy_service_with_name(&server.configuration, proxy, name);
        if let Some(proxy) = service.app_logic_mut() {
            let mut options = HttpServerOptions::default();
            options.h2c = h2c;
            proxy.server_options = Some(options);
        }
        for listener in addresses {
            if listener.tls {
                // No files: with a resolver, Pingora ignores them.
                let mut tls = TlsSettings::intermediate("", "")?;
                tls.set_cert_resolver(Arc::new(SniResolver::new(reloader.live())));
                tls.enable_h2();
                service.add_tls_with_settings(&listener.address.to_string(), None, tls);
                tracing::info!(address = %listener.address, "listening with TLS");
            } else {
                service.add_tcp(&listener.address.to_string());
                tracing::info!(address = %listener.address, h2c, "listening");
            }
        }
        server.add_service(service);
    }
    if let Some(admin) = &snapshot.admin {
        let api = AdminApi::new(reloader.clone(), metrics.clone(), admin.token.clone());
        let mut service = Service::new("sluice admin".to_string(), api);
        service.add_tcp(&admin.address.to_string());
        tracing::info!(address = %admin.address, token = admin.token.is_some(), "admin API listening");
        server.add_service(service);
    }

    control.block_on(async {
        watch::spawn_triggers(reloader.clone(), options.poll_interval);
        tokio::spawn(watch::reload_on_certificate_change(reloader.clone()));
    });
    server.run_forever()
}
