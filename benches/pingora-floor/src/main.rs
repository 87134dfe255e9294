//! `pingora-floor`: the smallest reverse proxy Pingora runs, as a floor
//! under Sluice's plain-proxy figures.
//!
//! It is configured as the load benchmark configures Sluice (one thread on a
//! current-thread runtime, unbuffered listener reads, keep-alive to the
//! origin, no access log, mimalloc), but every request goes straight to the
//! origin: no routing, no forwarding headers, no request id, no metrics. Run side by side with
//! `sluice`, it shows how much of a plain proxied request's cost is Pingora's
//! and how much is Sluice's own.
//!
//! ```sh
//! pingora-floor 127.0.0.1:8080 127.0.0.1:8000
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;

use async_trait::async_trait;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::*;
use pingora::server::configuration::{Opt, ServerConf};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Proxies every request to one origin.
struct Floor {
    origin: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.origin, false, String::new())))
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, origin] = args.as_slice() else {
        eprintln!("usage: pingora-floor LISTEN_ADDRESS ORIGIN_ADDRESS");
        return ExitCode::from(2);
    };
    let origin: SocketAddr = match origin.parse() {
        Ok(origin) => origin,
        Err(e) => {
            eprintln!("ORIGIN_ADDRESS {origin}: {e}");
            return ExitCode::from(2);
        }
    };
    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None::<Opt>, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, Floor { origin });
    // The listener Sluice itself uses, so that both read alike.
    proxy
        .endpoints()
        // Unbuffered listener reads, as Sluice's listeners (an option of
        // Pingora's, not a patch).
        .add_listener(ListenerConfig::tcp(listen).l4_buffer(L4BufferSettings::default().read(0)));
    server.add_service(proxy);
    server.run_forever()
}
