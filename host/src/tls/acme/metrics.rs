//! Prometheus metrics of certificate management.

use std::time::SystemTime;

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use super::Issued;

/// The ACME metrics, registered with [`AcmeMetrics::register`].
#[derive(Clone)]
pub struct AcmeMetrics {
    /// `sluice_acme_certificate_expiry_timestamp_seconds{name}`: when the
    /// current certificate for each name expires (Unix time).
    pub expiry: IntGaugeVec,
    /// `sluice_acme_attempts_total{result}`: orders attempted, by result
    /// (`success` or `failure`).
    pub attempts: IntCounterVec,
    /// `sluice_acme_last_renewal_success_timestamp_seconds`: when a
    /// certificate was last issued (Unix time).
    pub last_success: IntGauge,
}

impl AcmeMetrics {
    /// Creates the metrics, not yet registered anywhere. Both attempt
    /// results start at 0, so the first failure is an increase an alert
    /// on `increase(...[1h]) > 0` sees, not a series that appears at 1.
    pub fn new() -> Self {
        let metrics = Self {
            expiry: IntGaugeVec::new(
                Opts::new(
                    "sluice_acme_certificate_expiry_timestamp_seconds",
                    "When the current certificate for a name expires (Unix time).",
                ),
                &["name"],
            )
            .expect("valid metric"),
            attempts: IntCounterVec::new(
                Opts::new(
                    "sluice_acme_attempts_total",
                    "ACME orders attempted, by result.",
                ),
                &["result"],
            )
            .expect("valid metric"),
            last_success: IntGauge::new(
                "sluice_acme_last_renewal_success_timestamp_seconds",
                "When a certificate was last issued (Unix time).",
            )
            .expect("valid metric"),
        };
        for result in ["success", "failure"] {
            metrics.attempts.with_label_values(&[result]);
        }
        metrics
    }

    /// Registers every ACME metric with `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.expiry.clone()))?;
        registry.register(Box::new(self.attempts.clone()))?;
        registry.register(Box::new(self.last_success.clone()))
    }

    /// Records the expiry of `issued` for each of its names.
    pub(super) fn record_expiry(&self, issued: &Issued) {
        for name in &issued.names {
            self.expiry
                .with_label_values(&[name])
                .set(crate::support::time::unix_seconds(issued.not_after));
        }
    }

    /// Counts a successful order of `issued`.
    pub(super) fn record_success(&self, issued: &Issued) {
        self.attempts.with_label_values(&["success"]).inc();
        self.last_success
            .set(crate::support::time::unix_seconds(SystemTime::now()));
        self.record_expiry(issued);
    }

    /// Counts a failed order.
    pub(super) fn record_failure(&self) {
        self.attempts.with_label_values(&["failure"]).inc();
    }
}

impl Default for AcmeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_renders() {
        let metrics = AcmeMetrics::new();
        let registry = Registry::new();
        metrics.register(&registry).unwrap();
        metrics.record_failure();
        let mut out = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &registry.gather(),
            &mut out,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("sluice_acme_attempts_total{result=\"failure\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sluice_acme_attempts_total{result=\"success\"} 0"),
            "{text}"
        );
    }
}
