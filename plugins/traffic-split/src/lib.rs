//! `traffic-split`: send weighted shares of a route's traffic to placements,
//! for blue/green switches and canaries, sticky by routing key, header or
//! cookie.
//!
//! ```toml
//! [[routes.plugins]]
//! name = "traffic-split"
//! config = { splits = [{ placement = "blue", weight = 90 }, { placement = "green", weight = 10 }], sticky = { source = "cookie", name = "session" } }
//! ```
//!
//! `sticky.source` is `routing_key` (the request's routing key, no `name`),
//! `header` or `cookie` (both need `name`). Without `sticky`, or when the
//! request lacks the sticky value, the request id is hashed instead: each
//! request lands independently, in proportion to the weights. (A per-instance
//! counter would not do: instances are pooled and recycled, and a fresh one
//! would always start on the first split.)
//!
//! The plugin answers with the chosen placement, overriding the routing
//! table, and counts `traffic_split_<placement>`. It sets nothing else.
//!
//! # Stable and monotonic
//!
//! The sticky value is hashed with FNV-1a 64 followed by a 64-bit finalizer
//! (stable across builds, processes and platforms; never std's
//! `RandomState`), and the hash is read as a fraction `x` in `[0, 1)`. The
//! splits, in the order written, cover `[0, 1)` in proportion to their
//! weights, and the request goes to the split whose range holds `x`. So:
//! - the same value always lands on the same placement, on every instance;
//! - changing weights moves only the values in the ranges that changed: going
//!   from 90/10 to 80/20, every value that was on `green` stays there, and
//!   one value in nine of `blue` moves to `green`. Keep the order of
//!   `splits` when changing weights, and add new placements at the end.
//!
//! A weight of 0 drains a placement. A configuration with no splits, a total
//! weight of 0, a repeated placement or a missing sticky `name` is refused
//! when it is parsed, with a message saying which: Sluice checks each
//! attachment's configuration when a config is loaded, so such a config is
//! rejected before it serves traffic; so is an attachment without `config`
//! (``missing field `splits` ``). The default configuration (no `splits`),
//! which a hook sees only if no configuration was handed over, leaves
//! requests to the routing table.

use serde::Deserialize;
use sluice_plugin_sdk::prelude::*;

/// The plugin's configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(try_from = "ConfigSpec")]
pub struct Config {
    /// The placements and their weights, in order.
    pub splits: Vec<Split>,
    /// Where the sticky value comes from; `None` splits each request on its
    /// request id.
    pub sticky: Option<Sticky>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigSpec {
    splits: Vec<Split>,
    #[serde(default)]
    sticky: Option<Sticky>,
}

impl TryFrom<ConfigSpec> for Config {
    type Error = String;

    fn try_from(spec: ConfigSpec) -> Result<Self, String> {
        Config::new(spec.splits, spec.sticky)
    }
}

/// One placement's share.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Split {
    /// The placement's name.
    pub placement: String,
    /// Its share, relative to the total of all weights.
    pub weight: u32,
}

impl Split {
    /// A split of `weight` to `placement`.
    pub fn new(placement: &str, weight: u32) -> Self {
        Split {
            placement: placement.to_string(),
            weight,
        }
    }
}

/// Where the sticky value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "StickySpec")]
pub enum Sticky {
    /// The request's routing key.
    RoutingKey,
    /// The first value of this request header.
    Header {
        /// The header's name.
        name: String,
    },
    /// This cookie's value.
    Cookie {
        /// The cookie's name.
        name: String,
    },
}

/// `sticky` as written: `{ source = "...", name = "..." }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StickySpec {
    source: Source,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Source {
    RoutingKey,
    Header,
    Cookie,
}

impl TryFrom<StickySpec> for Sticky {
    type Error = String;

    fn try_from(spec: StickySpec) -> Result<Self, String> {
        match (spec.source, spec.name) {
            (Source::RoutingKey, None) => Ok(Sticky::RoutingKey),
            (Source::RoutingKey, Some(_)) => {
                Err("`sticky.name` is not used with `source = \"routing_key\"`".into())
            }
            (Source::Header | Source::Cookie, None) => {
                Err("`sticky.name` is needed for a header or cookie source".into())
            }
            (Source::Header, Some(name)) => Ok(Sticky::Header { name }),
            (Source::Cookie, Some(name)) => Ok(Sticky::Cookie { name }),
        }
    }
}

impl Config {
    /// Checks and builds a configuration.
    pub fn new(splits: Vec<Split>, sticky: Option<Sticky>) -> Result<Self, String> {
        if splits.is_empty() {
            return Err("`splits` is empty: list at least one placement".into());
        }
        for (i, split) in splits.iter().enumerate() {
            if split.placement.is_empty() {
                return Err(format!("splits[{i}]: `placement` is empty"));
            }
            if splits[..i].iter().any(|s| s.placement == split.placement) {
                return Err(format!(
                    "placement `{}` appears twice in `splits`",
                    split.placement
                ));
            }
        }
        if splits.iter().all(|s| s.weight == 0) {
            return Err("every weight in `splits` is 0".into());
        }
        if let Some(Sticky::Header { name } | Sticky::Cookie { name }) = &sticky {
            if name.is_empty() {
                return Err("`sticky.name` is empty".into());
            }
        }
        Ok(Config { splits, sticky })
    }

    /// The sum of the weights.
    fn total(&self) -> u64 {
        self.splits.iter().map(|s| u64::from(s.weight)).sum()
    }

    /// The placement for a value hashing to `hash`, or `None` without splits.
    pub fn pick(&self, hash: u64) -> Option<&str> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        // `hash / 2^64` as a point in [0, total): multiply-shift keeps the
        // point's relative position when the total changes, which makes
        // weight changes monotonic (modulo would reshuffle everything).
        let point = ((u128::from(hash) * u128::from(total)) >> 64) as u64;
        let mut end = 0u64;
        for split in &self.splits {
            end += u64::from(split.weight);
            if point < end {
                return Some(&split.placement);
            }
        }
        unreachable!("point < total")
    }

    /// The sticky value of `request`, if configured and present.
    fn sticky_value(&self, request: &RequestView) -> Option<String> {
        let value = match self.sticky.as_ref()? {
            Sticky::RoutingKey => request.routing_key().map(str::to_string),
            Sticky::Header { name } => request.headers().get(name).map(|v| v.trim().to_string()),
            Sticky::Cookie { name } => request.headers().cookie(name),
        };
        value.filter(|v| !v.is_empty())
    }
}

/// FNV-1a 64 of `bytes`, then the murmur3 64-bit finalizer so the high
/// bits (which choose the split) depend on every input byte.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(PRIME);
    }
    fmix64(hash)
}

fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// The plugin.
pub struct TrafficSplit;

impl Plugin for TrafficSplit {
    type Config = Config;

    fn on_request(config: &Config, request: &RequestView) -> RequestAction {
        let sticky = config.sticky_value(request);
        let value = sticky.as_deref().unwrap_or_else(|| request.request_id());
        let Some(placement) = config.pick(stable_hash(value.as_bytes())) else {
            return RequestChanges::new().into();
        };
        host::counter_add(&format!("traffic_split_{placement}"), 1);
        RequestChanges::new().placement(placement).into()
    }
}

sluice_plugin_sdk::export!(TrafficSplit => on_request);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin_sdk::testing::{clear, expect_continue, recorded, request};

    fn split(pairs: &[(&str, u32)], sticky: Option<Sticky>) -> Config {
        Config::new(
            pairs.iter().map(|(p, w)| Split::new(p, *w)).collect(),
            sticky,
        )
        .unwrap()
    }

    fn placement_for(config: &Config, view: &RequestView) -> String {
        let changes = expect_continue(TrafficSplit::on_request(config, view));
        assert!(
            changes.headers.is_empty(),
            "the plugin only chooses a placement"
        );
        assert_eq!(
            (changes.path.as_deref(), changes.routing_key.as_deref()),
            (None, None)
        );
        changes.placement.expect("a placement")
    }

    fn by_key(config: &Config, key: &str) -> String {
        placement_for(config, &request("GET", "/").routing_key(key).build())
    }

    fn keys(n: usize) -> impl Iterator<Item = String> {
        (0..n).map(|i| format!("tenant-{i}"))
    }

    #[test]
    fn stable_hash_is_fnv1a_then_fmix() {
        // FNV-1a 64 of "" is its offset basis, of "a" the published vector.
        assert_eq!(stable_hash(b""), fmix64(0xcbf29ce484222325));
        assert_eq!(stable_hash(b"a"), fmix64(0xaf63dc4c8601ec8c));
        assert_eq!(stable_hash(b"foobar"), fmix64(0x85944171f73967e8));
    }

    #[test]
    fn weights_are_respected_within_tolerance() {
        let config = split(
            &[("blue", 70), ("green", 20), ("canary", 10)],
            Some(Sticky::RoutingKey),
        );
        let n = 20_000;
        let mut counts = std::collections::BTreeMap::new();
        for key in keys(n) {
            *counts.entry(by_key(&config, &key)).or_insert(0usize) += 1;
        }
        for (placement, weight) in [("blue", 70.0), ("green", 20.0), ("canary", 10.0)] {
            let share = counts[placement] as f64 / n as f64 * 100.0;
            assert!(
                (share - weight).abs() < 1.5,
                "{placement}: {share:.2}% for weight {weight}"
            );
        }
    }

    #[test]
    fn the_same_key_always_gets_the_same_placement() {
        let config = split(&[("blue", 50), ("green", 50)], Some(Sticky::RoutingKey));
        for key in keys(200) {
            let first = by_key(&config, &key);
            let view = request("POST", "/other")
                .routing_key(&key)
                .client("198.51.100.9")
                .build();
            for _ in 0..3 {
                assert_eq!(placement_for(&config, &view), first);
            }
        }
    }

    #[test]
    fn weight_changes_are_monotonic() {
        let before = split(&[("blue", 90), ("green", 10)], Some(Sticky::RoutingKey));
        let after = split(&[("blue", 80), ("green", 20)], Some(Sticky::RoutingKey));
        // A different total keeps the property too.
        let later = split(&[("blue", 130), ("green", 70)], Some(Sticky::RoutingKey));
        let n = 10_000;
        let (mut moved, mut green_before) = (0, 0);
        for key in keys(n) {
            let (b, a, l) = (
                by_key(&before, &key),
                by_key(&after, &key),
                by_key(&later, &key),
            );
            if b == "green" {
                green_before += 1;
                assert_eq!(a, "green", "{key} left green when green grew");
            }
            if a == "green" {
                assert_eq!(l, "green", "{key} left green when green grew again");
            }
            if b != a {
                moved += 1;
            }
        }
        assert!(green_before > 800, "{green_before}");
        // About a tenth of the keys move, blue to green only.
        assert!((800..1200).contains(&moved), "{moved} keys moved");
    }

    #[test]
    fn zero_weight_drains_a_placement() {
        let config = split(&[("blue", 0), ("green", 1)], Some(Sticky::RoutingKey));
        assert!(keys(500).all(|key| by_key(&config, &key) == "green"));
    }

    #[test]
    fn sticky_by_header_and_cookie() {
        let by_header = split(
            &[("a", 1), ("b", 1), ("c", 1)],
            Some(Sticky::Header {
                name: "X-User".into(),
            }),
        );
        let by_cookie = split(
            &[("a", 1), ("b", 1), ("c", 1)],
            Some(Sticky::Cookie { name: "sid".into() }),
        );
        let mut seen = std::collections::BTreeSet::new();
        for key in keys(100) {
            let expected = by_header
                .pick(stable_hash(key.as_bytes()))
                .unwrap()
                .to_string();
            let view = request("GET", "/")
                .header("x-user", &format!(" {key} "))
                .build();
            assert_eq!(placement_for(&by_header, &view), expected);
            let view = request("GET", "/")
                .header("cookie", &format!("theme=dark; sid={key}"))
                .build();
            assert_eq!(placement_for(&by_cookie, &view), expected);
            // The routing key does not matter to a header split.
            let view = request("GET", "/")
                .header("x-user", &key)
                .routing_key("other")
                .build();
            assert_eq!(placement_for(&by_header, &view), expected);
            seen.insert(expected);
        }
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn without_a_sticky_value_the_request_id_decides() {
        let sticky = split(
            &[("blue", 50), ("green", 50)],
            Some(Sticky::Header {
                name: "x-user".into(),
            }),
        );
        let plain = split(&[("blue", 50), ("green", 50)], None);
        let mut counts = [0usize; 2];
        for i in 0..4000 {
            let id = format!("01J{i:020}");
            let view = request("GET", "/")
                .routing_key("ignored")
                .request_id(&id)
                .build();
            let with_empty_header = request("GET", "/")
                .routing_key("ignored")
                .request_id(&id)
                .header("x-user", "")
                .build();
            let expected = plain.pick(stable_hash(id.as_bytes())).unwrap().to_string();
            assert_eq!(placement_for(&plain, &view), expected);
            // A missing or empty header falls back to the request id.
            assert_eq!(placement_for(&sticky, &view), expected);
            assert_eq!(placement_for(&sticky, &with_empty_header), expected);
            counts[usize::from(expected == "green")] += 1;
        }
        assert!(
            counts.iter().all(|c| (1800..2200).contains(c)),
            "{counts:?}"
        );
    }

    #[test]
    fn counts_each_choice() {
        clear();
        let config = split(&[("only", 1)], None);
        by_key(&config, "k");
        assert_eq!(
            recorded().counters,
            vec![("traffic_split_only".to_string(), 1)]
        );
        assert!(recorded().logs.is_empty());
    }

    #[test]
    fn default_config_leaves_routing_alone() {
        let changes = expect_continue(TrafficSplit::on_request(
            &Config::default(),
            &request("GET", "/").build(),
        ));
        assert_eq!(changes, RequestChanges::new());
    }

    #[test]
    fn config_parses_from_toml_tables() {
        let config: Config = sluice_plugin_sdk::testing::config(
            r#"splits = [{"placement": "blue", "weight": 90}, {"placement": "green", "weight": 10}]
               sticky = {"source": "cookie", "name": "session"}"#,
        );
        assert_eq!(
            config.splits,
            vec![Split::new("blue", 90), Split::new("green", 10)]
        );
        assert_eq!(
            config.sticky,
            Some(Sticky::Cookie {
                name: "session".into()
            })
        );
        let config: Config = sluice_plugin_sdk::testing::config(
            r#"splits = [{"placement": "blue", "weight": 1}]
               sticky = {"source": "routing_key"}"#,
        );
        assert_eq!(config.sticky, Some(Sticky::RoutingKey));
        let config: Config =
            sluice_plugin_sdk::testing::config(r#"splits = [{"placement": "blue", "weight": 1}]"#);
        assert_eq!(config.sticky, None);
    }

    #[test]
    fn configure_refuses_an_invalid_config_with_serde_s_message() {
        use sluice_plugin_sdk::testing::{configure, on_request};
        let error = configure::<TrafficSplit>("{}").unwrap_err();
        assert!(error.contains("missing field `splits`"), "{error}");
        let error = configure::<TrafficSplit>(r#"{"splits": []}"#).unwrap_err();
        assert!(error.contains("`splits` is empty"), "{error}");

        configure::<TrafficSplit>(r#"{"splits": [{"placement": "only", "weight": 1}]}"#).unwrap();
        let changes = expect_continue(on_request::<TrafficSplit>(&request("GET", "/").build()));
        assert_eq!(changes.placement.as_deref(), Some("only"));
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let error = |json: &str| {
            serde_json::from_str::<Config>(json)
                .unwrap_err()
                .to_string()
        };
        assert!(error(r#"{"splits": []}"#).contains("`splits` is empty"));
        assert!(error(r#"{"splits": [{"placement": "a", "weight": 0}]}"#).contains("every weight"));
        assert!(error(
            r#"{"splits": [{"placement": "a", "weight": 1}, {"placement": "a", "weight": 1}]}"#
        )
        .contains("appears twice"));
        assert!(error(r#"{"splits": [{"placement": "", "weight": 1}]}"#)
            .contains("`placement` is empty"));
        let one = r#""splits": [{"placement": "a", "weight": 1}]"#;
        assert!(
            error(&format!(r#"{{{one}, "sticky": {{"source": "header"}}}}"#))
                .contains("`sticky.name` is needed")
        );
        assert!(error(&format!(
            r#"{{{one}, "sticky": {{"source": "header", "name": ""}}}}"#
        ))
        .contains("empty"));
        assert!(error(&format!(
            r#"{{{one}, "sticky": {{"source": "query", "name": "q"}}}}"#
        ))
        .contains("unknown variant"));
        assert!(error(&format!(
            r#"{{{one}, "sticky": {{"source": "routing_key", "name": "x"}}}}"#
        ))
        .contains("not used with"));
        assert!(error(&format!(r#"{{{one}, "stiky": {{}}}}"#)).contains("unknown field `stiky`"));
        assert!(
            error(r#"{"splits": [{"placement": "a", "weight": 1, "w": 2}]}"#)
                .contains("unknown field `w`")
        );
        assert!(
            error(r#"{"splits": [{"placement": "a", "weight": -1}]}"#).contains("invalid value")
        );
    }
}
