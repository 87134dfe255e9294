//! A fleet on etcd: a real etcd (Debian's `etcd-server`) on loopback, and
//! three `sluice run --config-url etcd://...` processes sharing its
//! config. Each instance takes its listener and admin addresses from its
//! environment, as the one config's `${LISTEN}` and `${ADMIN}` ask.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};
use sluice::control::etcd::EtcdSource;
use sluice::tls::acme::storage::{
    AcmeStorage, EtcdStorage, EtcdStorageSettings, KeyProtection, ENCRYPTION_KEY_ENV,
};
use sluice::tls::acme::{Acme, ChallengeKind, Http01Responses, Issued};
use tokio_rustls::rustls::{self, pki_types::CertificateDer};
use tokio_rustls::TlsConnector;

use crate::acme::{acme_table, next_issued, pebble_root, token_in, Ca, Cloudflare};
use crate::common::{free_port, scratch_dir, sluice_binary, wait_accepting, Scratch};
use crate::tls::{connect, connector, presented};

/// A real etcd on loopback ports, its data in a scratch directory.
struct Etcd {
    child: Option<Child>,
    client: SocketAddr,
    peer: SocketAddr,
    data: Scratch,
    /// Whether clients speak TLS and show a certificate.
    tls: bool,
}

impl Etcd {
    fn start() -> Etcd {
        Self::start_with(false)
    }

    /// An etcd whose clients speak TLS and must show a certificate signed
    /// by the CA in `ca.pem`; `client.pem` and `client-key.pem` are one.
    fn start_tls() -> Etcd {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Etcd {
        let mut etcd = Etcd {
            child: None,
            client: SocketAddr::from(([127, 0, 0, 1], free_port())),
            peer: SocketAddr::from(([127, 0, 0, 1], free_port())),
            data: scratch_dir(),
            tls,
        };
        if tls {
            etcd.write_certificates();
        }
        etcd.resume();
        etcd
    }

    /// A CA, etcd's certificate for 127.0.0.1, and a client's.
    fn write_certificates(&self) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        std::fs::write(self.file("ca.pem"), ca.pem()).unwrap();
        for (name, sans) in [
            ("server", vec!["localhost".to_string()]),
            ("client", vec![]),
        ] {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(sans).unwrap();
            if name == "server" {
                params
                    .subject_alt_names
                    .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
            }
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, format!("sluice-{name}"));
            let cert = params.signed_by(&key, &ca).unwrap();
            std::fs::write(self.file(&format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(self.file(&format!("{name}-key.pem")), key.serialize_pem()).unwrap();
        }
    }

    /// The path of `name` among its files.
    fn file(&self, name: &str) -> String {
        self.data.join(name).display().to_string()
    }

    /// Starts (or starts again) the process on the same ports and data.
    fn resume(&mut self) {
        let scheme = if self.tls { "https" } else { "http" };
        let (client, peer) = (
            format!("{scheme}://{}", self.client),
            format!("http://{}", self.peer),
        );
        let tls: Vec<String> = if self.tls {
            vec![
                "--cert-file".into(),
                self.file("server.pem"),
                "--key-file".into(),
                self.file("server-key.pem"),
                "--trusted-ca-file".into(),
                self.file("ca.pem"),
                "--client-cert-auth".into(),
            ]
        } else {
            Vec::new()
        };
        let log = std::fs::File::create(self.data.join("etcd.log")).unwrap();
        let child = Command::new("etcd")
            .args(["--name", "fleet", "--data-dir"])
            .arg(self.data.join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("fleet={peer}")])
            .args(&tls)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run etcd ({e}); install Debian's etcd-server (scripts/test.sh does)")
            });
        self.child = Some(child);
        let log = || std::fs::read_to_string(self.data.join("etcd.log")).unwrap_or_default();
        let child = self.child.as_mut().unwrap();
        wait_accepting(
            self.client,
            Duration::from_secs(20),
            || {
                child
                    .try_wait()
                    .ok()
                    .flatten()
                    .map(|s| format!("etcd exited with {s}"))
            },
            log,
        );
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("etcd://{}/fleet", self.client)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One `sluice run` on the fleet's config.
struct Instance {
    child: Child,
    address: SocketAddr,
    admin: SocketAddr,
    /// Where a config's `${TLS}` listener is.
    tls: SocketAddr,
    log: PathBuf,
    /// Its state directory (the last known good config) and log.
    state: Option<Scratch>,
}

impl Instance {
    fn start(etcd: &Etcd) -> Instance {
        Self::start_on(etcd, scratch_dir())
    }

    /// Starts an instance whose state directory is in `state`.
    fn start_on(etcd: &Etcd, state: Scratch) -> Instance {
        Self::launch(etcd, state, free_port(), &[], &[])
    }

    /// Starts an instance with its state directory in `state`, its plain
    /// listener on `port`, `extra` arguments to `sluice run` and `env`.
    fn launch(
        etcd: &Etcd,
        state: Scratch,
        port: u16,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Instance {
        let (address, admin, tls) = (
            SocketAddr::from(([127, 0, 0, 1], port)),
            SocketAddr::from(([127, 0, 0, 1], free_port())),
            SocketAddr::from(([127, 0, 0, 1], free_port())),
        );
        let log = state.join(format!("sluice-{}.log", address.port()));
        let child = Command::new(sluice_binary())
            .args(["run", "--config-url", &etcd.url(), "--state-dir"])
            .arg(state.join("state"))
            .args(["--instance-name", &Self::name_for(address)])
            .args(extra)
            .env("LISTEN", address.to_string())
            .env("ADMIN", admin.to_string())
            .env("TLS", tls.to_string())
            .env("RUST_LOG", "warn,sluice=info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut instance = Instance {
            child,
            address,
            admin,
            tls,
            log,
            state: Some(state),
        };
        let log = instance.log.clone();
        let child = &mut instance.child;
        wait_accepting(
            address,
            Duration::from_secs(30),
            || {
                child
                    .try_wait()
                    .ok()
                    .flatten()
                    .map(|s| format!("sluice exited with {s}"))
            },
            || std::fs::read_to_string(&log).unwrap_or_default(),
        );
        instance
    }

    /// The member name of the instance listening on `address`.
    fn name_for(address: SocketAddr) -> String {
        format!("node-{}", address.port())
    }

    fn name(&self) -> String {
        Self::name_for(self.address)
    }

    /// What the instance has logged so far.
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The admin API's answer to `GET path`.
    async fn admin_get(&self, path: &str) -> reqwest::Response {
        crate::common::client()
            .get(format!("http://{}{path}", self.admin))
            .send()
            .await
            .unwrap()
    }

    /// The admin API's `/status`.
    async fn status(&self) -> serde_json::Value {
        self.admin_get("/status").await.json().await.unwrap()
    }

    /// The admin API's `/metrics`.
    async fn metrics(&self) -> String {
        self.admin_get("/metrics").await.text().await.unwrap()
    }

    /// The body of `GET /` on this instance.
    async fn answer(&self) -> String {
        match crate::common::client()
            .get(format!("http://{}/", self.address))
            .send()
            .await
        {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(e) => format!("no answer: {e}"),
        }
    }

    /// Waits up to ten seconds for `GET /` to answer `expected`.
    async fn wait_for(&self, expected: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = self.answer().await;
            if answer == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} answers {answer:?}, not {expected:?}:\n{}",
                self.address,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits up to fifteen seconds (a dead member's lease is ten) until
    /// `/status` lists exactly the members `names`, each on `revision` when
    /// given.
    async fn wait_for_members(&self, names: &[String], revision: Option<&str>) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let status = self.status().await;
            let members = status["fleet"]["members"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut listed: Vec<String> = members
                .iter()
                .filter(|m| revision.is_none_or(|r| m["config_revision"] == r))
                .filter_map(|m| m["name"].as_str().map(str::to_string))
                .collect();
            listed.sort();
            let mut wanted = names.to_vec();
            wanted.sort();
            if listed == wanted && members.len() == names.len() {
                return;
            }
            assert!(Instant::now() < deadline, "{}", status["fleet"]);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The admin API's `/config`: the config in force and the source's
    /// last error.
    async fn config_status(&self) -> serde_json::Value {
        self.admin_get("/config").await.json().await.unwrap()
    }
}

impl Instance {
    /// Stops the process and hands back its state directory.
    fn stop(mut self) -> Scratch {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.state.take().expect("an instance keeps its state")
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config answering every request with `body`, its listener and admin
/// API where each instance's environment says.
fn config(body: &str) -> String {
    format!(
        "[[listeners]]\naddress = \"${{LISTEN}}\"\n\n[admin]\naddress = \"${{ADMIN}}\"\n\n\
         [[routes]]\nname = \"all\"\nrespond = {{ status = 200, body = \"{body}\" }}\n"
    )
}

/// Runs `sluice config push` of `text` to `etcd`, with `extra` arguments;
/// its exit status and output.
fn push(etcd: &Etcd, text: &str, extra: &[&str]) -> (bool, String) {
    push_with(etcd, text, extra, &[])
}

/// [`push`] with `env` set too.
fn push_with(etcd: &Etcd, text: &str, extra: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let dir = scratch_dir();
    let file = dir.join("sluice.toml");
    std::fs::write(&file, text).unwrap();
    // The file is checked as an instance would load it, with its
    // environment.
    let output = Command::new(sluice_binary())
        .args(["config", "push", "--etcd", &etcd.url()])
        .env("LISTEN", "127.0.0.1:1")
        .env("ADMIN", "127.0.0.1:2")
        .env("TLS", "127.0.0.1:3")
        .envs(env.iter().copied())
        .args(extra)
        .arg(&file)
        .output()
        .unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pushed_config_reaches_every_instance_and_an_invalid_one_is_refused() {
    let etcd = Etcd::start();
    let (pushed, output) = push(&etcd, &config("first"), &[]);
    assert!(pushed, "{output}");
    let fleet: Vec<Instance> = (0..3).map(|_| Instance::start(&etcd)).collect();
    for instance in &fleet {
        instance.wait_for("first").await;
    }

    // A change is pushed by etcd's watch, not polled.
    let (pushed, output) = push(&etcd, &config("second"), &[]);
    assert!(pushed, "{output}");
    for instance in &fleet {
        instance.wait_for("second").await;
    }
    let revision = output
        .rsplit("revision ")
        .next()
        .unwrap()
        .trim()
        .trim_end_matches(')')
        .to_string();
    // Every member lists all three, each on the pushed revision.
    let names: Vec<String> = fleet.iter().map(Instance::name).collect();
    for instance in &fleet {
        instance.wait_for_members(&names, Some(&revision)).await;
    }
    let metrics = fleet[0].metrics().await;
    for name in &names {
        assert!(
            metrics.contains(&format!(
                "sluice_fleet_member{{config_revision=\"{revision}\",member=\"{name}\""
            )),
            "{metrics}"
        );
    }

    // An invalid file is refused before anything is written.
    let (pushed, output) = push(&etcd, &format!("{}\nbogus_key = 1\n", config("third")), &[]);
    assert!(!pushed, "{output}");
    assert!(output.contains(":11: routes[0].bogus_key"), "{output}");
    assert!(output.contains("nothing was pushed"), "{output}");

    // A push based on a revision that is no longer current is refused.
    let (pushed, output) = push(&etcd, &config("stale"), &["--expect-revision", "1"]);
    assert!(!pushed, "{output}");
    assert!(output.contains("changed since you read it"), "{output}");

    // An invalid config written to etcd by other means keeps the last
    // known good serving, and every instance says why.
    let source = EtcdSource::parse(&etcd.url(), None, None).unwrap();
    let mut client = source.connect().await.unwrap();
    let (_, revision) = source.read(&mut client).await.unwrap().unwrap();
    source
        .compare_and_swap(&mut client, revision, "[[routes]\nbroken")
        .await
        .unwrap();
    for instance in &fleet {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = instance.config_status().await;
            if status["last_error"].is_string() {
                break;
            }
            assert!(Instant::now() < deadline, "{status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(instance.answer().await, "second");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_etcd_stopped_instances_keep_serving_restart_on_the_last_known_good_and_converge() {
    let mut etcd = Etcd::start();
    let (pushed, output) = push(&etcd, &config("before"), &[]);
    assert!(pushed, "{output}");
    let mut fleet: Vec<Instance> = (0..3).map(|_| Instance::start(&etcd)).collect();
    for instance in &fleet {
        instance.wait_for("before").await;
    }

    etcd.stop();
    // Every instance notices, keeps serving, and says so.
    for instance in &fleet {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let status = instance.config_status().await;
            if status["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("etcd://"))
            {
                break;
            }
            assert!(Instant::now() < deadline, "{status}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(instance.answer().await, "before");
    }
    // One restarts while etcd is away: on the config it last applied.
    let state = fleet.pop().unwrap().stop();
    let restarted = Instance::start_on(&etcd, state);
    restarted.wait_for("before").await;
    fleet.push(restarted);

    etcd.resume();
    let (pushed, output) = push(&etcd, &config("after"), &[]);
    assert!(pushed, "{output}");
    for instance in &fleet {
        instance.wait_for("after").await;
    }
    // The stopped instance's lease runs out: it leaves the members.
    let names: Vec<String> = fleet.iter().map(Instance::name).collect();
    for instance in &fleet {
        instance.wait_for_members(&names, None).await;
    }
}

/// The fleet's ACME site.
const SITE: &str = "www.example.test";

/// The key the fleet's private keys are sealed with in the test that
/// encrypts them.
const SEALING_KEY: &str = "q3J1c2ljZS1zZWFsaW5nLWtleS1mb3ItdGVzdHMhIT0=";

/// A config with a plain listener, a TLS listener whose site's certificate
/// comes from `ca` through `challenge`, and the admin API.
fn acme_config(ca: &Ca, api_base: &str, challenge: &str, token_env: &str) -> String {
    format!(
        "[[listeners]]\naddress = \"${{LISTEN}}\"\n\n[[listeners]]\naddress = \"${{TLS}}\"\ntls = true\n\n\
         [admin]\naddress = \"${{ADMIN}}\"\n\n[[routes]]\nname = \"site\"\nhosts = [\"{SITE}\"]\n\
         tls = \"acme\"\nrespond = {{ status = 200, body = \"fleet\" }}\n\n{}",
        acme_table(ca, api_base, challenge, token_env)
    )
}

/// Waits up to 60 s for `instance` to serve a certificate for [`SITE`]
/// that `client` trusts; returns it.
async fn served_leaf(instance: &Instance, client: &TlsConnector) -> CertificateDer<'static> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match connect(client, instance.tls, SITE).await {
            Ok(stream) => return presented(&stream),
            Err(e) => assert!(
                Instant::now() < deadline,
                "{} serves no trusted certificate for {SITE} ({e}):\n{}",
                instance.name(),
                instance.log_text()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The keys and values under `prefix` in `etcd`.
async fn stored(etcd: &Etcd, prefix: &str) -> Vec<(String, String)> {
    let mut client = Client::connect([etcd.client.to_string()], None)
        .await
        .unwrap();
    let response = client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    response
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().unwrap().to_string(),
                String::from_utf8_lossy(kv.value()).into_owned(),
            )
        })
        .collect()
}

/// The number of successful ACME orders `instance` counts.
async fn orders_made(instance: &Instance) -> u64 {
    instance
        .metrics()
        .await
        .lines()
        .find_map(|line| line.strip_prefix("sluice_acme_attempts_total{result=\"success\"} "))
        .map_or(0, |count| count.trim().parse().unwrap())
}

/// Who holds the lock on ordering [`SITE`]'s certificate, as `instance`'s
/// `/status` says.
async fn certificate_lock_holder(instance: &Instance) -> Option<String> {
    let status = instance.status().await;
    status["fleet"]["locks"]
        .as_array()?
        .iter()
        .find(|held| held["lock"] == format!("certificate:{SITE}"))
        .and_then(|held| held["holder"].as_str())
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fleet_orders_one_certificate_that_every_instance_serves_even_without_etcd() {
    let mut etcd = Etcd::start();
    let ca = Ca::start(Duration::from_secs(90 * 86_400));
    let cloudflare = Cloudflare::start_https(&ca).await;
    let token_env = token_in("SLUICE_IT_CF_TOKEN_FLEET_ONE");
    let (pushed, output) = push(
        &etcd,
        &acme_config(&ca, &cloudflare.base, "dns-01", token_env),
        &[],
    );
    assert!(pushed, "{output}");
    let encrypted = ["--etcd-private-keys", "encrypted"];
    let sealing = [(ENCRYPTION_KEY_ENV, SEALING_KEY)];
    let mut fleet: Vec<Instance> = (0..3)
        .map(|_| Instance::launch(&etcd, scratch_dir(), free_port(), &encrypted, &sealing))
        .collect();
    let client = connector(&[pebble_root(&ca).await], rustls::ALL_VERSIONS, &[]);
    let leaf = served_leaf(&fleet[0], &client).await;
    for instance in &fleet[1..] {
        assert_eq!(
            served_leaf(instance, &client).await,
            leaf,
            "{}",
            instance.name()
        );
    }

    // One order for the fleet: one DNS record asked for, one success
    // among the instances, one account and one certificate in etcd.
    assert_eq!(cloudflare.state().create_requests, 1);
    let mut orders = 0;
    for instance in &fleet {
        orders += orders_made(instance).await;
    }
    assert_eq!(orders, 1);
    let accounts = stored(&etcd, "/fleet/acme/accounts/").await;
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    let certificates = stored(&etcd, "/fleet/acme/certificates/").await;
    assert_eq!(certificates.len(), 1, "{certificates:?}");
    assert_eq!(
        certificates[0].0,
        format!("/fleet/acme/certificates/{SITE}")
    );
    let certificate: serde_json::Value = serde_json::from_str(&certificates[0].1).unwrap();
    assert!(certificate["chain"]
        .as_str()
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    // The key, and the account's credentials, are sealed with the fleet's
    // key.
    let key = certificate["key"].as_str().unwrap();
    assert!(key.starts_with("sealed:v1:"), "{key}");
    assert!(!key.contains("PRIVATE KEY"), "{key}");
    assert!(accounts[0].1.starts_with("sealed:v1:"), "{}", accounts[0].1);
    assert!(!accounts[0].1.contains("key_pkcs8"), "{}", accounts[0].1);

    // With etcd stopped, every instance keeps serving the certificate,
    // and one restarted meanwhile serves it from its local copy.
    etcd.stop();
    let state = fleet.pop().unwrap().stop();
    let restarted = Instance::launch(&etcd, state, free_port(), &encrypted, &sealing);
    assert_eq!(served_leaf(&restarted, &client).await, leaf);
    for instance in &fleet {
        assert_eq!(served_leaf(instance, &client).await, leaf);
    }
    assert_eq!(
        cloudflare.state().create_requests,
        1,
        "nothing was ordered again"
    );
}

/// etcd with a DNS-01 site's config pushed, Pebble, and the Cloudflare
/// stand-in holding every record creation until the test lets it go.
async fn held_dns01_site(token_variable: &str) -> (Etcd, Ca, Cloudflare) {
    let etcd = Etcd::start();
    let ca = Ca::start(Duration::from_secs(90 * 86_400));
    let cloudflare = Cloudflare::start_https(&ca).await;
    cloudflare.state().hold_creates = true;
    let token_env = token_in(token_variable);
    let (pushed, output) = push(
        &etcd,
        &acme_config(&ca, &cloudflare.base, "dns-01", token_env),
        &[],
    );
    assert!(pushed, "{output}");
    (etcd, ca, cloudflare)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_holder_killed_mid_order_is_replaced_once_its_lease_runs_out() {
    let (etcd, ca, cloudflare) = held_dns01_site("SLUICE_IT_CF_TOKEN_FLEET_KILL").await;
    let lease = ["--etcd-lock-lease", "3s"];
    let mut fleet: Vec<Instance> = (0..3)
        .map(|_| Instance::launch(&etcd, scratch_dir(), free_port(), &lease, &[]))
        .collect();

    // The first order reaches the DNS API, where it is held.
    cloudflare
        .first_creation_asked(|| {
            fleet
                .iter()
                .map(Instance::log_text)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .await;
    // Every instance names the same holder; the others wait for the lock
    // rather than order, for longer than a lease.
    let mut holder = None;
    let deadline = Instant::now() + Duration::from_secs(15);
    while holder.is_none() {
        holder = certificate_lock_holder(&fleet[0]).await;
        assert!(
            Instant::now() < deadline,
            "{}",
            fleet[0].status().await["fleet"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let holder = holder.unwrap();
    for instance in &fleet[1..] {
        assert_eq!(
            certificate_lock_holder(instance).await.as_ref(),
            Some(&holder)
        );
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(cloudflare.state().create_requests, 1);

    // The holder dies mid-order.
    let dead = fleet.iter().position(|i| i.name() == holder).unwrap();
    drop(fleet.remove(dead));
    cloudflare.state().hold_creates = false;

    // Another instance takes the lock once the lease runs out, completes
    // the order, and both survivors serve the certificate.
    let client = connector(&[pebble_root(&ca).await], rustls::ALL_VERSIONS, &[]);
    let leaf = served_leaf(&fleet[0], &client).await;
    assert_eq!(served_leaf(&fleet[1], &client).await, leaf);
    assert_eq!(cloudflare.state().create_requests, 2);
    let orderers: Vec<String> = fleet
        .iter()
        .filter(|i| i.log_text().contains("ordering a certificate"))
        .map(Instance::name)
        .collect();
    assert_eq!(orderers.len(), 1, "{orderers:?}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while certificate_lock_holder(&fleet[0]).await.as_ref() == Some(&holder) {
        assert!(Instant::now() < deadline, "the dead holder's lock stays");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_whose_lock_is_lost_is_abandoned_and_deletes_its_dns_record() {
    let (etcd, _ca, cloudflare) = held_dns01_site("SLUICE_IT_CF_TOKEN_FLEET_LOST").await;
    let instance = Instance::launch(
        &etcd,
        scratch_dir(),
        free_port(),
        &["--etcd-lock-lease", "3s"],
        &[],
    );

    // The order's record creation reaches Cloudflare and is held there.
    cloudflare
        .first_creation_asked(|| instance.log_text())
        .await;

    // The lock's lease is revoked in etcd, as when the instance was cut off
    // from etcd for longer than the lease: the order is abandoned.
    let election = format!("/fleet/acme/locks/certificate:{SITE}");
    let mut client = Client::connect([etcd.client.to_string()], None)
        .await
        .unwrap();
    let held = client
        .get(election.as_str(), Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(held.kvs().len(), 1, "one instance holds the lock");
    client.lease_revoke(held.kvs()[0].lease()).await.unwrap();
    // The instance learns at its next renewal, within a second, that the
    // lease is gone, while the creation is still held.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !instance.log_text().contains("an etcd lease was lost") {
        assert!(
            Instant::now() < deadline,
            "the instance did not notice the lost lease:\n{}",
            instance.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Cloudflare then makes the record the abandoned order asked for; the
    // instance waits for its answer, deletes it, and reports the order
    // abandoned.
    cloudflare.state().hold_creates = false;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (created, deleted, left) = {
            let state = cloudflare.state();
            (state.created, state.deleted, state.records.len())
        };
        let abandoned = instance
            .log_text()
            .contains("was lost during the order; it was abandoned");
        if abandoned && created == 1 && deleted == 1 && left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "abandoned: {abandoned}; {created} record(s) created, {deleted} deleted, {left} left in the zone:\n{}",
            instance.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http01_challenge_one_instance_started_is_answered_by_another() {
    let etcd = Etcd::start();
    let ca = Ca::start(Duration::from_secs(90 * 86_400));
    let (pushed, output) = push(
        &etcd,
        &acme_config(&ca, "https://127.0.0.1:1", "http-01", "SLUICE_IT_UNUSED"),
        &[],
    );
    assert!(pushed, "{output}");

    // The test holds the certificate's lock, so the instances queue behind
    // it in the order they start: the first to start orders, and Pebble
    // validates at the plain listener of the second.
    let election = format!("/fleet/acme/locks/certificate:{SITE}");
    let mut client = Client::connect([etcd.client.to_string()], None)
        .await
        .unwrap();
    // Long enough to outlast two starts on a loaded machine.
    let lease = client.lease_grant(600, None).await.unwrap().id();
    client
        .campaign(election.as_str(), "test", lease)
        .await
        .unwrap();
    let queued = |count: usize| {
        let etcd = &etcd;
        let election = election.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while stored(etcd, &election).await.len() < count {
                assert!(
                    Instant::now() < deadline,
                    "fewer than {count} in the lock's queue"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let orderer = Instance::launch(&etcd, scratch_dir(), free_port(), &[], &[]);
    queued(2).await;
    let validated = Instance::launch(&etcd, scratch_dir(), ca.http_port, &[], &[]);
    queued(3).await;
    client.lease_revoke(lease).await.unwrap();

    let trusted = connector(&[pebble_root(&ca).await], rustls::ALL_VERSIONS, &[]);
    let leaf = served_leaf(&orderer, &trusted).await;
    assert_eq!(served_leaf(&validated, &trusted).await, leaf);
    assert!(orderer.log_text().contains("ordering a certificate"));
    assert!(
        !validated.log_text().contains("ordering a certificate"),
        "{}",
        validated.log_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_that_lost_its_lock_cannot_overwrite_its_successors_certificate() {
    let etcd = Etcd::start();
    let state = scratch_dir();
    let storage = |instance: &str| {
        EtcdStorage::new(
            EtcdStorageSettings {
                connection: EtcdSource::parse(&etcd.url(), None, None)
                    .unwrap()
                    .connection,
                prefix: "/fleet".to_string(),
                instance: instance.to_string(),
                lock_lease: Duration::from_secs(3),
                keys: KeyProtection::Plaintext,
            },
            &state.join(instance),
            Http01Responses::default(),
        )
    };
    let (cut_off, successor) = (storage("cut-off"), storage("successor"));
    let lock = format!("certificate:{SITE}");
    let names = vec![SITE.to_string()];
    let held = cut_off.lock(&lock).await.unwrap();

    // The holder is cut off long enough for its lease to run out: etcd
    // revokes it, and the lock passes on.
    let elections = stored(&etcd, "/fleet/acme/locks/").await;
    assert_eq!(elections.len(), 1, "{elections:?}");
    assert_eq!(elections[0].1, "cut-off");
    let lease = i64::from_str_radix(elections[0].0.rsplit('/').next().unwrap(), 16).unwrap();
    let mut client = Client::connect([etcd.client.to_string()], None)
        .await
        .unwrap();
    client.lease_revoke(lease).await.unwrap();
    // The holder learns at its next renewal that its lock is gone, which
    // abandons an order still running.
    tokio::time::timeout(Duration::from_secs(5), held.lost())
        .await
        .expect("the cut-off holder never learnt it lost its lock");
    let successors = successor.lock(&lock).await.unwrap();
    let renewed = self_signed(SITE);
    successor
        .save_certificate(&names, &renewed, &successors)
        .await
        .unwrap();

    // The cut-off instance finishes its order late: its write is refused,
    // and the successor's certificate stays.
    let late = self_signed(SITE);
    let refused = cut_off
        .save_certificate(&names, &late, &held)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("lost the lock"), "{refused}");
    // Even under the lock, a certificate that expires sooner does not
    // replace the stored one.
    let older = self_signed_until(SITE, 2030);
    let refused = successor
        .save_certificate(&names, &older, &successors)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("newer than this one"), "{refused}");
    assert_eq!(
        successor.load_certificate(&names).await.unwrap(),
        Some(renewed)
    );
}

/// A self-signed certificate for `name`, valid until rcgen's default end.
fn self_signed(name: &str) -> Issued {
    let generated = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    Issued::from_pem(generated.cert.pem(), generated.signing_key.serialize_pem()).unwrap()
}

/// A self-signed certificate for `name` that expires at the start of `year`.
fn self_signed_until(name: &str, year: i32) -> Issued {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    params.not_after = rcgen::date_time_ymd(year, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    Issued::from_pem(cert.pem(), key.serialize_pem()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renewal_due_while_etcd_is_away_waits_for_the_lock() {
    let mut etcd = Etcd::start();
    let ca = Ca::start(Duration::from_secs(10));
    let cloudflare = Cloudflare::start(ca.management).await;
    let mut settings = crate::acme::config(
        &ca,
        &cloudflare,
        ChallengeKind::Dns01,
        token_in("SLUICE_IT_CF_TOKEN_FLEET_AWAY"),
    );
    settings.renew_before = Duration::from_secs(4);
    let state = scratch_dir();
    let storage = EtcdStorage::new(
        EtcdStorageSettings {
            connection: EtcdSource::parse(&etcd.url(), None, None)
                .unwrap()
                .connection,
            prefix: "/fleet".to_string(),
            instance: "alone".to_string(),
            lock_lease: Duration::from_secs(2),
            keys: KeyProtection::Plaintext,
        },
        &state,
        Http01Responses::default(),
    );
    let (sender, mut issued) = tokio::sync::mpsc::unbounded_channel();
    let acme = Acme::new(
        settings,
        std::sync::Arc::new(storage),
        vec![vec![SITE.to_string()]],
        move |certificate| {
            let _ = sender.send(certificate);
        },
    )
    .await
    .unwrap();
    let _tasks = acme.start();
    let first = next_issued(&mut issued).await;

    // etcd goes away before the certificate is due: the renewal cannot
    // take the lock, so it orders nothing and says why, and the
    // certificate keeps serving.
    etcd.stop();
    let requests = cloudflare.state().create_requests;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = acme.status();
        if status[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("cannot take the lock"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "{status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cloudflare.state().create_requests, requests);
    assert_eq!(acme.certificates(), std::slice::from_ref(&first));

    // Once etcd is back, the renewal goes through.
    etcd.resume();
    let renewed = next_issued(&mut issued).await;
    assert_ne!(renewed.serial, first.serial);
    assert!(acme.status()[0].last_error.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_is_reached_over_tls_with_a_client_certificate_or_as_a_user() {
    // TLS, with a client certificate etcd checks.
    let etcd = Etcd::start_tls();
    let (ca, cert, key) = (
        etcd.file("ca.pem"),
        etcd.file("client.pem"),
        etcd.file("client-key.pem"),
    );
    let certified = [
        "--etcd-ca",
        ca.as_str(),
        "--etcd-cert",
        cert.as_str(),
        "--etcd-key",
        key.as_str(),
    ];
    let (pushed, output) = push(&etcd, &config("over TLS"), &["--etcd-ca", ca.as_str()]);
    assert!(!pushed, "etcd wants a client certificate: {output}");
    assert!(output.contains("--etcd-cert"), "{output}");
    let (pushed, output) = push(&etcd, &config("over TLS"), &certified);
    assert!(pushed, "{output}");
    let instance = Instance::launch(&etcd, scratch_dir(), free_port(), &certified, &[]);
    instance.wait_for("over TLS").await;

    // A user whose password comes from the environment.
    let etcd = Etcd::start();
    let mut client = Client::connect([etcd.client.to_string()], None)
        .await
        .unwrap();
    client.user_add("root", "s3cret-pass", None).await.unwrap();
    client.user_grant_role("root", "root").await.unwrap();
    client.auth_enable().await.unwrap();
    let as_root = ["--etcd-user", "root"];
    let password = [("SLUICE_ETCD_PASSWORD", "s3cret-pass")];
    let (pushed, output) = push(&etcd, &config("as a user"), &[]);
    assert!(!pushed, "etcd wants a user: {output}");
    assert!(output.contains("user name is empty"), "{output}");
    let (pushed, output) = push(&etcd, &config("as a user"), &as_root);
    assert!(!pushed, "{output}");
    assert!(output.contains("SLUICE_ETCD_PASSWORD"), "{output}");
    let (pushed, output) = push_with(&etcd, &config("as a user"), &as_root, &password);
    assert!(pushed, "{output}");
    let instance = Instance::launch(&etcd, scratch_dir(), free_port(), &as_root, &password);
    instance.wait_for("as a user").await;
}

#[test]
fn a_bad_lock_lease_or_a_missing_encryption_key_refuses_to_start_and_says_why() {
    let run = |extra: &[&str], key: Option<&str>| {
        let state = scratch_dir();
        let mut command = Command::new(sluice_binary());
        command
            .args([
                "run",
                "--config-url",
                "etcd://127.0.0.1:1/fleet",
                "--state-dir",
            ])
            .arg(state.join("state"))
            .args(extra)
            .env_remove(ENCRYPTION_KEY_ENV);
        if let Some(key) = key {
            command.env(ENCRYPTION_KEY_ENV, key);
        }
        let output = command.output().unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let short = run(&["--etcd-lock-lease", "500ms"], None);
    assert!(short.contains("at least 1s"), "{short}");
    let missing = run(&["--etcd-private-keys", "encrypted"], None);
    assert!(missing.contains(ENCRYPTION_KEY_ENV), "{missing}");
    assert!(missing.contains("openssl rand -base64 32"), "{missing}");
    let wrong = run(&["--etcd-private-keys", "encrypted"], Some("c2hvcnQ="));
    assert!(wrong.contains("holds 5 bytes"), "{wrong}");
}
