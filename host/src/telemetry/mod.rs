//! What Sluice tells about its traffic: Prometheus metrics ([`metrics`])
//! and the JSON access log on stdout ([`access_log`]).

pub mod access_log;
pub mod metrics;
