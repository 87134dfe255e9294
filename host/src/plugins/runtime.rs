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
//!
//! A version whose compiled code came from the on-disk cache can be
//! parked while no route attaches it: its code is unmapped and its warm
//! instances dropped, and the next instance it is asked for maps the code
//! again from the cache, in about a millisecond.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use prometheus::Histogram;
use wasmtime::component::InstancePre;
use wasmtime::Store;

use super::bindings::sluice::plugin::types::Hook;
use super::bindings::{SluicePlugin, SluicePluginPre, CONTRACT};
use super::engine::PluginEngine;
use super::epoch::EPOCH_TICK;
use super::host::{CallContext, Candidate, Changes, HostState, RequestContext, ResponseContext};
use super::log::LogBudget;
use super::metrics::PluginMetrics;

/// The limits every call and instance runs under, shared by the registry
/// and its plugins so that a reload changes them for every plugin at once.
pub type SharedLimits = Arc<ArcSwap<RuntimeLimits>>;

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
    /// The plugin trapped (a panic, an unreachable).
    Trap(String),
    /// The plugin refused the attachment's configuration.
    Config(String),
    /// The host refused a change the plugin made.
    Refused(String),
    /// The body is larger than the attachment buffers, in bytes.
    BodyLimit(u64),
}

impl CallError {
    /// The metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Instantiate(_) => "instantiate",
            Self::Deadline => "deadline",
            Self::Memory => "memory",
            Self::Trap(_) => "trap",
            Self::Config(_) => "config",
            Self::Refused(_) => "refused",
            Self::BodyLimit(_) => "body_limit",
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Instantiate(e) => write!(f, "cannot instantiate: {e}"),
            Self::Deadline => f.write_str("ran past its deadline"),
            Self::Memory => f.write_str("hit its memory cap"),
            Self::Trap(e) => write!(f, "trapped: {}", super::log::escape(e)),
            Self::Config(e) => write!(f, "refused its configuration: {}", super::log::escape(e)),
            Self::Refused(e) => write!(f, "made a change the host refuses: {e}"),
            Self::BodyLimit(limit) => write!(
                f,
                "was not called: the body is over its limit of {limit} bytes"
            ),
        }
    }
}

struct Warm {
    store: Store<HostState>,
    /// Boxed: the exports' handles are a few hundred bytes, and a warm
    /// instance moves out of its pool and back on every call.
    bindings: Box<SluicePlugin>,
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
    /// The cached artifact its code can be mapped from again once parked.
    artifact: Option<PathBuf>,
    code: Mutex<Code>,
    engine: Arc<PluginEngine>,
    limits: SharedLimits,
    metrics: Arc<PluginMetrics>,
    logs: Arc<LogBudget>,
    /// Call durations per hook, resolved once instead of per call.
    durations: HookDurations,
}

/// A version's compiled code, when mapped, and the warm instances made
/// from it: under one lock, so that no instance goes back to the pool of a
/// version parked while it ran.
struct Code {
    pre: Option<SluicePluginPre<HostState>>,
    pool: Vec<Warm>,
}

/// The `sluice_plugin_call_duration_seconds` series of one plugin.
struct HookDurations {
    on_request: Histogram,
    on_response: Histogram,
    select_placement: Histogram,
    on_request_body: Histogram,
    on_response_body: Histogram,
}

impl HookDurations {
    /// The series of `hook`.
    fn of(&self, hook: Hook) -> &Histogram {
        match hook {
            Hook::OnRequest => &self.on_request,
            Hook::OnResponse => &self.on_response,
            Hook::SelectPlacement => &self.select_placement,
            Hook::OnRequestBody => &self.on_request_body,
            Hook::OnResponseBody => &self.on_response_body,
        }
    }

    fn new(metrics: &PluginMetrics, plugin: &str) -> Self {
        let series = |hook| {
            metrics
                .call_duration
                .with_label_values(&[plugin, super::registry::hook_name(hook)])
        };
        Self {
            on_request: series(Hook::OnRequest),
            on_response: series(Hook::OnResponse),
            select_placement: series(Hook::SelectPlacement),
            on_request_body: series(Hook::OnRequestBody),
            on_response_body: series(Hook::OnResponseBody),
        }
    }
}

/// Refuses a component that imports WASI's filesystem or sockets, naming
/// the interface: plugins get no files and no network, so the engine does
/// not link them, and the linker's own message would not say why.
fn check_sandbox(
    engine: &wasmtime::Engine,
    component: &wasmtime::component::Component,
) -> anyhow::Result<()> {
    let ty = component.component_type();
    for (name, _) in ty.imports(engine) {
        if name.starts_with("wasi:filesystem/") || name.starts_with("wasi:sockets/") {
            anyhow::bail!(
                "it imports {name}, and plugins get no files and no network: Sluice does not provide WASI's filesystem or sockets"
            );
        }
    }
    Ok(())
}

/// Refuses a component built against another version of the contract,
/// naming both: linking it would fail with a message about a missing
/// import that does not say why.
fn check_contract(
    engine: &wasmtime::Engine,
    component: &wasmtime::component::Component,
) -> anyhow::Result<()> {
    let (package, ours) = CONTRACT.split_once('@').unwrap_or((CONTRACT, ""));
    let ty = component.component_type();
    let names = ty
        .imports(engine)
        .map(|(name, _)| name)
        .chain(ty.exports(engine).map(|(name, _)| name));
    for name in names {
        let Some(rest) = name.strip_prefix(package).and_then(|r| r.strip_prefix('/')) else {
            continue;
        };
        let theirs = rest.split_once('@').map_or("", |(_, version)| version);
        if theirs != ours {
            anyhow::bail!(
                "it was built against {package}@{theirs} and this Sluice provides {CONTRACT}: rebuild it with the SDK of this release"
            );
        }
    }
    Ok(())
}

impl LoadedPlugin {
    /// Compiles (or loads from cache) and links `bytes`, then asks the
    /// plugin which hooks it implements.
    pub fn load(
        engine: &Arc<PluginEngine>,
        name: &str,
        bytes: &[u8],
        limits: SharedLimits,
        metrics: Arc<PluginMetrics>,
    ) -> anyhow::Result<Self> {
        let compiled = engine.compile(bytes)?;
        check_contract(engine.engine(), &compiled.component)?;
        check_sandbox(engine.engine(), &compiled.component)?;
        let instance_pre: InstancePre<HostState> =
            engine.linker().instantiate_pre(&compiled.component)?;
        let pre = SluicePluginPre::new(instance_pre)?;
        let durations = HookDurations::new(&metrics, name);
        let mut plugin = Self {
            name: Arc::from(name),
            version: compiled.version,
            hooks: Vec::new(),
            from_cache: compiled.from_cache,
            artifact: compiled.artifact,
            code: Mutex::new(Code {
                pre: Some(pre),
                pool: Vec::new(),
            }),
            engine: engine.clone(),
            limits,
            metrics,
            logs: Arc::new(LogBudget::default()),
            durations,
        };
        // Asked on an instance of its own, which is then dropped: warm
        // instances are made by the first calls that need them, so a plugin
        // loaded but not attached holds none.
        plugin.hooks = plugin
            .on_fresh_instance(|bindings, store| bindings.sluice_plugin_plugin().call_hooks(store))
            .map_err(|e| anyhow::anyhow!("asking which hooks it implements: {e}"))?;
        Ok(plugin)
    }

    /// Whether the plugin declares `hook`.
    pub fn has(&self, hook: Hook) -> bool {
        self.hooks.contains(&hook)
    }

    /// Unmaps the compiled code and drops the warm instances, if the code
    /// can be mapped again from the cache; the next instance asked for maps
    /// it again. The registry parks a version no route attaches.
    pub fn park(&self) {
        if self.artifact.is_none() {
            return;
        }
        let mut code = self.lock_code();
        if code.pre.take().is_some() {
            code.pool.clear();
            tracing::debug!(plugin = %self.name, version = %self.version, "plugin code parked: no route attaches it");
        }
    }

    /// Whether the compiled code is mapped (not parked).
    pub fn is_mapped(&self) -> bool {
        self.lock_code().pre.is_some()
    }

    fn lock_code(&self) -> std::sync::MutexGuard<'_, Code> {
        self.code.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pre-instantiated component, mapping the code again from the
    /// cache if it was parked.
    fn pre(&self) -> Result<SluicePluginPre<HostState>, CallError> {
        let mut code = self.lock_code();
        if let Some(pre) = &code.pre {
            return Ok(pre.clone());
        }
        let unmappable =
            |e: wasmtime::Error| CallError::Instantiate(format!("mapping its parked code: {e:#}"));
        let path = self.artifact.as_deref().ok_or_else(|| {
            CallError::Instantiate("its code was parked without a cached artifact".into())
        })?;
        let component = self.engine.load_artifact(path).map_err(unmappable)?;
        let instance_pre = self
            .engine
            .linker()
            .instantiate_pre(&component)
            .map_err(unmappable)?;
        let pre = SluicePluginPre::new(instance_pre).map_err(unmappable)?;
        tracing::debug!(plugin = %self.name, version = %self.version, "plugin code mapped again");
        code.pre = Some(pre.clone());
        Ok(pre)
    }

    fn instantiate(&self, limits: &RuntimeLimits) -> Result<Warm, CallError> {
        let state = HostState::new(
            self.name.clone(),
            limits.memory,
            self.metrics.clone(),
            self.logs.clone(),
        );
        let mut store = Store::new(self.engine.engine(), state);
        store.limiter(|state| &mut state.memory);
        store.set_epoch_deadline(u64::MAX / 2);
        let bindings = self
            .pre()?
            .instantiate(&mut store)
            .map_err(|e| CallError::Instantiate(format!("{e:#}")))?;
        Ok(Warm {
            store,
            bindings: Box::new(bindings),
            calls: 0,
        })
    }

    /// Checks `config` on a fresh instance, as a route's attachment would
    /// hand it over: the plugin's own words when it refuses it.
    pub fn check_config(&self, config: &str) -> Result<(), CallError> {
        self.on_fresh_instance(|bindings, store| {
            bindings
                .sluice_plugin_plugin()
                .call_configure(store, config)
        })?
        .map_err(CallError::Config)
    }

    /// Runs `f` under the deadline on an instance of its own, dropped
    /// afterwards, with nothing lent to it.
    fn on_fresh_instance<R>(
        &self,
        f: impl FnOnce(&SluicePlugin, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let limits = self.limits.load();
        let mut instance = self.instantiate(&limits)?;
        self.guarded(&mut instance, &limits, CallContext::default(), f)
    }

    /// Runs `f` on a warm instance under the deadline, after handing it
    /// `config` if it last saw another one, with `context` lent to it: the
    /// changes the call made.
    fn call(
        &self,
        config: &Arc<str>,
        context: CallContext<'_>,
        f: impl FnOnce(&SluicePlugin, &mut Store<HostState>) -> wasmtime::Result<()>,
    ) -> Result<Changes, CallError> {
        let limits = self.limits.load();
        let pooled = self.lock_code().pool.pop();
        let mut warm = match pooled {
            // An instance made under another memory cap is replaced.
            Some(warm) if warm.store.data().memory.max() == limits.memory => warm,
            _ => self.instantiate(&limits)?,
        };
        let current = warm.store.data().config.as_ref();
        if !current.is_some_and(|c| Arc::ptr_eq(c, config) || **c == **config) {
            warm.store.data_mut().config = None;
            self.guarded(
                &mut warm,
                &limits,
                CallContext::default(),
                |bindings, store| {
                    bindings
                        .sluice_plugin_plugin()
                        .call_configure(store, config)
                },
            )?
            .map_err(CallError::Config)?;
            warm.store.data_mut().config = Some(config.clone());
        }
        self.guarded(&mut warm, &limits, context, f)?;
        let changes = std::mem::take(&mut warm.store.data_mut().changes);
        warm.calls += 1;
        if warm.calls < limits.recycle_after {
            let mut code = self.lock_code();
            if code.pre.is_some() && code.pool.len() < limits.pool_size {
                code.pool.push(warm);
            }
        }
        match changes.refused {
            Some(reason) => Err(CallError::Refused(reason)),
            None => Ok(changes),
        }
    }

    /// Runs one guest call on `warm` under the deadline, with `context`
    /// lent for its length. On an error the caller drops the instance:
    /// after a trap its state is unknown.
    fn guarded<R>(
        &self,
        warm: &mut Warm,
        limits: &RuntimeLimits,
        context: CallContext<'_>,
        f: impl FnOnce(&SluicePlugin, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        // One tick more than the deadline's whole ticks: a call that starts
        // just before a tick still gets the whole deadline.
        let deadline_ticks =
            (limits.deadline.as_nanos() as u64 / EPOCH_TICK.as_nanos() as u64).max(1) + 1;
        warm.store.set_epoch_deadline(deadline_ticks);
        self.engine.ticker().call_starts(deadline_ticks);
        warm.store.data_mut().lend(&context);
        // A host function can panic under a guest call: WASI's blocking
        // stdio, for one, cannot run on a Tokio worker thread. The panic is
        // caught here and treated as a trap, so a plugin writing to stdout
        // fails its own call instead of the request's task.
        let call = std::panic::AssertUnwindSafe(|| f(&warm.bindings, &mut warm.store));
        let result = std::panic::catch_unwind(call);
        warm.store.data_mut().take_back();
        warm.store.set_epoch_deadline(u64::MAX / 2);
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(classify(&error, &warm.store)),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a host function panicked".to_string());
                Err(CallError::Trap(format!(
                    "the plugin used something the host does not provide ({message})"
                )))
            }
        }
    }

    /// Calls `on-request` with the attachment's `config`: the changes the
    /// plugin made to `request`, or its answer.
    pub fn on_request(
        &self,
        config: &Arc<str>,
        request: &RequestContext<'_>,
    ) -> Result<Changes, CallError> {
        let context = CallContext {
            request: Some(request),
            ..CallContext::default()
        };
        self.hook(Hook::OnRequest, config, context)
    }

    /// Calls `on-response`: the changes the plugin made to `response`.
    pub fn on_response(
        &self,
        config: &Arc<str>,
        request: &RequestContext<'_>,
        response: &ResponseContext<'_>,
    ) -> Result<Changes, CallError> {
        let context = CallContext {
            request: Some(request),
            response: Some(response),
            ..CallContext::default()
        };
        self.hook(Hook::OnResponse, config, context)
    }

    /// Calls `select-placement`: the candidate the plugin chose, if any.
    pub fn select_placement(
        &self,
        config: &Arc<str>,
        request: &RequestContext<'_>,
        candidates: &[Candidate],
    ) -> Result<Option<String>, CallError> {
        let context = CallContext {
            request: Some(request),
            candidates: Some(candidates),
            ..CallContext::default()
        };
        self.hook(Hook::SelectPlacement, config, context)
            .map(|changes| changes.placement)
    }

    /// Calls `on-request-body` on the buffered `body`: its replacement, if
    /// the plugin made one.
    pub fn on_request_body(
        &self,
        config: &Arc<str>,
        request: &RequestContext<'_>,
        body: &[u8],
    ) -> Result<Option<Vec<u8>>, CallError> {
        let context = CallContext {
            request: Some(request),
            body: Some(body),
            ..CallContext::default()
        };
        self.hook(Hook::OnRequestBody, config, context)
            .map(|changes| changes.body)
    }

    /// Calls `on-response-body` on the buffered `body`: its replacement, if
    /// the plugin made one.
    pub fn on_response_body(
        &self,
        config: &Arc<str>,
        request: &RequestContext<'_>,
        response: &ResponseContext<'_>,
        body: &[u8],
    ) -> Result<Option<Vec<u8>>, CallError> {
        let context = CallContext {
            request: Some(request),
            response: Some(response),
            body: Some(body),
            ..CallContext::default()
        };
        self.hook(Hook::OnResponseBody, config, context)
            .map(|changes| changes.body)
    }

    /// Calls the plugin's export for `hook` with `context` lent and the
    /// attachment's `config`, timing it in that hook's duration series: the
    /// changes the plugin made.
    fn hook(
        &self,
        hook: Hook,
        config: &Arc<str>,
        context: CallContext<'_>,
    ) -> Result<Changes, CallError> {
        let context = CallContext {
            hook: Some(hook),
            ..context
        };
        let started = Instant::now();
        let result = self.call(config, context, |bindings, store| match hook {
            Hook::OnRequest => bindings.sluice_plugin_request_hook().call_on_request(store),
            Hook::OnResponse => bindings
                .sluice_plugin_response_hook()
                .call_on_response(store),
            Hook::SelectPlacement => bindings
                .sluice_plugin_placement_policy()
                .call_select_placement(store),
            Hook::OnRequestBody => bindings
                .sluice_plugin_request_body_hook()
                .call_on_request_body(store),
            Hook::OnResponseBody => bindings
                .sluice_plugin_response_body_hook()
                .call_on_response_body(store),
        });
        self.durations
            .of(hook)
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// Warm instances currently pooled.
    pub fn pooled(&self) -> usize {
        self.lock_code().pool.len()
    }
}

fn classify(error: &wasmtime::Error, store: &Store<HostState>) -> CallError {
    if store.data().memory.exceeded {
        return CallError::Memory;
    }
    if let Some(wasmtime::Trap::Interrupt) = error.downcast_ref::<wasmtime::Trap>() {
        return CallError::Deadline;
    }
    CallError::Trap(trap_reason(error))
}

/// What trapped, and in which of the plugin's functions: the trap itself
/// (`wasm \`unreachable\` instruction executed` is how a Rust panic ends)
/// and the innermost frame of its backtrace outside the standard library
/// and its panic and abort machinery, demangled.
fn trap_reason(error: &wasmtime::Error) -> String {
    const RUNTIME: [&str; 7] = [
        "std::",
        "core::",
        "alloc::",
        "panic_abort::",
        "__rust",
        "rust_panic",
        "abort",
    ];
    let reason = match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => {
            let text = trap.to_string();
            text.strip_prefix("wasm trap: ")
                .unwrap_or(&text)
                .to_string()
        }
        None => error.root_cause().to_string(),
    };
    let function = error
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .and_then(|trace| {
            trace
                .frames()
                .iter()
                .filter_map(|frame| frame.func_name())
                .map(|name| format!("{:#}", rustc_demangle::demangle(name)))
                .find(|name| !RUNTIME.iter().any(|prefix| name.starts_with(prefix)))
        });
    match function {
        Some(function) => format!("{reason}, in {function}"),
        None => reason,
    }
}
