//! A loaded plugin version: its pre-instantiated component and a pool of
//! warm instances, and the calls into its hooks under a deadline and a
//! memory cap.
//!
//! An instance is taken from the pool for one call and put back after it,
//! so a call costs a few microseconds instead of an instantiation. An
//! instance that trapped (a panic, the deadline, the memory cap) is
//! discarded, since its state can no longer be trusted; a healthy one is
//! also retired after `recycle_after` calls, which bounds what a leaking
//! plugin can accumulate.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::InstancePre;
use wasmtime::Store;

use super::bindings::sluice::plugin::types::{
    Candidate, Hook, PlacementChoice, RequestAction, RequestView, ResponseChanges, ResponseView,
};
use super::bindings::{SluicePlugin, SluicePluginPre};
use super::engine::{PluginEngine, EPOCH_TICK};
use super::host::HostState;
use crate::admin::metrics::Metrics;

/// Limits every call and instance runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeLimits {
    /// The longest one hook call may run.
    pub deadline: Duration,
    /// The largest linear memory an instance may have.
    pub memory: usize,
    /// Calls after which a warm instance is replaced by a fresh one.
    pub recycle_after: u32,
    /// Warm instances kept per plugin version.
    pub pool_size: usize,
}

impl Default for RuntimeLimits {
    fn default() -> Self {
        Self {
            deadline: Duration::from_millis(5),
            memory: 16 << 20,
            recycle_after: 10_000,
            pool_size: 64,
        }
    }
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The instance could not be created.
    Instantiate(String),
    /// The call ran past its deadline.
    Deadline,
    /// The instance hit its memory cap.
    Memory,
    /// The plugin trapped (a panic, an unreachable, a bad configuration).
    Trap(String),
}

impl CallError {
    /// The metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Instantiate(_) => "instantiate",
            Self::Deadline => "deadline",
            Self::Memory => "memory",
            Self::Trap(_) => "trap",
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Instantiate(e) => write!(f, "cannot instantiate: {e}"),
            Self::Deadline => f.write_str("ran past its deadline"),
            Self::Memory => f.write_str("hit its memory cap"),
            Self::Trap(e) => write!(f, "trapped: {e}"),
        }
    }
}

struct Warm {
    store: Store<HostState>,
    bindings: SluicePlugin,
    calls: u32,
}

/// One loaded version of a plugin.
pub struct LoadedPlugin {
    /// Its name: the file stem.
    pub name: Arc<str>,
    /// The first 12 hex digits of the file's SHA-256.
    pub version: String,
    /// The hooks it declares.
    pub hooks: Vec<Hook>,
    /// Whether the compiled artifact came from the cache.
    pub from_cache: bool,
    pre: SluicePluginPre<HostState>,
    engine: Arc<PluginEngine>,
    limits: RuntimeLimits,
    metrics: Arc<Metrics>,
    pool: Mutex<Vec<Warm>>,
}

impl LoadedPlugin {
    /// Compiles (or loads from cache) and links `bytes`, then asks the
    /// plugin which hooks it implements.
    pub fn load(
        engine: &Arc<PluginEngine>,
        name: &str,
        bytes: &[u8],
        limits: RuntimeLimits,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let compiled = engine.compile(bytes)?;
        let instance_pre: InstancePre<HostState> =
            engine.linker().instantiate_pre(&compiled.component)?;
        let pre = SluicePluginPre::new(instance_pre)?;
        let mut plugin = Self {
            name: Arc::from(name),
            version: compiled.version,
            hooks: Vec::new(),
            from_cache: compiled.from_cache,
            pre,
            engine: engine.clone(),
            limits,
            metrics,
            pool: Mutex::new(Vec::new()),
        };
        plugin.hooks = plugin
            .call("", |bindings, store| {
                bindings.sluice_plugin_plugin().call_hooks(store)
            })
            .map_err(|e| anyhow::anyhow!("asking which hooks it implements: {e}"))?;
        Ok(plugin)
    }

    /// Whether the plugin declares `hook`.
    pub fn has(&self, hook: Hook) -> bool {
        self.hooks.contains(&hook)
    }

    fn instantiate(&self) -> Result<Warm, CallError> {
        let state = HostState::new(self.name.clone(), self.limits.memory, self.metrics.clone());
        let mut store = Store::new(self.engine.engine(), state);
        store.limiter(|state| &mut state.memory);
        store.set_epoch_deadline(u64::MAX / 2);
        let bindings = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| CallError::Instantiate(format!("{e:#}")))?;
        Ok(Warm {
            store,
            bindings,
            calls: 0,
        })
    }

    /// Runs `f` on a warm instance with `config` as the attachment's
    /// configuration, under the deadline.
    fn call<R>(
        &self,
        config: &str,
        f: impl FnOnce(&SluicePlugin, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let pooled = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut warm = match pooled {
            Some(warm) => warm,
            None => self.instantiate()?,
        };
        if *warm.store.data().config != *config {
            warm.store.data_mut().config = Arc::from(config);
        }
        let ticks = (self.limits.deadline.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64;
        warm.store.set_epoch_deadline(ticks + 1);
        // A host function can panic under a guest call: WASI's blocking
        // stdio, for one, cannot run on a Tokio worker thread. The panic is
        // caught here and treated as a trap, so a plugin writing to stdout
        // fails its own call instead of the request's task.
        let call = std::panic::AssertUnwindSafe(|| f(&warm.bindings, &mut warm.store));
        let result = match std::panic::catch_unwind(call) {
            Ok(result) => result,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a host function panicked".to_string());
                return Err(CallError::Trap(format!(
                    "the plugin used something the host does not provide ({message})"
                )));
            }
        };
        warm.store.set_epoch_deadline(u64::MAX / 2);
        match result {
            Ok(value) => {
                warm.calls += 1;
                if warm.calls < self.limits.recycle_after {
                    let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
                    if pool.len() < self.limits.pool_size {
                        pool.push(warm);
                    }
                }
                Ok(value)
            }
            // The instance is dropped here: after a trap its state is unknown.
            Err(error) => Err(classify(&error, &warm.store)),
        }
    }

    /// Calls `on-request`.
    pub fn on_request(
        &self,
        config: &str,
        request: &RequestView,
    ) -> Result<RequestAction, CallError> {
        self.timed("on_request", || {
            self.call(config, |bindings, store| {
                bindings
                    .sluice_plugin_request_hook()
                    .call_on_request(store, request)
            })
        })
    }

    /// Calls `on-response`.
    pub fn on_response(
        &self,
        config: &str,
        response: &ResponseView,
    ) -> Result<ResponseChanges, CallError> {
        self.timed("on_response", || {
            self.call(config, |bindings, store| {
                bindings
                    .sluice_plugin_response_hook()
                    .call_on_response(store, response)
            })
        })
    }

    /// Calls `select-placement`.
    pub fn select_placement(
        &self,
        config: &str,
        routing_key: Option<&str>,
        request: &RequestView,
        candidates: &[Candidate],
    ) -> Result<PlacementChoice, CallError> {
        self.timed("select_placement", || {
            self.call(config, |bindings, store| {
                bindings
                    .sluice_plugin_placement_policy()
                    .call_select_placement(store, routing_key, request, candidates)
            })
        })
    }

    fn timed<R>(
        &self,
        hook: &str,
        call: impl FnOnce() -> Result<R, CallError>,
    ) -> Result<R, CallError> {
        let started = Instant::now();
        let result = call();
        self.metrics
            .plugin_call_duration
            .with_label_values(&[&self.name, hook])
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// Warm instances currently pooled.
    pub fn pooled(&self) -> usize {
        self.pool.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

fn classify(error: &wasmtime::Error, store: &Store<HostState>) -> CallError {
    if store.data().memory.exceeded {
        return CallError::Memory;
    }
    if let Some(wasmtime::Trap::Interrupt) = error.downcast_ref::<wasmtime::Trap>() {
        return CallError::Deadline;
    }
    CallError::Trap(
        format!("{error:?}")
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default()
            .to_string(),
    )
}
