//! Sluice: an HTTP reverse proxy on Pingora with two-level cell routing.
//!
//! The crate is laid out in layers, each using only those below it:
//! [`support`] (file and time helpers), [`config`] (pure data: schema,
//! parsing, interpolation), the domains [`transform`], [`plugins`],
//! [`routing`], [`resilience`] and [`tls`], [`snapshot`] (the compiled
//! config a request runs on), [`control`] (sources, reloads, publishing),
//! [`telemetry`] (metrics, access log), [`admin`] (the API), [`proxy`] (the
//! Pingora phases, wiring only) and [`server`] (start-up). The Caddyfile
//! importer (`sluice-import`) and the demo's upstreams (`sluice-demo`) are
//! crates of their own.

pub(crate) mod admin;
pub mod config;
pub mod control;
pub mod plugins;
pub(crate) mod proxy;
pub mod resilience;
pub mod routing;
pub mod server;
pub mod snapshot;
pub(crate) mod support;
pub(crate) mod telemetry;
pub mod tls;
pub mod transform;

/// The heap allocator the `sluice` binary installs: mimalloc, entered
/// through its plain functions where they give the alignment asked for.
pub use support::allocator::Mimalloc;
