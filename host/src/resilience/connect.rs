//! How Sluice connects to a placement's endpoints: the protocol, timeouts,
//! TCP keep-alive and pool settings of `[placements.NAME]`, compiled once
//! into the peer every request clones, and the lanes that spread HTTP/2
//! requests over several connections to one endpoint.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use pingora::protocols::l4::ext::TcpKeepalive;
use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;

use crate::config::{self, Diagnostics, KeyPath, UpstreamProtocol};

/// A placement's connection settings, compiled.
#[derive(Debug, Clone)]
pub struct ConnectSpec {
    /// The protocol spoken to the endpoints.
    pub protocol: UpstreamProtocol,
    /// Upstream timeouts.
    pub timeouts: TimeoutSpec,
    /// TCP keep-alive probes; `None` leaves them off.
    pub keepalive: Option<TcpKeepalive>,
    /// Idle connections kept per endpoint; `None` for the server-wide
    /// pool's bound only.
    pub max_idle: Option<usize>,
    /// Requests at once on one HTTP/2 connection.
    pub h2_max_streams: usize,
    /// HTTP/2 connections per endpoint that requests spread over.
    pub h2_connections: u32,
}

/// Upstream timeouts of a placement.
#[derive(Debug, Clone, Copy)]
pub struct TimeoutSpec {
    /// Connection establishment.
    pub connect: Duration,
    /// Between reads.
    pub read: Duration,
    /// Pooled connection idle time.
    pub idle: Duration,
}

/// Compiles `placement`'s protocol, `timeouts` and `pool`, recording
/// problems in `d` under `path`.
pub fn compile(d: &mut Diagnostics, path: &KeyPath, placement: &config::Placement) -> ConnectSpec {
    let timeouts = timeouts(d, &path.key("timeouts"), &placement.timeouts);
    let pool = &placement.pool;
    let pool_path = path.key("pool");
    if pool.h2_max_streams == 0 {
        d.error(pool_path.key("h2_max_streams"), "must be at least 1");
    }
    if pool.h2_connections == 0 {
        d.error(pool_path.key("h2_connections"), "must be at least 1");
    }
    let keepalive = pool
        .tcp_keepalive
        .as_ref()
        .map(|keepalive| tcp_keepalive(d, &pool_path.key("tcp_keepalive"), keepalive));
    ConnectSpec {
        protocol: placement.protocol,
        timeouts,
        keepalive,
        max_idle: pool.max_idle.map(|max| max as usize),
        h2_max_streams: pool.h2_max_streams.max(1) as usize,
        h2_connections: pool.h2_connections.max(1),
    }
}

/// A placement's upstream timeouts.
pub fn timeouts(d: &mut Diagnostics, path: &KeyPath, timeouts: &config::Timeouts) -> TimeoutSpec {
    TimeoutSpec {
        connect: d.duration(path.key("connect"), &timeouts.connect),
        read: d.duration(path.key("read"), &timeouts.read),
        idle: d.duration(path.key("idle"), &timeouts.idle),
    }
}

/// The kernel counts keep-alive times in whole seconds.
fn tcp_keepalive(
    d: &mut Diagnostics,
    path: &KeyPath,
    keepalive: &config::TcpKeepalive,
) -> TcpKeepalive {
    let mut seconds = |key: &str, text: &str| {
        let duration = d.duration(path.key(key), text);
        if duration < Duration::from_secs(1) || duration.subsec_nanos() != 0 {
            d.error(
                path.key(key),
                "must be a whole number of seconds, at least 1s",
            );
        }
        duration
    };
    let idle = seconds("idle", &keepalive.idle);
    let interval = seconds("interval", &keepalive.interval);
    if keepalive.probes == 0 {
        d.error(path.key("probes"), "must be at least 1");
    }
    TcpKeepalive {
        idle,
        interval,
        count: keepalive.probes.max(1) as usize,
        #[cfg(target_os = "linux")]
        user_timeout: Duration::ZERO,
    }
}

impl ConnectSpec {
    /// Whether an endpoint spoken to with or without TLS can use this
    /// protocol; otherwise why not.
    pub fn check_endpoint(&self, tls: bool) -> Result<(), &'static str> {
        match (self.protocol, tls) {
            (UpstreamProtocol::H2, false) => Err(
                "protocol = \"h2\" is HTTP/2 over TLS: give this endpoint an https:// address or \
                 tls = true, or use protocol = \"h2c\" for HTTP/2 without TLS",
            ),
            (UpstreamProtocol::H2c, true) => Err(
                "protocol = \"h2c\" is HTTP/2 without TLS: use protocol = \"h2\" for a TLS endpoint",
            ),
            _ => Ok(()),
        }
    }

    /// Sets the protocol, timeouts and pool options on an endpoint's peer.
    pub fn configure(&self, peer: &mut HttpPeer) {
        let options = &mut peer.options;
        options.connection_timeout = Some(self.timeouts.connect);
        options.read_timeout = Some(self.timeouts.read);
        options.idle_timeout = Some(self.timeouts.idle);
        options.tcp_keepalive = self.keepalive.clone();
        options.max_idle_connections = self.max_idle;
        match self.protocol {
            UpstreamProtocol::Http1 => options.alpn = ALPN::H1,
            // Offered with HTTP/1.1, which a server that does not take h2
            // then picks instead of refusing the handshake.
            UpstreamProtocol::H2 => {
                options.alpn = ALPN::H2H1;
                options.max_h2_streams = self.h2_max_streams;
            }
            // A plain connection whose lowest version is 2 is spoken to in
            // HTTP/2 with prior knowledge.
            UpstreamProtocol::H2c => {
                options.alpn = ALPN::H2;
                options.max_h2_streams = self.h2_max_streams;
            }
        }
    }

    /// The lanes of an endpoint spoken to with these settings.
    pub fn lanes(&self) -> Lanes {
        let (count, per_worker) = match self.protocol {
            UpstreamProtocol::Http1 => (1, true),
            UpstreamProtocol::H2 | UpstreamProtocol::H2c => (self.h2_connections, false),
        };
        Lanes {
            count,
            per_worker,
            next: AtomicU32::new(0),
        }
    }
}

/// Which pooled connections to one endpoint a request may take.
///
/// Pingora pools connections by the peer's hash, which includes its group
/// key: a request given a group key shares connections with the other
/// requests given the same key only.
///
/// - HTTP/1: each worker thread keeps its own. A connection is polled by
///   the thread that opened it, so one taken by another worker would have
///   every readiness event of its response cross between the threads.
/// - HTTP/2: the connections are shared by every worker (one connection
///   carries many requests at once), and a request takes the next of the
///   endpoint's `h2_connections` lanes in turn.
#[derive(Debug)]
pub struct Lanes {
    count: u32,
    per_worker: bool,
    next: AtomicU32,
}

impl Lanes {
    /// The group key of the next request's connection.
    pub fn group_key(&self) -> u64 {
        if self.per_worker {
            worker_number()
        } else if self.count > 1 {
            u64::from(self.next.fetch_add(1, Ordering::Relaxed) % self.count)
        } else {
            0
        }
    }
}

/// A number of the calling thread's own, the same on every call from it.
fn worker_number() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static NUMBER: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    NUMBER.with(|number| *number)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(toml: &str) -> (ConnectSpec, Diagnostics) {
        let placement: config::Placement = toml::from_str(&format!(
            "endpoints = [{{ address = \"127.0.0.1:1\" }}]\n{toml}"
        ))
        .unwrap();
        let mut d = Diagnostics::default();
        let spec = compile(&mut d, &KeyPath::root(), &placement);
        (spec, d)
    }

    #[test]
    fn http1_by_default_with_one_lane_and_no_keepalive() {
        let (spec, d) = compiled("");
        assert_eq!(d.error_count(), 0);
        let mut peer = HttpPeer::new("127.0.0.1:1", false, String::new());
        spec.configure(&mut peer);
        assert_eq!(peer.options.alpn, ALPN::H1);
        assert!(peer.options.tcp_keepalive.is_none());
        assert_eq!(peer.options.max_idle_connections, None);
        let lanes = spec.lanes();
        let here = lanes.group_key();
        assert_eq!(lanes.group_key(), here);
        let elsewhere = std::thread::spawn(move || lanes.group_key())
            .join()
            .unwrap();
        assert_ne!(
            elsewhere, here,
            "each worker thread pools its own connections"
        );
    }

    #[test]
    fn h2c_sets_prior_knowledge_streams_and_lanes() {
        let (spec, d) = compiled(
            "protocol = \"h2c\"\npool = { h2_max_streams = 8, h2_connections = 3, max_idle = 2 }",
        );
        assert_eq!(d.error_count(), 0);
        let mut peer = HttpPeer::new("127.0.0.1:1", false, String::new());
        spec.configure(&mut peer);
        assert_eq!(peer.options.alpn.get_min_http_version(), 2);
        assert_eq!(peer.options.max_h2_streams, 8);
        assert_eq!(peer.options.max_idle_connections, Some(2));
        let lanes = spec.lanes();
        let taken: Vec<_> = (0..4).map(|_| lanes.group_key()).collect();
        assert_eq!(taken, [0, 1, 2, 0]);
        assert!(spec.check_endpoint(true).is_err());
        assert!(spec.check_endpoint(false).is_ok());
    }

    #[test]
    fn h2_needs_tls_and_keepalive_takes_whole_seconds() {
        let (spec, d) = compiled(
            "protocol = \"h2\"\n[pool.tcp_keepalive]\nidle = \"30s\"\ninterval = \"5s\"\nprobes = 4",
        );
        assert_eq!(d.error_count(), 0);
        assert!(spec.check_endpoint(false).is_err());
        let keepalive = spec.keepalive.unwrap();
        assert_eq!(
            (keepalive.idle, keepalive.interval, keepalive.count),
            (Duration::from_secs(30), Duration::from_secs(5), 4)
        );
        let (_, d) =
            compiled("pool = { h2_connections = 0, tcp_keepalive = { idle = \"500ms\" } }");
        assert_eq!(d.error_count(), 2);
    }
}
