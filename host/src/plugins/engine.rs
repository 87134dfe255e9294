//! The one wasmtime `Engine` plugins run on, the linker every plugin is
//! instantiated through, and compilation with an on-disk cache of compiled
//! artifacts.
//!
//! Compiling a component takes tens to hundreds of milliseconds, so it never
//! happens on a request: plugins are compiled when the plugin directory is
//! loaded or changes. The compiled artifact is stored in the cache
//! directory under a key made of the component's content hash and the
//! engine's compatibility hash, so a restart deserializes in a few
//! milliseconds instead of compiling, and an engine upgrade never loads an
//! incompatible artifact.
//!
//! The engine plugins run on has no compiler. Setting Cranelift up touches
//! about half a megabyte of code that then stays resident for the life of
//! the process, so a compiling engine with the same configuration is made
//! only when a component is not in the cache, and dropped after compiling it.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::Digest;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};

use super::epoch::EpochTicker;
use super::host::HostState;

/// The engine and linker shared by every plugin.
pub struct PluginEngine {
    engine: Engine,
    /// The configuration of `engine` with the compiler left enabled: what a
    /// compiling engine is made from.
    compiling_config: Config,
    linker: Linker<HostState>,
    ticker: Arc<EpochTicker>,
    cache_dir: Option<PathBuf>,
    compatibility: String,
}

/// A compiled component and where it came from.
pub struct Compiled {
    /// The component.
    pub component: Component,
    /// The first 12 hex digits of the component's SHA-256.
    pub version: String,
    /// Whether it was loaded from the cache rather than compiled.
    pub from_cache: bool,
    /// The cached artifact its code is mapped from, if it was cached.
    pub artifact: Option<PathBuf>,
}

impl PluginEngine {
    /// A new engine with epoch interruption, its ticker thread, and the
    /// WASI interfaces plugins may use (given nothing) and Sluice host imports
    /// linked.
    pub fn new(cache_dir: Option<PathBuf>) -> anyhow::Result<Arc<Self>> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        // Unwind tables are for native unwinders (a debugger, or a panic
        // crossing plugin frames, which wasmtime never lets happen); its own
        // traces walk frame pointers. Left out, a compiled plugin is about
        // 35 KB smaller and loading it registers no tables.
        config.native_unwind_info(false);
        // `perf` cannot name JIT-compiled plugin code by itself; with this
        // set, wasmtime writes /tmp/perf-PID.map so profiles show the
        // plugin's own functions.
        if std::env::var_os("SLUICE_PLUGIN_PERF_MAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let compiling_config = config.clone();
        config.enable_compiler(false);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        link_wasi(&mut linker)?;
        super::bindings::SluicePlugin::add_to_linker::<
            HostState,
            wasmtime::component::HasSelf<HostState>,
        >(&mut linker, |state| state)?;
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let compatibility = format!("{:016x}", hasher.finish());
        let ticker = EpochTicker::start(&engine)?;
        Ok(Arc::new(Self {
            engine,
            compiling_config,
            linker,
            ticker,
            cache_dir,
            compatibility,
        }))
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The linker.
    pub fn linker(&self) -> &Linker<HostState> {
        &self.linker
    }

    /// The ticker that advances the engine's epoch for calls' deadlines.
    pub fn ticker(&self) -> &EpochTicker {
        &self.ticker
    }

    /// Compiles `bytes`, or loads the cached artifact compiled from the same
    /// bytes by a compatible engine.
    pub fn compile(&self, bytes: &[u8]) -> anyhow::Result<Compiled> {
        let digest = sha2::Sha256::digest(bytes);
        let hash: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let version = hash[..12].to_string();
        let cached = self
            .cache_dir
            .as_ref()
            .map(|dir| dir.join(format!("{hash}-{}.cwasm", self.compatibility)));
        let compiled = |component, from_cache, artifact: Option<&PathBuf>| Compiled {
            component,
            version: version.clone(),
            from_cache,
            artifact: artifact.cloned(),
        };
        if let Some(path) = cached.as_ref().filter(|p| p.exists()) {
            match self.load_artifact(path) {
                Ok(component) => return Ok(compiled(component, true, Some(path))),
                Err(e) => {
                    tracing::warn!(cache = %path.display(), error = %e, "ignoring an unusable cached plugin artifact")
                }
            }
        }
        let artifact = self.compiling_engine()?.precompile_component(bytes)?;
        if let Some(path) = &cached {
            // Loaded from the file just written, as a restart would load it:
            // its code is then mapped from the file, shared with the page
            // cache, instead of copied into memory of the proxy's own.
            match write_cache(path, &artifact) {
                Ok(()) => match self.load_artifact(path) {
                    Ok(component) => return Ok(compiled(component, false, Some(path))),
                    Err(e) => {
                        tracing::warn!(cache = %path.display(), error = %e, "cannot load the plugin just cached; loading it from memory")
                    }
                },
                Err(e) => {
                    tracing::warn!(cache = %path.display(), error = %e, "cannot cache the compiled plugin");
                }
            }
        }
        // SAFETY: the bytes were produced just above, for this engine, by an
        // engine of the same configuration.
        let component = unsafe { Component::deserialize(&self.engine, &artifact) }
            .map_err(|e| anyhow::anyhow!("loading the compiled plugin: {e:#}"))?;
        Ok(compiled(component, false, None))
    }

    /// An engine that compiles for `engine`: the same configuration, with
    /// the compiler enabled. Its artifacts load into `engine`.
    fn compiling_engine(&self) -> anyhow::Result<Engine> {
        Ok(Engine::new(&self.compiling_config)?)
    }

    /// Maps the compiled component cached at `path`, which must be the
    /// [`Compiled::artifact`] of an earlier `compile`.
    pub(super) fn load_artifact(&self, path: &Path) -> wasmtime::Result<Component> {
        // SAFETY: files in the cache directory are written only by
        // `compile`, from `precompile_component` of an engine with the same
        // compatibility hash (part of the file's name), under the content
        // hash of their source.
        unsafe { Component::deserialize_file(&self.engine, path) }
    }
}

fn write_cache(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::support::files::write_atomically(path, bytes, 0o644)
}

/// Links the WASI interfaces a plugin may import: the command-line world's
/// (an empty environment, exit, stdio and terminals), I/O streams, clocks
/// and random numbers. Plugins get no files and no network, so a component
/// importing the filesystem or sockets is refused when it loads instead of
/// failing its calls.
fn link_wasi(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView};
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
    use wasmtime_wasi::p2::bindings::sync::io as sync_io;
    use wasmtime_wasi::p2::bindings::{cli, clocks, random};
    use wasmtime_wasi::random::WasiRandom;
    use wasmtime_wasi::WasiView;

    let l = linker;
    wasmtime_wasi_io::bindings::wasi::io::error::add_to_linker::<_, IoTable>(l, |t| t.ctx().table)?;
    sync_io::poll::add_to_linker::<_, IoTable>(l, |t| t.ctx().table)?;
    sync_io::streams::add_to_linker::<_, IoTable>(l, |t| t.ctx().table)?;
    clocks::wall_clock::add_to_linker::<_, WasiClocks>(l, <HostState as WasiClocksView>::clocks)?;
    clocks::monotonic_clock::add_to_linker::<_, WasiClocks>(
        l,
        <HostState as WasiClocksView>::clocks,
    )?;
    random::random::add_to_linker::<_, WasiRandom>(l, random_ctx)?;
    random::insecure::add_to_linker::<_, WasiRandom>(l, random_ctx)?;
    random::insecure_seed::add_to_linker::<_, WasiRandom>(l, random_ctx)?;
    cli::exit::add_to_linker::<_, WasiCli>(l, <HostState as WasiCliView>::cli)?;
    cli::environment::add_to_linker::<_, WasiCli>(l, <HostState as WasiCliView>::cli)?;
    cli::stdin::add_to_linker::<_, WasiCli>(l, <HostState as WasiCliView>::cli)?;
    cli::stdout::add_to_linker::<_, WasiCli>(l, <HostState as WasiCliView>::cli)?;
    cli::stderr::add_to_linker::<_, WasiCli>(l, <HostState as WasiCliView>::cli)?;
    cli::terminal_input::add_to_linker::<_, WasiCli>(l, <HostState as WasiCliView>::cli)?;
    cli::terminal_output::add_to_linker::<_, WasiCli>(l, <HostState as WasiCliView>::cli)?;
    cli::terminal_stdin::add_to_linker::<_, WasiCli>(l, <HostState as WasiCliView>::cli)?;
    cli::terminal_stdout::add_to_linker::<_, WasiCli>(l, <HostState as WasiCliView>::cli)?;
    cli::terminal_stderr::add_to_linker::<_, WasiCli>(l, <HostState as WasiCliView>::cli)?;
    Ok(())
}

fn random_ctx(state: &mut HostState) -> &mut wasmtime_wasi::random::WasiRandomCtx {
    use wasmtime_wasi::WasiView;
    state.ctx().ctx.random()
}

/// What the WASI I/O interfaces reach of a plugin's state: its resource
/// table.
struct IoTable;

impl wasmtime::component::HasData for IoTable {
    type Data<'a> = &'a mut wasmtime::component::ResourceTable;
}
