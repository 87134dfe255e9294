//! TLS: the certificate lookup of each handshake, with 10 and with 10,000
//! certificates, to show it does not grow with their number; and a whole
//! HTTPS exchange through a real Sluice server on loopback (new connection,
//! full handshake, one GET, the whole response), beside the same over plain
//! HTTP.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, SupportedProtocolVersion};
use sluice::control::ConfigSource;
use sluice::server::RunOptions;
use sluice::tls::certificates::{Certificate, CertificateTable};
use sluice_demo::upstream::Upstream;

/// A table of `count` certificates, `host-N.example.com` each, plus a
/// wildcard one; they share one key pair, which the lookup never reads.
fn table(count: usize) -> CertificateTable {
    let generated =
        rcgen::generate_simple_self_signed(vec!["bench.example.com".to_string()]).unwrap();
    let template = Certificate::from_pem(
        generated.cert.pem().as_bytes(),
        generated.signing_key.serialize_pem().as_bytes(),
        Vec::new(),
        "the bench certificate",
    )
    .unwrap();
    let mut table = CertificateTable::default();
    for i in 0..count {
        let mut certificate = template.clone();
        certificate.info.names = vec![format!("host-{i}.example.com")];
        table.insert(certificate);
    }
    let mut wildcard = template;
    wildcard.info.names = vec!["*.tenants.example.com".to_string()];
    table.insert(wildcard);
    table
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("tls_certificate_lookup");
    for count in [10, 10_000] {
        let table = table(count);
        let exact = format!("host-{}.example.com", count / 2);
        group.bench_function(format!("exact_name_{count}_certificates"), |b| {
            b.iter(|| black_box(table.lookup(Some(black_box(&exact)))))
        });
        group.bench_function(format!("wildcard_name_{count}_certificates"), |b| {
            b.iter(|| black_box(table.lookup(Some(black_box("acme.tenants.example.com")))))
        });
    }
    group.finish();
}

/// A Sluice server running in this process on loopback, with a plain and an
/// HTTPS listener in front of a demo upstream.
struct Server {
    plain: SocketAddr,
    https: SocketAddr,
    /// The certificate the HTTPS listener serves for [`SERVER_NAME`].
    certificate: CertificateDer<'static>,
    /// The upstream, and the runtime it runs on.
    _upstream: (Upstream, tokio::runtime::Runtime),
    /// Holds the config and certificate files.
    dir: PathBuf,
}

/// The name the bench's route answers and its certificate holds.
const SERVER_NAME: &str = "bench.example.com";

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    fn start() -> Server {
        let upstream_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let upstream = upstream_runtime
            .block_on(sluice_demo::upstream::spawn(
                "origin",
                "127.0.0.1:0".parse().unwrap(),
            ))
            .unwrap();
        let dir = std::env::temp_dir().join(format!("sluice-bench-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // An ECDSA P-256 certificate, as ACME CAs issue by default.
        let generated = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()]).unwrap();
        std::fs::write(dir.join("cert.pem"), generated.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), generated.signing_key.serialize_pem()).unwrap();
        let plain = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let https = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = dir.join("sluice.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nthreads = 1\naccess_log = false\n\n[[listeners]]\naddress = \"{plain}\"\n\n[[listeners]]\naddress = \"{https}\"\ntls = true\n\n[placements.origin]\nendpoints = [{{ address = \"{}\" }}]\n\n[[routes]]\nhosts = [\"{SERVER_NAME}\"]\nplacement = \"origin\"\nexplain = false\ntls = {{ cert = \"{1}/cert.pem\", key = \"{1}/key.pem\" }}\n",
                upstream.address,
                dir.display(),
            ),
        )
        .unwrap();
        let options = RunOptions {
            source: ConfigSource::File(config),
            state_dir: None,
            poll_interval: Duration::from_secs(60),
            upgrade: false,
            instance_name: None,
        };
        // The server runs until the bench process exits.
        std::thread::spawn(move || {
            if let Err(error) = sluice::server::run(options) {
                panic!("sluice did not start: {error:#}");
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(https).is_err() || TcpStream::connect(plain).is_err() {
            assert!(Instant::now() < deadline, "sluice did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Server {
            plain,
            https,
            certificate: generated.cert.der().clone(),
            _upstream: (upstream, upstream_runtime),
            dir,
        }
    }

    /// A client speaking only `version`, HTTP/1.1 through ALPN, and never
    /// resuming a session, so every connection makes a full handshake.
    fn client(&self, version: &'static SupportedProtocolVersion) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.certificate.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.resumption = Resumption::disabled();
        Arc::new(config)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends a GET for the upstream's cheapest answer on `stream` and reads the
/// whole response; panics unless it is a 200.
fn get(stream: &mut (impl Read + Write)) {
    let request = format!("GET /health HTTP/1.1\r\nhost: {SERVER_NAME}\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut received = Vec::with_capacity(1024);
    let mut buffer = [0u8; 4096];
    loop {
        let n = stream.read(&mut buffer).unwrap();
        assert!(n > 0, "connection closed mid-response");
        received.extend_from_slice(&buffer[..n]);
        let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = std::str::from_utf8(&received[..end]).unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().unwrap())
            })
            .expect("a content-length");
        if received.len() >= end + 4 + length {
            return;
        }
    }
}

/// New TCP connection, full handshake, one GET, the whole response.
fn handshake_and_get(c: &mut Criterion) {
    let server = Server::start();
    let mut group = c.benchmark_group("tls_handshake_and_get");
    for (case, version) in [
        ("tls13_full_handshake", &rustls::version::TLS13),
        ("tls12_full_handshake", &rustls::version::TLS12),
    ] {
        let config = server.client(version);
        let name = ServerName::try_from(SERVER_NAME).unwrap();
        group.bench_function(case, |b| {
            b.iter(|| {
                let mut tcp = TcpStream::connect(server.https).unwrap();
                tcp.set_nodelay(true).unwrap();
                let mut tls = ClientConnection::new(config.clone(), name.clone()).unwrap();
                // The handshake runs on the first write.
                get(&mut rustls::Stream::new(&mut tls, &mut tcp));
                assert_eq!(tls.protocol_version(), Some(version.version));
            })
        });
    }
    // The same without TLS, for what the handshake adds.
    group.bench_function("plain_http_baseline", |b| {
        b.iter(|| {
            let mut tcp = TcpStream::connect(server.plain).unwrap();
            tcp.set_nodelay(true).unwrap();
            get(&mut tcp);
        })
    });
    group.finish();
}

criterion_group!(benches, lookup, handshake_and_get);
criterion_main!(benches);
