//! Sluice: an HTTP reverse proxy on Pingora with two-level cell routing.
//!
//! The crate is laid out by concern, one folder each: [`config`] (schema,
//! interpolation, validation, reload), [`routing`] (route match, routing
//! key, table, load balancing), [`resilience`] (breakers, health, limits,
//! admission and failover), [`transform`] (header rules, path rewrites,
//! forwarding headers), [`snapshot`] (the compiled config a request runs
//! on), [`proxy`] (the Pingora phases, wiring only), [`admin`] (status API
//! and metrics), [`tls`] (certificates and ACME), [`access_log`] and
//! [`server`] (startup). The Caddyfile importer (`sluice-import`) and the demo's
//! upstreams (`sluice-demo`) are crates of their own.

pub mod admin;
pub mod config;
pub mod control;
pub mod plugins;
pub mod proxy;
pub mod resilience;
pub mod routing;
pub mod server;
pub mod snapshot;
pub mod support;
pub mod telemetry;
pub mod tls;
pub mod transform;
