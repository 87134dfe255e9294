//! The metrics plugins keep and are measured by: counters and histograms a
//! plugin records through the host, and each hook call's duration.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// The plugin metrics, registered with [`PluginMetrics::register`].
#[derive(Clone)]
pub struct PluginMetrics {
    /// `sluice_plugin_counter_total{plugin, name}`, counted by plugins.
    pub counter: IntCounterVec,
    /// `sluice_plugin_histogram{plugin, name}`, observed by plugins.
    pub histogram: HistogramVec,
    /// `sluice_plugin_call_duration_seconds{plugin, hook}`.
    pub call_duration: HistogramVec,
    /// `sluice_plugin_failures_total{plugin, hook, kind}`: failed calls.
    pub failures: IntCounterVec,
    /// `sluice_plugin_log_lines_dropped_total{plugin}`: log lines over the
    /// plugin's rate.
    pub log_lines_dropped: IntCounterVec,
}

impl PluginMetrics {
    /// Creates the metrics, not yet registered anywhere.
    pub fn new() -> Self {
        Self {
            counter: IntCounterVec::new(
                Opts::new("sluice_plugin_counter_total", "Counters kept by plugins."),
                &["plugin", "name"],
            )
            .expect("valid metric"),
            histogram: HistogramVec::new(
                HistogramOpts::new("sluice_plugin_histogram", "Values observed by plugins.")
                    .buckets(prometheus::DEFAULT_BUCKETS.to_vec()),
                &["plugin", "name"],
            )
            .expect("valid metric"),
            call_duration: HistogramVec::new(
                HistogramOpts::new(
                    "sluice_plugin_call_duration_seconds",
                    "Time spent in one plugin hook call.",
                )
                .buckets(vec![
                    0.000_001, 0.000_002, 0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1,
                    0.000_5, 0.001, 0.005, 0.025,
                ]),
                &["plugin", "hook"],
            )
            .expect("valid metric"),
            failures: IntCounterVec::new(
                Opts::new(
                    "sluice_plugin_failures_total",
                    "Plugin calls that failed, by kind: missing, instantiate, deadline, memory, trap, config, refused.",
                ),
                &["plugin", "hook", "kind"],
            )
            .expect("valid metric"),
            log_lines_dropped: IntCounterVec::new(
                Opts::new(
                    "sluice_plugin_log_lines_dropped_total",
                    "Plugin log lines dropped because the plugin logged faster than its rate.",
                ),
                &["plugin"],
            )
            .expect("valid metric"),
        }
    }

    /// Registers every plugin metric with `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.counter.clone()))?;
        registry.register(Box::new(self.histogram.clone()))?;
        registry.register(Box::new(self.call_duration.clone()))?;
        registry.register(Box::new(self.failures.clone()))?;
        registry.register(Box::new(self.log_lines_dropped.clone()))
    }
}

impl Default for PluginMetrics {
    fn default() -> Self {
        Self::new()
    }
}
