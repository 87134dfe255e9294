//! A plugin built against `sluice:plugin@0.2.0`, the contract whose hooks
//! took resource handles and changed messages through their methods
//! (`wit/plugin.wit` here is a copy of it). Sluice must refuse to load it,
//! naming both versions.

wit_bindgen::generate!({
    world: "sluice-plugin",
    path: "wit",
});

use exports::sluice::plugin::{
    placement_policy, plugin, request_body_hook, request_hook, response_body_hook, response_hook,
};
use sluice::plugin::types::{Body, Candidates, Hook, Request, Response};

/// The plugin: every hook changes nothing.
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
    fn on_request(_request: &Request) {}
}

impl response_hook::Guest for Old {
    fn on_response(_request: &Request, _response: &Response) {}
}

impl placement_policy::Guest for Old {
    fn select_placement(_request: &Request, _candidates: &Candidates) {}
}

impl request_body_hook::Guest for Old {
    fn on_request_body(_request: &Request, _body: &Body) {}
}

impl response_body_hook::Guest for Old {
    fn on_response_body(_request: &Request, _response: &Response, _body: &Body) {}
}

export!(Old);
