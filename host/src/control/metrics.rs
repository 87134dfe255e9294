//! The metrics of configuration reloads: how each attempt ended, which
//! config is in force, and when one was last applied.

use std::time::SystemTime;

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::support::time::unix_seconds;

/// The reload metrics, registered with [`ReloadMetrics::register`].
#[derive(Clone)]
pub struct ReloadMetrics {
    /// `sluice_config_reloads_total{result}`.
    pub reloads: IntCounterVec,
    /// `sluice_config_info{version, source}`, always 1 for the current config.
    pub config_info: IntGaugeVec,
    /// `sluice_config_last_reload_success_timestamp_seconds`.
    pub last_reload_success: IntGauge,
    /// `sluice_config_last_reload_failed` (1 while the last attempt failed).
    pub last_reload_failed: IntGauge,
}

impl ReloadMetrics {
    /// Creates the metrics, not yet registered anywhere. Every result is
    /// exported at 0 from the start: a series that first appears at 1 shows
    /// no increase, so an alert would miss the first failed reload.
    pub fn new() -> Self {
        let metrics = Self {
            reloads: IntCounterVec::new(
                Opts::new(
                    "sluice_config_reloads_total",
                    "Configuration reload attempts, by result.",
                ),
                &["result"],
            )
            .expect("valid metric"),
            config_info: IntGaugeVec::new(
                Opts::new(
                    "sluice_config_info",
                    "The configuration in force (always 1).",
                ),
                &["version", "source"],
            )
            .expect("valid metric"),
            last_reload_success: IntGauge::new(
                "sluice_config_last_reload_success_timestamp_seconds",
                "When a configuration was last applied (Unix time).",
            )
            .expect("valid metric"),
            last_reload_failed: IntGauge::new(
                "sluice_config_last_reload_failed",
                "1 while the latest reload attempt failed.",
            )
            .expect("valid metric"),
        };
        for result in ["applied", "unchanged", "failed"] {
            metrics.reloads.with_label_values(&[result]);
        }
        metrics
    }

    /// Registers every reload metric with `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.reloads.clone()))?;
        registry.register(Box::new(self.config_info.clone()))?;
        registry.register(Box::new(self.last_reload_success.clone()))?;
        registry.register(Box::new(self.last_reload_failed.clone()))
    }

    /// Records that the config `version` from `source` is now in force.
    pub fn config_applied(&self, version: &str, source: &str) {
        self.config_info.reset();
        self.config_info
            .with_label_values(&[version, source])
            .set(1);
        self.last_reload_success
            .set(unix_seconds(SystemTime::now()));
        self.last_reload_failed.set(0);
    }
}

impl Default for ReloadMetrics {
    fn default() -> Self {
        Self::new()
    }
}
