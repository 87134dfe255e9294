//! gRPC responses as outcomes: the status a response carries in
//! `grpc-status`, in its head (a trailers-only answer) or in its trailers,
//! judged against a placement's `failure_on`.

use http::HeaderMap;

use super::admission::Outcome;
use super::placement::FailureSet;
use crate::config::{FailureKind, GrpcCode};

/// Whether a message with these headers is gRPC (`application/grpc`, with
/// or without a `+proto` or `+json` suffix).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

/// The status in `grpc-status`, if the headers (or trailers) carry one
/// that gRPC defines.
pub fn status(headers: &HeaderMap) -> Option<GrpcCode> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    GrpcCode::from_number(value.trim().parse().ok()?)
}

/// The outcome of a call that ended with `status`: a failure when
/// `failure_on` counts it, otherwise a success. A missing status is not
/// the endpoint's failure.
pub fn outcome(status: Option<GrpcCode>, failure_on: FailureSet) -> Outcome {
    match status {
        Some(code) if failure_on.contains(FailureKind::Grpc(code)) => {
            Outcome::Failure(FailureKind::Grpc(code))
        }
        _ => Outcome::Success,
    }
}

/// The status a gRPC client reads for an HTTP `status`, as gRPC maps them.
pub fn code_for_http_status(status: u16) -> GrpcCode {
    match status {
        400 => GrpcCode::Internal,
        401 => GrpcCode::Unauthenticated,
        403 => GrpcCode::PermissionDenied,
        404 => GrpcCode::Unimplemented,
        429 | 502 | 503 | 504 => GrpcCode::Unavailable,
        _ => GrpcCode::Unknown,
    }
}

/// `message` as `grpc-message` carries it: percent-encoded outside
/// printable ASCII, and `%` itself.
pub fn encode_message(message: &str) -> String {
    const ENCODED: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');
    percent_encoding::utf8_percent_encode(message, ENCODED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    http::HeaderName::from_static(name),
                    http::HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    #[test]
    fn grpc_is_known_by_its_content_type() {
        assert!(is_grpc(&headers(&[("content-type", "application/grpc")])));
        assert!(is_grpc(&headers(&[(
            "content-type",
            "application/grpc+proto"
        )])));
        assert!(!is_grpc(&headers(&[("content-type", "application/json")])));
        assert!(!is_grpc(&headers(&[])));
    }

    #[test]
    fn statuses_in_failure_on_are_failures_and_others_successes() {
        let failure_on = FailureSet::of(&[
            FailureKind::Grpc(GrpcCode::Unavailable),
            FailureKind::ServerError,
        ]);
        let judged =
            |value: &'static str| outcome(status(&headers(&[("grpc-status", value)])), failure_on);
        assert_eq!(
            judged("14"),
            Outcome::Failure(FailureKind::Grpc(GrpcCode::Unavailable))
        );
        assert_eq!(judged("5"), Outcome::Success);
        assert_eq!(judged("0"), Outcome::Success);
        assert_eq!(judged("99"), Outcome::Success);
        assert_eq!(outcome(None, failure_on), Outcome::Success);
    }

    #[test]
    fn proxy_failures_map_to_grpc_statuses_with_encoded_messages() {
        assert_eq!(code_for_http_status(404), GrpcCode::Unimplemented);
        assert_eq!(code_for_http_status(503), GrpcCode::Unavailable);
        assert_eq!(code_for_http_status(413), GrpcCode::Unknown);
        assert_eq!(
            encode_message("100% down\r\nnow é"),
            "100%25 down%0D%0Anow %C3%A9"
        );
    }
}
