//! A programmable fault upstream: answers, fails with a status, resets the
//! connection, hangs, or sends a slow body, per request, as a test tells it;
//! its `/health` answer and whether it listens at all are switched apart.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// What the upstream does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// `200` with the upstream's name.
    Ok,
    /// This status, with a short body.
    Status(u16),
    /// Read the request, then reset the connection.
    Reset,
    /// Read the request and never answer.
    Hang,
    /// Wait, then answer `200`.
    Delay(Duration),
    /// Send headers, then the body in ten pieces this far apart.
    SlowBody(Duration),
}

#[derive(Debug)]
struct Plan {
    queue: VecDeque<Behavior>,
    default: Behavior,
}

/// A running fault upstream.
pub struct FaultUpstream {
    /// Its name, sent in `X-Served-By`.
    pub name: &'static str,
    /// Where it listens.
    pub address: SocketAddr,
    plan: Arc<Mutex<Plan>>,
    healthy: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
    health_hits: Arc<AtomicUsize>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl FaultUpstream {
    /// Starts on a free loopback port, answering `Ok`.
    pub async fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = Self {
            name,
            address: listener.local_addr().unwrap(),
            plan: Arc::new(Mutex::new(Plan {
                queue: VecDeque::new(),
                default: Behavior::Ok,
            })),
            healthy: Arc::new(AtomicBool::new(true)),
            hits: Arc::new(AtomicUsize::new(0)),
            health_hits: Arc::new(AtomicUsize::new(0)),
            task: Mutex::new(None),
        };
        upstream.serve(listener);
        upstream
    }

    fn serve(&self, listener: TcpListener) {
        let (plan, healthy, hits, health_hits, name) = (
            self.plan.clone(),
            self.healthy.clone(),
            self.hits.clone(),
            self.health_hits.clone(),
            self.name,
        );
        let task = tokio::spawn(async move {
            // Connections live in this set: stopping the task drops them all.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let (plan, healthy, hits, health_hits) = (plan.clone(), healthy.clone(), hits.clone(), health_hits.clone());
                        connections.spawn(connection(stream, name, plan, healthy, hits, health_hits));
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        *self.task.lock().unwrap() = Some(task);
    }

    /// Every request from now on behaves like this.
    pub fn set(&self, behavior: Behavior) {
        let mut plan = self.plan.lock().unwrap();
        plan.queue.clear();
        plan.default = behavior;
    }

    /// The next `times` requests behave like this, then the default resumes.
    pub fn push(&self, times: usize, behavior: Behavior) {
        let mut plan = self.plan.lock().unwrap();
        plan.queue.extend(std::iter::repeat_n(behavior, times));
    }

    /// Whether `/health` answers 200 (else 503).
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Requests received, `/health` excluded.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// `/health` requests received.
    pub fn health_hits(&self) -> usize {
        self.health_hits.load(Ordering::SeqCst)
    }

    /// Closes the port and every open connection.
    pub fn stop(&self) {
        if let Some(task) = self.task.lock().unwrap().take() {
            task.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&self) {
        self.stop();
        let mut attempts = 0;
        let listener = loop {
            match TcpListener::bind(self.address).await {
                Ok(listener) => break listener,
                Err(e) if attempts < 50 => {
                    attempts += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot rebind {}: {e}", self.address),
            }
        };
        self.serve(listener);
    }
}

impl Drop for FaultUpstream {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn connection(
    mut stream: TcpStream,
    name: &'static str,
    plan: Arc<Mutex<Plan>>,
    healthy: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
    health_hits: Arc<AtomicUsize>,
) {
    let mut buffer = Vec::new();
    loop {
        let Some((head, body_length)) = read_head(&mut stream, &mut buffer).await else {
            return;
        };
        if !drain_body(&mut stream, &mut buffer, body_length).await {
            return;
        }
        if head.starts_with("GET /health ") {
            health_hits.fetch_add(1, Ordering::SeqCst);
            let status = if healthy.load(Ordering::SeqCst) {
                200
            } else {
                503
            };
            if respond(&mut stream, name, status, b"health\n")
                .await
                .is_err()
            {
                return;
            }
            continue;
        }
        hits.fetch_add(1, Ordering::SeqCst);
        let behavior = {
            let mut plan = plan.lock().unwrap();
            let default = plan.default;
            plan.queue.pop_front().unwrap_or(default)
        };
        let written = match behavior {
            Behavior::Ok => respond(&mut stream, name, 200, b"ok\n").await,
            Behavior::Status(status) => respond(&mut stream, name, status, b"failure\n").await,
            Behavior::Delay(delay) => {
                tokio::time::sleep(delay).await;
                respond(&mut stream, name, 200, b"ok\n").await
            }
            Behavior::Reset => {
                // A zero linger makes the close send RST instead of FIN.
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                return;
            }
            Behavior::Hang => {
                std::future::pending::<()>().await;
                return;
            }
            Behavior::SlowBody(gap) => slow_body(&mut stream, name, gap).await,
        };
        if written.is_err() {
            return;
        }
    }
}

/// Reads one request head; returns it with its `Content-Length`.
async fn read_head(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<(String, usize)> {
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            buffer.drain(..end + 4);
            let length = head
                .lines()
                .filter_map(|line| line.split_once(':'))
                .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, value)| value.trim().parse().ok())
                .unwrap_or(0);
            return Some((head, length));
        }
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

async fn drain_body(stream: &mut TcpStream, buffer: &mut Vec<u8>, mut remaining: usize) -> bool {
    let buffered = remaining.min(buffer.len());
    buffer.drain(..buffered);
    remaining -= buffered;
    let mut chunk = [0u8; 4096];
    while remaining > 0 {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(read) => remaining = remaining.saturating_sub(read),
        }
    }
    true
}

async fn respond(
    stream: &mut TcpStream,
    name: &str,
    status: u16,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} Fault\r\nContent-Length: {}\r\nX-Served-By: {name}\r\nContent-Type: text/plain\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await
}

async fn slow_body(stream: &mut TcpStream, name: &str, gap: Duration) -> std::io::Result<()> {
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-Served-By: {name}\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    for _ in 0..10 {
        tokio::time::sleep(gap).await;
        stream.write_all(b"x").await?;
    }
    Ok(())
}
