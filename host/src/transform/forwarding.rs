//! Forwarding headers and request ids.

use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use pingora::http::RequestHeader;

/// `X-Request-Id`.
pub const REQUEST_ID: &str = "x-request-id";

/// The longest client-supplied request id that is propagated as is.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The client's request id when it is sane, else a new one.
pub fn request_id(incoming: Option<&[u8]>) -> String {
    match incoming {
        Some(id)
            if !id.is_empty()
                && id.len() <= MAX_REQUEST_ID_LEN
                && id.iter().all(|b| b.is_ascii_graphic()) =>
        {
            // Checked above: printable ASCII is valid UTF-8.
            String::from_utf8_lossy(id).into_owned()
        }
        _ => new_request_id(),
    }
}

/// A new 32-hex-digit request id: a per-process random half and a counter.
pub fn new_request_id() -> String {
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    });
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut id = String::with_capacity(32);
    let _ = write!(id, "{seed:016x}{count:016x}");
    id
}

/// Sets `X-Forwarded-For` (appending the client), `X-Forwarded-Proto` and
/// `X-Forwarded-Host` (replacing what the client sent).
pub fn set_forwarded(
    request: &mut RequestHeader,
    client: Option<IpAddr>,
    scheme: &'static str,
    host: &str,
) {
    if let Some(client) = client {
        let value = match request
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(existing) if !existing.trim().is_empty() => format!("{existing}, {client}"),
            _ => client.to_string(),
        };
        let _ = request.insert_header("x-forwarded-for", value);
    }
    let _ = request.insert_header("x-forwarded-proto", scheme);
    if !host.is_empty() {
        let _ = request.insert_header("x-forwarded-host", host);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_propagate_or_generate() {
        assert_eq!(request_id(Some(b"abc-123")), "abc-123");
        let generated = request_id(Some(b"bad id with spaces"));
        assert_eq!(generated.len(), 32);
        assert_ne!(request_id(None), request_id(None));
        assert_eq!(request_id(Some(&[b'a'; 200])).len(), 32);
    }

    #[test]
    fn forwarded_headers_append_and_replace() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("x-forwarded-for", "10.0.0.1").unwrap();
        req.insert_header("x-forwarded-proto", "https").unwrap();
        set_forwarded(
            &mut req,
            Some("192.0.2.7".parse().unwrap()),
            "http",
            "example.com",
        );
        assert_eq!(
            req.headers.get("x-forwarded-for").unwrap(),
            "10.0.0.1, 192.0.2.7"
        );
        assert_eq!(req.headers.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(req.headers.get("x-forwarded-host").unwrap(), "example.com");
    }
}
