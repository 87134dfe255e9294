//! Active health checkers: one task per checked endpoint, kept in step with
//! the current snapshot.
//!
//! [`HealthSupervisor::sync`] runs after every publish: it starts checkers for
//! new endpoints, restarts those whose check or address changed, and stops
//! those no longer configured. Checkers write into the endpoint's shared
//! [`Health`](super::health::Health), which requests read.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use super::health::{ActiveCheck, CheckKind};
use super::placement::{self, EndpointSpec, PlacementSpec};
use super::state::{EndpointKey, EndpointState};
use crate::config::GrpcCode;

/// What a checker probes and how.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CheckTarget {
    check: ActiveCheck,
    address: SocketAddr,
    authority: String,
    tls: bool,
    /// Whether the endpoint speaks HTTP/2 without TLS, with prior knowledge.
    h2c: bool,
    verify: bool,
}

impl CheckTarget {
    fn of(endpoint: &EndpointSpec, check: &ActiveCheck) -> Self {
        Self {
            check: check.clone(),
            address: endpoint.address,
            authority: probe_authority(endpoint),
            tls: endpoint.peer.is_tls(),
            h2c: !endpoint.peer.is_tls() && endpoint.peer.options.alpn.get_min_http_version() == 2,
            verify: endpoint.peer.options.verify_cert,
        }
    }
}

/// The `host:port` a probe addresses: for a TLS endpoint with its own
/// `sni`, the server name (so the probe's handshake and certificate check
/// match the proxy's), else the endpoint's address as written. Either way
/// the connection goes to the endpoint's resolved address.
fn probe_authority(endpoint: &EndpointSpec) -> String {
    let sni = &endpoint.peer.sni;
    if endpoint.peer.is_tls() && !sni.is_empty() {
        let port = endpoint.address.port();
        if sni.parse::<std::net::Ipv6Addr>().is_ok() {
            return format!("[{sni}]:{port}");
        }
        return format!("{sni}:{port}");
    }
    endpoint.id.to_string()
}

/// Runs the active checkers of the current snapshot.
pub struct HealthSupervisor {
    runtime: Handle,
    running: Mutex<HashMap<EndpointKey, Checker>>,
}

/// A running checker task and the flag that retires it.
struct Checker {
    target: CheckTarget,
    task: JoinHandle<()>,
    /// Set before the task is aborted, so a probe finishing meanwhile is not recorded.
    retired: Arc<AtomicBool>,
}

impl Checker {
    fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
        self.task.abort();
    }
}

impl HealthSupervisor {
    /// A supervisor spawning its checkers on `runtime`.
    pub fn new(runtime: Handle) -> Self {
        Self {
            runtime,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Starts, restarts and stops checkers to match `placements`.
    pub fn sync(&self, placements: &[PlacementSpec]) {
        let mut wanted = HashMap::new();
        for (placement, endpoint) in placement::endpoints(placements) {
            if let Some(check) = &placement.active_check {
                wanted.insert(
                    endpoint.state.key.clone(),
                    (CheckTarget::of(endpoint, check), endpoint.state.clone()),
                );
            }
        }
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.retain(|key, checker| {
            let keep = wanted
                .get(key)
                .is_some_and(|(wanted, _)| *wanted == checker.target);
            if !keep {
                checker.retire();
            }
            keep
        });
        for (key, (target, state)) in wanted {
            if running.contains_key(&key) {
                continue;
            }
            let retired = Arc::new(AtomicBool::new(false));
            let task = self
                .runtime
                .spawn(check_loop(state, target.clone(), retired.clone()));
            running.insert(
                key,
                Checker {
                    target,
                    task,
                    retired,
                },
            );
        }
    }

    /// How many checkers run.
    pub fn running(&self) -> usize {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for HealthSupervisor {
    fn drop(&mut self) {
        for (_, checker) in self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
        {
            checker.retire();
        }
    }
}

async fn check_loop(state: Arc<EndpointState>, target: CheckTarget, retired: Arc<AtomicBool>) {
    let client = match &target.check.kind {
        CheckKind::Http { .. } | CheckKind::Grpc { .. } => match http_client(&target) {
            Ok(client) => Some(client),
            Err(e) => {
                tracing::error!(endpoint = %target.authority, error = %e, "cannot build the health-check client");
                return;
            }
        },
        CheckKind::Tcp => None,
    };
    let mut interval = tokio::time::interval(target.check.interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let healthy = probe(&target, client.as_ref()).await;
        if retired.load(Ordering::SeqCst) {
            return;
        }
        if let Some(up) = state.health.record_probe(healthy.is_ok(), &target.check) {
            let placement = &state.key.placement;
            match (up, healthy) {
                (true, _) => {
                    tracing::info!(%placement, endpoint = %target.authority, "endpoint is healthy again")
                }
                (false, Err(reason)) => {
                    tracing::warn!(%placement, endpoint = %target.authority, %reason, "endpoint marked unhealthy")
                }
                (false, Ok(())) => {}
            }
        }
    }
}

fn http_client(target: &CheckTarget) -> reqwest::Result<reqwest::Client> {
    let host = crate::routing::route_match::strip_port(&target.authority).trim_matches(['[', ']']);
    let mut builder = reqwest::Client::builder();
    // gRPC is HTTP/2 only, over TLS as well as without.
    if target.h2c || matches!(target.check.kind, CheckKind::Grpc { .. }) {
        builder = builder.http2_prior_knowledge();
    }
    builder
        .no_proxy()
        .timeout(target.check.timeout)
        .connect_timeout(target.check.timeout)
        .danger_accept_invalid_certs(!target.verify)
        .resolve(host, target.address)
        .redirect(reqwest::redirect::Policy::none())
        // Each probe opens its own connection: a kept-alive one could
        // outlive a listener that is gone, and hide it.
        .pool_max_idle_per_host(0)
        .user_agent("sluice-health-check")
        .build()
}

async fn probe(target: &CheckTarget, client: Option<&reqwest::Client>) -> Result<(), String> {
    match (&target.check.kind, client) {
        (CheckKind::Http { path, expect }, Some(client)) => {
            let scheme = if target.tls { "https" } else { "http" };
            let url = format!("{scheme}://{}{path}", target.authority);
            let response = client
                .get(&url)
                .send()
                .await
                .map_err(|e| e.without_url().to_string())?;
            let status = response.status().as_u16();
            if (expect.0..=expect.1).contains(&status) {
                Ok(())
            } else {
                Err(format!("status {status}"))
            }
        }
        (CheckKind::Grpc { service }, Some(client)) => {
            let scheme = if target.tls { "https" } else { "http" };
            let url = format!("{scheme}://{}{}", target.authority, grpc_health::CHECK_PATH);
            let response = client
                .post(&url)
                .header(http::header::CONTENT_TYPE, "application/grpc")
                .header(http::header::TE, "trailers")
                .body(grpc_health::request(service))
                .send()
                .await
                .map_err(|e| e.without_url().to_string())?;
            let status = response.status().as_u16();
            if status != 200 {
                return Err(format!("status {status}"));
            }
            // A call that fails at once answers with its status in the head.
            if let Some(code) =
                super::grpc::status(response.headers()).filter(|c| *c != GrpcCode::Ok)
            {
                return Err(format!("gRPC status {}", code.name()));
            }
            let body = response
                .bytes()
                .await
                .map_err(|e| e.without_url().to_string())?;
            grpc_health::serving(&body)
        }
        _ => {
            match tokio::time::timeout(
                target.check.timeout,
                tokio::net::TcpStream::connect(target.address),
            )
            .await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no connection within {:?}", target.check.timeout)),
            }
        }
    }
}

/// The shortest interval a checker may use, to keep a misconfiguration from
/// flooding an endpoint.
pub const MIN_INTERVAL: Duration = Duration::from_millis(50);

/// The messages of `grpc.health.v1`, framed as a unary gRPC call carries
/// them.
mod grpc_health {
    use prost::Message;

    /// The method a check calls.
    pub const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

    /// `SERVING` in `HealthCheckResponse.ServingStatus`.
    const SERVING: i32 = 1;

    #[derive(Clone, PartialEq, Message)]
    struct HealthCheckRequest {
        #[prost(string, tag = "1")]
        service: String,
    }

    #[derive(Clone, PartialEq, Message)]
    struct HealthCheckResponse {
        #[prost(int32, tag = "1")]
        status: i32,
    }

    /// The request body asking about `service`: one uncompressed message,
    /// after its flag byte and big-endian length.
    pub fn request(service: &str) -> Vec<u8> {
        let message = HealthCheckRequest {
            service: service.to_string(),
        }
        .encode_to_vec();
        let mut body = Vec::with_capacity(5 + message.len());
        body.push(0);
        body.extend_from_slice(&(message.len() as u32).to_be_bytes());
        body.extend_from_slice(&message);
        body
    }

    /// Whether a response body says `SERVING`; otherwise why not.
    pub fn serving(body: &[u8]) -> Result<(), String> {
        let Some((&[compressed, a, b, c, d], rest)) = body.split_first_chunk::<5>() else {
            return Err("no health message in the answer".into());
        };
        if compressed != 0 {
            return Err("the health message is compressed".into());
        }
        let length = u32::from_be_bytes([a, b, c, d]) as usize;
        let message = rest
            .get(..length)
            .ok_or("the health message is cut short")?;
        let response = HealthCheckResponse::decode(message)
            .map_err(|e| format!("the health message does not decode: {e}"))?;
        let state = match response.status {
            SERVING => return Ok(()),
            0 => "UNKNOWN",
            2 => "NOT_SERVING",
            3 => "SERVICE_UNKNOWN",
            _ => "in an unknown state",
        };
        Err(format!("the service is {state}"))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_request_frames_its_message_and_serving_is_read_back() {
            let body = request("sluice.test.Echo");
            assert_eq!(body[0], 0);
            assert_eq!(
                u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize,
                body.len() - 5
            );
            let answer = |status: i32| {
                let message = HealthCheckResponse { status }.encode_to_vec();
                let mut body = vec![0];
                body.extend_from_slice(&(message.len() as u32).to_be_bytes());
                body.extend_from_slice(&message);
                body
            };
            assert_eq!(serving(&answer(1)), Ok(()));
            assert_eq!(
                serving(&answer(2)),
                Err("the service is NOT_SERVING".into())
            );
            assert!(serving(&[]).is_err());
            assert!(serving(&answer(1)[..6]).is_err());
        }
    }
}
