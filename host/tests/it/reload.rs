//! Live configuration: reload triggers, last known good, remote source,
//! health checkers following reloads, reload under load.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::common::{
    client, free_port, get, render, scratch_dir, sluice_binary, sluice_exited, upstreams,
    wait_accepting, Proxy, Reply,
};
use crate::fault::{Behavior, FaultUpstream};

/// The series counting failed reload attempts.
const FAILED: &str = "sluice_config_reloads_total{result=\"failed\"}";
/// The series counting applied reloads.
const APPLIED: &str = "sluice_config_reloads_total{result=\"applied\"}";

/// Two placements, `pa` on `a` and `pb` on `b`, and one route to `route_to`.
fn two_placements(a: SocketAddr, b: SocketAddr, route_to: &str) -> String {
    format!(
        r#"[placements.pa]
endpoints = [{{ address = "{a}" }}]

[placements.pb]
endpoints = [{{ address = "{b}" }}]

[[routes]]
placement = "{route_to}"
"#
    )
}

/// The value of one series in Prometheus text, 0 when absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

fn version(config: &Value) -> String {
    config["version"].as_str().unwrap_or_default().to_string()
}

/// The 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

/// Polls `predicate` every 20 ms until it holds, for at most `timeout`.
async fn eventually(what: &str, timeout: Duration, mut predicate: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !predicate() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls the admin `/config` until `predicate` holds (10 s at most).
async fn wait_config(proxy: &Proxy, predicate: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, config) = proxy.admin("GET", "/config").await;
        if predicate(&config) {
            return config;
        }
        assert!(Instant::now() < deadline, "/config never matched: {config}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// An endpoint's entry in the admin `/status`.
async fn endpoint_status(proxy: &Proxy, placement: &str, address: SocketAddr) -> Value {
    let (status, body) = proxy.admin("GET", "/status").await;
    assert_eq!(status, 200, "{body}");
    body["placements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == placement)
        .unwrap_or_else(|| panic!("no placement {placement} in {body}"))["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"] == address.to_string())
        .unwrap_or_else(|| panic!("no endpoint {address} in {body}"))
        .clone()
}

/// Polls `/status` until `predicate` holds for the endpoint (10 s at most).
async fn wait_endpoint(
    proxy: &Proxy,
    placement: &str,
    address: SocketAddr,
    predicate: impl Fn(&Value) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let endpoint = endpoint_status(proxy, placement, address).await;
        if predicate(&endpoint) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "endpoint status never matched: {endpoint}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn file_change_is_applied_invalid_change_keeps_serving_and_is_reported() {
    let up = upstreams(&["a", "b"]).await;
    let (a, b) = (up[0].address, up[1].address);
    let proxy = Proxy::start(&two_placements(a, b, "pa"));
    assert_eq!(get(&proxy, "any.test", "/", &[]).await.served_by(), "a");
    let (status, config) = proxy.admin("GET", "/config").await;
    assert_eq!(status, 200);
    assert_eq!(config["source"], proxy.config_path.display().to_string());
    assert_eq!(config["from_last_known_good"], false);
    assert!(config["last_error"].is_null(), "{config}");
    let v0 = version(&config);

    // A valid change is applied by the watcher.
    proxy.rewrite(&two_placements(a, b, "pb"));
    let v1 = proxy.wait_version_change(&v0).await;
    assert_eq!(get(&proxy, "any.test", "/", &[]).await.served_by(), "b");
    let failed_before = metric(&proxy.metrics().await, FAILED);

    // An invalid change is rejected, with the key path and the line, and the
    // config in force keeps serving.
    let broken = two_placements(a, b, "nowhere");
    proxy.rewrite(&broken);
    let config = wait_config(&proxy, |c| !c["last_error"].is_null()).await;
    let error = config["last_error"].as_str().unwrap();
    let line = line_of(&render(proxy.address, proxy.admin, &broken), "nowhere");
    let expected = format!(
        "{}:{line}: routes[0].placement",
        proxy.config_path.display()
    );
    assert!(error.contains(&expected), "{expected:?} not in {error:?}");
    assert!(error.contains("unknown placement"), "{error}");
    assert_eq!(version(&config), v1);
    assert!(config["last_attempt_at"].is_string(), "{config}");
    assert_eq!(get(&proxy, "any.test", "/", &[]).await.served_by(), "b");
    let metrics = proxy.metrics().await;
    assert!(metric(&metrics, FAILED) >= failed_before + 1.0, "{metrics}");
    assert_eq!(metric(&metrics, "sluice_config_last_reload_failed"), 1.0);

    // Fixing the file applies it and clears the error.
    proxy.rewrite(&two_placements(a, b, "pa"));
    let v2 = proxy.wait_version_change(&v1).await;
    assert_eq!(v2, v0, "the same text has the same version");
    let (_, config) = proxy.admin("GET", "/config").await;
    assert!(config["last_error"].is_null(), "{config}");
    assert_eq!(get(&proxy, "any.test", "/", &[]).await.served_by(), "a");
    assert_eq!(
        metric(&proxy.metrics().await, "sluice_config_last_reload_failed"),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_and_admin_reload_a_change_the_watcher_cannot_see() {
    let up = upstreams(&["a", "b"]).await;
    let (a, b) = (up[0].address, up[1].address);
    let address = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let dir = scratch_dir();
    let (watched_dir, hidden_dir) = (dir.join("etc"), dir.join("elsewhere"));
    for d in [&watched_dir, &hidden_dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    // The config path is a hard link to a file in another directory. The
    // watcher watches the config path's directory; a write through the other
    // name is an event in a directory nobody watches.
    let hidden = hidden_dir.join("sluice.toml");
    std::fs::write(&hidden, render(address, admin, &two_placements(a, b, "pa"))).unwrap();
    let config = watched_dir.join("sluice.toml");
    std::fs::hard_link(&hidden, &config).unwrap();
    let proxy = Proxy::spawn(address, admin, config.clone(), dir.join("state"), &[]);
    assert_eq!(get(&proxy, "any.test", "/", &[]).await.served_by(), "a");
    let v0 = version(&proxy.admin("GET", "/config").await.1);

    // Rewrite the same inode in place, through the other name.
    std::fs::write(&hidden, render(address, admin, &two_placements(a, b, "pb"))).unwrap();
    let second = hidden.clone();

    // Nothing changes on its own.
    let quiet_until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < quiet_until {
        assert_eq!(version(&proxy.admin("GET", "/config").await.1), v0);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(&proxy, "any.test", "/", &[]).await.served_by(), "a");

    // SIGHUP reloads it.
    proxy.signal("HUP");
    let v1 = proxy.wait_version_change(&v0).await;
    assert_eq!(get(&proxy, "any.test", "/", &[]).await.served_by(), "b");

    // The admin API: nothing changed, then an invalid file.
    let (status, body) = proxy.admin("POST", "/reload").await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("unchanged")),
        "{body}"
    );
    assert_eq!(body["version"], v1.as_str());
    std::fs::write(
        &second,
        render(address, admin, &two_placements(a, b, "nowhere")),
    )
    .unwrap();
    let (status, body) = proxy.admin("POST", "/reload").await;
    assert_eq!(
        (status, body["result"].as_str()),
        (422, Some("rejected")),
        "{body}"
    );
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("routes[0].placement") && error.contains("unknown placement"),
        "{error}"
    );
    assert_eq!(body["version"], v1.as_str());
    assert_eq!(get(&proxy, "any.test", "/", &[]).await.served_by(), "b");
    let (_, config) = proxy.admin("GET", "/config").await;
    assert_eq!(version(&config), v1);
    assert!(
        config["last_error"]
            .as_str()
            .unwrap()
            .contains("routes[0].placement"),
        "{config}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_on_a_broken_file_starts_on_the_last_known_good() {
    let up = upstreams(&["a", "b"]).await;
    let (a, b) = (up[0].address, up[1].address);
    let proxy = Proxy::start(&two_placements(a, b, "pa"));
    assert_eq!(get(&proxy, "any.test", "/", &[]).await.served_by(), "a");
    let v0 = version(&proxy.admin("GET", "/config").await.1);
    let (address, admin, config_path, state_dir) = (
        proxy.address,
        proxy.admin,
        proxy.config_path.clone(),
        proxy.state_dir.clone(),
    );
    assert!(state_dir.join("last-known-good.toml").exists());
    let _files = proxy.stop();

    std::fs::write(
        &config_path,
        render(address, admin, &two_placements(a, b, "nowhere")),
    )
    .unwrap();
    let proxy = Proxy::spawn(address, admin, config_path.clone(), state_dir.clone(), &[]);
    let reply = get(&proxy, "any.test", "/", &[]).await;
    assert_eq!((reply.status, reply.served_by()), (200, "a"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !proxy.stderr_text().contains("LAST KNOWN GOOD") {
        assert!(
            Instant::now() < deadline,
            "no loud error:\n{}",
            proxy.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, config) = proxy.admin("GET", "/config").await;
    assert_eq!(config["from_last_known_good"], true, "{config}");
    assert_eq!(version(&config), v0);
    let error = config["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("routes[0].placement"), "{config}");
    assert!(metric(&proxy.metrics().await, FAILED) >= 1.0);

    // Fixing the file leaves the last known good.
    proxy.rewrite(&two_placements(a, b, "pb"));
    let config = wait_config(&proxy, |c| c["from_last_known_good"] == false).await;
    assert!(config["last_error"].is_null(), "{config}");
    assert_eq!(get(&proxy, "any.test", "/", &[]).await.served_by(), "b");
}

#[test]
fn a_broken_file_without_last_known_good_refuses_to_start() {
    let dir = scratch_dir();
    let path = dir.join("sluice.toml");
    let address = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let body = "[placements.p]\nendpoints = [{ address = \"127.0.0.1:9\" }]\n\n[[routes]]\nplacement = \"nowhere\"\n";
    std::fs::write(&path, render(address, admin, body)).unwrap();
    let stderr_path = dir.join("stderr.log");
    let mut child = Command::new(sluice_binary())
        .args(["run", "--config"])
        .arg(&path)
        .arg("--state-dir")
        .arg(dir.join("fresh-state"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sluice kept running on a broken config without a last known good");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("routes[0].placement"), "{stderr}");
    assert!(TcpStream::connect(address).is_err(), "nothing may listen");
}

/// One placement `p` over `endpoints`, with fast active checks when `health`.
fn checked(endpoints: &[SocketAddr], health: bool) -> String {
    let list: Vec<_> = endpoints
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    let health = if health {
        "health = { interval = \"100ms\", timeout = \"500ms\", rise = 1, fall = 1 }\n"
    } else {
        ""
    };
    format!(
        "[placements.p]\nendpoints = [{}]\n{health}\n[[routes]]\nplacement = \"p\"\n",
        list.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn health_checkers_follow_reloads() {
    let one = FaultUpstream::start("one").await;
    let two = FaultUpstream::start("two").await;
    let proxy = Proxy::start(&checked(&[one.address], true));
    let timeout = Duration::from_secs(5);
    eventually("probes of one", timeout, || one.health_hits() >= 3).await;
    let v0 = version(&proxy.admin("GET", "/config").await.1);

    // Without the health table, probes stop (one may have been in flight).
    proxy.rewrite(&checked(&[one.address], false));
    let v1 = proxy.wait_version_change(&v0).await;
    let stopped_at = one.health_hits();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        one.health_hits() <= stopped_at + 1,
        "{} probes after the check was removed",
        one.health_hits() - stopped_at
    );
    let (_, status) = proxy.admin("GET", "/status").await;
    assert_eq!(status["placements"][0]["health_check"], false, "{status}");

    // A second endpoint with checks: both are probed.
    let before = one.health_hits();
    proxy.rewrite(&checked(&[one.address, two.address], true));
    proxy.wait_version_change(&v1).await;
    eventually("probes of two", timeout, || two.health_hits() >= 3).await;
    eventually("probes of one again", timeout, || {
        one.health_hits() >= before + 3
    })
    .await;
    assert_eq!((one.hits(), two.hits()), (0, 0), "probes are not requests");
}

#[tokio::test(flavor = "multi_thread")]
async fn active_checks_take_an_endpoint_down_and_back_up() {
    let one = FaultUpstream::start("one").await;
    let two = FaultUpstream::start("two").await;
    let proxy = Proxy::start(&checked(&[one.address, two.address], true));
    let timeout = Duration::from_secs(5);
    eventually("first probes", timeout, || {
        one.health_hits() >= 1 && two.health_hits() >= 1
    })
    .await;

    one.set_healthy(false);
    wait_endpoint(&proxy, "p", one.address, |e| {
        e["healthy"] == false && e["down_reason"] == "active_check"
    })
    .await;
    for _ in 0..6 {
        let reply = get(&proxy, "any.test", "/", &[]).await;
        assert_eq!((reply.status, reply.served_by()), (200, "two"));
    }
    assert_eq!(one.hits(), 0);

    one.set_healthy(true);
    wait_endpoint(&proxy, "p", one.address, |e| {
        e["healthy"] == true && e["down_reason"].is_null()
    })
    .await;
    let mut served = BTreeSet::new();
    for _ in 0..6 {
        let reply = get(&proxy, "any.test", "/", &[]).await;
        assert_eq!(reply.status, 200);
        served.insert(reply.served_by().to_string());
    }
    assert_eq!(
        served,
        BTreeSet::from(["one".to_string(), "two".to_string()])
    );

    // Down again, then the check is removed: nothing says it is down any more.
    one.set_healthy(false);
    wait_endpoint(&proxy, "p", one.address, |e| e["healthy"] == false).await;
    let v0 = version(&proxy.admin("GET", "/config").await.1);
    proxy.rewrite(&checked(&[one.address, two.address], false));
    proxy.wait_version_change(&v0).await;
    wait_endpoint(&proxy, "p", one.address, |e| e["healthy"] == true).await;
    let hits = one.hits();
    for _ in 0..4 {
        assert_eq!(get(&proxy, "any.test", "/", &[]).await.status, 200);
    }
    assert!(
        one.hits() > hits,
        "the endpoint without a check gets traffic again"
    );
}

/// Placement `a` with a breaker and fallback `b`; a side route whose
/// response header carries `tag`.
fn breaker_config(a: SocketAddr, b: SocketAddr, tag: &str) -> String {
    format!(
        r#"[placements.a]
endpoints = [{{ address = "{a}" }}]
fallback = "b"
breaker = {{ consecutive_failures = 2, open_for = "30s" }}

[placements.b]
endpoints = [{{ address = "{b}" }}]

[[routes]]
name = "main"
placement = "a"

[[routes]]
name = "side"
path_prefix = "/side"
placement = "b"
response_headers = {{ set = {{ "X-Tag" = "{tag}" }} }}
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn breaker_state_survives_a_reload_of_an_unchanged_endpoint() {
    let a = FaultUpstream::start("a").await;
    a.set(Behavior::Status(500));
    let up = upstreams(&["b"]).await;
    let proxy = Proxy::start(&breaker_config(a.address, up[0].address, "one"));
    for _ in 0..2 {
        let reply = get(&proxy, "any.test", "/", &[]).await;
        assert_eq!((reply.status, reply.served_by()), (500, "a"));
    }
    let reply = get(&proxy, "any.test", "/", &[]).await;
    assert_eq!((reply.status, reply.served_by()), (200, "b"));
    assert_eq!(reply.header("x-failover-reason"), "circuit_open");
    assert_eq!(a.hits(), 2);
    let v0 = version(&proxy.admin("GET", "/config").await.1);

    proxy.rewrite(&breaker_config(a.address, up[0].address, "two"));
    proxy.wait_version_change(&v0).await;
    assert_eq!(
        get(&proxy, "any.test", "/side", &[]).await.header("x-tag"),
        "two"
    );

    let reply = get(&proxy, "any.test", "/", &[]).await;
    assert_eq!((reply.status, reply.served_by()), (200, "b"));
    assert_eq!(reply.header("x-failover-reason"), "circuit_open");
    assert_eq!(a.hits(), 2, "the open breaker kept requests away from a");
    let endpoint = endpoint_status(&proxy, "a", a.address).await;
    assert_eq!(endpoint["breaker"], "open", "{endpoint}");
}

/// One placement and a route whose responses carry `X-Variant: variant`.
fn variant_config(address: SocketAddr, variant: &str) -> String {
    format!(
        r#"[placements.p]
endpoints = [{{ address = "{address}" }}]

[[routes]]
placement = "p"
response_headers = {{ set = {{ "X-Variant" = "{variant}" }} }}
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn reloads_under_load_lose_no_request() {
    const TASKS: usize = 4;
    const MIN_REQUESTS: usize = 4_000;
    const MAX_REQUESTS: usize = 40_000;
    const RELOADS: usize = 20;
    let up = upstreams(&["a"]).await;
    let proxy = Proxy::start(&variant_config(up[0].address, "one"));
    let applied_before = metric(&proxy.metrics().await, APPLIED);
    let mut current = version(&proxy.admin("GET", "/config").await.1);

    let reloads_done = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let variants = Arc::new(Mutex::new(BTreeSet::<String>::new()));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (done, sent, failures, variants) = (
            reloads_done.clone(),
            sent.clone(),
            failures.clone(),
            variants.clone(),
        );
        let url = proxy.url("/load");
        tasks.push(tokio::spawn(async move {
            let client = client();
            loop {
                let n = sent.fetch_add(1, Ordering::SeqCst);
                if n >= MAX_REQUESTS || (n >= MIN_REQUESTS && done.load(Ordering::SeqCst)) {
                    break;
                }
                match client.get(&url).header("host", "load.test").send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let variant = response
                            .headers()
                            .get("x-variant")
                            .map(|v| v.to_str().unwrap().to_string());
                        match response.bytes().await {
                            Ok(_) if status == 200 => {
                                variants.lock().unwrap().insert(variant.unwrap_or_default());
                            }
                            Ok(_) => failures.lock().unwrap().push(format!("status {status}")),
                            Err(e) => failures.lock().unwrap().push(format!("body: {e}")),
                        }
                    }
                    Err(e) => failures.lock().unwrap().push(format!("transport: {e}")),
                }
            }
        }));
    }

    for i in 0..RELOADS {
        let variant = if i % 2 == 0 { "two" } else { "one" };
        proxy.rewrite(&variant_config(up[0].address, variant));
        current = proxy.wait_version_change(&current).await;
    }
    reloads_done.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }

    let failures = std::mem::take(&mut *failures.lock().unwrap());
    assert!(
        failures.is_empty(),
        "{} failed requests, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(sent.load(Ordering::SeqCst) >= MIN_REQUESTS);
    assert_eq!(
        *variants.lock().unwrap(),
        BTreeSet::from(["one".to_string(), "two".to_string()])
    );
    let applied = metric(&proxy.metrics().await, APPLIED) - applied_before;
    assert!(applied >= RELOADS as f64, "{applied} reloads applied");
}

/// A tiny HTTP/1.1 server handing out a config text with an ETag, answering
/// `If-None-Match` with 304.
struct ConfigServer {
    address: SocketAddr,
    /// The text served and its revision, the ETag.
    content: Arc<Mutex<(String, u32)>>,
    requests: Arc<AtomicUsize>,
    conditional: Arc<AtomicUsize>,
    not_modified: Arc<AtomicUsize>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl ConfigServer {
    async fn start(text: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Self {
            address: listener.local_addr().unwrap(),
            content: Arc::new(Mutex::new((text, 1))),
            requests: Arc::default(),
            conditional: Arc::default(),
            not_modified: Arc::default(),
            task: Mutex::new(None),
        };
        server.serve(listener);
        server
    }

    fn url(&self) -> String {
        format!("http://{}/sluice.toml", self.address)
    }

    fn set(&self, text: String) {
        let mut content = self.content.lock().unwrap();
        content.0 = text;
        content.1 += 1;
    }

    /// Closes the port.
    fn stop(&self) {
        if let Some(task) = self.task.lock().unwrap().take() {
            task.abort();
        }
    }

    /// Listens again on the same port.
    async fn restart(&self) {
        self.stop();
        for _ in 0..50 {
            if let Ok(listener) = tokio::net::TcpListener::bind(self.address).await {
                self.serve(listener);
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("cannot rebind {}", self.address);
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let (content, requests, conditional, not_modified) = (
            self.content.clone(),
            self.requests.clone(),
            self.conditional.clone(),
            self.not_modified.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                // One request per connection, handled inline: requests are tiny.
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    let mut head = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&chunk[..n]),
                        }
                    }
                    requests.fetch_add(1, Ordering::SeqCst);
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let presented = head
                        .lines()
                        .filter_map(|l| l.split_once(':'))
                        .find(|(name, _)| name.eq_ignore_ascii_case("if-none-match"))
                        .map(|(_, value)| value.trim().to_string());
                    let (text, revision) = content.lock().unwrap().clone();
                    let etag = format!("\"rev-{revision}\"");
                    let response = if let Some(presented) = presented {
                        conditional.fetch_add(1, Ordering::SeqCst);
                        if presented == etag {
                            not_modified.fetch_add(1, Ordering::SeqCst);
                            format!("HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nConnection: close\r\n\r\n")
                        } else {
                            ok_response(&text, &etag)
                        }
                    } else {
                        ok_response(&text, &etag)
                    };
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                })
                .await;
            }
        });
        *self.task.lock().unwrap() = Some(task);
    }
}

impl Drop for ConfigServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn ok_response(text: &str, etag: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/toml\r\nContent-Length: {}\r\nETag: {etag}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )
}

/// `sluice run --config-url URL`, which `Proxy::spawn` cannot start.
struct RemoteProxy {
    address: SocketAddr,
    admin: SocketAddr,
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl RemoteProxy {
    fn spawn(address: SocketAddr, admin: SocketAddr, url: &str, state_dir: &Path) -> Self {
        let mut child = Command::new(sluice_binary())
            .args([
                "run",
                "--config-url",
                url,
                "--poll-interval",
                "200ms",
                "--state-dir",
            ])
            .arg(state_dir)
            .env("RUST_LOG", "warn,sluice=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (sink, pipe) = (stderr.clone(), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut text = sink.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        let mut proxy = Self {
            address,
            admin,
            child,
            stderr,
        };
        let (child, stderr) = (&mut proxy.child, &proxy.stderr);
        wait_accepting(
            address,
            Duration::from_secs(20),
            || sluice_exited(child),
            || stderr.lock().unwrap().clone(),
        );
        proxy
    }

    fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    async fn config(&self) -> Value {
        let response = client()
            .get(format!("http://{}/config", self.admin))
            .send()
            .await
            .unwrap();
        response.json().await.unwrap()
    }

    async fn get(&self) -> Reply {
        let response = client()
            .get(format!("http://{}/", self.address))
            .header("host", "remote.test")
            .send()
            .await
            .unwrap();
        Reply {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    }

    /// Polls until a request is served by `name` (10 s at most).
    async fn wait_served_by(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let reply = self.get().await;
            if reply.served_by() == name {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "still served by {:?}:\n{}",
                reply.served_by(),
                self.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Polls `/config` until `predicate` holds (10 s at most).
    async fn wait_config(&self, predicate: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let config = self.config().await;
            if predicate(&config) {
                return config;
            }
            assert!(Instant::now() < deadline, "/config never matched: {config}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for RemoteProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_source_is_polled_with_etags_and_falls_back_to_last_known_good() {
    let up = upstreams(&["a", "b"]).await;
    let (a, b) = (up[0].address, up[1].address);
    let address = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let server = ConfigServer::start(render(address, admin, &two_placements(a, b, "pa"))).await;
    let scratch = scratch_dir();
    let state_dir = scratch.join("state");
    let proxy = RemoteProxy::spawn(address, admin, &server.url(), &state_dir);
    assert_eq!(proxy.get().await.served_by(), "a");
    let config = proxy.config().await;
    assert_eq!(config["source"], server.url().as_str(), "{config}");
    assert_eq!(config["from_last_known_good"], false);

    // Unchanged polls are conditional and answered 304.
    eventually("a 304", Duration::from_secs(5), || {
        server.not_modified.load(Ordering::SeqCst) >= 2
    })
    .await;
    assert!(server.conditional.load(Ordering::SeqCst) >= 2);

    // A changed text is applied.
    server.set(render(address, admin, &two_placements(a, b, "pb")));
    proxy.wait_served_by("b").await;
    let applied_version = version(&proxy.config().await);
    let requests = server.requests.load(Ordering::SeqCst);
    eventually("more 304s", Duration::from_secs(5), || {
        server.not_modified.load(Ordering::SeqCst) >= 3
    })
    .await;
    assert!(server.requests.load(Ordering::SeqCst) > requests);

    // The source goes away: the config in force keeps serving, the error shows.
    server.stop();
    let config = proxy.wait_config(|c| !c["last_error"].is_null()).await;
    assert_eq!(config["source"], server.url().as_str());
    assert_eq!(version(&config), applied_version);
    assert!(
        config["last_error"]
            .as_str()
            .unwrap()
            .contains(&server.url()),
        "{config}"
    );
    assert_eq!(proxy.get().await.served_by(), "b");
    drop(proxy);

    // A fresh start with the source down runs on the last known good.
    let proxy = RemoteProxy::spawn(address, admin, &server.url(), &state_dir);
    let reply = proxy.get().await;
    assert_eq!((reply.status, reply.served_by()), (200, "b"));
    let config = proxy.config().await;
    assert_eq!(config["from_last_known_good"], true, "{config}");
    assert_eq!(config["source"], server.url().as_str());
    assert!(!config["last_error"].is_null(), "{config}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !proxy.stderr_text().contains("LAST KNOWN GOOD") {
        assert!(
            Instant::now() < deadline,
            "no loud error:\n{}",
            proxy.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // When the source is back, it is used again.
    server.set(render(address, admin, &two_placements(a, b, "pa")));
    server.restart().await;
    proxy.wait_served_by("a").await;
    let config = proxy
        .wait_config(|c| c["from_last_known_good"] == false)
        .await;
    assert!(config["last_error"].is_null(), "{config}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reverting_a_broken_file_to_the_config_in_force_clears_the_error() {
    let up = upstreams(&["a", "b"]).await;
    let (a, b) = (up[0].address, up[1].address);
    let good = two_placements(a, b, "pa");
    let proxy = Proxy::start(&good);
    let v0 = version(&proxy.admin("GET", "/config").await.1);
    proxy.rewrite(&two_placements(a, b, "nowhere"));
    wait_config(&proxy, |c| !c["last_error"].is_null()).await;
    assert_eq!(
        metric(&proxy.metrics().await, "sluice_config_last_reload_failed"),
        1.0
    );

    // `git checkout sluice.toml`: the text in force again.
    proxy.rewrite(&good);
    let (status, body) = proxy.admin("POST", "/reload").await;
    assert_eq!(status, 200, "{body}");
    let config = proxy.admin("GET", "/config").await.1;
    assert_eq!(version(&config), v0);
    assert!(
        config["last_error"].is_null(),
        "the source is fine again, yet: {config}"
    );
    assert_eq!(
        metric(&proxy.metrics().await, "sluice_config_last_reload_failed"),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn configmap_style_symlink_swaps_are_seen_every_time() {
    // A Kubernetes ConfigMap volume: sluice.toml -> ..data/sluice.toml,
    // ..data -> ..<timestamp>/; an update writes a new timestamped directory,
    // swaps ..data atomically and deletes the old directory.
    let up = upstreams(&["a", "b"]).await;
    let (a, b) = (up[0].address, up[1].address);
    let address = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let scratch = scratch_dir();
    let dir = scratch.join("configmap");
    std::fs::create_dir_all(&dir).unwrap();
    let publish = |revision: usize, route_to: &str| {
        let release = dir.join(format!("..rev{revision}"));
        std::fs::create_dir_all(&release).unwrap();
        std::fs::write(
            release.join("sluice.toml"),
            render(address, admin, &two_placements(a, b, route_to)),
        )
        .unwrap();
        let staged = dir.join("..data_tmp");
        std::os::unix::fs::symlink(format!("..rev{revision}"), &staged).unwrap();
        std::fs::rename(&staged, dir.join("..data")).unwrap();
        if revision > 0 {
            std::fs::remove_dir_all(dir.join(format!("..rev{}", revision - 1))).unwrap();
        }
    };
    publish(0, "pa");
    let link = dir.join("sluice.toml");
    std::os::unix::fs::symlink("..data/sluice.toml", &link).unwrap();
    let proxy = Proxy::spawn(address, admin, link, dir.join("state"), &[]);
    assert_eq!(get(&proxy, "any.test", "/", &[]).await.served_by(), "a");
    let mut current = version(&proxy.admin("GET", "/config").await.1);

    for (revision, route_to, expected) in [(1, "pb", "b"), (2, "pa", "a"), (3, "pb", "b")] {
        publish(revision, route_to);
        current = proxy.wait_version_change(&current).await;
        assert_eq!(
            get(&proxy, "any.test", "/", &[]).await.served_by(),
            expected,
            "update {revision}"
        );
    }
}
