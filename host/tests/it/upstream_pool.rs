//! The upstream pool's idle connections: reused by the next request, closed
//! at their idle timeout, and closed when their endpoint closes them, each
//! watched meanwhile by a task of the worker that released it. The endpoint
//! here is a raw TCP server on loopback, so the tests see each connection
//! the proxy opens and when the proxy closes it.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{blocking_get, Proxy};

/// What the endpoint does with a connection.
#[derive(Clone, Copy)]
enum Keep {
    /// Answers every request on it until the proxy closes it, then reports
    /// how long after the last answer that was.
    UntilProxyCloses,
    /// Answers one request, then closes it itself after a moment, as a
    /// server's keep-alive timeout does, then reports.
    OneRequestThenClose(Duration),
}

/// An endpoint on loopback answering `200 ok` with keep-alive. Each
/// connection's report arrives on the channel when it ends; the counter
/// counts the connections accepted.
fn endpoint(keep: Keep) -> (SocketAddr, mpsc::Receiver<Duration>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let (reports, received) = mpsc::channel();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            let reports = reports.clone();
            thread::spawn(move || serve(stream, keep, &reports));
        }
    });
    (address, received, accepted)
}

fn serve(stream: TcpStream, keep: Keep, reports: &mpsc::Sender<Duration>) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut answered = Instant::now();
    // A read timeout or the proxy's close ends the connection.
    while read_head(&mut reader) {
        reader
            .get_mut()
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .unwrap();
        answered = Instant::now();
        if let Keep::OneRequestThenClose(delay) = keep {
            thread::sleep(delay);
            break;
        }
    }
    let _ = reports.send(answered.elapsed());
}

/// Reads one request head; false at the end of the connection.
fn read_head(reader: &mut BufReader<TcpStream>) -> bool {
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return false;
        }
        if line == "\r\n" {
            return true;
        }
    }
}

fn proxy_to(endpoint: SocketAddr, timeouts: &str) -> Proxy {
    Proxy::start(&format!(
        "[server]\nthreads = 1\n\
         [placements.p]\nendpoints = [{{ address = \"{endpoint}\" }}]\n{timeouts}\n\
         [[routes]]\nname = \"all\"\nplacement = \"p\"\n"
    ))
}

/// The proxy's sockets to `endpoint` that the endpoint has closed and the
/// proxy not yet (TCP state CLOSE_WAIT), from `/proc/net/tcp`.
fn half_closed_to(endpoint: SocketAddr) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let remote = format!(":{:04X}", endpoint.port());
    table
        .lines()
        .skip(1)
        .filter(|row| {
            let fields: Vec<&str> = row.split_whitespace().collect();
            fields.len() > 3 && fields[2].ends_with(&remote) && fields[3] == "08"
        })
        .count()
}

#[test]
fn an_idle_pooled_connection_is_closed_at_its_idle_timeout() {
    let (address, reports, _) = endpoint(Keep::UntilProxyCloses);
    let proxy = proxy_to(address, "timeouts = { idle = \"400ms\" }");
    assert!(blocking_get(proxy.address, "/")
        .unwrap()
        .starts_with("HTTP/1.1 200"));
    let idle = reports.recv_timeout(Duration::from_secs(15)).unwrap();
    // Kept in the pool, not closed with the response, and closed once its
    // timeout passed.
    assert!(idle >= Duration::from_millis(350), "closed after {idle:?}");
    assert!(idle < Duration::from_secs(3), "closed after {idle:?}");
}

#[test]
fn an_endpoint_closing_an_idle_pooled_connection_is_noticed_without_a_request() {
    let (address, reports, accepted) =
        endpoint(Keep::OneRequestThenClose(Duration::from_millis(100)));
    let proxy = proxy_to(address, "");
    assert!(blocking_get(proxy.address, "/")
        .unwrap()
        .starts_with("HTTP/1.1 200"));
    reports.recv_timeout(Duration::from_secs(5)).unwrap();
    // The endpoint has closed its side; the connection's watcher sees it
    // and the proxy closes its own, long before the idle timeout of 60 s,
    // without a request to find it closed.
    let closed_by_endpoint = Instant::now();
    let mut left = half_closed_to(address);
    while left > 0 && closed_by_endpoint.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(100));
        left = half_closed_to(address);
    }
    assert_eq!(left, 0, "the proxy still holds the closed connection");
    // The next request gets a new connection and its answer.
    assert!(blocking_get(proxy.address, "/")
        .unwrap()
        .starts_with("HTTP/1.1 200"));
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[test]
fn one_upstream_connection_serves_requests_close_together_and_after_an_idle_wait() {
    let (address, _reports, accepted) = endpoint(Keep::UntilProxyCloses);
    let proxy = proxy_to(address, "");
    // Picked up again at once, from a watcher that has only just started.
    for _ in 0..5 {
        assert!(blocking_get(proxy.address, "/")
            .unwrap()
            .starts_with("HTTP/1.1 200"));
        thread::sleep(Duration::from_millis(100));
    }
    // Idle for a while: its watcher has polled it and lets go of it.
    thread::sleep(Duration::from_millis(2500));
    for _ in 0..2 {
        assert!(blocking_get(proxy.address, "/")
            .unwrap()
            .starts_with("HTTP/1.1 200"));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}
