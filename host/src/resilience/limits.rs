//! Size limits a placement sets: on the request body a client sends, and
//! on the response head its upstreams send back.

use pingora::http::ResponseHeader;

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
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
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
