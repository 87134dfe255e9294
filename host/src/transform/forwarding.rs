//! Forwarding headers and request ids.

use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;

use http::{HeaderName, HeaderValue};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use pingora::http::RequestHeader;

/// `X-Request-Id`.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `X-Forwarded-For`.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

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
    let mut id = [0u8; 32];
    hex16(seed, &mut id[..16]);
    hex16(count, &mut id[16..]);
    std::str::from_utf8(&id)
        .expect("hex digits are ASCII")
        .to_owned()
}

/// `value` as 16 lowercase hex digits into `out`: a request id is made on
/// every request, and the formatting machinery cost it more than the rest.
fn hex16(value: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, digit) in out.iter_mut().enumerate() {
        *digit = DIGITS[((value >> (60 - 4 * i)) & 0xf) as usize];
    }
}

/// Appends `ip` to `out` as text. IPv4, what nearly every client address
/// is, is written digit by digit: the formatting machinery cost a request
/// more than the header it goes into.
fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        IpAddr::V6(_) => {
            let _ = write!(out, "{ip}");
        }
    }
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
        let mut value = String::with_capacity(48);
        if let Some(existing) = request
            .headers
            .get(X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
            .filter(|existing| !existing.trim().is_empty())
        {
            value.push_str(existing);
            value.push_str(", ");
        }
        push_ip(&mut value, client);
        let _ = request.insert_header(X_FORWARDED_FOR, value);
    }
    let _ = request.insert_header(X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
    if !host.is_empty() {
        let _ = request.insert_header(X_FORWARDED_HOST, host);
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
        let mut digits = [0u8; 16];
        hex16(0x0123_4567_89ab_cdef, &mut digits);
        assert_eq!(&digits, b"0123456789abcdef");
    }

    #[test]
    fn client_addresses_are_written_as_std_writes_them() {
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "192.0.2.7",
            "255.255.255.255",
            "2001:db8::1",
            "::ffff:192.0.2.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut out = String::new();
            push_ip(&mut out, ip);
            assert_eq!(out, ip.to_string());
        }
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
