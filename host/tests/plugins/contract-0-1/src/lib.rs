//! A plugin built against `sluice:plugin@0.1.0`, the contract before hooks
//! made their changes through handles (`wit/plugin.wit` here is a copy of
//! it). Sluice must refuse to load it, naming both versions.

wit_bindgen::generate!({
    world: "sluice-plugin",
    path: "wit",
});

use exports::sluice::plugin::{placement_policy, plugin, request_hook, response_hook};
use sluice::plugin::types::{
    Candidate, HeaderChanges, Hook, PlacementChoice, Request, RequestAction, RequestChanges,
    Response, ResponseChanges,
};

/// The plugin: every hook changes nothing.
struct Old;

fn no_header_changes() -> HeaderChanges {
    HeaderChanges {
        remove: Vec::new(),
        set: Vec::new(),
        append: Vec::new(),
    }
}

impl plugin::Guest for Old {
    fn hooks() -> Vec<Hook> {
        vec![Hook::OnRequest]
    }

    fn configure(_config: String) -> Result<(), String> {
        Ok(())
    }
}

impl request_hook::Guest for Old {
    fn on_request(_request: &Request) -> RequestAction {
        RequestAction::Continue(RequestChanges {
            headers: no_header_changes(),
            path: None,
            routing_key: None,
            placement: None,
        })
    }
}

impl response_hook::Guest for Old {
    fn on_response(_request: &Request, _response: &Response) -> ResponseChanges {
        ResponseChanges {
            status: None,
            headers: no_header_changes(),
        }
    }
}

impl placement_policy::Guest for Old {
    fn select_placement(_request: &Request, _candidates: Vec<Candidate>) -> PlacementChoice {
        PlacementChoice::Defer
    }
}

export!(Old);
