//! A route's plugin chain: running its attachments at each hook, and
//! applying the changes the plugins made to the request and response.
//!
//! Attachments run in the order the route lists them; each sees the changes
//! of those before it. A failing call (missing plugin, trap, deadline,
//! memory cap, a change the host refuses) is counted and logged, then
//! skipped with none of its changes applied for a fail-open attachment, or
//! answered with the attachment's status for a fail-closed one.

use pingora::http::{RequestHeader, ResponseHeader};

use super::bindings::sluice::plugin::types::Hook;
use super::host::{
    Answer, Candidate, Changes, HeaderChange, HeaderOp, RequestContext, ResponseContext,
};
use super::metrics::PluginMetrics;
use super::registry::{hook_name, PluginMap};
use super::runtime::{CallError, LoadedPlugin};
use super::spec::AttachmentSpec;
use super::validate::config_hook;
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
    Respond(Answer),
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

/// What an attachment does at a hook, with the plugins the request runs on.
enum Attached<'a> {
    /// Call this plugin.
    Call(&'a LoadedPlugin),
    /// Nothing: the attachment does not run at this hook, or its plugin is
    /// not loaded and it fails open.
    Skip,
    /// Its plugin is not loaded and it fails closed with this status.
    Fail(u16),
}

/// What `attachment` does at `hook`. A plugin that is not loaded is counted
/// and logged as missing, and the attachment's failure policy decides.
fn attached<'a>(
    plugins: &'a PluginMap,
    metrics: &PluginMetrics,
    attachment: &AttachmentSpec,
    hook: Hook,
) -> Attached<'a> {
    let Some(plugin) = plugins.get(&*attachment.name) else {
        metrics
            .failures
            .with_label_values(&[&attachment.name, hook_name(hook), "missing"])
            .inc();
        tracing::warn!(plugin = %attachment.name, hook = hook_name(hook), "plugin is not loaded");
        return attachment
            .fail_closed
            .map_or(Attached::Skip, Attached::Fail);
    };
    if attachment.runs_at(config_hook(hook), plugin.has(hook)) {
        Attached::Call(plugin)
    } else {
        Attached::Skip
    }
}

/// Counts and logs a failed call.
fn failed(metrics: &PluginMetrics, attachment: &AttachmentSpec, hook: Hook, error: &CallError) {
    metrics
        .failures
        .with_label_values(&[&attachment.name, hook_name(hook), error.kind()])
        .inc();
    tracing::warn!(plugin = %attachment.name, hook = hook_name(hook), error = %error, fail_closed = attachment.fail_closed.is_some(), "plugin call failed");
}

/// Whether `attachment` runs at `hook` with the plugins the request runs on.
fn runs(plugins: &PluginMap, attachment: &AttachmentSpec, hook: Hook) -> bool {
    plugins
        .get(&*attachment.name)
        .is_some_and(|plugin| attachment.runs_at(config_hook(hook), plugin.has(hook)))
}

/// Runs the route's `on-request` attachments on `request`. A placement a
/// plugin chooses must be one `is_candidate` accepts.
pub fn on_request(
    plugins: &PluginMap,
    metrics: &PluginMetrics,
    attachments: &[AttachmentSpec],
    facts: &RequestFacts<'_>,
    request: &mut RequestHeader,
    is_candidate: impl Fn(&str) -> bool,
) -> RequestOutcome {
    let (mut routing_key, mut placement): (Option<String>, Option<String>) = (None, None);
    for attachment in attachments {
        let plugin = match attached(plugins, metrics, attachment, Hook::OnRequest) {
            Attached::Call(plugin) => plugin,
            Attached::Skip => continue,
            Attached::Fail(status) => return RequestOutcome::Fail(status),
        };
        let facts = RequestFacts {
            routing_key: routing_key.as_deref().or(facts.routing_key),
            ..*facts
        };
        let called = plugin
            .on_request(&attachment.config, &facts.context(request))
            .and_then(|changes| match &changes.placement {
                Some(name) if !is_candidate(name) => Err(CallError::Refused(format!(
                    "placement {name:?} is not one of the route's"
                ))),
                _ => Ok(changes),
            });
        match called {
            Ok(changes) => {
                if let Some(answer) = changes.respond {
                    return RequestOutcome::Respond(answer);
                }
                if let Err(error) = apply_header_changes(request, &changes.headers) {
                    failed(metrics, attachment, Hook::OnRequest, &error);
                    if let Some(status) = attachment.fail_closed {
                        return RequestOutcome::Fail(status);
                    }
                }
                if let Some(path) = changes.path {
                    set_path(request, path);
                }
                routing_key = changes.routing_key.or(routing_key);
                placement = changes.placement.or(placement);
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

/// Applies a plugin's header changes to the message, in the order it made
/// them; the next plugin in the chain then reads the result. A message
/// with no room left refuses the rest.
fn apply_header_changes(
    message: &mut impl HeaderMessage,
    changes: &[HeaderChange],
) -> Result<(), CallError> {
    for change in changes {
        let applied = match (change.op, &change.value) {
            (HeaderOp::Remove, _) => {
                message.remove(change.name.as_str());
                true
            }
            (HeaderOp::Set, Some(value)) => message.set(change.name.clone(), value.clone()),
            (HeaderOp::Append, Some(value)) => message.append(change.name.clone(), value.clone()),
            (_, None) => true,
        };
        if !applied {
            return Err(CallError::Refused(format!(
                "no room for header {} in the message",
                change.name
            )));
        }
    }
    Ok(())
}

/// Sets the request's path and query, keeping scheme and authority.
pub fn set_path(request: &mut RequestHeader, path_and_query: http::uri::PathAndQuery) {
    let mut parts = request.uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query);
    if let Ok(uri) = http::Uri::from_parts(parts) {
        request.set_uri(uri);
    }
}

/// Runs the route's `select-placement` attachments over the candidates
/// `describe` lists; the first that chooses one wins, and its name is
/// returned. A fail-closed failure is its status.
pub fn select_placement(
    plugins: &PluginMap,
    metrics: &PluginMetrics,
    attachments: &[AttachmentSpec],
    facts: &RequestFacts<'_>,
    request: &RequestHeader,
    describe: impl FnOnce() -> Vec<Candidate>,
) -> Result<Option<String>, u16> {
    let context = facts.context(request);
    let mut describe = Some(describe);
    let mut described: Option<Vec<Candidate>> = None;
    for attachment in attachments {
        let plugin = match attached(plugins, metrics, attachment, Hook::SelectPlacement) {
            Attached::Call(plugin) => plugin,
            Attached::Skip => continue,
            Attached::Fail(status) => return Err(status),
        };
        let described = described
            .get_or_insert_with(|| describe.take().map_or_else(Vec::new, |describe| describe()));
        match plugin.select_placement(&attachment.config, &context, described) {
            Ok(Some(name)) => return Ok(Some(name)),
            Ok(None) => {}
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
    plugins: &PluginMap,
    metrics: &PluginMetrics,
    attachments: &[AttachmentSpec],
    facts: &RequestFacts<'_>,
    served_by: (&str, &str),
    request: &RequestHeader,
    response: &mut ResponseHeader,
) {
    let (placement, endpoint) = served_by;
    for attachment in attachments {
        let plugin = match attached(plugins, metrics, attachment, Hook::OnResponse) {
            Attached::Call(plugin) => plugin,
            Attached::Skip => continue,
            Attached::Fail(status) => {
                let _ = response.set_status(status);
                continue;
            }
        };
        let served = ResponseContext {
            header: response,
            placement,
            endpoint,
        };
        let called = plugin
            .on_response(&attachment.config, &facts.context(request), &served)
            .and_then(|changes: Changes| {
                apply_header_changes(response, &changes.headers)?;
                if let Some(status) = changes.status {
                    let _ = response.set_status(status);
                }
                Ok(())
            });
        if let Err(error) = called {
            failed(metrics, attachment, Hook::OnResponse, &error);
            if let Some(status) = attachment.fail_closed {
                let _ = response.set_status(status);
            }
        }
    }
}

/// What a body hook chain decided.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyOutcome {
    /// Go on with the body as the plugins left it.
    Continue,
    /// A fail-closed plugin failed: answer (or end with) this status.
    Fail(u16),
}

/// The largest body any attachment's body hook at `hook` buffers, or `None`
/// when none runs there: the body then streams untouched.
pub fn body_limit(plugins: &PluginMap, attachments: &[AttachmentSpec], hook: Hook) -> Option<u64> {
    attachments
        .iter()
        .filter(|attachment| runs(plugins, attachment, hook))
        .map(|attachment| attachment.body_limit)
        .min()
}

/// A body of `length` bytes is over the cap of some attachments running
/// a body hook at `hook`: each of them is counted and logged as failing
/// (kind `body_limit`), and the first fail-closed one's status is returned.
/// `None` when each of them fails open: the body then passes untouched.
pub fn body_over_limit(
    plugins: &PluginMap,
    metrics: &PluginMetrics,
    attachments: &[AttachmentSpec],
    hook: Hook,
    length: u64,
) -> Option<u16> {
    let mut status = None;
    for attachment in attachments
        .iter()
        .filter(|attachment| attachment.body_limit < length && runs(plugins, attachment, hook))
    {
        let error = CallError::BodyLimit(attachment.body_limit);
        failed(metrics, attachment, hook, &error);
        status = status.or(attachment.fail_closed);
    }
    status
}

/// Runs the route's body hook at `hook` (`on-request-body` or
/// `on-response-body`) on the buffered `body`, replacing it with what
/// each plugin makes of it.
pub fn on_body(
    plugins: &PluginMap,
    metrics: &PluginMetrics,
    attachments: &[AttachmentSpec],
    facts: &RequestFacts<'_>,
    request: &RequestHeader,
    response: Option<&ResponseContext<'_>>,
    body: &mut Vec<u8>,
) -> BodyOutcome {
    let hook = if response.is_some() {
        Hook::OnResponseBody
    } else {
        Hook::OnRequestBody
    };
    let context = facts.context(request);
    for attachment in attachments {
        let plugin = match attached(plugins, metrics, attachment, hook) {
            Attached::Call(plugin) => plugin,
            Attached::Skip => continue,
            Attached::Fail(status) => return BodyOutcome::Fail(status),
        };
        let called = match response {
            Some(response) => plugin.on_response_body(&attachment.config, &context, response, body),
            None => plugin.on_request_body(&attachment.config, &context, body),
        };
        match called {
            Ok(Some(replaced)) => *body = replaced,
            Ok(None) => {}
            Err(error) => {
                failed(metrics, attachment, hook, &error);
                if let Some(status) = attachment.fail_closed {
                    return BodyOutcome::Fail(status);
                }
            }
        }
    }
    BodyOutcome::Continue
}
