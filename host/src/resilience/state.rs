//! Runtime state that outlives config snapshots.
//!
//! Breakers, health and in-flight counts are kept in a [`Registry`] keyed by
//! endpoint and placement identity. Compiling a snapshot looks each one up (or
//! creates it), so a reload keeps the state of every endpoint that did not
//! change, and the request path reaches its state through the snapshot,
//! never through the registry's map. The addresses upstream names resolve
//! to are kept here too, for the same reason: they outlive snapshots, and a
//! snapshot is compiled from them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::breaker::{Breaker, BreakerSettings};
use super::health::Health;
use super::rate::RateCounts;
use crate::routing::names::Names;

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
    /// How its requests found their connections.
    pub pool: PoolUse,
}

/// How an endpoint's requests found their connections: a pooled one (or a
/// free stream on an open HTTP/2 connection), or a new one.
#[derive(Debug, Default)]
pub struct PoolUse {
    /// Requests that reused a connection.
    pub hits: AtomicU64,
    /// Requests that opened a connection.
    pub misses: AtomicU64,
}

impl PoolUse {
    /// Counts one request's connection.
    pub fn record(&self, reused: bool) {
        let counter = if reused { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }
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
    /// Each rate-limited route's counts, by route name and period.
    rates: Mutex<HashMap<(String, Duration), Arc<RateCounts>>>,
    names: Arc<Names>,
}

impl Registry {
    /// What is known of the upstream names configs use: the addresses a
    /// named endpoint's endpoints are compiled from.
    pub fn names(&self) -> &Arc<Names> {
        &self.names
    }

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
                    pool: PoolUse::default(),
                })
            })
            .clone()
    }

    /// The state of placement `name`.
    pub fn placement(&self, name: &str) -> Arc<PlacementState> {
        let mut placements = self.placements.lock().unwrap_or_else(|p| p.into_inner());
        placements.entry(name.to_string()).or_default().clone()
    }

    /// The request counts of route `name`'s rate limit over periods of
    /// `per`: the same while the route keeps its name and period.
    pub fn rate_counts(&self, name: &str, per: Duration) -> Arc<RateCounts> {
        let mut rates = self.rates.lock().unwrap_or_else(|p| p.into_inner());
        rates
            .entry((name.to_string(), per))
            .or_insert_with(|| Arc::new(RateCounts::new(per)))
            .clone()
    }

    /// Forgets the state of every endpoint, placement and rate limit not
    /// listed, after a snapshot without them was published.
    pub fn retain<'a>(
        &self,
        endpoints: impl IntoIterator<Item = &'a EndpointKey>,
        placements: impl IntoIterator<Item = &'a str>,
        rates: impl IntoIterator<Item = (&'a str, Duration)>,
    ) {
        let keep: std::collections::HashSet<(&str, Duration)> = rates.into_iter().collect();
        self.rates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(name, per), _| keep.contains(&(name.as_str(), *per)));
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

/// A taken slot of an in-flight counter, given back when dropped.
///
/// The guard borrows the counter, so taking and giving back a slot are one
/// atomic operation each. A holder that outlives the borrow (the proxy's
/// per-request context) calls [`Slot::detach`] and later [`release`].
#[derive(Debug)]
pub struct Slot<'a> {
    counter: &'a AtomicU32,
}

impl<'a> Slot<'a> {
    /// Takes a slot of a counter that has no limit.
    pub fn unlimited(counter: &'a AtomicU32) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self { counter }
    }

    /// Takes a slot when fewer than `limit` are taken (`None`: no limit).
    pub fn acquire(counter: &'a AtomicU32, limit: Option<u32>) -> Option<Self> {
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
        Some(Self { counter })
    }

    /// Keeps the slot taken after the guard is gone; whoever keeps it must
    /// give it back with [`release`].
    pub fn detach(self) {
        std::mem::forget(self);
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        release(self.counter);
    }
}

/// Gives back a slot kept with [`Slot::detach`].
pub fn release(counter: &AtomicU32) {
    counter.fetch_sub(1, Ordering::Relaxed);
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
        registry.retain([&key("q", "127.0.0.1:1")], ["q"], []);
        assert_eq!(registry.endpoint_count(), 1);
    }

    #[test]
    fn slots_respect_the_limit_and_release_on_drop() {
        let counter = AtomicU32::new(0);
        let first = Slot::acquire(&counter, Some(2)).unwrap();
        let second = Slot::acquire(&counter, Some(2)).unwrap();
        assert!(Slot::acquire(&counter, Some(2)).is_none());
        drop(first);
        let third = Slot::acquire(&counter, Some(2)).unwrap();
        assert_eq!(counter.load(Ordering::Relaxed), 2);
        drop((second, third));
        assert_eq!(counter.load(Ordering::Relaxed), 0);
        let unlimited: Vec<_> = (0..10)
            .map(|_| Slot::acquire(&counter, None).unwrap())
            .collect();
        assert_eq!(counter.load(Ordering::Relaxed), 10);
        drop(unlimited);
        Slot::acquire(&counter, None).unwrap().detach();
        assert_eq!(counter.load(Ordering::Relaxed), 1);
        release(&counter);
        assert_eq!(counter.load(Ordering::Relaxed), 0);
    }
}
