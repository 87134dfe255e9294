//! The export glue's side of each hook: the plugin's hook called with its
//! configuration and views of what the host lent the call, and what it
//! decided handed back to Sluice in one call per message. `export!` calls
//! these.

use crate::bindings::sluice::plugin::{body, candidates, request, response, types};
use crate::{
    with_config, Candidate, PlacementChoice, Plugin, RequestAction, RequestView, ResponseView,
};

/// `on-request`.
pub fn on_request<P: Plugin>() {
    let view = RequestView::host();
    match with_config::<P, _>(|config| P::on_request(config, &view)) {
        RequestAction::Continue(changes) => {
            let unchanged = changes.headers.is_empty()
                && changes.path.is_none()
                && changes.routing_key.is_none()
                && changes.placement.is_none();
            if !unchanged {
                request::apply(&types::RequestChanges {
                    headers: changes.headers.into_encoded(),
                    path: changes.path,
                    routing_key: changes.routing_key,
                    placement: changes.placement,
                });
            }
        }
        RequestAction::Respond(response) => request::respond(&response),
    }
}

/// `on-response`.
pub fn on_response<P: Plugin>() {
    let (request_view, response_view) = (RequestView::host(), ResponseView::host());
    let changes =
        with_config::<P, _>(|config| P::on_response(config, &request_view, &response_view));
    if !changes.headers.is_empty() || changes.status.is_some() {
        response::apply(&types::ResponseChanges {
            headers: changes.headers.into_encoded(),
            status: changes.status,
        });
    }
}

/// The numbers `candidates.states` gives for each candidate.
const STATE_FIELDS: usize = 8;

/// `select-placement`: the candidates are read in two calls, their names
/// in one string and their states in one list of numbers.
pub fn select_placement<P: Plugin>() {
    let view = RequestView::host();
    let names = candidates::names();
    let states = candidates::states();
    let listed: Vec<Candidate> = names
        .split_terminator('\n')
        .zip(states.chunks_exact(STATE_FIELDS))
        .map(|(name, state)| Candidate {
            name: name.to_string(),
            healthy_endpoints: state[0],
            total_endpoints: state[1],
            open_breakers: state[2],
            half_open_breakers: state[3],
            in_flight: state[4],
            limit: (state[5] != 0).then_some(state[6]),
            weight: state[7],
        })
        .collect();
    if let PlacementChoice::Placement(name) =
        with_config::<P, _>(|config| P::select_placement(config, &view, &listed))
    {
        candidates::choose(&name);
    }
}

/// `on-request-body`.
pub fn on_request_body<P: Plugin>() {
    let view = RequestView::host();
    let bytes = body::bytes();
    if let Some(replaced) = with_config::<P, _>(|config| P::on_request_body(config, &view, &bytes))
    {
        body::replace(&replaced);
    }
}

/// `on-response-body`.
pub fn on_response_body<P: Plugin>() {
    let (request_view, response_view) = (RequestView::host(), ResponseView::host());
    let bytes = body::bytes();
    if let Some(replaced) = with_config::<P, _>(|config| {
        P::on_response_body(config, &request_view, &response_view, &bytes)
    }) {
        body::replace(&replaced);
    }
}
