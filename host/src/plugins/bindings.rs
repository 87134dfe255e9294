//! Host bindings generated from the WIT contract in `wit/`.

wasmtime::component::bindgen!({
    world: "sluice-plugin",
    path: "../wit",
    with: {
        "sluice:plugin/types.request": super::host::LentRequest,
        "sluice:plugin/types.response": super::host::LentResponse,
        "sluice:plugin/types.body": super::host::LentBody,
        "sluice:plugin/types.candidates": super::host::LentCandidates,
    },
});

/// The contract's package and version, as components name it in their
/// imports and exports.
pub const CONTRACT: &str = "sluice:plugin@0.2.0";
