//! Resilience: circuit breakers, health, limits, and the admission decision
//! that combines them with fallback chains.

pub mod admission;
pub mod breaker;
pub mod checker;
pub mod coalesce;
pub(crate) mod compile;
pub mod connect;
pub mod connections;
pub mod grpc;
pub mod health;
pub(crate) mod limits;
pub mod placement;
pub mod rate;
pub mod state;
