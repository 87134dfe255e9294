//! Builds the Pingora server from a snapshot and runs it.

use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::apps::HttpServerOptions;
use pingora::proxy::http_proxy_service_with_name;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;

use crate::proxy::{LiveSnapshot, SluiceProxy};
use crate::snapshot::Snapshot;

/// Runs the proxy on `snapshot` until a shutdown signal; never returns.
pub fn run(snapshot: Snapshot) -> ! {
    let mut conf = ServerConf {
        threads: snapshot.threads,
        ..ServerConf::default()
    };
    conf.grace_period_seconds = Some(0);
    conf.graceful_shutdown_timeout_seconds = Some(10);
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let listeners = snapshot.listeners.clone();
    let live: LiveSnapshot = Arc::new(ArcSwap::from_pointee(snapshot));
    // h2c is a service-wide option in Pingora, so listeners are grouped by it.
    for h2c in [true, false] {
        let addresses: Vec<_> = listeners.iter().filter(|l| l.h2c == h2c).collect();
        if addresses.is_empty() {
            continue;
        }
        let name = if h2c {
            "sluice http (h1+h2c)"
        } else {
            "sluice http (h1)"
        };
        let mut service = http_proxy_service_with_name(
            &server.configuration,
            SluiceProxy::new(live.clone()),
            name,
        );
        if let Some(proxy) = service.app_logic_mut() {
            let mut options = HttpServerOptions::default();
            options.h2c = h2c;
            proxy.server_options = Some(options);
        }
        for listener in addresses {
            service.add_tcp(&listener.address.to_string());
            tracing::info!(address = %listener.address, h2c, "listening");
        }
        server.add_service(service);
    }
    server.run_forever()
}
