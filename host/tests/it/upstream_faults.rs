//! Upstreams that crash or break HTTP, as separate processes: the
//! `fault-upstream` binary built from `host/tests/fault-upstream`, killed
//! with SIGKILL or asked by path to misbehave. Responses are read with a
//! strict HTTP/1.1 client, so a response cut short is told apart from a
//! complete one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{blocking_get, free_port, Proxy};

/// Builds the `fault-upstream` binary once per test run and returns its path.
fn fault_upstream_binary() -> PathBuf {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if !*built {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(root)
            .args(["build", "-p", "sluice-test-fault-upstream", "--target-dir"])
            .arg(root.join("target"))
            .status()
            .unwrap();
        assert!(status.success(), "building fault-upstream failed");
        *built = true;
    }
    root.join("target/debug/fault-upstream")
}

/// A `fault-upstream` process.
struct FaultProcess {
    name: &'static str,
    address: SocketAddr,
    child: Option<Child>,
}

impl FaultProcess {
    /// Starts one on a port the kernel picks.
    fn start(name: &'static str) -> Self {
        Self::start_on(name, "127.0.0.1:0")
    }

    /// Starts one on `listen` and waits until it accepts.
    fn start_on(name: &'static str, listen: &str) -> Self {
        let (child, address) = Self::spawn(name, listen)
            .unwrap_or_else(|line| panic!("fault-upstream {name} did not start: {line:?}"));
        Self {
            name,
            address,
            child: Some(child),
        }
    }

    /// Spawns the process and reads the address it reports; `Err` with what
    /// it said instead when it could not listen.
    fn spawn(name: &str, listen: &str) -> Result<(Child, SocketAddr), String> {
        let mut child = Command::new(fault_upstream_binary())
            .args(["--listen", listen, "--name", name])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        match line.trim().strip_prefix("listening on ") {
            Some(address) => Ok((child, address.parse().unwrap())),
            None => {
                let _ = child.wait();
                Err(line)
            }
        }
    }

    /// Kills it with SIGKILL, as a crash would.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Starts it again on the same address, retrying while the killed
    /// process's sockets still hold the port.
    fn revive(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Self::spawn(self.name, &self.address.to_string()) {
                Ok((child, _)) => {
                    self.child = Some(child);
                    return;
                }
                Err(said) => assert!(
                    Instant::now() < deadline,
                    "cannot listen on {} again: {said:?}",
                    self.address
                ),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for FaultProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How a response arrived, read byte for byte.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// A whole response, framed by `Content-Length` or chunked encoding.
    Complete { status: u16, body: Vec<u8> },
    /// The connection closed before a whole response: `status` is that of
    /// the head, if one arrived, and `body` the body bytes that came.
    Aborted { status: Option<u16>, body: Vec<u8> },
}

impl Outcome {
    fn status(&self) -> Option<u16> {
        match self {
            Outcome::Complete { status, .. } => Some(*status),
            Outcome::Aborted { status, .. } => *status,
        }
    }
}

/// Sends `GET path` on `stream` and reads the response, with a strict
/// HTTP/1.1 framing: a body that ends before its length or its last chunk
/// is an aborted response. A response without a length is taken as
/// aborted too: the client could not tell whether it was whole.
fn exchange(stream: &mut BufReader<TcpStream>, path: &str) -> Outcome {
    let request = format!("GET {path} HTTP/1.1\r\nHost: faults.test\r\n\r\n");
    if stream.get_mut().write_all(request.as_bytes()).is_err() {
        return Outcome::Aborted {
            status: None,
            body: Vec::new(),
        };
    }
    read_response(stream)
}

fn read_response(stream: &mut BufReader<TcpStream>) -> Outcome {
    let mut line = String::new();
    // Interim 1xx heads come before the final one; 101 is final.
    let status = loop {
        line.clear();
        if !matches!(stream.read_line(&mut line), Ok(n) if n > 0 && line.ends_with("\r\n")) {
            return Outcome::Aborted {
                status: None,
                body: Vec::new(),
            };
        }
        let Some(status) = line.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok()) else {
            return Outcome::Aborted {
                status: None,
                body: Vec::new(),
            };
        };
        if !(100..200).contains(&status) || status == 101 {
            break status;
        }
        loop {
            line.clear();
            if !matches!(stream.read_line(&mut line), Ok(n) if n > 0) || line == "\r\n" {
                break;
            }
        }
    };
    let aborted = |body: Vec<u8>| Outcome::Aborted {
        status: Some(status),
        body,
    };
    let (mut length, mut chunked) = (None, false);
    loop {
        line.clear();
        if !matches!(stream.read_line(&mut line), Ok(n) if n > 0 && line.ends_with("\r\n")) {
            return aborted(Vec::new());
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.trim().parse::<usize>().unwrap());
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.trim().eq_ignore_ascii_case("chunked");
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            if !matches!(stream.read_line(&mut line), Ok(n) if n > 0 && line.ends_with("\r\n")) {
                return aborted(body);
            }
            let Ok(size) = usize::from_str_radix(line.trim_end(), 16) else {
                return aborted(body);
            };
            let mut chunk = Vec::new();
            let _ = stream
                .by_ref()
                .take(size as u64 + 2)
                .read_to_end(&mut chunk);
            if chunk.len() < size + 2 || !chunk.ends_with(b"\r\n") {
                chunk.truncate(size);
                body.extend_from_slice(&chunk);
                return aborted(body);
            }
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        let Some(length) = length else {
            let _ = stream.read_to_end(&mut body);
            return aborted(body);
        };
        let _ = stream.by_ref().take(length as u64).read_to_end(&mut body);
        if body.len() < length {
            return aborted(body);
        }
    }
    Outcome::Complete { status, body }
}

/// A keep-alive connection to `address` with a read timeout.
fn connect(address: SocketAddr) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    BufReader::new(stream)
}

/// A placement `p` over `endpoints`, reached by every request.
fn config(endpoints: &[SocketAddr], extra: &str) -> String {
    let endpoints: Vec<String> = endpoints
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    format!(
        "[server]\nthreads = 2\n[placements.p]\nendpoints = [{}]\n{extra}\n[[routes]]\nplacement = \"p\"\n",
        endpoints.join(", ")
    )
}

/// What a client must see of a fault.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// The upstream failed before its head could be passed on: a whole 502.
    BadGateway,
    /// A `200` head had gone out: the response is cut short and the
    /// connection closed.
    CutShort,
}

/// Each fault gets its outcome, on a fresh pooled connection and on one the
/// proxy reuses, and the proxy keeps serving after it.
#[test]
fn each_upstream_fault_gets_a_502_or_an_aborted_response() {
    let upstream = FaultProcess::start("faulty");
    let proxy = Proxy::start(&config(&[upstream.address], ""));
    let cases = [
        ("close-before-head", Expect::BadGateway),
        ("garbage-head", Expect::BadGateway),
        ("bad-content-length", Expect::BadGateway),
        ("two-content-lengths", Expect::BadGateway),
        ("nul-in-header", Expect::BadGateway),
        ("oversized-head", Expect::BadGateway),
        ("http09", Expect::BadGateway),
        // An interim answer is not a response head: the 502 can still go out.
        ("continue-then-close", Expect::BadGateway),
        ("close-mid-body", Expect::CutShort),
        ("chunked-close-mid-body", Expect::CutShort),
        ("bad-chunk", Expect::CutShort),
    ];
    for (fault, expected) in cases {
        // A request first, so the fault also meets a pooled connection the
        // proxy reuses, where a broken answer looks like a stale connection.
        let mut client = connect(proxy.address);
        let warm_up = exchange(&mut client, "/");
        assert_eq!(warm_up.status(), Some(200), "before {fault}: {warm_up:?}");
        let outcome = exchange(&mut client, &format!("/fault/{fault}"));
        match (expected, &outcome) {
            (Expect::BadGateway, Outcome::Complete { status: 502, body }) => {
                let text = String::from_utf8_lossy(body);
                assert!(
                    text.starts_with("502 Bad Gateway: the upstream of placement p"),
                    "{fault}: {text}"
                );
            }
            (
                Expect::CutShort,
                Outcome::Aborted {
                    status: Some(200),
                    body,
                },
            ) => {
                // What came is what the upstream sent, and nothing else.
                assert!(
                    b"truncated".starts_with(body),
                    "{fault}: the body is {:?}",
                    String::from_utf8_lossy(body)
                );
                // The connection is closed: a read ends at once, with
                // nothing more (a read timeout would mean it was left open).
                let mut rest = [0u8; 64];
                match client.read(&mut rest) {
                    Ok(0) => {}
                    Ok(n) => panic!(
                        "{fault}: bytes after the abort: {:?}",
                        String::from_utf8_lossy(&rest[..n])
                    ),
                    Err(e) => panic!("{fault}: the connection was left open ({e})"),
                }
            }
            _ => panic!(
                "{fault}: expected {expected:?}, got {outcome:?}\nsluice's log:\n{}",
                proxy.stderr_text()
            ),
        }
        // The proxy keeps serving.
        let after = exchange(&mut connect(proxy.address), "/");
        assert!(
            matches!(&after, Outcome::Complete { status: 200, body } if body.starts_with(b"ok faulty")),
            "after {fault}: {after:?}"
        );
    }
    assert_no_panic(&proxy);
    let metrics = metrics_text(&proxy);
    assert!(
        metrics.contains("sluice_responses_aborted_total{placement=\"p\"} 3"),
        "{metrics}"
    );
    for kind in ["reset", "invalid_response"] {
        assert!(
            metrics
                .lines()
                .any(|line| line.starts_with("sluice_upstream_errors_total{")
                    && line.contains(&format!("kind=\"{kind}\""))),
            "no {kind} failure counted:\n{metrics}"
        );
    }
}

/// The admin API's `/metrics`, read with a blocking client.
fn metrics_text(proxy: &Proxy) -> String {
    blocking_get(proxy.admin, "/metrics").unwrap()
}

/// Response heads are bounded by the placement's `max_response_head`: 64 KiB
/// by default, and what the config says otherwise.
#[test]
fn a_response_head_past_the_placement_limit_is_a_502() {
    let upstream = FaultProcess::start("heads");
    let default = Proxy::start(&config(&[upstream.address], ""));
    let mut client = connect(default.address);
    assert_eq!(
        exchange(&mut client, "/large-head/60000").status(),
        Some(200)
    );
    let refused = exchange(&mut client, "/large-head/70000");
    assert!(
        matches!(&refused, Outcome::Complete { status: 502, body } if body.starts_with(b"502 Bad Gateway: the upstream of placement p sent an invalid response")),
        "{refused:?}"
    );
    // An error answer closes its connection; the proxy serves the next one.
    assert_eq!(
        exchange(&mut connect(default.address), "/").status(),
        Some(200)
    );

    let strict = Proxy::start(&config(
        &[upstream.address],
        "limits = { max_response_head = \"1KiB\" }\n",
    ));
    let mut client = connect(strict.address);
    assert_eq!(exchange(&mut client, "/large-head/500").status(), Some(200));
    assert_eq!(
        exchange(&mut client, "/large-head/2000").status(),
        Some(502)
    );
}

/// Over HTTP/2, a response that breaks after its head resets its stream:
/// the client sees an error, not a whole body, and the connection's other
/// streams carry on.
#[tokio::test(flavor = "multi_thread")]
async fn over_http2_a_broken_response_resets_only_its_stream() {
    let upstream = FaultProcess::start("h2");
    let proxy = Proxy::start(&config(&[upstream.address], ""));
    let client = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // The reset may overtake the head on its way to the client: either
    // way the client sees the response fail, never a whole body.
    match client.get(proxy.url("/fault/close-mid-body")).send().await {
        Ok(response) => {
            assert_eq!(response.status(), 200);
            assert_eq!(response.version(), reqwest::Version::HTTP_2);
            let body = response.bytes().await;
            assert!(body.is_err(), "a whole body arrived: {body:?}");
        }
        Err(e) => assert!(format!("{e:?}").contains("Reset"), "{e:?}"),
    }
    let next = client.get(proxy.url("/")).send().await.unwrap();
    assert_eq!(next.status(), 200);
    assert_eq!(next.text().await.unwrap(), "ok h2\n");
}

/// A panic in a phase, set off by the debug-only trigger, fails only its
/// request: a 500 when nothing was sent, one log line with the request id,
/// a count per phase; the proxy goes on serving.
#[test]
fn a_panic_in_a_phase_is_caught_logged_counted_and_answered_500() {
    let upstream = FaultProcess::start("steady");
    let proxy = Proxy::start_with_env(
        &config(&[upstream.address], ""),
        &[("SLUICE_TEST_PANIC", "1")],
    );
    let send = |phase: &str, request_id: &str| {
        let mut client = connect(proxy.address);
        let request = format!(
            "GET / HTTP/1.1\r\nHost: faults.test\r\nX-Request-Id: {request_id}\r\nX-Sluice-Test-Panic: {phase}\r\n\r\n"
        );
        client.get_mut().write_all(request.as_bytes()).unwrap();
        read_response(&mut client)
    };
    for phase in [
        "request_filter",
        "upstream_peer",
        "upstream_request_filter",
        "response_filter",
    ] {
        let request_id = format!("panic-in-{phase}");
        let outcome = send(phase, &request_id);
        assert!(
            matches!(&outcome, Outcome::Complete { status: 500, .. }),
            "{phase}: {outcome:?}"
        );
        let after = exchange(&mut connect(proxy.address), "/");
        assert_eq!(after.status(), Some(200), "after a panic in {phase}");
    }
    // A panic once the response is out changes nothing for the client.
    let logged = send("logging", "panic-in-logging");
    assert!(
        matches!(&logged, Outcome::Complete { status: 200, body } if body.starts_with(b"ok steady")),
        "{logged:?}"
    );

    let deadline = Instant::now() + Duration::from_secs(5);
    let phases = [
        "request_filter",
        "upstream_peer",
        "upstream_request_filter",
        "response_filter",
        "logging",
    ];
    loop {
        let log = proxy.stderr_text();
        let all_logged = phases.iter().all(|phase| {
            log.lines()
                .filter(|line| line.contains(&format!("test panic requested in {phase}")))
                .filter(|line| line.contains(&format!("panic-in-{phase}")))
                .count()
                == 1
        });
        if all_logged {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not one log line per panic:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_no_panic(&proxy);
    let metrics = metrics_text(&proxy);
    for phase in phases {
        assert!(
            metrics.contains(&format!("sluice_panics_total{{phase=\"{phase}\"}} 1")),
            "{phase}:\n{metrics}"
        );
    }
}

/// No panic escaped a guard: the default hook's report names its place as
/// `panicked at`.
fn assert_no_panic(proxy: &Proxy) {
    let log = proxy.stderr_text();
    assert!(!log.contains("panicked at"), "sluice panicked:\n{log}");
}

/// An upstream killed with SIGKILL and revived twice, under closed-loop
/// load, while the config is rewritten every second: with a second
/// endpoint and retries, every GET is answered 200 with a whole body.
#[test]
fn an_upstream_killed_under_load_fails_no_idempotent_request() {
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut victim = FaultProcess::start_on("victim", &listen.to_string());
    let survivor = FaultProcess::start("survivor");
    let settings = "retry = { connect_attempts = 2, attempts = 1 }\npassive = { failures = 3, cooldown = \"500ms\" }\n";
    let endpoints = [victim.address, survivor.address];
    let body = |generation: usize| {
        format!(
            "{}response_headers = {{ set = {{ \"X-Generation\" = \"{generation}\" }} }}\n",
            config(&endpoints, settings)
        )
    };
    let proxy = Proxy::start(&body(0));

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (stop, answered, failures, address) = (
                stop.clone(),
                answered.clone(),
                failures.clone(),
                proxy.address,
            );
            std::thread::spawn(move || {
                let mut client = connect(address);
                while !stop.load(Ordering::Relaxed) {
                    // The upstream takes a moment to answer, as real ones
                    // do, so a crash finds requests in flight.
                    match exchange(&mut client, "/delay/5") {
                        Outcome::Complete { status: 200, body } if body.starts_with(b"ok ") => {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            failures.lock().unwrap().push(format!("{other:?}"));
                            client = connect(address);
                        }
                    }
                }
            })
        })
        .collect();

    let started = Instant::now();
    let at = |seconds: f64| {
        let due = started + Duration::from_secs_f64(seconds);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    };
    let mut generation = 0;
    let mut rewrite_until = |seconds: f64| {
        while started.elapsed() < Duration::from_secs_f64(seconds) {
            let next = started.elapsed().as_secs_f64().floor() + 1.0;
            at(next.min(seconds));
            generation += 1;
            proxy.rewrite(&body(generation));
        }
    };
    rewrite_until(1.5);
    victim.kill();
    rewrite_until(3.0);
    victim.revive();
    rewrite_until(4.5);
    victim.kill();
    rewrite_until(6.0);
    victim.revive();
    rewrite_until(8.0);
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }

    let failures = failures.lock().unwrap();
    let answered = answered.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} of {} requests failed, first ones: {:?}\nsluice's log:\n{}",
        failures.len(),
        failures.len() + answered,
        &failures[..failures.len().min(5)],
        proxy.stderr_text()
    );
    assert!(answered > 1_000, "only {answered} requests were answered");
    assert_no_panic(&proxy);
}
