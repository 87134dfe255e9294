//! Idle keep-alive connections: open many client connections (over TLS
//! for a TLS target), send one request on each so the proxy has set up its
//! per-connection state, read the answer, then leave them open and idle
//! while the proxy's memory is read.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::fixed_rate::Stream;
use crate::http1;

/// Connections opened and written before their answers are read.
const BATCH: usize = 250;

/// A set of open, idle HTTP/1.1 keep-alive connections.
#[derive(Default)]
pub struct IdleConnections {
    streams: Vec<Stream>,
}

impl IdleConnections {
    /// How many connections are held.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// Opens connections to `addr` (over TLS with `tls`) until `total` are
    /// held, each having completed one `GET path` with a 200 answer.
    pub fn grow_to(
        &mut self,
        addr: SocketAddr,
        tls: Option<&Arc<rustls::ClientConfig>>,
        path: &str,
        total: usize,
    ) -> Result<()> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        while self.streams.len() < total {
            let n = BATCH.min(total - self.streams.len());
            let mut batch = Vec::with_capacity(n);
            for _ in 0..n {
                let mut stream = Stream::open(addr, tls).with_context(|| {
                    format!(
                        "connection {} to {addr}",
                        self.streams.len() + batch.len() + 1
                    )
                })?;
                set_linger_zero(stream.socket());
                stream.write_all(request.as_bytes())?;
                stream.flush()?;
                batch.push(stream);
            }
            for stream in &mut batch {
                read_response(stream)
                    .with_context(|| format!("idle connection {}", self.streams.len() + 1))?;
            }
            self.streams.append(&mut batch);
        }
        Ok(())
    }

    /// How many of the connections the server has not closed, checked
    /// without blocking.
    pub fn count_open(&self) -> usize {
        let mut buf = [0u8; 1];
        self.streams
            .iter()
            .map(Stream::socket)
            .filter(|s| {
                if s.set_nonblocking(true).is_err() {
                    return false;
                }
                let open = match s.peek(&mut buf) {
                    Ok(0) => false,
                    Ok(_) => true,
                    Err(e) => e.kind() == ErrorKind::WouldBlock,
                };
                let _ = s.set_nonblocking(false);
                open
            })
            .count()
    }

    /// Closes every connection (with a reset, so no TIME_WAIT entries pile
    /// up between the runs).
    pub fn close(&mut self) {
        self.streams.clear();
    }
}

/// Makes `close` send a reset instead of a FIN, so the closed connection
/// does not sit in TIME_WAIT holding a local port.
fn set_linger_zero(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt is given a valid socket and a pointer to a linger
    // struct of the size passed.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Reads one HTTP/1.1 response (with `Content-Length` or chunked) and
/// fails unless its status is 200.
/// Each read waits at most the read timeout [`Stream::open`] sets.
fn read_response(stream: &mut Stream) -> Result<()> {
    let mut within = Deadline {
        stream,
        until: Instant::now() + Duration::from_secs(10),
    };
    let (status, _) = http1::read_response(&mut within, &mut Vec::with_capacity(1024))?;
    if status != 200 {
        bail!("status {status}");
    }
    Ok(())
}

/// A stream whose reads fail once `until` has passed, so that a server
/// sending a response a byte at a time cannot hold a connection up.
struct Deadline<'a> {
    stream: &'a mut Stream,
    until: Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if Instant::now() > self.until {
            return Err(std::io::Error::new(
                ErrorKind::TimedOut,
                "response not complete after 10s",
            ));
        }
        self.stream.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_and_counts_connections_against_a_local_server() {
        use std::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut held = Vec::new();
            for _ in 0..3 {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 1024];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).unwrap();
                    got.extend_from_slice(&buf[..n]);
                }
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .unwrap();
                held.push(s);
            }
            // Close one of the three.
            held.pop();
            held
        });
        let mut idle = IdleConnections::default();
        idle.grow_to(addr, None, "/x", 3).unwrap();
        assert_eq!(idle.len(), 3);
        let held = server.join().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(idle.count_open(), 2);
        drop(held);
        idle.close();
        assert_eq!(idle.len(), 0);
    }
}
