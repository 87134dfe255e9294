//! Starts Sluice: the control side ([`crate::control::start`]), then the
//! Pingora server with the proxy and admin services on its listeners.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pingora::apps::HttpServerOptions;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::protocols::http::v1::server::HeaderReadTimeout;
use pingora::proxy::http_proxy;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{ExecutionPhase, Server};
use pingora::services::listening::Service;
use tokio::sync::broadcast::error::RecvError;

use crate::admin::api::AdminApi;
use crate::control::{self, ConfigSource};
use crate::proxy::connections::{Admission, ClientConnections};
use crate::proxy::drain::RequestsInFlight;
use crate::proxy::SluiceProxy;
use crate::resilience::connections::OpenConnections;
use crate::telemetry::metrics::Metrics;
use crate::tls::resolver::SniResolver;
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
    /// This instance's name in a fleet on etcd; by default the host's name
    /// and the process id.
    pub instance_name: Option<String>,
}

/// How long after the services are started their start-up code is handed
/// back to the kernel: Pingora binds and starts them within milliseconds.
const STARTUP_SETTLES: Duration = Duration::from_secs(1);

/// Runs the proxy until a shutdown signal; returns only on a startup error.
pub fn run(options: RunOptions) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let instance_name = options
        .instance_name
        .clone()
        .unwrap_or_else(control::fleet::default_name);
    let control = control::start::start(
        options.source.clone(),
        options.state_dir.clone(),
        instance_name,
        metrics.reload.clone(),
        metrics.plugins.clone(),
        metrics.registry(),
    )?;
    let reloader = &control.reloader;
    let snapshot = reloader.live().load_full();

    let mut conf = ServerConf {
        threads: snapshot.threads,
        // Each worker thread runs a current-thread runtime of its own and
        // keeps the connections it is given, as nginx's workers do: Tokio's
        // work-stealing scheduler made every request cost two workers a
        // quarter more CPU than one (cross-thread wake-ups), more than the
        // balance it buys. Pingora hands each new connection to a worker
        // chosen at random.
        work_stealing: false,
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

    let requests = RequestsInFlight::default();
    // Shared by every service, so that the caps hold across listeners.
    let admission = Admission {
        live: reloader.live(),
        open: Arc::new(OpenConnections::new(metrics.client_connections.clone())),
        shed: metrics.shed_connections.clone(),
    };
    let header_read_timeout = Arc::new(HeaderReadTimeout::new(snapshot.header_read_timeout));
    metrics.follow_header_read_timeout(header_read_timeout.clone());

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
        let mut proxy = SluiceProxy::new(reloader.live(), metrics.clone(), reloader.plugins())
            .with_requests_in_flight(requests.clone());
        proxy = proxy.with_http01(control.http01.clone());
        let mut proxy = http_proxy(&server.configuration, proxy);
        let mut options = HttpServerOptions::default();
        options.h2c = h2c;
        // Pingora counts the reuses of a connection after its first request.
        options.keepalive_request_limit = Some(snapshot.max_requests_per_connection - 1);
        options.h2_idle_timeout = Some(snapshot.keepalive_timeout);
        options.header_read_timeout = Some(header_read_timeout.clone());
        proxy.server_options = Some(options);
        if addresses.iter().all(|listener| !listener.tls) {
            // With no HTTPS listener, the termination layer below would only
            // pass connections through, at the cost of a future held by
            // every open connection and a poll on every wake-up.
            let mut service = Service::new(
                name.to_string(),
                ClientConnections::new(proxy, admission.clone()),
            );
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
                    control.acme_certificates.clone(),
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
        let mut service = Service::new(
            name.to_string(),
            ClientConnections::new(app, admission.clone()),
        );
        for address in &bound {
            service.endpoints().add_listener(unbuffered_reads(address));
        }
        server.add_service(service);
    }
    if let Some(admin) = &snapshot.admin {
        let mut api = AdminApi::new(reloader.clone(), metrics.clone(), admin.token.clone());
        api = api.with_acme(control.acme.clone());
        if let Some(fleet) = &control.fleet {
            api = api.with_fleet(fleet.clone());
        }
        let mut service = Service::new("sluice admin".to_string(), api);
        service
            .endpoints()
            .add_listener(unbuffered_reads(&admin.address.to_string()));
        tracing::info!(address = %admin.address, token = admin.token.is_some(), "admin API listening");
        server.add_service(service);
    }

    if let Some(fleet) = &control.fleet {
        metrics.set_fleet(fleet.clone());
    }
    control.spawn_background(options.poll_interval);
    exit_when_drained(
        server.watch_execution_phase(),
        requests,
        control.before_exit(),
    )?;
    // The services start in `run_forever`; once they are up, the code only
    // start-up runs goes back to the kernel.
    std::thread::Builder::new()
        .name("sluice-startup-code".into())
        .spawn(|| {
            std::thread::sleep(STARTUP_SETTLES);
            crate::support::code::release_startup_code();
        })?;
    server.run_forever()
}

/// Ends the process once a graceful shutdown has begun and no request is
/// in flight. `before_exit` starts with the shutdown, beside the requests
/// still draining, and the process waits for it before it exits.
///
/// On SIGTERM Pingora stops accepting, closes idle keep-alive connections
/// and then sleeps out the whole grace period before it stops, even with
/// nothing left to serve: an idle proxy took 31 s to exit, and container
/// runtimes kill it first. This watcher exits as soon as the last request
/// in flight has ended; the grace period stays the upper bound.
fn exit_when_drained(
    mut phases: tokio::sync::broadcast::Receiver<ExecutionPhase>,
    requests: RequestsInFlight,
    before_exit: impl FnOnce() + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("sluice-drain".into())
        .spawn(move || {
            loop {
                match phases.blocking_recv() {
                    Ok(ExecutionPhase::ShutdownGracePeriod) => break,
                    Ok(_) | Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                }
            }
            // Started now rather than at the exit: a long request still in
            // flight when the grace period ends lets Pingora end the
            // process without this thread.
            let cleanup = std::thread::Builder::new()
                .name("sluice-cleanup".into())
                .spawn(before_exit);
            // A request whose head is still on its way is not counted yet:
            // the count has to stay at zero for a moment, while Pingora
            // closes the connections it finds idle, before the exit.
            let mut idle_since = None;
            loop {
                if requests.count() > 0 {
                    idle_since = None;
                } else if idle_since
                    .get_or_insert_with(std::time::Instant::now)
                    .elapsed()
                    >= DRAIN_SETTLE
                {
                    break;
                }
                std::thread::sleep(DRAIN_POLL);
            }
            if let Ok(cleanup) = cleanup {
                let _ = cleanup.join();
            }
            tracing::info!("no request in flight: exiting before the grace period ends");
            let _ = std::io::Write::flush(&mut std::io::stdout());
            std::process::exit(0);
        })?;
    Ok(())
}

/// How often a draining server looks at its requests in flight.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// How long no request may be in flight before a draining server exits.
const DRAIN_SETTLE: Duration = Duration::from_millis(250);

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
