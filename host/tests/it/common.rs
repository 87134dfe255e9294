//! Shared harness: real upstream servers on loopback and the real `sluice`
//! binary, started on a config written for each test.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_demo::upstream::{self, Upstream};

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

/// The ports [`free_port`] hands out: below the kernel's ephemeral range
/// (32768 and up), so no outgoing connection can take one between the test
/// choosing it and the child process binding it.
const TEST_PORTS: std::ops::Range<u16> = 12_000..32_000;

/// A loopback port that is free and that no other test in this process has
/// been given.
///
/// Ports come from a counter rather than from binding port 0: a port the
/// kernel picks for port 0 comes from the ephemeral range, where the many
/// client connections tests open can take it before the child binds it.
/// Starting the counter at an offset from the process id keeps test binaries
/// run side by side apart.
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(usize::MAX);
    let span = usize::from(TEST_PORTS.end - TEST_PORTS.start);
    let _ = NEXT.compare_exchange(
        usize::MAX,
        (std::process::id() as usize * 397) % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = TEST_PORTS.start + offset as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {TEST_PORTS:?}");
}

/// A loopback address nothing listens on.
pub fn closed_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A fresh scratch directory for one test, removed when dropped.
///
/// A test that fails keeps its directory (configs, logs, certificates) and
/// says where it is, so the failure can be read afterwards.
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for Scratch {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept the failed test's files in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Creates a [`Scratch`] directory. Bind it for as long as the test uses
/// the directory: `scratch_dir().join(..)` alone removes it at once.
#[must_use = "the directory is removed when the returned guard is dropped"]
pub fn scratch_dir() -> Scratch {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(remove_scratch_of_ended_runs);
    let dir = std::env::temp_dir().join(format!(
        "{SCRATCH_PREFIX}{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// How every scratch directory's name starts, before the test process's id.
const SCRATCH_PREFIX: &str = "sluice-it-";

/// Removes the scratch directories of test processes that have ended.
///
/// A failed test keeps its files for reading, and a run that was killed never
/// drops its guards; an etcd data directory alone is over 100 MB. Without this
/// sweep they pile up in the temporary directory from run to run until a
/// build runs out of disk. A directory whose process still runs, such as a
/// test binary started side by side, is left alone.
fn remove_scratch_of_ended_runs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(SCRATCH_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let running = Path::new("/proc").join(pid.to_string()).exists();
        if !running {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The `sluice` binary under test.
pub fn sluice_binary() -> &'static str {
    env!("CARGO_BIN_EXE_sluice")
}

/// A running `sluice run` process, with an admin API on a free port.
pub struct Proxy {
    /// Where it listens.
    pub address: SocketAddr,
    /// Where its admin API listens.
    pub admin: SocketAddr,
    /// Its config file.
    pub config_path: PathBuf,
    /// Its state directory (last known good config).
    pub state_dir: PathBuf,
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// The directory [`Proxy::start`] made for the config and state.
    scratch: Option<Scratch>,
}

impl Proxy {
    /// Starts the proxy on `body`, a config without listeners or `[admin]`;
    /// a listener and an admin listener on free loopback ports are prepended.
    pub fn start(body: &str) -> Proxy {
        Self::start_with_env(body, &[])
    }

    /// Starts `sluice run` on an existing config file and state directory.
    pub fn spawn(
        address: SocketAddr,
        admin: SocketAddr,
        config_path: PathBuf,
        state_dir: PathBuf,
        extra: &[&str],
    ) -> Proxy {
        Self::launch(address, admin, config_path, state_dir, extra, &[])
            .unwrap_or_else(|lost| panic!("{lost}"))
    }

    /// Starts `sluice run` on an existing config file and state directory,
    /// with these environment variables set.
    pub fn spawn_with_env(
        address: SocketAddr,
        admin: SocketAddr,
        config_path: PathBuf,
        state_dir: PathBuf,
        env: &[(&str, &str)],
    ) -> Proxy {
        Self::launch(address, admin, config_path, state_dir, &[], env)
            .unwrap_or_else(|lost| panic!("{lost}"))
    }

    /// Starts the proxy on `body`, as [`Proxy::start`] does, with these
    /// environment variables set. When another process holds one of the
    /// ports chosen, the proxy is started again on new ones.
    pub fn start_with_env(body: &str, env: &[(&str, &str)]) -> Proxy {
        let dir = scratch_dir();
        let config_path = dir.join("sluice.toml");
        let mut attempts = 0;
        loop {
            let address = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
            std::fs::write(&config_path, render(address, admin, body)).unwrap();
            let launched = Self::launch(
                address,
                admin,
                config_path.clone(),
                dir.join("state"),
                &[],
                env,
            );
            match launched {
                Ok(mut proxy) => {
                    proxy.scratch = Some(dir);
                    return proxy;
                }
                Err(lost) if attempts < 3 => {
                    attempts += 1;
                    eprintln!("starting sluice again on other ports: {lost}");
                }
                Err(lost) => panic!("{lost}"),
            }
        }
    }

    /// Starts `sluice run` and waits until it accepts on `address`, and on
    /// `admin` when the config serves the admin API there. Fails the test
    /// if the process exits first; returns `Err` when another process holds
    /// one of the ports (Pingora then retries the bind, and a test must not
    /// take the other process for this one).
    fn launch(
        address: SocketAddr,
        admin: SocketAddr,
        config_path: PathBuf,
        state_dir: PathBuf,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Proxy, String> {
        // The admin API starts beside the proxy, not before it; when the
        // config asks for one at `admin`, the proxy is ready once both are.
        let serves_admin = std::fs::read_to_string(&config_path)
            .is_ok_and(|text| text.contains(&format!("\"{admin}\"")));
        // Run from the config's directory, as an operator would: relative
        // paths in it (a plugin directory, certificates) are found there.
        let mut child = Command::new(sluice_binary())
            .current_dir(config_path.parent().unwrap_or(Path::new("/")))
            .args(["run", "--config"])
            .arg(&config_path)
            .arg("--state-dir")
            .arg(&state_dir)
            .args(extra)
            .env("RUST_LOG", "warn,sluice=info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = collect_lines(child.stdout.take().unwrap());
        let stderr = collect_lines(child.stderr.take().unwrap());
        let mut proxy = Proxy {
            address,
            admin,
            config_path,
            state_dir,
            child,
            stdout,
            stderr,
            scratch: None,
        };
        let mut ports = vec![address];
        if serves_admin {
            ports.push(admin);
        }
        proxy.wait_listening(&ports, Duration::from_secs(30))?;
        if serves_admin {
            proxy.confirm_admin_is_ours(Duration::from_secs(30))?;
        }
        Ok(proxy)
    }

    /// Checks that the admin API answering on `self.admin` is this
    /// process's: its `/config` names this config file as the source (or it
    /// asks for this config's token). A port another process holds would
    /// answer otherwise, or this process would report it in use.
    fn confirm_admin_is_ours(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        let ours = self.config_path.display().to_string();
        loop {
            let answer = blocking_get(self.admin, "/config").unwrap_or_default();
            // By the time its admin API answers, this process has bound its
            // listeners or said which one another process holds.
            let log = self.stderr_text();
            if let Some(held) = [self.address, self.admin]
                .into_iter()
                .find(|address| log.contains(&format!("{address} is in use")))
            {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(format!("another process holds {held}"));
            }
            if answer.starts_with("HTTP/1.1 401") || answer.contains(&ours) {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "the admin API on {} is not this sluice's:\n{answer}\nsluice's log:\n{}",
                self.admin,
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until every one of `addresses` accepts connections, failing the
    /// test if the process exits first or `within` passes. `Err` when the
    /// process reports one of them in use by another.
    fn wait_listening(&mut self, addresses: &[SocketAddr], within: Duration) -> Result<(), String> {
        for &address in addresses {
            let (child, stderr) = (&mut self.child, &self.stderr);
            let gone = || {
                let log = stderr.lock().unwrap().join("\n");
                if let Some(held) = addresses
                    .iter()
                    .find(|address| log.contains(&format!("{address} is in use")))
                {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Some(NotListening::PortHeld(format!(
                        "another process holds {held}"
                    )));
                }
                sluice_exited(child).map(NotListening::Exited)
            };
            let log = || stderr.lock().unwrap().join("\n");
            wait_until_accepting(address, within, gone, log)?;
        }
        Ok(())
    }

    /// Stops the process and hands back the directory [`Proxy::start`] made,
    /// so that a test can start another process on the same config and state.
    pub fn stop(mut self) -> Option<Scratch> {
        self.scratch.take()
    }

    /// Waits until `address` accepts connections, failing the test if the
    /// process exits first or `within` passes.
    pub fn wait_accepting(&mut self, address: SocketAddr, within: Duration) {
        let (child, stderr) = (&mut self.child, &self.stderr);
        wait_accepting(
            address,
            within,
            || sluice_exited(child),
            || stderr.lock().unwrap().join("\n"),
        );
    }

    /// Replaces the config body the way editors do: write a temporary file,
    /// then rename it over the config.
    pub fn rewrite(&self, body: &str) {
        let temporary = self.config_path.with_extension("toml.swp");
        std::fs::write(&temporary, render(self.address, self.admin, body)).unwrap();
        std::fs::rename(&temporary, &self.config_path).unwrap();
    }

    /// Sends a signal to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits up to `timeout` for the process to exit; returns whether it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Lines written to stdout so far (the access log).
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Everything written to stderr so far (the log).
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// `GET` or `POST` on the admin API: status and parsed JSON (or text as a JSON string).
    pub async fn admin(&self, method: &str, path: &str) -> (u16, serde_json::Value) {
        let url = format!("http://{}{path}", self.admin);
        let request = match method {
            "POST" => client().post(url),
            _ => client().get(url),
        };
        let response = request.send().await.unwrap_or_else(|e| {
            panic!(
                "admin API {method} {path}: {e}\nsluice's log:\n{}",
                self.stderr_text()
            )
        });
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, value)
    }

    /// The admin API's `/metrics` text.
    pub async fn metrics(&self) -> String {
        match self.admin("GET", "/metrics").await.1 {
            serde_json::Value::String(text) => text,
            other => other.to_string(),
        }
    }

    /// Waits until the admin API reports config `version` differing from
    /// `old`, and returns the new version.
    pub async fn wait_version_change(&self, old: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, config) = self.admin("GET", "/config").await;
            let version = config["version"].as_str().unwrap_or_default().to_string();
            if version != old {
                return version;
            }
            assert!(
                Instant::now() < deadline,
                "config version stayed {old}: {config}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
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

/// A full config: a listener, the admin API, then `body`.
pub fn render(address: SocketAddr, admin: SocketAddr, body: &str) -> String {
    format!("[[listeners]]\naddress = \"{address}\"\n\n[admin]\naddress = \"{admin}\"\n\n{body}")
}

/// What a server that should listen did instead, as its check between
/// tries sees it.
pub enum NotListening {
    /// It exited: the test fails, saying how.
    Exited(String),
    /// Another process holds one of its ports: the caller may start it
    /// again elsewhere.
    PortHeld(String),
}

/// Waits up to `within` until `address` accepts connections. Before each
/// try, `gone` says whether the server that should listen there has given
/// up; that is looked for first, since a port another process holds
/// accepts connections too. An exit fails the test at once, with `log`
/// (the server's output); a held port is `Err`.
pub fn wait_until_accepting(
    address: SocketAddr,
    within: Duration,
    mut gone: impl FnMut() -> Option<NotListening>,
    log: impl Fn() -> String,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        match gone() {
            Some(NotListening::Exited(how)) => {
                panic!("{how} before listening on {address}:\n{}", log())
            }
            Some(NotListening::PortHeld(why)) => return Err(why),
            None => {}
        }
        if TcpStream::connect(address).is_ok() {
            return Ok(());
        }
        assert!(
            Instant::now() < deadline,
            "nothing listens on {address} after {within:?}:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`wait_until_accepting`] for a server whose ports are never held by
/// another: `exited` says whether, and how, it has gone.
pub fn wait_accepting(
    address: SocketAddr,
    within: Duration,
    mut exited: impl FnMut() -> Option<String>,
    log: impl Fn() -> String,
) {
    let gone = || exited().map(NotListening::Exited);
    if let Err(why) = wait_until_accepting(address, within, gone, log) {
        unreachable!("no port is reported held here: {why}");
    }
}

/// `Some("sluice exited with STATUS")` once `child` has exited. Waits a
/// moment first, so its last log lines are collected.
pub fn sluice_exited(child: &mut Child) -> Option<String> {
    let status = child.try_wait().ok().flatten()?;
    std::thread::sleep(Duration::from_millis(100));
    Some(format!("sluice exited with {status}"))
}

/// Reads a pipe's lines into a shared list, on a thread.
fn collect_lines(pipe: impl Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// `GET path` on `address` over a fresh HTTP/1.1 connection, read to its
/// close: the whole response as text.
pub fn blocking_get(address: SocketAddr, path: &str) -> std::io::Result<String> {
    use std::io::Write;
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
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

/// Sends `request` and reads the whole response.
pub async fn send(request: reqwest::RequestBuilder) -> Reply {
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
