//! The Pingora `ProxyHttp` implementation.
//!
//! This module only wires the phases of a request together, in the order the
//! design gives; each decision is made by the module that owns it:
//!
//! 1. `request_filter`: route match and routing key ([`crate::routing::decide`]),
//!    request id. Unroutable requests are answered here (404, 400).
//! 2. `upstream_peer`: endpoint pick by the placement's balancer; called again
//!    for a retry after a failed connect, which then avoids the endpoints
//!    already tried.
//! 3. `upstream_request_filter`: forwarding headers, `Host` policy, path
//!    rewrite and request header rules ([`crate::transform`]).
//! 4. `response_filter`: response header rules and explainability headers.
//! 5. `fail_to_proxy`: a short, explicit error response (502, 504).

mod respond;

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::header::HOST;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;

use crate::config::HostHeader;
use crate::routing::{self, Decision, Refusal, RequestView};
use crate::snapshot::{EndpointSpec, PlacementSpec, RouteSpec, Snapshot};
use crate::transform::forwarding;

/// Response header naming the placement that served the request.
pub const X_ROUTED_TO: &str = "x-routed-to";
/// Response header saying why that placement was chosen.
pub const X_ROUTE_REASON: &str = "x-route-reason";
/// Response header naming the endpoint that served the request.
pub const X_UPSTREAM: &str = "x-upstream";

/// How many endpoints one request may try to connect to.
const MAX_CONNECT_ATTEMPTS: usize = 3;

/// The live configuration: the current snapshot, replaced atomically on reload.
pub type LiveSnapshot = Arc<ArcSwap<Snapshot>>;

/// The proxy service.
pub struct SluiceProxy {
    live: LiveSnapshot,
}

impl SluiceProxy {
    /// A proxy serving whatever snapshot `live` holds when each request starts.
    pub fn new(live: LiveSnapshot) -> Self {
        Self { live }
    }
}

/// Per-request state, carried from phase to phase.
#[derive(Default)]
pub struct RequestCtx {
    snapshot: Option<Arc<Snapshot>>,
    decision: Option<Decision>,
    endpoint: Option<usize>,
    failed_endpoints: Vec<usize>,
    request_id: String,
    client_host: String,
}

impl RequestCtx {
    fn route(&self) -> Option<&RouteSpec> {
        let (snapshot, decision) = (self.snapshot.as_ref()?, self.decision.as_ref()?);
        snapshot.routes.get(decision.route)
    }

    fn placement(&self) -> Option<&PlacementSpec> {
        let (snapshot, decision) = (self.snapshot.as_ref()?, self.decision.as_ref()?);
        snapshot.placements.get(decision.placement)
    }

    fn endpoint(&self) -> Option<&EndpointSpec> {
        self.placement()?.endpoints.get(self.endpoint?)
    }

    /// Adds `X-Request-Id` and, where the route allows, the explainability headers.
    fn explain(&self, response: &mut ResponseHeader) {
        let _ = response.insert_header(forwarding::REQUEST_ID, self.request_id.as_str());
        let (Some(route), Some(decision)) = (self.route(), self.decision.as_ref()) else {
            return;
        };
        if !route.explain {
            return;
        }
        if let Some(placement) = self.placement() {
            let _ = response.insert_header(X_ROUTED_TO, placement.name_header.clone());
        }
        let _ = response.insert_header(X_ROUTE_REASON, decision.reason.as_str());
        if let Some(endpoint) = self.endpoint() {
            let _ = response.insert_header(X_UPSTREAM, endpoint.authority.clone());
        }
    }
}

/// The request's host: `Host`, else the URI authority (HTTP/2).
fn request_host(request: &RequestHeader) -> &str {
    request
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
}

#[async_trait]
impl ProxyHttp for SluiceProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        let snapshot = self.live.load_full();
        let request = session.req_header();
        ctx.request_id = forwarding::request_id(
            request
                .headers
                .get(forwarding::REQUEST_ID)
                .map(|v| v.as_bytes()),
        );
        ctx.client_host = request_host(request).to_string();
        let view = RequestView {
            host: &ctx.client_host,
            path: request.uri.path(),
            query: request.uri.query(),
            headers: &request.headers,
        };
        let outcome = routing::decide(&snapshot, &view);
        ctx.snapshot = Some(snapshot);
        match outcome {
            Ok(decision) => {
                ctx.decision = Some(decision);
                Ok(false)
            }
            Err(Refusal::NoRoute) => {
                respond::text(session, ctx, 404, "no route matches this host and path").await?;
                Ok(true)
            }
            Err(Refusal::MissingKey { .. }) => {
                respond::text(
                    session,
                    ctx,
                    400,
                    "this route needs a routing key and the request has none",
                )
                .await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let placement = ctx
            .placement()
            .ok_or_else(|| Error::explain(InternalError, "no placement decided"))?;
        let key = ctx
            .decision
            .as_ref()
            .and_then(|d| d.key.as_deref())
            .map(str::as_bytes);
        let failed = &ctx.failed_endpoints;
        let Some(index) = placement.balancer.pick(key, |i| !failed.contains(&i)) else {
            return Error::e_explain(
                ConnectNoRoute,
                format!("no endpoint of placement {} left to try", placement.name),
            );
        };
        let peer = placement.endpoints[index].peer.clone();
        ctx.endpoint = Some(index);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(endpoint) = ctx.endpoint {
            ctx.failed_endpoints.push(endpoint);
        }
        let endpoints = ctx.placement().map_or(0, |p| p.endpoints.len());
        let attempts = ctx.failed_endpoints.len();
        e.set_retry(attempts < MAX_CONNECT_ATTEMPTS && attempts < endpoints);
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        forwarding::set_forwarded(upstream, client_ip, "http", &ctx.client_host);
        upstream.insert_header(forwarding::REQUEST_ID, ctx.request_id.as_str())?;
        if let (Some(placement), Some(endpoint)) = (ctx.placement(), ctx.endpoint()) {
            if placement.host_header == HostHeader::Endpoint {
                upstream.insert_header(HOST, endpoint.authority.clone())?;
            }
        }
        let Some(route) = ctx.route() else {
            return Ok(());
        };
        if let Some(rewrite) = &route.rewrite {
            if let Some(path) = rewrite.apply(upstream.uri.path()) {
                let path_and_query = match upstream.uri.query() {
                    Some(query) => format!("{path}?{query}"),
                    None => path,
                };
                let mut parts = upstream.uri.clone().into_parts();
                parts.path_and_query = Some(path_and_query.parse().map_err(|e| {
                    Error::because(InternalError, "rewritten path is not a valid URI", e)
                })?);
                let uri = http::Uri::from_parts(parts).map_err(|e| {
                    Error::because(InternalError, "rewritten path is not a valid URI", e)
                })?;
                upstream.set_uri(uri);
            }
        }
        route.request_headers.apply_to_request(upstream);
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(route) = ctx.route() {
            route.response_headers.apply_to_response(response);
        }
        ctx.explain(response);
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let (status, message) = respond::status_for(e, ctx.placement().map(|p| &*p.name));
        if status > 0 {
            if let Err(write_error) = respond::text(session, ctx, status, &message).await {
                tracing::debug!(error = %write_error, "could not send the error response");
            }
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        tracing::debug!(
            request_id = %ctx.request_id,
            method = %session.req_header().method,
            path = %session.req_header().uri.path(),
            status,
            placement = ctx.placement().map(|p| &*p.name),
            reason = ctx.decision.as_ref().map(|d| d.reason.as_str()),
            error = e.map(|e| e.to_string()),
            "request"
        );
    }
}
