//! `sluice import caddyfile`: Caddyfiles written for these tests are
//! converted by the real binary, the output passes `sluice check`, and the
//! converted routes behave as the Caddyfile intends, as a client and an
//! upstream see them; the differential test serves one Caddyfile with real
//! Caddy and with Sluice and compares what both send and answer.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{free_port, scratch_dir, sluice_binary, upstreams, Proxy};

/// Runs `sluice import caddyfile` on `caddyfile` in `dir`.
fn import(dir: &Path, caddyfile: &str, extra: &[&str]) -> Output {
    let path = dir.join("Caddyfile");
    std::fs::write(&path, caddyfile).unwrap();
    Command::new(sluice_binary())
        .current_dir(dir)
        .args(["import", "caddyfile", "Caddyfile"])
        .args(extra)
        .output()
        .unwrap()
}

/// Imports `caddyfile` into `dir/sluice.toml`, insisting on success, and
/// checks the result with `sluice check`.
fn import_and_check(dir: &Path, caddyfile: &str) -> PathBuf {
    import_and_check_with_env(dir, caddyfile, &[])
}

/// As [`import_and_check`], with `sluice check` run in `dir` with these
/// environment variables, as `sluice run` will be.
fn import_and_check_with_env(dir: &Path, caddyfile: &str, env: &[(&str, &str)]) -> PathBuf {
    let output = import(dir, caddyfile, &["-o", "sluice.toml"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "import failed: {stderr}");
    let config = dir.join("sluice.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.starts_with("# Imported from Caddyfile"), "{text}");
    let check = Command::new(sluice_binary())
        .current_dir(dir)
        .args(["check", "--config"])
        .arg(&config)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "sluice check refused the import:\n{}\n{text}",
        String::from_utf8_lossy(&check.stderr)
    );
    config
}

/// An HTTP client that does not follow redirects, so both proxies' own
/// answers are compared.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A response, read whole.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// The upstream's echo of the request it received.
    fn echo(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not an echo ({e}): {}", self.body))
    }
}

async fn send(
    address: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = client()
        .request(method.clone(), format!("http://{address}{path}"))
        .header("host", host);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if method == reqwest::Method::POST {
        request = request.body("form=1");
    }
    let response = request.send().await.unwrap();
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn converted_sites_route_rewrite_and_answer_as_the_caddyfile_says() {
    let up = upstreams(&["shop", "api-v2"]).await;
    let (shop, v2) = (up[0].address, up[1].address);
    let port = free_port();
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let dir = scratch_dir();
    let caddyfile = format!(
        r#"# Two sites on one port, told apart by host.
{{
	admin {admin}
}}

(hardening) {{
	header {{
		-X-Served-By
		X-Frame-Options "DENY"
	}}
}}

http://shop.test:{port} {{
	bind 127.0.0.1
	import hardening
	reverse_proxy {shop} {{
		header_up Host {{upstream_hostport}}
		header_up X-Env `prod`
		header_up -X-Debug
	}}
}}

http://api.test:{port} {{
	bind 127.0.0.1
	respond /health "api ok" 200
	rewrite /old/* /v2{{path}}
	reverse_proxy /v2/* {v2}
	reverse_proxy {shop}
}}
"#
    );
    let config = import_and_check(&dir, &caddyfile);
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let proxy = Proxy::spawn(address, admin, config, dir.join("state"), &[]);

    // Hosts, Host rewriting and header set/remove, as the upstream sees them.
    let answer = send(
        proxy.address,
        "GET",
        "shop.test",
        "/cart?id=7",
        &[("x-debug", "1")],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let echo = answer.echo();
    assert_eq!(echo["upstream"], "shop");
    assert_eq!(echo["path"], "/cart");
    assert_eq!(echo["query"], "id=7");
    assert_eq!(echo["headers"]["host"], shop.to_string());
    assert_eq!(echo["headers"]["x-env"], "prod");
    assert!(echo["headers"].get("x-debug").is_none());
    // ... and as the client sees them.
    assert_eq!(answer.header("x-frame-options"), Some("DENY"));
    assert_eq!(answer.header("x-served-by"), None);

    // An upstream rewrite, chosen by the rewritten path.
    let answer = send(proxy.address, "GET", "api.test", "/old/users?page=2", &[]).await;
    let echo = answer.echo();
    assert_eq!(echo["upstream"], "api-v2");
    assert_eq!(echo["path"], "/v2/old/users");
    assert_eq!(echo["query"], "page=2");
    assert_eq!(
        echo["headers"]["host"], "api.test",
        "the client's Host by default"
    );
    assert_eq!(
        send(proxy.address, "GET", "api.test", "/v2/x", &[])
            .await
            .echo()["upstream"],
        "api-v2"
    );
    assert_eq!(
        send(proxy.address, "GET", "api.test", "/other", &[])
            .await
            .echo()["upstream"],
        "shop"
    );

    // A respond body, answered by the proxy itself.
    let answer = send(proxy.address, "GET", "api.test", "/health", &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "api ok");
    assert_eq!(
        answer.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(answer.header("x-served-by"), None);

    // A host the Caddyfile does not name.
    assert_eq!(
        send(proxy.address, "GET", "other.test", "/", &[])
            .await
            .status,
        404
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_internal_is_served_with_the_generated_certificate() {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::CertificateDer;

    let port = free_port();
    let dir = scratch_dir();
    let caddyfile = format!(
        "{{\n\tadmin off\n}}\n\nhttps://dev.localhost:{port} {{\n\tbind 127.0.0.1\n\ttls internal\n\trespond \"secure\" 200\n}}\n"
    );
    let config = import_and_check(&dir, &caddyfile);
    let certificate = dir.join("certs").join("dev-localhost.pem");
    let key = dir.join("certs").join("dev-localhost.key");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(
        mode & 0o777,
        0o600,
        "the private key is readable by its owner only"
    );
    let generated = CertificateDer::from_pem_file(&certificate).unwrap();

    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _proxy = Proxy::spawn(address, admin, config, dir.join("state"), &[]);
    // A client that trusts the generated certificate, as a developer's would.
    let connector = crate::tls::connector(
        std::slice::from_ref(&generated),
        &[&rustls::version::TLS13],
        &[b"http/1.1"],
    );
    let mut stream = crate::tls::connect(&connector, address, "dev.localhost")
        .await
        .unwrap();
    assert_eq!(crate::tls::presented(&stream), generated);
    let (status, _) = crate::tls::request(&mut stream, "dev.localhost", "/").await;
    assert_eq!(status, 200);
}

#[test]
fn unsupported_directives_are_reported_with_their_lines() {
    let dir = scratch_dir();
    let caddyfile = "{\n\tadmin off\n}\n\nhttp://a.test:8080 {\n\tencode gzip\n\tbasicauth {\n\t\tbob $2a$14$hash\n\t}\n\treverse_proxy 127.0.0.1:9000\n}\n";

    let refused = import(&dir, caddyfile, &["-o", "sluice.toml"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("Caddyfile:6: unsupported: encode gzip: "),
        "{stderr}"
    );
    assert!(
        stderr.contains("Caddyfile:7: unsupported: basicauth { ... }: "),
        "{stderr}"
    );
    assert!(stderr.contains("--allow-partial"), "{stderr}");
    assert!(
        !dir.join("sluice.toml").exists(),
        "nothing is written without --allow-partial"
    );

    let partial = import(&dir, caddyfile, &["-o", "sluice.toml", "--allow-partial"]);
    let stderr = String::from_utf8_lossy(&partial.stderr);
    assert!(partial.status.success(), "{stderr}");
    assert!(
        stderr.contains("Caddyfile:6: unsupported: encode gzip"),
        "{stderr}"
    );
    let text = std::fs::read_to_string(dir.join("sluice.toml")).unwrap();
    assert!(
        text.contains("# UNSUPPORTED Caddyfile:6: encode gzip ("),
        "{text}"
    );
    assert!(
        text.contains("# UNSUPPORTED Caddyfile:7: basicauth { ... } ("),
        "{text}"
    );
    let check = Command::new(sluice_binary())
        .args(["check", "--config"])
        .arg(dir.join("sluice.toml"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // Without -o the config goes to stdout.
    let stdout = import(&dir, caddyfile, &["--allow-partial"]);
    assert!(String::from_utf8_lossy(&stdout.stdout).starts_with("# Imported from Caddyfile"));
}

#[test]
fn a_broken_caddyfile_is_an_error_with_its_line() {
    let dir = scratch_dir();
    let output = import(&dir, "a.test {\n\treverse_proxy 127.0.0.1:9000 {\n}\n", &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Caddyfile:1: this { is never closed"),
        "{stderr}"
    );
    let output = import(&dir, "a.test {\n\timport missing-snippet\n}\n", &[]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("Caddyfile:2: import missing-snippet"));
}

/// `caddy run` on a Caddyfile, killed on drop.
struct Caddy {
    child: Child,
    address: SocketAddr,
    log: PathBuf,
    /// Caddy's home: its data (the internal CA and certificates it issues
    /// in the background) and its log, kept for as long as it runs.
    _home: crate::common::Scratch,
}

impl Caddy {
    /// Starts Caddy with its home and data in a scratch directory, and
    /// waits until `probe` (a path on `host`) answers.
    async fn start(caddyfile: &Path, address: SocketAddr, host: &str, probe: &str) -> Caddy {
        Self::start_with_env(caddyfile, address, host, probe, &[]).await
    }

    /// As [`Caddy::start`], with these environment variables set: the
    /// Caddyfile's `{$VAR}` placeholders read them.
    async fn start_with_env(
        caddyfile: &Path,
        address: SocketAddr,
        host: &str,
        probe: &str,
        env: &[(&str, &str)],
    ) -> Caddy {
        let home = scratch_dir();
        let log = home.join("caddy.log");
        let child = Command::new("caddy")
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(caddyfile)
            .env("HOME", &home)
            .env("XDG_DATA_HOME", home.join("data"))
            .env("XDG_CONFIG_HOME", home.join("config"))
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run caddy ({e}); install Debian's caddy package (scripts/test.sh does)"
                )
            });
        let mut caddy = Caddy {
            child,
            address,
            log,
            _home: home,
        };
        caddy.wait_ready(host, probe).await;
        caddy
    }

    async fn wait_ready(&mut self, host: &str, probe: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("caddy exited with {status}:\n{}", self.log_text());
            }
            if TcpStream::connect(self.address).is_ok()
                && send(self.address, "GET", host, probe, &[]).await.status == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "caddy did not answer on {}:\n{}",
                self.address,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until Caddy completes a TLS handshake for `host` on `port`:
    /// it issues a `tls internal` certificate in the background after it
    /// starts answering plain HTTP, and until then it refuses handshakes
    /// with an internal-error alert.
    async fn wait_tls_ready(&mut self, port: u16, host: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("caddy exited with {status}:\n{}", self.log_text());
            }
            match tls_client(port, host)
                .get(format!("https://{host}:{port}/"))
                .send()
                .await
            {
                Ok(_) => return,
                Err(error) => assert!(
                    Instant::now() < deadline,
                    "caddy did not complete a TLS handshake for {host} on {port}: {error}\n{}",
                    self.log_text()
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The small Caddyfile both proxies serve, listening on `port`.
fn differential_caddyfile(port: u16, upstream: SocketAddr) -> String {
    format!(
        r#"{{
	admin off
	auto_https off
}}

http://app.test:{port} {{
	bind 127.0.0.1
	header X-Frame-Options DENY
	header -X-Served-By
	respond /health "healthy" 200
	redir /old /new 301
	redir /moved https://{{host}}{{uri}}
	rewrite /api/* /v2{{path}}
	reverse_proxy {upstream} {{
		header_up X-Env prod
		header_up -X-Debug
		header_down X-Proxy caddyfile
	}}
}}

http://vhost.test:{port} {{
	bind 127.0.0.1
	reverse_proxy {upstream} {{
		header_up Host {{upstream_hostport}}
	}}
}}
"#
    )
}

/// A request of the differential test: method, host, path and query, headers.
type Exchange<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)]);

/// What the differential test compares of one exchange.
fn comparable(answer: &Answer) -> Value {
    let headers = [
        "x-frame-options",
        "x-content-type-options",
        "x-site",
        "x-gateway",
        "x-served-by",
        "x-proxy",
        "location",
        "content-type",
    ];
    let response: serde_json::Map<String, Value> = headers
        .iter()
        .map(|name| {
            (
                name.to_string(),
                answer.header(name).map_or(Value::Null, |v| v.into()),
            )
        })
        .collect();
    let mut compared = serde_json::json!({ "status": answer.status, "response": response });
    if answer.header("content-type") == Some("application/json") {
        let echo = answer.echo();
        let upstream_headers = [
            "host",
            "x-env",
            "x-debug",
            "x-real-ip",
            "x-original-host",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
        ];
        let seen: serde_json::Map<String, Value> = upstream_headers
            .iter()
            .map(|name| {
                (
                    name.to_string(),
                    echo["headers"].get(name).cloned().unwrap_or(Value::Null),
                )
            })
            .collect();
        compared["upstream"] = serde_json::json!({
            "method": echo["method"],
            "path": echo["path"],
            "query": echo["query"],
            "headers": seen,
        });
    } else {
        compared["body"] = answer.body.clone().into();
    }
    compared
}

#[tokio::test(flavor = "multi_thread")]
async fn caddy_and_sluice_serve_one_caddyfile_alike() {
    let up = upstreams(&["echo"]).await;
    let upstream = up[0].address;

    let caddy_port = free_port();
    let caddy_dir = scratch_dir();
    let caddy_file = caddy_dir.join("Caddyfile");
    std::fs::write(&caddy_file, differential_caddyfile(caddy_port, upstream)).unwrap();
    let caddy = Caddy::start(
        &caddy_file,
        SocketAddr::from(([127, 0, 0, 1], caddy_port)),
        "app.test",
        "/health",
    )
    .await;

    let sluice_port = free_port();
    let dir = scratch_dir();
    let config = import_and_check(&dir, &differential_caddyfile(sluice_port, upstream));
    let sluice_address = SocketAddr::from(([127, 0, 0, 1], sluice_port));
    // The Caddyfile turns the admin endpoint off; the harness's admin
    // address is unused.
    let sluice = Proxy::spawn(
        sluice_address,
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        config,
        dir.join("state"),
        &[],
    );

    let exchanges: &[Exchange] = &[
        ("GET", "app.test", "/hello?x=1&y=two", &[("x-debug", "1")]),
        ("POST", "app.test", "/submit", &[]),
        ("GET", "app.test", "/api/users?page=2", &[]),
        ("GET", "app.test", "/health", &[]),
        ("GET", "app.test", "/old", &[]),
        ("GET", "app.test:8443", "/moved?a=1", &[]),
        ("GET", "vhost.test", "/v?k=v", &[("x-env", "client")]),
    ];
    for (method, host, path, headers) in exchanges {
        let from_caddy = send(caddy.address, method, host, path, headers).await;
        let from_sluice = send(sluice.address, method, host, path, headers).await;
        assert_eq!(
            comparable(&from_sluice),
            comparable(&from_caddy),
            "{method} {host}{path}: Sluice (left) and Caddy (right) differ"
        );
    }
    // The comparison saw what the Caddyfile asks for, not two equal failures.
    let answer = send(sluice.address, "GET", "app.test", "/api/users?page=2", &[]).await;
    assert_eq!(answer.echo()["path"], "/v2/api/users");
    assert_eq!(answer.header("x-frame-options"), Some("DENY"));
    let answer = send(sluice.address, "GET", "vhost.test", "/", &[]).await;
    assert_eq!(answer.echo()["headers"]["host"], upstream.to_string());
}

/// A Caddyfile shaped like the deployments Sluice replaces: snippets with
/// arguments, upstreams named by environment variables with defaults, a
/// gateway site mapping its host onto a content path, an API site with
/// `handle`, `handle_path` and `route` blocks, `uri` rewrites, exact and
/// prefix `respond`, a `redir` with placeholders, a status site bound to a
/// port of its own, and an HTTPS site with `tls internal` (each proxy with a
/// certificate of its own making). Both proxies read it unchanged; only the
/// environment differs.
const DEPLOYMENT_CADDYFILE: &str = r#"{
	admin off
	auto_https disable_redirects
	skip_install_trust
}

(secure-headers) {
	header {
		-X-Served-By
		+X-Frame-Options DENY
		X-Content-Type-Options nosniff
		X-Site {args.0}
	}
}

(json-log) {
	log {
		output stdout
		format json
	}
}

http://gateway.test:{$SITE_PORT} {
	bind 127.0.0.1
	import secure-headers gateway
	import json-log
	reverse_proxy {$GATEWAY_UPSTREAM:127.0.0.1:9} {
		rewrite /ipfs/bafybeicid{path}
		header_up X-Real-IP {remote_host}
		header_up X-Original-Host {host}
		header_down X-Gateway ipfs
	}
}

http://api.test:{$SITE_PORT} {
	bind 127.0.0.1
	import secure-headers api
	uri replace /old-name/ /new-name/
	handle_path /auth/* {
		reverse_proxy {$AUTH_UPSTREAM}
	}
	handle /api/* {
		uri strip_prefix /api
		reverse_proxy {$API_UPSTREAM}
	}
	route /old/* {
		uri replace /old/ /new/
		reverse_proxy {$API_UPSTREAM}
	}
	route /v1/* {
		uri path_regexp ^/v1/(.*)$ /version-one/$1
		reverse_proxy {$API_UPSTREAM}
	}
	respond /health "api healthy" 200
	respond /static/* "static" 200
	redir /moved https://{host}{uri} 308
	reverse_proxy {$API_UPSTREAM}
}

http://:{$STATUS_PORT} {
	bind 127.0.0.1
	respond /health "OK" 200
}

https://secure.test:{$TLS_PORT} {
	bind 127.0.0.1
	tls internal
	import secure-headers secure
	respond /health "secure" 200
	reverse_proxy {$API_UPSTREAM} {
		header_up X-Env tls
	}
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn caddy_and_sluice_serve_a_deployment_caddyfile_alike() {
    let up = upstreams(&["gateway", "auth", "api"]).await;
    let upstream = |i: usize| up[i].address.to_string();
    let (gateway, auth, api) = (upstream(0), upstream(1), upstream(2));
    let env = |site: u16, status: u16, tls: u16| -> Vec<(String, String)> {
        vec![
            ("SITE_PORT".into(), site.to_string()),
            ("STATUS_PORT".into(), status.to_string()),
            ("TLS_PORT".into(), tls.to_string()),
            ("GATEWAY_UPSTREAM".into(), gateway.clone()),
            ("AUTH_UPSTREAM".into(), auth.clone()),
            ("API_UPSTREAM".into(), api.clone()),
        ]
    };

    let (caddy_site, caddy_status, caddy_tls) = (free_port(), free_port(), free_port());
    let caddy_env = env(caddy_site, caddy_status, caddy_tls);
    let caddy_dir = scratch_dir();
    let caddy_file = caddy_dir.join("Caddyfile");
    std::fs::write(&caddy_file, DEPLOYMENT_CADDYFILE).unwrap();
    let mut caddy = Caddy::start_with_env(
        &caddy_file,
        SocketAddr::from(([127, 0, 0, 1], caddy_site)),
        "api.test",
        "/health",
        &borrowed(&caddy_env),
    )
    .await;

    let (sluice_site, sluice_status, sluice_tls) = (free_port(), free_port(), free_port());
    let sluice_env = env(sluice_site, sluice_status, sluice_tls);
    let dir = scratch_dir();
    // The gateway's header_up placeholders need the headers plugin, which
    // the import asks to be copied next to the config.
    copy_headers_plugin(&dir);
    let config = import_and_check_with_env(&dir, DEPLOYMENT_CADDYFILE, &borrowed(&sluice_env));
    let mut sluice = Proxy::spawn_with_env(
        SocketAddr::from(([127, 0, 0, 1], sluice_site)),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        config,
        dir.join("state"),
        &borrowed(&sluice_env),
    );
    let sluice_status_address = SocketAddr::from(([127, 0, 0, 1], sluice_status));
    sluice.wait_accepting(sluice_status_address, Duration::from_secs(10));
    sluice.wait_accepting(
        SocketAddr::from(([127, 0, 0, 1], sluice_tls)),
        Duration::from_secs(10),
    );
    let caddy_status_address = SocketAddr::from(([127, 0, 0, 1], caddy_status));

    // (on the site port rather than the status port, method, host, path, headers)
    type Case<'a> = (bool, &'a str, &'a str, &'a str, &'a [(&'a str, &'a str)]);
    let cases: &[Case] = &[
        (true, "GET", "gateway.test", "/docs/index.html?v=2", &[]),
        (true, "GET", "gateway.test", "/", &[]),
        (true, "GET", "api.test", "/auth/login?next=/home", &[]),
        (true, "GET", "api.test", "/auth/", &[]),
        (true, "GET", "api.test", "/api/users?page=2", &[]),
        (true, "POST", "api.test", "/api/orders", &[]),
        (true, "GET", "api.test", "/old/a/old/b", &[]),
        (true, "GET", "api.test", "/v1/items/7", &[]),
        (true, "GET", "api.test", "/health", &[]),
        (true, "GET", "api.test", "/healthz", &[]),
        (true, "GET", "api.test", "/health/deep", &[]),
        (true, "GET", "api.test", "/static/app.js", &[]),
        (true, "GET", "api.test", "/moved?q=1", &[]),
        (
            true,
            "GET",
            "api.test",
            "/anything/else",
            &[("x-debug", "1")],
        ),
        // The site's rewrite, then the block's own.
        (true, "GET", "api.test", "/api/old-name/x", &[]),
        (true, "GET", "api.test", "/any/old-name/y", &[]),
        (false, "GET", "status.test", "/health", &[]),
        (false, "GET", "status.test", "/health/x", &[]),
        // The API site is not served on the status port, whatever the Host.
        (false, "GET", "api.test", "/api/users", &[]),
        (false, "GET", "api.test", "/health", &[]),
    ];
    for (on_site, method, host, path, headers) in cases {
        let (to_caddy, to_sluice) = if *on_site {
            (caddy.address, sluice.address)
        } else {
            (caddy_status_address, sluice_status_address)
        };
        let from_caddy = send(to_caddy, method, host, path, headers).await;
        let from_sluice = send(to_sluice, method, host, path, headers).await;
        assert_eq!(
            comparable(&from_sluice),
            comparable(&from_caddy),
            "{method} {host}{path} on the {} port: Sluice (left) and Caddy (right) differ",
            if *on_site { "site" } else { "status" }
        );
    }
    // The HTTPS site, each proxy with its own internal certificate.
    // The client names the port in the authority, and each proxy listens on
    // its own: the port is left out of the comparison.
    let without_port = |answer: &Answer, port: u16| {
        comparable(answer)
            .to_string()
            .replace(&format!("secure.test:{port}"), "secure.test:PORT")
    };
    caddy.wait_tls_ready(caddy_tls, "secure.test").await;
    for path in ["/health", "/profile?tab=2", "/old-name/z"] {
        let from_caddy = send_tls(caddy_tls, "secure.test", path).await;
        let from_sluice = send_tls(sluice_tls, "secure.test", path).await;
        assert_eq!(
            without_port(&from_sluice, sluice_tls),
            without_port(&from_caddy, caddy_tls),
            "GET https://secure.test{path}: Sluice (left) and Caddy (right) differ"
        );
    }
    let answer = send_tls(sluice_tls, "secure.test", "/profile").await;
    assert_eq!(answer.echo()["headers"]["x-env"], "tls");
    assert_eq!(answer.echo()["headers"]["x-forwarded-proto"], "https");

    // The comparison saw what the Caddyfile asks for, not two equal failures.
    let answer = send(sluice.address, "GET", "gateway.test", "/docs/a?v=2", &[]).await;
    let echo = answer.echo();
    assert_eq!(echo["upstream"], "gateway");
    assert_eq!(echo["path"], "/ipfs/bafybeicid/docs/a");
    assert_eq!(echo["headers"]["x-real-ip"], "127.0.0.1");
    assert_eq!(answer.header("x-site"), Some("gateway"));
    let answer = send(sluice.address, "GET", "api.test", "/old/a/old/b", &[]).await;
    assert_eq!(answer.echo()["path"], "/new/a/new/b");
    let answer = send(sluice.address, "GET", "api.test", "/api/old-name/x", &[]).await;
    assert_eq!(answer.echo()["path"], "/new-name/x");
    let answer = send(sluice_status_address, "GET", "api.test", "/api/users", &[]).await;
    assert_eq!((answer.status, answer.body.as_str()), (200, ""));
}

/// `env` as the string pairs a command takes.
fn borrowed(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Every construct of a real deployment the import maps, TLS and globals
/// included, with upstreams named by DNS inside a container network.
const EVERY_CONSTRUCT: &str = r#"{
	email ops@example.com
	acme_ca https://acme-staging-v02.api.letsencrypt.org/directory
	admin 127.0.0.1:2099
}

(common) {
	header {
		-Server
		+X-Frame-Options DENY
		X-Content-Type-Options nosniff
	}
	log {
		output stdout
		format json
	}
}

gateway.example.com {
	import common
	tls {
		dns cloudflare {env.CF_API_TOKEN}
	}
	reverse_proxy {$GATEWAY_UPSTREAM:ipfs-gateway.sluice.invalid:8080} {
		rewrite * /ipfs/bafybeigdyrzt{path}
		header_up Host {upstream_hostport}
		header_up X-Real-IP {remote_host}
		header_down -Server
		header_down +Via sluice
	}
}

api.example.com {
	import common
	tls internal
	handle_path /auth/* {
		reverse_proxy auth-api.sluice.invalid:9000
	}
	handle /api/* {
		uri strip_prefix /api
		reverse_proxy api-backend.sluice.invalid:8000
	}
	route /old/* {
		uri replace /old/ /new/
		reverse_proxy api-backend.sluice.invalid:8000
	}
	route /v1/* {
		uri path_regexp ^/v([0-9]+)/(.*)$ /version/$1/$2
		reverse_proxy api-backend.sluice.invalid:8000
	}
	respond /health "OK" 200
	respond /static/* "static" 200
	redir /moved https://{host}{uri} 308
	reverse_proxy api-backend.sluice.invalid:8000
}

www.example.com {
	tls certs/www.pem certs/www.key
	redir https://example.com{uri} 301
}

:8080 {
	respond /health "OK" 200
}
"#;

#[test]
fn a_deployment_caddyfile_imports_whole_and_checks_with_unresolved_names_as_warnings() {
    let dir = scratch_dir();
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["www.example.com".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("certs/www.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("certs/www.key"), key.serialize_pem()).unwrap();
    copy_headers_plugin(&dir);

    let output = import(&dir, EVERY_CONSTRUCT, &["-o", "sluice.toml"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("unsupported"), "{stderr}");
    let config = dir.join("sluice.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(!text.contains("# UNSUPPORTED Caddyfile"), "{text}");

    let check = Command::new(sluice_binary())
        .current_dir(&dir)
        .args(["check", "--config"])
        .arg(&config)
        .env("CF_API_TOKEN", "unused-by-check")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{stderr}\n{text}");
    for name in [
        "ipfs-gateway.sluice.invalid",
        "auth-api.sluice.invalid",
        "api-backend.sluice.invalid",
    ] {
        assert!(
            stderr.contains(&format!("\"{name}\" does not resolve")),
            "no warning for {name}:\n{stderr}"
        );
    }
    assert!(
        stderr
            .lines()
            .all(|line| !line.contains("warning") || line.contains(": line ")),
        "every warning names its line:\n{stderr}"
    );
}

/// Copies the `headers` plugin into `dir/plugins`, where an imported config
/// whose header values use request placeholders looks for it.
fn copy_headers_plugin(dir: &Path) {
    let plugins = crate::plugins::plugin_dir(&[("headers", "sluice-plugin-headers")]);
    std::fs::create_dir_all(dir.join("plugins")).unwrap();
    std::fs::copy(
        plugins.join("headers.wasm"),
        dir.join("plugins/headers.wasm"),
    )
    .unwrap();
}

/// A GET over HTTPS to `host` on a loopback `port`, trusting whatever
/// certificate is presented: each proxy serves `tls internal` with one of
/// its own making.
async fn send_tls(port: u16, host: &str, path: &str) -> Answer {
    let response = tls_client(port, host)
        .get(format!("https://{host}:{port}{path}"))
        .send()
        .await
        .unwrap();
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap(),
    }
}

/// A client that sends `host` to a loopback `port` and trusts whatever
/// certificate is presented.
fn tls_client(port: u16, host: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(true)
        .resolve(host, SocketAddr::from(([127, 0, 0, 1], port)))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}
