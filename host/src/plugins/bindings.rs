//! Host bindings generated from the WIT contract in `wit/`.

wasmtime::component::bindgen!({
    world: "sluice-plugin",
    path: "../wit",
});

/// The contract's package and version, as components name it in their
/// imports and exports.
pub const CONTRACT: &str = "sluice:plugin@0.4.0";
