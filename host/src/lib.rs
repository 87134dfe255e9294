//! Sluice: an HTTP reverse proxy on Pingora with two-level cell routing.
//!
//! The crate is laid out by concern, one folder each: [`config`] (schema,
//! interpolation, validation), [`routing`] (route match, routing key, table,
//! load balancing), [`transform`] (header rules, path rewrites, forwarding
//! headers), [`snapshot`] (the compiled config a request runs on), [`proxy`]
//! (the Pingora phases, wiring only) and [`server`] (listeners and services).
//! [`demo`] holds the bundled demo upstreams.

pub mod config;
pub mod demo;
pub mod proxy;
pub mod routing;
pub mod server;
pub mod snapshot;
pub mod transform;
