//! The admin API, on its own listener:
//!
//! - `GET /status`: placements and endpoints with health, breaker state and
//!   in-flight counts; plugins with their versions, hooks and last errors;
//!   certificates from files, then those managed through ACME (with
//!   `"source": "acme"`, the next attempt and the last error);
//! - `GET /config`: version, source, load time and last error;
//! - `POST /reload`: reload from the source now;
//! - `GET /metrics`: Prometheus text.
//!
//! With a token configured, every request needs `Authorization: Bearer TOKEN`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use crate::control::fleet::FleetView;
use crate::control::{ReloadOutcome, Reloader};
use crate::resilience::health::Down;
use crate::telemetry::metrics::Metrics;
use crate::tls::acme::Acme;

/// The admin API service.
pub struct AdminApi {
    reloader: Arc<Reloader>,
    metrics: Arc<Metrics>,
    token: Option<String>,
    acme: Arc<OnceLock<Acme>>,
    fleet: Option<Arc<FleetView>>,
}

impl AdminApi {
    /// An admin API over this reloader and metrics; `token` guards it.
    pub fn new(reloader: Arc<Reloader>, metrics: Arc<Metrics>, token: Option<String>) -> Self {
        Self {
            reloader,
            metrics,
            token,
            acme: Arc::default(),
            fleet: None,
        }
    }

    /// Lists the certificates ACME manages in `/status` too, once `acme`
    /// holds a manager.
    pub fn with_acme(mut self, acme: Arc<OnceLock<Acme>>) -> Self {
        self.acme = acme;
        self
    }

    /// Lists the fleet's members in `/status` too.
    pub fn with_fleet(mut self, fleet: Arc<FleetView>) -> Self {
        self.fleet = Some(fleet);
        self
    }

    fn authorized(&self, session: &ServerSession) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let presented = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        constant_time_eq(presented.as_bytes(), token.as_bytes())
    }

    fn status(&self) -> serde_json::Value {
        let snapshot = self.reloader.live().load_full();
        let now = Instant::now();
        let placements: Vec<_> = snapshot
            .placements
            .iter()
            .map(|placement| {
                let endpoints: Vec<_> = placement
                    .endpoints
                    .iter()
                    .map(|endpoint| {
                        let state = &endpoint.state;
                        json!({
                            "address": &*endpoint.id,
                            "peer": endpoint.address.to_string(),
                            "healthy": state.health.is_healthy(now),
                            "down_reason": state.health.down_reason(now).map(|d| match d {
                                Down::Active => "active_check",
                                Down::Passive => "passive",
                            }),
                            "breaker": state.breaker.state(now).as_str(),
                            "in_flight": state.in_flight.load(Ordering::Relaxed),
                        })
                    })
                    .collect();
                json!({
                    "name": &*placement.name,
                    "healthy": placement.endpoints.iter().any(|e| e.state.health.is_healthy(now)),
                    "in_flight": placement.state.in_flight.load(Ordering::Relaxed),
                    "max_concurrency": placement.max_concurrency,
                    "fallback": placement.fallback.map(|f| &*snapshot.placements[f].name),
                    "health_check": placement.active_check.is_some(),
                    "endpoints": endpoints,
                })
            })
            .collect();
        let plugins = self
            .reloader
            .plugins()
            .load_full()
            .map(|registry| registry.status())
            .unwrap_or_default();
        let mut certificates: Vec<serde_json::Value> = snapshot
            .certificates
            .list()
            .iter()
            .map(|info| json!(info))
            .collect();
        if let Some(acme) = self.acme.get() {
            certificates.extend(acme.status().into_iter().map(|status| {
                let mut value = json!(status);
                value["source"] = json!("acme");
                value
            }));
        }
        let time = |at: Option<std::time::SystemTime>| at.map(crate::support::time::timestamp);
        let names: Vec<_> = self
            .reloader
            .names()
            .into_iter()
            .map(|(name, state)| {
                json!({
                    "name": name,
                    "addresses": state.addresses,
                    "resolved_at": time(state.resolved_at),
                    "attempted_at": time(state.attempted_at),
                    "last_error": state.last_error,
                })
            })
            .collect();
        let mut status = json!({
            "version": snapshot.version,
            "placements": placements,
            "upstream_names": names,
            "plugins": plugins,
            "certificates": certificates,
        });
        if let Some(fleet) = &self.fleet {
            status["fleet"] = json!({
                "members": fleet.members(),
                "locks": fleet.locks(),
                "last_error": fleet.error(),
            });
        }
        status
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .expect("valid response")
}

fn respond_json(status: StatusCode, value: serde_json::Value) -> Response<Vec<u8>> {
    let mut body = serde_json::to_vec_pretty(&value).unwrap_or_default();
    body.push(b'\n');
    respond(status, "application/json", body)
}

#[async_trait]
impl ServeHttp for AdminApi {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        if !self.authorized(session) {
            let mut response = respond_json(
                StatusCode::UNAUTHORIZED,
                json!({ "error": "a valid bearer token is required" }),
            );
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            return response;
        }
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        match (method, path.as_str()) {
            (Method::GET, "/status") => respond_json(StatusCode::OK, self.status()),
            (Method::GET, "/config") => match serde_json::to_value(self.reloader.status()) {
                Ok(value) => respond_json(StatusCode::OK, value),
                Err(e) => respond_json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({ "error": e.to_string() }),
                ),
            },
            (Method::POST, "/reload") => match self.reloader.reload("admin API").await {
                Ok(outcome) => {
                    let result = match outcome {
                        ReloadOutcome::Applied => "applied",
                        ReloadOutcome::Unchanged => "unchanged",
                    };
                    respond_json(
                        StatusCode::OK,
                        json!({ "result": result, "version": self.reloader.status().version }),
                    )
                }
                Err(error) => respond_json(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({ "result": "rejected", "error": error, "version": self.reloader.status().version }),
                ),
            },
            (Method::GET, "/metrics") => {
                let body = self
                    .metrics
                    .render(&self.reloader.live().load_full(), &self.reloader.names());
                respond(StatusCode::OK, "text/plain; version=0.0.4", body)
            }
            (_, "/status" | "/config" | "/metrics" | "/reload") => respond_json(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({ "error": "method not allowed" }),
            ),
            _ => respond_json(
                StatusCode::NOT_FOUND,
                json!({ "error": "not found", "endpoints": ["GET /status", "GET /config", "POST /reload", "GET /metrics"] }),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
