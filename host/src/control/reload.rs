//! Live configuration: load, validate, compile, publish; keep the last known
//! good.
//!
//! Every trigger (the file watcher, SIGHUP, the admin API, the remote
//! poller) ends in [`Reloader::reload`]. A new config is parsed, validated
//! and compiled against the shared state registry; only then is it swapped in
//! with one atomic store, so in-flight requests finish on the snapshot they
//! started with. A config that fails any step changes nothing: the current
//! snapshot keeps serving and the reason is logged, counted and shown by the
//! admin API. Each applied config's text is persisted in the state
//! directory, and a start whose source is broken or unreachable falls back to
//! it.
//!
//! Upstream names a config adds are looked up before it is compiled, within
//! the resolver's timeout; a name that does not resolve is a warning, not a
//! failure. While a config is in force its names are kept fresh, and when
//! one's addresses change, the config in force is compiled again and
//! published, so endpoints follow DNS without a reload.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::{ArcSwap, ArcSwapOption};
use serde::Serialize;

use super::metrics::ReloadMetrics;
use super::source::{fetch, ConfigSource, Fetched};
use crate::config::{parse, ConfigError, ConfigErrors, KeyPath};
use crate::plugins::metrics::PluginMetrics;
use crate::plugins::registry::PluginRegistry;
use crate::resilience::checker::HealthSupervisor;
use crate::resilience::placement;
use crate::resilience::state::Registry;
use crate::routing::names::NameResolver;
use crate::snapshot::compile;
use crate::snapshot::Snapshot;
use crate::tls::resolver::LiveCertificates;

/// What the admin API reports about the configuration.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigStatus {
    /// The content hash of the config in force.
    pub version: String,
    /// Where it came from.
    pub source: String,
    /// When it was applied (RFC 3339).
    pub loaded_at: String,
    /// True when the proxy runs on the persisted last known good config
    /// because its source was broken or unreachable at start.
    pub from_last_known_good: bool,
    /// The last reload attempt's error, cleared by the next success.
    pub last_error: Option<String>,
    /// When the last reload attempt happened (RFC 3339).
    pub last_attempt_at: Option<String>,
}

/// The result of a reload attempt that did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new snapshot is in force.
    Applied,
    /// The source had not changed.
    Unchanged,
}

/// File name of the persisted last known good config in the state directory.
const LAST_KNOWN_GOOD: &str = "last-known-good.toml";

/// Loads, validates and publishes configurations.
pub struct Reloader {
    source: ConfigSource,
    state_dir: Option<PathBuf>,
    live: Arc<ArcSwap<Snapshot>>,
    registry: Arc<Registry>,
    metrics: ReloadMetrics,
    plugin_metrics: Arc<PluginMetrics>,
    health: HealthSupervisor,
    status: Mutex<ConfigStatus>,
    /// Serialises reloads so two triggers cannot interleave.
    reloading: tokio::sync::Mutex<()>,
    /// The ETag of the remote config in force.
    etag: Mutex<Option<String>>,
    /// The plugin registry, once a config with `[plugins]` was loaded.
    plugins: Plugins,
    /// The certificates of the config serving, for the TLS resolver.
    certificates: LiveCertificates,
    /// The ACME certificates the config serving asks for, by their names.
    acme_names: tokio::sync::watch::Sender<Vec<Vec<String>>>,
    /// Looks up the upstream names configs use.
    resolver: Arc<NameResolver>,
    /// The text of the config in force and where it came from: what is
    /// compiled again when upstream names change.
    in_force: Mutex<(String, String)>,
}

/// The plugin registry slot shared by the reloader, the proxy and the admin API.
pub type Plugins = Arc<ArcSwapOption<PluginRegistry>>;

/// Why the initial load failed.
#[derive(Debug)]
pub struct StartupError(pub String);

impl std::fmt::Display for StartupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartupError {}

impl Reloader {
    /// Loads the initial configuration. When the source is broken or
    /// unreachable, starts on the persisted last known good config with a
    /// loud warning; fails only when there is none.
    pub async fn start(
        source: ConfigSource,
        state_dir: Option<PathBuf>,
        registry: Arc<Registry>,
        metrics: ReloadMetrics,
        plugin_metrics: Arc<PluginMetrics>,
        health: HealthSupervisor,
    ) -> Result<Arc<Self>, StartupError> {
        let origin = source.to_string();
        let plugins: Plugins = Arc::new(ArcSwapOption::empty());
        let resolver = Arc::new(NameResolver::new(registry.names().clone()));
        let attempt = match fetch(&source, None).await {
            Ok(Some(fetched)) => {
                resolve_names(&resolver, &fetched.text).await;
                compile_text(&fetched.text, &origin, &registry, &plugins, &plugin_metrics)
                    .map(|snapshot| (snapshot, fetched))
                    .map_err(|e| e.to_string())
            }
            Ok(None) => Err("the source answered 304 Not Modified to a first request".to_string()),
            Err(e) => Err(e),
        };
        let (snapshot, fetched, from_lkg, error) = match attempt {
            Ok((snapshot, fetched)) => (snapshot, fetched, false, None),
            Err(error) => {
                let Some(path) = state_dir
                    .as_ref()
                    .map(|d| d.join(LAST_KNOWN_GOOD))
                    .filter(|p| p.exists())
                else {
                    return Err(StartupError(error));
                };
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    StartupError(format!(
                        "{error}\n(and the last known good config {} cannot be read: {e})",
                        path.display()
                    ))
                })?;
                resolve_names(&resolver, &text).await;
                let snapshot = compile_text(
                    &text,
                    &path.display().to_string(),
                    &registry,
                    &plugins,
                    &plugin_metrics,
                )
                .map_err(|e| {
                    StartupError(format!(
                        "{error}\n(and the last known good config is invalid too: {e})"
                    ))
                })?;
                tracing::error!(
                    source = %origin,
                    last_known_good = %path.display(),
                    %error,
                    "THE CONFIGURATION SOURCE IS BROKEN OR UNREACHABLE: STARTING ON THE LAST KNOWN GOOD CONFIG"
                );
                (snapshot, Fetched { text, etag: None }, true, Some(error))
            }
        };
        let now = access_time();
        let status = ConfigStatus {
            version: snapshot.version.clone(),
            source: origin.clone(),
            loaded_at: now.clone(),
            from_last_known_good: from_lkg,
            last_error: error.clone(),
            last_attempt_at: Some(now),
        };
        metrics.config_applied(&snapshot.version, &origin);
        if from_lkg {
            metrics.reloads.with_label_values(&["failed"]).inc();
            metrics.last_reload_failed.set(1);
        }
        let certificates = Arc::new(ArcSwap::new(snapshot.certificates.clone()));
        let (acme_names, _) = tokio::sync::watch::channel(snapshot.acme_certificates.clone());
        let live = Arc::new(ArcSwap::from_pointee(snapshot));
        let in_force = Mutex::new((fetched.text.clone(), origin.clone()));
        let reloader = Arc::new(Self {
            source,
            state_dir,
            live,
            registry,
            metrics,
            plugin_metrics,
            health,
            status: Mutex::new(status),
            reloading: tokio::sync::Mutex::new(()),
            etag: Mutex::new(fetched.etag),
            plugins,
            certificates,
            acme_names,
            resolver: resolver.clone(),
            in_force,
        });
        reloader.after_publish(&reloader.live.load_full());
        let follower = Arc::downgrade(&reloader);
        tokio::spawn(resolver.refresh(move || {
            let follower = follower.clone();
            async move {
                if let Some(reloader) = follower.upgrade() {
                    reloader.follow_names().await;
                }
            }
        }));
        if !from_lkg {
            reloader.persist(&fetched.text);
        }
        Ok(reloader)
    }

    /// The live snapshot handle the proxy serves from.
    pub fn live(&self) -> Arc<ArcSwap<Snapshot>> {
        self.live.clone()
    }

    /// The certificates of the config serving, replaced on each reload.
    pub fn certificates(&self) -> LiveCertificates {
        self.certificates.clone()
    }

    /// The ACME certificates each config asks for, by their names, as
    /// configs are published.
    pub fn acme_names(&self) -> tokio::sync::watch::Receiver<Vec<Vec<String>>> {
        self.acme_names.subscribe()
    }

    /// The plugin registry slot.
    pub fn plugins(&self) -> Plugins {
        self.plugins.clone()
    }

    /// Where the configuration comes from.
    pub fn source(&self) -> &ConfigSource {
        &self.source
    }

    /// The configuration status for the admin API.
    pub fn status(&self) -> ConfigStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reloads from the source. `trigger` names what asked, for the log.
    pub async fn reload(&self, trigger: &str) -> Result<ReloadOutcome, String> {
        self.reload_inner(trigger, false).await
    }

    /// Reloads even when the config text is unchanged: for files the config
    /// names, such as certificates, that changed under it.
    pub async fn reload_unchanged(&self, trigger: &str) -> Result<ReloadOutcome, String> {
        self.reload_inner(trigger, true).await
    }

    /// The source's revision of the config in force: the ETag of a URL,
    /// the etcd revision of an etcd key.
    pub fn source_revision(&self) -> Option<String> {
        self.etag.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn reload_inner(
        &self,
        trigger: &str,
        even_unchanged: bool,
    ) -> Result<ReloadOutcome, String> {
        let _serialised = self.reloading.lock().await;
        let origin = self.source.to_string();
        let etag = self.etag.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let etag = if even_unchanged { None } else { etag };
        let result = match fetch(&self.source, etag.as_deref()).await {
            Ok(None) => Ok(ReloadOutcome::Unchanged),
            Ok(Some(fetched)) => {
                resolve_names(&self.resolver, &fetched.text).await;
                self.apply(fetched, &origin, even_unchanged)
            }
            Err(e) => Err(e),
        };
        let now = access_time();
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        status.last_attempt_at = Some(now.clone());
        match &result {
            Ok(ReloadOutcome::Applied) => {
                let version = self.live.load().version.clone();
                tracing::info!(%trigger, source = %origin, %version, "configuration reloaded");
                self.metrics.reloads.with_label_values(&["applied"]).inc();
                status.version = version;
                status.loaded_at = now;
                status.last_error = None;
                status.from_last_known_good = false;
            }
            Ok(ReloadOutcome::Unchanged) => {
                tracing::debug!(%trigger, source = %origin, "configuration unchanged");
                self.metrics.reloads.with_label_values(&["unchanged"]).inc();
                // The source is readable and equals the config in force, so
                // an earlier failure no longer applies.
                self.metrics.last_reload_failed.set(0);
                status.last_error = None;
            }
            Err(error) => {
                tracing::error!(%trigger, source = %origin, %error, "configuration rejected; the last known good config keeps serving");
                self.metrics.reloads.with_label_values(&["failed"]).inc();
                self.metrics.last_reload_failed.set(1);
                status.last_error = Some(error.clone());
            }
        }
        if !matches!(result, Ok(ReloadOutcome::Unchanged)) {
            // Parsing and applying a config ran start-up code again.
            crate::support::code::release_startup_code();
        }
        result
    }

    fn apply(
        &self,
        fetched: Fetched,
        origin: &str,
        even_unchanged: bool,
    ) -> Result<ReloadOutcome, String> {
        let current = self.live.load_full();
        if !even_unchanged
            && crate::support::files::content_version(fetched.text.as_bytes()) == current.version
            && !self.status().from_last_known_good
        {
            *self.etag.lock().unwrap_or_else(|p| p.into_inner()) = fetched.etag;
            return Ok(ReloadOutcome::Unchanged);
        }
        let snapshot = compile_text(
            &fetched.text,
            origin,
            &self.registry,
            &self.plugins,
            &self.plugin_metrics,
        )
        .map_err(|e| e.to_string())?;
        if snapshot.listeners != current.listeners
            || snapshot.admin != current.admin
            || snapshot.threads != current.threads
            || snapshot.grace_period != current.grace_period
            || snapshot.upgrade_socket != current.upgrade_socket
            || snapshot.max_requests_per_connection != current.max_requests_per_connection
        {
            tracing::warn!(
                "listeners, [admin], threads, grace_period, upgrade_socket or \
                 max_requests_per_connection changed; they take effect on restart or upgrade"
            );
        }
        let acme_routes_removed = current
            .acme_certificates
            .iter()
            .any(|names| !snapshot.acme_certificates.contains(names));
        if snapshot.acme != current.acme || acme_routes_removed {
            tracing::warn!(
                "[acme] changed, or routes with tls = \"acme\" were removed or changed; \
                 certificates already managed keep being renewed as before until a restart \
                 or upgrade"
            );
        }
        let snapshot = Arc::new(snapshot);
        self.live.store(snapshot.clone());
        self.after_publish(&snapshot);
        self.metrics.config_applied(&snapshot.version, origin);
        *self.etag.lock().unwrap_or_else(|p| p.into_inner()) = fetched.etag;
        self.persist(&fetched.text);
        *self.in_force.lock().unwrap_or_else(|p| p.into_inner()) =
            (fetched.text, origin.to_string());
        Ok(ReloadOutcome::Applied)
    }

    /// Compiles the config in force again, against the addresses its
    /// upstream names resolve to now, and publishes it.
    async fn follow_names(&self) {
        let _serialised = self.reloading.lock().await;
        let (text, origin) = self
            .in_force
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match compile_text(
            &text,
            &origin,
            &self.registry,
            &self.plugins,
            &self.plugin_metrics,
        ) {
            Ok(snapshot) => {
                let snapshot = Arc::new(snapshot);
                self.live.store(snapshot.clone());
                self.after_publish(&snapshot);
                tracing::info!(
                    endpoints = placement::endpoints(&snapshot.placements).count(),
                    "upstream names resolve to new addresses; endpoints updated"
                );
            }
            Err(error) => {
                tracing::error!(%error, "the config in force no longer compiles with the new addresses; the endpoints stay as they were");
            }
        }
    }

    /// What is known of the upstream names the config in force uses.
    pub fn names(&self) -> Vec<(String, crate::routing::names::NameState)> {
        self.resolver.names().all()
    }

    /// Hands each service its part of a snapshot that was just published.
    fn after_publish(&self, snapshot: &Snapshot) {
        for warning in &snapshot.warnings {
            tracing::warn!(%warning, "configuration warning");
        }
        self.resolver.configure(&snapshot.resolver);
        self.resolver.keep_fresh(&snapshot.upstream_names);
        self.certificates.store(snapshot.certificates.clone());
        self.acme_names
            .send_replace(snapshot.acme_certificates.clone());
        if let Some(plugins) = self.plugins.load_full() {
            plugins.set_attachments(snapshot.attachments());
            if let Some(spec) = &snapshot.plugins {
                plugins.set_limits(spec.limits);
            }
        }
        // Checkers stop first, so none can mark an endpoint down after its
        // check was removed and its active state cleared.
        self.health.sync(&snapshot.placements);
        placement::apply_settings(&snapshot.placements);
        let endpoints: Vec<_> = placement::endpoints(&snapshot.placements)
            .map(|(_, e)| e.state.key.clone())
            .collect();
        let placements: Vec<_> = snapshot
            .placements
            .iter()
            .map(|p| p.name.to_string())
            .collect();
        let rates = snapshot
            .routes
            .iter()
            .zip(&snapshot.traffic)
            .filter_map(|(route, traffic)| Some((&*route.name, traffic.rate_limit.as_ref()?.per)));
        self.registry
            .retain(&endpoints, placements.iter().map(String::as_str), rates);
    }

    /// Writes the applied config text to the state directory, atomically.
    fn persist(&self, text: &str) {
        let Some(dir) = &self.state_dir else {
            return;
        };
        if let Err(e) = crate::support::files::write_atomically(
            &dir.join(LAST_KNOWN_GOOD),
            text.as_bytes(),
            // It may hold the admin token or other secrets.
            0o600,
        ) {
            tracing::warn!(state_dir = %dir.display(), error = %e, "cannot persist the last known good config");
        }
    }
}

/// Parses, validates and compiles `text`; with `[plugins]`, also loads the
/// plugin directory the first time and checks the attachments against it.
pub fn compile_text(
    text: &str,
    origin: &str,
    registry: &Registry,
    plugins: &Plugins,
    metrics: &Arc<PluginMetrics>,
) -> Result<Snapshot, ConfigErrors> {
    let loaded = parse(text, origin, &|name| std::env::var(name).ok())?;
    let snapshot = compile(&loaded, origin, registry)?;
    let Some(spec) = &snapshot.plugins else {
        return Ok(snapshot);
    };
    let current = match plugins.load_full() {
        Some(current) => {
            if current.directory() != spec.directory {
                tracing::warn!(
                    directory = %spec.directory.display(),
                    serving = %current.directory().display(),
                    "the plugin directory changed; it takes effect on restart or upgrade"
                );
            }
            current
        }
        None => {
            let loaded_registry = PluginRegistry::load(
                &spec.directory,
                Some(spec.cache_dir.clone()),
                spec.limits,
                metrics.clone(),
            )
            .map_err(|e| {
                let path = KeyPath::root().key("plugins").key("directory");
                let line = loaded.source.line_of(&path);
                ConfigErrors::single(
                    origin.to_string(),
                    ConfigError::new(path, line, format!("{e:#}")),
                )
            })?;
            if tokio::runtime::Handle::try_current().is_ok() {
                if let Err(e) = loaded_registry.watch() {
                    tracing::error!(error = %e, "cannot watch the plugin directory; plugin changes need a restart");
                }
            }
            plugins.store(Some(loaded_registry.clone()));
            loaded_registry
        }
    };
    let errors = crate::plugins::validate::validate(
        snapshot
            .routes
            .iter()
            .map(|route| (&*route.name, route.plugins.as_slice())),
        &loaded.source,
        &current.current(),
    );
    if errors.is_empty() {
        Ok(snapshot)
    } else {
        Err(ConfigErrors::new(origin.to_string(), errors))
    }
}

/// Looks up the upstream names `text` adds, with its `[resolver]`
/// settings, before it is compiled. A text that does not parse has none:
/// compiling it reports why.
pub async fn resolve_names(resolver: &NameResolver, text: &str) {
    let Ok(loaded) = parse(text, "", &|name| std::env::var(name).ok()) else {
        return;
    };
    let spec = crate::routing::compile::resolver(
        &mut crate::config::Diagnostics::default(),
        &loaded.config.resolver,
    );
    let names = crate::resilience::compile::upstream_names(&loaded.config);
    resolver.resolve_new(&spec, &names).await;
}

fn access_time() -> String {
    crate::support::time::timestamp(SystemTime::now())
}
