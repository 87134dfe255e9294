//! The JSON access log: one line per request on stdout.
//!
//! Only the path is logged, never the query string, and of the headers only
//! the host, so tokens carried in URLs or `Authorization` cannot leak into
//! logs.

use std::io::Write;
use std::time::Duration;

use serde::Serialize;

/// One access-log line.
#[derive(Debug, Serialize)]
pub struct AccessRecord<'a> {
    /// When the request started, RFC 3339 with milliseconds.
    pub time: String,
    /// The request id.
    pub request_id: &'a str,
    /// The client's IP address.
    pub client: Option<String>,
    /// The request method.
    pub method: &'a str,
    /// The request host.
    pub host: &'a str,
    /// The request path, without the query string.
    pub path: &'a str,
    /// The status sent to the client (0 if none was sent).
    pub status: u16,
    /// Milliseconds from the start of the request to its end.
    pub duration_ms: f64,
    /// Request body bytes received.
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: usize,
    /// The route's name.
    pub route: Option<&'a str>,
    /// The placement that served it.
    pub placement: Option<&'a str>,
    /// The endpoint that served it.
    pub endpoint: Option<&'a str>,
    /// Why the placement was chosen.
    pub route_reason: Option<&'a str>,
    /// Why the routed placement was skipped, if it was.
    pub failover_reason: Option<&'a str>,
    /// The error that ended the request, if any.
    pub error: Option<String>,
}

/// Milliseconds, with microsecond precision.
pub fn millis(duration: Duration) -> f64 {
    (duration.as_micros() as f64) / 1000.0
}

/// Writes one record as a line on stdout.
pub fn write(record: &AccessRecord<'_>) {
    let Ok(mut line) = serde_json::to_vec(record) else {
        return;
    };
    line.push(b'\n');
    let _ = std::io::stdout().lock().write_all(&line);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_serialize_as_one_json_line() {
        let record = AccessRecord {
            time: crate::support::time::timestamp(std::time::SystemTime::UNIX_EPOCH),
            request_id: "abc",
            client: Some("127.0.0.1".into()),
            method: "GET",
            host: "example.com",
            path: "/x",
            status: 200,
            duration_ms: millis(Duration::from_micros(1500)),
            bytes_in: 0,
            bytes_out: 12,
            route: Some("r"),
            placement: Some("p"),
            endpoint: Some("127.0.0.1:1"),
            route_reason: Some("table"),
            failover_reason: None,
            error: None,
        };
        let text = serde_json::to_string(&record).unwrap();
        assert!(!text.contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["time"], "1970-01-01T00:00:00.000Z");
        assert_eq!(value["duration_ms"], 1.5);
        assert_eq!(value["failover_reason"], serde_json::Value::Null);
    }
}
