//! WebAssembly plugins: the engine, loaded plugin versions with pools of
//! warm instances, and the registry the plugin directory fills.

pub mod bindings;
pub(crate) mod chain;
pub(crate) mod compile;
pub mod engine;
pub mod epoch;
/// The contract's encoding of header changes, compiled from the SDK's own
/// file so that host and plugins read and write the same bytes.
#[path = "../../../plugin-sdk/src/header_changes.rs"]
pub mod header_changes;
pub mod host;
pub mod log;
mod memory;
pub mod metrics;
pub mod registry;
pub mod runtime;
pub(crate) mod spec;
pub(crate) mod validate;
