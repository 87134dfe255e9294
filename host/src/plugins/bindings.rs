//! Host bindings generated from the WIT contract in `wit/`.

wasmtime::component::bindgen!({
    world: "sluice-plugin",
    path: "../wit",
    with: {
        "sluice:plugin/types.request": super::host::LentRequest,
        "sluice:plugin/types.response": super::host::LentResponse,
    },
});
