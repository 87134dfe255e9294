//! Endpoint selection inside a placement.
//!
//! A balancer proposes endpoints in its policy's order and takes the first one
//! the caller admits, so health and breaker checks (kept elsewhere) compose
//! with any policy. Selection never locks: the rotating policies share one
//! atomic cursor, the consistent-hash ring is immutable, and least-request
//! reads the endpoints' in-flight counts the caller keeps.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use pingora_ketama::{Bucket, Continuum};
use rand::Rng;

use crate::config::Balance;

/// Picks an endpoint index for a request.
pub struct Balancer {
    policy: Policy,
    cursor: AtomicUsize,
    endpoints: usize,
}

enum Policy {
    RoundRobin,
    /// A precomputed smooth weighted round-robin order of endpoint indexes.
    Weighted(Box<[u16]>),
    ConsistentHash {
        ring: Continuum,
        addresses: Box<[SocketAddr]>,
    },
    /// The power of two choices over requests in flight per weight.
    LeastRequest {
        weights: Box<[u32]>,
        /// Candidates are drawn from this weighted order when the weights
        /// differ, so heavier endpoints are drawn more often.
        schedule: Option<Box<[u16]>>,
    },
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let policy = match self.policy {
            Policy::RoundRobin => "round_robin",
            Policy::Weighted(_) => "weighted",
            Policy::ConsistentHash { .. } => "consistent_hash",
            Policy::LeastRequest { .. } => "least_request",
        };
        f.debug_struct("Balancer")
            .field("policy", &policy)
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

/// The longest weighted schedule kept; weights are scaled down to fit.
const MAX_SCHEDULE: u64 = 4096;

impl Balancer {
    /// A balancer over endpoints with these addresses and weights.
    pub fn new(policy: Balance, endpoints: &[(SocketAddr, u32)]) -> Self {
        let policy = match policy {
            Balance::RoundRobin => Policy::RoundRobin,
            Balance::Weighted => Policy::Weighted(weighted_schedule(
                &endpoints.iter().map(|(_, w)| *w).collect::<Vec<_>>(),
            )),
            Balance::ConsistentHash => {
                let buckets: Vec<Bucket> = endpoints
                    .iter()
                    .map(|(addr, w)| Bucket::new(*addr, (*w).max(1)))
                    .collect();
                Policy::ConsistentHash {
                    ring: Continuum::new(&buckets),
                    addresses: endpoints.iter().map(|(addr, _)| *addr).collect(),
                }
            }
            Balance::LeastRequest => {
                let weights: Box<[u32]> = endpoints.iter().map(|(_, w)| (*w).max(1)).collect();
                let uneven = weights.windows(2).any(|pair| pair[0] != pair[1]);
                Policy::LeastRequest {
                    schedule: uneven.then(|| weighted_schedule(&weights)),
                    weights,
                }
            }
        };
        Self {
            policy,
            cursor: AtomicUsize::new(0),
            endpoints: endpoints.len(),
        }
    }

    /// The first endpoint, in policy order, for which `admit` returns true.
    /// `key` is the routing key; without one, consistent hashing rotates.
    /// `in_flight` gives an endpoint's requests in flight, which only
    /// least-request reads.
    pub fn pick(
        &self,
        key: Option<&[u8]>,
        in_flight: impl Fn(usize) -> u32,
        mut admit: impl FnMut(usize) -> bool,
    ) -> Option<usize> {
        let n = self.endpoints;
        if n == 0 {
            return None;
        }
        match (&self.policy, key) {
            (Policy::LeastRequest { weights, schedule }, _) => {
                let (first, second) = self.two_choices(schedule.as_deref());
                let load = |i: usize| u64::from(in_flight(i));
                // a has fewer per weight than b: a/wa < b/wb. On a tie the
                // first drawn goes first, so idle endpoints are chosen in
                // proportion to their weights.
                let lighter = |a: usize, b: usize| {
                    load(a) * u64::from(weights[b]) < load(b) * u64::from(weights[a])
                };
                let (better, other) = if lighter(second, first) {
                    (second, first)
                } else {
                    (first, second)
                };
                // The two choices, then the rest in turn, so a refused pair
                // still finds any admitted endpoint.
                let start = self.cursor.fetch_add(1, Ordering::Relaxed);
                [better, other]
                    .into_iter()
                    .chain(
                        (0..n)
                            .map(|i| start.wrapping_add(i) % n)
                            .filter(|&i| i != better && i != other),
                    )
                    .find(|&i| admit(i))
            }
            (Policy::Weighted(schedule), _) => {
                let start = self.cursor.fetch_add(1, Ordering::Relaxed);
                let len = schedule.len();
                (0..len)
                    .map(|i| schedule[start.wrapping_add(i) % len] as usize)
                    .find(|&i| admit(i))
            }
            (Policy::ConsistentHash { ring, addresses }, Some(key)) => {
                let mut seen = vec![false; n];
                let mut remaining = n;
                for addr in ring.node_iter(key) {
                    let Some(index) = addresses.iter().position(|a| a == addr) else {
                        continue;
                    };
                    if seen[index] {
                        continue;
                    }
                    if admit(index) {
                        return Some(index);
                    }
                    seen[index] = true;
                    remaining -= 1;
                    if remaining == 0 {
                        return None;
                    }
                }
                None
            }
            (Policy::RoundRobin, _) | (Policy::ConsistentHash { .. }, None) => {
                let start = self.cursor.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|i| start.wrapping_add(i) % n)
                    .find(|&i| admit(i))
            }
        }
    }
}

impl Balancer {
    /// Two different endpoints drawn at random (the same one when there is
    /// only one), from `schedule` when weights differ.
    fn two_choices(&self, schedule: Option<&[u16]>) -> (usize, usize) {
        let n = self.endpoints;
        if n == 1 {
            return (0, 0);
        }
        let mut rng = rand::thread_rng();
        let mut draw = || match schedule {
            Some(schedule) => schedule[rng.gen_range(0..schedule.len())] as usize,
            None => rng.gen_range(0..n),
        };
        let first = draw();
        // A weighted draw can repeat; after a few tries take the next one.
        let second = (0..4)
            .map(|_| draw())
            .find(|&i| i != first)
            .unwrap_or((first + 1) % n);
        (first, second)
    }
}

/// The smooth weighted round-robin order (as in nginx) for these weights,
/// scaled down so the schedule stays short.
fn weighted_schedule(weights: &[u32]) -> Box<[u16]> {
    let divisor = weights.iter().copied().fold(0, gcd).max(1);
    let mut weights: Vec<u64> = weights
        .iter()
        .map(|w| u64::from((*w / divisor).max(1)))
        .collect();
    let total: u64 = weights.iter().sum();
    if total > MAX_SCHEDULE {
        for w in &mut weights {
            *w = (*w * MAX_SCHEDULE / total).max(1);
        }
    }
    let total: i64 = weights.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; weights.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, w) in current.iter_mut().zip(&weights) {
            *c += *w as i64;
        }
        let (best, _) = current
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
            .expect("at least one endpoint");
        current[best] -= total;
        schedule.push(best as u16);
    }
    schedule.into_boxed_slice()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(weights: &[u32]) -> Vec<(SocketAddr, u32)> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| (SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16)), *w))
            .collect()
    }

    fn counts(balancer: &Balancer, n: usize, picks: usize) -> Vec<usize> {
        let mut counts = vec![0; n];
        for _ in 0..picks {
            counts[balancer.pick(None, |_| 0, |_| true).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_is_even() {
        let b = Balancer::new(Balance::RoundRobin, &endpoints(&[1, 1, 1]));
        assert_eq!(counts(&b, 3, 300), vec![100, 100, 100]);
    }

    #[test]
    fn weighted_follows_weights_smoothly() {
        let b = Balancer::new(Balance::Weighted, &endpoints(&[5, 1, 1]));
        assert_eq!(counts(&b, 3, 700), vec![500, 100, 100]);
        let order: Vec<_> = (0..7)
            .map(|_| b.pick(None, |_| 0, |_| true).unwrap())
            .collect();
        assert_eq!(order.iter().filter(|&&i| i == 0).count(), 5);
        assert_ne!(
            &order[..3],
            &[0, 0, 0],
            "smooth order interleaves: {order:?}"
        );
    }

    #[test]
    fn large_weights_are_scaled() {
        let schedule = weighted_schedule(&[1_000_000, 3_000_000]);
        assert_eq!(schedule.len(), 4);
        let schedule = weighted_schedule(&[100_000, 1]);
        assert!(schedule.len() as u64 <= MAX_SCHEDULE + 1);
        assert!(schedule.contains(&1));
    }

    #[test]
    fn consistent_hash_is_sticky_and_spreads() {
        let b = Balancer::new(Balance::ConsistentHash, &endpoints(&[1, 1, 1, 1]));
        let mut used = std::collections::HashSet::new();
        for key in 0..200 {
            let key = format!("tenant-{key}");
            let first = b.pick(Some(key.as_bytes()), |_| 0, |_| true).unwrap();
            for _ in 0..5 {
                assert_eq!(b.pick(Some(key.as_bytes()), |_| 0, |_| true), Some(first));
            }
            used.insert(first);
        }
        assert_eq!(used.len(), 4);
    }

    #[test]
    fn consistent_hash_moves_only_when_its_endpoint_is_refused() {
        let b = Balancer::new(Balance::ConsistentHash, &endpoints(&[1, 1, 1]));
        let first = b.pick(Some(b"acme"), |_| 0, |_| true).unwrap();
        let second = b.pick(Some(b"acme"), |_| 0, |i| i != first).unwrap();
        assert_ne!(first, second);
        assert_eq!(b.pick(Some(b"acme"), |_| 0, |i| i != first), Some(second));
    }

    #[test]
    fn refusing_everything_yields_none() {
        for policy in [
            Balance::RoundRobin,
            Balance::Weighted,
            Balance::ConsistentHash,
            Balance::LeastRequest,
        ] {
            let b = Balancer::new(policy, &endpoints(&[2, 1]));
            assert_eq!(b.pick(Some(b"k"), |_| 0, |_| false), None);
            assert_eq!(b.pick(None, |_| 0, |i| i == 1), Some(1));
        }
    }

    #[test]
    fn least_request_prefers_the_endpoint_with_fewer_in_flight() {
        let b = Balancer::new(Balance::LeastRequest, &endpoints(&[1, 1, 1]));
        // Endpoint 2 is busy: it wins only a draw against itself, which
        // two different choices never make.
        let in_flight = [0, 0, 10];
        let mut counts = [0; 3];
        for _ in 0..3000 {
            counts[b.pick(None, |i| in_flight[i], |_| true).unwrap()] += 1;
        }
        assert_eq!(counts[2], 0, "{counts:?}");
        assert!(counts[0] > 1000 && counts[1] > 1000, "{counts:?}");
    }

    #[test]
    fn least_request_weighs_in_flight_by_weight() {
        // Endpoint 0 may carry three times endpoint 1's load.
        let b = Balancer::new(Balance::LeastRequest, &endpoints(&[3, 1]));
        assert_eq!(b.pick(None, |i| [2, 1][i], |_| true), Some(0));
        assert_eq!(b.pick(None, |i| [9, 1][i], |_| true), Some(1));
        // With nothing in flight, picks follow the weights, about 3 to 1.
        let mut counts = [0; 2];
        for _ in 0..4000 {
            counts[b.pick(None, |_| 0, |_| true).unwrap()] += 1;
        }
        assert!(counts[0] > 2 * counts[1] && counts[1] > 600, "{counts:?}");
    }
}
