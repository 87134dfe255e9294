//! A plugin built against `sluice:plugin@0.3.0`, the contract whose hooks
//! handed header changes over as a list of records (`wit/plugin.wit` here
//! is a copy of it). Sluice must refuse to load it, naming both versions.

wit_bindgen::generate!({
    world: "sluice-plugin",
    path: "wit",
});

use exports::sluice::plugin::{
    placement_policy, plugin, request_body_hook, request_hook, response_body_hook, response_hook,
};
use sluice::plugin::request;
use sluice::plugin::types::{HeaderChange, HeaderOp, Hook, RequestChanges};

/// The plugin: its request hook sets one header, the others change nothing.
struct Old;

impl plugin::Guest for Old {
    fn hooks() -> Vec<Hook> {
        vec![Hook::OnRequest]
    }

    fn configure(_config: String) -> Result<(), String> {
        Ok(())
    }
}

impl request_hook::Guest for Old {
    fn on_request() {
        request::apply(&RequestChanges {
            headers: vec![HeaderChange {
                op: HeaderOp::Set,
                name: "x-old-contract".into(),
                value: "1".into(),
            }],
            path: None,
            routing_key: None,
            placement: None,
        });
    }
}

impl response_hook::Guest for Old {
    fn on_response() {}
}

impl placement_policy::Guest for Old {
    fn select_placement() {}
}

impl request_body_hook::Guest for Old {
    fn on_request_body() {}
}

impl response_body_hook::Guest for Old {
    fn on_response_body() {}
}

export!(Old);
