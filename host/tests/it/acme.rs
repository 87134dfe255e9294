//! ACME against a real CA: Pebble and pebble-challtestsrv (Debian's `pebble`
//! package) on loopback ports, with a stand-in for the Cloudflare v4 API that
//! writes its TXT records into challtestsrv's DNS, so Pebble's DNS-01
//! validation really resolves them.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use sluice::tls::acme::storage::FileStorage;
use sluice::tls::acme::{
    Acme, AcmeConfig, ChallengeKind, CloudflareConfig, Http01Responses, Issued, RetryBackoff,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::common::{
    self, free_port, render, scratch_dir, upstreams, NotListening, Proxy, Scratch,
};
use super::tls::{connect, connector, presented, request};

/// The token the Cloudflare stand-in accepts.
const TOKEN: &str = "cf-test-token-3f9a1c";
/// The zone the stand-in serves.
const ZONE: &str = "example.test";
const ZONE_ID: &str = "023e105f4ecef8ad9ca31a8372d0c353";

/// Pebble and pebble-challtestsrv, stopped on drop.
pub(super) struct Ca {
    directory: String,
    ca_root: PathBuf,
    /// Where Pebble sends HTTP-01 validation requests.
    pub(super) http_port: u16,
    /// challtestsrv's DNS server, which Pebble resolves names with.
    dns: SocketAddr,
    /// challtestsrv's management API.
    pub(super) management: SocketAddr,
    /// Pebble's management API, which serves its root at `/roots/0`.
    pebble_management: SocketAddr,
    /// Where the TLS certificate and key of Pebble's own HTTPS (for
    /// `localhost` and 127.0.0.1, signed by `ca_root`) are.
    dir: Scratch,
    pebble: Child,
    challtestsrv: Child,
}

impl Ca {
    /// Starts both servers; Pebble issues certificates valid for `validity`.
    /// When another process holds one of the ports chosen, both start
    /// again on new ones.
    pub(super) fn start(validity: Duration) -> Ca {
        let mut attempts = 0;
        loop {
            match Self::try_start(validity) {
                Ok(ca) => return ca,
                Err(lost) if attempts < 3 => {
                    attempts += 1;
                    eprintln!("starting Pebble again on other ports: {lost}");
                }
                Err(lost) => panic!("{lost}"),
            }
        }
    }

    /// Starts both servers and waits until they accept connections. `Err`
    /// when one exits because its port is taken; any other exit, or 30 s
    /// without listening, fails the test.
    fn try_start(validity: Duration) -> Result<Ca, String> {
        let dir = scratch_dir();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Sluice test root");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        let cert = params.signed_by(&key, &ca).unwrap();
        let ca_root = dir.join("root.pem");
        std::fs::write(&ca_root, ca.pem()).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();

        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let dns = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let management = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let pebble_management = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let http_port = free_port();
        let config = json!({
            "pebble": {
                "listenAddress": listen.to_string(),
                "managementListenAddress": pebble_management.to_string(),
                "certificate": dir.join("cert.pem"),
                "privateKey": dir.join("key.pem"),
                "httpPort": http_port,
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "certificateValidityPeriod": validity.as_secs(),
            }
        });
        let config_path = dir.join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();

        let spawn = |command: &mut Command, log: &str| {
            let log = std::fs::File::create(dir.join(log)).unwrap();
            command
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start {command:?} ({e}); install Debian's pebble package (scripts/test.sh does)")
                })
        };
        let challtestsrv = spawn(
            Command::new("pebble-challtestsrv").args([
                "-management",
                &management.to_string(),
                "-dns01",
                &dns.to_string(),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
            ]),
            "challtestsrv.log",
        );
        let pebble = spawn(
            Command::new("pebble")
                .arg("-config")
                .arg(&config_path)
                .args(["-dnsserver", &dns.to_string()])
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .env("PEBBLE_AUTHZREUSE", "0"),
            "pebble.log",
        );
        let mut started = Ca {
            directory: format!("https://{listen}/dir"),
            ca_root,
            http_port,
            dns,
            management,
            pebble_management,
            dir,
            pebble,
            challtestsrv,
        };
        for address in [listen, management, pebble_management] {
            started.wait_accepting(address)?;
        }
        // A port another process holds also accepts connections; Pebble
        // then exits at once, saying so.
        std::thread::sleep(Duration::from_millis(100));
        started.wait_accepting(listen)?;
        Ok(started)
    }

    /// Waits until `address` accepts connections. `Err` when a server
    /// exited because its port is in use; the test fails with both servers'
    /// output if one exits otherwise or 30 s pass.
    fn wait_accepting(&mut self, address: SocketAddr) -> Result<(), String> {
        let (pebble, challtestsrv, dir) = (&mut self.pebble, &mut self.challtestsrv, &self.dir);
        let log = || servers_log(dir);
        let gone = || {
            let exited = [
                ("pebble", &mut *pebble),
                ("pebble-challtestsrv", &mut *challtestsrv),
            ]
            .into_iter()
            .find_map(|(name, child)| {
                let status = child.try_wait().ok().flatten()?;
                Some(format!("{name} exited with {status}"))
            })?;
            Some(if servers_log(dir).contains("address already in use") {
                NotListening::PortHeld(format!("{exited}: a port it was given is in use"))
            } else {
                NotListening::Exited(exited)
            })
        };
        common::wait_until_accepting(address, Duration::from_secs(30), gone, log)
    }

    /// Stops Pebble, leaving challtestsrv running.
    fn stop_pebble(&mut self) {
        let _ = self.pebble.kill();
        let _ = self.pebble.wait();
    }
}

/// The output so far of the two servers a [`Ca`] runs in `dir`.
fn servers_log(dir: &Path) -> String {
    let log = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    format!(
        "pebble:\n{}\nchalltestsrv:\n{}",
        log("pebble.log"),
        log("challtestsrv.log")
    )
}

impl Drop for Ca {
    fn drop(&mut self) {
        for child in [&mut self.pebble, &mut self.challtestsrv] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What the Cloudflare stand-in has seen and holds.
#[derive(Default)]
pub(super) struct CloudflareState {
    /// Record ID → (name, content).
    pub(super) records: BTreeMap<String, (String, String)>,
    pub(super) created: usize,
    pub(super) deleted: usize,
    /// Answer record creation with `success: false` once this many
    /// records were created; `None` never.
    creates_allowed: Option<usize>,
    /// Record creations asked for, counted as they arrive.
    pub(super) create_requests: usize,
    /// While set, record creations wait before they are made: an order
    /// held in the middle.
    pub(super) hold_creates: bool,
}

/// A small Cloudflare v4 API: zone lookup, TXT create and delete, the
/// envelope, and `Authorization: Bearer` checks.
pub(super) struct Cloudflare {
    pub(super) base: String,
    state: Arc<Mutex<CloudflareState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Cloudflare {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Cloudflare {
    /// The stand-in over plain HTTP, for tests that configure [`Acme`]
    /// directly.
    pub(super) async fn start(challtestsrv: SocketAddr) -> Cloudflare {
        Self::start_with(challtestsrv, None).await
    }

    /// The stand-in over HTTPS with `ca`'s localhost certificate, as a
    /// config file needs (`acme.cloudflare.api_base` must be https://).
    pub(super) async fn start_https(ca: &Ca) -> Cloudflare {
        let chain = CertificateDer::pem_file_iter(ca.dir.join("cert.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(ca.dir.join("key.pem")).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Self::start_with(ca.management, Some(acceptor)).await
    }

    async fn start_with(
        challtestsrv: SocketAddr,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Cloudflare {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base = format!("{scheme}://{}/client/v4", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(CloudflareState::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve_cloudflare(stream, state, challtestsrv).await;
                            }
                        }
                        None => serve_cloudflare(stream, state, challtestsrv).await,
                    }
                });
            }
        });
        Cloudflare { base, state, task }
    }

    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, CloudflareState> {
        self.state.lock().unwrap()
    }

    /// Waits up to 30 s for the first record creation to reach the
    /// stand-in, failing with `log`, the log of whoever should have sent
    /// it, when none does.
    pub(super) async fn first_creation_asked(&self, log: impl Fn() -> String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.state().create_requests == 0 {
            assert!(
                Instant::now() < deadline,
                "no order reached the DNS API:\n{}",
                log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Serves the stand-in API on one connection.
async fn serve_cloudflare<S>(
    stream: S,
    state: Arc<Mutex<CloudflareState>>,
    challtestsrv: SocketAddr,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(cloudflare_api(request, &state, challtestsrv).await) }
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

fn envelope(
    status: StatusCode,
    success: bool,
    errors: Value,
    result: Value,
) -> Response<Full<Bytes>> {
    let body = json!({ "success": success, "errors": errors, "messages": [], "result": result });
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn cloudflare_api(
    request: Request<Incoming>,
    state: &Arc<Mutex<CloudflareState>>,
    challtestsrv: SocketAddr,
) -> Response<Full<Bytes>> {
    let authorized = request
        .headers()
        .get("authorization")
        .is_some_and(|value| value == format!("Bearer {TOKEN}").as_str());
    if !authorized {
        return envelope(
            StatusCode::FORBIDDEN,
            false,
            json!([{ "code": 9109, "message": "Invalid access token" }]),
            Value::Null,
        );
    }
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let segments: Vec<&str> = path.trim_start_matches("/client/v4/").split('/').collect();
    match (method, segments.as_slice()) {
        (Method::GET, ["zones"]) => {
            let name = form_urlencoded::parse(query.as_bytes())
                .find(|(key, _)| key == "name")
                .map(|(_, value)| value.into_owned())
                .unwrap_or_default();
            let zones = if name == ZONE {
                json!([{ "id": ZONE_ID, "name": ZONE, "status": "active" }])
            } else {
                json!([])
            };
            envelope(StatusCode::OK, true, json!([]), zones)
        }
        (Method::POST, ["zones", ZONE_ID, "dns_records"]) => {
            state.lock().unwrap().create_requests += 1;
            // Like the real API, a creation whose request arrived is made
            // even if the client hangs up before the answer.
            let state = state.clone();
            let creation = tokio::spawn(async move {
                let state = &*state;
                while state.lock().unwrap().hold_creates {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let record: Value = serde_json::from_slice(&body).unwrap();
                let refused = {
                    let state = state.lock().unwrap();
                    state
                        .creates_allowed
                        .is_some_and(|allowed| state.created >= allowed)
                };
                if refused {
                    return envelope(
                        StatusCode::BAD_REQUEST,
                        false,
                        json!([{ "code": 1004, "message": "DNS Validation Error" }]),
                        Value::Null,
                    );
                }
                assert_eq!(record["type"], "TXT");
                let name = record["name"].as_str().unwrap().to_string();
                let content = record["content"].as_str().unwrap().to_string();
                management(
                    challtestsrv,
                    "set-txt",
                    json!({ "host": format!("{name}."), "value": content }),
                )
                .await;
                let id = {
                    let mut state = state.lock().unwrap();
                    state.created += 1;
                    let id = format!("372e67954025e0ba6aaa6d586b9e0b{:02}", state.created);
                    state
                        .records
                        .insert(id.clone(), (name.clone(), content.clone()));
                    id
                };
                envelope(
                    StatusCode::OK,
                    true,
                    json!([]),
                    json!({ "id": id, "type": "TXT", "name": name, "content": content, "ttl": 60, "zone_id": ZONE_ID }),
                )
            });
            creation.await.unwrap()
        }
        (Method::DELETE, ["zones", ZONE_ID, "dns_records", id]) => {
            let (name, remaining) = {
                let mut state = state.lock().unwrap();
                let Some((name, _)) = state.records.remove(*id) else {
                    return envelope(
                        StatusCode::NOT_FOUND,
                        false,
                        json!([{ "code": 81044, "message": "Record does not exist." }]),
                        Value::Null,
                    );
                };
                state.deleted += 1;
                let remaining: Vec<String> = state
                    .records
                    .values()
                    .filter(|(other, _)| *other == name)
                    .map(|(_, content)| content.clone())
                    .collect();
                (name, remaining)
            };
            // challtestsrv clears every value of a name; put the others back.
            management(
                challtestsrv,
                "clear-txt",
                json!({ "host": format!("{name}.") }),
            )
            .await;
            for value in remaining {
                management(
                    challtestsrv,
                    "set-txt",
                    json!({ "host": format!("{name}."), "value": value }),
                )
                .await;
            }
            envelope(StatusCode::OK, true, json!([]), json!({ "id": id }))
        }
        _ => envelope(
            StatusCode::NOT_FOUND,
            false,
            json!([{ "code": 7003, "message": "No route for the URI" }]),
            Value::Null,
        ),
    }
}

/// Calls challtestsrv's management API.
async fn management(challtestsrv: SocketAddr, action: &str, body: Value) {
    reqwest::Client::new()
        .post(format!("http://{challtestsrv}/{action}"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
}

/// A test's ACME settings: Pebble's directory and root, the stand-in, the
/// token in `token_env`, and short retry delays.
pub(super) fn config(
    ca: &Ca,
    cloudflare: &Cloudflare,
    challenge: ChallengeKind,
    token_env: &str,
) -> AcmeConfig {
    AcmeConfig {
        email: Some("ops@example.test".to_string()),
        directory: ca.directory.clone(),
        challenge,
        renew_before: Duration::from_secs(30 * 86_400),
        ca_root: Some(ca.ca_root.clone()),
        cloudflare: CloudflareConfig {
            token_env: token_env.to_string(),
            api_base: cloudflare.base.clone(),
            resolver: ca.dns,
            propagation_timeout: Duration::from_secs(10),
        },
        retry: RetryBackoff {
            initial: Duration::from_millis(300),
            max: Duration::from_secs(1),
        },
    }
}

/// Sets `name` to the stand-in's token. Each test uses its own variable.
pub(super) fn token_in(name: &str) -> &str {
    std::env::set_var(name, TOKEN);
    name
}

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// An [`Acme`] on the state directory whose callback sends each
/// certificate to the receiver.
async fn manage(
    config: AcmeConfig,
    state_dir: &Path,
    certificates: Vec<Vec<String>>,
) -> (Acme, mpsc::UnboundedReceiver<Issued>) {
    manage_answering(config, state_dir, certificates, Http01Responses::default()).await
}

/// [`manage`], publishing HTTP-01 answers in `answers`.
async fn manage_answering(
    config: AcmeConfig,
    state_dir: &Path,
    certificates: Vec<Vec<String>>,
    answers: Http01Responses,
) -> (Acme, mpsc::UnboundedReceiver<Issued>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let acme = Acme::new(
        config,
        Arc::new(FileStorage::new(state_dir, answers)),
        certificates,
        move |issued| {
            let _ = sender.send(issued);
        },
    )
    .await
    .unwrap();
    (acme, receiver)
}

pub(super) async fn next_issued(receiver: &mut mpsc::UnboundedReceiver<Issued>) -> Issued {
    tokio::time::timeout(Duration::from_secs(60), receiver.recv())
        .await
        .expect("no certificate within 60 s")
        .unwrap()
}

async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn attempts(acme: &Acme, result: &str) -> u64 {
    acme.metrics().attempts.with_label_values(&[result]).get()
}

/// The DNS names of the leaf in `chain_pem`, read with x509-parser.
fn leaf_names(chain_pem: &str) -> Vec<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes()).unwrap();
    let leaf = pem.parse_x509().unwrap();
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    let mut names: Vec<String> = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(name) => Some(name.to_string()),
            _ => None,
        })
        .collect();
    names.sort();
    names
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn dns01_issues_a_certificate_and_a_restart_reuses_it() {
    let ca = Ca::start(Duration::from_secs(90 * 86_400));
    let cloudflare = Cloudflare::start(ca.management).await;
    let state_dir = scratch_dir();
    let certificate = names(&["www.example.test", "api.example.test"]);
    let settings = config(
        &ca,
        &cloudflare,
        ChallengeKind::Dns01,
        token_in("SLUICE_IT_CF_TOKEN_DNS01"),
    );
    let (acme, mut issued) = manage(settings.clone(), &state_dir, vec![certificate.clone()]).await;
    assert!(acme.certificates().is_empty());
    let tasks = acme.start();
    let first = next_issued(&mut issued).await;
    assert_eq!(
        leaf_names(&first.chain_pem),
        ["api.example.test", "www.example.test"]
    );
    assert!(first.issuer.contains("Pebble"), "{}", first.issuer);
    assert_eq!(attempts(&acme, "success"), 1);
    assert_eq!(
        acme.metrics()
            .expiry
            .with_label_values(&["www.example.test"])
            .get(),
        first
            .not_after
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    );
    assert!(acme.metrics().last_success.get() > 0);
    {
        let state = cloudflare.state();
        assert_eq!(state.created, 2);
        assert_eq!(state.deleted, 2, "every record is deleted afterwards");
        assert!(state.records.is_empty());
    }
    let status = acme.status();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].names, certificate);
    assert_eq!(status[0].issuer.as_deref(), Some(first.issuer.as_str()));
    assert!(status[0].not_after.is_some());
    assert_eq!(status[0].last_error, None);

    let folder = state_dir.join("certificates/www.example.test");
    let chain = std::fs::read_to_string(folder.join("fullchain.pem")).unwrap();
    assert_eq!(chain, first.chain_pem);
    assert_eq!(mode(&folder.join("key.pem")), 0o600);
    let accounts: Vec<_> = std::fs::read_dir(state_dir.join("acme/accounts"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(accounts.len(), 1);
    assert_eq!(mode(&accounts[0]), 0o600);
    let account = std::fs::read(&accounts[0]).unwrap();
    drop(tasks);

    // A restart finds the stored certificate and orders nothing.
    let (again, mut reissued) = manage(settings, &state_dir, vec![certificate]).await;
    assert_eq!(again.certificates(), std::slice::from_ref(&first));
    let _tasks = again.start();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(reissued.try_recv().is_err(), "nothing is re-issued");
    assert_eq!(attempts(&again, "success") + attempts(&again, "failure"), 0);
    assert_eq!(cloudflare.state().created, 2);
    assert_eq!(
        std::fs::read_to_string(folder.join("fullchain.pem")).unwrap(),
        chain
    );
    assert_eq!(std::fs::read(&accounts[0]).unwrap(), account);
}

#[tokio::test(flavor = "multi_thread")]
async fn dns01_issues_a_wildcard_certificate() {
    let ca = Ca::start(Duration::from_secs(90 * 86_400));
    let cloudflare = Cloudflare::start(ca.management).await;
    let state_dir = scratch_dir();
    let settings = config(
        &ca,
        &cloudflare,
        ChallengeKind::Dns01,
        token_in("SLUICE_IT_CF_TOKEN_WILDCARD"),
    );
    let (acme, mut issued) = manage(
        settings,
        &state_dir,
        vec![names(&["*.wild.example.test", "wild.example.test"])],
    )
    .await;
    let _tasks = acme.start();
    let certificate = next_issued(&mut issued).await;
    assert_eq!(
        leaf_names(&certificate.chain_pem),
        ["*.wild.example.test", "wild.example.test"]
    );
    assert!(state_dir
        .join("certificates/_.wild.example.test/fullchain.pem")
        .exists());
    let state = cloudflare.state();
    assert_eq!(state.created, 2, "two TXT values at one name");
    assert!(state.records.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn http01_issues_a_certificate_from_the_shared_answers() {
    let ca = Ca::start(Duration::from_secs(90 * 86_400));
    let cloudflare = Cloudflare::start(ca.management).await;
    let state_dir = scratch_dir();
    let settings = config(&ca, &cloudflare, ChallengeKind::Http01, "SLUICE_IT_UNUSED");
    let answers = Http01Responses::default();
    let (acme, mut issued) = manage_answering(
        settings,
        &state_dir,
        vec![names(&["web.example.test"])],
        answers.clone(),
    )
    .await;

    // What Sluice's HTTP listener does: answer challenge paths from the map.
    let listened = answers.clone();
    let served = Arc::new(Mutex::new(Vec::new()));
    let listener = TcpListener::bind(("127.0.0.1", ca.http_port))
        .await
        .unwrap();
    let log = served.clone();
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let answers = listened.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let path = request.uri().path().to_string();
                    let answer = answers.response_for_path(&path);
                    let log = log.clone();
                    async move {
                        let response = match answer {
                            Some(body) => {
                                log.lock().unwrap().push(path);
                                Response::new(Full::new(Bytes::from(body)))
                            }
                            None => Response::builder()
                                .status(StatusCode::NOT_FOUND)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        };
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    let _tasks = acme.start();
    let certificate = next_issued(&mut issued).await;
    server.abort();
    assert_eq!(leaf_names(&certificate.chain_pem), ["web.example.test"]);
    let served = served.lock().unwrap().clone();
    assert!(!served.is_empty(), "Pebble fetched the answer");
    for path in &served {
        assert!(
            answers.response_for_path(path).is_none(),
            "{path} is no longer answered once the order is done"
        );
    }
    assert_eq!(cloudflare.state().created, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_is_renewed_inside_its_window() {
    let ca = Ca::start(Duration::from_secs(10));
    let cloudflare = Cloudflare::start(ca.management).await;
    let state_dir = scratch_dir();
    let mut settings = config(
        &ca,
        &cloudflare,
        ChallengeKind::Dns01,
        token_in("SLUICE_IT_CF_TOKEN_RENEW"),
    );
    settings.renew_before = Duration::from_secs(4);
    let (acme, mut issued) =
        manage(settings, &state_dir, vec![names(&["renew.example.test"])]).await;
    let _tasks = acme.start();
    let first = next_issued(&mut issued).await;
    let second = next_issued(&mut issued).await;
    assert_ne!(first.serial, second.serial);
    assert!(second.not_after > first.not_after);
    assert!(
        second.not_before + Duration::from_secs(1) >= first.not_after - Duration::from_secs(5),
        "renewed inside the window, not before"
    );
    assert_eq!(acme.certificates(), std::slice::from_ref(&second));
    let stored =
        std::fs::read_to_string(state_dir.join("certificates/renew.example.test/fullchain.pem"))
            .unwrap();
    // The store may already hold a third certificate; never the first.
    assert_ne!(stored, first.chain_pem);
    assert!(attempts(&acme, "success") >= 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_dns_api_keeps_the_certificate_and_retries() {
    let ca = Ca::start(Duration::from_secs(10));
    let cloudflare = Cloudflare::start(ca.management).await;
    let state_dir = scratch_dir();
    let mut settings = config(
        &ca,
        &cloudflare,
        ChallengeKind::Dns01,
        token_in("SLUICE_IT_CF_TOKEN_FAILING"),
    );
    settings.renew_before = Duration::from_secs(4);
    // The first order's one record is created; every renewal's is refused,
    // however soon after the first certificate it starts.
    cloudflare.state().creates_allowed = Some(1);
    let (acme, mut issued) =
        manage(settings, &state_dir, vec![names(&["flaky.example.test"])]).await;
    let _tasks = acme.start();
    let first = next_issued(&mut issued).await;
    eventually("two failed renewals", || attempts(&acme, "failure") >= 2).await;
    assert_eq!(acme.certificates(), std::slice::from_ref(&first));
    let status = &acme.status()[0];
    let error = status.last_error.as_deref().unwrap();
    assert!(error.contains("DNS Validation Error (1004)"), "{error}");
    assert!(status.next_attempt.is_some());
    assert!(issued.try_recv().is_err());
    cloudflare.state().creates_allowed = None;
    let renewed = next_issued(&mut issued).await;
    assert_ne!(renewed.serial, first.serial);
    assert_eq!(acme.status()[0].last_error, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_ca_keeps_the_certificate_and_retries() {
    let mut ca = Ca::start(Duration::from_secs(10));
    let cloudflare = Cloudflare::start(ca.management).await;
    let state_dir = scratch_dir();
    let mut settings = config(
        &ca,
        &cloudflare,
        ChallengeKind::Dns01,
        token_in("SLUICE_IT_CF_TOKEN_CA_DOWN"),
    );
    settings.renew_before = Duration::from_secs(4);
    let (acme, mut issued) =
        manage(settings, &state_dir, vec![names(&["down.example.test"])]).await;
    let _tasks = acme.start();
    let first = next_issued(&mut issued).await;
    let stored = state_dir.join("certificates/down.example.test/fullchain.pem");
    ca.stop_pebble();
    eventually("two failed renewals", || attempts(&acme, "failure") >= 2).await;
    assert_eq!(acme.certificates(), std::slice::from_ref(&first));
    assert_eq!(std::fs::read_to_string(&stored).unwrap(), first.chain_pem);
    assert!(acme.status()[0].last_error.is_some());
    assert!(issued.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_or_missing_token_is_named_and_never_shown() {
    let ca = Ca::start(Duration::from_secs(90 * 86_400));
    let cloudflare = Cloudflare::start(ca.management).await;
    let wrong = "wrong-token-value-8d2e";
    std::env::set_var("SLUICE_IT_CF_TOKEN_WRONG", wrong);
    std::env::remove_var("SLUICE_IT_CF_TOKEN_MISSING");
    for (variable, expected) in [
        (
            "SLUICE_IT_CF_TOKEN_WRONG",
            "Cloudflare rejected the API token in SLUICE_IT_CF_TOKEN_WRONG",
        ),
        (
            "SLUICE_IT_CF_TOKEN_MISSING",
            "the environment variable SLUICE_IT_CF_TOKEN_MISSING is not set",
        ),
    ] {
        let settings = config(&ca, &cloudflare, ChallengeKind::Dns01, variable);
        let state_dir = scratch_dir();
        let (acme, _issued) =
            manage(settings, &state_dir, vec![names(&["tok.example.test"])]).await;
        let _tasks = acme.start();
        eventually("a failed order", || attempts(&acme, "failure") >= 1).await;
        let error = acme.status()[0].last_error.clone().unwrap();
        assert!(error.contains(expected), "{error}");
        assert!(!error.contains(wrong), "{error}");
        assert!(!error.contains(TOKEN), "{error}");
    }
    assert_eq!(cloudflare.state().created, 0);
}

// ---------------------------------------------------------------------------
// End to end: the `sluice` binary with routes that say tls = "acme".
// ---------------------------------------------------------------------------

/// Pebble's root, which it generates anew on each start, from its
/// management API.
pub(super) async fn pebble_root(ca: &Ca) -> CertificateDer<'static> {
    let trusted = reqwest::Certificate::from_pem(&std::fs::read(&ca.ca_root).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(trusted)
        .build()
        .unwrap();
    let pem = client
        .get(format!("https://{}/roots/0", ca.pebble_management))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .bytes()
        .await
        .unwrap();
    CertificateDer::from_pem_slice(&pem).unwrap()
}

/// An `[acme]` table for Pebble, with the Cloudflare API at `api_base`.
pub(super) fn acme_table(ca: &Ca, api_base: &str, challenge: &str, token_env: &str) -> String {
    format!(
        "[acme]\nemail = \"ops@example.test\"\ndirectory = \"{}\"\nchallenge = \"{challenge}\"\nca_root = \"{}\"\n\n[acme.cloudflare]\ntoken_env = \"{token_env}\"\napi_base = \"{api_base}\"\nresolver = \"{}\"\npropagation_timeout = \"10s\"\n",
        ca.directory,
        ca.ca_root.display(),
        ca.dns,
    )
}

/// A TLS listener at `tls`, one placement for `upstream`, and an ACME
/// route for `hosts` with `extra` route keys.
fn acme_route(tls: SocketAddr, upstream: SocketAddr, hosts: &str, extra: &str) -> String {
    format!(
        "[[listeners]]\naddress = \"{tls}\"\ntls = true\n\n[placements.site]\nendpoints = [{{ address = \"{upstream}\" }}]\n\n[[routes]]\nhosts = [{hosts}]\nplacement = \"site\"\ntls = \"acme\"\n{extra}\n"
    )
}

/// Waits up to 60 s for the TLS listener at `address` to complete a
/// handshake for `name` with a certificate `client` trusts.
async fn wait_for_certificate(
    client: &tokio_rustls::TlsConnector,
    address: SocketAddr,
    name: &str,
    proxy: &Proxy,
) -> super::tls::Tls {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match connect(client, address, name).await {
            Ok(stream) => return stream,
            Err(e) => assert!(
                Instant::now() < deadline,
                "no trusted certificate for {name} within 60 s ({e}):\n{}",
                proxy.stderr_text()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The proxy's `/status` entries with `"source": "acme"`.
async fn acme_status(proxy: &Proxy) -> Vec<Value> {
    let (_, status) = proxy.admin("GET", "/status").await;
    status["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["source"] == "acme")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_acme_route_is_served_over_tls_and_a_restart_reuses_its_certificate() {
    let ca = Ca::start(Duration::from_secs(90 * 86_400));
    let cloudflare = Cloudflare::start_https(&ca).await;
    let up = upstreams(&["site"]).await;
    let tls = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let token_env = token_in("SLUICE_IT_CF_TOKEN_PROXY");
    let proxy = Proxy::start(&format!(
        "{}\n{}",
        acme_route(
            tls,
            up[0].address,
            "\"www.example.test\", \"api.example.test\"",
            ""
        ),
        acme_table(&ca, &cloudflare.base, "dns-01", token_env),
    ));
    let client = connector(&[pebble_root(&ca).await], rustls::ALL_VERSIONS, &[]);

    // The proxy orders the certificate through DNS-01, serves it by SNI
    // for both names, and proxies the request to the route's upstream.
    let mut stream = wait_for_certificate(&client, tls, "www.example.test", &proxy).await;
    let leaf = presented(&stream);
    assert_eq!(
        request(&mut stream, "www.example.test", "/").await,
        (200, "site".to_string())
    );
    let mut other = connect(&client, tls, "api.example.test").await.unwrap();
    assert_eq!(presented(&other), leaf);
    assert_eq!(
        request(&mut other, "api.example.test", "/").await,
        (200, "site".to_string())
    );
    assert!(
        connect(&client, tls, "other.example.test").await.is_err(),
        "no certificate for names no route has"
    );
    {
        let state = cloudflare.state();
        assert_eq!(state.created, 2);
        assert!(state.records.is_empty(), "the TXT records are cleaned up");
    }

    let status = acme_status(&proxy).await;
    assert_eq!(status.len(), 1, "{status:?}");
    assert_eq!(
        status[0]["names"],
        json!(["www.example.test", "api.example.test"])
    );
    assert!(status[0]["issuer"].as_str().unwrap().contains("Pebble"));
    assert!(status[0]["not_after"].as_str().unwrap().ends_with('Z'));
    assert!(status[0]["last_error"].is_null());
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("sluice_acme_attempts_total{result=\"success\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "sluice_acme_certificate_expiry_timestamp_seconds{name=\"www.example.test\"}"
        ),
        "{metrics}"
    );
    let stored = proxy
        .state_dir
        .join("certificates/www.example.test/fullchain.pem");
    let chain = std::fs::read_to_string(&stored).unwrap();

    // A restart on the same state directory serves the stored certificate
    // from the first handshake and orders nothing.
    let (address, admin, config_path, state_dir) = (
        proxy.address,
        proxy.admin,
        proxy.config_path.clone(),
        proxy.state_dir.clone(),
    );
    drop((stream, other));
    let _files = proxy.stop();
    let mut restarted = Proxy::spawn(address, admin, config_path, state_dir, &[]);
    restarted.wait_accepting(tls, Duration::from_secs(10));
    let mut stream = connect(&client, tls, "www.example.test").await.unwrap();
    assert_eq!(presented(&stream), leaf);
    assert_eq!(
        request(&mut stream, "www.example.test", "/").await,
        (200, "site".to_string())
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(cloudflare.state().created, 2, "no new order");
    let metrics = restarted.metrics().await;
    for result in ["success", "failure"] {
        assert!(
            metrics.contains(&format!(
                "sluice_acme_attempts_total{{result=\"{result}\"}} 0"
            )),
            "no attempt after the restart: {metrics}"
        );
    }
    assert_eq!(std::fs::read_to_string(&stored).unwrap(), chain);
    assert_eq!(
        acme_status(&restarted).await[0]["names"],
        status[0]["names"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_an_order_deletes_its_dns_record_before_the_exit() {
    let ca = Ca::start(Duration::from_secs(90 * 86_400));
    let cloudflare = Cloudflare::start_https(&ca).await;
    cloudflare.state().hold_creates = true;
    let up = upstreams(&["site"]).await;
    let tls = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let token_env = token_in("SLUICE_IT_CF_TOKEN_SIGTERM");
    let mut proxy = Proxy::start(&format!(
        "[server]\ngrace_period = \"10s\"\n\n{}\n{}",
        acme_route(tls, up[0].address, "\"www.example.test\"", ""),
        acme_table(&ca, &cloudflare.base, "dns-01", token_env),
    ));

    // The order's record creation reaches Cloudflare and is held there
    // when the proxy is told to stop, with no request in flight.
    cloudflare
        .first_creation_asked(|| proxy.stderr_text())
        .await;
    proxy.signal("TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    cloudflare.state().hold_creates = false;

    // Cloudflare makes the record and answers; the stopping proxy waits
    // for that answer and deletes the record before it exits.
    let (exited, proxy) = tokio::task::spawn_blocking(move || {
        let exited = proxy.wait_exit(Duration::from_secs(10));
        (exited, proxy)
    })
    .await
    .unwrap();
    assert!(exited, "the proxy did not exit:\n{}", proxy.stderr_text());
    eventually("the held record creation to end", || {
        cloudflare.state().created == 1
    })
    .await;
    let state = cloudflare.state();
    assert_eq!(
        state.deleted,
        1,
        "the record is left in the zone:\n{}",
        proxy.stderr_text()
    );
    assert!(state.records.is_empty());
}

/// The serial number of a DER certificate, in hex.
fn serial(certificate: &CertificateDer<'_>) -> String {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).unwrap();
    parsed.raw_serial_as_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renewal_under_a_held_connection_keeps_it_and_serves_new_ones_the_new_certificate() {
    // Certificates live 20 s. renew_before (30 days by default) is longer,
    // so the window is capped at half the lifetime: each certificate is
    // renewed about 10 s after it is issued, by the running proxy.
    let ca = Ca::start(Duration::from_secs(20));
    let cloudflare = Cloudflare::start_https(&ca).await;
    let up = upstreams(&["site"]).await;
    let tls = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let token_env = token_in("SLUICE_IT_CF_TOKEN_HELD");
    let proxy = Proxy::start(&format!(
        "{}\n{}",
        acme_route(tls, up[0].address, "\"held.example.test\"", ""),
        acme_table(&ca, &cloudflare.base, "dns-01", token_env).replacen(
            "[acme]\n",
            "[acme]\nrenew_before = \"30d\"\n",
            1
        ),
    ));
    let pid = proxy.pid();
    let client = connector(&[pebble_root(&ca).await], rustls::ALL_VERSIONS, &[]);

    // A client opens a keep-alive connection and is served on it.
    let mut held = wait_for_certificate(&client, tls, "held.example.test", &proxy).await;
    let first = presented(&held);
    assert_eq!(
        request(&mut held, "held.example.test", "/").await,
        (200, "site".to_string())
    );

    // The proxy renews on its own; new connections get the new certificate.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut fresh = loop {
        let stream = connect(&client, tls, "held.example.test").await.unwrap();
        if presented(&stream) != first {
            break stream;
        }
        assert!(
            Instant::now() < deadline,
            "no renewed certificate within 60 s:\n{}",
            proxy.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_ne!(serial(&presented(&fresh)), serial(&first));
    assert_eq!(
        request(&mut fresh, "held.example.test", "/").await,
        (200, "site".to_string())
    );

    // The connection held across the renewal is still open and served, by
    // the same process.
    assert_eq!(
        request(&mut held, "held.example.test", "/").await,
        (200, "site".to_string())
    );
    assert_eq!(
        request(&mut held, "held.example.test", "/").await,
        (200, "site".to_string())
    );
    assert_eq!(proxy.pid(), pid);
    let metrics = proxy.metrics().await;
    let issued: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("sluice_acme_attempts_total{result=\"success\"} "))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or_else(|| panic!("no success count: {metrics}"));
    assert!(issued >= 2, "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_that_adds_an_acme_route_orders_and_serves_its_certificate_without_restart() {
    let ca = Ca::start(Duration::from_secs(90 * 86_400));
    let cloudflare = Cloudflare::start_https(&ca).await;
    let up = upstreams(&["site"]).await;
    let tls = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let token_env = token_in("SLUICE_IT_CF_TOKEN_RELOAD");
    let body = |added: &str| {
        format!(
            "{}\n{}",
            acme_route(tls, up[0].address, "\"first.example.test\"", added),
            acme_table(&ca, &cloudflare.base, "dns-01", token_env),
        )
    };
    let proxy = Proxy::start(&body(""));
    let pid = proxy.pid();
    let client = connector(&[pebble_root(&ca).await], rustls::ALL_VERSIONS, &[]);
    let mut first = wait_for_certificate(&client, tls, "first.example.test", &proxy).await;
    assert!(
        connect(&client, tls, "added.example.test").await.is_err(),
        "no certificate before the route exists"
    );

    let version = proxy.admin("GET", "/status").await.1["version"]
        .as_str()
        .unwrap()
        .to_string();
    proxy.rewrite(&body(
        "\n[[routes]]\nhosts = [\"added.example.test\"]\nplacement = \"site\"\ntls = \"acme\"\n",
    ));
    proxy.wait_version_change(&version).await;
    let mut added = wait_for_certificate(&client, tls, "added.example.test", &proxy).await;
    assert_ne!(presented(&added), presented(&first));
    assert_eq!(
        request(&mut added, "added.example.test", "/").await,
        (200, "site".to_string())
    );
    // The first route's connection and certificate are untouched, and no
    // restart happened.
    assert_eq!(
        request(&mut first, "first.example.test", "/").await,
        (200, "site".to_string())
    );
    assert_eq!(proxy.pid(), pid);
    let status = acme_status(&proxy).await;
    let names: Vec<_> = status.iter().map(|c| c["names"].clone()).collect();
    assert_eq!(
        names,
        [json!(["first.example.test"]), json!(["added.example.test"])]
    );
    assert!(
        proxy
            .stderr_text()
            .contains("a reload added these ACME names"),
        "{}",
        proxy.stderr_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_that_adds_the_first_acme_site_starts_acme_without_restart() {
    let ca = Ca::start(Duration::from_secs(90 * 86_400));
    let cloudflare = Cloudflare::start_https(&ca).await;
    let up = upstreams(&["site"]).await;
    let tls = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let token_env = token_in("SLUICE_IT_CF_TOKEN_FIRST_SITE");
    // At first the TLS listener serves one site from files, and no [acme].
    let files = scratch_dir();
    let own = rcgen::generate_simple_self_signed(vec!["files.example.test".into()]).unwrap();
    std::fs::write(files.join("files.pem"), own.cert.pem()).unwrap();
    std::fs::write(files.join("files.key"), own.signing_key.serialize_pem()).unwrap();
    let from_files = format!(
        "[[listeners]]\naddress = \"{tls}\"\ntls = true\n\n\
         [placements.site]\nendpoints = [{{ address = \"{}\" }}]\n\n\
         [[routes]]\nhosts = [\"files.example.test\"]\nplacement = \"site\"\n\
         tls = {{ cert = \"{dir}/files.pem\", key = \"{dir}/files.key\" }}\n",
        up[0].address,
        dir = files.display(),
    );
    let proxy = Proxy::start(&from_files);
    let pid = proxy.pid();
    let version = proxy.admin("GET", "/status").await.1["version"]
        .as_str()
        .unwrap()
        .to_string();
    proxy.rewrite(&format!(
        "{from_files}\n[[routes]]\nhosts = [\"added.example.test\"]\nplacement = \"site\"\ntls = \"acme\"\n\n{}",
        acme_table(&ca, &cloudflare.base, "dns-01", token_env),
    ));
    proxy.wait_version_change(&version).await;
    let client = connector(&[pebble_root(&ca).await], rustls::ALL_VERSIONS, &[]);
    let mut added = wait_for_certificate(&client, tls, "added.example.test", &proxy).await;
    assert_eq!(
        request(&mut added, "added.example.test", "/").await,
        (200, "site".to_string())
    );
    assert_eq!(proxy.pid(), pid, "no restart");
    let status = acme_status(&proxy).await;
    assert_eq!(status[0]["names"], json!(["added.example.test"]));
    assert!(
        proxy
            .stderr_text()
            .contains("a reload added the first ACME site"),
        "{}",
        proxy.stderr_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http01_is_answered_by_the_proxys_plain_listener() {
    let ca = Ca::start(Duration::from_secs(90 * 86_400));
    let up = upstreams(&["site"]).await;
    // Pebble validates HTTP-01 on ca.http_port: the proxy's plain listener.
    let plain = SocketAddr::from(([127, 0, 0, 1], ca.http_port));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let tls = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // The route redirects plain HTTP; challenge answers come first.
    let body = format!(
        "{}\n{}",
        acme_route(
            tls,
            up[0].address,
            "\"web.example.test\"",
            "redirect_https = true"
        ),
        acme_table(
            &ca,
            "https://api.cloudflare.com/client/v4",
            "http-01",
            "SLUICE_IT_UNUSED"
        ),
    );
    let dir = scratch_dir();
    let config_path = dir.join("sluice.toml");
    std::fs::write(&config_path, render(plain, admin, &body)).unwrap();
    let proxy = Proxy::spawn(plain, admin, config_path, dir.join("state"), &[]);
    let client = connector(&[pebble_root(&ca).await], rustls::ALL_VERSIONS, &[]);

    let mut stream = wait_for_certificate(&client, tls, "web.example.test", &proxy).await;
    assert_eq!(
        request(&mut stream, "web.example.test", "/").await,
        (200, "site".to_string())
    );

    // Pebble fetched the answer from the proxy: the access log has it.
    let answered: Vec<String> = proxy
        .stdout_lines()
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|record| {
            record["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/.well-known/acme-challenge/"))
        })
        .map(|record| {
            assert_eq!(record["status"], 200, "{record}");
            record["path"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(!answered.is_empty(), "{:?}", proxy.stdout_lines());
    // Once the order is done the token is no longer answered: the route's
    // redirect applies again, as it does to every other path.
    let no_redirects = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in [
        answered[0].as_str(),
        "/.well-known/acme-challenge/unknown",
        "/",
    ] {
        let reply = no_redirects
            .get(format!("http://{plain}{path}"))
            .header("host", "web.example.test")
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 308, "{path}");
    }
    let status = acme_status(&proxy).await;
    assert_eq!(status[0]["names"], json!(["web.example.test"]));
    assert!(status[0]["issuer"].as_str().unwrap().contains("Pebble"));
}

#[test]
fn acme_route_config_errors_name_the_key() {
    let dir = scratch_dir();
    let check = |route_tls: &str| -> String {
        let path = dir.join("sluice.toml");
        std::fs::write(
            &path,
            format!("[[listeners]]\naddress = \"127.0.0.1:1\"\ntls = true\n[placements.o]\nendpoints = [{{ address = \"127.0.0.1:2\" }}]\n[[routes]]\nhosts = [\"a.example.test\"]\nplacement = \"o\"\ntls = {route_tls}\n"),
        )
        .unwrap();
        let output = Command::new(super::common::sluice_binary())
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let text = check("\"acme\"");
    assert!(
        text.contains(":9: routes[0].tls: tls = \"acme\" needs an [acme] table"),
        "{text}"
    );
    assert!(!text.contains("no certificate to serve"), "{text}");
    let text = check("\"letsencrypt\"");
    assert!(
        text.contains(":9: routes[0].tls: expected a table { cert = \"...\", key = \"...\" } naming both files, or the string \"acme\""),
        "{text}"
    );
}

#[test]
fn the_shipped_acme_example_passes_check_without_a_token() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/acme.toml");
    let output = Command::new(super::common::sluice_binary())
        .args(["check", "--config", example])
        .env_remove("CLOUDFLARE_API_TOKEN")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
