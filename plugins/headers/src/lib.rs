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
//! `{host}`, `{method}`, `{path}`, `{request_id}` and `{route}`, from the
//! request, in both; `{query}`, `{uri}`, `{client_ip}` and `{routing_key}` in
//! request rules; `{upstream}`, `{placement}` and `{status}`, from the
//! response, in response rules. An unknown placeholder is kept as written.

use std::collections::BTreeMap;

use serde::Deserialize;
use sluice_plugin_sdk::prelude::*;

/// The plugin's configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Rules for the request sent upstream.
    #[serde(default)]
    pub request: RequestRules,
    /// Rules for the response sent to the client.
    #[serde(default)]
    pub response: ResponseRules,
}

/// Header rules as written in the configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WrittenRules {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    add: BTreeMap<String, String>,
    #[serde(default)]
    remove: Vec<String>,
}

/// Header rules, with names lowercased and values parsed into templates
/// once, when the configuration is taken, not on every call.
#[derive(Debug, Default)]
pub struct Rules {
    set: Vec<(String, Template)>,
    add: Vec<(String, Template)>,
    remove: Vec<String>,
}

impl Rules {
    fn compile(written: WrittenRules, fields: &[(&str, Field)]) -> Self {
        let templates = |map: BTreeMap<String, String>| {
            map.into_iter()
                .map(|(name, value)| (name.to_ascii_lowercase(), Template::parse(&value, fields)))
                .collect()
        };
        Self {
            set: templates(written.set),
            add: templates(written.add),
            remove: written
                .remove
                .iter()
                .map(|n| n.to_ascii_lowercase())
                .collect(),
        }
    }

    fn changes(&self, field: impl Fn(Field, &mut String)) -> HeaderChanges {
        let mut changes = HeaderChanges::new();
        for name in &self.remove {
            changes.remove_header(name);
        }
        // One buffer renders every value: each is copied into the changes.
        let mut value = String::with_capacity(RENDERED_CAPACITY);
        for (name, template) in &self.set {
            template.render(&field, &mut value);
            changes.set_header(name, &value);
        }
        for (name, template) in &self.add {
            template.render(&field, &mut value);
            changes.append_header(name, &value);
        }
        changes
    }
}

/// The room made for a rendered value at first: most are a host name, an
/// address or an id.
const RENDERED_CAPACITY: usize = 64;

/// Rules for the request; placeholders are the request's.
#[derive(Debug, Default, Deserialize)]
#[serde(from = "WrittenRules")]
pub struct RequestRules(Rules);

impl From<WrittenRules> for RequestRules {
    fn from(written: WrittenRules) -> Self {
        Self(Rules::compile(written, REQUEST_FIELDS))
    }
}

/// Rules for the response; placeholders are the response's and some of the
/// request's.
#[derive(Debug, Default, Deserialize)]
#[serde(from = "WrittenRules")]
pub struct ResponseRules(Rules);

impl From<WrittenRules> for ResponseRules {
    fn from(written: WrittenRules) -> Self {
        Self(Rules::compile(written, RESPONSE_FIELDS))
    }
}

/// What a placeholder stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Host,
    Method,
    Path,
    Query,
    Uri,
    RequestId,
    Route,
    ClientIp,
    RoutingKey,
    Upstream,
    Placement,
    Status,
}

const REQUEST_FIELDS: &[(&str, Field)] = &[
    ("host", Field::Host),
    ("method", Field::Method),
    ("path", Field::Path),
    ("query", Field::Query),
    ("uri", Field::Uri),
    ("request_id", Field::RequestId),
    ("route", Field::Route),
    ("client_ip", Field::ClientIp),
    ("routing_key", Field::RoutingKey),
];

const RESPONSE_FIELDS: &[(&str, Field)] = &[
    ("host", Field::Host),
    ("method", Field::Method),
    ("path", Field::Path),
    ("request_id", Field::RequestId),
    ("route", Field::Route),
    ("upstream", Field::Upstream),
    ("placement", Field::Placement),
    ("status", Field::Status),
];

/// A header value with placeholders, split into text and fields.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Template(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(Field),
}

impl Template {
    /// Splits `value` at each `{name}` that `fields` knows; any other
    /// brace stays text, as written.
    fn parse(value: &str, fields: &[(&str, Field)]) -> Self {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = value;
        while let Some(open) = rest.find('{') {
            text.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let known = after.find('}').and_then(|close| {
                let name = &after[..close];
                let field = fields.iter().find(|(n, _)| *n == name)?.1;
                Some((field, close))
            });
            match known {
                Some((field, close)) => {
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Field(field));
                    rest = &after[close + 1..];
                }
                None => {
                    text.push('{');
                    rest = after;
                }
            }
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Self(parts)
    }

    /// Writes the value into `out`, replacing what it held.
    fn render(&self, field: &impl Fn(Field, &mut String), out: &mut String) {
        out.clear();
        for part in &self.0 {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Field(f) => field(*f, out),
            }
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
            .0
            .changes(|field, out| request_field(request, field, out));
        changes.into()
    }

    fn on_response(
        config: &Config,
        request: &RequestView,
        response: &ResponseView,
    ) -> ResponseChanges {
        let mut changes = ResponseChanges::new();
        changes.headers = config.response.0.changes(|field, out| match field {
            Field::Upstream => out.push_str(response.endpoint()),
            Field::Placement => out.push_str(response.placement()),
            Field::Status => out.push_str(&response.status().to_string()),
            _ => request_field(request, field, out),
        });
        changes
    }
}

sluice_plugin_sdk::export!(Headers => on_request, on_response);

/// Appends a request field's value to `out`.
fn request_field(request: &RequestView, field: Field, out: &mut String) {
    match field {
        Field::Host => out.push_str(request.authority()),
        Field::Method => out.push_str(request.method()),
        Field::Path => out.push_str(request.path()),
        Field::Query => out.push_str(request.query().unwrap_or_default()),
        Field::Uri => {
            out.push_str(request.path());
            if let Some(query) = request.query().filter(|q| !q.is_empty()) {
                out.push('?');
                out.push_str(query);
            }
        }
        Field::RequestId => out.push_str(request.request_id()),
        Field::Route => out.push_str(request.route()),
        Field::ClientIp => out.push_str(request.client_address()),
        Field::RoutingKey => out.push_str(request.routing_key().unwrap_or_default()),
        Field::Upstream | Field::Placement | Field::Status => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin_sdk::testing::{expect_continue, request, response};

    fn config() -> Config {
        sluice_plugin_sdk::testing::config(
            r#"request = {"set": {"X-Real-Host": "{host}", "x-trace": "{request_id}@{path}"}, "add": {"via": "sluice {method}"}, "remove": ["X-Debug"]}
response = {"set": {"x-served-by": "{upstream} ({placement}, {status})"}, "remove": ["server"]}"#,
        )
    }

    #[test]
    fn request_rules_with_placeholders() {
        let view = request("POST", "/orders?id=7")
            .authority("shop.example.com")
            .header("x-debug", "1")
            .build();
        let changes = expect_continue(Headers::on_request(&config(), &view));
        assert_eq!(
            changes.headers.iter().collect::<Vec<_>>(),
            [
                HeaderChange::Remove("x-debug"),
                HeaderChange::Set("x-real-host", "shop.example.com"),
                HeaderChange::Set("x-trace", "test-request-id@/orders"),
                HeaderChange::Append("via", "sluice POST"),
            ]
        );
        assert_eq!(changes.path, None);
    }

    #[test]
    fn response_rules_see_the_upstream() {
        let view = request("GET", "/").build();
        let changes = Headers::on_response(&config(), &view, &response(201).build());
        assert_eq!(
            changes.headers.iter().collect::<Vec<_>>(),
            [
                HeaderChange::Remove("server"),
                HeaderChange::Set("x-served-by", "127.0.0.1:9000 (test-placement, 201)"),
            ]
        );
        assert_eq!(changes.status, None);
    }

    #[test]
    fn response_rules_see_the_request() {
        let config: Config = sluice_plugin_sdk::testing::config(
            r#"response = {"set": {"x-origin": "{method} {host}{path} {request_id} {route} {placement}"}}"#,
        );
        let view = request("DELETE", "/items/3?force=1")
            .authority("shop.example.com")
            .route("shop")
            .request_id("req-42")
            .build();
        let served = response(204)
            .placement("eu")
            .endpoint("10.0.0.7:80")
            .build();
        let changes = Headers::on_response(&config, &view, &served);
        assert_eq!(
            changes.headers.iter().collect::<Vec<_>>(),
            [HeaderChange::Set(
                "x-origin",
                "DELETE shop.example.com/items/3 req-42 shop eu"
            )]
        );
    }

    #[test]
    fn unknown_and_unclosed_placeholders_stay() {
        let fields = [("a", Field::Host)];
        let template = Template::parse("{a}-{b}-{a", &fields);
        assert_eq!(
            template,
            Template(vec![Part::Field(Field::Host), Part::Text("-{b}-{a".into())])
        );
        let render = |field: Field, out: &mut String| {
            assert_eq!(field, Field::Host);
            out.push('A');
        };
        let mut out = "left over".to_string();
        template.render(&render, &mut out);
        assert_eq!(out, "A-{b}-{a");
        Template::parse("plain", &fields).render(&render, &mut out);
        assert_eq!(out, "plain");
        // A response placeholder is text in a request rule.
        assert_eq!(
            Template::parse("{status}", REQUEST_FIELDS),
            Template(vec![Part::Text("{status}".into())])
        );
    }

    #[test]
    fn config_parses_from_toml_tables() {
        let config: Config =
            sluice_plugin_sdk::testing::config(r#"request = {"set": {"X-A": "1"}}"#);
        assert_eq!(
            config.request.0.set,
            vec![("x-a".to_string(), Template(vec![Part::Text("1".into())]))]
        );
    }
}
