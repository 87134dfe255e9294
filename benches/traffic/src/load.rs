//! A closed-loop load generator: `clients` keep-alive HTTP/1.1 clients,
//! each sending its next request as soon as the last is answered, for a
//! fixed time, timing every request.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// What one run measured.
pub struct Load {
    /// Requests answered with a success status.
    pub answered: u64,
    /// Requests that failed or were answered with an error status.
    pub failed: u64,
    /// How long the run lasted.
    pub elapsed: Duration,
    /// The answered requests' latencies, sorted.
    pub latencies: Vec<Duration>,
}

impl Load {
    /// Answered requests per second.
    pub fn throughput(&self) -> f64 {
        self.answered as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency at quantile `q` (0 to 1), in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let index =
            ((self.latencies.len() as f64 * q).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[index - 1].as_secs_f64() * 1000.0
    }
}

/// Sends GETs of `path` to `address` from `clients` clients for `duration`.
pub async fn closed_loop(
    address: SocketAddr,
    path: &str,
    clients: usize,
    duration: Duration,
) -> Load {
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(clients)
        .build_http::<Empty<Bytes>>();
    let uri: hyper::Uri = format!("http://{address}{path}")
        .parse()
        .expect("a valid URI");
    let started = Instant::now();
    let until = started + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (client, uri) = (client.clone(), uri.clone());
            tokio::spawn(async move {
                let (mut answered, mut failed, mut latencies) = (0, 0, Vec::new());
                while Instant::now() < until {
                    let sent = Instant::now();
                    let ok = match client.get(uri.clone()).await {
                        Ok(response) => {
                            let success = response.status().is_success();
                            success && response.into_body().collect().await.is_ok()
                        }
                        Err(_) => false,
                    };
                    if ok {
                        answered += 1;
                        latencies.push(sent.elapsed());
                    } else {
                        failed += 1;
                    }
                }
                (answered, failed, latencies)
            })
        })
        .collect();
    let mut load = Load {
        answered: 0,
        failed: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for task in tasks {
        let (answered, failed, latencies) = task.await.expect("a load task");
        load.answered += answered;
        load.failed += failed;
        load.latencies.extend(latencies);
    }
    load.elapsed = started.elapsed();
    load.latencies.sort_unstable();
    load
}
