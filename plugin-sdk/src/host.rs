//! What the host offers: logging and metrics labelled with the plugin's
//! name.
//!
//! In a `wasm32` build these call the host. In a native build (plain
//! `cargo test`) they are recorded by [`crate::testing`] instead, so hooks
//! can be unit-tested without a host.
//!
//! ```
//! use sluice_plugin_sdk::{host, testing};
//!
//! host::info("cache warmed");
//! host::counter_add("rejected", 1);
//! host::histogram_observe("key_length", 12.0);
//!
//! let recorded = testing::recorded();
//! assert_eq!(recorded.logs[0].1, "cache warmed");
//! assert_eq!(recorded.counters, [("rejected".to_string(), 1)]);
//! assert_eq!(recorded.histograms, [("key_length".to_string(), 12.0)]);
//! ```

#[cfg(target_arch = "wasm32")]
use crate::bindings::sluice::plugin::host as imports;

/// Log levels.
pub use crate::bindings::sluice::plugin::host::Level;

/// Writes a log line at `level`.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    imports::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::record_log(level, message);
}

/// Writes a debug log line.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Writes an info log line.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Writes a warning log line.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Writes an error log line.
pub fn error(message: &str) {
    log(Level::Error, message);
}

/// Adds `value` to the counter `name`.
pub fn counter_add(name: &str, value: u64) {
    #[cfg(target_arch = "wasm32")]
    imports::counter_add(name, value);
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::record_counter(name, value);
}

/// Records `value` in the histogram `name`.
pub fn histogram_observe(name: &str, value: f64) {
    #[cfg(target_arch = "wasm32")]
    imports::histogram_observe(name, value);
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::record_histogram(name, value);
}
