//! Parsing the text report of `wrk`.

use anyhow::{anyhow, Context, Result};

/// What one `wrk` run reported.
#[derive(Debug, Clone, PartialEq)]
pub struct WrkReport {
    /// Completed requests.
    pub requests: u64,
    /// The run's length in seconds, as wrk measured it.
    pub seconds: f64,
    /// `Requests/sec`: completed requests per second.
    pub requests_per_sec: f64,
    /// Socket errors of every kind (connect, read, write, timeout).
    pub socket_errors: u64,
    /// Responses whose status was not 2xx or 3xx.
    pub non_2xx: u64,
}

impl WrkReport {
    /// Requests per second that succeeded: `Requests/sec` less the share of
    /// non-2xx/3xx answers, so that a proxy answering errors fast does not
    /// look fast.
    pub fn good_per_sec(&self) -> f64 {
        if self.requests == 0 {
            return 0.0;
        }
        let good = self.requests.saturating_sub(self.non_2xx) as f64;
        self.requests_per_sec * good / self.requests as f64
    }
}

/// Parses wrk's report (its standard output).
pub fn parse(text: &str) -> Result<WrkReport> {
    let mut requests = None;
    let mut seconds = None;
    let mut rps = None;
    let mut socket_errors = 0;
    let mut non_2xx = 0;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Requests/sec:") {
            rps = Some(
                rest.trim()
                    .parse::<f64>()
                    .with_context(|| format!("bad Requests/sec line: {line:?}"))?,
            );
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            for part in rest.split(',') {
                let n = part.split_whitespace().nth(1).unwrap_or("0");
                socket_errors += n
                    .parse::<u64>()
                    .with_context(|| format!("bad Socket errors line: {line:?}"))?;
            }
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx = rest
                .trim()
                .parse::<u64>()
                .with_context(|| format!("bad Non-2xx line: {line:?}"))?;
        } else if line.contains(" requests in ") {
            // "260000 requests in 5.00s, 40.00MB read"
            let mut words = line.split_whitespace();
            let n = words.next().unwrap_or_default();
            requests = Some(
                n.parse::<u64>()
                    .with_context(|| format!("bad request count: {line:?}"))?,
            );
            let duration = words.nth(2).unwrap_or_default().trim_end_matches(',');
            seconds = Some(parse_duration(duration)?);
        }
    }
    Ok(WrkReport {
        requests: requests.ok_or_else(|| anyhow!("no \"N requests in\" line in wrk output"))?,
        seconds: seconds.unwrap_or(f64::NAN),
        requests_per_sec: rps.ok_or_else(|| anyhow!("no Requests/sec line in wrk output"))?,
        socket_errors,
        non_2xx,
    })
}

/// Parses a wrk duration such as `5.00s`, `1.00m`, `850.00ms` or `12.50us`
/// into seconds.
pub fn parse_duration(text: &str) -> Result<f64> {
    let units: [(&str, f64); 5] = [
        ("us", 1e-6),
        ("ms", 1e-3),
        ("s", 1.0),
        ("m", 60.0),
        ("h", 3600.0),
    ];
    for (unit, scale) in units {
        if let Some(number) = text.strip_suffix(unit) {
            if let Ok(v) = number.parse::<f64>() {
                return Ok(v * scale);
            }
        }
    }
    Err(anyhow!("not a wrk duration: {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: &str = "Running 5s test @ http://127.0.0.1:18080/acme/hello
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.21ms  143.08us   6.93ms   93.12%
    Req/Sec    52.91k     1.02k   54.18k    80.00%
  263284 requests in 5.00s, 42.18MB read
Requests/sec:  52639.45
Transfer/sec:      8.43MB
";

    const ERRORS: &str = "Running 4s test @ http://127.0.0.1:18080/acme/hello
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    10.21ms   43.08ms   1.93s    99.12%
    Req/Sec     9.91k     1.02k   14.18k    80.00%
  40000 requests in 4.01s, 4.18MB read
  Socket errors: connect 0, read 12, write 3, timeout 7
  Non-2xx or 3xx responses: 10000
Requests/sec:   9975.06
Transfer/sec:      1.04MB
";

    #[test]
    fn parses_a_clean_report() {
        let r = parse(CLEAN).unwrap();
        assert_eq!(r.requests, 263284);
        assert!((r.seconds - 5.0).abs() < 1e-9);
        assert!((r.requests_per_sec - 52639.45).abs() < 1e-6);
        assert_eq!(r.socket_errors, 0);
        assert_eq!(r.non_2xx, 0);
        assert!((r.good_per_sec() - 52639.45).abs() < 1e-6);
    }

    #[test]
    fn parses_errors_and_discounts_non_2xx() {
        let r = parse(ERRORS).unwrap();
        assert_eq!(r.requests, 40000);
        assert!((r.seconds - 4.01).abs() < 1e-9);
        assert_eq!(r.socket_errors, 22);
        assert_eq!(r.non_2xx, 10000);
        assert!((r.good_per_sec() - 9975.06 * 0.75).abs() < 1e-6);
    }

    #[test]
    fn rejects_output_without_a_summary() {
        assert!(parse("unable to connect to 127.0.0.1:18080 Connection refused\n").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5.00s").unwrap(), 5.0);
        assert_eq!(parse_duration("1.00m").unwrap(), 60.0);
        assert!((parse_duration("850.00ms").unwrap() - 0.85).abs() < 1e-12);
        assert!((parse_duration("12.50us").unwrap() - 12.5e-6).abs() < 1e-15);
        assert!(parse_duration("soon").is_err());
    }
}
