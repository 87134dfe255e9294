//! Shared harness: real upstream servers on loopback and the real `sluice`
//! binary, started on a config written for each test.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sluice::demo::upstream::{self, Upstream};

/// Starts named upstreams on ephemeral loopback ports.
pub async fn upstreams(names: &[&str]) -> Vec<Upstream> {
    let mut started = Vec::new();
    for name in names {
        started.push(
            upstream::spawn(name, "127.0.0.1:0".parse().unwrap())
                .await
                .unwrap(),
        );
    }
    started
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A loopback address nothing listens on.
pub fn closed_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A fresh scratch directory for one test.
pub fn scratch_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sluice-it-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The `sluice` binary under test.
pub fn sluice_binary() -> &'static str {
    env!("CARGO_BIN_EXE_sluice")
}

/// A running `sluice run` process.
pub struct Proxy {
    /// Where it listens.
    pub address: SocketAddr,
    child: Child,
}

impl Proxy {
    /// Starts the proxy on `body`, a config without listeners; a listener on a
    /// free loopback port is prepended.
    pub fn start(body: &str) -> Proxy {
        let address = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = format!("[[listeners]]\naddress = \"{address}\"\n\n{body}");
        let dir = scratch_dir();
        let config_path = dir.join("sluice.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new(sluice_binary())
            .args(["run", "--config"])
            .arg(&config_path)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(address).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                let mut stderr = String::new();
                if let Some(pipe) = child.stderr.take() {
                    for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                        stderr.push_str(&line);
                        stderr.push('\n');
                    }
                }
                panic!("sluice exited with {status} before listening:\n{stderr}");
            }
            assert!(
                Instant::now() < deadline,
                "sluice did not listen on {address}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Drain stderr so a chatty proxy never blocks on a full pipe.
        if let Some(pipe) = child.stderr.take() {
            std::thread::spawn(
                move || for _ in BufReader::new(pipe).lines().map_while(Result::ok) {},
            );
        }
        Proxy { address, child }
    }

    /// `http://address` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// The process id, for reading its memory use.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory so far, in bytes (`VmHWM`).
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client that never uses a proxy from the environment.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Sends a GET with `headers` to `host` through the proxy and returns the
/// response status, headers and the upstream's JSON echo (if any).
pub async fn get(proxy: &Proxy, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = client().get(proxy.url(path)).header("host", host);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Reply::from(request.send().await.unwrap()).await
}

/// A response, read whole.
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The response headers.
    pub headers: reqwest::header::HeaderMap,
    /// The body as text.
    pub body: String,
}

impl Reply {
    async fn from(response: reqwest::Response) -> Reply {
        Reply {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    }

    /// A response header's value, or "" when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    /// The upstream's JSON echo of the request it received.
    pub fn echo(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not an echo ({e}): {}", self.body))
    }

    /// The name of the upstream that answered.
    pub fn served_by(&self) -> &str {
        self.header("x-served-by")
    }
}
