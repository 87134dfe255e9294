//! Bodies held for a route's body hooks: whether a request or response
//! body is buffered, the buffering under the attachments' cap, the framing
//! headers that change with it, and the whole body handed to the chain.
//!
//! A route with no body hook never comes here: its bodies stream untouched.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use pingora::http::{RequestHeader, ResponseHeader};

use crate::plugins::bindings::sluice::plugin::types::Hook;
use crate::plugins::chain::{self, BodyOutcome, RequestFacts};
use crate::plugins::host::ResponseContext;
use crate::plugins::metrics::PluginMetrics;
use crate::plugins::registry::PluginMap;
use crate::plugins::spec::AttachmentSpec;

/// What happens to one body of a request.
#[derive(Debug, Default)]
pub(super) enum BodyHold {
    /// It streams untouched.
    #[default]
    Stream,
    /// It is gathered, up to `limit` bytes, for the body hooks.
    Buffer(Box<Buffered>),
    /// It is dropped: a fail-closed answer replaced the response.
    Discard,
}

/// A body being gathered.
#[derive(Debug)]
pub(super) struct Buffered {
    limit: u64,
    bytes: Vec<u8>,
    /// The response head the hooks read, for a response body.
    head: Option<ResponseHeader>,
}

/// What a chunk of a held body did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Held {
    /// Go on, with the chunk as it now is.
    Continue,
    /// The request body is over the cap: answer 413.
    TooLarge(u64),
    /// A fail-closed plugin failed, or a response body outgrew a
    /// fail-closed attachment's cap: end the message with this status, or
    /// cut it short once its head has gone.
    Fail(u16),
}

/// Whether a message with these headers has a body to hold.
fn has_body(headers: &http::HeaderMap) -> bool {
    headers.contains_key(TRANSFER_ENCODING)
        || headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|length| length > 0)
}

/// The length a message declares, if any.
fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Why a request body over the body hooks' cap is refused.
pub(super) fn too_large(limit: u64) -> String {
    format!("the request body is larger than this route's plugins take ({limit} bytes)")
}

/// How the request body is held: gathered when an `on-request-body` hook
/// runs and there is a body. A declared length over the cap is refused at
/// once.
pub(super) fn plan_request(
    plugins: &PluginMap,
    attachments: &[AttachmentSpec],
    request: &RequestHeader,
) -> Result<BodyHold, u64> {
    let Some(limit) = chain::body_limit(plugins, attachments, Hook::OnRequestBody) else {
        return Ok(BodyHold::Stream);
    };
    if !has_body(&request.headers) {
        return Ok(BodyHold::Stream);
    }
    if declared_length(&request.headers).is_some_and(|length| length > limit) {
        return Err(limit);
    }
    Ok(BodyHold::Buffer(Box::new(Buffered {
        limit,
        bytes: Vec::new(),
        head: None,
    })))
}

/// Frames the upstream request of a held body as chunked: its length is
/// known only once the hooks have run.
pub(super) fn reframe_request(hold: &BodyHold, upstream: &mut RequestHeader) {
    if matches!(hold, BodyHold::Buffer(_)) {
        upstream.remove_header(&CONTENT_LENGTH);
        let _ = upstream.insert_header(TRANSFER_ENCODING, "chunked");
    }
}

/// How the response body is held: gathered when an `on-response-body`
/// hook runs and there is a body. A declared length over a cap gets the
/// failure policy at once: a fail-closed attachment's status replaces the
/// response (whose body is then dropped), and otherwise it streams
/// untouched.
pub(super) fn plan_response(
    (plugins, metrics): (&PluginMap, &PluginMetrics),
    attachments: &[AttachmentSpec],
    request: &RequestHeader,
    response: &mut ResponseHeader,
    http1: bool,
) -> BodyHold {
    let Some(limit) = chain::body_limit(plugins, attachments, Hook::OnResponseBody) else {
        return BodyHold::Stream;
    };
    let status = response.status.as_u16();
    let bodiless = request.method == http::Method::HEAD
        || status < 200
        || status == 204
        || status == 304
        || declared_length(&response.headers) == Some(0);
    if bodiless {
        return BodyHold::Stream;
    }
    if let Some(length) = declared_length(&response.headers).filter(|l| *l > limit) {
        return match chain::body_over_limit(
            plugins,
            metrics,
            attachments,
            Hook::OnResponseBody,
            length,
        ) {
            Some(status) => {
                let _ = response.set_status(status);
                response.remove_header(&TRANSFER_ENCODING);
                let _ = response.insert_header(CONTENT_LENGTH, 0);
                BodyHold::Discard
            }
            None => BodyHold::Stream,
        };
    }
    response.remove_header(&CONTENT_LENGTH);
    if http1 {
        let _ = response.insert_header(TRANSFER_ENCODING, "chunked");
    }
    BodyHold::Buffer(Box::new(Buffered {
        limit,
        bytes: Vec::new(),
        head: Some(response.clone()),
    }))
}

/// What the hooks of a held body run with.
pub(super) struct HookScope<'a> {
    /// The plugins loaded, and their metrics.
    pub plugins: (&'a PluginMap, &'a PluginMetrics),
    /// The route's attachments.
    pub attachments: &'a [AttachmentSpec],
    /// What the hooks read of the request besides its header.
    pub facts: RequestFacts<'a>,
    /// The request's header.
    pub request: &'a RequestHeader,
    /// The placement and endpoint that served the response.
    pub served_by: (&'a str, &'a str),
}

/// Holds one chunk of a request or response body; at its end, runs the
/// body hooks (`on-response-body` for a response, whose head was kept
/// when it was planned, `on-request-body` otherwise) and lets the whole
/// body go on. A request body over the cap is too large; a response body
/// that outgrows it gets the failure policy: it streams on untouched from
/// there, or, for a fail-closed attachment, is cut short.
pub(super) fn hold_chunk(
    hold: &mut BodyHold,
    chunk: &mut Option<Bytes>,
    end_of_stream: bool,
    scope: &HookScope<'_>,
) -> Held {
    let (plugins, metrics) = scope.plugins;
    let buffered = match hold {
        BodyHold::Stream => return Held::Continue,
        BodyHold::Discard => {
            *chunk = None;
            return Held::Continue;
        }
        BodyHold::Buffer(buffered) => buffered,
    };
    if let Some(bytes) = chunk.take() {
        let length = (buffered.bytes.len() + bytes.len()) as u64;
        if length > buffered.limit {
            if buffered.head.is_none() {
                return Held::TooLarge(buffered.limit);
            }
            let hook = Hook::OnResponseBody;
            if let Some(status) =
                chain::body_over_limit(plugins, metrics, scope.attachments, hook, length)
            {
                *hold = BodyHold::Discard;
                return Held::Fail(status);
            }
            let mut passed = std::mem::take(&mut buffered.bytes);
            passed.extend_from_slice(&bytes);
            *chunk = Some(Bytes::from(passed));
            *hold = BodyHold::Stream;
            return Held::Continue;
        }
        buffered.bytes.extend_from_slice(&bytes);
    }
    if !end_of_stream {
        return Held::Continue;
    }
    let mut body = std::mem::take(&mut buffered.bytes);
    let head = buffered.head.take();
    *hold = BodyHold::Stream;
    let (placement, endpoint) = scope.served_by;
    let response = head.as_ref().map(|header| ResponseContext {
        header,
        placement,
        endpoint,
    });
    let outcome = chain::on_body(
        plugins,
        metrics,
        scope.attachments,
        &scope.facts,
        scope.request,
        response.as_ref(),
        &mut body,
    );
    match outcome {
        BodyOutcome::Continue => {
            *chunk = Some(Bytes::from(body));
            Held::Continue
        }
        BodyOutcome::Fail(status) => Held::Fail(status),
    }
}
