//! What the host gives a plugin instance: an empty WASI context (no
//! preopened directories, no sockets, no environment), a memory cap, and
//! the `sluice:plugin/host` imports: logging and metrics labelled with the
//! plugin's name, and the configuration of the attachment being called.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::sluice::plugin::host::{Host, Level};
use super::bindings::sluice::plugin::types;
use crate::admin::metrics::Metrics;

/// The state of one plugin instance's store.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// The memory cap, and whether the instance hit it.
    pub memory: MemoryCap,
    plugin: Arc<str>,
    /// The configuration JSON of the attachment being called.
    pub config: Arc<str>,
    metrics: Arc<Metrics>,
}

impl HostState {
    /// State for an instance of `plugin`, with linear memory capped at `memory` bytes.
    pub fn new(plugin: Arc<str>, memory: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            memory: MemoryCap {
                max: memory,
                exceeded: false,
            },
            plugin,
            config: Arc::from(""),
            metrics,
        }
    }
}

/// Caps an instance's linear memory. Growing past the cap traps (rather
/// than failing the allocation quietly) and is remembered, so the host can
/// tell a memory bomb from any other trap.
pub struct MemoryCap {
    max: usize,
    /// Set when a growth past the cap was refused.
    pub exceeded: bool,
}

/// The most table elements an instance may have.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.exceeded = true;
            wasmtime::bail!(
                "the plugin's memory would grow to {desired} bytes, over its cap of {} bytes",
                self.max
            );
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        let plugin = &*self.plugin;
        match level {
            Level::Trace => tracing::trace!(%plugin, "{message}"),
            Level::Debug => tracing::debug!(%plugin, "{message}"),
            Level::Info => tracing::info!(%plugin, "{message}"),
            Level::Warn => tracing::warn!(%plugin, "{message}"),
            Level::Error => tracing::error!(%plugin, "{message}"),
        }
    }

    fn counter_add(&mut self, name: String, value: u64) {
        self.metrics
            .plugin_counter
            .with_label_values(&[&self.plugin, &name])
            .inc_by(value);
    }

    fn histogram_observe(&mut self, name: String, value: f64) {
        self.metrics
            .plugin_histogram
            .with_label_values(&[&self.plugin, &name])
            .observe(value);
    }

    fn config(&mut self) -> String {
        self.config.to_string()
    }
}
