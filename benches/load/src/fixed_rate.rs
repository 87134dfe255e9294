//! The fixed-rate load generator of the latency runs: an open loop, with
//! coordinated omission corrected, built into the runner.
//!
//! Requests fall due on a fixed schedule, `start + i / rate`, and go out
//! over keep-alive connections that each carry one request at a time.
//! - A request that falls due while a connection is free is sent at once,
//!   and timed from when it was sent: the generator's own lateness is not
//!   the proxy's.
//! - A request that falls due while every connection still waits for an
//!   answer queues, and is timed from when it fell due. A stall of the
//!   proxy is so charged to every request queued behind it, as wrk2 and
//!   oha's `--latency-correction` do.
//!
//! One thread drives every connection through epoll, as wrk2 does, and
//! waits for the next request's time with a nanosecond timeout (its timer
//! slack set to 1 ns). With a thread per connection, each put to sleep and
//! woken for every request, the generator fell behind its own schedule at
//! 16,500 req/s and above on the core it shares with the origin: nginx's
//! p99 then read 5 ms at a third of its maximum rate. Every
//! connection is opened, and over TLS handshaken, before the first request
//! falls due, so the latencies are those of requests on open connections,
//! as the closed-loop throughput runs'.
//!
//! It is built into the runner so that a fresh machine needs no load
//! generator from outside beyond Debian's wrk.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::http1::{self, Progress};

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
    let spec = spec.clone();
    thread::Builder::new()
        .name("fixed-rate".into())
        .spawn(move || -> Result<LatencyReport> {
            // SAFETY: PR_SET_TIMERSLACK takes a plain integer and changes
            // only the calling thread's timer slack.
            unsafe {
                libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
            }
            let mut generator = Generator::open(&spec)?;
            generator.drive(&spec)?;
            Ok(generator.tally.report(spec.duration))
        })
        .context("starting the load thread")?
        .join()
        .map_err(|_| anyhow!("the load thread panicked"))?
}

/// Nanoseconds on the monotonic clock, which latencies and the schedule
/// are read from.
fn now_nanos() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// When each request falls due.
struct Schedule {
    start: u64,
    interval_nanos: f64,
    duration_nanos: u64,
}

impl Schedule {
    /// When request `i` falls due, or `None` if it falls after the run.
    fn due(&self, i: u64) -> Option<u64> {
        let offset = (i as f64 * self.interval_nanos) as u64;
        (offset < self.duration_nanos).then(|| self.start + offset)
    }
}

/// An epoll instance over the connections, each registered under its index.
struct Poller {
    epoll: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Poller {
    fn new(capacity: usize) -> io::Result<Poller> {
        // SAFETY: epoll_create1 takes flags and returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Poller {
            // SAFETY: `fd` was just created and nothing else owns it.
            epoll: unsafe { OwnedFd::from_raw_fd(fd) },
            events: vec![libc::epoll_event { events: 0, u64: 0 }; capacity.max(1)],
        })
    }

    /// Watches `socket` for reading, level-triggered.
    fn register(&self, socket: &TcpStream, token: usize) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            u64: token as u64,
        };
        // SAFETY: both descriptors are open and `event` outlives the call.
        let done = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                socket.as_raw_fd(),
                &mut event,
            )
        };
        if done < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits at most `timeout_nanos` for readable connections; how many
    /// there are, each named by [`Poller::ready`].
    fn wait(&mut self, timeout_nanos: u64) -> io::Result<usize> {
        let timeout = libc::timespec {
            tv_sec: (timeout_nanos / 1_000_000_000) as libc::time_t,
            tv_nsec: (timeout_nanos % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: the events buffer holds `len` entries; the timeout and a
        // null signal mask are valid for the call.
        let mut ready = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait2,
                self.epoll.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                &timeout as *const libc::timespec,
                std::ptr::null::<libc::sigset_t>(),
                0usize,
            )
        };
        if ready < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
            // Kernels before 5.11 wait in whole milliseconds, rounded up.
            let millis = timeout_nanos.div_ceil(1_000_000).min(i32::MAX as u64) as libc::c_int;
            // SAFETY: as above.
            ready = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    self.events.as_mut_ptr(),
                    self.events.len() as libc::c_int,
                    millis,
                )
            } as libc::c_long;
        }
        if ready < 0 {
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
            return Ok(0);
        }
        Ok(ready as usize)
    }

    /// The token of the `i`th connection the last wait found readable.
    fn ready(&self, i: usize) -> usize {
        let token = self.events[i].u64;
        token as usize
    }
}

/// One keep-alive connection.
struct Client {
    /// `None` while closed: opened again for its next request.
    stream: Option<Stream>,
    buf: Vec<u8>,
    /// When its request in flight is timed from; `None` while it is free.
    in_flight: Option<u64>,
}

/// The connections, their poller, and what they measured.
struct Generator {
    addr: SocketAddr,
    tls: Option<Arc<ClientConfig>>,
    request: Vec<u8>,
    poller: Poller,
    clients: Vec<Client>,
    /// Connections with no request in flight.
    free: Vec<usize>,
    /// When each request that fell due while no connection was free fell
    /// due, oldest first.
    queued: VecDeque<u64>,
    tally: Tally,
}

impl Generator {
    /// Opens every connection of `spec`; one that fails counts as an error
    /// and is tried again by its first request.
    fn open(spec: &FixedRate) -> io::Result<Generator> {
        let connections = spec.connections as usize;
        let mut generator = Generator {
            addr: spec.addr,
            tls: spec.tls.clone(),
            request: format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: sluice-loadbench\r\n\r\n",
                spec.path, spec.addr
            )
            .into_bytes(),
            poller: Poller::new(connections)?,
            clients: Vec::with_capacity(connections),
            free: (0..connections).rev().collect(),
            queued: VecDeque::new(),
            tally: Tally::default(),
        };
        for index in 0..connections {
            generator.clients.push(Client {
                stream: None,
                buf: Vec::with_capacity(4096),
                in_flight: None,
            });
            if let Err(e) = generator.connect(index) {
                generator.tally.error(&e);
            }
        }
        Ok(generator)
    }

    /// Sends requests on schedule and reads their answers until the last
    /// one is answered or has timed out.
    fn drive(&mut self, spec: &FixedRate) -> io::Result<()> {
        let schedule = Schedule {
            start: now_nanos() + 1_000_000,
            interval_nanos: 1e9 / f64::from(spec.rate),
            duration_nanos: spec.duration.as_nanos() as u64,
        };
        let answer_timeout = ANSWER_TIMEOUT.as_nanos() as u64;
        let mut next = 0;
        let mut next_timeout_check = 0;
        loop {
            let now = now_nanos();
            let mut due = schedule.due(next);
            while let Some(at) = due.filter(|&at| at <= now) {
                match self.free.pop() {
                    Some(index) => {
                        if !self.send(index, now) {
                            self.free.push(index);
                        }
                    }
                    None => self.queued.push_back(at),
                }
                next += 1;
                due = schedule.due(next);
            }
            let in_flight = self.clients.len() - self.free.len();
            if due.is_none() && self.queued.is_empty() && in_flight == 0 {
                return Ok(());
            }
            if now >= next_timeout_check {
                self.time_out(now.saturating_sub(answer_timeout));
                next_timeout_check = now + TIMEOUT_CHECK_NANOS;
            }
            let wait = due.map_or(TIMEOUT_CHECK_NANOS, |at| at - now);
            let ready = self.poller.wait(wait.min(TIMEOUT_CHECK_NANOS))?;
            for i in 0..ready {
                let index = self.poller.ready(i);
                self.read(index);
            }
        }
    }

    /// Opens connection `index` (blocking, and handshaken over TLS) and
    /// watches it.
    fn connect(&mut self, index: usize) -> io::Result<()> {
        let stream = Stream::open(self.addr, self.tls.as_ref())?;
        stream.socket().set_nonblocking(true)?;
        self.poller.register(stream.socket(), index)?;
        let client = &mut self.clients[index];
        client.stream = Some(stream);
        client.buf.clear();
        Ok(())
    }

    /// Closes connection `index`; its next request opens it again.
    fn close(&mut self, index: usize) {
        let client = &mut self.clients[index];
        // Closing the socket takes it out of the epoll set.
        client.stream = None;
        client.buf.clear();
    }

    /// Sends a request timed from `timed_from` on free connection `index`;
    /// false, with the error counted, if it could not be sent.
    fn send(&mut self, index: usize, timed_from: u64) -> bool {
        if self.clients[index].stream.is_none() {
            if let Err(e) = self.connect(index) {
                self.tally.error(&e);
                return false;
            }
        }
        let client = &mut self.clients[index];
        let stream = client.stream.as_mut().expect("connected above");
        match write_all(stream, &self.request) {
            Ok(()) => {
                client.in_flight = Some(timed_from);
                true
            }
            Err(e) => {
                self.tally.error(&e);
                self.close(index);
                false
            }
        }
    }

    /// Reads what connection `index` has, and finishes its request once the
    /// answer is whole.
    fn read(&mut self, index: usize) {
        let client = &mut self.clients[index];
        let Some(stream) = client.stream.as_mut() else {
            return;
        };
        let mut closed = false;
        let outcome = loop {
            match http1::read_some(stream, &mut client.buf) {
                Ok(0) => closed = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(e),
            }
            break http1::progress(&client.buf);
        };
        if client.in_flight.is_none() {
            // Nothing was asked: the server closed an idle connection.
            if closed || outcome.is_err() {
                self.close(index);
            }
            return;
        }
        match outcome {
            Ok(Progress::Complete { status, keep_alive }) => {
                self.answered(index, status, keep_alive && !closed)
            }
            Ok(Progress::UntilClose { status }) if closed => self.answered(index, status, false),
            Ok(_) if closed => self.failed(index, &io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(e) => self.failed(index, &e),
        }
    }

    /// Counts the answer of connection `index`'s request, and gives the
    /// connection the next request.
    fn answered(&mut self, index: usize, status: u16, keep_alive: bool) {
        let client = &mut self.clients[index];
        let timed_from = client.in_flight.take().expect("a request in flight");
        client.buf.clear();
        self.tally
            .latencies_nanos
            .push(now_nanos().saturating_sub(timed_from));
        *self.tally.statuses.entry(status).or_default() += 1;
        if !keep_alive {
            self.close(index);
        }
        self.take_next(index);
    }

    /// Counts connection `index`'s request as failed, closes the connection
    /// and gives it the next request.
    fn failed(&mut self, index: usize, error: &io::Error) {
        self.clients[index].in_flight = None;
        self.tally.error(error);
        self.close(index);
        self.take_next(index);
    }

    /// Sends the oldest queued request on connection `index`, or frees it.
    fn take_next(&mut self, index: usize) {
        while let Some(fell_due) = self.queued.pop_front() {
            if self.send(index, fell_due) {
                return;
            }
        }
        self.free.push(index);
    }

    /// Fails every request in flight since before `sent_before`.
    fn time_out(&mut self, sent_before: u64) {
        let late: Vec<usize> = (0..self.clients.len())
            .filter(|&i| self.clients[i].in_flight.is_some_and(|at| at < sent_before))
            .collect();
        for index in late {
            self.failed(index, &io::ErrorKind::TimedOut.into());
        }
    }
}

/// How often requests in flight are checked against [`ANSWER_TIMEOUT`].
const TIMEOUT_CHECK_NANOS: u64 = 100_000_000;

/// Writes all of `bytes` to a non-blocking `stream`, waiting for room
/// (at most [`ANSWER_TIMEOUT`] each time) when the socket has none.
fn write_all(stream: &mut Stream, mut bytes: &[u8]) -> io::Result<()> {
    loop {
        let written = if bytes.is_empty() {
            stream.flush().map(|()| None)
        } else {
            stream.write(bytes).map(Some)
        };
        match written {
            Ok(None) => return Ok(()),
            Ok(Some(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(Some(n)) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut socket = libc::pollfd {
                    fd: stream.socket().as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd for the length of the call.
                let ready =
                    unsafe { libc::poll(&mut socket, 1, ANSWER_TIMEOUT.as_millis() as i32) };
                if ready == 0 {
                    return Err(io::ErrorKind::TimedOut.into());
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// What the connections saw.
#[derive(Default)]
struct Tally {
    latencies_nanos: Vec<u64>,
    statuses: BTreeMap<u16, u64>,
    errors: BTreeMap<String, u64>,
}

impl Tally {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};

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
                    while read_request(&mut conn, &mut buf) {
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

    /// Reads one request head off `conn`; false at the end of the
    /// connection.
    fn read_request(conn: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
        buf.clear();
        while http1::find(buf, b"\r\n\r\n").is_none() {
            if http1::read_some(conn, buf).unwrap_or(0) == 0 {
                return false;
            }
        }
        true
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
    fn a_connection_the_server_closes_is_opened_again() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                counted.fetch_add(1, Ordering::SeqCst);
                read_request(&mut conn, &mut Vec::new());
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
                );
            }
        });
        let report = run(&spec(addr, 200, 2, 500)).unwrap();
        assert_eq!(report.status_counts, vec![(200, 100)]);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        // Two opened before the start, then one for every request but the
        // first two.
        assert_eq!(accepted.load(Ordering::SeqCst), 100);
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
