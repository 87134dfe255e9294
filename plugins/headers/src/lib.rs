//! `headers`: set, add or remove request and response headers, with
//! placeholders, like Caddy's `header` and `header_up`.
//!
//! ```toml
//! [[routes.plugins]]
//! name = "headers"
//! config.request = { set = { "x-real-host" = "{host}" }, add = { "via" = "sluice" }, remove = ["x-debug"] }
//! config.response = { set = { "x-served-by" = "{upstream}" }, remove = ["server"] }
//! ```
//!
//! Rules apply in the order remove, set, add. Placeholders in values:
//! `{host}`, `{method}`, `{path}`, `{query}`, `{uri}`, `{request_id}`,
//! `{route}`, `{client_ip}`, `{routing_key}`, and in response rules also
//! `{upstream}`, `{placement}` and `{status}`. An unknown placeholder is
//! kept as written.

use std::collections::BTreeMap;

use serde::Deserialize;
use sluice_plugin_sdk::prelude::*;

/// The plugin's configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Rules for the request sent upstream.
    #[serde(default)]
    pub request: Rules,
    /// Rules for the response sent to the client.
    #[serde(default)]
    pub response: Rules,
}

/// Header rules.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Replace (or add) these headers.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Append these values.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Remove these headers.
    #[serde(default)]
    pub remove: Vec<String>,
}

impl Rules {
    fn changes(&self, expand: impl Fn(&str) -> String) -> HeaderChanges {
        HeaderChanges {
            remove: self.remove.iter().map(|n| n.to_ascii_lowercase()).collect(),
            set: self
                .set
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), expand(v)))
                .collect(),
            append: self
                .add
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), expand(v)))
                .collect(),
        }
    }
}

/// The plugin.
pub struct Headers;

impl Plugin for Headers {
    type Config = Config;

    fn on_request(config: &Config, request: &RequestView) -> RequestAction {
        let mut changes = RequestChanges::new();
        changes.headers = config
            .request
            .changes(|value| expand(value, &|name| request_placeholder(request, name)));
        changes.into()
    }

    fn on_response(config: &Config, response: &ResponseView) -> ResponseChanges {
        let mut changes = ResponseChanges::new();
        changes.headers = config
            .response
            .changes(|value| expand(value, &|name| response_placeholder(response, name)));
        changes
    }
}

sluice_plugin_sdk::export!(Headers => on_request, on_response);

fn request_placeholder(request: &RequestView, name: &str) -> Option<String> {
    Some(match name {
        "host" => request.authority.clone(),
        "method" => request.method.clone(),
        "path" => request.path.clone(),
        "query" => request.query.clone().unwrap_or_default(),
        "uri" => sluice_plugin_sdk::headers::with_query(&request.path, request.query.as_deref()),
        "request_id" => request.request_id.clone(),
        "route" => request.route.clone(),
        "client_ip" => request.client_address.clone(),
        "routing_key" => request.routing_key.clone().unwrap_or_default(),
        _ => return None,
    })
}

fn response_placeholder(response: &ResponseView, name: &str) -> Option<String> {
    Some(match name {
        "host" => response.authority.clone(),
        "method" => response.method.clone(),
        "path" => response.path.clone(),
        "request_id" => response.request_id.clone(),
        "route" => response.route.clone(),
        "upstream" => response.endpoint.clone(),
        "placement" => response.placement.clone(),
        "status" => response.status.to_string(),
        _ => return None,
    })
}

/// Replaces each `{name}` the lookup knows; keeps the others as written.
fn expand(value: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => match lookup(&after[..close]) {
                Some(replacement) => {
                    out.push_str(&replacement);
                    rest = &after[close + 1..];
                }
                None => {
                    out.push('{');
                    rest = after;
                }
            },
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin_sdk::testing::{expect_continue, request, response};

    fn config() -> Config {
        Config {
            request: Rules {
                set: [
                    ("X-Real-Host".to_string(), "{host}".to_string()),
                    ("x-trace".to_string(), "{request_id}@{path}".to_string()),
                ]
                .into(),
                add: [("via".to_string(), "sluice {method}".to_string())].into(),
                remove: vec!["X-Debug".into()],
            },
            response: Rules {
                set: [(
                    "x-served-by".to_string(),
                    "{upstream} ({placement}, {status})".to_string(),
                )]
                .into(),
                add: BTreeMap::new(),
                remove: vec!["server".into()],
            },
        }
    }

    #[test]
    fn request_rules_with_placeholders() {
        let view = request("POST", "/orders?id=7")
            .authority("shop.example.com")
            .header("x-debug", "1")
            .build();
        let changes = expect_continue(Headers::on_request(&config(), &view));
        assert_eq!(changes.headers.remove, vec!["x-debug"]);
        assert_eq!(
            changes.headers.set,
            vec![
                ("x-real-host".to_string(), "shop.example.com".to_string()),
                ("x-trace".to_string(), "test-request-id@/orders".to_string())
            ]
        );
        assert_eq!(
            changes.headers.append,
            vec![("via".to_string(), "sluice POST".to_string())]
        );
        assert_eq!(changes.path, None);
    }

    #[test]
    fn response_rules_see_the_upstream() {
        let view = request("GET", "/").build();
        let changes = Headers::on_response(&config(), &response(201, &view));
        assert_eq!(
            changes.headers.set,
            vec![(
                "x-served-by".to_string(),
                "127.0.0.1:9000 (test-placement, 201)".to_string()
            )]
        );
        assert_eq!(changes.headers.remove, vec!["server"]);
        assert_eq!(changes.status, None);
    }

    #[test]
    fn unknown_and_unclosed_placeholders_stay() {
        let lookup = |name: &str| (name == "a").then(|| "A".to_string());
        assert_eq!(expand("{a}-{b}-{a", &lookup), "A-{b}-{a");
        assert_eq!(expand("plain", &lookup), "plain");
    }

    #[test]
    fn config_parses_from_toml_tables() {
        let config: Config =
            sluice_plugin_sdk::testing::config(r#"request = {"set": {"x-a": "1"}}"#);
        assert_eq!(config.request.set["x-a"], "1");
    }
}
