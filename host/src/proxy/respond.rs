//! Short plain-text responses written by the proxy itself.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use pingora::{ErrorSource, ErrorType};

use super::RequestCtx;

/// Writes `status` with a one-line text body, plus the request id and any
/// explainability headers known so far.
pub(super) async fn text(
    session: &mut Session,
    ctx: &RequestCtx,
    status: u16,
    message: &str,
) -> Result<()> {
    let body = Bytes::from(format!("{status} {}: {message}\n", reason_phrase(status)));
    let mut response = ResponseHeader::build(status, Some(4))?;
    response.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    response.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    ctx.explain(&mut response);
    session.set_keepalive(None);
    session
        .write_response_header(Box::new(response), false)
        .await?;
    session.write_response_body(Some(body), true).await
}

/// Writes a response a plugin answered with, plus the request id.
pub(super) async fn immediate(
    session: &mut Session,
    ctx: &RequestCtx,
    answer: crate::plugins::bindings::sluice::plugin::types::ImmediateResponse,
) -> Result<()> {
    let mut response = ResponseHeader::build(answer.status, Some(answer.headers.len() + 2))?;
    for (name, value) in &answer.headers {
        response.append_header(name.clone(), value.as_str())?;
    }
    response.insert_header(http::header::CONTENT_LENGTH, answer.body.len())?;
    response.insert_header(super::forwarding::REQUEST_ID, ctx.request_id.as_str())?;
    session
        .write_response_header(Box::new(response), false)
        .await?;
    session
        .write_response_body(Some(Bytes::from(answer.body)), true)
        .await
}

fn reason_phrase(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

/// The status and message for a failed request. 0 means the client is gone
/// and nothing should be written.
pub(super) fn status_for(e: &Error, placement: Option<&str>) -> (u16, String) {
    let placement = placement.unwrap_or("?");
    match (e.etype(), e.esource()) {
        (ErrorType::HTTPStatus(413), _) => (
            413,
            "the request body is larger than this placement accepts".into(),
        ),
        (ErrorType::HTTPStatus(code), _) => (*code, "request failed".into()),
        (ErrorType::ReadTimedout | ErrorType::WriteTimedout, ErrorSource::Upstream) => (
            504,
            format!("the upstream of placement {placement} did not answer in time"),
        ),
        (ErrorType::ConnectTimedout, _) => (
            504,
            format!("connecting to placement {placement} timed out"),
        ),
        (_, ErrorSource::Upstream)
        | (ErrorType::ConnectNoRoute | ErrorType::ConnectRefused | ErrorType::ConnectError, _) => (
            502,
            format!("no endpoint of placement {placement} could be reached"),
        ),
        (
            ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed,
            ErrorSource::Downstream,
        ) => (0, String::new()),
        (_, ErrorSource::Downstream) => (400, "malformed request".into()),
        _ => (500, "internal error".into()),
    }
}
