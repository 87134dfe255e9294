//! Short plain-text responses written by the proxy itself.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use pingora::{ErrorSource, ErrorType};

use super::RequestCtx;
use crate::resilience::grpc;

/// Writes `status` with a one-line text body, plus the request id and any
/// explainability headers known so far. A gRPC call gets the same answer
/// as gRPC clients read one.
pub(super) async fn text(
    session: &mut Session,
    ctx: &RequestCtx,
    status: u16,
    message: &str,
) -> Result<()> {
    text_with_retry(session, ctx, status, message, None).await
}

/// Writes 429 as [`text`] does, with `Retry-After` in whole seconds.
pub(super) async fn too_many_requests(
    session: &mut Session,
    ctx: &RequestCtx,
    message: &str,
    retry_after: u64,
) -> Result<()> {
    text_with_retry(session, ctx, 429, message, Some(retry_after)).await
}

async fn text_with_retry(
    session: &mut Session,
    ctx: &RequestCtx,
    status: u16,
    message: &str,
    retry_after: Option<u64>,
) -> Result<()> {
    let grpc = grpc::is_grpc(&session.req_header().headers);
    let mut response = if grpc {
        grpc_status(session, status, message)?
    } else {
        let mut response = ResponseHeader::build(status, Some(5))?;
        response.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
        response
    };
    if let Some(seconds) = retry_after {
        response.insert_header(http::header::RETRY_AFTER, seconds)?;
    }
    ctx.explain(&mut response);
    session.set_keepalive(None);
    if grpc {
        return session
            .write_response_header(Box::new(response), true)
            .await;
    }
    let body = Bytes::from(format!("{status} {}: {message}\n", reason_phrase(status)));
    response.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    session
        .write_response_header(Box::new(response), false)
        .await?;
    session.write_response_body(Some(body), true).await
}

/// The head that fails a gRPC call as its client expects: a
/// trailers-only answer, HTTP 200 with the status an HTTP `status` maps to
/// in `grpc-status` and the reason in `grpc-message`. A plain-text body
/// would be read as a malformed message.
fn grpc_status(session: &Session, status: u16, message: &str) -> Result<ResponseHeader> {
    let code = grpc::code_for_http_status(status);
    let mut response = ResponseHeader::build(200, Some(5))?;
    response.insert_header(http::header::CONTENT_TYPE, "application/grpc")?;
    response.insert_header("grpc-status", (code as u8).to_string())?;
    response.insert_header("grpc-message", grpc::encode_message(message))?;
    if !session.is_http2() {
        response.insert_header(http::header::CONTENT_LENGTH, 0)?;
    }
    Ok(response)
}

/// Answers a coalesced request with its leader's response, `head` then
/// the body as it comes, under its own request id. A leader's response
/// that breaks, or a follower too far behind it, cuts this one short.
pub(super) async fn follow(
    session: &mut Session,
    ctx: &RequestCtx,
    mut head: ResponseHeader,
    mut stream: crate::resilience::coalesce::FollowerStream,
) -> Result<()> {
    use crate::resilience::coalesce::Next;
    head.insert_header(super::forwarding::REQUEST_ID, ctx.request_id.as_str())?;
    // Framing is each connection's own. An HTTP/1 body without a length
    // is chunked, so that a body cut short reads as broken, not as ended.
    for hop in [http::header::TRANSFER_ENCODING, http::header::CONNECTION] {
        head.remove_header(&hop);
    }
    if !session.is_http2() && !head.headers.contains_key(http::header::CONTENT_LENGTH) {
        head.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(head), head_only)
        .await?;
    if head_only {
        return Ok(());
    }
    loop {
        match stream.next().await {
            Next::Chunk(chunk) => session.write_response_body(Some(chunk), false).await?,
            Next::End => return session.write_response_body(None, true).await,
            Next::Broken => {
                return Error::e_explain(
                    ErrorType::ConnectionClosed,
                    "the coalesced response broke off, or this client fell too far behind it",
                )
            }
        }
    }
}

/// Answers an ACME HTTP-01 challenge with its key authorization.
pub(super) async fn acme_challenge(session: &mut Session, answer: String) -> Result<()> {
    let mut response = ResponseHeader::build(200, Some(2))?;
    response.insert_header(http::header::CONTENT_TYPE, "text/plain")?;
    response.insert_header(http::header::CONTENT_LENGTH, answer.len())?;
    session
        .write_response_header(Box::new(response), false)
        .await?;
    session
        .write_response_body(Some(Bytes::from(answer)), true)
        .await
}

/// Answers with a permanent redirect (308, which keeps the method and
/// body) to the same host and path over HTTPS.
pub(super) async fn redirect_to_https(session: &mut Session, ctx: &RequestCtx) -> Result<()> {
    let request = session.req_header();
    let path = request.uri.path_and_query().map_or("/", |p| p.as_str());
    let location = crate::routing::https_location(&ctx.client_host, path);
    let mut response = ResponseHeader::build(308, Some(4))?;
    response.insert_header(http::header::LOCATION, location)?;
    response.insert_header(http::header::CONTENT_LENGTH, 0)?;
    ctx.explain(&mut response);
    session
        .write_response_header(Box::new(response), true)
        .await
}

/// Answers with a route's `respond`, its response header rules applied.
pub(super) async fn answer(
    session: &mut Session,
    ctx: &RequestCtx,
    answer: &crate::transform::respond::Answer,
    rules: &crate::transform::headers::HeaderOps,
) -> Result<()> {
    let request = session.req_header();
    let parts = crate::transform::respond::RequestParts {
        host: &ctx.client_host,
        path: request.uri.path(),
        query: request.uri.query(),
    };
    let body = answer.body(parts);
    let headers = answer.headers(parts, &body);
    let mut response = ResponseHeader::build(answer.status, Some(headers.len() + 2))?;
    for (name, value) in headers {
        response.insert_header(name, value)?;
    }
    response.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    response.insert_header(super::forwarding::REQUEST_ID, ctx.request_id.as_str())?;
    rules.apply(&mut response);
    let head_only = session.req_header().method == http::Method::HEAD || body.is_empty();
    session
        .write_response_header(Box::new(response), head_only)
        .await?;
    if head_only {
        return Ok(());
    }
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await
}

/// Writes a response a plugin answered with (the host checked its status
/// and headers as the plugin made it), plus the request id.
pub(super) async fn immediate(
    session: &mut Session,
    ctx: &RequestCtx,
    answer: crate::plugins::host::Answer,
) -> Result<()> {
    let mut response =
        ResponseHeader::build(answer.status.as_u16(), Some(answer.headers.len() + 2))?;
    for (name, value) in answer.headers {
        response.append_header(name, value)?;
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
        (
            ErrorType::ConnectNoRoute
            | ErrorType::ConnectRefused
            | ErrorType::ConnectError
            | ErrorType::TLSHandshakeFailure
            | ErrorType::TLSHandshakeTimedout
            | ErrorType::InvalidCert
            | ErrorType::HandshakeError
            | ErrorType::SocketError
            | ErrorType::BindError,
            _,
        ) => (
            502,
            format!("no endpoint of placement {placement} could be reached"),
        ),
        (
            ErrorType::InvalidHTTPHeader
            | ErrorType::H1Error
            | ErrorType::InvalidH2
            | ErrorType::H2Error,
            ErrorSource::Upstream,
        ) => (
            502,
            format!("the upstream of placement {placement} sent an invalid response"),
        ),
        (_, ErrorSource::Upstream) => (
            502,
            format!("the upstream of placement {placement} closed the connection before answering"),
        ),
        (
            ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed,
            ErrorSource::Downstream,
        ) => (0, String::new()),
        (ErrorType::ReadTimedout, ErrorSource::Downstream) => (
            408,
            "the request body stopped arriving for longer than the server waits".into(),
        ),
        (_, ErrorSource::Downstream) => (400, "malformed request".into()),
        _ => (500, "internal error".into()),
    }
}
