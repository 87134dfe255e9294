//! `shuffle-shard`: a placement policy that gives each routing key a stable
//! shard of a few placements out of a route's candidates, so one tenant's
//! bad traffic can only take down its own shard, and two tenants rarely
//! share a whole one.
//!
//! ```toml
//! [[routes.plugins]]
//! name = "shuffle-shard"
//! config = { shard_size = 2, spill = false }
//! ```
//!
//! For a routing key, the candidates are ranked by rendezvous (highest
//! random weight) hashing: each placement scores `hash(key, placement name)`
//! and the highest scores come first. The key's shard is the top
//! `shard_size` placements (default 2). The plugin picks the first healthy
//! placement of the shard in rank order, so a key's traffic stays on one
//! placement and moves to the next one of its shard only when that one is
//! unhealthy. Healthy means at least one healthy endpoint (an endpoint whose
//! breaker is open does not count) and, when the placement has a
//! concurrency `limit`, `in_flight < limit`.
//!
//! When no placement of the shard is healthy, the plugin defers to the
//! routing table (and its fallback chains), unless `spill = true`: then it
//! picks the first healthy placement outside the shard, in the same ranked
//! order, so spilled traffic is stable too. A request without a routing key
//! is deferred.
//!
//! The ranking depends only on the key and the placement names: not on the
//! order of the candidates, nor on the other candidates (adding a placement
//! moves a key only if the new placement ranks into its shard). The hash is
//! FNV-1a 64 with a 64-bit finalizer, stable across builds and processes.
//!
//! Counters: `shuffle_shard_failover` (a placement of the shard other than
//! the first was chosen), `shuffle_shard_spill` and `shuffle_shard_exhausted`
//! (no healthy placement, deferred).
//!
//! A `shard_size` of 0 or an unknown key is refused when the configuration
//! is parsed, with a message saying which; Sluice checks each attachment's
//! configuration when a config is loaded, so such a config is rejected
//! before it serves traffic.

use std::cmp::Reverse;

use serde::Deserialize;
use sluice_plugin_sdk::prelude::*;

/// The plugin's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "ConfigSpec")]
pub struct Config {
    /// How many placements a key's shard holds (at least 1).
    pub shard_size: usize,
    /// Whether to use a healthy placement outside the shard when the whole
    /// shard is unhealthy, rather than defer.
    pub spill: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            shard_size: 2,
            spill: false,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigSpec {
    #[serde(default = "default_shard_size")]
    shard_size: usize,
    #[serde(default)]
    spill: bool,
}

fn default_shard_size() -> usize {
    Config::default().shard_size
}

impl TryFrom<ConfigSpec> for Config {
    type Error = String;

    fn try_from(spec: ConfigSpec) -> Result<Self, String> {
        if spec.shard_size == 0 {
            return Err("`shard_size` must be at least 1".into());
        }
        Ok(Config {
            shard_size: spec.shard_size,
            spill: spec.spill,
        })
    }
}

/// Whether `candidate` can take a request now.
pub fn is_healthy(candidate: &Candidate) -> bool {
    candidate.healthy_endpoints > 0
        && candidate
            .limit
            .is_none_or(|limit| candidate.in_flight < limit)
}

/// The candidates ranked for `key`, best first, one per name. The key's
/// shard is the first `shard_size` of them.
pub fn rank<'a>(key: &str, candidates: &'a [Candidate]) -> Vec<&'a Candidate> {
    let keyed = keyed_hash(key);
    let mut ranked: Vec<(u64, &Candidate)> = candidates
        .iter()
        .map(|c| (score(&keyed, &c.name), c))
        .collect();
    // Ties (and duplicate names) are broken by name, never by input order.
    ranked.sort_by(|(a, x), (b, y)| {
        Reverse(*a)
            .cmp(&Reverse(*b))
            .then_with(|| x.name.cmp(&y.name))
    });
    ranked.dedup_by(|(_, x), (_, y)| x.name == y.name);
    ranked.into_iter().map(|(_, c)| c).collect()
}

/// The hash state after `key` and its separator, shared by every
/// candidate's score.
fn keyed_hash(key: &str) -> Fnv1a {
    let mut hash = Fnv1a::new();
    hash.write(key.as_bytes());
    // 0xff never occurs in UTF-8, so ("ab", "c") and ("a", "bc") differ.
    hash.write(&[0xff]);
    hash
}

/// The rendezvous score of `placement` for the key `keyed` was made from.
fn score(keyed: &Fnv1a, placement: &str) -> u64 {
    let mut hash = keyed.clone();
    hash.write(placement.as_bytes());
    hash.finish()
}

/// FNV-1a 64, finished with the murmur3 64-bit finalizer.
#[derive(Clone)]
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
        h
    }
}

/// The plugin.
pub struct ShuffleShard;

impl Plugin for ShuffleShard {
    type Config = Config;

    fn select_placement(
        config: &Config,
        request: &RequestView,
        candidates: &[Candidate],
    ) -> PlacementChoice {
        let Some(key) = request.routing_key().filter(|k| !k.is_empty()) else {
            return PlacementChoice::Defer;
        };
        let ranked = rank(key, candidates);
        let (shard, outside) = ranked.split_at(config.shard_size.min(ranked.len()));
        if let Some(position) = shard.iter().position(|c| is_healthy(c)) {
            if position > 0 {
                host::counter_add("shuffle_shard_failover", 1);
            }
            return PlacementChoice::Placement(shard[position].name.clone());
        }
        if config.spill {
            if let Some(candidate) = outside.iter().find(|c| is_healthy(c)) {
                host::counter_add("shuffle_shard_spill", 1);
                return PlacementChoice::Placement(candidate.name.clone());
            }
        }
        if !candidates.is_empty() {
            host::counter_add("shuffle_shard_exhausted", 1);
        }
        PlacementChoice::Defer
    }
}

sluice_plugin_sdk::export!(ShuffleShard => select_placement);

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use sluice_plugin_sdk::testing::{candidate, clear, recorded, request};

    fn cells(n: usize) -> Vec<Candidate> {
        (0..n).map(|i| candidate(&format!("cell-{i}"), 2)).collect()
    }

    fn config(shard_size: usize, spill: bool) -> Config {
        Config { shard_size, spill }
    }

    fn choose(config: &Config, key: Option<&str>, candidates: &[Candidate]) -> Option<String> {
        let mut view = request("GET", "/");
        if let Some(key) = key {
            view = view.routing_key(key);
        }
        match ShuffleShard::select_placement(config, &view.build(), candidates) {
            PlacementChoice::Placement(name) => Some(name),
            PlacementChoice::Defer => None,
        }
    }

    fn shard(key: &str, candidates: &[Candidate], size: usize) -> BTreeSet<String> {
        rank(key, candidates)
            .iter()
            .take(size)
            .map(|c| c.name.clone())
            .collect()
    }

    fn unhealthy(candidates: &mut [Candidate], name: &str) {
        let c = candidates.iter_mut().find(|c| c.name == name).unwrap();
        c.healthy_endpoints = 0;
        c.open_breakers = c.total_endpoints;
    }

    #[test]
    fn a_key_gets_a_stable_placement_from_its_shard() {
        let candidates = cells(8);
        let config = Config::default();
        for i in 0..200 {
            let key = format!("tenant-{i}");
            let first = choose(&config, Some(&key), &candidates).unwrap();
            assert!(shard(&key, &candidates, 2).contains(&first));
            assert_eq!(rank(&key, &candidates)[0].name, first);
            for _ in 0..3 {
                assert_eq!(
                    choose(&config, Some(&key), &candidates).as_deref(),
                    Some(first.as_str())
                );
            }
        }
    }

    #[test]
    fn the_shard_has_shard_size_placements_and_failover_stays_inside() {
        let config = config(3, false);
        for i in 0..50 {
            let key = format!("tenant-{i}");
            let mut candidates = cells(10);
            let mut used = BTreeSet::new();
            // Break whatever the key uses until it has nothing left.
            while let Some(name) = choose(&config, Some(&key), &candidates) {
                assert!(used.insert(name.clone()), "{name} chosen twice");
                unhealthy(&mut candidates, &name);
            }
            assert_eq!(used, shard(&key, &cells(10), 3));
            assert_eq!(used.len(), 3);
        }
        // A shard larger than the candidates is all of them.
        assert_eq!(shard("k", &cells(2), 5).len(), 2);
    }

    #[test]
    fn different_keys_get_different_shards_and_use_every_placement() {
        let candidates = cells(8);
        let config = Config::default();
        let mut shards = BTreeSet::new();
        let mut load: BTreeMap<String, usize> = BTreeMap::new();
        for i in 0..2000 {
            let key = format!("tenant-{i}");
            shards.insert(shard(&key, &candidates, 2).into_iter().collect::<Vec<_>>());
            *load
                .entry(choose(&config, Some(&key), &candidates).unwrap())
                .or_default() += 1;
        }
        // C(8, 2) = 28 possible shards: all appear.
        assert_eq!(shards.len(), 28);
        assert_eq!(load.len(), 8);
        assert!(load.values().all(|n| (170..330).contains(n)), "{load:?}");
    }

    #[test]
    fn skips_a_placement_with_an_open_breaker_or_a_full_limit() {
        let key = "acme";
        let mut candidates = cells(6);
        let ranked: Vec<String> = rank(key, &candidates)
            .iter()
            .map(|c| c.name.clone())
            .collect();
        let config = Config::default();
        assert_eq!(
            choose(&config, Some(key), &candidates),
            Some(ranked[0].clone())
        );

        unhealthy(&mut candidates, &ranked[0]);
        clear();
        assert_eq!(
            choose(&config, Some(key), &candidates),
            Some(ranked[1].clone())
        );
        assert_eq!(
            recorded().counters,
            vec![("shuffle_shard_failover".to_string(), 1)]
        );

        // Back to health, but at its concurrency limit.
        let mut candidates = cells(6);
        let first = candidates.iter_mut().find(|c| c.name == ranked[0]).unwrap();
        first.limit = Some(4);
        first.in_flight = 4;
        assert_eq!(
            choose(&config, Some(key), &candidates),
            Some(ranked[1].clone())
        );
        candidates
            .iter_mut()
            .find(|c| c.name == ranked[0])
            .unwrap()
            .in_flight = 3;
        assert_eq!(
            choose(&config, Some(key), &candidates),
            Some(ranked[0].clone())
        );
    }

    #[test]
    fn an_unhealthy_shard_defers_unless_spill() {
        let key = "acme";
        let mut candidates = cells(5);
        let ranked: Vec<String> = rank(key, &candidates)
            .iter()
            .map(|c| c.name.clone())
            .collect();
        unhealthy(&mut candidates, &ranked[0]);
        unhealthy(&mut candidates, &ranked[1]);
        clear();
        assert_eq!(choose(&config(2, false), Some(key), &candidates), None);
        assert_eq!(
            recorded().counters,
            vec![("shuffle_shard_exhausted".to_string(), 1)]
        );

        // Spill goes to the next placement in the key's ranking, stably.
        clear();
        assert_eq!(
            choose(&config(2, true), Some(key), &candidates),
            Some(ranked[2].clone())
        );
        assert_eq!(
            recorded().counters,
            vec![("shuffle_shard_spill".to_string(), 1)]
        );
        unhealthy(&mut candidates, &ranked[2]);
        assert_eq!(
            choose(&config(2, true), Some(key), &candidates),
            Some(ranked[3].clone())
        );

        // Nothing healthy anywhere: defer even with spill.
        for name in &ranked {
            unhealthy(&mut candidates, name);
        }
        assert_eq!(choose(&config(2, true), Some(key), &candidates), None);
    }

    #[test]
    fn candidate_order_does_not_matter() {
        let candidates = cells(7);
        let mut reversed = candidates.clone();
        reversed.reverse();
        let mut rotated = candidates.clone();
        rotated.rotate_left(3);
        for i in 0..300 {
            let key = format!("tenant-{i}");
            let expected = shard(&key, &candidates, 3);
            assert_eq!(shard(&key, &reversed, 3), expected);
            assert_eq!(shard(&key, &rotated, 3), expected);
            let choice = choose(&Config::default(), Some(&key), &candidates);
            assert_eq!(choose(&Config::default(), Some(&key), &reversed), choice);
            assert_eq!(choose(&Config::default(), Some(&key), &rotated), choice);
        }
    }

    #[test]
    fn adding_a_placement_moves_few_keys() {
        let (before, after) = (cells(8), cells(9));
        let moved = (0..2000)
            .map(|i| format!("tenant-{i}"))
            .filter(|key| {
                choose(&Config::default(), Some(key), &before)
                    != choose(&Config::default(), Some(key), &after)
            })
            .count();
        // Only keys whose top placement becomes the new one move: about 1 in 9.
        assert!((150..300).contains(&moved), "{moved}");
    }

    #[test]
    fn no_routing_key_or_no_candidates_defers() {
        clear();
        assert_eq!(choose(&Config::default(), None, &cells(4)), None);
        assert_eq!(choose(&Config::default(), Some(""), &cells(4)), None);
        assert_eq!(choose(&Config::default(), Some("acme"), &[]), None);
        assert!(recorded().counters.is_empty());
    }

    #[test]
    fn duplicate_names_count_once() {
        let mut candidates = cells(3);
        candidates.push(candidate("cell-0", 1));
        assert_eq!(rank("k", &candidates).len(), 3);
    }

    #[test]
    fn config_defaults_and_errors() {
        let parsed: Config = sluice_plugin_sdk::testing::config("");
        assert_eq!(parsed, Config::default());
        assert_eq!(parsed, config(2, false));
        let parsed: Config = sluice_plugin_sdk::testing::config("shard_size = 3\nspill = true");
        assert_eq!(parsed, config(3, true));
        let error = |json: &str| {
            serde_json::from_str::<Config>(json)
                .unwrap_err()
                .to_string()
        };
        assert!(error(r#"{"shard_size": 0}"#).contains("at least 1"));
        assert!(error(r#"{"shard": 2}"#).contains("unknown field `shard`"));
        assert!(error(r#"{"spill": "yes"}"#).contains("invalid type"));
    }

    #[test]
    fn configure_then_select_through_the_sdk() {
        use sluice_plugin_sdk::testing::{configure, select_placement};
        let error = configure::<ShuffleShard>(r#"{"shard_size": 0}"#).unwrap_err();
        assert!(error.contains("at least 1"), "{error}");

        configure::<ShuffleShard>(r#"{"shard_size": 1}"#).unwrap();
        let candidates = cells(4);
        let view = request("GET", "/").routing_key("acme").build();
        assert_eq!(
            select_placement::<ShuffleShard>(&view, &candidates),
            PlacementChoice::Placement(rank("acme", &candidates)[0].name.clone())
        );
        let keyless = request("GET", "/").build();
        assert_eq!(
            select_placement::<ShuffleShard>(&keyless, &candidates),
            PlacementChoice::Defer
        );
    }
}
