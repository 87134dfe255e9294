//! What the proxy hands a route's plugin chain ([`crate::plugins::chain`])
//! besides the request: the live state of the candidate placements, as
//! `select-placement` plugins see it.

use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::plugins::bindings::sluice::plugin::types::CandidateState;
use crate::plugins::host::Candidate;
use crate::resilience::breaker::CircuitState;
use crate::routing::PlacementId;
use crate::snapshot::Snapshot;

/// The live state of each candidate placement.
pub(super) fn describe(snapshot: &Snapshot, candidates: &[PlacementId]) -> Vec<Candidate> {
    let now = Instant::now();
    candidates
        .iter()
        .filter_map(|id| snapshot.placements.get(*id))
        .map(|placement| {
            let (mut open, mut half_open) = (0, 0);
            for endpoint in &placement.endpoints {
                match endpoint.state.breaker.state(now) {
                    CircuitState::Closed => {}
                    CircuitState::Open => open += 1,
                    CircuitState::HalfOpen => half_open += 1,
                }
            }
            let healthy = placement
                .endpoints
                .iter()
                .filter(|e| e.state.health.is_healthy(now) && e.state.breaker.would_admit(now))
                .count();
            Candidate {
                name: placement.name.clone(),
                state: CandidateState {
                    healthy_endpoints: healthy as u32,
                    total_endpoints: placement.endpoints.len() as u32,
                    open_breakers: open,
                    half_open_breakers: half_open,
                    in_flight: placement.state.in_flight.load(Ordering::Relaxed),
                    limit: placement.max_concurrency,
                    weight: placement.total_weight,
                },
            }
        })
        .collect()
}
