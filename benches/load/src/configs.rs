//! The configurations of the origin and of every proxy under test, written
//! so that they are equivalent: one worker thread, keep-alive to the origin,
//! no access log, no per-connection request limit.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Where the origin listens.
pub const ORIGIN_PORT: u16 = 18000;
/// Where each proxy listens for plain HTTP.
pub const PROXY_PORT: u16 = 18080;
/// Where each proxy listens for HTTPS in the TLS case.
pub const TLS_PORT: u16 = 18443;
/// The path every load generator requests. Its first segment is the
/// routing key of the two-level routing case, and the rewrite plugin strips
/// it.
pub const REQUEST_PATH: &str = "/acme/hello";
/// The origin's answer to every request.
pub const ORIGIN_BODY: &str = "hello from the origin\n";

/// The proxies compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxy {
    /// nginx, one worker process (plus its master).
    Nginx,
    /// HAProxy, one thread.
    Haproxy,
    /// Caddy, `GOMAXPROCS=1`.
    Caddy,
    /// Sluice, `[server] threads = 1`.
    Sluice,
    /// `pingora-floor` (`benches/pingora-floor`): Pingora with nothing on top,
    /// configured as Sluice is. The floor under Sluice's plain proxy.
    Pingora,
}

impl Proxy {
    /// The name used in the report.
    pub fn name(self) -> &'static str {
        match self {
            Proxy::Nginx => "nginx",
            Proxy::Haproxy => "HAProxy",
            Proxy::Caddy => "Caddy",
            Proxy::Sluice => "Sluice",
            Proxy::Pingora => "Pingora",
        }
    }
}

/// The configurations measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// A plain reverse proxy: every request to the one origin.
    Plain,
    /// Sluice only: two-level routing (path segment → 1,000-key table →
    /// placement), with health checks, breakers, passive health, limits and
    /// fallbacks on, and the explainability headers.
    Routing,
    /// Sluice only: the plain proxy with the `headers` and `rewrite`
    /// WebAssembly plugins attached.
    Plugins,
    /// TLS termination on the listener, plain HTTP to the origin.
    Tls,
}

impl Variant {
    /// A short description for the report.
    pub fn describe(self) -> &'static str {
        match self {
            Variant::Plain => "plain proxy",
            Variant::Routing => "two-level routing, breakers, health checks",
            Variant::Plugins => "2-plugin chain (headers + rewrite)",
            Variant::Tls => "TLS termination",
        }
    }

    /// The file-name friendly key.
    pub fn key(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::Routing => "routing",
            Variant::Plugins => "plugins",
            Variant::Tls => "tls",
        }
    }
}

/// Paths the configurations refer to.
pub struct Paths {
    /// The run's scratch directory.
    pub work: PathBuf,
    /// The directory of `headers.wasm` and `rewrite.wasm`.
    pub plugin_dir: PathBuf,
    /// Self-signed certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// Certificate and key in one file, for HAProxy.
    pub combined: PathBuf,
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// The nginx origin: `return 200` with a small body, one worker.
pub fn origin_nginx(paths: &Paths) -> String {
    let work = p(&paths.work);
    format!(
        r#"# The origin every proxy forwards to: a fixed answer from one nginx worker.
worker_processes 1;
daemon off;
pid {work}/origin.pid;
error_log {work}/origin-error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
{temp}
    server {{
        listen 127.0.0.1:{ORIGIN_PORT};
        location / {{
            default_type text/plain;
            return 200 "{body}";
        }}
    }}
}}
"#,
        temp = nginx_temp_paths(&work, "origin"),
        body = ORIGIN_BODY.replace('\n', "\\n"),
    )
}

fn nginx_temp_paths(work: &str, name: &str) -> String {
    ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .iter()
        .map(|kind| format!("    {kind}_temp_path {work}/tmp/{name}-{kind};\n"))
        .collect()
}

/// nginx as the proxy under test.
pub fn nginx(paths: &Paths, tls: bool) -> String {
    let work = p(&paths.work);
    let listen = if tls {
        format!(
            "listen 127.0.0.1:{TLS_PORT} ssl;\n        ssl_certificate {};\n        ssl_certificate_key {};",
            p(&paths.cert),
            p(&paths.key)
        )
    } else {
        format!("listen 127.0.0.1:{PROXY_PORT};")
    };
    format!(
        r#"worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log error;
worker_rlimit_nofile 65536;
events {{ worker_connections 30000; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
{temp}
    upstream origin {{
        server 127.0.0.1:{ORIGIN_PORT};
        keepalive 128;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }}
    server {{
        {listen}
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"#,
        temp = nginx_temp_paths(&work, "nginx"),
    )
}

/// HAProxy's `maxconn` for an open-file limit: HAProxy reserves two
/// descriptors per connection (client and server side) and refuses to
/// start when the limit cannot hold them.
pub fn haproxy_maxconn(nofile: u64) -> u64 {
    (nofile.saturating_sub(200) / 2).clamp(1000, 30000)
}

/// HAProxy as the proxy under test, with `maxconn` from
/// [`haproxy_maxconn`].
pub fn haproxy(paths: &Paths, tls: bool, nofile: u64) -> String {
    let maxconn = haproxy_maxconn(nofile);
    let bind = if tls {
        format!("bind 127.0.0.1:{TLS_PORT} ssl crt {}", p(&paths.combined))
    } else {
        format!("bind 127.0.0.1:{PROXY_PORT}")
    };
    format!(
        r#"global
    nbthread 1
    maxconn {maxconn}
    # no `log` line: no logging

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 300s
    timeout server 60s
    timeout http-keep-alive 300s

frontend bench
    {bind}
    default_backend origin

backend origin
    server origin 127.0.0.1:{ORIGIN_PORT}
"#
    )
}

/// Caddy's Caddyfile for the proxy under test.
pub fn caddy(paths: &Paths, tls: bool) -> String {
    let site = if tls {
        format!(
            "https://:{TLS_PORT} {{\n    bind 127.0.0.1\n    tls {} {}",
            p(&paths.cert),
            p(&paths.key)
        )
    } else {
        format!("http://:{PROXY_PORT} {{\n    bind 127.0.0.1")
    };
    format!(
        r#"{{
    admin off
    auto_https off
    default_sni localhost
    storage file_system {work}/caddy-data
}}

{site}
    # no `log` directive: no access log
    reverse_proxy 127.0.0.1:{ORIGIN_PORT} {{
        transport http {{
            keepalive 300s
            keepalive_idle_conns 128
            keepalive_idle_conns_per_host 128
        }}
    }}
}}
"#,
        work = p(&paths.work),
    )
}

fn sluice_server(paths: &Paths) -> String {
    format!(
        r#"[server]
threads = 1
access_log = false
grace_period = "1s"
upgrade_socket = "{}/sluice-upgrade.sock"
"#,
        p(&paths.work)
    )
}

/// The command-line arguments of `pingora-floor`, which has no config file:
/// where it listens, then the origin.
pub fn pingora_floor_args() -> [String; 2] {
    [
        format!("127.0.0.1:{PROXY_PORT}"),
        format!("127.0.0.1:{ORIGIN_PORT}"),
    ]
}

/// Sluice's config for `variant`.
pub fn sluice(paths: &Paths, variant: Variant) -> String {
    let mut out = sluice_server(paths);
    match variant {
        Variant::Plain => {
            let _ = write!(
                out,
                r#"
[[listeners]]
address = "127.0.0.1:{PROXY_PORT}"
h2c = false

[placements.origin]
endpoints = [{{ address = "127.0.0.1:{ORIGIN_PORT}" }}]

[[routes]]
name = "all"
placement = "origin"
explain = false
"#
            );
        }
        Variant::Tls => {
            // The plain proxy behind a TLS listener. Load goes to
            // 127.0.0.1 without a server name, so the default certificate
            // is served. A Sluice without TLS listeners rejects this, and
            // the case is reported as skipped.
            let _ = write!(
                out,
                r#"
[[listeners]]
address = "127.0.0.1:{TLS_PORT}"
tls = true

[default_certificate]
cert = "{cert}"
key = "{key}"

[placements.origin]
endpoints = [{{ address = "127.0.0.1:{ORIGIN_PORT}" }}]

[[routes]]
name = "all"
placement = "origin"
explain = false
"#,
                cert = p(&paths.cert),
                key = p(&paths.key),
            );
        }
        Variant::Plugins => {
            let _ = write!(
                out,
                r#"
[[listeners]]
address = "127.0.0.1:{PROXY_PORT}"
h2c = false

[plugins]
directory = "{dir}"

[placements.origin]
endpoints = [{{ address = "127.0.0.1:{ORIGIN_PORT}" }}]

[[routes]]
name = "all"
placement = "origin"
explain = false

# headers runs at on_request and on_response, rewrite at on_request:
# three plugin calls per request.
[[routes.plugins]]
name = "headers"
config.request = {{ set = {{ "x-real-host" = "{{host}}" }}, add = {{ "via" = "sluice" }}, remove = ["x-debug"] }}
config.response = {{ set = {{ "x-served-by" = "{{upstream}}" }}, remove = ["server"] }}

[[routes.plugins]]
name = "rewrite"
config = {{ rules = [{{ regex = "^/acme/(.*)$", to = "/$1" }}] }}
"#,
                dir = p(&paths.plugin_dir),
            );
        }
        Variant::Routing => {
            let _ = write!(
                out,
                r#"
[[listeners]]
address = "127.0.0.1:{PROXY_PORT}"
"#
            );
            // Four cells on the one origin, each falling back to the next,
            // each with active and passive health, a breaker and a limit.
            for cell in 1..=4 {
                let fallback = if cell < 4 {
                    format!("fallback = \"cell-{}\"\n", cell + 1)
                } else {
                    String::new()
                };
                let _ = write!(
                    out,
                    r#"
[placements.cell-{cell}]
endpoints = [{{ address = "127.0.0.1:{ORIGIN_PORT}" }}]
{fallback}health = {{ path = "/health", interval = "1s", timeout = "500ms", rise = 2, fall = 3 }}
passive = {{ failures = 5, cooldown = "10s" }}
breaker = {{ consecutive_failures = 5, failure_rate = 0.5, window = "10s", min_requests = 20, open_for = "5s" }}
limits = {{ max_concurrency = 10000, max_body = "10MiB" }}
retry = {{ connect_attempts = 1 }}
"#
                );
            }
            let _ = write!(
                out,
                r#"
# Some other routes, so that matching has something to skip.
[[routes]]
name = "billing"
hosts = ["billing.example.com"]
placement = "cell-1"

[[routes]]
name = "wildcard"
hosts = ["*.app.example.com"]
routing = {{ key = {{ source = "host_label", index = 0 }}, default = "cell-1" }}

# Every request: the first path segment is the tenant; `acme` is in the
# table, as are 1,000 other tenants spread over the four cells.
[[routes]]
name = "tenants"
path_prefix = "/"

[routes.routing]
key = {{ source = "path_segment", index = 0 }}
default = "cell-1"

[routes.routing.table]
acme = "cell-2"
"#
            );
            for t in 0..1000 {
                let _ = writeln!(out, "tenant-{t:04} = \"cell-{}\"", t % 4 + 1);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> Paths {
        Paths {
            work: "/tmp/w".into(),
            plugin_dir: "/tmp/w/plugins".into(),
            cert: "/tmp/w/cert.pem".into(),
            key: "/tmp/w/key.pem".into(),
            combined: "/tmp/w/combined.pem".into(),
        }
    }

    #[test]
    fn every_config_names_the_right_ports() {
        let p = paths();
        assert!(origin_nginx(&p).contains("listen 127.0.0.1:18000;"));
        assert!(origin_nginx(&p).contains(r#"return 200 "hello from the origin\n";"#));
        assert!(nginx(&p, false).contains("listen 127.0.0.1:18080;"));
        assert!(nginx(&p, true).contains("listen 127.0.0.1:18443 ssl;"));
        assert!(haproxy(&p, false, 65536).contains("bind 127.0.0.1:18080\n"));
        assert!(haproxy(&p, true, 65536).contains("ssl crt /tmp/w/combined.pem"));
        assert!(caddy(&p, false).contains("http://:18080 {"));
        assert!(caddy(&p, true).contains("tls /tmp/w/cert.pem /tmp/w/key.pem"));
        for v in [Variant::Plain, Variant::Routing, Variant::Plugins] {
            let c = sluice(&p, v);
            assert!(c.contains("threads = 1"), "{v:?}");
            assert!(c.contains("access_log = false"), "{v:?}");
            assert!(c.contains("address = \"127.0.0.1:18080\""), "{v:?}");
        }
        assert!(sluice(&p, Variant::Tls).contains("127.0.0.1:18443"));
    }

    #[test]
    fn haproxy_maxconn_fits_the_descriptor_limit() {
        assert!(haproxy(&paths(), false, 20000).contains("maxconn 9900\n"));
        assert!(haproxy(&paths(), false, 1 << 20).contains("maxconn 30000\n"));
    }

    #[test]
    fn routing_table_has_a_thousand_and_one_tenants() {
        let c = sluice(&paths(), Variant::Routing);
        assert_eq!(c.matches("\ntenant-").count(), 1000);
        assert!(c.contains("acme = \"cell-2\""));
        assert_eq!(c.matches("[placements.cell-").count(), 4);
    }
}
