//! A native test kit: build request and response views, run hooks with a
//! configuration, and inspect what they logged and counted, all under plain
//! `cargo test`, with no wasm build and no host.
//!
//! ```
//! use sluice_plugin_sdk::prelude::*;
//! use sluice_plugin_sdk::testing::*;
//!
//! #[derive(Default, serde::Deserialize)]
//! struct Config { header: String }
//!
//! struct Tagger;
//!
//! impl Plugin for Tagger {
//!     type Config = Config;
//!     fn on_request(config: &Config, request: &RequestView) -> RequestAction {
//!         host::counter_add("tagged", 1);
//!         RequestChanges::new().set_header(&config.header, request.route()).into()
//!     }
//! }
//!
//! // Call the hook directly with a config built in the test...
//! let request = request("GET", "/users/7").route("users").build();
//! let config = Config { header: "x-route".into() };
//! let changes = expect_continue(Tagger::on_request(&config, &request));
//! assert_eq!(changes.headers.iter().collect::<Vec<_>>(), [HeaderChange::Set("x-route", "users")]);
//!
//! // ...or through the same steps as in Sluice: configure from JSON, then call.
//! configure::<Tagger>(r#"{"header": "x-tag"}"#).unwrap();
//! let changes = expect_continue(on_request::<Tagger>(&request));
//! assert!(matches!(changes.headers.iter().next(), Some(HeaderChange::Set("x-tag", _))));
//! assert_eq!(recorded().counters, [("tagged".to_string(), 1), ("tagged".to_string(), 1)]);
//! ```

use std::cell::RefCell;

use crate::host::Level;
use crate::view::{RequestFields, ResponseFields};
use crate::{
    Candidate, PlacementChoice, Plugin, RequestAction, RequestChanges, RequestView,
    ResponseChanges, ResponseView,
};

thread_local! {
    static RECORD: RefCell<Record> = RefCell::new(Record::default());
}

/// What hooks logged and counted on this thread.
#[derive(Debug, Default, Clone)]
pub struct Record {
    /// Log lines.
    pub logs: Vec<(Level, String)>,
    /// Counter increments.
    pub counters: Vec<(String, u64)>,
    /// Histogram observations.
    pub histograms: Vec<(String, f64)>,
}

/// What was recorded on this thread so far.
pub fn recorded() -> Record {
    RECORD.with(|r| r.borrow().clone())
}

/// Forgets what was recorded on this thread.
pub fn clear() {
    RECORD.with(|r| *r.borrow_mut() = Record::default());
}

/// Hands `json` to the plugin as Sluice does before a call: the plugin's
/// own error when it refuses it. The hooks below then run with it.
pub fn configure<P: Plugin>(json: &str) -> Result<(), String> {
    crate::configure::<P>(json)
}

/// Runs `on_request` with the configuration [`configure`] took.
pub fn on_request<P: Plugin>(request: &RequestView) -> RequestAction {
    crate::with_config::<P, _>(|config| P::on_request(config, request))
}

/// Runs `on_response` with the configuration [`configure`] took.
pub fn on_response<P: Plugin>(request: &RequestView, response: &ResponseView) -> ResponseChanges {
    crate::with_config::<P, _>(|config| P::on_response(config, request, response))
}

/// Runs `on_request_body` with the configuration [`configure`] took.
pub fn on_request_body<P: Plugin>(request: &RequestView, body: &[u8]) -> Option<Vec<u8>> {
    crate::with_config::<P, _>(|config| P::on_request_body(config, request, body))
}

/// Runs `on_response_body` with the configuration [`configure`] took.
pub fn on_response_body<P: Plugin>(
    request: &RequestView,
    response: &ResponseView,
    body: &[u8],
) -> Option<Vec<u8>> {
    crate::with_config::<P, _>(|config| P::on_response_body(config, request, response, body))
}

/// Runs `select_placement` with the configuration [`configure`] took.
pub fn select_placement<P: Plugin>(
    request: &RequestView,
    candidates: &[Candidate],
) -> PlacementChoice {
    crate::with_config::<P, _>(|config| P::select_placement(config, request, candidates))
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn record_log(level: Level, message: &str) {
    RECORD.with(|r| r.borrow_mut().logs.push((level, message.to_string())));
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn record_counter(name: &str, value: u64) {
    RECORD.with(|r| r.borrow_mut().counters.push((name.to_string(), value)));
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn record_histogram(name: &str, value: f64) {
    RECORD.with(|r| r.borrow_mut().histograms.push((name.to_string(), value)));
}

/// Parses a TOML table into a plugin configuration, as the host does with a
/// route's plugin table.
pub fn config<C: serde::de::DeserializeOwned>(toml_text: &str) -> C {
    let value: serde_json::Value = toml_to_json(toml_text);
    serde_json::from_value(value).expect("the test configuration matches the plugin's Config")
}

fn toml_to_json(text: &str) -> serde_json::Value {
    // The SDK stays free of a TOML parser; the accepted subset is one
    // `key = value` per line with JSON-compatible values, enough for tests.
    let mut map = serde_json::Map::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (key, value) = line.split_once('=').expect("key = value");
        let value = serde_json::from_str(value.trim()).expect("a JSON-compatible value");
        map.insert(key.trim().to_string(), value);
    }
    serde_json::Value::Object(map)
}

/// Starts a request view: `GET`-like method, path with optional `?query`,
/// host `example.com`, client `192.0.2.1`, route `test-route`, request id
/// `test-request-id`, no routing key and no headers.
pub fn request(method: &str, path_and_query: &str) -> RequestBuilder {
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path.to_string(), Some(query.to_string())),
        None => (path_and_query.to_string(), None),
    };
    RequestBuilder(RequestFields {
        method: method.to_string().into(),
        path: path.into(),
        query: query.into(),
        authority: "example.com".to_string().into(),
        client_address: "192.0.2.1".to_string().into(),
        route: "test-route".to_string().into(),
        routing_key: None.into(),
        request_id: "test-request-id".to_string().into(),
        headers: Vec::new(),
    })
}

/// Builds a [`RequestView`].
pub struct RequestBuilder(RequestFields);

impl RequestBuilder {
    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.0
            .headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// Sets the host.
    pub fn authority(mut self, authority: &str) -> Self {
        self.0.authority = authority.to_string().into();
        self
    }

    /// Sets the route name.
    pub fn route(mut self, route: &str) -> Self {
        self.0.route = route.to_string().into();
        self
    }

    /// Sets the routing key.
    pub fn routing_key(mut self, key: &str) -> Self {
        self.0.routing_key = Some(key.to_string()).into();
        self
    }

    /// Sets the request id.
    pub fn request_id(mut self, id: &str) -> Self {
        self.0.request_id = id.to_string().into();
        self
    }

    /// Sets the client address.
    pub fn client(mut self, address: &str) -> Self {
        self.0.client_address = address.to_string().into();
        self
    }

    /// The view.
    pub fn build(self) -> RequestView {
        RequestView::owned(self.0)
    }
}

/// Starts a response view with `status`, served by placement
/// `test-placement` at endpoint `127.0.0.1:9000`, with no headers.
pub fn response(status: u16) -> ResponseBuilder {
    ResponseBuilder(ResponseFields {
        status: status.into(),
        placement: "test-placement".to_string().into(),
        endpoint: "127.0.0.1:9000".to_string().into(),
        headers: Vec::new(),
    })
}

/// Builds a [`ResponseView`].
pub struct ResponseBuilder(ResponseFields);

impl ResponseBuilder {
    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.0
            .headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// Sets the placement that served it.
    pub fn placement(mut self, placement: &str) -> Self {
        self.0.placement = placement.to_string().into();
        self
    }

    /// Sets the endpoint that served it.
    pub fn endpoint(mut self, endpoint: &str) -> Self {
        self.0.endpoint = endpoint.to_string().into();
        self
    }

    /// The view.
    pub fn build(self) -> ResponseView {
        ResponseView::owned(self.0)
    }
}

/// A healthy candidate placement with `endpoints` endpoints.
pub fn candidate(name: &str, endpoints: u32) -> Candidate {
    Candidate {
        name: name.to_string(),
        healthy_endpoints: endpoints,
        total_endpoints: endpoints,
        open_breakers: 0,
        half_open_breakers: 0,
        in_flight: 0,
        limit: None,
        weight: endpoints,
    }
}

/// The changes of a `Continue`, or a panic naming what came instead.
pub fn expect_continue(action: RequestAction) -> RequestChanges {
    match action {
        RequestAction::Continue(changes) => changes,
        RequestAction::Respond(response) => {
            panic!("expected continue, got a {} response", response.status)
        }
    }
}

/// The response of a `Respond`, or a panic.
pub fn expect_respond(action: RequestAction) -> crate::ImmediateResponse {
    match action {
        RequestAction::Respond(response) => response,
        RequestAction::Continue(_) => panic!("expected an immediate response, got continue"),
    }
}
