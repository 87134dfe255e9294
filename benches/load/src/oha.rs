//! Parsing the JSON report of `oha` (`--output-format json`).

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

/// What one fixed-rate `oha` run reported. Latencies are in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct OhaReport {
    /// Median latency.
    pub p50_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// 99.9th percentile latency.
    pub p999_ms: f64,
    /// Requests completed per second over the run.
    pub requests_per_sec: f64,
    /// Share of requests that got a response (oha's `successRate`).
    pub success_rate: f64,
    /// Responses by status code.
    pub status_counts: Vec<(u16, u64)>,
    /// Requests that failed without a response (connection errors,
    /// timeouts), by error.
    pub errors: Vec<(String, u64)>,
}

impl OhaReport {
    /// Responses with status 200.
    pub fn ok_responses(&self) -> u64 {
        self.status_counts
            .iter()
            .filter(|(s, _)| *s == 200)
            .map(|(_, n)| n)
            .sum()
    }

    /// Every response and error counted.
    pub fn total(&self) -> u64 {
        self.status_counts.iter().map(|(_, n)| n).sum::<u64>()
            + self.errors.iter().map(|(_, n)| n).sum::<u64>()
    }

    /// One line on what was not a 200, or `None` when everything was.
    pub fn problems(&self) -> Option<String> {
        let mut parts = Vec::new();
        for (status, n) in &self.status_counts {
            if *status != 200 {
                parts.push(format!("{n}× status {status}"));
            }
        }
        for (error, n) in &self.errors {
            parts.push(format!("{n}× {error}"));
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

/// Parses oha's JSON report. oha writes latencies in seconds; they come
/// back in milliseconds.
pub fn parse(json: &str) -> Result<OhaReport> {
    let v: Value = serde_json::from_str(json.trim()).context("oha output is not JSON")?;
    let percentiles = v
        .get("latencyPercentiles")
        .ok_or_else(|| anyhow!("no latencyPercentiles in oha output"))?;
    let pct = |key: &str| -> Result<f64> {
        match percentiles.get(key) {
            Some(Value::Number(n)) => Ok(n.as_f64().unwrap_or(f64::NAN) * 1000.0),
            // No successful request: oha writes null.
            Some(Value::Null) | None => Ok(f64::NAN),
            Some(other) => Err(anyhow!("latencyPercentiles.{key} is {other}")),
        }
    };
    let summary = v
        .get("summary")
        .ok_or_else(|| anyhow!("no summary in oha output"))?;
    let num = |obj: &Value, key: &str| obj.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN);
    let mut status_counts: Vec<(u16, u64)> = v
        .get("statusCodeDistribution")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, n)| Some((k.parse().ok()?, n.as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    status_counts.sort();
    // Requests still in flight when the run's time is up are cut off and
    // counted as "aborted due to deadline"; they are not failures.
    let mut errors: Vec<(String, u64)> = v
        .get("errorDistribution")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !k.contains("aborted due to deadline"))
                .filter_map(|(k, n)| Some((k.clone(), n.as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    errors.sort();
    Ok(OhaReport {
        p50_ms: pct("p50")?,
        p99_ms: pct("p99")?,
        p999_ms: pct("p99.9")?,
        requests_per_sec: num(summary, "requestsPerSec"),
        success_rate: num(summary, "successRate"),
        status_counts,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = r#"{
  "summary": {
    "successRate": 1.0,
    "total": 4.000512,
    "slowest": 0.012,
    "fastest": 0.00009,
    "average": 0.00031,
    "requestsPerSec": 9998.7,
    "totalData": 480000,
    "sizePerRequest": 12,
    "sizePerSec": 119984.4
  },
  "responseTimeHistogram": {"0.0001": 10, "0.001": 39990},
  "latencyPercentiles": {
    "p10": 0.00018, "p25": 0.00021, "p50": 0.000254, "p75": 0.0003,
    "p90": 0.00041, "p95": 0.0005, "p99": 0.00123, "p99.9": 0.0052, "p99.99": 0.011
  },
  "rps": {"mean": 9998.0},
  "details": {"DNSDialup": {"average": 0.0001}},
  "statusCodeDistribution": {"200": 39990, "502": 10},
  "errorDistribution": {"connection closed before message completed": 3, "aborted due to deadline": 64}
}"#;

    #[test]
    fn parses_percentiles_in_milliseconds() {
        let r = parse(REPORT).unwrap();
        assert!((r.p50_ms - 0.254).abs() < 1e-9);
        assert!((r.p99_ms - 1.23).abs() < 1e-9);
        assert!((r.p999_ms - 5.2).abs() < 1e-9);
        assert!((r.requests_per_sec - 9998.7).abs() < 1e-9);
        assert_eq!(r.success_rate, 1.0);
    }

    #[test]
    fn counts_statuses_and_errors() {
        let r = parse(REPORT).unwrap();
        assert_eq!(r.status_counts, vec![(200, 39990), (502, 10)]);
        assert_eq!(r.ok_responses(), 39990);
        assert_eq!(r.total(), 40003);
        assert_eq!(
            r.problems().unwrap(),
            "10× status 502, 3× connection closed before message completed"
        );
    }

    #[test]
    fn null_percentiles_when_nothing_succeeded() {
        let json = r#"{"summary": {"successRate": 0.0, "requestsPerSec": 0.0},
            "latencyPercentiles": {"p50": null, "p99": null, "p99.9": null},
            "statusCodeDistribution": {},
            "errorDistribution": {"connection refused": 100}}"#;
        let r = parse(json).unwrap();
        assert!(r.p99_ms.is_nan());
        assert_eq!(r.problems().unwrap(), "100× connection refused");
    }

    #[test]
    fn rejects_non_json() {
        assert!(parse("error: connection refused").is_err());
        assert!(parse("{}").is_err());
    }
}
