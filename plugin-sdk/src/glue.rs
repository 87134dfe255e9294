//! The export glue's side of each hook: a host handle in, the plugin's
//! hook called with its configuration, and what it decided handed back to
//! Sluice through the handle's methods. `export!` calls these.

use crate::bindings::sluice::plugin::types;
use crate::{
    with_config, Candidate, PlacementChoice, Plugin, RequestAction, RequestChanges, RequestView,
    ResponseView,
};

/// `on-request`.
pub fn on_request<P: Plugin>(request: &types::Request) {
    let view = RequestView::host(request);
    match with_config::<P, _>(|config| P::on_request(config, &view)) {
        RequestAction::Continue(changes) => {
            let RequestChanges {
                headers,
                path,
                routing_key,
                placement,
            } = changes;
            for name in &headers.remove {
                request.remove_header(name);
            }
            for (name, value) in &headers.set {
                request.set_header(name, value);
            }
            for (name, value) in &headers.append {
                request.append_header(name, value);
            }
            if let Some(path) = &path {
                request.set_path(path);
            }
            if let Some(key) = &routing_key {
                request.set_routing_key(key);
            }
            if let Some(placement) = &placement {
                request.set_placement(placement);
            }
        }
        RequestAction::Respond(response) => request.respond(&response),
    }
}

/// `on-response`.
pub fn on_response<P: Plugin>(request: &types::Request, response: &types::Response) {
    let (request_view, response_view) = (RequestView::host(request), ResponseView::host(response));
    let changes =
        with_config::<P, _>(|config| P::on_response(config, &request_view, &response_view));
    for name in &changes.headers.remove {
        response.remove_header(name);
    }
    for (name, value) in &changes.headers.set {
        response.set_header(name, value);
    }
    for (name, value) in &changes.headers.append {
        response.append_header(name, value);
    }
    if let Some(status) = changes.status {
        response.set_status(status);
    }
}

/// `select-placement`: the candidates are read in two calls, their names
/// in one string and their states in one list.
pub fn select_placement<P: Plugin>(request: &types::Request, candidates: &types::Candidates) {
    let view = RequestView::host(request);
    let names = candidates.names();
    let listed: Vec<Candidate> = names
        .split_terminator('\n')
        .zip(candidates.states())
        .map(|(name, state)| Candidate {
            name: name.to_string(),
            healthy_endpoints: state.healthy_endpoints,
            total_endpoints: state.total_endpoints,
            open_breakers: state.open_breakers,
            half_open_breakers: state.half_open_breakers,
            in_flight: state.in_flight,
            limit: state.limit,
            weight: state.weight,
        })
        .collect();
    if let PlacementChoice::Placement(name) =
        with_config::<P, _>(|config| P::select_placement(config, &view, &listed))
    {
        candidates.choose(&name);
    }
}

/// `on-request-body`.
pub fn on_request_body<P: Plugin>(request: &types::Request, body: &types::Body) {
    let view = RequestView::host(request);
    let bytes = body.bytes();
    if let Some(replaced) = with_config::<P, _>(|config| P::on_request_body(config, &view, &bytes))
    {
        body.replace(&replaced);
    }
}

/// `on-response-body`.
pub fn on_response_body<P: Plugin>(
    request: &types::Request,
    response: &types::Response,
    body: &types::Body,
) {
    let (request_view, response_view) = (RequestView::host(request), ResponseView::host(response));
    let bytes = body.bytes();
    if let Some(replaced) = with_config::<P, _>(|config| {
        P::on_response_body(config, &request_view, &response_view, &bytes)
    }) {
        body.replace(&replaced);
    }
}
