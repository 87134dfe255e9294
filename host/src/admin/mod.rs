//! The admin API and metrics.

pub mod api;
pub mod metrics;
