//! Integration tests: the real `sluice` binary against real upstream servers
//! on loopback ports.

mod acme;
mod admin;
mod balancing;
mod body_hooks;
mod coalescing;
mod common;
mod config_errors;
mod demo;
mod doc_links;
mod errors;
mod fault;
mod fleet;
mod grpc;
mod harness;
mod import;
mod layers;
mod lifecycle;
mod limits;
mod monitoring;
mod names;
mod plugins;
mod reload;
mod resilience;
mod routing;
mod streaming;
mod tls;
mod transforms;
mod upstream_faults;
mod upstream_pool;
