//! Per-route request rate limits: a sliding-window estimate of each key's
//! requests, kept in fixed memory (Pingora's count-min rate estimator),
//! and the answer for a request over the limit. A route's counts live in
//! the state registry, so a reload that keeps its period keeps them.

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use pingora_limits::rate::{Rate, RateComponents};

use super::state::Registry;
use crate::config::{self, Diagnostics, KeyPath, KeySource, KeySourceKind, RateKeyKind};
use crate::routing::key::KeyExtractor;
use crate::routing::RequestView;

/// A route's compiled `rate_limit`.
#[derive(Debug)]
pub struct RateLimitSpec {
    /// Requests allowed per key in each period.
    pub requests: u32,
    /// The period.
    pub per: Duration,
    key: RateKey,
    counts: Arc<RateCounts>,
}

/// What requests are counted by.
#[derive(Debug)]
enum RateKey {
    Client,
    RoutingKey,
    Request(KeyExtractor),
}

/// The key a request is counted under; requests without one are counted
/// together.
#[derive(Hash)]
enum Counted<'a> {
    Client(IpAddr),
    Key(&'a str),
    Missing,
}

/// The request rate of a route's keys, shared by the snapshots that keep
/// the route and its period.
pub struct RateCounts(Rate);

impl RateCounts {
    /// Counts for a period of `per`.
    pub fn new(per: Duration) -> Self {
        Self(Rate::new(per))
    }
}

impl std::fmt::Debug for RateCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RateCounts")
    }
}

/// Why a request is refused, and when to come back.
#[derive(Debug, PartialEq, Eq)]
pub struct Limited {
    /// Whole seconds until the estimate falls back under the limit.
    pub retry_after: u64,
}

impl RateLimitSpec {
    /// Counts the request against its key's limit, or refuses it when the
    /// key's estimated requests over the last period reach the limit.
    /// Refused requests are not counted, so a client that keeps trying
    /// gets in again once its earlier requests age out.
    pub fn check(
        &self,
        request: &RequestView<'_>,
        client: Option<IpAddr>,
        routing_key: Option<&str>,
    ) -> Result<(), Limited> {
        let extracted;
        let counted = match &self.key {
            RateKey::Client => client.map_or(Counted::Missing, Counted::Client),
            RateKey::RoutingKey => routing_key.map_or(Counted::Missing, Counted::Key),
            RateKey::Request(extractor) => {
                extracted = extractor.extract(request);
                extracted.as_deref().map_or(Counted::Missing, Counted::Key)
            }
        };
        self.admit(&counted)
    }

    fn admit(&self, counted: &impl Hash) -> Result<(), Limited> {
        let (estimate, remaining) = self.counts.0.rate_with(counted, |rate: RateComponents| {
            let elapsed = rate.current_interval_fraction;
            (
                sliding_estimate(rate.prev_samples, rate.curr_samples, elapsed),
                rate.interval.mul_f64(1.0 - elapsed),
            )
        });
        if estimate >= f64::from(self.requests) {
            let retry_after = remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0);
            return Err(Limited {
                retry_after: retry_after.max(1),
            });
        }
        self.counts.0.observe(counted, 1);
        Ok(())
    }
}

/// The requests of the last full period, weighed by how much of it the
/// sliding window still covers (`elapsed` is the share of the current
/// period gone), plus those of the current one.
fn sliding_estimate(previous: isize, current: isize, elapsed: f64) -> f64 {
    previous as f64 * (1.0 - elapsed) + current as f64
}

/// Compiles a route's `rate_limit`, taking its counts from `registry`.
pub fn compile(
    d: &mut Diagnostics,
    path: &KeyPath,
    route: &str,
    limit: &config::RateLimit,
    registry: &Registry,
) -> Option<RateLimitSpec> {
    let errors_before = d.error_count();
    if limit.requests == 0 {
        d.error(path.key("requests"), "must be at least 1");
    }
    let per = d.duration(path.key("per"), &limit.per);
    // Pingora's estimator checks its clock against a second back, and
    // would fail a shorter first period.
    if per < Duration::from_secs(1) {
        d.error(path.key("per"), "must be at least 1s");
    }
    let source = match limit.key {
        RateKeyKind::Client => None,
        RateKeyKind::RoutingKey => None,
        RateKeyKind::Header => Some(KeySourceKind::Header),
        RateKeyKind::Query => Some(KeySourceKind::Query),
        RateKeyKind::Cookie => Some(KeySourceKind::Cookie),
    };
    let key = match source {
        None => {
            if limit.name.is_some() {
                d.error(
                    path.key("name"),
                    "applies only to key = \"header\", \"query\" or \"cookie\"",
                );
            }
            if limit.key == RateKeyKind::Client {
                RateKey::Client
            } else {
                RateKey::RoutingKey
            }
        }
        Some(source) => {
            let written = KeySource {
                source,
                name: limit.name.clone(),
                index: None,
            };
            match KeyExtractor::from_config(&written) {
                Ok(extractor) => RateKey::Request(extractor),
                Err((key, message)) => {
                    d.error(path.key(key), message);
                    return None;
                }
            }
        }
    };
    if d.error_count() > errors_before {
        return None;
    }
    Some(RateLimitSpec {
        requests: limit.requests,
        per,
        key,
        counts: registry.rate_counts(route, per),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(requests: u32, per: &str) -> RateLimitSpec {
        let written: config::RateLimit =
            toml::from_str(&format!("requests = {requests}\nper = \"{per}\"")).unwrap();
        let mut d = Diagnostics::default();
        compile(
            &mut d,
            &KeyPath::root(),
            "r",
            &written,
            &Registry::default(),
        )
        .unwrap()
    }

    #[test]
    fn each_key_gets_its_own_allowance_and_the_refused_learn_when_to_return() {
        let limit = spec(3, "10s");
        let a = Counted::Client([10, 0, 0, 1].into());
        let b = Counted::Client([10, 0, 0, 2].into());
        for _ in 0..3 {
            assert_eq!(limit.admit(&a), Ok(()));
        }
        let refused = limit.admit(&a).unwrap_err();
        assert!((1..=10).contains(&refused.retry_after), "{refused:?}");
        assert_eq!(limit.admit(&b), Ok(()));
    }

    #[test]
    fn the_window_slides_rather_than_resetting_at_once() {
        // A tenth into a new period, nine tenths of the last one count.
        assert_eq!(sliding_estimate(10, 0, 0.1), 9.0);
        assert_eq!(sliding_estimate(10, 3, 0.5), 8.0);
        assert_eq!(sliding_estimate(0, 3, 0.9), 3.0);
    }

    #[test]
    fn a_recompiled_route_keeps_its_counts_unless_its_period_changes() {
        let registry = Registry::default();
        let compiled = |per: &str| {
            let written: config::RateLimit =
                toml::from_str(&format!("requests = 1\nper = \"{per}\"")).unwrap();
            compile(
                &mut Diagnostics::default(),
                &KeyPath::root(),
                "r",
                &written,
                &registry,
            )
            .unwrap()
        };
        let first = compiled("1m");
        first.admit(&Counted::Missing).unwrap();
        assert!(compiled("1m").admit(&Counted::Missing).is_err());
        assert_eq!(compiled("2m").admit(&Counted::Missing), Ok(()));
    }

    #[test]
    fn config_errors_name_the_key() {
        let mut d = Diagnostics::default();
        let written: config::RateLimit =
            toml::from_str("requests = 0\nper = \"10ms\"\nkey = \"header\"").unwrap();
        assert!(compile(
            &mut d,
            &KeyPath::root(),
            "r",
            &written,
            &Registry::default()
        )
        .is_none());
        assert_eq!(d.error_count(), 3);
    }
}
