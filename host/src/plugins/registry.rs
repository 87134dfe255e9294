//! The plugin directory: every `*.wasm` file in it is a plugin named by its
//! file stem. The directory is watched; a new or changed file is compiled
//! in the background and swapped in atomically, so in-flight requests
//! finish on the version they started with. A file that fails to compile
//! or link is rejected with its reason, and the previous version keeps
//! serving. So is a version that the live config's attachments cannot use:
//! one that refuses an attachment's configuration, or lacks a hook an
//! attachment names.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use serde::Serialize;

use super::bindings::sluice::plugin::types::Hook;
use super::engine::PluginEngine;
use super::metrics::PluginMetrics;
use super::runtime::{LoadedPlugin, RuntimeLimits, SharedLimits};
use super::spec::RouteAttachments;
use super::validate::{attachment_problems, AttachmentProblem};

/// How long a changed file must stay quiet before it is compiled.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// The loaded plugins, by name.
///
/// Requests look plugins up by name several times each (every attachment
/// at every hook), so the map hashes with foldhash rather than SipHash: the
/// names come from the operator's plugin directory, not from clients.
pub type PluginMap = HashMap<String, Arc<LoadedPlugin>, foldhash::fast::RandomState>;

/// What the admin API shows of a plugin file.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    /// The plugin's name (the file stem).
    pub name: String,
    /// The version serving, if any.
    pub version: Option<String>,
    /// The hooks it declares.
    pub hooks: Vec<&'static str>,
    /// Whether the serving version's compiled artifact came from the cache.
    pub from_cache: bool,
    /// Warm instances pooled.
    pub pooled: usize,
    /// Whether its compiled code is mapped: a version no route attaches is
    /// parked, unmapped, when its code can be mapped again from the cache.
    pub mapped: bool,
    /// The last error loading this file, if the last attempt failed.
    pub last_error: Option<String>,
}

/// The name of a hook, as written in configs.
pub fn hook_name(hook: Hook) -> &'static str {
    match hook {
        Hook::OnRequest => "on_request",
        Hook::OnResponse => "on_response",
        Hook::SelectPlacement => "select_placement",
        Hook::OnRequestBody => "on_request_body",
        Hook::OnResponseBody => "on_response_body",
    }
}

/// The loaded plugins of one directory.
pub struct PluginRegistry {
    engine: Arc<PluginEngine>,
    directory: PathBuf,
    limits: SharedLimits,
    metrics: Arc<PluginMetrics>,
    plugins: ArcSwap<PluginMap>,
    errors: Mutex<BTreeMap<String, String>>,
    /// The attachments of the config serving, which a new version must accept.
    attachments: ArcSwap<Vec<RouteAttachments>>,
}

impl PluginRegistry {
    /// Loads every plugin in `directory`. Files that fail are reported in
    /// the log and the admin status; the others load.
    pub fn load(
        directory: &Path,
        cache_dir: Option<PathBuf>,
        limits: RuntimeLimits,
        metrics: Arc<PluginMetrics>,
    ) -> anyhow::Result<Arc<Self>> {
        let engine = PluginEngine::new(cache_dir)?;
        let registry = Arc::new(Self {
            engine,
            directory: directory.to_path_buf(),
            limits: Arc::new(ArcSwap::from_pointee(limits)),
            metrics,
            plugins: ArcSwap::from_pointee(PluginMap::default()),
            errors: Mutex::new(BTreeMap::new()),
            attachments: ArcSwap::from_pointee(Vec::new()),
        });
        let entries = match std::fs::read_dir(directory) {
            Ok(entries) => entries,
            Err(e) => anyhow::bail!(
                "cannot read the plugin directory {}: {e}",
                directory.display()
            ),
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if is_plugin_file(&path) {
                registry.load_file(&path);
            }
        }
        // Compiling left a heap far larger than serving needs. (The code
        // that loading ran is handed back by the start-up or the reload
        // that called this, once it is done.)
        super::memory::release_freed();
        Ok(registry)
    }

    /// The plugins loaded now.
    pub fn current(&self) -> Arc<PluginMap> {
        self.plugins.load_full()
    }

    /// One plugin, by name.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.plugins.load().get(name).cloned()
    }

    /// The limits calls run under from now on. An instance made under
    /// another memory cap is replaced when it is next taken from its pool.
    pub fn set_limits(&self, limits: RuntimeLimits) {
        if **self.limits.load() != limits {
            tracing::info!(?limits, "plugin runtime limits changed");
            self.limits.store(Arc::new(limits));
        }
    }

    /// The limits calls run under now.
    pub fn limits(&self) -> RuntimeLimits {
        **self.limits.load()
    }

    /// The attachments of the config now serving: from now on, a changed
    /// file is swapped in only if every one of them accepts it.
    ///
    /// The versions no attachment names are parked: an idle proxy then
    /// holds none of their code. One attached again maps it again when
    /// the new config is checked against it.
    pub fn set_attachments(&self, attachments: Vec<RouteAttachments>) {
        self.attachments.store(Arc::new(attachments));
        for (name, plugin) in self.current().iter() {
            if !self.is_attached(name) {
                plugin.park();
            }
        }
    }

    /// Whether an attachment of the config serving names `name`.
    fn is_attached(&self, name: &str) -> bool {
        self.attachments
            .load()
            .iter()
            .any(|route| route.plugins.iter().any(|a| &*a.name == name))
    }

    /// Why the attachments of the config serving cannot use `plugin` as
    /// `name`: each refused configuration and each missing hook.
    fn unusable_by_attachments(&self, name: &str, plugin: &LoadedPlugin) -> Vec<String> {
        let attachments = self.attachments.load();
        let mut reasons = Vec::new();
        for route in attachments.iter() {
            for (index, attachment) in route.plugins.iter().enumerate() {
                if &*attachment.name != name {
                    continue;
                }
                let attached = format!("route {:?} (plugins[{index}])", route.route);
                for problem in attachment_problems(plugin, attachment) {
                    reasons.push(match problem {
                        AttachmentProblem::Refused(error) => format!("{attached}: {error}"),
                        AttachmentProblem::MissingHook { hook, .. } => format!(
                            "{attached} runs it at {}, which this version does not export",
                            hook_name(hook)
                        ),
                    });
                }
            }
        }
        reasons
    }

    /// The directory this registry loads from.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// Loads (or reloads) one file, swapping it in on success; on failure the
    /// previous version, if any, keeps serving.
    pub fn load_file(&self, path: &Path) {
        let Some(name) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .map(str::to_string)
        else {
            return;
        };
        if !path.exists() {
            self.swap(|plugins| {
                plugins.remove(&name);
            });
            self.errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&name);
            tracing::info!(plugin = %name, "plugin removed");
            return;
        }
        let loaded = std::fs::read(path)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| {
                LoadedPlugin::load(
                    &self.engine,
                    &name,
                    &bytes,
                    self.limits.clone(),
                    self.metrics.clone(),
                )
            })
            .and_then(|plugin| {
                // Swapping in a version the serving routes cannot use would
                // fail their every call; keeping the old one loses nothing.
                let reasons = self.unusable_by_attachments(&name, &plugin);
                if reasons.is_empty() {
                    Ok(plugin)
                } else {
                    Err(anyhow::anyhow!(
                        "the config serving cannot use this version: {}",
                        reasons.join("; ")
                    ))
                }
            });
        match loaded {
            Ok(plugin) => {
                let unchanged = self
                    .get(&name)
                    .is_some_and(|current| current.version == plugin.version);
                if !unchanged {
                    tracing::info!(
                        plugin = %name,
                        version = %plugin.version,
                        hooks = ?plugin.hooks.iter().map(|h| hook_name(*h)).collect::<Vec<_>>(),
                        from_cache = plugin.from_cache,
                        "plugin loaded"
                    );
                    if !self.is_attached(&name) {
                        plugin.park();
                    }
                    let plugin = Arc::new(plugin);
                    self.swap(|plugins| {
                        plugins.insert(name.clone(), plugin);
                    });
                }
                self.errors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&name);
            }
            Err(e) => {
                let reason = format!("{}: {e:#}", path.display());
                tracing::error!(plugin = %name, error = %reason, "plugin rejected; the previous version, if any, keeps serving");
                self.errors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name, reason);
            }
        }
    }

    fn swap(&self, change: impl FnOnce(&mut PluginMap)) {
        let mut plugins = (**self.plugins.load()).clone();
        change(&mut plugins);
        self.plugins.store(Arc::new(plugins));
    }

    /// Every plugin file's status, for the admin API.
    pub fn status(&self) -> Vec<PluginStatus> {
        let plugins = self.current();
        let errors = self
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut names: Vec<&String> = plugins.keys().chain(errors.keys()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|name| {
                let plugin = plugins.get(name);
                PluginStatus {
                    name: name.clone(),
                    version: plugin.map(|p| p.version.clone()),
                    hooks: plugin
                        .map(|p| p.hooks.iter().map(|h| hook_name(*h)).collect())
                        .unwrap_or_default(),
                    from_cache: plugin.is_some_and(|p| p.from_cache),
                    pooled: plugin.map_or(0, |p| p.pooled()),
                    mapped: plugin.is_some_and(|p| p.is_mapped()),
                    last_error: errors.get(name).cloned(),
                }
            })
            .collect()
    }

    /// Watches the directory and reloads changed files in the background of
    /// the current Tokio runtime. Compilation runs on the blocking pool.
    pub fn watch(self: &Arc<Self>) -> notify::Result<()> {
        let (changed, mut changes) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else {
                    return;
                };
                if event.kind.is_access() {
                    return;
                }
                for path in event.paths {
                    if is_plugin_file(&path) {
                        let _ = changed.send(path);
                    }
                }
            })?;
        watcher.watch(&self.directory, RecursiveMode::NonRecursive)?;
        let registry = self.clone();
        tokio::spawn(async move {
            let _watching = watcher;
            while let Some(first) = changes.recv().await {
                let mut paths = vec![first];
                while let Ok(Some(path)) = tokio::time::timeout(DEBOUNCE, changes.recv()).await {
                    paths.push(path);
                }
                paths.sort();
                paths.dedup();
                let registry = registry.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    for path in paths {
                        registry.load_file(&path);
                    }
                    super::memory::release_freed();
                    crate::support::code::release_startup_code();
                })
                .await;
            }
        });
        Ok(())
    }
}

fn is_plugin_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "wasm")
}
