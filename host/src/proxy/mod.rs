//! The Pingora `ProxyHttp` implementation.
//!
//! This module only wires the phases of a request together, in the order the
//! design gives; each decision is made by the module that owns it:
//!
//! 1. `request_filter`, in three stages: `route_request` answers pending
//!    ACME HTTP-01 challenges on plain HTTP, then matches a route and reads
//!    its routing key ([`crate::routing`]); `decide` runs the route's
//!    request plugins and placement policy ([`crate::plugins::chain`]) and
//!    resolves the placement; `admit` takes the request under health,
//!    breakers, the fallback chain and the concurrency permit
//!    ([`crate::resilience::admission::admit`]), then checks the declared
//!    body against the limit. Requests that cannot go on are answered here
//!    (404, 400, 429, 413, 503, a plugin's answer or failure status).
//! 2. `request_body_filter`: the body limit while the body streams.
//! 3. `upstream_peer`: the admitted endpoint; after a failure that may be
//!    retried, another endpoint of the same placement.
//! 4. `upstream_request_filter`: forwarding headers, `Host` policy, path
//!    rewrite and request header rules ([`crate::transform`]).
//! 5. `upstream_response_filter`: a head past the placement's
//!    `max_response_head` is refused; otherwise the outcome is recorded on
//!    the breaker and passive health of the endpoint that answered.
//! 6. `response_filter`: the route's response plugins, response header
//!    rules and explainability headers.
//! 7. `fail_to_connect`, `error_while_proxy`: failed attempts are recorded and
//!    retried within the placement's bounds.
//! 8. `fail_to_proxy`: a short, explicit error response (502, 503, 504);
//!    once a final response head has gone out, the response is cut short
//!    instead.
//! 9. `logging`: metrics and the access log. The in-flight permit is released
//!    when the context drops, after the response body has ended.
//!
//! Each phase's body runs under the panic guard (`guard`): a panic fails
//! only its own request.

mod bodies;
pub mod connections;
pub mod drain;
mod guard;
mod plugins;
mod respond;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::header::{HeaderName, CONTENT_LENGTH, HOST};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{ErrorSource, ErrorType};

use crate::config::{FailureKind, HostHeader};
use crate::control::Plugins;
use crate::plugins::chain;
use crate::plugins::registry::PluginMap;
use crate::resilience::admission::{self, Denied, FailoverReason, Outcome};
use crate::resilience::breaker::{Admission, CircuitState, Transition};
use crate::resilience::placement::{EndpointSpec, FailureSet, PlacementSpec};
use crate::resilience::state::{self, Slot};
use crate::resilience::{coalesce, grpc, limits};
use crate::routing::{self, Decision, PlacementId, RequestView, RouteSpec, RouteTarget};
use crate::snapshot::Snapshot;
use crate::telemetry::access_log::{self, AccessRecord};
use crate::telemetry::metrics::Metrics;
use crate::tls::acme::Http01Responses;
use crate::transform::forwarding;

// The headers Sluice writes are named by parsed `HeaderName`s, which
// Pingora inserts without parsing them again.

/// Response header naming the placement that served the request.
pub const X_ROUTED_TO: HeaderName = HeaderName::from_static("x-routed-to");
/// Response header saying why that placement was chosen.
pub const X_ROUTE_REASON: HeaderName = HeaderName::from_static("x-route-reason");
/// Response header naming the endpoint that served the request.
pub const X_UPSTREAM: HeaderName = HeaderName::from_static("x-upstream");
/// Response header saying why the routed placement was skipped.
pub const X_FAILOVER_REASON: HeaderName = HeaderName::from_static("x-failover-reason");
/// Response header with the breaker state of the endpoint used.
pub const X_CIRCUIT_STATE: HeaderName = HeaderName::from_static("x-circuit-state");

/// The live configuration: the current snapshot, replaced atomically on reload.
pub type LiveSnapshot = Arc<ArcSwap<Snapshot>>;

/// The proxy service.
pub struct SluiceProxy {
    live: LiveSnapshot,
    metrics: Arc<Metrics>,
    plugins: Plugins,
    /// The pending ACME HTTP-01 answers, when ACME is configured.
    http01: Option<Http01Responses>,
    /// The requests being handled, for a stopping server to wait on.
    requests: drain::RequestsInFlight,
    /// Requests in flight that identical ones may follow.
    coalescer: Arc<coalesce::Coalescer>,
}

impl SluiceProxy {
    /// A proxy serving whatever snapshot `live` holds when each request starts.
    pub fn new(live: LiveSnapshot, metrics: Arc<Metrics>, plugins: Plugins) -> Self {
        guard::install_panic_hook();
        Self {
            live,
            metrics,
            plugins,
            http01: None,
            requests: drain::RequestsInFlight::default(),
            coalescer: Arc::default(),
        }
    }

    /// Counts this proxy's requests in `requests`, which other proxy
    /// services may share.
    pub fn with_requests_in_flight(mut self, requests: drain::RequestsInFlight) -> Self {
        self.requests = requests;
        self
    }

    /// Answers `GET /.well-known/acme-challenge/<token>` on plain-HTTP
    /// listeners from `answers` while the token's challenge is pending,
    /// before any route or redirect applies.
    pub fn with_http01(mut self, answers: Http01Responses) -> Self {
        self.http01 = Some(answers);
        self
    }

    fn transition(
        &self,
        placement: &PlacementSpec,
        endpoint: &EndpointSpec,
        transition: Transition,
    ) {
        self.metrics
            .breaker_transition(&placement.name, &endpoint.id, transition);
    }

    /// Settles the current attempt with its outcome.
    fn record(&self, ctx: &mut RequestCtx, outcome: Outcome) {
        let Some(admission) = ctx.attempt.take() else {
            return;
        };
        let (Some(placement), Some(endpoint)) = (ctx.placement(), ctx.endpoint()) else {
            return;
        };
        self.record_outcome(placement, endpoint, admission, outcome);
    }

    /// Records `outcome` on `endpoint`'s breaker and passive health, and
    /// counts it.
    fn record_outcome(
        &self,
        placement: &PlacementSpec,
        endpoint: &EndpointSpec,
        admission: Admission,
        outcome: Outcome,
    ) {
        if let Outcome::Failure(kind) = outcome {
            self.metrics
                .upstream_errors
                .with_label_values(&[&placement.name, &endpoint.id, kind.as_str()])
                .inc();
        }
        let (transition, marked_down) =
            admission::record(placement, endpoint, admission, outcome, Instant::now());
        if let Some(transition) = transition {
            self.transition(placement, endpoint, transition);
        }
        if marked_down {
            tracing::warn!(placement = %placement.name, endpoint = %endpoint.id, "endpoint marked down by failed requests");
        }
    }
}

/// Per-request state, carried from phase to phase.
pub struct RequestCtx {
    /// Counts the request among those a stopping server waits for, until
    /// the context drops.
    _in_flight: drain::InFlight,
    started: Instant,
    snapshot: Option<Arc<Snapshot>>,
    decision: Option<Decision>,
    /// The placement serving the request (after any failover).
    placement: Option<PlacementId>,
    endpoint: Option<usize>,
    /// The breaker admission of the attempt in progress; `None` once settled.
    attempt: Option<Admission>,
    failover: Option<FailoverReason>,
    /// The breaker state reported when no endpoint was used.
    circuit: Option<CircuitState>,
    failed_endpoints: Vec<usize>,
    retries: u32,
    body_bytes: u64,
    body_too_large: bool,
    /// How the request and response bodies are held for body hooks.
    request_body: bodies::BodyHold,
    response_body: bodies::BodyHold,
    /// Whether a body hook's plugin failed the request: not the upstream's fault.
    failed_by_plugin: bool,
    request_id: String,
    client_host: String,
    /// Whether this request holds a slot of its placement's in-flight count.
    holds_placement_slot: bool,
    /// The endpoint whose in-flight count this request holds a slot of.
    counted_endpoint: Option<usize>,
    /// Whether the upstream's final response head was accepted: from then
    /// on the response is under way and cannot be retried or replaced.
    upstream_head_seen: bool,
    /// Whether the attempt waits for a gRPC status in the trailers to be
    /// settled.
    grpc_status_pending: bool,
    /// The plugin versions loaded when the request was routed, if its
    /// route attaches any: every hook of the request runs on them, even if
    /// a plugin file is swapped meanwhile.
    plugins: Option<Arc<PluginMap>>,
    /// When the request leads identical ones, what it shares with them.
    coalesce: Option<(coalesce::Leader, coalesce::CoalesceSpec)>,
}

impl Drop for RequestCtx {
    /// Gives back the in-flight slots and any probe slot: the context
    /// drops after the response body has ended and the request was logged.
    fn drop(&mut self) {
        // An attempt still unsettled here ended without an outcome (a
        // panic unwound past it): its half-open probe slot goes back, or
        // the breaker would wait for that probe forever.
        if let (Some(admission), Some(endpoint)) = (self.attempt.take(), self.endpoint()) {
            endpoint.state.breaker.release(admission);
        }
        if self.holds_placement_slot {
            if let Some(placement) = self.placement() {
                state::release(&placement.state.in_flight);
            }
        }
        self.release_endpoint_slot();
    }
}

impl RequestCtx {
    fn new(in_flight: drain::InFlight) -> Self {
        Self {
            _in_flight: in_flight,
            started: Instant::now(),
            snapshot: None,
            decision: None,
            placement: None,
            endpoint: None,
            attempt: None,
            failover: None,
            circuit: None,
            failed_endpoints: Vec::new(),
            retries: 0,
            body_bytes: 0,
            body_too_large: false,
            request_body: bodies::BodyHold::Stream,
            response_body: bodies::BodyHold::Stream,
            failed_by_plugin: false,
            request_id: String::new(),
            client_host: String::new(),
            holds_placement_slot: false,
            counted_endpoint: None,
            upstream_head_seen: false,
            grpc_status_pending: false,
            coalesce: None,
            plugins: None,
        }
    }

    /// Starts the request on `snapshot`: its id (the client's, or a new
    /// one) and the host it asked for.
    fn begin(&mut self, request: &RequestHeader, snapshot: Arc<Snapshot>) {
        self.request_id = forwarding::request_id(
            request
                .headers
                .get(forwarding::REQUEST_ID)
                .map(|v| v.as_bytes()),
        );
        self.client_host = request_host(request).to_string();
        self.snapshot = Some(snapshot);
    }

    /// Takes what admission granted: the placement and endpoint, the
    /// breaker's admission, and the in-flight slots, held until the context
    /// drops.
    fn admitted(&mut self, granted: admission::Granted<'_>) {
        self.placement = Some(granted.placement);
        self.endpoint = Some(granted.endpoint);
        self.attempt = Some(granted.admission);
        self.failover = granted.failover;
        granted.placement_slot.detach();
        granted.endpoint_slot.detach();
        self.holds_placement_slot = true;
        self.counted_endpoint = Some(granted.endpoint);
    }

    /// Notes why admission refused, for the explainability headers.
    fn denied(&mut self, denied: Denied, placements: &[PlacementSpec]) {
        match denied {
            Denied::Full {
                placement,
                failover,
            } => {
                self.placement = Some(placement);
                self.failover = failover;
                self.circuit = placements
                    .get(placement)
                    .map(|p| admission::most_open_state(p, Instant::now()));
            }
            Denied::Unavailable {
                placement,
                reason,
                circuit,
            } => {
                self.placement = Some(placement);
                self.failover = Some(reason);
                self.circuit = Some(circuit);
            }
        }
    }

    /// Moves this request's endpoint slot to `endpoint` of its placement.
    fn count_endpoint(&mut self, endpoint: usize) {
        self.release_endpoint_slot();
        let counted = match self.placement().and_then(|p| p.endpoints.get(endpoint)) {
            Some(spec) => Slot::acquire(&spec.state.in_flight, None)
                .map(Slot::detach)
                .is_some(),
            None => false,
        };
        if counted {
            self.counted_endpoint = Some(endpoint);
        }
    }

    fn release_endpoint_slot(&mut self) {
        if let Some(endpoint) = self.counted_endpoint.take() {
            if let Some(endpoint) = self.placement().and_then(|p| p.endpoints.get(endpoint)) {
                state::release(&endpoint.state.in_flight);
            }
        }
    }

    pub(super) fn route(&self) -> Option<&RouteSpec> {
        let (snapshot, decision) = (self.snapshot.as_ref()?, self.decision.as_ref()?);
        snapshot.routes.get(decision.route)
    }

    pub(super) fn placement(&self) -> Option<&PlacementSpec> {
        self.snapshot.as_ref()?.placements.get(self.placement?)
    }

    /// The failure kinds the serving placement counts.
    fn failure_on(&self) -> FailureSet {
        self.placement()
            .map_or_else(FailureSet::default, |p| p.failure_on)
    }

    pub(super) fn endpoint(&self) -> Option<&EndpointSpec> {
        self.placement()?.endpoints.get(self.endpoint?)
    }

    /// The placement and endpoint serving the request, empty when none.
    fn served_by(&self) -> (&str, &str) {
        (
            self.placement().map_or("", |p| &*p.name),
            self.endpoint().map_or("", |e| &*e.id),
        )
    }

    /// What `route`'s plugins read of the request besides its header, with
    /// `routing_key` as the request has it at that point.
    fn plugin_facts<'a>(
        &'a self,
        route: &'a RouteSpec,
        client: Option<std::net::IpAddr>,
        routing_key: Option<&'a str>,
    ) -> chain::RequestFacts<'a> {
        chain::RequestFacts {
            authority: &self.client_host,
            client,
            route: &route.name,
            routing_key,
            request_id: &self.request_id,
        }
    }

    /// What `route`'s plugins read of the routed request, once its routing
    /// decision is made.
    fn routed_facts<'a>(
        &'a self,
        route: &'a RouteSpec,
        client: Option<std::net::IpAddr>,
    ) -> chain::RequestFacts<'a> {
        let key = self.decision.as_ref().and_then(|d| d.key.as_deref());
        self.plugin_facts(route, client, key)
    }

    /// How the request's body, or the response's, is held for body hooks.
    fn body_hold(&mut self, response: bool) -> &mut bodies::BodyHold {
        if response {
            &mut self.response_body
        } else {
            &mut self.request_body
        }
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
            let state = endpoint.state.breaker.state(Instant::now());
            let _ = response.insert_header(X_CIRCUIT_STATE, state.as_str());
        } else if let Some(circuit) = self.circuit {
            let _ = response.insert_header(X_CIRCUIT_STATE, circuit.as_str());
        }
        if let Some(reason) = self.failover {
            let _ = response.insert_header(X_FAILOVER_REASON, reason.as_str());
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

/// How a transport error counts against an endpoint.
fn failure_kind(e: &Error) -> FailureKind {
    match e.etype() {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            FailureKind::Timeout
        }
        ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::TLSHandshakeFailure => FailureKind::Connect,
        ErrorType::InvalidHTTPHeader
        | ErrorType::H1Error
        | ErrorType::InvalidH2
        | ErrorType::H2Error => FailureKind::InvalidResponse,
        _ => FailureKind::Reset,
    }
}

impl SluiceProxy {
    /// Phase 1: route, run the request plugins, decide the placement and
    /// admit the request. `Ok(true)` when the request was answered here.
    async fn route_request(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let snapshot = self.live.load_full();
        ctx.begin(session.req_header(), snapshot.clone());
        if let Err(refused) =
            limits::check_request_head(session.req_header(), &snapshot.head_limits)
        {
            self.metrics
                .refused_heads
                .with_label_values(&[refused.limit])
                .inc();
            // The connection is not reused: what follows the head is not
            // worth reading.
            session.set_keepalive(None);
            respond::text(session, ctx, refused.status, &refused.message).await?;
            return Ok(true);
        }
        // A connection the client keeps open waits at most this long for
        // its next request (HTTP/1; HTTP/2's idle timeout is the service's).
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(snapshot.keepalive_timeout.as_secs().max(1)));
            // Requests a client sends before reading the answers to the
            // earlier ones are answered in turn, as nginx does, instead of
            // closing the connection after the first.
            session.set_pipelining_enabled(true);
        }
        // A client pausing longer than this between two reads of its body
        // loses the request.
        session.set_read_timeout(Some(snapshot.body_read_timeout));
        let request = session.req_header();
        if let Some(answer) = self.http01.as_ref().and_then(|answers| {
            answers.answer_for(&request.method, request.uri.path(), is_tls(session))
        }) {
            respond::acme_challenge(session, answer).await?;
            return Ok(true);
        }
        // Only routes bound to listeners need to know which one this is.
        let listener = snapshot
            .index
            .is_scoped()
            .then(|| session.server_addr().and_then(|a| a.as_inet()).copied())
            .flatten()
            .and_then(|local| {
                crate::support::net::listening_on(
                    snapshot.listeners.iter().map(|l| l.address),
                    local,
                )
            });
        let view = RequestView {
            host: &ctx.client_host,
            path: request.uri.path(),
            query: request.uri.query(),
            headers: &request.headers,
            listener,
        };
        let Some(route) = snapshot.index.find(view.host, view.path, view.listener) else {
            let (status, message) = routing::Refusal::NoRoute.answer();
            respond::text(session, ctx, status, message).await?;
            return Ok(true);
        };
        let key = routing::routing_key(&snapshot.routes, route, &view);
        // As the client declared it, before plugins see the headers.
        let declared_body = request
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        // The index only returns routes of its own snapshot.
        let Some(route_spec) = snapshot.routes.get(route) else {
            respond::text(session, ctx, 500, "the route index and its routes disagree").await?;
            return Ok(true);
        };
        let traffic = snapshot.traffic.get(route);
        // Before any plugin runs: a limited client costs one estimate.
        if let Some(limit) = traffic.and_then(|t| t.rate_limit.as_ref()) {
            if let Err(limited) = limit.check(&view, client_ip(session), key.as_deref()) {
                self.metrics
                    .rate_limited
                    .with_label_values(&[&route_spec.name])
                    .inc();
                let message = format!(
                    "more than {} requests per {}",
                    limit.requests,
                    humantime::format_duration(limit.per)
                );
                respond::too_many_requests(session, ctx, &message, limited.retry_after).await?;
                return Ok(true);
            }
        }
        if route_spec.redirect_https && !is_tls(session) {
            respond::redirect_to_https(session, ctx).await?;
            return Ok(true);
        }
        if let Some(coalesce) = traffic.and_then(|t| t.coalesce.as_ref()) {
            if self
                .coalesce(session, ctx, route_spec, coalesce, key.as_deref())
                .await?
            {
                return Ok(true);
            }
        }
        if let RouteTarget::Respond(answer) = &route_spec.target {
            respond::answer(session, ctx, answer, &route_spec.response_headers).await?;
            return Ok(true);
        }
        let Some(decision) = self
            .decide(session, ctx, &snapshot, (route, route_spec), key)
            .await?
        else {
            return Ok(true);
        };
        if let Some(plugins) = ctx.plugins.clone() {
            match bodies::plan_request(&plugins, &route_spec.plugins, session.req_header()) {
                Ok(hold) => ctx.request_body = hold,
                Err(limit) => {
                    ctx.body_too_large = true;
                    respond::text(session, ctx, 413, &bodies::too_large(limit)).await?;
                    return Ok(true);
                }
            }
        }
        self.admit(session, ctx, &snapshot, decision, declared_body)
            .await
    }

    /// Joins the request to its identical ones in flight on `route`. A
    /// follower is answered here, from its leader's response (`Ok(true)`),
    /// unless it waited too long or the response may not be shared; a
    /// leader goes on, and shares its response as it is sent.
    async fn coalesce(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        route: &RouteSpec,
        spec: &coalesce::CoalesceSpec,
        routing_key: Option<&str>,
    ) -> Result<bool> {
        let identity = coalesce::RequestIdentity {
            route: &route.name,
            tls: is_tls(session),
            host: &ctx.client_host,
            routing_key,
        };
        let Some(key) = spec.key(&identity, session.req_header()) else {
            return Ok(false);
        };
        let role = match self.coalescer.join(key, spec.buffer) {
            coalesce::Joined::Leader(leader) => {
                ctx.coalesce = Some((leader, spec.clone()));
                "leader"
            }
            coalesce::Joined::Follower(mut follower) => match follower.head(spec.wait).await {
                Some(head) => {
                    self.metrics
                        .coalesced
                        .with_label_values(&[&route.name, "follower"])
                        .inc();
                    respond::follow(session, ctx, head, follower).await?;
                    return Ok(true);
                }
                None => "alone",
            },
        };
        self.metrics
            .coalesced
            .with_label_values(&[&route.name, role])
            .inc();
        Ok(false)
    }

    /// The plugins loaded now, when `route` attaches any: one snapshot, so
    /// that a request's hooks look plugins up without going through the
    /// registry each time.
    fn plugins_of(&self, route: &RouteSpec) -> Option<Arc<PluginMap>> {
        if route.plugins.is_empty() {
            None
        } else {
            self.plugins
                .load()
                .as_ref()
                .map(|registry| registry.current())
        }
    }

    /// The routing decision for `route`: the request plugins may answer,
    /// set the routing key or choose the placement, then the route's table
    /// decides, then its placement-policy plugins. `None` when the request
    /// was answered instead.
    async fn decide(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        snapshot: &Snapshot,
        (route, route_spec): (usize, &RouteSpec),
        mut key: Option<String>,
    ) -> Result<Option<Decision>> {
        ctx.plugins = self.plugins_of(route_spec);
        let registry = ctx.plugins.clone();
        let client = client_ip(session);
        // Only plugins choose among the candidates: a route without any
        // does not list them.
        let candidates = match registry {
            Some(_) => routing::candidates(&snapshot.routes, route),
            None => Vec::new(),
        };
        let named = |name: &str| {
            candidates.iter().copied().find(|id| {
                snapshot
                    .placements
                    .get(*id)
                    .is_some_and(|placement| *placement.name == *name)
            })
        };
        let mut chosen_placement = None;
        if let Some(registry) = &registry {
            let facts = ctx.plugin_facts(route_spec, client, key.as_deref());
            match chain::on_request(
                registry,
                &self.metrics.plugins,
                &route_spec.plugins,
                &facts,
                session.req_header_mut(),
                |name| named(name).is_some(),
            ) {
                chain::RequestOutcome::Continue {
                    routing_key,
                    placement,
                } => {
                    key = routing_key.or(key);
                    chosen_placement = placement.and_then(|name| named(&name));
                }
                chain::RequestOutcome::Respond(response) => {
                    respond::immediate(session, ctx, response).await?;
                    return Ok(None);
                }
                chain::RequestOutcome::Fail(status) => {
                    // The failure's detail is in the log; the client learns only that it happened.
                    respond::text(session, ctx, status, "a plugin on this route failed").await?;
                    return Ok(None);
                }
            }
        }
        let mut decision = match routing::resolve(&snapshot.routes, route, key) {
            Ok(decision) => decision,
            Err(refusal) => {
                let (status, message) = refusal.answer();
                respond::text(session, ctx, status, message).await?;
                return Ok(None);
            }
        };
        if let Some(id) = chosen_placement {
            decision.chosen_by_policy(id);
        }
        if let Some(registry) = &registry {
            let facts = ctx.plugin_facts(route_spec, client, decision.key.as_deref());
            let chosen = chain::select_placement(
                registry,
                &self.metrics.plugins,
                &route_spec.plugins,
                &facts,
                session.req_header(),
                || plugins::describe(snapshot, &candidates),
            );
            match chosen.map(|name| name.and_then(|name| named(&name))) {
                Ok(Some(id)) => decision.chosen_by_policy(id),
                Ok(None) => {}
                Err(status) => {
                    respond::text(session, ctx, status, "a plugin on this route failed").await?;
                    return Ok(None);
                }
            }
        }
        Ok(Some(decision))
    }

    /// Admission: the decided placement or its fallbacks take the request
    /// under their breakers, health and limits, and the declared body must
    /// fit. `Ok(true)` when the request was answered instead (429, 503, 413).
    async fn admit(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        snapshot: &Snapshot,
        decision: Decision,
        declared_body: Option<u64>,
    ) -> Result<bool> {
        let routed = decision.placement;
        let admitted = admission::admit(
            &snapshot.placements,
            routed,
            routing::route_default(&snapshot.routes, decision.route),
            decision.key.as_deref().map(str::as_bytes),
            Instant::now(),
            &mut |p, e, t| self.transition(p, e, t),
        );
        ctx.decision = Some(decision);
        match admitted {
            Ok(granted) => {
                if let Some(reason) = granted.failover {
                    let name =
                        |id: PlacementId| snapshot.placements.get(id).map_or("", |p| &*p.name);
                    self.metrics
                        .failovers
                        .with_label_values(&[
                            name(routed),
                            name(granted.placement),
                            reason.as_str(),
                        ])
                        .inc();
                }
                ctx.admitted(granted);
            }
            Err(denied) => {
                ctx.denied(denied, &snapshot.placements);
                let message = denied.message(&snapshot.placements);
                respond::text(session, ctx, denied.status(), &message).await?;
                return Ok(true);
            }
        }
        let max_body = ctx.placement().and_then(|p| p.max_body);
        if let Err(refused) = limits::check_body(max_body, declared_body.unwrap_or(0)) {
            ctx.body_too_large = true;
            self.release_attempt(ctx);
            // No endpoint was used: the answer names none.
            ctx.release_endpoint_slot();
            ctx.endpoint = None;
            respond::text(session, ctx, 413, &refused).await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn check_request_body(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(chunk) = body {
            ctx.body_bytes += chunk.len() as u64;
            let max_body = ctx.placement().and_then(|p| p.max_body);
            if let Err(refused) = limits::check_body(max_body, ctx.body_bytes) {
                ctx.body_too_large = true;
                return Error::e_explain(HTTPStatus(413), refused);
            }
        }
        let held = self.hold_body_chunk(session, ctx, false, body, end_of_stream);
        match held {
            bodies::Held::Continue => Ok(()),
            bodies::Held::TooLarge(limit) => {
                ctx.body_too_large = true;
                Error::e_explain(HTTPStatus(413), bodies::too_large(limit))
            }
            bodies::Held::Fail(status) => {
                ctx.failed_by_plugin = true;
                Error::e_explain(HTTPStatus(status), "a plugin on this route failed")
            }
        }
    }

    async fn pick_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        if ctx.attempt.is_none() {
            // A retry: the previous attempt failed and was settled.
            let placement = ctx
                .placement()
                .ok_or_else(|| Error::explain(InternalError, "no placement admitted"))?;
            let key = ctx
                .decision
                .as_ref()
                .and_then(|d| d.key.as_deref())
                .map(str::as_bytes);
            let picked = admission::pick_endpoint(
                placement,
                key,
                Instant::now(),
                &ctx.failed_endpoints,
                &mut |e, t| self.transition(placement, e, t),
            );
            match picked {
                Ok((endpoint, admission)) => {
                    ctx.endpoint = Some(endpoint);
                    ctx.count_endpoint(endpoint);
                    ctx.attempt = Some(admission);
                }
                Err(reason) => {
                    return Error::e_explain(
                        ConnectNoRoute,
                        format!(
                            "no other endpoint of placement {} to retry on ({})",
                            placement.name,
                            reason.as_str()
                        ),
                    );
                }
            }
        }
        let endpoint = ctx
            .endpoint()
            .ok_or_else(|| Error::explain(InternalError, "no endpoint admitted"))?;
        let mut peer = Box::new(endpoint.peer.clone());
        peer.group_key = endpoint.lanes.group_key();
        Ok(peer)
    }

    fn on_connect_failure(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        self.record(ctx, Outcome::Failure(failure_kind(&e)));
        if let Some(endpoint) = ctx.endpoint {
            ctx.failed_endpoints.push(endpoint);
        }
        let (endpoints, attempts) = ctx
            .placement()
            .map_or((0, 0), |p| (p.endpoints.len(), p.connect_attempts as usize));
        let tried = ctx.failed_endpoints.len();
        e.set_retry(tried < attempts && tried < endpoints);
        e
    }

    fn on_proxy_error(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        // Pingora leaves some errors' retry to depend on whether the
        // connection was a reused one; it must be decided before it is read.
        e.retry.decide_reuse(client_reused);
        let upstream_failure =
            e.esource() == &ErrorSource::Upstream && !ctx.body_too_large && !ctx.failed_by_plugin;
        if ctx.upstream_head_seen {
            // The response is under way: its head has been judged and may
            // have gone out, so the request cannot be tried again, and the
            // break counts against the endpoint on top of that judgement.
            if upstream_failure {
                self.record_broken_response(ctx, failure_kind(&e));
            }
            e.set_retry(false);
            return e;
        }
        // A reused pooled connection that breaks is most likely one the
        // upstream closed while idle: not the endpoint's fault.
        let stale_connection = client_reused && e.retry();
        if upstream_failure && !stale_connection {
            self.record(ctx, Outcome::Failure(failure_kind(&e)));
        } else {
            self.release_attempt(ctx);
        }
        let idempotent = session.req_header().method.is_idempotent();
        let bodiless = ctx.body_bytes == 0 && !session.as_ref().retry_buffer_truncated();
        let configured = ctx.placement().map_or(0, |p| p.retry_attempts);
        // With no other endpoint left, the failure stands as it is (a timeout
        // stays a 504) rather than becoming "nothing to retry on".
        let untried = ctx.placement().map_or(0, |p| p.endpoints.len())
            > ctx.failed_endpoints.len() + usize::from(upstream_failure);
        let retry = idempotent
            && bodiless
            && (stale_connection || (upstream_failure && untried && ctx.retries < configured));
        if retry && !stale_connection {
            ctx.retries += 1;
            if let Some(endpoint) = ctx.endpoint {
                ctx.failed_endpoints.push(endpoint);
            }
        }
        e.set_retry(retry);
        e
    }

    async fn prepare_upstream_request(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let client_ip = client_ip(session);
        let scheme = if is_tls(session) { "https" } else { "http" };
        forwarding::set_forwarded(upstream, client_ip, scheme, &ctx.client_host);
        upstream.insert_header(forwarding::REQUEST_ID, ctx.request_id.as_str())?;
        if let (Some(placement), Some(endpoint)) = (ctx.placement(), ctx.endpoint()) {
            if placement.host_header == HostHeader::Endpoint {
                upstream.insert_header(HOST, endpoint.authority.clone())?;
            }
        }
        bodies::reframe_request(&ctx.request_body, upstream);
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
        route.request_headers.apply(upstream);
        Ok(())
    }

    async fn check_upstream_response(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(placement) = ctx.placement() {
            if let Err(refused) = limits::check_response_head(response, placement.max_response_head)
            {
                return Err(Error::explain(InvalidHTTPHeader, refused).into_up());
            }
        }
        // An interim answer (100 Continue, 103 Early Hints) settles
        // nothing: the final head, or a failure, is still to come.
        if !is_final_head(response) {
            return Ok(());
        }
        ctx.upstream_head_seen = true;
        let outcome = if response.status.is_server_error() {
            Outcome::Failure(FailureKind::ServerError)
        } else if grpc::is_grpc(&response.headers) {
            match grpc::status(&response.headers) {
                Some(code) => grpc::outcome(Some(code), ctx.failure_on()),
                None => {
                    // A gRPC call's status comes in the trailers, once
                    // its replies have streamed. A half-open probe is
                    // settled by its head: a long stream must not hold the
                    // breaker's probe slot; its trailers still count.
                    if matches!(ctx.attempt, Some(Admission::Probe)) {
                        self.record(ctx, Outcome::Success);
                    }
                    ctx.grpc_status_pending = true;
                    return Ok(());
                }
            }
        } else {
            Outcome::Success
        };
        self.record(ctx, outcome);
        Ok(())
    }

    async fn prepare_response(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let mut hold = bodies::BodyHold::Stream;
        if let Some(route) = ctx.route() {
            if let Some(registry) = ctx.plugins.clone() {
                let request = session.req_header();
                chain::on_response(
                    &registry,
                    &self.metrics.plugins,
                    &route.plugins,
                    &ctx.routed_facts(route, client_ip(session)),
                    ctx.served_by(),
                    request,
                    response,
                );
                hold = bodies::plan_response(
                    (&registry, &self.metrics.plugins),
                    &route.plugins,
                    request,
                    response,
                    !session.is_http2(),
                );
            }
            route.response_headers.apply(response);
        }
        ctx.response_body = hold;
        ctx.explain(response);
        if let Some((leader, spec)) = ctx.coalesce.as_mut().filter(|_| is_final_head(response)) {
            let bodiless = session.req_header().method == http::Method::HEAD
                || matches!(response.status.as_u16(), 204 | 304);
            leader.head(response, spec.shareable(response), bodiless);
        }
        Ok(())
    }

    /// Runs one chunk of the request's (or the response's) body through
    /// its hold, with the route and plugins it is held for. A body that is
    /// not held costs one check.
    fn hold_body_chunk(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        response: bool,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
    ) -> bodies::Held {
        if matches!(ctx.body_hold(response), bodies::BodyHold::Stream) {
            return bodies::Held::Continue;
        }
        let mut hold = std::mem::take(ctx.body_hold(response));
        let held = match (ctx.route(), ctx.plugins.clone()) {
            (Some(route), Some(registry)) => bodies::hold_chunk(
                &mut hold,
                body,
                end_of_stream,
                &bodies::HookScope {
                    plugins: (&registry, &self.metrics.plugins),
                    attachments: &route.plugins,
                    facts: ctx.routed_facts(route, client_ip(session)),
                    request: session.req_header(),
                    served_by: ctx.served_by(),
                },
            ),
            _ => bodies::Held::Continue,
        };
        *ctx.body_hold(response) = hold;
        held
    }

    /// Holds a response body chunk for the route's body hooks.
    fn hold_response_body(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let held = self.hold_body_chunk(session, ctx, true, body, end_of_stream);
        match held {
            bodies::Held::Continue => {
                if let Some((leader, _)) = ctx.coalesce.as_mut() {
                    if let Some(chunk) = body.as_ref().filter(|chunk| !chunk.is_empty()) {
                        leader.chunk(chunk);
                    }
                    if end_of_stream {
                        leader.end();
                    }
                }
                Ok(())
            }
            bodies::Held::TooLarge(_) | bodies::Held::Fail(_) => {
                ctx.failed_by_plugin = true;
                Error::e_explain(
                    InternalError,
                    "a plugin on this route failed the response body; it is cut short",
                )
            }
        }
    }

    async fn answer_failure(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        self.release_attempt(ctx);
        if session.response_written().is_some_and(is_final_head) {
            self.abort_response(session, e, ctx).await;
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
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

    /// Settles a gRPC call whose status came in its trailers.
    fn check_upstream_trailers(&self, trailers: &http::HeaderMap, ctx: &mut RequestCtx) {
        if std::mem::take(&mut ctx.grpc_status_pending) {
            let outcome = grpc::outcome(grpc::status(trailers), ctx.failure_on());
            match (ctx.attempt.is_some(), outcome) {
                (true, outcome) => self.record(ctx, outcome),
                (false, Outcome::Failure(kind)) => self.record_broken_response(ctx, kind),
                (false, Outcome::Success) => {}
            }
        }
    }

    async fn log_request(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        // A gRPC response that ended well without trailers has no status
        // to count against its endpoint.
        if std::mem::take(&mut ctx.grpc_status_pending) && e.is_none() {
            self.record(ctx, Outcome::Success);
        }
        // A response that ended with its head (no body, or trailers only)
        // never reached the body filter's end: its followers end here.
        if let (Some((leader, _)), None) = (ctx.coalesce.as_mut(), e) {
            leader.end();
        }
        self.release_attempt(ctx);
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let route = ctx.route().map(|r| &*r.name);
        let placement = ctx.placement().map(|p| &*p.name);
        let elapsed = ctx.started.elapsed();
        self.metrics.count_request(
            route.unwrap_or(""),
            placement.unwrap_or(""),
            status_label(status),
            elapsed,
        );
        if ctx.snapshot.as_ref().is_some_and(|s| s.access_log) {
            let request = session.req_header();
            access_log::write(&AccessRecord {
                // The wall-clock start, read only when a line is written:
                // a request served without the log never reads it.
                time: crate::support::time::timestamp(
                    SystemTime::now()
                        .checked_sub(elapsed)
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                ),
                request_id: &ctx.request_id,
                client: client_ip(session).map(|ip| ip.to_string()),
                method: request.method.as_str(),
                host: &ctx.client_host,
                path: request.uri.path(),
                status,
                duration_ms: access_log::millis(elapsed),
                bytes_in: ctx.body_bytes,
                bytes_out: session.body_bytes_sent(),
                route,
                placement,
                endpoint: ctx.endpoint().map(|e| &*e.id),
                route_reason: ctx.decision.as_ref().map(|d| d.reason.as_str()),
                failover_reason: ctx.failover.map(FailoverReason::as_str),
                error: e.map(|e| e.etype().as_str().to_string()),
            });
        }
    }
}

/// Runs one phase's body under the panic guard: a panic in it is logged,
/// counted, and comes back as an internal error the phase returns.
macro_rules! guarded {
    ($proxy:expr, $session:expr, $ctx:expr, $phase:literal, $body:expr) => {{
        let caught = guard::catch(async {
            let result = $body.await;
            // After the body, so that the request id and admission are in
            // place, as for a panic anywhere in the phase.
            guard::test_trigger($session.req_header(), $phase);
            result
        })
        .await;
        match caught {
            Ok(result) => result,
            Err(panic) => Err($proxy.panicked($phase, $ctx, panic)),
        }
    }};
}

#[async_trait]
impl ProxyHttp for SluiceProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx::new(self.requests.enter())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        guarded!(
            self,
            session,
            ctx,
            "request_filter",
            self.route_request(session, ctx)
        )
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        guarded!(
            self,
            session,
            ctx,
            "request_body_filter",
            self.check_request_body(session, body, end_of_stream, ctx)
        )
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        guarded!(
            self,
            session,
            ctx,
            "upstream_peer",
            self.pick_peer(session, ctx)
        )
    }

    fn upstream_response_trailer_filter(
        &self,
        _session: &mut Session,
        trailers: &mut http::HeaderMap,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        self.check_upstream_trailers(trailers, ctx);
        Ok(())
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(endpoint) = ctx.endpoint() {
            endpoint.state.pool.record(reused);
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Self::CTX,
        e: Box<Error>,
    ) -> Box<Error> {
        match guard::catch_sync(|| self.on_connect_failure(session, peer, ctx, e)) {
            Ok(e) => e,
            Err(panic) => self.panicked("fail_to_connect", ctx, panic),
        }
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Self::CTX,
        client_reused: bool,
    ) -> Box<Error> {
        match guard::catch_sync(|| self.on_proxy_error(peer, session, e, ctx, client_reused)) {
            Ok(e) => e,
            Err(panic) => self.panicked("error_while_proxy", ctx, panic),
        }
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        guarded!(
            self,
            session,
            ctx,
            "upstream_request_filter",
            self.prepare_upstream_request(session, upstream, ctx)
        )
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        guarded!(
            self,
            session,
            ctx,
            "upstream_response_filter",
            self.check_upstream_response(session, response, ctx)
        )
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        guarded!(
            self,
            session,
            ctx,
            "response_filter",
            self.prepare_response(session, response, ctx)
        )
    }

    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<std::time::Duration>> {
        match guard::catch_sync(|| self.hold_response_body(session, body, end_of_stream, ctx)) {
            Ok(result) => result.map(|()| None),
            Err(panic) => Err(self.panicked("response_body_filter", ctx, panic)),
        }
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        match guard::catch(self.answer_failure(session, e, ctx)).await {
            Ok(answer) => answer,
            Err(panic) => {
                self.panicked("fail_to_proxy", ctx, panic);
                FailToProxy {
                    error_code: 0,
                    can_reuse_downstream: false,
                }
            }
        }
    }

    /// The request as Pingora's error log shows it: method, path and host,
    /// never the query string, which may carry tokens.
    fn request_summary(&self, session: &Session, ctx: &Self::CTX) -> String {
        let request = session.req_header();
        format!(
            "{} {}, Host: {}",
            request.method,
            request.uri.path(),
            ctx.client_host
        )
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        let caught = guard::catch(async {
            self.log_request(session, e, ctx).await;
            guard::test_trigger(session.req_header(), "logging");
        })
        .await;
        if let Err(panic) = caught {
            self.panicked("logging", ctx, panic);
        }
    }
}

impl SluiceProxy {
    /// Reports a panic caught in `phase`: one log line with the request id,
    /// a count in `sluice_panics_total`, and the internal error the phase
    /// returns instead, never to be retried. Pingora then answers 500 when
    /// nothing was sent yet, and cuts the response short otherwise.
    fn panicked(
        &self,
        phase: &'static str,
        ctx: &mut RequestCtx,
        panic: guard::Panicked,
    ) -> Box<Error> {
        self.metrics.panics.with_label_values(&[phase]).inc();
        tracing::error!(request_id = %ctx.request_id, phase, panic = %panic, "a request phase panicked; the request fails with an internal error");
        self.release_attempt(ctx);
        let mut e = Error::explain(InternalError, format!("a panic in {phase}"));
        e.set_retry(false);
        e
    }

    /// Ends a response whose head has gone out and that cannot be finished:
    /// an error text now would read as part of the body, so the client must
    /// see the response cut short instead. An HTTP/1 connection is closed,
    /// an HTTP/2 stream reset.
    async fn abort_response(&self, session: &mut Session, e: &Error, ctx: &RequestCtx) {
        if e.esource() == &ErrorSource::Upstream {
            let placement = ctx.placement().map_or("", |p| &*p.name);
            self.metrics
                .aborted_responses
                .with_label_values(&[placement])
                .inc();
            tracing::warn!(
                request_id = %ctx.request_id,
                placement,
                endpoint = ctx.endpoint().map_or("", |e| &*e.id),
                error = %e,
                "the response was cut short: it failed after its head had been sent"
            );
        }
        session.shutdown().await;
    }

    /// Counts a failure that broke a response after its head was judged,
    /// against the endpoint that sent it: its breaker and passive health
    /// see the head's outcome and then this one.
    fn record_broken_response(&self, ctx: &RequestCtx, kind: FailureKind) {
        let (Some(placement), Some(endpoint)) = (ctx.placement(), ctx.endpoint()) else {
            return;
        };
        self.record_outcome(
            placement,
            endpoint,
            Admission::Normal,
            Outcome::Failure(kind),
        );
    }

    /// Gives back an unsettled attempt's probe slot without an outcome.
    fn release_attempt(&self, ctx: &mut RequestCtx) {
        if let (Some(admission), Some(endpoint)) = (ctx.attempt.take(), ctx.endpoint()) {
            endpoint.state.breaker.release(admission);
        }
    }
}

/// The status as a metric label, from a table built once, so counting a
/// request does not format a number.
fn status_label(status: u16) -> &'static str {
    static LABELS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let labels = LABELS.get_or_init(|| (0..600).map(|code| code.to_string()).collect());
    labels
        .get(usize::from(status))
        .map_or("other", String::as_str)
}

/// The client's IP address, for a TCP connection.
fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// Whether a response head is the final one: not an interim 1xx, except
/// 101, after which the connection carries the upgraded protocol.
fn is_final_head(head: &ResponseHeader) -> bool {
    !head.status.is_informational() || head.status == http::StatusCode::SWITCHING_PROTOCOLS
}

/// Whether the client connection is TLS.
fn is_tls(session: &Session) -> bool {
    session
        .digest()
        .is_some_and(|digest| digest.ssl_digest.is_some())
}
