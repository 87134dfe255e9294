//! In-process HTTP/1.1 upstreams for the latency-bound cases: each answers
//! after a fixed service time, at most `capacity` requests at once (the
//! others queue, as on a server with that many workers), and counts the
//! requests it receives.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::Semaphore;

/// A running upstream; it stops with the runtime.
pub struct Upstream {
    /// Where it listens.
    pub address: SocketAddr,
    received: Arc<AtomicU64>,
}

impl Upstream {
    /// Starts an upstream taking `service` per request, `capacity` at once.
    pub async fn start(service: Duration, capacity: usize) -> anyhow::Result<Upstream> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let received = Arc::new(AtomicU64::new(0));
        let workers = Arc::new(Semaphore::new(capacity));
        let counter = received.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (counter, workers) = (counter.clone(), workers.clone());
                tokio::spawn(async move {
                    let handle = service_fn(move |_request| {
                        let (counter, workers) = (counter.clone(), workers.clone());
                        async move {
                            counter.fetch_add(1, Ordering::Relaxed);
                            let _worker = workers.acquire().await;
                            tokio::time::sleep(service).await;
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(
                                Bytes::from_static(b"served\n"),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), handle)
                        .await;
                });
            }
        });
        Ok(Upstream { address, received })
    }

    /// Requests received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}
