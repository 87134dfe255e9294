//! `api-key`: answer `401` unless the request carries one of the configured
//! API keys. Attach it fail-closed, so a broken plugin or configuration
//! never lets requests through:
//!
//! ```toml
//! [[routes.plugins]]
//! name = "api-key"
//! failure = "closed"
//! config = { keys = ["k1", { id = "ci", key = "k2" }, { id = "partner", sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" }], header = "x-api-key", bearer = true, query = "api_key" }
//! ```
//!
//! # Where the key comes from
//!
//! - the `header` (default `x-api-key`; `""` turns it off);
//! - `Authorization: Bearer <key>`, when `bearer = true` (the default);
//! - the query parameter named by `query` (off unless set). Its value is
//!   percent-decoded (`+` stays `+`).
//!
//! The request passes if any of them carries a configured key.
//!
//! # Keys
//!
//! `keys` lists keys as strings, or as `{ id, key }` or `{ id, sha256 }`
//! tables; `keys_sha256` lists hex SHA-256 digests of keys, so the keys
//! themselves need not be in the configuration. Every key has an id: the
//! one given, else its position (`keys[0]`, `keys_sha256[1]`). Give
//! explicit ids when rotating keys, so ids do not shift.
//!
//! The plugin keeps only the SHA-256 digest of each key. A presented key is
//! hashed and compared with every configured digest, in constant time, with
//! no early exit, so the time taken reveals neither how much of a key
//! matched, nor which key, nor how long the keys are.
//!
//! # On success
//!
//! The plugin sets `id_header` (default `x-api-key-id`; `""` turns it off)
//! to the key's id, replacing any value the client sent, and counts
//! `api_key_accepted`. With `strip = true` (the default) it removes the
//! credentials before the request goes upstream: the key header, the query
//! parameter (the upstream path then carries the rest of the query), and
//! the `Authorization` header only when its bearer token is a configured
//! key (it may carry credentials meant for the upstream otherwise). Attach
//! `api-key` before plugins that rewrite the path.
//!
//! # On failure
//!
//! `401` with `www-authenticate: ApiKey` and a short text body, a debug log
//! line saying whether the key was missing or wrong, and `api_key_rejected`.
//! Neither a key nor a digest ever appears in a header, a body, a log line
//! or a configuration error.
//!
//! # Configuration errors
//!
//! No keys, an empty key, a malformed digest, a repeated id or key, no
//! source of keys, or an unknown field make the configuration fail to
//! parse, and the plugin refuses it with a message saying which. Sluice
//! checks each attachment's configuration when a config is loaded, so such
//! a config is rejected, with that message, before it serves traffic. The
//! default (empty) configuration has no keys and rejects every request.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use sluice_plugin_sdk::headers::{query_param, with_query};
use sluice_plugin_sdk::prelude::*;
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

/// The plugin's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "ConfigSpec")]
pub struct Config {
    keys: Vec<Key>,
    /// The header carrying the key, lowercase; empty when off.
    pub header: String,
    /// Whether `Authorization: Bearer <key>` is accepted.
    pub bearer: bool,
    /// The query parameter carrying the key, if any.
    pub query: Option<String>,
    /// Whether to remove the credentials before the request goes upstream.
    pub strip: bool,
    /// The header that tells the upstream which key was used; empty when off.
    pub id_header: String,
}

impl Default for Config {
    /// No keys: every request is rejected.
    fn default() -> Self {
        Config {
            keys: Vec::new(),
            header: default_header(),
            bearer: true,
            query: None,
            strip: true,
            id_header: default_id_header(),
        }
    }
}

/// A configured key: its id and the SHA-256 digest of its value.
#[derive(Clone)]
struct Key {
    id: String,
    digest: [u8; 32],
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// A configuration accepting `keys` (ids `keys[0]`, `keys[1]`, ...) with
    /// the default sources and options.
    pub fn with_keys(keys: &[&str]) -> Self {
        let spec = ConfigSpec {
            keys: Secrets(
                keys.iter()
                    .map(|k| KeySpec::Plain(Secret(k.to_string())))
                    .collect(),
            ),
            ..ConfigSpec::default()
        };
        Config::try_from(spec).expect("valid keys")
    }

    /// The ids of the configured keys, in order.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// The key `presented` matches, compared in constant time against all.
    fn find(&self, presented: &str) -> Option<&Key> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut matched = Choice::from(0);
        let mut index = 0u32;
        for (i, key) in self.keys.iter().enumerate() {
            let equal = digest[..].ct_eq(&key.digest[..]);
            index.conditional_assign(&(i as u32), equal);
            matched |= equal;
        }
        bool::from(matched).then(|| &self.keys[index as usize])
    }
}

fn default_header() -> String {
    "x-api-key".into()
}

fn default_id_header() -> String {
    "x-api-key-id".into()
}

fn yes() -> bool {
    true
}

/// The configuration as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigSpec {
    #[serde(default)]
    keys: Secrets<KeySpec>,
    #[serde(default)]
    keys_sha256: Secrets<Secret>,
    #[serde(default = "default_header")]
    header: String,
    #[serde(default = "yes")]
    bearer: bool,
    #[serde(default)]
    query: Option<String>,
    #[serde(default = "yes")]
    strip: bool,
    #[serde(default = "default_id_header")]
    id_header: String,
}

impl Default for ConfigSpec {
    fn default() -> Self {
        ConfigSpec {
            keys: Secrets(Vec::new()),
            keys_sha256: Secrets(Vec::new()),
            header: default_header(),
            bearer: true,
            query: None,
            strip: true,
            id_header: default_id_header(),
        }
    }
}

impl TryFrom<ConfigSpec> for Config {
    type Error = String;

    fn try_from(spec: ConfigSpec) -> Result<Self, String> {
        let mut keys = Vec::new();
        for (i, entry) in spec.keys.0.into_iter().enumerate() {
            let position = format!("keys[{i}]");
            let (id, digest) = match entry {
                KeySpec::Plain(secret) => (position.clone(), digest_of(&secret, &position)?),
                KeySpec::Named(named) => {
                    let digest = match (named.key, named.sha256) {
                        (Some(secret), None) => digest_of(&secret, &position)?,
                        (None, Some(hex)) => parse_digest(&hex, &position)?,
                        _ => {
                            return Err(format!(
                                "{position}: give exactly one of `key` and `sha256`"
                            ))
                        }
                    };
                    (named.id, digest)
                }
            };
            keys.push(Key { id, digest });
        }
        for (i, hex) in spec.keys_sha256.0.into_iter().enumerate() {
            let position = format!("keys_sha256[{i}]");
            let digest = parse_digest(&hex, &position)?;
            keys.push(Key {
                id: position,
                digest,
            });
        }
        if keys.is_empty() {
            return Err("no keys: set `keys` or `keys_sha256`".into());
        }
        for (i, key) in keys.iter().enumerate() {
            if key.id.is_empty()
                || key.id.len() > 128
                || !key.id.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
            {
                return Err(format!(
                    "key id `{}` must be 1 to 128 visible ASCII characters",
                    key.id.escape_default()
                ));
            }
            if let Some(other) = keys[..i].iter().find(|k| k.id == key.id) {
                return Err(format!("two keys have the id `{}`", other.id));
            }
            if let Some(other) = keys[..i].iter().find(|k| k.digest == key.digest) {
                return Err(format!(
                    "keys `{}` and `{}` are the same key",
                    other.id, key.id
                ));
            }
        }
        let header = spec.header.trim().to_ascii_lowercase();
        let id_header = spec.id_header.trim().to_ascii_lowercase();
        let query = spec.query.filter(|q| !q.is_empty());
        for name in [&header, &id_header] {
            if !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            {
                return Err(format!(
                    "`{}` is not a valid header name",
                    name.escape_default()
                ));
            }
        }
        if header.is_empty() && !spec.bearer && query.is_none() {
            return Err("no source of keys: set `header`, `bearer = true` or `query`".into());
        }
        if !id_header.is_empty() && (id_header == header || id_header == "authorization") {
            return Err(format!(
                "`id_header` `{id_header}` would overwrite a credential header"
            ));
        }
        Ok(Config {
            keys,
            header,
            bearer: spec.bearer,
            query,
            strip: spec.strip,
            id_header,
        })
    }
}

fn digest_of(secret: &Secret, position: &str) -> Result<[u8; 32], String> {
    if secret.0.is_empty() {
        return Err(format!("{position}: the key is empty"));
    }
    Ok(Sha256::digest(secret.0.as_bytes()).into())
}

fn parse_digest(hex: &Secret, position: &str) -> Result<[u8; 32], String> {
    let hex = hex.0.trim().as_bytes();
    let invalid = || format!("{position}: a SHA-256 digest is 64 hexadecimal characters");
    if hex.len() != 64 {
        return Err(invalid());
    }
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.chunks(2)) {
        let high = (pair[0] as char).to_digit(16).ok_or_else(invalid)?;
        let low = (pair[1] as char).to_digit(16).ok_or_else(invalid)?;
        *byte = (high * 16 + low) as u8;
    }
    Ok(digest)
}

/// A key entry: a string, or `{ id, key }` / `{ id, sha256 }`.
enum KeySpec {
    Plain(Secret),
    Named(NamedKey),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedKey {
    id: String,
    #[serde(default)]
    key: Option<Secret>,
    #[serde(default)]
    sha256: Option<Secret>,
}

/// A string that never appears in an error message. serde's default errors
/// quote the value they rejected, and Sluice shows a refused configuration's
/// error wherever it reports config errors (`sluice check`, its log, the
/// admin API).
struct Secret(String);

/// A list of secrets, whose errors do not quote what they rejected either.
struct Secrets<T>(Vec<T>);

impl<T> Default for Secrets<T> {
    fn default() -> Self {
        Secrets(Vec::new())
    }
}

/// Rejects every scalar without quoting it.
macro_rules! reject_scalars {
    ($what:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(E::custom(concat!("expected ", $what, ", found a boolean")))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(E::custom(concat!(
                "expected ",
                $what,
                ", found a number (not shown)"
            )))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(E::custom(concat!(
                "expected ",
                $what,
                ", found a number (not shown)"
            )))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(E::custom(concat!(
                "expected ",
                $what,
                ", found a number (not shown)"
            )))
        }
        fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Self::Value, E> {
            Err(E::custom(concat!(
                "expected ",
                $what,
                ", found bytes (not shown)"
            )))
        }
    };
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecretVisitor;
        impl<'de> Visitor<'de> for SecretVisitor {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Secret, E> {
                Ok(Secret(value.to_string()))
            }
            reject_scalars!("a string");
        }
        deserializer.deserialize_any(SecretVisitor)
    }
}

impl<'de> Deserialize<'de> for KeySpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = KeySpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key string, or a table `{ id, key }` or `{ id, sha256 }`")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<KeySpec, E> {
                Ok(KeySpec::Plain(Secret(value.to_string())))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<KeySpec, A::Error> {
                NamedKey::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(KeySpec::Named)
            }
            reject_scalars!("a key string or table");
        }
        deserializer.deserialize_any(KeyVisitor)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Secrets<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
            type Value = Secrets<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Secrets<T>, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Secrets(items))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Secrets<T>, E> {
                Err(E::custom("expected a list, found a string (not shown)"))
            }
            reject_scalars!("a list");
        }
        deserializer.deserialize_any(ListVisitor(std::marker::PhantomData))
    }
}

/// Where a presented key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Header,
    Bearer,
    Query,
}

/// The plugin.
pub struct ApiKey;

impl Plugin for ApiKey {
    type Config = Config;

    fn on_request(config: &Config, request: &RequestView) -> RequestAction {
        let presented = presented_keys(config, request);
        let matches: Vec<(Source, Option<&Key>)> = presented
            .iter()
            .map(|(source, value)| (*source, config.find(value)))
            .collect();
        let Some(key) = matches.iter().find_map(|(_, key)| *key) else {
            host::counter_add("api_key_rejected", 1);
            let reason = if presented.is_empty() {
                "no API key"
            } else {
                "the API key matched no configured key"
            };
            host::debug(&format!(
                "rejected request {}: {reason}",
                request.request_id()
            ));
            return ImmediateResponse::text(401, "401 Unauthorized: a valid API key is required\n")
                .header("www-authenticate", "ApiKey")
                .into();
        };
        host::counter_add("api_key_accepted", 1);
        let mut changes = RequestChanges::new();
        if config.strip {
            if !config.header.is_empty() && request.headers().contains(&config.header) {
                changes = changes.remove_header(&config.header);
            }
            // `Authorization` goes only if it carried a key: else it may
            // hold the upstream's own credentials.
            if matches
                .iter()
                .any(|(source, key)| *source == Source::Bearer && key.is_some())
            {
                changes = changes.remove_header("authorization");
            }
            if let Some(name) = &config.query {
                if query_param(request.query(), name).is_some() {
                    let rest = without_param(request.query().unwrap_or(""), name);
                    changes = changes.path(with_query(request.path(), Some(&rest)));
                }
            }
        }
        if !config.id_header.is_empty() {
            changes = changes.set_header(&config.id_header, &key.id);
        }
        changes.into()
    }
}

sluice_plugin_sdk::export!(ApiKey => on_request);

/// The non-empty keys the request presents, in source order.
fn presented_keys(config: &Config, request: &RequestView) -> Vec<(Source, String)> {
    let headers = request.headers();
    let mut found = Vec::new();
    if !config.header.is_empty() {
        found.extend(
            headers
                .get_all(&config.header)
                .into_iter()
                .map(|v| (Source::Header, v.trim().to_string())),
        );
    }
    if config.bearer {
        found.extend(
            headers
                .get_all("authorization")
                .into_iter()
                .filter_map(|value| {
                    let (scheme, token) = value.trim().split_once(' ')?;
                    scheme
                        .eq_ignore_ascii_case("bearer")
                        .then(|| (Source::Bearer, token.trim().to_string()))
                }),
        );
    }
    if let Some(name) = &config.query {
        if let Some(value) = query_param(request.query(), name) {
            found.push((Source::Query, percent_decode(value)));
        }
    }
    found.retain(|(_, value)| !value.is_empty());
    found
}

/// `query` without the parameter `name`.
fn without_param(query: &str, name: &str) -> String {
    query
        .split('&')
        .filter(|pair| !pair.is_empty() && pair.split_once('=').map_or(*pair, |(k, _)| k) != name)
        .collect::<Vec<_>>()
        .join("&")
}

/// Decodes `%XX` escapes; malformed ones stay as written.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin_sdk::testing::{
        clear, expect_continue, expect_respond, recorded, request, RequestBuilder,
    };

    const KEY: &str = "s3cr3t-KEY-0123456789";
    const OTHER: &str = "another-key-abcdef";

    fn keys() -> Config {
        Config::with_keys(&[OTHER, KEY])
    }

    fn parse(json: &str) -> Result<Config, String> {
        serde_json::from_str::<Config>(json).map_err(|e| e.to_string())
    }

    fn sha256_hex(value: &str) -> String {
        Sha256::digest(value.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn run(config: &Config, builder: RequestBuilder) -> RequestAction {
        ApiKey::on_request(config, &builder.build())
    }

    /// Checks the 401 and that nothing the plugin emitted holds `secret`.
    fn assert_rejected(action: RequestAction, secret: &str) {
        let response = expect_respond(action);
        assert_eq!(response.status, 401);
        assert!(response
            .headers
            .contains(&("www-authenticate".to_string(), "ApiKey".to_string())));
        let body = String::from_utf8(response.body).unwrap();
        assert!(body.contains("API key"), "{body}");
        assert!(!body.contains(secret));
        assert!(response
            .headers
            .iter()
            .all(|(n, v)| !n.contains(secret) && !v.contains(secret)));
    }

    fn assert_nothing_recorded_holds(secret: &str) {
        let record = recorded();
        assert!(
            record.logs.iter().all(|(_, line)| !line.contains(secret)),
            "{:?}",
            record.logs
        );
        assert!(record
            .counters
            .iter()
            .all(|(name, _)| !name.contains(secret)));
    }

    fn counters() -> Vec<(String, u64)> {
        recorded().counters
    }

    #[test]
    fn a_missing_key_is_rejected() {
        clear();
        assert_rejected(run(&keys(), request("GET", "/")), KEY);
        assert_rejected(
            run(&keys(), request("GET", "/").header("x-api-key", "  ")),
            KEY,
        );
        assert_rejected(
            run(
                &keys(),
                request("GET", "/").header("authorization", "Basic dTpw"),
            ),
            KEY,
        );
        assert_eq!(counters(), vec![("api_key_rejected".to_string(), 1); 3]);
        assert!(recorded()
            .logs
            .iter()
            .all(|(level, line)| *level == host::Level::Debug && line.contains("no API key")));
    }

    #[test]
    fn a_wrong_key_is_rejected() {
        clear();
        let wrong = "s3cr3t-KEY-012345678"; // a prefix of the right one
        assert_rejected(
            run(&keys(), request("GET", "/").header("x-api-key", wrong)),
            wrong,
        );
        assert_rejected(
            run(
                &keys(),
                request("GET", "/").header("authorization", &format!("Bearer {wrong}")),
            ),
            wrong,
        );
        assert_rejected(
            run(&keys(), request("GET", &format!("/?api_key={KEY}"))),
            KEY,
        ); // `query` is off by default
        assert_eq!(counters(), vec![("api_key_rejected".to_string(), 1); 3]);
        assert!(recorded().logs[0].1.contains("matched no configured key"));
        assert_nothing_recorded_holds(wrong);
        assert_nothing_recorded_holds(KEY);
    }

    #[test]
    fn the_right_key_in_the_header_passes_and_is_stripped() {
        clear();
        let action = run(
            &keys(),
            request("GET", "/a?x=1")
                .header("X-Api-Key", KEY)
                .header("x-api-key-id", "forged"),
        );
        let changes = expect_continue(action);
        assert_eq!(
            changes.headers.iter().collect::<Vec<_>>(),
            [
                HeaderChange::Remove("x-api-key"),
                HeaderChange::Set("x-api-key-id", "keys[1]"),
            ]
        );
        assert_eq!(changes.path, None);
        assert_eq!(counters(), vec![("api_key_accepted".to_string(), 1)]);
        assert_nothing_recorded_holds(KEY);
    }

    #[test]
    fn a_bearer_token_passes_and_only_then_authorization_is_stripped() {
        let changes = expect_continue(run(
            &keys(),
            request("GET", "/").header("authorization", &format!("bearer   {KEY}")),
        ));
        assert_eq!(
            changes.headers.iter().collect::<Vec<_>>(),
            [
                HeaderChange::Remove("authorization"),
                HeaderChange::Set("x-api-key-id", "keys[1]"),
            ]
        );

        // The key in the header, an upstream token in `Authorization`: that stays.
        let view = request("GET", "/")
            .header("x-api-key", OTHER)
            .header("authorization", "Bearer upstream-jwt");
        let changes = expect_continue(run(&keys(), view));
        assert_eq!(
            changes.headers.iter().collect::<Vec<_>>(),
            [
                HeaderChange::Remove("x-api-key"),
                HeaderChange::Set("x-api-key-id", "keys[0]"),
            ]
        );

        // With `bearer = false`, a bearer token is not a key.
        let config = parse(&format!(r#"{{"keys": ["{KEY}"], "bearer": false}}"#)).unwrap();
        assert_rejected(
            run(
                &config,
                request("GET", "/").header("authorization", &format!("Bearer {KEY}")),
            ),
            KEY,
        );
    }

    #[test]
    fn a_query_key_passes_and_is_removed_from_the_query() {
        let config = parse(&format!(
            r#"{{"keys": ["{OTHER}", {{"id": "ci", "key": "a+b/c="}}], "query": "api_key"}}"#
        ))
        .unwrap();
        let changes = expect_continue(run(
            &config,
            request("GET", "/v1/items?page=2&api_key=a+b%2Fc%3D&sort=asc"),
        ));
        assert_eq!(changes.path.as_deref(), Some("/v1/items?page=2&sort=asc"));
        assert_eq!(
            changes.headers.iter().collect::<Vec<_>>(),
            [HeaderChange::Set("x-api-key-id", "ci")]
        );
        let changes = expect_continue(run(&config, request("GET", &format!("/x?api_key={OTHER}"))));
        assert_eq!(changes.path.as_deref(), Some("/x"));
        // A wrong query key with a right header key: passes, and the query key goes too.
        let changes = expect_continue(run(
            &config,
            request("GET", "/x?api_key=nope&a=1").header("x-api-key", OTHER),
        ));
        assert_eq!(changes.path.as_deref(), Some("/x?a=1"));
        assert_eq!(
            changes.headers.iter().collect::<Vec<_>>(),
            [
                HeaderChange::Remove("x-api-key"),
                HeaderChange::Set("x-api-key-id", "keys[0]"),
            ]
        );
    }

    #[test]
    fn strip_false_and_no_id_header_leave_the_request_alone() {
        let config = parse(&format!(
            r#"{{"keys": ["{KEY}"], "strip": false, "id_header": "", "query": "k"}}"#
        ))
        .unwrap();
        let changes = expect_continue(run(
            &config,
            request("GET", &format!("/?k={KEY}")).header("x-api-key", KEY),
        ));
        assert_eq!(changes, RequestChanges::new());
    }

    #[test]
    fn sha256_keys_and_named_ids() {
        let json = format!(
            r#"{{"keys": [{{"id": "partner", "sha256": "{}"}}], "keys_sha256": ["{}"], "header": "X-Token"}}"#,
            sha256_hex(OTHER).to_uppercase(),
            sha256_hex(KEY)
        );
        let config = parse(&json).unwrap();
        assert_eq!(
            config.key_ids().collect::<Vec<_>>(),
            vec!["partner", "keys_sha256[0]"]
        );
        let changes = expect_continue(run(&config, request("GET", "/").header("x-token", KEY)));
        assert_eq!(
            changes.headers.iter().collect::<Vec<_>>(),
            [
                HeaderChange::Remove("x-token"),
                HeaderChange::Set("x-api-key-id", "keys_sha256[0]"),
            ]
        );
        let changes = expect_continue(run(&config, request("GET", "/").header("x-token", OTHER)));
        assert_eq!(
            changes.headers.iter().collect::<Vec<_>>(),
            [
                HeaderChange::Remove("x-token"),
                HeaderChange::Set("x-api-key-id", "partner"),
            ]
        );
        // The digest itself is not a key.
        assert_rejected(
            run(
                &config,
                request("GET", "/").header("x-token", &sha256_hex(KEY)),
            ),
            KEY,
        );
    }

    #[test]
    fn the_key_never_leaks_through_headers_set_or_logs() {
        clear();
        let config = keys();
        let view = request("GET", "/")
            .header("x-api-key", KEY)
            .header("authorization", &format!("Bearer {KEY}"));
        let changes = expect_continue(run(&config, view));
        assert!(changes.headers.iter().all(|change| match change {
            HeaderChange::Set(name, value) | HeaderChange::Append(name, value) =>
                !name.contains(KEY) && !value.contains(KEY),
            HeaderChange::Remove(_) => true,
        }));
        // Every credential that carried the key is stripped.
        let removed: Vec<_> = changes
            .headers
            .iter()
            .filter(|change| matches!(change, HeaderChange::Remove(_)))
            .collect();
        assert_eq!(
            removed,
            [
                HeaderChange::Remove("x-api-key"),
                HeaderChange::Remove("authorization")
            ]
        );
        assert!(!format!("{config:?}").contains(KEY));
        assert!(!format!("{config:?}").contains(&sha256_hex(KEY)));
        assert_rejected(
            run(
                &config,
                request("GET", "/").header("x-api-key", &format!("{KEY}x")),
            ),
            KEY,
        );
        assert_nothing_recorded_holds(KEY);
    }

    #[test]
    fn constant_time_lookup_finds_any_position() {
        let many: Vec<String> = (0..20)
            .map(|i| format!("key-{i:02}-{}", "x".repeat(i)))
            .collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let config = Config::with_keys(&refs);
        for (i, key) in many.iter().enumerate() {
            assert_eq!(
                config.find(key).map(|k| k.id.clone()),
                Some(format!("keys[{i}]"))
            );
        }
        assert!(config.find("key-00").is_none());
        assert!(config.find("").is_none());
    }

    #[test]
    fn the_default_configuration_rejects_everything() {
        assert_rejected(
            run(
                &Config::default(),
                request("GET", "/").header("x-api-key", KEY),
            ),
            KEY,
        );
    }

    #[test]
    fn config_parses_from_toml_tables() {
        let config: Config = sluice_plugin_sdk::testing::config(
            r#"keys = ["k1", {"id": "ci", "key": "k2"}]
               header = "x-key"
               bearer = false
               query = "api_key"
               strip = false
               id_header = "x-client""#,
        );
        assert_eq!(config.key_ids().collect::<Vec<_>>(), vec!["keys[0]", "ci"]);
        assert_eq!(
            (
                config.header.as_str(),
                config.bearer,
                config.query.as_deref()
            ),
            ("x-key", false, Some("api_key"))
        );
        assert_eq!(
            (config.strip, config.id_header.as_str()),
            (false, "x-client")
        );
        let config: Config = sluice_plugin_sdk::testing::config(r#"keys = ["k1"]"#);
        assert_eq!(
            (
                config.header.as_str(),
                config.bearer,
                config.query.as_deref()
            ),
            ("x-api-key", true, None)
        );
        assert_eq!(
            (config.strip, config.id_header.as_str()),
            (true, "x-api-key-id")
        );
    }

    #[test]
    fn invalid_configs_are_rejected_without_quoting_keys() {
        let cases = [
            (r#"{}"#.to_string(), "no keys"),
            (r#"{"keys": []}"#.to_string(), "no keys"),
            (r#"{"keys": [""]}"#.to_string(), "keys[0]: the key is empty"),
            (format!(r#"{{"keys": "{KEY}"}}"#), "expected a list"),
            (r#"{"keys": [123456789]}"#.to_string(), "found a number"),
            (
                format!(
                    r#"{{"keys": [{{"id": "a", "key": "{KEY}", "sha256": "{}"}}]}}"#,
                    sha256_hex(KEY)
                ),
                "exactly one",
            ),
            (
                format!(r#"{{"keys": [{{"id": "a", "secret": "{KEY}"}}]}}"#),
                "unknown field `secret`",
            ),
            (
                r#"{"keys": [{"id": "a", "key": 42}]}"#.to_string(),
                "found a number",
            ),
            (
                format!(r#"{{"keys_sha256": ["{}"]}}"#, &sha256_hex(KEY)[1..]),
                "64 hexadecimal",
            ),
            (
                format!(r#"{{"keys_sha256": ["{}zz"]}}"#, &sha256_hex(KEY)[2..]),
                "64 hexadecimal",
            ),
            (
                format!(r#"{{"keys": ["{KEY}", "{KEY}"]}}"#),
                "are the same key",
            ),
            (
                format!(
                    r#"{{"keys": [{{"id": "a", "key": "{KEY}"}}, {{"id": "a", "key": "x"}}]}}"#
                ),
                "two keys have the id `a`",
            ),
            (
                format!(r#"{{"keys": [{{"id": "", "key": "{KEY}"}}]}}"#),
                "key id",
            ),
            (
                format!(r#"{{"keys": ["{KEY}"], "header": "", "bearer": false}}"#),
                "no source of keys",
            ),
            (
                format!(r#"{{"keys": ["{KEY}"], "header": "bad header"}}"#),
                "not a valid header name",
            ),
            (
                format!(r#"{{"keys": ["{KEY}"], "id_header": "x-api-key"}}"#),
                "would overwrite",
            ),
            (
                format!(r#"{{"keys": ["{KEY}"], "strip": "yes"}}"#),
                "invalid type",
            ),
            (format!(r#"{{"key": ["{KEY}"]}}"#), "unknown field `key`"),
        ];
        for (json, expected) in cases {
            let error = parse(&json).unwrap_err();
            assert!(error.contains(expected), "{json}: {error}");
            assert!(!error.contains(KEY) && !error.contains("s3cr3t"), "{error}");
            assert!(!error.contains(&sha256_hex(KEY)[2..]), "{error}");
        }
    }

    #[test]
    fn an_invalid_configuration_is_refused_without_the_key_in_the_error() {
        clear();
        let error =
            sluice_plugin_sdk::testing::configure::<ApiKey>(&format!(r#"{{"keys": "{KEY}"}}"#))
                .unwrap_err();
        assert!(error.contains("expected a list"), "{error}");
        assert!(!error.contains(KEY), "{error}");
        assert_nothing_recorded_holds(KEY);

        let valid = format!(r#"{{"keys": ["{KEY}"]}}"#);
        sluice_plugin_sdk::testing::configure::<ApiKey>(&valid).unwrap();
        let view = request("GET", "/").header("x-api-key", KEY).build();
        expect_continue(sluice_plugin_sdk::testing::on_request::<ApiKey>(&view));
    }

    #[test]
    fn helpers() {
        assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
        assert_eq!(without_param("a=1&k=2&b&k&c=3", "k"), "a=1&b&c=3");
        assert_eq!(without_param("k=1", "k"), "");
    }
}
