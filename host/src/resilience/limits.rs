//! Size limits: on the request head a client sends (set in `[server]`), on
//! the request body (set by a placement), and on the response head a
//! placement's upstreams send back.

use pingora::http::{RequestHeader, ResponseHeader};

/// The `[server]` limits on a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// The longest request line, in bytes.
    pub request_line: u64,
    /// The longest header line, in bytes.
    pub header_line: u64,
    /// The largest head, in bytes.
    pub head: u64,
}

/// Why a request head was refused: the status it is answered with, what
/// the client is told, and the metric label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadRefusal {
    /// 414 or 431.
    pub status: u16,
    /// The answer's text.
    pub message: String,
    /// `request_line`, `header_line` or `request_head`.
    pub limit: &'static str,
}

impl HeadRefusal {
    /// `what` measured `size` bytes, past the `allowed` of `limit`.
    fn over(status: u16, limit: &'static str, what: &str, size: u64, allowed: u64) -> Self {
        Self {
            status,
            message: format!("{what} is {size} bytes, more than the {allowed} allowed"),
            limit,
        }
    }
}

/// The bytes a header takes on the wire: `name: value` and the line end.
fn header_line_size(name: &str, value: &[u8]) -> usize {
    name.len() + 2 + value.len() + 2
}

/// Refuses a request head past `limits`, each part measured as it crossed
/// the wire.
pub fn check_request_head(head: &RequestHeader, limits: &HeadLimits) -> Result<(), HeadRefusal> {
    // "METHOD " + target + " HTTP/1.1" + CRLF.
    let target = head.uri.path_and_query().map_or(1, |p| p.as_str().len());
    let request_line = (head.method.as_str().len() + 1 + target + 9 + 2) as u64;
    if request_line > limits.request_line {
        let what = "the request line";
        return Err(HeadRefusal::over(
            414,
            "request_line",
            what,
            request_line,
            limits.request_line,
        ));
    }
    let mut size = request_line + 2;
    for (name, value) in &head.headers {
        let line = header_line_size(name.as_str(), value.as_bytes()) as u64;
        if line > limits.header_line {
            let what = format!("the {name} header");
            return Err(HeadRefusal::over(
                431,
                "header_line",
                &what,
                line,
                limits.header_line,
            ));
        }
        size += line;
    }
    if size > limits.head {
        return Err(HeadRefusal::over(
            431,
            "request_head",
            "the request head",
            size,
            limits.head,
        ));
    }
    Ok(())
}

/// Refuses a request body of `length` bytes, declared or streamed so far,
/// when it passes the placement's `max_body`, naming the limit.
pub fn check_body(max_body: Option<u64>, length: u64) -> Result<(), String> {
    match max_body {
        Some(limit) if length > limit => {
            Err(format!("the request body is larger than {limit} bytes"))
        }
        _ => Ok(()),
    }
}

/// The size of a response head as it crossed the wire: the status line,
/// every header line with its `: ` and line end, and the blank line.
pub fn response_head_size(head: &ResponseHeader) -> u64 {
    // "HTTP/1.1 200 " + reason + CRLF, then the blank line's CRLF.
    let status_line = 13 + head.get_reason_phrase().map_or(0, str::len) + 2;
    let header_lines: usize = head
        .headers
        .iter()
        .map(|(name, value)| header_line_size(name.as_str(), value.as_bytes()))
        .sum();
    (status_line + header_lines + 2) as u64
}

/// Refuses a response head larger than `limit` bytes, saying how large it was.
pub fn check_response_head(head: &ResponseHeader, limit: u64) -> Result<(), String> {
    let size = response_head_size(head);
    if size > limit {
        return Err(format!(
            "the upstream's response head is {size} bytes, more than the {limit} allowed"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        request_line: 64,
        header_line: 32,
        head: 128,
    };

    fn request(target: &str, headers: &[(&str, String)]) -> RequestHeader {
        let mut head = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
        for (name, value) in headers {
            head.append_header(name.to_string(), value.as_str())
                .unwrap();
        }
        head
    }

    #[test]
    fn a_request_head_past_a_limit_gets_the_status_of_that_limit() {
        let fits = request("/a", &[("x-a", "b".repeat(20))]);
        assert_eq!(check_request_head(&fits, &LIMITS), Ok(()));
        let long_target = request(&format!("/{}", "a".repeat(60)), &[]);
        let refused = check_request_head(&long_target, &LIMITS).unwrap_err();
        assert_eq!((refused.status, refused.limit), (414, "request_line"));
        let long_header = request("/a", &[("x-a", "b".repeat(40))]);
        let refused = check_request_head(&long_header, &LIMITS).unwrap_err();
        assert_eq!((refused.status, refused.limit), (431, "header_line"));
        assert!(
            refused.message.contains("x-a header"),
            "{}",
            refused.message
        );
        let many: Vec<(&str, String)> = (0..6).map(|_| ("x-a", "b".repeat(20))).collect();
        let refused = check_request_head(&request("/a", &many), &LIMITS).unwrap_err();
        assert_eq!((refused.status, refused.limit), (431, "request_head"));
    }

    #[test]
    fn a_body_past_the_limit_is_refused() {
        assert!(check_body(None, u64::MAX).is_ok());
        assert!(check_body(Some(10), 10).is_ok());
        assert_eq!(
            check_body(Some(10), 11).unwrap_err(),
            "the request body is larger than 10 bytes"
        );
    }

    #[test]
    fn a_head_is_measured_as_it_was_sent() {
        let mut head = ResponseHeader::build(200, None).unwrap();
        head.insert_header("content-length", "2").unwrap();
        let wire = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n";
        assert_eq!(response_head_size(&head), wire.len() as u64);
    }

    #[test]
    fn a_head_over_the_limit_is_refused() {
        let mut head = ResponseHeader::build(200, None).unwrap();
        head.insert_header("x-large", "a".repeat(1000)).unwrap();
        assert!(check_response_head(&head, 64 << 10).is_ok());
        let refused = check_response_head(&head, 512).unwrap_err();
        assert!(refused.contains("more than the 512 allowed"), "{refused}");
    }
}
