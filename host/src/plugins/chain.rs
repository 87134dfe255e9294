//! A route's plugin chain: running its attachments at each hook, and
//! applying what the plugins answer to the request and response.
//!
//! Attachments run in the order the route lists them; each sees the changes
//! of those before it. A failing call (missing plugin, trap, deadline,
//! memory cap) is counted and logged, then skipped for a fail-open
//! attachment, or answered with the attachment's status for a fail-closed one.

use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

use super::bindings::sluice::plugin::types::{
    Candidate, HeaderChanges, Hook, ImmediateResponse, PlacementChoice, RequestAction,
};
use super::host::{RequestContext, ResponseContext};
use super::metrics::PluginMetrics;
use super::registry::{hook_name, PluginRegistry};
use super::runtime::{CallError, LoadedPlugin};
use super::spec::AttachmentSpec;
use crate::config::HookName;
use crate::transform::headers::HeaderMessage;

/// What the `on-request` chain decided.
pub enum RequestOutcome {
    /// Proxy the request, with these overrides of the routing decision.
    Continue {
        /// A routing key set by a plugin.
        routing_key: Option<String>,
        /// A placement chosen by a plugin.
        placement: Option<String>,
    },
    /// A plugin answered the request.
    Respond(ImmediateResponse),
    /// A fail-closed plugin failed: answer this status.
    Fail(u16),
}

/// What plugins read of a request besides its header: borrowed from the
/// request's context, so calling a plugin copies nothing up front.
pub struct RequestFacts<'a> {
    /// The `Host` header or `:authority`.
    pub authority: &'a str,
    /// The client's address.
    pub client: Option<std::net::IpAddr>,
    /// The matched route's name.
    pub route: &'a str,
    /// The routing key, if any.
    pub routing_key: Option<&'a str>,
    /// The request's id.
    pub request_id: &'a str,
}

impl<'a> RequestFacts<'a> {
    fn context(&'a self, header: &'a RequestHeader) -> RequestContext<'a> {
        RequestContext {
            header,
            authority: self.authority,
            client: self.client,
            route: self.route,
            routing_key: self.routing_key,
            request_id: self.request_id,
        }
    }
}

/// The plugin an attachment names, when it runs at `hook`.
fn attached(
    registry: &PluginRegistry,
    metrics: &PluginMetrics,
    attachment: &AttachmentSpec,
    hook: Hook,
) -> Result<Option<std::sync::Arc<LoadedPlugin>>, NotLoaded> {
    let Some(plugin) = registry.get(&attachment.name) else {
        metrics
            .failures
            .with_label_values(&[&attachment.name, hook_name(hook), "missing"])
            .inc();
        tracing::warn!(plugin = %attachment.name, hook = hook_name(hook), "plugin is not loaded");
        return Err(NotLoaded);
    };
    let config_hook = match hook {
        Hook::OnRequest => HookName::OnRequest,
        Hook::OnResponse => HookName::OnResponse,
        Hook::SelectPlacement => HookName::SelectPlacement,
    };
    Ok(attachment
        .runs_at(config_hook, plugin.has(hook))
        .then_some(plugin))
}

/// An attachment names a plugin that is not loaded.
struct NotLoaded;

/// Counts and logs a failed call.
fn failed(metrics: &PluginMetrics, attachment: &AttachmentSpec, hook: Hook, error: &CallError) {
    metrics
        .failures
        .with_label_values(&[&attachment.name, hook_name(hook), error.kind()])
        .inc();
    tracing::warn!(plugin = %attachment.name, hook = hook_name(hook), error = %error, fail_closed = attachment.fail_closed.is_some(), "plugin call failed");
}

/// Runs the route's `on-request` attachments on `request`.
pub fn on_request(
    registry: &PluginRegistry,
    metrics: &PluginMetrics,
    attachments: &[AttachmentSpec],
    facts: &RequestFacts<'_>,
    request: &mut RequestHeader,
) -> RequestOutcome {
    let (mut routing_key, mut placement): (Option<String>, Option<String>) = (None, None);
    for attachment in attachments {
        let plugin = match attached(registry, metrics, attachment, Hook::OnRequest) {
            Ok(Some(plugin)) => plugin,
            Ok(None) => continue,
            Err(NotLoaded) => match attachment.fail_closed {
                Some(status) => return RequestOutcome::Fail(status),
                None => continue,
            },
        };
        let facts = RequestFacts {
            routing_key: routing_key.as_deref().or(facts.routing_key),
            ..*facts
        };
        match plugin.on_request(&attachment.config, &facts.context(request)) {
            Ok(RequestAction::Respond(response)) => return RequestOutcome::Respond(response),
            Ok(RequestAction::Continue(changes)) => {
                apply_header_changes(request, &changes.headers);
                if let Some(path) = changes.path {
                    if !set_path(request, &path) {
                        tracing::warn!(plugin = %attachment.name, %path, "plugin set an invalid path; ignored");
                    }
                }
                if changes.routing_key.is_some() {
                    routing_key = changes.routing_key;
                }
                if changes.placement.is_some() {
                    placement = changes.placement;
                }
            }
            Err(error) => {
                failed(metrics, attachment, Hook::OnRequest, &error);
                if let Some(status) = attachment.fail_closed {
                    return RequestOutcome::Fail(status);
                }
            }
        }
    }
    RequestOutcome::Continue {
        routing_key,
        placement,
    }
}

/// Applies a plugin's header changes to the message, which the next plugin
/// in the chain then reads. Names or values Pingora refuses are skipped.
fn apply_header_changes(message: &mut impl HeaderMessage, changes: &HeaderChanges) {
    for name in &changes.remove {
        message.remove(name.as_str());
    }
    for (name, value) in &changes.set {
        if let Some((header, parsed)) = header_pair(name, value) {
            message.set(header, parsed);
        }
    }
    for (name, value) in &changes.append {
        if let Some((header, parsed)) = header_pair(name, value) {
            message.append(header, parsed);
        }
    }
}

fn header_pair(name: &str, value: &str) -> Option<(HeaderName, HeaderValue)> {
    Some((
        HeaderName::from_bytes(name.as_bytes()).ok()?,
        HeaderValue::from_str(value).ok()?,
    ))
}

/// Sets the request's path and query from `path_and_query`, keeping scheme
/// and authority; false when it is not a valid URI path.
pub fn set_path(request: &mut RequestHeader, path_and_query: &str) -> bool {
    let Ok(path_and_query) = path_and_query.parse::<http::uri::PathAndQuery>() else {
        return false;
    };
    if !path_and_query.path().starts_with('/') {
        return false;
    }
    let mut parts = request.uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query);
    match http::Uri::from_parts(parts) {
        Ok(uri) => {
            request.set_uri(uri);
            true
        }
        Err(_) => false,
    }
}

/// Runs the route's `select-placement` attachments over the candidates
/// `describe` lists; the first that chooses one `is_candidate` accepts
/// wins, and its name is returned. A fail-closed failure is its status.
pub fn select_placement(
    registry: &PluginRegistry,
    metrics: &PluginMetrics,
    attachments: &[AttachmentSpec],
    facts: &RequestFacts<'_>,
    request: &RequestHeader,
    describe: impl FnOnce() -> Vec<Candidate>,
    is_candidate: impl Fn(&str) -> bool,
) -> Result<Option<String>, u16> {
    let context = facts.context(request);
    let mut describe = Some(describe);
    let mut described: Option<Vec<Candidate>> = None;
    for attachment in attachments {
        let plugin = match attached(registry, metrics, attachment, Hook::SelectPlacement) {
            Ok(Some(plugin)) => plugin,
            Ok(None) => continue,
            Err(NotLoaded) => match attachment.fail_closed {
                Some(status) => return Err(status),
                None => continue,
            },
        };
        let described = described
            .get_or_insert_with(|| describe.take().map_or_else(Vec::new, |describe| describe()));
        match plugin.select_placement(&attachment.config, &context, described) {
            Ok(PlacementChoice::Placement(name)) => {
                if is_candidate(&name) {
                    return Ok(Some(name));
                }
                tracing::warn!(plugin = %attachment.name, placement = %name, "plugin chose a placement that is not a candidate; ignored")
            }
            Ok(PlacementChoice::Defer) => {}
            Err(error) => {
                failed(metrics, attachment, Hook::SelectPlacement, &error);
                if let Some(status) = attachment.fail_closed {
                    return Err(status);
                }
            }
        }
    }
    Ok(None)
}

/// Runs the route's `on-response` attachments on `response`. A failing
/// fail-closed attachment replaces the status with its own.
pub fn on_response(
    registry: &PluginRegistry,
    metrics: &PluginMetrics,
    attachments: &[AttachmentSpec],
    facts: &RequestFacts<'_>,
    served_by: (&str, &str),
    request: &RequestHeader,
    response: &mut ResponseHeader,
) {
    let (placement, endpoint) = served_by;
    for attachment in attachments {
        let plugin = match attached(registry, metrics, attachment, Hook::OnResponse) {
            Ok(Some(plugin)) => plugin,
            Ok(None) => continue,
            Err(_) => {
                if let Some(status) = attachment.fail_closed {
                    let _ = response.set_status(status);
                }
                continue;
            }
        };
        let served = ResponseContext {
            header: response,
            placement,
            endpoint,
        };
        match plugin.on_response(&attachment.config, &facts.context(request), &served) {
            Ok(changes) => {
                apply_header_changes(response, &changes.headers);
                if let Some(status) = changes.status {
                    let _ = response.set_status(status);
                }
            }
            Err(error) => {
                failed(metrics, attachment, Hook::OnResponse, &error);
                if let Some(status) = attachment.fail_closed {
                    let _ = response.set_status(status);
                }
            }
        }
    }
}
