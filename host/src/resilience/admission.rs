//! Admission: which placement and endpoint serve a request, given health,
//! breakers and concurrency limits, following fallback chains.
//!
//! The chain starts at the routed placement, follows each placement's
//! `fallback`, and ends with the route's default placement. Each placement
//! is tried once. A placement is skipped when it is full and fails over on
//! its limit (`concurrency_limit`), or when none of its endpoints is healthy
//! (`unhealthy`) or admitted by its breaker (`circuit_open`). The first
//! skip's reason is the one reported in `X-Failover-Reason`.

use std::time::Instant;

use super::breaker::{Admission, CircuitState, Transition};
use super::placement::{EndpointSpec, PlacementSpec};
use super::state::Slot;
use crate::config::{FailureKind, OnLimit};
use crate::routing::PlacementId;

/// Why a placement was skipped, as reported in `X-Failover-Reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailoverReason {
    /// Every healthy endpoint's breaker refused.
    CircuitOpen,
    /// No endpoint is healthy.
    Unhealthy,
    /// The placement is at its concurrency limit and fails over on it.
    ConcurrencyLimit,
    /// None of the names its endpoints are written with resolves.
    Unresolved,
}

impl FailoverReason {
    /// The header and label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CircuitOpen => "circuit_open",
            Self::Unhealthy => "unhealthy",
            Self::ConcurrencyLimit => "concurrency_limit",
            Self::Unresolved => "unresolved",
        }
    }
}

/// A request's admission to one endpoint of one placement.
#[derive(Debug)]
pub struct Granted<'s> {
    /// The placement serving the request.
    pub placement: PlacementId,
    /// The endpoint within it.
    pub endpoint: usize,
    /// What the endpoint's breaker granted.
    pub admission: Admission,
    /// The reason the routed placement was skipped, if it was.
    pub failover: Option<FailoverReason>,
    /// The placement's in-flight slot, held until the request ends.
    pub placement_slot: Slot<'s>,
    /// The endpoint's in-flight slot, held until the request ends.
    pub endpoint_slot: Slot<'s>,
}

/// Why a request cannot be admitted anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// The placement is at its concurrency limit and rejects (429).
    Full {
        /// The full placement.
        placement: PlacementId,
        /// Why the routed placement was skipped, when the full one is a fallback.
        failover: Option<FailoverReason>,
    },
    /// Every placement in the chain was skipped (503).
    Unavailable {
        /// The routed placement.
        placement: PlacementId,
        /// Why it was skipped.
        reason: FailoverReason,
        /// The most open breaker state among its endpoints.
        circuit: CircuitState,
    },
}

impl Denied {
    /// The status the client gets: 429 for a full placement, 503 when
    /// nothing in the chain could serve.
    pub fn status(self) -> u16 {
        match self {
            Self::Full { .. } => 429,
            Self::Unavailable { .. } => 503,
        }
    }

    /// The text the client gets, naming the placement.
    pub fn message(self, placements: &[PlacementSpec]) -> String {
        let name = |id: PlacementId| placements.get(id).map_or("?", |p| &*p.name);
        match self {
            Self::Full { placement, .. } => {
                format!("placement {} is at its concurrency limit", name(placement))
            }
            Self::Unavailable {
                placement, reason, ..
            } => format!(
                "no endpoint of placement {} or its fallbacks can serve ({})",
                name(placement),
                reason.as_str()
            ),
        }
    }
}

/// Admits a request routed to `routed`, following fallbacks and then
/// `route_default`. `key` is the routing key, for consistent hashing.
/// Breaker transitions caused along the way are passed to `transitions`.
pub fn admit<'s>(
    placements: &'s [PlacementSpec],
    routed: PlacementId,
    route_default: Option<PlacementId>,
    key: Option<&[u8]>,
    now: Instant,
    transitions: &mut dyn FnMut(&PlacementSpec, &EndpointSpec, Transition),
) -> Result<Granted<'s>, Denied> {
    let mut first_reason = None;
    // Fallback chains are acyclic (validated), so the walk ends; the route's
    // default is tried once at the end unless the chain already passed it.
    let mut visited: u64 = 0;
    let mut default_pending = route_default.is_some();
    let mut next = Some(routed);
    let mut steps = 0;
    while let Some(id) = next {
        steps += 1;
        if steps > placements.len() + 1 {
            break;
        }
        let Some(placement) = placements.get(id) else {
            break;
        };
        next = placement.fallback.or_else(|| {
            let default = route_default.filter(|_| default_pending);
            default_pending = false;
            default
        });
        let bit = 1u64.checked_shl(id as u32).unwrap_or(0);
        if visited & bit != 0 {
            continue;
        }
        visited |= bit;
        let Some(placement_slot) =
            Slot::acquire(&placement.state.in_flight, placement.max_concurrency)
        else {
            if placement.on_limit == OnLimit::Reject {
                return Err(Denied::Full {
                    placement: id,
                    failover: first_reason,
                });
            }
            first_reason.get_or_insert(FailoverReason::ConcurrencyLimit);
            continue;
        };
        match pick_endpoint(placement, key, now, &[], &mut |e, t| {
            transitions(placement, e, t)
        }) {
            Ok((endpoint, admission)) => {
                return Ok(Granted {
                    placement: id,
                    endpoint,
                    admission,
                    failover: first_reason,
                    placement_slot,
                    // The balancer picked `endpoint` among these endpoints.
                    endpoint_slot: Slot::unlimited(&placement.endpoints[endpoint].state.in_flight),
                });
            }
            Err(reason) => {
                first_reason.get_or_insert(reason);
            }
        }
    }
    Err(Denied::Unavailable {
        placement: routed,
        reason: first_reason.unwrap_or(FailoverReason::Unhealthy),
        circuit: placements
            .get(routed)
            .map_or(CircuitState::Open, |routed| most_open_state(routed, now)),
    })
}

/// Picks a healthy endpoint whose breaker admits the request, skipping
/// `exclude`. Takes a half-open probe slot when that is what admits it.
pub fn pick_endpoint(
    placement: &PlacementSpec,
    key: Option<&[u8]>,
    now: Instant,
    exclude: &[usize],
    transitions: &mut dyn FnMut(&EndpointSpec, Transition),
) -> Result<(usize, Admission), FailoverReason> {
    // Every placement is written with endpoints; it has none only while
    // their names do not resolve.
    if placement.endpoints.is_empty() {
        return Err(FailoverReason::Unresolved);
    }
    let mut admission = Admission::Normal;
    let mut any_healthy = false;
    let in_flight = |i: usize| {
        placement.endpoints.get(i).map_or(0, |e| {
            e.state.in_flight.load(std::sync::atomic::Ordering::Relaxed)
        })
    };
    let picked = placement.balancer.pick(key, in_flight, |i| {
        if exclude.contains(&i) {
            return false;
        }
        let Some(endpoint) = placement.endpoints.get(i) else {
            return false;
        };
        if !endpoint.state.health.is_healthy(now) {
            return false;
        }
        any_healthy = true;
        let (granted, transition) = endpoint.state.breaker.try_admit(now);
        if let Some(transition) = transition {
            transitions(endpoint, transition);
        }
        match granted {
            Some(granted) => {
                admission = granted;
                true
            }
            None => false,
        }
    });
    match picked {
        Some(index) => Ok((index, admission)),
        None if any_healthy => Err(FailoverReason::CircuitOpen),
        None => Err(FailoverReason::Unhealthy),
    }
}

/// The most open breaker state among a placement's endpoints.
pub fn most_open_state(placement: &PlacementSpec, now: Instant) -> CircuitState {
    placement
        .endpoints
        .iter()
        .map(|e| e.state.breaker.state(now))
        .max_by_key(|state| match state {
            CircuitState::Closed => 0,
            CircuitState::HalfOpen => 1,
            CircuitState::Open => 2,
        })
        .unwrap_or(CircuitState::Closed)
}

/// The outcome of one attempt on an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with a status below 500.
    Success,
    /// The attempt failed this way.
    Failure(FailureKind),
}

/// Records an attempt's outcome on the endpoint that made it: its breaker
/// and its passive health. Failure kinds the placement does not count are
/// recorded as successes. Returns the breaker transition, if any, and
/// whether passive health just marked the endpoint down.
pub fn record(
    placement: &PlacementSpec,
    endpoint: &EndpointSpec,
    admission: Admission,
    outcome: Outcome,
    now: Instant,
) -> (Option<Transition>, bool) {
    let success = match outcome {
        Outcome::Success => true,
        Outcome::Failure(kind) => !placement.failure_on.contains(kind),
    };
    let transition = endpoint.state.breaker.record(admission, success, now);
    let marked_down = endpoint
        .state
        .health
        .record_request(success, placement.passive, now);
    (transition, marked_down)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::resilience::state::Registry;
    use crate::snapshot::Snapshot;
    use std::sync::atomic::Ordering;

    fn snapshot(extra: &str) -> Snapshot {
        let text = format!(
            r#"[[listeners]]
address = "127.0.0.1:8080"
[placements.a]
endpoints = [{{ address = "127.0.0.1:1" }}, {{ address = "127.0.0.1:2" }}]
fallback = "b"
breaker = {{ consecutive_failures = 1, half_open_probes = 1 }}
[placements.b]
endpoints = [{{ address = "127.0.0.1:3" }}]
fallback = "c"
[placements.c]
endpoints = [{{ address = "127.0.0.1:4" }}]
{extra}
[[routes]]
placement = "a"
"#
        );
        let loaded = config::parse(&text, "t", &|_| None).unwrap();
        crate::snapshot::compile(&loaded, "t", &Registry::default()).unwrap()
    }

    fn open(placement: &PlacementSpec, endpoint: usize, now: Instant) {
        let e = &placement.endpoints[endpoint];
        record(
            placement,
            e,
            Admission::Normal,
            Outcome::Failure(FailureKind::Connect),
            now,
        );
        assert_eq!(e.state.breaker.state(now), CircuitState::Open);
    }

    fn no_transitions() -> impl FnMut(&PlacementSpec, &EndpointSpec, Transition) {
        |_, _, _| {}
    }

    #[test]
    fn healthy_placement_is_admitted_directly() {
        let s = snapshot("");
        let granted = admit(
            &s.placements,
            0,
            None,
            None,
            Instant::now(),
            &mut no_transitions(),
        )
        .unwrap();
        assert_eq!((granted.placement, granted.failover), (0, None));
        assert_eq!(s.placements[0].state.in_flight.load(Ordering::Relaxed), 1);
        drop(granted);
        assert_eq!(s.placements[0].state.in_flight.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn open_breakers_fail_over_with_circuit_open() {
        let s = snapshot("");
        let now = Instant::now();
        open(&s.placements[0], 0, now);
        let granted = admit(&s.placements, 0, None, None, now, &mut no_transitions()).unwrap();
        assert_eq!(granted.placement, 0, "one endpoint is still closed");
        open(&s.placements[0], 1, now);
        let granted = admit(&s.placements, 0, None, None, now, &mut no_transitions()).unwrap();
        assert_eq!(
            (granted.placement, granted.failover),
            (1, Some(FailoverReason::CircuitOpen))
        );
    }

    #[test]
    fn chain_is_followed_over_several_hops_then_unavailable() {
        let s = snapshot("");
        let now = Instant::now();
        open(&s.placements[0], 0, now);
        open(&s.placements[0], 1, now);
        let b = &s.placements[1];
        let settings = crate::resilience::health::PassiveSettings {
            failures: 1,
            cooldown: std::time::Duration::from_secs(60),
        };
        b.endpoints[0]
            .state
            .health
            .record_request(false, settings, now);
        let granted = admit(&s.placements, 0, None, None, now, &mut no_transitions()).unwrap();
        assert_eq!(
            (granted.placement, granted.failover),
            (2, Some(FailoverReason::CircuitOpen))
        );
        s.placements[2].endpoints[0]
            .state
            .health
            .record_request(false, settings, now);
        let denied = admit(&s.placements, 0, None, None, now, &mut no_transitions()).unwrap_err();
        assert_eq!(
            denied,
            Denied::Unavailable {
                placement: 0,
                reason: FailoverReason::CircuitOpen,
                circuit: CircuitState::Open
            }
        );
    }

    #[test]
    fn unhealthy_reason_when_nothing_is_healthy() {
        let s = snapshot("");
        let now = Instant::now();
        let settings = crate::resilience::health::PassiveSettings {
            failures: 1,
            cooldown: std::time::Duration::from_secs(60),
        };
        for e in &s.placements[0].endpoints {
            e.state.health.record_request(false, settings, now);
        }
        let granted = admit(&s.placements, 0, None, None, now, &mut no_transitions()).unwrap();
        assert_eq!(
            (granted.placement, granted.failover),
            (1, Some(FailoverReason::Unhealthy))
        );
    }

    #[test]
    fn concurrency_limit_rejects_or_fails_over() {
        let s = snapshot("limits = { max_concurrency = 1 }");
        let now = Instant::now();
        let held = admit(&s.placements, 2, None, None, now, &mut no_transitions()).unwrap();
        assert_eq!(
            admit(&s.placements, 2, None, None, now, &mut no_transitions()).unwrap_err(),
            Denied::Full {
                placement: 2,
                failover: None
            }
        );
        drop(held);
        let s = snapshot("limits = { max_concurrency = 1, on_limit = \"failover\" }");
        let _held = admit(&s.placements, 2, Some(0), None, now, &mut no_transitions()).unwrap();
        let granted = admit(&s.placements, 2, Some(0), None, now, &mut no_transitions()).unwrap();
        assert_eq!(
            (granted.placement, granted.failover),
            (0, Some(FailoverReason::ConcurrencyLimit))
        );
    }

    #[test]
    fn route_default_ends_the_chain() {
        let s = snapshot("");
        let now = Instant::now();
        let settings = crate::resilience::health::PassiveSettings {
            failures: 1,
            cooldown: std::time::Duration::from_secs(60),
        };
        for e in &s.placements[2].endpoints {
            e.state.health.record_request(false, settings, now);
        }
        let granted = admit(&s.placements, 2, Some(1), None, now, &mut no_transitions()).unwrap();
        assert_eq!(
            (granted.placement, granted.failover),
            (1, Some(FailoverReason::Unhealthy))
        );
    }

    #[test]
    fn uncounted_failures_are_successes() {
        let s = snapshot("breaker = { consecutive_failures = 1, failure_on = [\"connect\"] }");
        let c = &s.placements[2];
        let now = Instant::now();
        record(
            c,
            &c.endpoints[0],
            Admission::Normal,
            Outcome::Failure(FailureKind::ServerError),
            now,
        );
        assert_eq!(
            c.endpoints[0].state.breaker.state(now),
            CircuitState::Closed
        );
        record(
            c,
            &c.endpoints[0],
            Admission::Normal,
            Outcome::Failure(FailureKind::Connect),
            now,
        );
        assert_eq!(c.endpoints[0].state.breaker.state(now), CircuitState::Open);
    }
}
