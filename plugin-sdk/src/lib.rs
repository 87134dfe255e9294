//! The Sluice plugin SDK.
//!
//! A plugin is a type implementing [`Plugin`], whose hooks all have
//! defaults, and one [`export!`] line naming the hooks it implements:
//!
//! ```
//! use sluice_plugin_sdk::prelude::*;
//!
//! #[derive(Default, serde::Deserialize)]
//! struct Config { header: String }
//!
//! struct Tagger;
//!
//! impl Plugin for Tagger {
//!     type Config = Config;
//!     fn on_request(config: &Config, request: &RequestView) -> RequestAction {
//!         RequestChanges::new().set_header(&config.header, request.route()).into()
//!     }
//! }
//!
//! sluice_plugin_sdk::export!(Tagger => on_request);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` and drop the
//! `.wasm` file into Sluice's plugin directory. The types come from the WIT
//! contract in `wit/plugin.wit` through `wit-bindgen`; this crate adds constructors and
//! helpers on them, typed configuration (parsed once per configuration, not
//! per call), headers read on demand through [`HeaderView`], host logging
//! and metrics, and [`testing`], which runs hooks natively under plain
//! `cargo test`.

#![deny(missing_docs)]

use std::any::Any;
use std::cell::RefCell;
use std::rc::Rc;

/// The component's allocator. A hook call allocates for every string it
/// reads from Sluice and every change it makes, and frees them all when
/// the call ends; with wasi-libc's dlmalloc that was a quarter of a call's
/// time. Talc, with freed small blocks reused in front of it
/// ([`allocator`]), does the same work in a fraction of it. A plugin that
/// brings its own allocator turns the `allocator` feature off.
#[cfg(all(
    feature = "allocator",
    target_family = "wasm",
    not(target_feature = "atomics")
))]
#[global_allocator]
static ALLOCATOR: allocator::CachingTalc = allocator::CachingTalc::new();

#[cfg(all(feature = "allocator", not(target_feature = "atomics")))]
pub mod allocator;
mod changes;
#[doc(hidden)]
pub mod glue;
#[doc(hidden)]
pub mod header_changes;
pub mod headers;
pub mod host;
pub mod testing;
mod view;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "sluice-plugin",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "export_sluice_plugin",
        default_bindings_module: "sluice_plugin_sdk::bindings",
        additional_derives: [PartialEq],
    });
}

pub use bindings::sluice::plugin::types::{Headers, Hook, ImmediateResponse};
pub use changes::{HeaderChange, HeaderChanges};
pub use headers::HeaderView;
pub use view::{RequestView, ResponseView};

/// Everything a plugin usually needs.
pub mod prelude {
    pub use crate::{
        host, Candidate, HeaderChange, HeaderChanges, HeaderView, Hook, ImmediateResponse,
        PlacementChoice, Plugin, RequestAction, RequestChanges, RequestView, ResponseChanges,
        ResponseView,
    };
}

/// A Sluice plugin. Implement the hooks you need; [`export!`] names them.
pub trait Plugin {
    /// The plugin's configuration, deserialized from the JSON the host
    /// hands over (the route's TOML table for this plugin). A table that
    /// does not deserialize is refused when the config is loaded, with
    /// serde's message.
    type Config: serde::de::DeserializeOwned + Default + 'static;

    /// Runs on each request before it is routed: change it, or answer it.
    fn on_request(config: &Self::Config, request: &RequestView) -> RequestAction {
        let _ = (config, request);
        RequestAction::Continue(RequestChanges::new())
    }

    /// Runs on each response's status and headers.
    fn on_response(
        config: &Self::Config,
        request: &RequestView,
        response: &ResponseView,
    ) -> ResponseChanges {
        let _ = (config, request, response);
        ResponseChanges::new()
    }

    /// Chooses a placement among `candidates`, or defers to the routing
    /// table. The routing key is `request.routing_key()`.
    fn select_placement(
        config: &Self::Config,
        request: &RequestView,
        candidates: &[Candidate],
    ) -> PlacementChoice {
        let _ = (config, request, candidates);
        PlacementChoice::Defer
    }

    /// Runs on the whole request body (buffered up to the attachment's
    /// `body_limit`) before it goes upstream: a new body, or `None` to
    /// keep it. Sluice fixes the framing headers.
    fn on_request_body(
        config: &Self::Config,
        request: &RequestView,
        body: &[u8],
    ) -> Option<Vec<u8>> {
        let _ = (config, request, body);
        None
    }

    /// Runs on the whole response body (buffered up to the attachment's
    /// `body_limit`) before it goes to the client: a new body, or `None`
    /// to keep it. Sluice fixes the framing headers.
    fn on_response_body(
        config: &Self::Config,
        request: &RequestView,
        response: &ResponseView,
        body: &[u8],
    ) -> Option<Vec<u8>> {
        let _ = (config, request, response, body);
        None
    }
}

/// How a request continues: the changes `on_request` makes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestChanges {
    /// Header changes.
    pub headers: HeaderChanges,
    /// A new path, optionally with `?query`, for the upstream request.
    pub path: Option<String>,
    /// A new routing key; the table lookup then uses it.
    pub routing_key: Option<String>,
    /// A placement to use instead of the routing decision; it must be one
    /// of the route's placements.
    pub placement: Option<String>,
}

/// What `on_request` decides.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestAction {
    /// Go on, with these changes.
    Continue(RequestChanges),
    /// Answer the request now.
    Respond(ImmediateResponse),
}

/// Changes to a response: what `on_response` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseChanges {
    /// A new status, 200 to 599.
    pub status: Option<u16>,
    /// Header changes.
    pub headers: HeaderChanges,
}

/// What a placement policy decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlacementChoice {
    /// This placement, by name; it must be one of the candidates.
    Placement(String),
    /// No opinion: the routing table decides.
    Defer,
}

/// A placement a policy may choose, with its live state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The placement's name.
    pub name: String,
    /// Endpoints that are healthy and whose breaker admits requests.
    pub healthy_endpoints: u32,
    /// All its endpoints.
    pub total_endpoints: u32,
    /// Endpoints whose breaker is open.
    pub open_breakers: u32,
    /// Endpoints whose breaker is half-open (admitting probes).
    pub half_open_breakers: u32,
    /// Requests in flight.
    pub in_flight: u32,
    /// The concurrency limit, if any.
    pub limit: Option<u32>,
    /// The sum of its endpoints' weights.
    pub weight: u32,
}

impl RequestChanges {
    /// Continue unchanged.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a request header, replacing any value.
    pub fn set_header(mut self, name: &str, value: &str) -> Self {
        self.headers.set_header(name, value);
        self
    }

    /// Appends a request header value.
    pub fn append_header(mut self, name: &str, value: &str) -> Self {
        self.headers.append_header(name, value);
        self
    }

    /// Removes a request header.
    pub fn remove_header(mut self, name: &str) -> Self {
        self.headers.remove_header(name);
        self
    }

    /// Rewrites the upstream path (optionally with `?query`).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Sets the routing key the table lookup uses.
    pub fn routing_key(mut self, key: impl Into<String>) -> Self {
        self.routing_key = Some(key.into());
        self
    }

    /// Sends the request to this placement.
    pub fn placement(mut self, name: impl Into<String>) -> Self {
        self.placement = Some(name.into());
        self
    }
}

impl From<RequestChanges> for RequestAction {
    fn from(changes: RequestChanges) -> Self {
        RequestAction::Continue(changes)
    }
}

impl From<ImmediateResponse> for RequestAction {
    fn from(response: ImmediateResponse) -> Self {
        RequestAction::Respond(response)
    }
}

impl ImmediateResponse {
    /// A response with a plain-text body.
    pub fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }
}

impl ResponseChanges {
    /// No changes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a response header, replacing any value.
    pub fn set_header(mut self, name: &str, value: &str) -> Self {
        self.headers.set_header(name, value);
        self
    }

    /// Appends a response header value.
    pub fn append_header(mut self, name: &str, value: &str) -> Self {
        self.headers.append_header(name, value);
        self
    }

    /// Removes a response header.
    pub fn remove_header(mut self, name: &str) -> Self {
        self.headers.remove_header(name);
        self
    }

    /// Replaces the status.
    pub fn status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }
}

/// Sends panic messages to the host's log instead of stderr: a plugin has no
/// stdio, and the panic then ends the call as a trap the host handles.
fn route_panics_to_the_host_log() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    #[cfg(target_arch = "wasm32")]
    INSTALLED.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            host::error(&format!("plugin panicked: {info}"))
        }));
    });
    #[cfg(not(target_arch = "wasm32"))]
    let _ = &INSTALLED;
}

/// Configurations parsed on this instance, most recently used last: a
/// plugin attached to several routes switches between a few of them.
struct Configs {
    current: Option<Rc<dyn Any>>,
    recent: Vec<(String, Rc<dyn Any>)>,
}

/// How many parsed configurations an instance keeps.
const RECENT_CONFIGS: usize = 8;

thread_local! {
    static CONFIGS: RefCell<Configs> = const {
        RefCell::new(Configs { current: None, recent: Vec::new() })
    };
}

/// Takes `json` as the configuration of the calls that follow, parsing it
/// unless it is one of the recent ones: the export glue's `configure`.
#[doc(hidden)]
pub fn configure<P: Plugin>(json: &str) -> Result<(), String> {
    route_panics_to_the_host_log();
    CONFIGS.with(|configs| {
        let mut configs = configs.borrow_mut();
        configs.current = None;
        let parsed = match configs.recent.iter().position(|(text, _)| text == json) {
            Some(index) => configs.recent.remove(index).1,
            None => {
                let parsed: P::Config = if json.trim().is_empty() {
                    P::Config::default()
                } else {
                    serde_json::from_str(json).map_err(|e| e.to_string())?
                };
                Rc::new(parsed)
            }
        };
        if configs.recent.len() == RECENT_CONFIGS {
            configs.recent.remove(0);
        }
        configs.recent.push((json.to_string(), parsed.clone()));
        configs.current = Some(parsed);
        Ok(())
    })
}

/// Runs `call` with the configuration `configure` took last, or the
/// default one before any.
#[doc(hidden)]
pub fn with_config<P: Plugin, R>(call: impl FnOnce(&P::Config) -> R) -> R {
    route_panics_to_the_host_log();
    let current = CONFIGS.with(|configs| configs.borrow().current.clone());
    match current
        .as_deref()
        .and_then(|c| c.downcast_ref::<P::Config>())
    {
        Some(config) => call(config),
        None => call(&P::Config::default()),
    }
}

/// Exports a [`Plugin`] type as the component's hooks:
/// `export!(MyPlugin => on_request, on_response)`. The hooks named are the
/// ones Sluice calls and may attach; the others are never called.
#[macro_export]
macro_rules! export {
    ($plugin:ty => $($hook:ident),+ $(,)?) => {
        #[doc(hidden)]
        pub struct __SluicePluginExport;

        impl $crate::bindings::exports::sluice::plugin::plugin::Guest for __SluicePluginExport {
            fn hooks() -> ::std::vec::Vec<$crate::Hook> {
                ::std::vec![$($crate::__hook!($hook)),+]
            }

            fn configure(config: ::std::string::String) -> ::std::result::Result<(), ::std::string::String> {
                $crate::configure::<$plugin>(&config)
            }
        }

        impl $crate::bindings::exports::sluice::plugin::request_hook::Guest for __SluicePluginExport {
            fn on_request() {
                $crate::glue::on_request::<$plugin>()
            }
        }

        impl $crate::bindings::exports::sluice::plugin::response_hook::Guest for __SluicePluginExport {
            fn on_response() {
                $crate::glue::on_response::<$plugin>()
            }
        }

        impl $crate::bindings::exports::sluice::plugin::placement_policy::Guest for __SluicePluginExport {
            fn select_placement() {
                $crate::glue::select_placement::<$plugin>()
            }
        }

        impl $crate::bindings::exports::sluice::plugin::request_body_hook::Guest for __SluicePluginExport {
            fn on_request_body() {
                $crate::glue::on_request_body::<$plugin>()
            }
        }

        impl $crate::bindings::exports::sluice::plugin::response_body_hook::Guest for __SluicePluginExport {
            fn on_response_body() {
                $crate::glue::on_response_body::<$plugin>()
            }
        }

        // Only a wasm build exports the hooks: a native build (for `cargo
        // test`) cannot carry the component-model export names.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::export_sluice_plugin!(__SluicePluginExport with_types_in $crate::bindings);
    };
}

/// Maps a hook's method name to its [`Hook`] value.
#[doc(hidden)]
#[macro_export]
macro_rules! __hook {
    (on_request) => {
        $crate::Hook::OnRequest
    };
    (on_response) => {
        $crate::Hook::OnResponse
    };
    (select_placement) => {
        $crate::Hook::SelectPlacement
    };
    (on_request_body) => {
        $crate::Hook::OnRequestBody
    };
    (on_response_body) => {
        $crate::Hook::OnResponseBody
    };
}
