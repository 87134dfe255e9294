//! Runtime state that outlives config snapshots.
//!
//! Breakers, health and in-flight counts are kept in a [`Registry`] keyed by
//! endpoint and placement identity. Compiling a snapshot looks each one up (or
//! creates it), so a reload keeps the state of every endpoint that did not
//! change, and the request path reaches its state through the snapshot,
//! never through the registry's map.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use super::breaker::{Breaker, BreakerSettings};
use super::health::Health;

/// What identifies an endpoint's state across reloads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    /// The placement it belongs to; each placement has its own breaker settings.
    pub placement: String,
    /// The endpoint's address as written, without scheme.
    pub address: String,
    /// Whether it is reached over TLS.
    pub tls: bool,
}

/// The live state of one endpoint.
#[derive(Debug)]
pub struct EndpointState {
    /// Its identity.
    pub key: EndpointKey,
    /// Its circuit breaker.
    pub breaker: Breaker,
    /// Its health.
    pub health: Health,
    /// Requests currently using it.
    pub in_flight: AtomicU32,
}

/// The live state of one placement.
#[derive(Debug, Default)]
pub struct PlacementState {
    /// Requests currently admitted to it, counted until their body ends.
    pub in_flight: AtomicU32,
}

/// All runtime state, by identity.
#[derive(Debug, Default)]
pub struct Registry {
    endpoints: Mutex<HashMap<EndpointKey, Arc<EndpointState>>>,
    placements: Mutex<HashMap<String, Arc<PlacementState>>>,
}

impl Registry {
    /// The state of `key`, created closed and healthy when new. Settings of an
    /// existing breaker are not touched here: they change only when the
    /// snapshot that carries them is published.
    pub fn endpoint(&self, key: EndpointKey, settings: BreakerSettings) -> Arc<EndpointState> {
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        endpoints
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(EndpointState {
                    key,
                    breaker: Breaker::new(settings),
                    health: Health::default(),
                    in_flight: AtomicU32::new(0),
                })
            })
            .clone()
    }

    /// The state of placement `name`.
    pub fn placement(&self, name: &str) -> Arc<PlacementState> {
        let mut placements = self.placements.lock().unwrap_or_else(|p| p.into_inner());
        placements.entry(name.to_string()).or_default().clone()
    }

    /// Forgets the state of every endpoint and placement not listed, after a
    /// snapshot without them was published.
    pub fn retain<'a>(
        &self,
        endpoints: impl IntoIterator<Item = &'a EndpointKey>,
        placements: impl IntoIterator<Item = &'a str>,
    ) {
        let keep: std::collections::HashSet<&EndpointKey> = endpoints.into_iter().collect();
        self.endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|key, _| keep.contains(key));
        let keep: std::collections::HashSet<&str> = placements.into_iter().collect();
        self.placements
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|name, _| keep.contains(name.as_str()));
    }

    /// How many endpoint states are held.
    pub fn endpoint_count(&self) -> usize {
        self.endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

/// A counted slot in a placement's and an endpoint's in-flight counts,
/// given back when dropped, i.e. when the request's context is dropped after
/// its response body has ended.
#[derive(Debug)]
pub struct InFlight {
    placement: Arc<PlacementState>,
}

impl InFlight {
    /// Takes a slot when fewer than `limit` are taken (`None`: no limit).
    pub fn acquire(placement: &Arc<PlacementState>, limit: Option<u32>) -> Option<Self> {
        let counter = &placement.in_flight;
        match limit {
            None => {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            Some(limit) => {
                counter
                    .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                        (n < limit).then_some(n + 1)
                    })
                    .ok()?;
            }
        }
        Some(Self {
            placement: placement.clone(),
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.placement.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(placement: &str, address: &str) -> EndpointKey {
        EndpointKey {
            placement: placement.into(),
            address: address.into(),
            tls: false,
        }
    }

    #[test]
    fn same_identity_same_state() {
        let registry = Registry::default();
        let a = registry.endpoint(key("p", "127.0.0.1:1"), BreakerSettings::default());
        let b = registry.endpoint(key("p", "127.0.0.1:1"), BreakerSettings::default());
        assert!(Arc::ptr_eq(&a, &b));
        let other = registry.endpoint(key("q", "127.0.0.1:1"), BreakerSettings::default());
        assert!(
            !Arc::ptr_eq(&a, &other),
            "each placement has its own breaker"
        );
        registry.retain([&key("q", "127.0.0.1:1")], ["q"]);
        assert_eq!(registry.endpoint_count(), 1);
    }

    #[test]
    fn in_flight_respects_the_limit_and_releases_on_drop() {
        let placement = Arc::new(PlacementState::default());
        let first = InFlight::acquire(&placement, Some(2)).unwrap();
        let second = InFlight::acquire(&placement, Some(2)).unwrap();
        assert!(InFlight::acquire(&placement, Some(2)).is_none());
        drop(first);
        let third = InFlight::acquire(&placement, Some(2)).unwrap();
        assert_eq!(placement.in_flight.load(Ordering::Relaxed), 2);
        drop((second, third));
        assert_eq!(placement.in_flight.load(Ordering::Relaxed), 0);
        let unlimited: Vec<_> = (0..10)
            .map(|_| InFlight::acquire(&placement, None).unwrap())
            .collect();
        assert_eq!(placement.in_flight.load(Ordering::Relaxed), 10);
        drop(unlimited);
    }
}
