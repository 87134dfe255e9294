//! The fixed-rate load generator of the latency runs: an open loop, with
//! coordinated omission corrected, built into the runner.
//!
//! Requests fall due on a fixed schedule, `start + i / rate`. Each
//! connection is a thread that takes the next due request once its last one
//! has been answered, waits for its time, sends it and reads the answer.
//! - A request taken late, because every connection was still waiting for
//!   an answer, is timed from when it fell due. A stall of the proxy is so
//!   charged to every request queued behind it, as wrk2 and oha's
//!   `--latency-correction` do.
//! - A request taken early is timed from when it was sent: the generator's
//!   own timer slack is not the proxy's.
//!
//! Blocking sockets, one thread each, keep the schedule as precise as the
//! kernel's timers (each thread's timer slack is set to 1 ns) instead of an
//! async runtime's millisecond timer wheel; at 10,000 req/s requests are
//! 100 µs apart. Every connection is opened, and over TLS handshaken,
//! before the first request falls due, so the latencies are those of
//! requests on open connections, as the closed-loop throughput runs'.
//!
//! It is built into the runner so that a fresh machine needs no load
//! generator from outside beyond Debian's wrk.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::http1;

/// How long an answer may take before its request counts as timed out.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// One fixed-rate run.
#[derive(Clone)]
pub struct FixedRate {
    /// Where requests go.
    pub addr: SocketAddr,
    /// The path every request asks for.
    pub path: String,
    /// The TLS client settings, for HTTPS; `None` for plain HTTP.
    pub tls: Option<Arc<ClientConfig>>,
    /// Requests per second.
    pub rate: u32,
    /// Keep-alive connections the requests are spread over.
    pub connections: u32,
    /// How long requests fall due.
    pub duration: Duration,
}

/// What one fixed-rate run measured. Latencies are in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyReport {
    /// Median latency.
    pub p50_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// 99.9th percentile latency.
    pub p999_ms: f64,
    /// Responses per second over the run.
    pub requests_per_sec: f64,
    /// Responses by status code.
    pub status_counts: Vec<(u16, u64)>,
    /// Requests that failed without a response, by error.
    pub errors: Vec<(String, u64)>,
}

impl LatencyReport {
    /// Responses with status 200.
    pub fn ok_responses(&self) -> u64 {
        self.status_counts
            .iter()
            .filter(|(s, _)| *s == 200)
            .map(|(_, n)| n)
            .sum()
    }

    /// Every response and error counted.
    pub fn total(&self) -> u64 {
        self.status_counts.iter().map(|(_, n)| n).sum::<u64>()
            + self.errors.iter().map(|(_, n)| n).sum::<u64>()
    }

    /// One line on what was not a 200, or `None` when everything was.
    pub fn problems(&self) -> Option<String> {
        let mut parts = Vec::new();
        for (status, n) in &self.status_counts {
            if *status != 200 {
                parts.push(format!("{n}× status {status}"));
            }
        }
        for (error, n) in &self.errors {
            parts.push(format!("{n}× {error}"));
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

/// TLS client settings that trust exactly the certificate in `cert_pem`
/// (the run's self-signed one, whose names include 127.0.0.1).
pub fn trusting(cert_pem: &Path) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cert_pem)
        .with_context(|| format!("reading {}", cert_pem.display()))?
    {
        roots
            .add(cert.with_context(|| format!("parsing {}", cert_pem.display()))?)
            .context("the certificate is not a usable trust anchor")?;
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Runs `spec` to the end and reports what it measured.
pub fn run(spec: &FixedRate) -> Result<LatencyReport> {
    if spec.rate == 0 || spec.connections == 0 {
        return Err(anyhow!("a fixed-rate run needs a rate and connections"));
    }
    let schedule = Arc::new(Schedule {
        start: OnceLock::new(),
        interval_nanos: 1e9 / f64::from(spec.rate),
        duration: spec.duration,
        next: AtomicU64::new(0),
        connected: Barrier::new(spec.connections as usize),
    });
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: sluice-loadbench\r\n\r\n",
        spec.path, spec.addr
    )
    .into_bytes();
    let mut threads = Vec::new();
    for i in 0..spec.connections {
        let mut connection = Connection {
            addr: spec.addr,
            tls: spec.tls.clone(),
            request: request.clone(),
            stream: None,
            buf: Vec::with_capacity(4096),
        };
        let schedule = schedule.clone();
        let thread = thread::Builder::new()
            .name(format!("fixed-rate-{i}"))
            .stack_size(256 * 1024)
            .spawn(move || connection.drive(&schedule))
            .context("starting a load thread")?;
        threads.push(thread);
    }
    let mut tally = Tally::default();
    for thread in threads {
        tally.merge(
            thread
                .join()
                .map_err(|_| anyhow!("a load thread panicked"))?,
        );
    }
    Ok(tally.report(spec.duration))
}

/// When each request falls due, shared by the connections.
struct Schedule {
    /// Set by the first connection past `connected`.
    start: OnceLock<Instant>,
    interval_nanos: f64,
    duration: Duration,
    /// The index of the next request to be taken.
    next: AtomicU64,
    /// Every connection waits here until all are open.
    connected: Barrier,
}

impl Schedule {
    /// Marks this connection open; returns once all are.
    fn wait_until_all_connected(&self) {
        self.connected.wait();
        self.start
            .get_or_init(|| Instant::now() + Duration::from_millis(1));
    }

    /// When the next request not yet taken falls due, or `None` once the
    /// run's time is up.
    fn take(&self) -> Option<Instant> {
        let start = *self.start.get().expect("taken after the start");
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let offset = Duration::from_nanos((i as f64 * self.interval_nanos) as u64);
        (offset < self.duration).then(|| start + offset)
    }
}

/// What one connection, or all of them, saw.
#[derive(Default)]
struct Tally {
    latencies_nanos: Vec<u64>,
    statuses: BTreeMap<u16, u64>,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies_nanos.extend(other.latencies_nanos);
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        for (error, n) in other.errors {
            *self.errors.entry(error).or_default() += n;
        }
    }

    fn error(&mut self, error: &io::Error) {
        *self.errors.entry(describe(error)).or_default() += 1;
    }

    fn report(mut self, duration: Duration) -> LatencyReport {
        self.latencies_nanos.sort_unstable();
        let responses: u64 = self.statuses.values().sum();
        let ms = |q: f64| percentile(&self.latencies_nanos, q) / 1e6;
        LatencyReport {
            p50_ms: ms(0.50),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            requests_per_sec: responses as f64 / duration.as_secs_f64(),
            status_counts: self.statuses.into_iter().collect(),
            errors: self.errors.into_iter().collect(),
        }
    }
}

/// The `q` quantile of ascending `sorted` by nearest rank; NaN when empty.
fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

/// A short name for why a request got no response.
fn describe(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        io::ErrorKind::UnexpectedEof => "connection closed before the response ended".into(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            format!("no response within {} s", ANSWER_TIMEOUT.as_secs())
        }
        _ => error.to_string(),
    }
}

/// A client connection, over TLS or not.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    /// Connects to `addr`, and completes a TLS handshake when `tls` is set.
    pub fn open(addr: SocketAddr, tls: Option<&Arc<ClientConfig>>) -> io::Result<Stream> {
        let tcp = TcpStream::connect_timeout(&addr, ANSWER_TIMEOUT)?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        Ok(match tls {
            None => Stream::Plain(tcp),
            Some(config) => {
                let name = ServerName::IpAddress(addr.ip().into());
                let conn = ClientConnection::new(config.clone(), name)
                    .map_err(|e| io::Error::other(format!("TLS: {e}")))?;
                let mut stream = StreamOwned::new(conn, tcp);
                while stream.conn.is_handshaking() {
                    stream.conn.complete_io(&mut stream.sock)?;
                }
                Stream::Tls(Box::new(stream))
            }
        })
    }

    /// The TCP socket under it.
    pub fn socket(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// One keep-alive connection and the requests it carries.
struct Connection {
    addr: SocketAddr,
    tls: Option<Arc<ClientConfig>>,
    request: Vec<u8>,
    stream: Option<Stream>,
    buf: Vec<u8>,
}

impl Connection {
    /// Opens the connection, waits for the others, then serves the schedule
    /// until its time is up.
    fn drive(&mut self, schedule: &Schedule) -> Tally {
        let mut tally = Tally::default();
        // SAFETY: PR_SET_TIMERSLACK takes a plain integer and changes only
        // the calling thread's timer slack.
        unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
        }
        let opened = self.open();
        schedule.wait_until_all_connected();
        if let Err(e) = opened {
            tally.error(&e);
        }
        while let Some(due) = schedule.take() {
            let now = Instant::now();
            let timed_from = if now < due {
                thread::sleep(due - now);
                Instant::now()
            } else {
                due
            };
            match self.exchange() {
                Ok((status, keep_alive)) => {
                    tally
                        .latencies_nanos
                        .push(timed_from.elapsed().as_nanos() as u64);
                    *tally.statuses.entry(status).or_default() += 1;
                    if !keep_alive {
                        self.stream = None;
                    }
                }
                Err(e) => {
                    tally.error(&e);
                    self.stream = None;
                }
            }
        }
        tally
    }

    fn open(&mut self) -> io::Result<()> {
        self.stream = Some(Stream::open(self.addr, self.tls.as_ref())?);
        self.buf.clear();
        Ok(())
    }

    /// Sends one request and reads its response: the status, and whether
    /// the connection stays open.
    fn exchange(&mut self) -> io::Result<(u16, bool)> {
        if self.stream.is_none() {
            self.open()?;
        }
        let stream = self.stream.as_mut().expect("opened above");
        stream.write_all(&self.request)?;
        stream.flush()?;
        http1::read_response(stream, &mut self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::atomic::AtomicUsize;

    /// A loopback HTTP server answering every request on every connection
    /// with 200 and `body`; the request numbered `stall_at` (counted over
    /// all connections) is answered only after `stall`.
    fn serve(body: &'static str, stall_at: usize, stall: Duration) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicUsize::new(0));
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let served = served.clone();
                thread::spawn(move || {
                    let mut buf = Vec::new();
                    loop {
                        while http1::find(&buf, b"\r\n\r\n").is_none() {
                            if http1::read_some(&mut conn, &mut buf).unwrap_or(0) == 0 {
                                return;
                            }
                        }
                        buf.clear();
                        if served.fetch_add(1, Ordering::SeqCst) + 1 == stall_at {
                            thread::sleep(stall);
                        }
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if conn.write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn spec(addr: SocketAddr, rate: u32, connections: u32, millis: u64) -> FixedRate {
        FixedRate {
            addr,
            path: "/".into(),
            tls: None,
            rate,
            connections,
            duration: Duration::from_millis(millis),
        }
    }

    #[test]
    fn sends_at_the_rate_asked() {
        let addr = serve("hello", 0, Duration::ZERO);
        let report = run(&spec(addr, 500, 4, 1000)).unwrap();
        assert_eq!(report.status_counts, vec![(200, 500)]);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert!((report.requests_per_sec - 500.0).abs() < 1.0);
        assert!(report.p50_ms <= report.p99_ms && report.p99_ms <= report.p999_ms);
    }

    #[test]
    fn a_stall_is_charged_to_the_requests_queued_behind_it() {
        // One connection at 200 req/s; request 20 is answered after
        // 300 ms, during which about 60 more fall due. Timed from when they
        // fell due, they all wait: well over 1% of the 200 requests take
        // over 100 ms. Timed from when they were sent, one request would.
        let addr = serve("hello", 20, Duration::from_millis(300));
        let report = run(&spec(addr, 200, 1, 1000)).unwrap();
        assert_eq!(report.ok_responses(), 200);
        assert!(report.p99_ms > 100.0, "p99 {} ms", report.p99_ms);
        assert!(report.p50_ms < 100.0, "p50 {} ms", report.p50_ms);
    }

    #[test]
    fn refused_connections_are_counted_as_errors() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let report = run(&spec(addr, 100, 2, 200)).unwrap();
        assert_eq!(report.ok_responses(), 0);
        assert!(report.p99_ms.is_nan());
        let problems = report.problems().unwrap();
        assert!(problems.contains("connection refused"), "{problems}");
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let sorted: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&sorted, 0.5), 500.0);
        assert_eq!(percentile(&sorted, 0.99), 990.0);
        assert_eq!(percentile(&sorted, 0.999), 999.0);
        assert_eq!(percentile(&[7], 0.999), 7.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn problems_name_what_was_not_a_200() {
        let report = LatencyReport {
            p50_ms: 1.0,
            p99_ms: 2.0,
            p999_ms: 3.0,
            requests_per_sec: 100.0,
            status_counts: vec![(200, 90), (502, 10)],
            errors: vec![("connection reset".into(), 3)],
        };
        assert_eq!(report.total(), 103);
        assert_eq!(
            report.problems().unwrap(),
            "10× status 502, 3× connection reset"
        );
    }
}
