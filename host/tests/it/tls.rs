//! TLS termination: certificates chosen by SNI, the default certificate,
//! the minimum version (by default and configured), ALPN, certificate files replaced under a running
//! proxy, and the redirect to HTTPS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::common::{free_port, get, scratch_dir, upstreams, Proxy};

/// A self-signed certificate for `names`, written as `stem.pem` and
/// `stem.key` in `dir`; returns its DER.
fn certificate(dir: &Path, stem: &str, names: &[&str]) -> CertificateDer<'static> {
    let generated =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    write_atomically(
        &dir.join(format!("{stem}.key")),
        &generated.signing_key.serialize_pem(),
    );
    write_atomically(&dir.join(format!("{stem}.pem")), &generated.cert.pem());
    generated.cert.der().clone()
}

fn write_atomically(path: &Path, text: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// A client trusting `roots`, speaking the given TLS versions and ALPN.
pub(crate) fn connector(
    roots: &[CertificateDer<'static>],
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> TlsConnector {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

pub(crate) type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// Opens a TLS connection to `address` for `server_name`.
pub(crate) async fn connect(
    connector: &TlsConnector,
    address: SocketAddr,
    server_name: &str,
) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect(address).await?;
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    connector.connect(name, tcp).await
}

/// The leaf certificate the server presented.
pub(crate) fn presented(stream: &Tls) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

/// Sends a keep-alive HTTP/1.1 GET and reads one response: its status and
/// the `x-served-by` of the echo upstream.
pub(crate) async fn request(stream: &mut Tls, host: &str, path: &str) -> (u16, String) {
    let message = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\n\r\n");
    stream.write_all(message.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(n > 0, "connection closed mid-response");
        received.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&received);
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let head = &text[..end];
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        if received.len() >= end + 4 + length {
            let status = head[9..12].parse().unwrap();
            let served_by = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("x-served-by:")
                        .map(|v| v.trim().to_string())
                })
                .unwrap_or_default();
            return (status, served_by);
        }
    }
}

/// A TLS listener and three routes with their own certificates.
fn config(tls: SocketAddr, dir: &Path, up: &[sluice_demo::upstream::Upstream]) -> String {
    let route = |name: &str, hosts: &str, stem: &str, upstream: usize| {
        format!(
            "[placements.{name}]\nendpoints = [{{ address = \"{}\" }}]\n[[routes]]\nname = \"{name}\"\nhosts = [{hosts}]\nplacement = \"{name}\"\ntls = {{ cert = \"{dir}/{stem}.pem\", key = \"{dir}/{stem}.key\" }}\n",
            up[upstream].address,
            dir = dir.display(),
        )
    };
    format!(
        "[[listeners]]\naddress = \"{tls}\"\ntls = true\n{}{}{}",
        route("alpha", "\"a.test\"", "a", 0),
        route("beta", "\"b.test\"", "b", 1),
        route("wild", "\"*.wild.test\"", "wild", 2),
    )
}

fn tls_proxy(tls: SocketAddr, dir: &Path, up: &[sluice_demo::upstream::Upstream]) -> Proxy {
    Proxy::start(&config(tls, dir, up))
}

#[tokio::test(flavor = "multi_thread")]
async fn sni_picks_among_three_certificates_and_unknown_names_fail() {
    let up = upstreams(&["alpha", "beta", "wild"]).await;
    let dir = scratch_dir();
    let a = certificate(&dir, "a", &["a.test"]);
    let b = certificate(&dir, "b", &["b.test"]);
    let wild = certificate(&dir, "wild", &["*.wild.test"]);
    // The default certificate also names unknown.test (which no route
    // serves) so the client can verify what it is given.
    let default = certificate(&dir, "default", &["default.test", "unknown.test"]);
    let tls = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let proxy = tls_proxy(tls, &dir, &up);
    let client = connector(
        &[a.clone(), b.clone(), wild.clone(), default.clone()],
        rustls::ALL_VERSIONS,
        &[],
    );

    for (name, expected, upstream) in [
        ("a.test", &a, "alpha"),
        ("b.test", &b, "beta"),
        ("x.wild.test", &wild, "wild"),
    ] {
        let mut stream = connect(&client, tls, name)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&presented(&stream), expected, "{name}");
        let (status, served_by) = request(&mut stream, name, "/").await;
        assert_eq!(status, 200, "{name}");
        assert_eq!(served_by, upstream, "{name}");
    }
    // No certificate for the name and no default: the handshake fails,
    // and the proxy keeps serving.
    assert!(connect(&client, tls, "unknown.test").await.is_err());
    assert!(connect(&client, tls, "deep.x.wild.test").await.is_err());
    assert!(connect(&client, tls, "a.test").await.is_ok());

    // With a default certificate, unknown names get it.
    let version = proxy.admin("GET", "/status").await.1["version"]
        .as_str()
        .unwrap()
        .to_string();
    let default_table = format!(
        "[default_certificate]\ncert = \"{0}/default.pem\"\nkey = \"{0}/default.key\"\n",
        dir.display()
    );
    proxy.rewrite(&format!("{}{}", config(tls, &dir, &up), default_table));
    proxy.wait_version_change(&version).await;
    let stream = connect(&client, tls, "unknown.test").await.unwrap();
    assert_eq!(presented(&stream), default);

    let (_, status) = proxy.admin("GET", "/status").await;
    let listed: Vec<_> = status["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["names"].clone())
        .collect();
    assert_eq!(
        listed,
        vec![
            serde_json::json!(["a.test"]),
            serde_json::json!(["b.test"]),
            serde_json::json!(["*.wild.test"]),
            serde_json::json!(["*"]),
        ]
    );
    assert!(status["certificates"][0]["not_after"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
}

/// The three routes of [`config`] behind a TLS listener, with `server` as
/// the `[server]` table: the proxy, its TLS address, the certificate
/// `a.test` is served with, and the upstreams, to be kept alive.
async fn three_sites(
    server: &str,
) -> (
    Proxy,
    SocketAddr,
    CertificateDer<'static>,
    Vec<sluice_demo::upstream::Upstream>,
) {
    let up = upstreams(&["alpha", "beta", "wild"]).await;
    let dir = scratch_dir();
    let a = certificate(&dir, "a", &["a.test"]);
    certificate(&dir, "b", &["b.test"]);
    certificate(&dir, "wild", &["*.wild.test"]);
    let tls = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let proxy = Proxy::start(&format!("[server]\n{server}\n{}", config(tls, &dir, &up)));
    (proxy, tls, a, up)
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_versions_and_alpn() {
    let (_proxy, tls, a, _up) = three_sites("").await;

    let tls12 = connector(std::slice::from_ref(&a), &[&rustls::version::TLS12], &[]);
    let stream = connect(&tls12, tls, "a.test").await.unwrap();
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let tls13 = connector(
        std::slice::from_ref(&a),
        rustls::ALL_VERSIONS,
        &[b"h2", b"http/1.1"],
    );
    let stream = connect(&tls13, tls, "a.test").await.unwrap();
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_connection_idle_between_requests_serves_the_next_and_pipelined_ones() {
    let (_proxy, tls, a, _up) = three_sites("header_read_timeout = \"1s\"").await;
    let connector = connector(std::slice::from_ref(&a), rustls::ALL_VERSIONS, &[]);
    let mut stream = connect(&connector, tls, "a.test").await.unwrap();
    assert_eq!(request(&mut stream, "a.test", "/").await.0, 200);
    // Idle past the header timeout, within the keep-alive one: the wait
    // for the next request is the keep-alive wait.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(request(&mut stream, "a.test", "/").await.0, 200);
    // Two requests in one TLS record: the second is decrypted with the
    // first and must be answered without more bytes from the client.
    stream
        .write_all(
            b"GET /1 HTTP/1.1\r\nhost: a.test\r\n\r\nGET /2 HTTP/1.1\r\nhost: a.test\r\n\r\n",
        )
        .await
        .unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 8192];
    while received
        .windows(12)
        .filter(|w| w == b"HTTP/1.1 200")
        .count()
        < 2
    {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .expect("the second pipelined request was not answered")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&buffer[..n]);
    }
}

/// Whether `error` is the server refusing the client's TLS versions.
fn is_protocol_version_alert(error: &std::io::Error) -> bool {
    matches!(
        error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::AlertReceived(
            rustls::AlertDescription::ProtocolVersion
        ))
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn min_tls_version_13_refuses_tls12_clients_at_the_handshake() {
    let up = upstreams(&["alpha", "beta", "wild"]).await;
    let dir = scratch_dir();
    let a = certificate(&dir, "a", &["a.test"]);
    certificate(&dir, "b", &["b.test"]);
    certificate(&dir, "wild", &["*.wild.test"]);
    // Two HTTPS listeners on the same routes: the default minimum and 1.3.
    let default = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let strict = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _proxy = Proxy::start(&format!(
        "[[listeners]]\naddress = \"{strict}\"\ntls = true\nmin_tls_version = \"1.3\"\n{}",
        config(default, &dir, &up)
    ));
    let tls12 = connector(std::slice::from_ref(&a), &[&rustls::version::TLS12], &[]);
    let tls13 = connector(
        std::slice::from_ref(&a),
        &[&rustls::version::TLS13],
        &[b"h2", b"http/1.1"],
    );

    let error = connect(&tls12, strict, "a.test").await.unwrap_err();
    assert!(is_protocol_version_alert(&error), "{error:?}");
    let stream = connect(&tls13, strict, "a.test").await.unwrap();
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let http1 = connector(
        std::slice::from_ref(&a),
        &[&rustls::version::TLS13],
        &[b"http/1.1"],
    );
    let mut stream_h1 = connect(&http1, strict, "a.test").await.unwrap();
    assert_eq!(
        request(&mut stream_h1, "a.test", "/").await,
        (200, "alpha".to_string())
    );
    // The same connection serves a second request.
    assert_eq!(
        request(&mut stream_h1, "a.test", "/").await,
        (200, "alpha".to_string())
    );
    drop(stream);

    // HTTP/2 through the 1.3-only listener.
    let client = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_der(&a).unwrap())
        .resolve("a.test", strict)
        .min_tls_version(reqwest::tls::Version::TLS_1_3)
        .build()
        .unwrap();
    let reply = client
        .get(format!("https://a.test:{}/", strict.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.version(), reqwest::Version::HTTP_2);
    assert_eq!(reply.headers()["x-served-by"], "alpha");
    // The proxy knows the request came over TLS.
    let echo: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");

    // The default listener still takes both versions.
    for (client, version) in [
        (&tls12, rustls::ProtocolVersion::TLSv1_2),
        (&http1, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let mut stream = connect(client, default, "a.test").await.unwrap();
        assert_eq!(stream.get_ref().1.protocol_version(), Some(version));
        assert_eq!(
            request(&mut stream, "a.test", "/").await,
            (200, "alpha".to_string())
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn replaced_certificate_files_serve_without_restart_and_bad_ones_keep_the_old() {
    let up = upstreams(&["alpha", "beta", "wild"]).await;
    let dir = scratch_dir();
    let old = certificate(&dir, "a", &["a.test"]);
    certificate(&dir, "b", &["b.test"]);
    certificate(&dir, "wild", &["*.wild.test"]);
    let tls = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let proxy = tls_proxy(tls, &dir, &up);
    let pid = proxy.pid();

    // A renewed certificate for a.test (key first, then the chain: each
    // file is replaced atomically, as certificate tools do).
    let generated = rcgen::generate_simple_self_signed(vec!["a.test".to_string()]).unwrap();
    let renewed = generated.cert.der().clone();
    let client = connector(&[old.clone(), renewed.clone()], rustls::ALL_VERSIONS, &[]);
    let mut held = connect(&client, tls, "a.test").await.unwrap();
    assert_eq!(presented(&held), old);
    assert_eq!(request(&mut held, "a.test", "/").await.0, 200);

    write_atomically(&dir.join("a.key"), &generated.signing_key.serialize_pem());
    write_atomically(&dir.join("a.pem"), &generated.cert.pem());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stream = connect(&client, tls, "a.test").await.unwrap();
        if presented(&stream) == renewed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The connection opened before the change still works, in the same process.
    assert_eq!(request(&mut held, "a.test", "/").await.0, 200);
    assert_eq!(proxy.pid(), pid);

    // A broken certificate file is refused; the renewed one keeps serving.
    write_atomically(&dir.join("a.pem"), "not a certificate\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, config) = proxy.admin("GET", "/config").await;
        let error = config["last_error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if error.contains("routes[0].tls.cert") {
            assert!(error.contains("a.pem"), "{error}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the broken file was never reported: {config}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stream = connect(&client, tls, "a.test").await.unwrap();
    assert_eq!(presented(&stream), renewed);
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_is_redirected_to_https_when_the_route_asks() {
    let up = upstreams(&["alpha"]).await;
    let proxy = Proxy::start(&format!(
        "[placements.o]\nendpoints = [{{ address = \"{}\" }}]\n[[routes]]\nhosts = [\"secure.test\"]\nplacement = \"o\"\nredirect_https = true\n[[routes]]\nplacement = \"o\"\n",
        up[0].address
    ));
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let reply = client
        .post(proxy.url("/cart?item=7"))
        .header("host", "secure.test:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 308);
    assert_eq!(
        reply.headers()["location"],
        "https://secure.test/cart?item=7"
    );
    // Other routes are served as before.
    assert_eq!(get(&proxy, "other.test", "/", &[]).await.status, 200);
}

#[test]
fn tls_config_errors_name_the_key() {
    let dir = scratch_dir();
    let config = |body: &str| -> PathBuf {
        let path = dir.join("sluice.toml");
        std::fs::write(&path, body).unwrap();
        path
    };
    let check = |path: &Path| -> String {
        let output = std::process::Command::new(crate::common::sluice_binary())
            .args(["check", "--config"])
            .arg(path)
            .output()
            .unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let text = check(&config(
        "[[listeners]]\naddress = \"127.0.0.1:1\"\ntls = true\n[placements.o]\nendpoints = [{ address = \"127.0.0.1:2\" }]\n[[routes]]\nplacement = \"o\"\n",
    ));
    assert!(
        text.contains(":3: listeners[0].tls: no certificate to serve"),
        "{text}"
    );
    let text = check(&config(&format!(
        "[[listeners]]\naddress = \"127.0.0.1:1\"\ntls = true\n[placements.o]\nendpoints = [{{ address = \"127.0.0.1:2\" }}]\n[[routes]]\nhosts = [\"a.test\"]\nplacement = \"o\"\ntls = {{ cert = \"{0}/missing.pem\", key = \"{0}/missing.key\" }}\n",
        dir.display()
    )));
    assert!(
        text.contains(":9: routes[0].tls.cert: cannot read"),
        "{text}"
    );
    assert!(text.contains("missing.pem"), "{text}");
    certificate(&dir, "a", &["a.test"]);
    let text = check(&config(&format!(
        "[[listeners]]\naddress = \"127.0.0.1:1\"\ntls = true\nmin_tls_version = \"1.1\"\n[placements.o]\nendpoints = [{{ address = \"127.0.0.1:2\" }}]\n[[routes]]\nhosts = [\"a.test\"]\nplacement = \"o\"\ntls = {{ cert = \"{0}/a.pem\", key = \"{0}/a.key\" }}\n",
        dir.display()
    )));
    assert!(
        text.contains(":4: listeners[0].min_tls_version: \"1.1\" is not a TLS version"),
        "{text}"
    );
}
